//! Webhook body formats (SPEC §12): what a mailbox webhook POSTs for one message, built from
//! the section 7 payload, and what an alert webhook POSTs (SPEC §14, the alert's own payload).
//! The mailhook only sends the body `delivery_claim` hands it.
//!
//! Rust rather than SQL because the custom template is a small parser (`template.rs`) and the
//! others need the same text helpers (HTML to text, cutting at a character, escaping).

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Map, Value};

use crate::template;

/// Formats a webhook may have; `""` is the section 7 payload itself.
pub const FORMATS: [&str; 7] = [
    "",
    "slack",
    "discord",
    "teams",
    "telegram",
    "pagerduty",
    "custom",
];
/// Discord refuses a `content` longer than this many characters.
const DISCORD_MAX_CHARS: usize = 2000;
/// Telegram refuses a message text longer than this many characters.
const TELEGRAM_MAX_CHARS: usize = 4096;
/// PagerDuty's limit for an event summary.
const PAGERDUTY_SUMMARY_CHARS: usize = 1024;
/// PagerDuty refuses events over 512 KiB; the text is kept well below.
const PAGERDUTY_TEXT_CHARS: usize = 100_000;
/// Slack cuts a message at 40,000 characters; Teams refuses one over about 28 KB.
const SLACK_MAX_CHARS: usize = 40_000;
const TEAMS_MAX_CHARS: usize = 20_000;
/// A Telegram subject longer than this is cut, so the whole text's cut never reaches it.
const TELEGRAM_SUBJECT_CHARS: usize = 1024;

/// The fields of a payload the fixed formats show (`(no subject)` for an empty subject; the
/// text with LF line ends and no trailing blank lines).
pub(crate) struct Mail {
    pub subject: String,
    pub from_email: String,
    pub from_name: String,
    pub text: String,
}

pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .unwrap_or("")
}

impl Mail {
    /// The mail a payload shows: a message's, or an alert's text (`alert.rs`).
    fn of(payload: &Value) -> Self {
        if let Some(alert) = crate::alert::mail(payload) {
            return alert;
        }
        let text = str_at(payload, &["text"]);
        let subject = str_at(payload, &["subject"]);
        Mail {
            subject: if subject.is_empty() {
                "(no subject)"
            } else {
                subject
            }
            .to_owned(),
            from_email: str_at(payload, &["from", "email"]).to_owned(),
            from_name: str_at(payload, &["from", "name"]).to_owned(),
            // a chat message ends with its last line: mail bodies end with blank CRLF lines
            text: if text.is_empty() {
                html_text(str_at(payload, &["html"]))
            } else {
                text.replace("\r\n", "\n").trim_end().to_owned()
            },
        }
    }

    /// `Name <email>`, or the address alone when there is no name.
    fn from(&self) -> String {
        match (self.from_name.is_empty(), self.from_email.is_empty()) {
            (true, _) => self.from_email.clone(),
            (false, true) => self.from_name.clone(),
            (false, false) => format!("{} <{}>", self.from_name, self.from_email),
        }
    }
}

/// `s` cut to at most `max` characters.
fn cut_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// `<`, `>` and `&` as HTML entities (what Slack's and Telegram's HTML-ish markup need).
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

/// An escaped text cut to at most `max` characters without splitting an entity.
fn cut_escaped(s: &str, max: usize) -> &str {
    let cut = cut_chars(s, max);
    match (cut.rfind('&'), cut.len() < s.len()) {
        (Some(amp), true) if !cut[amp..].contains(';') => &cut[..amp],
        _ => cut,
    }
}

/// The text of an HTML body: `script` and `style` contents dropped, tags removed (line
/// breaks for `br` and the ends of blocks), the common entities decoded, at most two
/// newlines in a row, trimmed. For a message without a plain-text part, not a renderer.
pub fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        let rest = &html[i..];
        let starts_tag = rest.starts_with('<')
            && rest[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '!');
        if rest.starts_with("<!--") {
            // a comment, whatever it holds
            i = rest.find("-->").map_or(html.len(), |at| i + at + 3);
        } else if starts_tag {
            let Some(end) = rest.find('>') else { break };
            let tag = &lower[i + 1..i + end];
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            i += end + 1;
            if !closing && (name == "script" || name == "style") {
                let close = format!("</{name}");
                i = lower[i..].find(&close).map_or(html.len(), |at| i + at);
                continue;
            }
            if matches!(
                name.as_str(),
                "br" | "p"
                    | "div"
                    | "tr"
                    | "li"
                    | "h1"
                    | "h2"
                    | "h3"
                    | "h4"
                    | "h5"
                    | "h6"
                    | "blockquote"
                    | "pre"
                    | "table"
                    | "ul"
                    | "ol"
            ) {
                out.push('\n');
            }
        } else if rest.starts_with('&') {
            let (c, len) = entity(rest);
            out.push_str(&c);
            i += len;
        } else {
            // text up to the next markup; a `<` that starts no tag is text
            let next = rest[1..].find(['<', '&']).map_or(rest.len(), |at| at + 1);
            out.push_str(&rest[..next]);
            i += next;
        }
    }
    let mut squeezed = String::with_capacity(out.len());
    let mut newlines = 0;
    for c in out.chars() {
        if c == '\n' {
            newlines += 1;
            if newlines > 2 {
                continue;
            }
        } else if c != ' ' && c != '\t' && c != '\r' {
            newlines = 0;
        }
        squeezed.push(c);
    }
    squeezed.trim().to_owned()
}

/// The character an entity at the start of `s` stands for and its length; `&` alone when it
/// is not one this knows.
fn entity(s: &str) -> (String, usize) {
    let Some(end) = s[..template::floor_char_boundary(s, 12)].find(';') else {
        return ("&".to_owned(), 1);
    };
    let name = &s[1..end];
    let c = match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => name
            .strip_prefix("#x")
            .or_else(|| name.strip_prefix("#X"))
            .map(|h| u32::from_str_radix(h, 16))
            .or_else(|| name.strip_prefix('#').map(str::parse::<u32>))
            .and_then(Result::ok)
            .and_then(char::from_u32)
            .filter(|&c| c != '\0'),
    };
    match c {
        Some(c) => (c.to_string(), end + 1),
        None => ("&".to_owned(), 1),
    }
}

/// The body POSTed for `payload` (section 7's JSON) in `format`. `options` are the webhook's
/// (`chat_id`, `routing_key`), `template` its custom template; both were checked when it was
/// configured. The payload as it is for `""` or a format this does not know.
pub fn body(
    format: &str,
    options: &Map<String, Value>,
    template: Option<&str>,
    payload: &str,
) -> String {
    if format.is_empty() || !FORMATS.contains(&format) {
        return payload.to_owned();
    }
    let data: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    if format == "custom" {
        let t = template
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .unwrap_or(Value::Null);
        return template::render(&t, &data).to_string();
    }
    let m = Mail::of(&data);
    let option = |k: &str| options.get(k).and_then(Value::as_str).unwrap_or("");
    let out = match format {
        "slack" => {
            let text = format!(
                "*{}*\nFrom: {}\n\n{}",
                escape_html(&m.subject),
                escape_html(&m.from()),
                escape_html(&m.text)
            );
            json!({"text": cut_escaped(&text, SLACK_MAX_CHARS)})
        }
        "discord" => {
            let text = format!("**{}**\nFrom: {}\n\n{}", m.subject, m.from(), m.text);
            json!({"content": cut_chars(&text, DISCORD_MAX_CHARS)})
        }
        "teams" => {
            let text = format!("**{}**\n\nFrom: {}\n\n{}", m.subject, m.from(), m.text);
            json!({"text": cut_chars(&text, TEAMS_MAX_CHARS)})
        }
        "telegram" => {
            let text = format!(
                "<b>{}</b>\nFrom: {}\n\n{}",
                // short enough that the cut below never splits the <b>…</b>
                escape_html(cut_chars(&m.subject, TELEGRAM_SUBJECT_CHARS)),
                escape_html(&m.from()),
                escape_html(&m.text)
            );
            json!({"chat_id": option("chat_id"), "text": cut_escaped(&text, TELEGRAM_MAX_CHARS),
                   "parse_mode": "HTML"})
        }
        "pagerduty" => {
            let source = if m.from_email.is_empty() {
                "echovalue"
            } else {
                &m.from_email
            };
            json!({"routing_key": option("routing_key"), "event_action": "trigger",
                   "payload": {"summary": cut_chars(&m.subject, PAGERDUTY_SUMMARY_CHARS),
                               "source": source, "severity": "info",
                               "custom_details": {"text": cut_chars(&m.text, PAGERDUTY_TEXT_CHARS),
                                                  "from_name": m.from_name}}})
        }
        _ => return payload.to_owned(),
    };
    out.to_string()
}

/// `echovalue._webhook_body(format, options, template, payload)`: [`body`], for
/// `delivery_claim` and the test endpoint.
#[pg_extern(immutable, parallel_safe, name = "_webhook_body")]
fn body_sql(
    p_format: Option<&str>,
    p_options: Option<JsonB>,
    p_template: Option<&str>,
    p_payload: Option<&str>,
) -> Option<String> {
    let payload = p_payload?;
    let options = match p_options {
        Some(JsonB(Value::Object(o))) => o,
        _ => Map::new(),
    };
    Some(body(p_format.unwrap_or(""), &options, p_template, payload))
}

/// `echovalue._webhook_template_error(template)`: why a custom template (its JSON text) is
/// refused, as a 400 body, or NULL.
#[pg_extern(immutable, parallel_safe, name = "_webhook_template_error")]
fn template_error_sql(p_template: Option<&str>) -> Option<String> {
    template::template_error(p_template?).map(|e| format!("Bad Request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_text() {
        assert_eq!(
            html_text("<p>Hello&nbsp;<b>you</b></p><p>2 &lt; 3 &amp; &#233;&#x1F600;</p>"),
            "Hello you\n\n2 < 3 & é😀"
        );
        assert_eq!(
            html_text("<style>p{}</style><script>x<y</script>a<br>b<br/><br><br>c"),
            "a\nb\n\nc"
        );
        assert_eq!(
            html_text("a & b &unknown; &#0; <unclosed"),
            "a & b &unknown; &#0;"
        );
        assert_eq!(html_text("<SCRIPT>x</SCRIPT>ok"), "ok");
        // a `<` that starts no tag is text; a comment goes whole, `>` inside it too
        assert_eq!(html_text("<p>1 < 2 and 3 <4</p>"), "1 < 2 and 3 <4");
        assert_eq!(html_text("a<!-- x > y -->b<!-- open"), "ab");
    }

    #[test]
    fn cuts_keep_characters_and_entities_whole() {
        assert_eq!(cut_chars("é😀x", 2), "é😀");
        assert_eq!(cut_escaped("ab&amp;", 4), "ab");
        assert_eq!(cut_escaped("ab&amp;", 7), "ab&amp;");
        assert_eq!(cut_escaped("a&lt;bc", 5), "a&lt;");
    }

    #[test]
    fn unknown_or_empty_format_is_the_payload() {
        let p = r#"{"subject":"s"}"#;
        assert_eq!(body("", &Map::new(), None, p), p);
        assert_eq!(body("nope", &Map::new(), None, p), p);
    }
}
