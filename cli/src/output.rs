//! What a command prints and its exit status.
//!
//! On a 2xx answer the body goes to stdout: with `--json` exactly as received (and a newline
//! after it); otherwise JSON re-indented, a text body as it is, or one line per item where a
//! command renders lines. Every output but `kv get`'s ends with a newline; `kv get` prints the
//! stored bytes exactly, terminal or not. Any other answer prints `<status> <body>` on
//! stderr, the server's own words.

use std::io::Write;

use reqwest::StatusCode;
use serde_json::Value;

use crate::client::Response;
use crate::json;

/// Exit status of an answer: 0 for 2xx, 2 for 5xx, 1 for anything else (4xx; a 3xx, since
/// redirects are not followed).
pub fn exit_code(status: StatusCode) -> u8 {
    if status.is_success() {
        0
    } else if status.is_server_error() {
        2
    } else {
        1
    }
}

/// How a command shows a successful answer.
#[derive(Clone, Copy)]
pub enum Render {
    /// JSON re-indented, text as it is.
    Auto,
    /// The bytes exactly, nothing added, with or without `--json` (`kv get`).
    Exact,
    /// Lines made from the JSON body; a body of another shape is shown as `Auto`.
    Lines(fn(&Value) -> Option<Vec<String>>),
}

/// Writes bytes to stdout; a closed pipe (`| head`) is not an error worth a message.
pub fn out(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(bytes).and_then(|()| stdout.flush());
}

/// Writes text and a newline unless it already ends with one.
pub fn line(text: &str) {
    if text.ends_with('\n') {
        out(text.as_bytes());
    } else {
        out(format!("{text}\n").as_bytes());
    }
}

/// Shows a 2xx answer as `render` says (`json`: the `--json` flag).
pub fn show(resp: &Response, render: Render, json: bool) {
    match render {
        Render::Exact => out(&resp.body),
        _ if json => raw_line(&resp.body),
        Render::Lines(lines) => match resp.value().as_ref().and_then(lines) {
            Some(lines) => lines.iter().for_each(|l| line(l)),
            None => auto(resp),
        },
        Render::Auto => auto(resp),
    }
}

fn raw_line(body: &[u8]) {
    out(body);
    if !body.ends_with(b"\n") {
        out(b"\n");
    }
}

fn auto(resp: &Response) {
    let text = resp.text();
    match json::pretty(&text) {
        Some(pretty) if resp.is_json() || text.trim_start().starts_with(['{', '[']) => {
            line(&pretty)
        }
        _ => line(&text),
    }
}

/// Prints a non-2xx answer on stderr as `<code> <body>`, and a hint when a 401 came to a
/// command that had no token to send. Returns the exit status.
pub fn report(resp: &Response, had_token: bool) -> u8 {
    let body = resp.text();
    let body = body.trim_end();
    if body.is_empty() {
        eprintln!("{}", resp.status);
    } else {
        eprintln!("{} {body}", resp.status.as_u16());
    }
    if resp.status == StatusCode::UNAUTHORIZED && !had_token {
        eprintln!(
            "hint: no token was sent: pass --token, set ECHOVALUE_TOKEN, or run \
             `echovalue token new --save`"
        );
    }
    exit_code(resp.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_status_class() {
        assert_eq!(exit_code(StatusCode::OK), 0);
        assert_eq!(exit_code(StatusCode::NO_CONTENT), 0);
        assert_eq!(exit_code(StatusCode::BAD_REQUEST), 1);
        assert_eq!(exit_code(StatusCode::PAYMENT_REQUIRED), 1);
        assert_eq!(exit_code(StatusCode::TOO_MANY_REQUESTS), 1);
        assert_eq!(exit_code(StatusCode::FOUND), 1);
        assert_eq!(exit_code(StatusCode::NOT_IMPLEMENTED), 2);
        assert_eq!(exit_code(StatusCode::SERVICE_UNAVAILABLE), 2);
    }
}
