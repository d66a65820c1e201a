//! The SMTP command line parser and reply formatting (RFC 5321), pure so it can be unit
//! tested and fuzzed without a socket.
//!
//! Hand-written rather than a crate: `mailin-embedded` runs its own thread pool with blocking
//! handlers (no tokio, so an async database call per RCPT would need a bridge), and `samotop`
//! is built on async-std and unmaintained since 2021. The server side of the protocol needed
//! here is a dozen verbs, so a small parser plus the session loop in `smtp.rs` is less code
//! than either adapter.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Longest envelope address accepted (RFC 5321 §4.5.3.1.3 path limit).
const MAX_PATH: usize = 256;

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    /// `MAIL FROM:<path>`; the path is empty for the null sender `<>`.
    Mail {
        from: String,
        size: Option<u64>,
    },
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    /// A verb this server does not implement (STARTTLS, AUTH, BDAT, TURN, ...).
    NotImplemented,
}

/// An SMTP reply: a code and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            lines: vec![text.into()],
        }
    }

    /// The wire form: `250-first`, ..., `250 last`, each ending in CRLF. Any CR or LF inside
    /// a text is replaced so a reply can never inject a line of its own.
    pub fn to_wire(&self) -> String {
        let mut out = String::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let clean: String = line
                .chars()
                .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
                .collect();
            let _ = write!(out, "{}{sep}{clean}\r\n", self.code);
        }
        if self.lines.is_empty() {
            let _ = write!(out, "{}\r\n", self.code);
        }
        out
    }

    /// Whether the code is a positive completion (2xx).
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// Parses one command line (with or without its CRLF). An `Err` is the reply to send.
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    let line = strip_eol(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(Reply::new(500, "5.5.2 command is not valid UTF-8"));
    };
    if line.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(Reply::new(500, "5.5.2 control characters in command"));
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    match verb.as_str() {
        "HELO" | "EHLO" => {
            let domain = rest.split_whitespace().next().unwrap_or("");
            if domain.is_empty() {
                return Err(Reply::new(501, "5.5.4 domain or address literal required"));
            }
            let domain = domain.to_owned();
            Ok(if verb == "HELO" {
                Command::Helo(domain)
            } else {
                Command::Ehlo(domain)
            })
        }
        "MAIL" => {
            let (path, params) = path_after(rest, "FROM:")?;
            let mut size = None;
            for param in params.split_whitespace() {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                match key.to_ascii_uppercase().as_str() {
                    "SIZE" => match value.parse::<u64>() {
                        Ok(n) if !value.is_empty() && value.len() <= 20 => size = Some(n),
                        _ => return Err(Reply::new(501, "5.5.4 SIZE must be a number")),
                    },
                    "BODY"
                        if matches!(value.to_ascii_uppercase().as_str(), "7BIT" | "8BITMIME") => {}
                    _ => return Err(Reply::new(555, "5.5.4 unsupported MAIL parameter")),
                }
            }
            Ok(Command::Mail { from: path, size })
        }
        "RCPT" => {
            let (path, params) = path_after(rest, "TO:")?;
            if !params.trim().is_empty() {
                return Err(Reply::new(555, "5.5.4 unsupported RCPT parameter"));
            }
            if path.is_empty() {
                return Err(Reply::new(501, "5.1.3 recipient address required"));
            }
            Ok(Command::Rcpt { to: path })
        }
        "DATA" => no_args(rest, Command::Data),
        "RSET" => no_args(rest, Command::Rset),
        "QUIT" => no_args(rest, Command::Quit),
        // NOOP, VRFY, EXPN and HELP may carry an argument, which changes nothing here.
        "NOOP" => Ok(Command::Noop),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" | "AUTH" | "BDAT" | "TURN" | "ETRN" | "ATRN" | "SEND" | "SOML" | "SAML" => {
            Ok(Command::NotImplemented)
        }
        _ => Err(Reply::new(500, "5.5.2 command not recognized")),
    }
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn no_args(rest: &str, cmd: Command) -> Result<Command, Reply> {
    if rest.is_empty() {
        Ok(cmd)
    } else {
        Err(Reply::new(501, "5.5.4 no arguments allowed"))
    }
}

/// `FROM:<path> params` / `TO:<path> params`: the path without brackets (and without an
/// RFC 5321 source route, which must be ignored) and the parameter text after it. A space
/// after the colon and a path without brackets are tolerated, as common servers do.
fn path_after<'a>(rest: &'a str, keyword: &str) -> Result<(String, &'a str), Reply> {
    let syntax = || Reply::new(501, format!("5.5.4 syntax: {keyword}<address>"));
    let head = rest.get(..keyword.len()).ok_or_else(syntax)?;
    if !head.eq_ignore_ascii_case(keyword) {
        return Err(syntax());
    }
    let rest = rest[keyword.len()..].trim_start();
    let (path, params) = if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>').ok_or_else(syntax)?;
        (&inner[..end], &inner[end + 1..])
    } else {
        match rest.find(' ') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        }
    };
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(syntax());
    }
    // <@relay1,@relay2:user@domain>: only user@domain counts.
    let path = match path.strip_prefix('@') {
        Some(route) => route.split_once(':').map(|(_, p)| p).ok_or_else(syntax)?,
        None => path,
    };
    if path.len() > MAX_PATH {
        return Err(Reply::new(501, "5.1.3 address too long"));
    }
    if path.contains(['<', '>', ' ']) {
        return Err(syntax());
    }
    Ok((path.to_owned(), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse(line.as_bytes()).unwrap_or_else(|r| panic!("{line:?} refused: {r:?}"))
    }

    fn code(line: &[u8]) -> u16 {
        match parse(line) {
            Ok(c) => panic!("{line:?} accepted as {c:?}"),
            Err(r) => r.code,
        }
    }

    #[test]
    fn greetings() {
        assert_eq!(
            ok("EHLO client.example\r\n"),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(ok("helo [127.0.0.1]"), Command::Helo("[127.0.0.1]".into()));
        assert_eq!(code(b"EHLO\r\n"), 501);
        assert_eq!(code(b"EHLO   \r\n"), 501);
    }

    #[test]
    fn mail_from() {
        assert_eq!(
            ok("MAIL FROM:<a@b.c>\r\n"),
            Command::Mail {
                from: "a@b.c".into(),
                size: None
            }
        );
        assert_eq!(
            ok("mail from:<> SIZE=1024 BODY=8BITMIME"),
            Command::Mail {
                from: String::new(),
                size: Some(1024)
            }
        );
        // tolerated: a space after the colon, no brackets
        assert_eq!(
            ok("MAIL FROM: a@b.c"),
            Command::Mail {
                from: "a@b.c".into(),
                size: None
            }
        );
        assert_eq!(code(b"MAIL FROM:<a@b.c> SIZE=x"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b.c> SIZE="), 501);
        assert_eq!(code(b"MAIL FROM:<a@b.c> SIZE=99999999999999999999999"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b.c> AUTH=<>"), 555);
        assert_eq!(code(b"MAIL FROM:<a@b.c> BODY=BINARYMIME"), 555);
        assert_eq!(code(b"MAIL TO:<a@b.c>"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b.c"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b.c>x"), 501);
        assert_eq!(code(b"MAIL"), 501);
        let long = format!("MAIL FROM:<{}@b.c>", "a".repeat(300));
        assert_eq!(code(long.as_bytes()), 501);
    }

    #[test]
    fn rcpt_to() {
        assert_eq!(
            ok("RCPT TO:<Box@Hook.Example>"),
            Command::Rcpt {
                to: "Box@Hook.Example".into()
            }
        );
        assert_eq!(
            ok("RCPT TO:<@relay.a,@relay.b:box@hook.example>"),
            Command::Rcpt {
                to: "box@hook.example".into()
            }
        );
        assert_eq!(code(b"RCPT TO:<>"), 501);
        assert_eq!(code(b"RCPT TO:<a@b> NOTIFY=NEVER"), 555);
        assert_eq!(code(b"RCPT TO:<@relay:>"), 501);
        assert_eq!(code(b"RCPT TO:<@relay>"), 501);
        assert_eq!(code(b"RCPT FROM:<a@b>"), 501);
        assert_eq!(code(b"RCPT TO:<a<b@c>"), 501);
    }

    #[test]
    fn simple_verbs() {
        assert_eq!(ok("DATA\r\n"), Command::Data);
        assert_eq!(ok("data"), Command::Data);
        assert_eq!(ok("RSET"), Command::Rset);
        assert_eq!(ok("QUIT\r\n"), Command::Quit);
        assert_eq!(ok("NOOP anything"), Command::Noop);
        assert_eq!(ok("VRFY postmaster"), Command::Vrfy);
        assert_eq!(ok("HELP"), Command::Help);
        assert_eq!(ok("STARTTLS"), Command::NotImplemented);
        assert_eq!(code(b"DATA now"), 501);
        assert_eq!(code(b"QUIT please"), 501);
    }

    #[test]
    fn garbage_is_refused_not_panicking() {
        assert_eq!(code(b""), 500);
        assert_eq!(code(b"\r\n"), 500);
        assert_eq!(code(b"FOO bar"), 500);
        assert_eq!(code(b"\xff\xfe"), 500);
        assert_eq!(code(b"MAIL FROM:<a@b>\x00"), 500);
        assert_eq!(code(b"RCPT TO:<a\x1b@b>"), 500);
        // multi-byte characters around the keyword boundary must not panic on slicing
        assert_eq!(code("MAIL FRé:<a@b>".as_bytes()), 501);
        assert_eq!(code("RCPT é".as_bytes()), 501);
        for line in [
            &b"MAIL FROM:"[..],
            b"MAIL FROM:<",
            b"RCPT TO:<@",
            b"RCPT TO:<@:",
            b"MAIL FROM:<>>",
        ] {
            let _ = parse(line);
        }
    }

    #[test]
    fn random_lines_never_panic() {
        // A tiny deterministic fuzzer: lines glued from protocol fragments and odd bytes.
        const PIECES: &[&[u8]] = &[
            b"MAIL",
            b"RCPT",
            b"EHLO",
            b"DATA",
            b"FROM:",
            b"TO:",
            b"<",
            b">",
            b"@",
            b":",
            b",",
            b" ",
            b"=",
            b"SIZE",
            b"BODY",
            b"8BITMIME",
            b"a",
            b"\xc3\xa9",
            b"\xff",
            b"\x00",
            b"\r",
            b"\n",
            b"\t",
            b"99999999999999999999999",
            b"-1",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50_000 {
            let len = (next() % 12) as usize;
            let mut line = Vec::new();
            for _ in 0..len {
                line.extend_from_slice(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            match parse(&line) {
                Ok(_) => {}
                Err(r) => assert!((500..=555).contains(&r.code), "{line:?} -> {r:?}"),
            }
        }
    }

    #[test]
    fn replies() {
        assert_eq!(Reply::new(250, "2.0.0 ok").to_wire(), "250 2.0.0 ok\r\n");
        let multi = Reply {
            code: 250,
            lines: vec!["a".into(), "b".into(), "c".into()],
        };
        assert_eq!(multi.to_wire(), "250-a\r\n250-b\r\n250 c\r\n");
        assert_eq!(Reply::new(550, "x\r\n250 y").to_wire(), "550 x  250 y\r\n");
        assert!(Reply::new(250, "").is_ok());
        assert!(!Reply::new(452, "").is_ok());
    }
}
