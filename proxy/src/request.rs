//! What the handler reads from a request, bounded: the body within the size limit and the read
//! timeout, query parameters, and path segments as text Postgres can hold.

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;
use percent_encoding::percent_decode_str;

use crate::config::Config;
use crate::outcome::{self, plain, Reply};

/// The path segment `from_end` places before the last (0 is the last), percent-decoded, when
/// it is text Postgres can hold; `None` when it is not (or there is no such segment).
pub fn segment(path: &str, from_end: usize) -> Option<String> {
    let raw = path.rsplit('/').nth(from_end)?;
    let text = percent_decode_str(raw).decode_utf8().ok()?;
    (!text.contains('\0')).then(|| text.into_owned())
}

/// Reads a whole body within the size limit and the read timeout.
pub async fn read_body<B>(body: B, config: &Config) -> Result<Bytes, Reply>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = Limited::new(body, config.max_body_bytes);
    let timeout = Duration::from_secs(config.read_timeout_secs.max(1));
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(outcome::request_timeout()),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(outcome::payload_too_large())
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "request body could not be read");
            Err(plain(
                StatusCode::BAD_REQUEST,
                "Bad Request: unreadable body",
            ))
        }
    }
}

/// A declared Content-Length above the limit is refused before any work is done.
pub fn declared_too_large(headers: &HeaderMap, max: usize) -> bool {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > max as u64)
}

/// The first value of `name` in the query string, decoded; `None` when absent.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("ttl=5&n=2"), "n").as_deref(), Some("2"));
        assert_eq!(query_param(Some("n=a%20b"), "n").as_deref(), Some("a b"));
        assert_eq!(query_param(Some("n="), "n").as_deref(), Some(""));
        assert_eq!(query_param(Some("n=1&n=2"), "n").as_deref(), Some("1"));
        assert_eq!(query_param(Some("x=1"), "n"), None);
        assert_eq!(query_param(None, "n"), None);
    }

    #[test]
    fn path_segments_as_sql_text() {
        assert_eq!(
            segment("/kv/my%20group/k%2Fy", 1).as_deref(),
            Some("my group")
        );
        assert_eq!(segment("/kv/my%20group/k%2Fy", 0).as_deref(), Some("k/y"));
        assert_eq!(segment("/kv/%C3%A9/k", 1).as_deref(), Some("é"));
        // the database owns the 1-to-30 rule: an empty group reaches it
        assert_eq!(segment("/kv//k", 1).as_deref(), Some(""));
        assert_eq!(segment("/kv/%FF/k", 1), None);
        assert_eq!(segment("/a/%C3", 0), None);
        assert_eq!(segment("/kv/a%00/k", 1), None);
        assert_eq!(segment("/token/keys/%00", 0), None);
    }

    #[test]
    fn content_length_check() {
        let mut h = HeaderMap::new();
        assert!(!declared_too_large(&h, 10));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert!(!declared_too_large(&h, 10));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert!(declared_too_large(&h, 10));
    }
}
