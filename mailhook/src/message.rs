//! From the raw bytes of DATA to the fields the webhook payload carries (seed 002), using
//! `mail-parser` for MIME, charsets, quoted-printable and base64. HTML-only mail gets its text
//! version from mail-parser's HTML-to-text conversion.
//!
//! Everything here ends up in Postgres `text`/`jsonb`, which cannot hold NUL, so NULs are
//! dropped from every string (a NUL in a header is never meaningful).

use mail_parser::{MessageParser, MimeHeaders, PartType};
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

/// Parses a message; never fails: what cannot be read is left empty (the raw size is kept).
pub fn parse(raw: &[u8]) -> Parsed {
    let size_bytes = i32::try_from(raw.len()).unwrap_or(i32::MAX);
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Parsed {
            headers: Value::Object(Map::new()),
            size_bytes,
            ..Parsed::default()
        };
    };
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

    Parsed {
        message_id: msg.message_id().map(clean),
        from_email: from.and_then(|a| a.address()).map(clean),
        from_name: from.and_then(|a| a.name()).map(clean),
        subject: msg.subject().map(clean),
        text: (!texts.is_empty()).then(|| clean(&texts.join("\n"))),
        html: (!htmls.is_empty()).then(|| clean(&htmls.join("\n"))),
        headers: headers(&msg),
        size_bytes,
        attachments,
    }
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
}
