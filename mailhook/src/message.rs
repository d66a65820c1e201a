//! From the raw bytes of DATA to the fields the webhook payload carries (seed 002), using
//! `mail-parser` for MIME, charsets, quoted-printable and base64. HTML-only mail gets its text
//! version from mail-parser's HTML-to-text conversion.
//!
//! Everything here ends up in Postgres `text`/`jsonb`, which cannot hold NUL, so NULs are
//! dropped from every string (a NUL in a header is never meaningful).
//!
//! A message's complexity is bounded ([`Caps`]) before and after parsing. mail-parser looks
//! for a multipart's boundary to the end of the message, so each multipart whose boundary
//! never appears costs a scan of the rest: 16,000 of them in 1 MB took 11 s. A linear scan of
//! the raw text counts Content-Type headers and multipart declarations first and refuses a
//! message over the caps unparsed; the parsed tree is then checked for parts, attachments and
//! depth (what base64-encoded attached messages hid from the scan).

use mail_parser::{MessageParser, MimeHeaders, PartType};

use crate::mime_caps::{check_tree, scan};
pub use crate::mime_caps::{Caps, TooComplex};
use serde_json::{Map, Value};

/// Longest stored attachment file name, in characters.
const MAX_FILENAME_CHARS: usize = 255;

/// A received message, ready for `echovalue.mail_receive`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub message_id: Option<String>,
    pub from_email: Option<String>,
    pub from_name: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Header name → raw value (unfolded); a repeated header → array of values in order.
    pub headers: Value,
    pub size_bytes: i32,
    pub attachments: Vec<Attachment>,
}

/// One attachment with its decoded content.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub content: Vec<u8>,
}

/// Parses a message within `caps`; what cannot be read is left empty (the raw size is kept).
pub fn parse(raw: &[u8], caps: &Caps) -> Result<Parsed, TooComplex> {
    scan(raw, caps)?;
    let size_bytes = i32::try_from(raw.len()).unwrap_or(i32::MAX);
    // mail-parser 0.11.9 panics on some message/rfc822 parts after a multipart's closing
    // boundary ("Invalid part ID, could not find multipart"; found by tests/fuzz.rs): such a
    // message is kept like one it cannot read, not lost with the session.
    let parsed = std::panic::catch_unwind(|| MessageParser::default().parse(raw));
    let Some(msg) = parsed.ok().flatten() else {
        return Ok(Parsed {
            headers: Value::Object(Map::new()),
            size_bytes,
            ..Parsed::default()
        });
    };
    check_tree(&msg, caps)?;
    let from = msg.from().and_then(|a| a.first());
    let texts: Vec<String> = (0..msg.text_body_count())
        .filter_map(|i| msg.body_text(i))
        .map(|t| t.into_owned())
        .collect();
    // html_body also lists plain text parts (for conversion); only real HTML counts here.
    let htmls: Vec<&str> = msg
        .html_bodies()
        .filter_map(|p| match &p.body {
            PartType::Html(h) => Some(h.as_ref()),
            _ => None,
        })
        .collect();
    let attachments = msg
        .attachments()
        .map(|part| Attachment {
            filename: part.attachment_name().map(clean_filename),
            content_type: part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_owned(),
                })
                .map(|ct| clean(&ct.to_ascii_lowercase()))
                .unwrap_or_else(|| {
                    if part.is_message() {
                        "message/rfc822".to_owned()
                    } else {
                        "application/octet-stream".to_owned()
                    }
                }),
            content: part.contents().to_vec(),
        })
        .collect();

    Ok(Parsed {
        message_id: msg.message_id().map(clean),
        from_email: from.and_then(|a| a.address()).map(clean),
        from_name: from.and_then(|a| a.name()).map(clean),
        subject: msg.subject().map(clean),
        text: (!texts.is_empty()).then(|| clean(&texts.join("\n"))),
        html: (!htmls.is_empty()).then(|| clean(&htmls.join("\n"))),
        headers: headers(&msg),
        size_bytes,
        attachments,
    })
}

/// The top-level headers as a JSON object of raw, unfolded values.
fn headers(msg: &mail_parser::Message<'_>) -> Value {
    let mut map = Map::new();
    for h in msg.headers() {
        let raw = msg
            .raw_message
            .get(h.offset_start as usize..h.offset_end as usize)
            .unwrap_or_default();
        let value = Value::String(unfold(&String::from_utf8_lossy(raw)));
        let name = clean(h.name.as_str());
        match map.get_mut(&name) {
            None => {
                map.insert(name, value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => {
                let first = first.take();
                map.insert(name, Value::Array(vec![first, value]));
            }
        }
    }
    Value::Object(map)
}

/// Joins folded header lines and trims; drops NULs.
fn unfold(raw: &str) -> String {
    let joined: String = raw
        .split("\r\n")
        .flat_map(|l| l.split('\n'))
        .collect::<Vec<_>>()
        .join("");
    clean(joined.trim())
}

fn clean(s: &str) -> String {
    s.replace('\0', "")
}

/// The last path component, without control characters, at most 255 characters: a file name
/// a receiver can save without surprises.
fn clean_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILENAME_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        parts: 250,
        multiparts: 25,
        attachments: 100,
        depth: 10,
    };

    #[test]
    fn a_message_the_parser_panics_on_is_kept_unread() {
        // the case tests/fuzz.rs shrank to: mail-parser 0.11.9 panics parsing it
        let raw = b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=b2\r\n\r\n--b2--\r\n\
            Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n\
            Content-Type: text/html; charset=iso-8859-1\r\n\r\n<b>x</b>\r\n--b2--\r\n";
        let p = parse(raw);
        assert_eq!(p.size_bytes, raw.len() as i32);
        assert_eq!(p.headers, Value::Object(Map::new()));
    }

    fn parse(raw: &[u8]) -> Parsed {
        super::parse(raw, &CAPS).expect("within the caps")
    }

    #[test]
    fn plain_text_with_folded_and_repeated_headers() {
        let raw = b"Received: from a\r\n\tby b\r\nReceived: from c\r\nFrom: \"John Snow\" <john@example.com>\r\nTo: box@hook\r\nSubject: Alert: Server down\r\nMessage-ID: <abc@example.com>\r\n\r\nServer #3 is not responding\r\n";
        let p = parse(raw);
        assert_eq!(p.message_id.as_deref(), Some("abc@example.com"));
        assert_eq!(p.from_email.as_deref(), Some("john@example.com"));
        assert_eq!(p.from_name.as_deref(), Some("John Snow"));
        assert_eq!(p.subject.as_deref(), Some("Alert: Server down"));
        assert_eq!(
            p.text.as_deref().map(str::trim_end),
            Some("Server #3 is not responding")
        );
        assert_eq!(p.html, None);
        assert_eq!(
            p.headers["Received"],
            serde_json::json!(["from a\tby b", "from c"])
        );
        assert_eq!(p.headers["Subject"], "Alert: Server down");
        assert_eq!(p.size_bytes, raw.len() as i32);
        assert!(p.attachments.is_empty());
    }

    #[test]
    fn html_only_gets_a_text_version() {
        let raw = b"From: a@b.c\r\nSubject: h\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello <b>world</b></p>\r\n";
        let p = parse(raw);
        assert!(p.html.as_deref().unwrap().contains("<b>world</b>"));
        let text = p.text.unwrap();
        assert!(
            text.contains("Hello") && text.contains("world") && !text.contains('<'),
            "{text}"
        );
    }

    #[test]
    fn latin1_quoted_printable_and_base64_attachment() {
        let raw = concat!(
            "From: =?ISO-8859-1?Q?Ren=E9?= <rene@example.com>\r\n",
            "Subject: =?ISO-8859-1?Q?Caf=E9_cr=E8me?=\r\n",
            "MIME-Version: 1.0\r\n",
            "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n",
            "--B\r\n",
            "Content-Type: text/plain; charset=ISO-8859-1\r\n",
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            "Un caf=E9 cr=E8me, s'il vous pla=EEt.\r\n",
            "--B\r\n",
            "Content-Type: application/pdf; name=\"../../etc/report.pdf\"\r\n",
            "Content-Disposition: attachment; filename=\"../../etc/report.pdf\"\r\n",
            "Content-Transfer-Encoding: base64\r\n\r\n",
            "JVBERi0xLjQKAAEC\r\n",
            "--B--\r\n"
        );
        let p = parse(raw.as_bytes());
        assert_eq!(p.from_name.as_deref(), Some("René"));
        assert_eq!(p.subject.as_deref(), Some("Café crème"));
        assert!(p.text.unwrap().contains("Un café crème, s'il vous plaît."));
        assert_eq!(p.attachments.len(), 1);
        let a = &p.attachments[0];
        assert_eq!(a.filename.as_deref(), Some("report.pdf"));
        assert_eq!(a.content_type, "application/pdf");
        assert_eq!(a.content, b"%PDF-1.4\n\x00\x01\x02");
    }

    #[test]
    fn nul_bytes_are_dropped_and_garbage_does_not_panic() {
        let p = parse(b"Subject: a\x00b\r\n\r\nbody\x00text\r\n");
        assert_eq!(p.subject.as_deref(), Some("ab"));
        assert!(!p.text.unwrap().contains('\0'));
        for raw in [
            &b""[..],
            b"\r\n",
            b"\xff\xfe\xfd",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
        ] {
            let p = parse(raw);
            assert!(p.headers.is_object());
        }
    }

    /// Children whose boundaries never appear: each costs mail-parser a scan of the rest.
    fn missing_boundaries(n: usize) -> Vec<u8> {
        let mut m =
            String::from("From: a@b.c\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n");
        for i in 0..n {
            m.push_str(&format!(
                "--x\r\nContent-Type: multipart/mixed; boundary=never{i}\r\n\r\n"
            ));
        }
        m.into_bytes()
    }

    fn attachments(n: usize) -> Vec<u8> {
        let mut m =
            String::from("From: a@b.c\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n");
        for i in 0..n {
            m.push_str(&format!(
                "--x\r\nContent-Type: application/octet-stream\r\n\
                 Content-Disposition: attachment; filename=f{i}.bin\r\n\r\nabc\r\n"
            ));
        }
        m.push_str("--x--\r\n");
        m.into_bytes()
    }

    fn nested(depth: usize) -> Vec<u8> {
        let mut m = String::from("From: a@b.c\r\n");
        for i in 0..depth {
            m.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
            ));
        }
        m.push_str("Content-Type: text/plain\r\n\r\nhi\r\n");
        for i in (0..depth).rev() {
            m.push_str(&format!("--b{i}--\r\n"));
        }
        m.into_bytes()
    }

    #[test]
    fn a_mime_bomb_is_refused_unparsed() {
        // 16,000 of these in 1 MB took mail-parser 11 s; the scan refuses them at the 26th.
        let bomb = missing_boundaries(16_000);
        let refused = super::parse(&bomb, &CAPS).unwrap_err();
        assert_eq!(refused, TooComplex("too many multipart parts"));
        assert!(super::parse(&missing_boundaries(20), &CAPS).is_ok());
    }

    #[test]
    fn parts_attachments_and_depth_are_capped() {
        assert_eq!(parse(&attachments(100)).attachments.len(), 100);
        assert_eq!(
            super::parse(&attachments(101), &CAPS).unwrap_err(),
            TooComplex("too many attachments")
        );
        let few_parts = Caps { parts: 50, ..CAPS };
        assert_eq!(
            super::parse(&attachments(60), &few_parts).unwrap_err(),
            TooComplex("too many MIME parts")
        );
        // depth: the root, nine multiparts in it and the text: 11 levels
        assert!(super::parse(&nested(8), &CAPS).is_ok());
        assert_eq!(
            super::parse(&nested(10), &CAPS).unwrap_err(),
            TooComplex("MIME parts nested too deep")
        );
    }

    #[test]
    fn the_scan_reads_header_names_as_the_parser_does() {
        let tight = Caps {
            multiparts: 1,
            ..CAPS
        };
        for header in [
            "content-TYPE: multipart/mixed; boundary=y",
            "Content-Type :multipart/mixed; boundary=y",
            "Content-Type:\r\n\tMultipart/Mixed; boundary=y",
        ] {
            let m = format!(
                "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n{header}\r\n\r\n--y--\r\n--x--\r\n"
            );
            assert_eq!(
                super::parse(m.as_bytes(), &tight).unwrap_err(),
                TooComplex("too many multipart parts"),
                "{header}"
            );
        }
    }

    #[test]
    fn an_encoded_attached_message_is_refused_unparsed() {
        // mail-parser would decode and parse it, a bomb the raw scan could not see.
        let inner = String::from_utf8(attachments(101)).unwrap();
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(inner.as_bytes());
        let m = format!(
            "From: a@b.c\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\
             Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--x--\r\n"
        );
        assert_eq!(
            super::parse(m.as_bytes(), &CAPS).unwrap_err(),
            TooComplex("an attached message in base64 or quoted-printable (RFC 2046 5.2.1)")
        );
        // a digest's untyped parts are messages; an attached message in 7bit is parsed
        let digest = "From: a@b.c\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\nSubject: x\r\n\r\nhi\r\n--d--\r\n";
        assert!(super::parse(digest.as_bytes(), &CAPS).is_err());
        let plain = "From: a@b.c\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\
            Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nhi\r\n--x--\r\n";
        let p = super::parse(plain.as_bytes(), &CAPS).unwrap();
        assert_eq!(p.attachments[0].content_type, "message/rfc822");
        // and a base64 attachment of another type is fine
        assert!(super::parse(&attachments(3), &CAPS).is_ok());
    }
}
