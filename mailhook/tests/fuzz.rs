//! Property-based fuzzing of what an SMTP client controls (issue 15): the command parser, the
//! DATA reader and the MIME path (mail-parser and the message built from it), each fed
//! arbitrary bytes and structure-aware inputs built from SMTP and MIME pieces. A case fails on
//! a panic or a broken invariant; proptest shrinks it to a small input. `PROPTEST_CASES` sets
//! the cases per property (CI: proptest's default, 256; `bash tests/fuzz.sh N` runs longer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use echovalue_mailhook::message::{self, Caps};
use echovalue_mailhook::smtp::Limits;
use echovalue_mailhook::smtp_command::{self, Command};
use echovalue_mailhook::smtp_io::{data, Data};
use proptest::prelude::*;
use tokio::io::BufReader;
use tokio::sync::Semaphore;

const CAPS: Caps = Caps {
    parts: 250,
    multiparts: 25,
    attachments: 100,
    depth: 10,
};

/// A command line from SMTP's own pieces: verbs, paths, parameters, and hostile bytes.
fn command_line() -> impl Strategy<Value = Vec<u8>> {
    let verb = prop_oneof![
        Just("EHLO "),
        Just("HELO "),
        Just("MAIL FROM:"),
        Just("RCPT TO:"),
        Just("DATA"),
        Just("RSET"),
        Just("NOOP"),
        Just("QUIT"),
        Just("VRFY "),
        Just("mail from: "),
        Just("BDAT "),
        Just("")
    ];
    let piece = prop_oneof![
        Just("<a@b.c>".to_owned()),
        Just("<>".to_owned()),
        Just(" SIZE=".to_owned()),
        Just(" BODY=8BITMIME".to_owned()),
        Just("\0".to_owned()),
        Just("\r".to_owned()),
        Just("\n".to_owned()),
        Just("<\"q u\"@[::1]>".to_owned()),
        Just("%".to_owned()),
        "[0-9]{1,25}",
        "\\PC{0,20}",
        Just("é".to_owned())
    ];
    (verb, prop::collection::vec(piece, 0..8))
        .prop_map(|(v, ps)| format!("{v}{}\r\n", ps.concat()).into_bytes())
}

/// A message from MIME pieces: headers that declare multiparts, boundaries that do or do not
/// appear, encoded parts, attached messages, and arbitrary bytes.
fn mime_message() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        (0..4u8).prop_map(|b| format!("Content-Type: multipart/mixed; boundary=b{b}\r\n\r\n")),
        (0..4u8).prop_map(|b| format!("--b{b}\r\n")),
        (0..4u8).prop_map(|b| format!("--b{b}--\r\n")),
        Just("Content-Type: message/rfc822\r\n\r\n".to_owned()),
        Just("Content-Transfer-Encoding: base64\r\n".to_owned()),
        Just("Content-Transfer-Encoding: quoted-printable\r\n".to_owned()),
        Just("Content-Disposition: attachment; filename=\"../x\0.bin\"\r\n".to_owned()),
        Just("Content-Type: text/html; charset=iso-8859-1\r\n\r\n<b>x</b>\r\n".to_owned()),
        Just("Subject: =?utf-8?B?w6k=?= =?x?Q?=FF?=\r\n".to_owned()),
        Just("\r\n".to_owned()),
        "[A-Za-z0-9+/=]{0,76}\r\n",
        "\\PC{0,40}\r\n",
    ];
    (
        prop::collection::vec(piece, 0..60),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(pieces, tail)| {
            let mut m = b"From: a@b.c\r\n".to_vec();
            m.extend(pieces.concat().into_bytes());
            m.extend(tail);
            m
        })
}

fn check_message(raw: &[u8], slowest: &mut Duration) {
    let started = Instant::now();
    let parsed = message::parse(raw, &CAPS);
    *slowest = (*slowest).max(started.elapsed());
    if let Ok(p) = parsed {
        assert!(p.attachments.len() <= CAPS.attachments);
        for s in [
            &p.subject,
            &p.text,
            &p.html,
            &p.from_email,
            &p.from_name,
            &p.message_id,
        ] {
            assert!(!s.as_deref().unwrap_or_default().contains('\0'));
        }
        for a in &p.attachments {
            let name = a.filename.as_deref().unwrap_or_default();
            assert!(!name.contains(['/', '\\']) && !name.chars().any(char::is_control));
        }
        assert!(!p.headers.to_string().contains("\\u0000"));
    }
}

proptest! {
    #[test]
    fn fuzz_smtp_command_parser(line in prop_oneof![prop::collection::vec(any::<u8>(), 0..300), command_line()]) {
        match smtp_command::parse(&line) {
            Ok(Command::Rcpt { to }) => prop_assert!(!to.chars().any(|c| c.is_control() && c != '\t')),
            Ok(Command::Ehlo(h) | Command::Helo(h)) => prop_assert!(!h.chars().any(|c| c.is_control() && c != '\t')),
            Ok(_) => {}
            Err(reply) => prop_assert!((500..=555).contains(&reply.code), "{reply:?}"),
        }
    }

    #[test]
    fn fuzz_mime_path(raw in prop_oneof![prop::collection::vec(any::<u8>(), 0..2000), mime_message()]) {
        let mut slowest = Duration::ZERO;
        check_message(&raw, &mut slowest);
        // A bad case is slow, not wrong: bounded here far above the normal (microseconds).
        prop_assert!(slowest < Duration::from_secs(2), "a parse took {slowest:?}");
    }

    #[test]
    fn fuzz_data_reader(input in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2000),
        prop::collection::vec(prop_oneof![Just(&b".\r\n"[..]), Just(&b"\r\n"[..]), Just(&b"\n"[..]),
            Just(&b".."[..]), Just(&b"x"[..]), Just(&b"\r"[..])], 0..200).prop_map(|v| v.concat())
    ], max_bytes in 1usize..500) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let limits = Limits {
            hostname: "h".into(),
            max_bytes,
            max_line_bytes: 80,
            max_commands: 10,
            max_sessions: 1,
            timeout: Duration::from_secs(5),
            bounds: Default::default(),
        };
        let budget = Arc::new(Semaphore::new(1 << 20));
        let far = tokio::time::Instant::now() + Duration::from_secs(60);
        let got = runtime.block_on(async {
            let mut r = BufReader::with_capacity(7, &input[..]);
            let mut line = Vec::new();
            data(&mut r, &limits, &mut line, (far, &budget)).await.unwrap()
        });
        if let Data::Message(raw, _) = got {
            prop_assert!(raw.len() <= max_bytes);
            // It ended at CRLF . CRLF, or at the start: never after a bare LF.
            prop_assert!(input.starts_with(b".\r\n") || input.windows(5).any(|w| w == b"\r\n.\r\n"));
        }
    }
}
