//! The one generic mapping from an `echovalue.outcome` row to an HTTP response, and the
//! plain-text replies the proxy makes itself. No route has its own rendering.

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;

/// One row of `echovalue.attachment_download`: the file, or a refusal's status and text.
#[derive(Debug, Clone, PartialEq)]
pub struct Download {
    pub status: i32,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub content: Option<Vec<u8>>,
    pub error: Option<String>,
}

impl Download {
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Download {
            status: row.try_get("status")?,
            content_type: row.try_get("content_type")?,
            filename: row.try_get("filename")?,
            content: row.try_get("content")?,
            error: row.try_get("error")?,
        })
    }

    /// 200 with the stored content type, `Content-Disposition: attachment` (never rendered
    /// inline on the proxy's origin) and `nosniff`; a refusal as plain text.
    pub fn into_reply(self) -> Reply {
        let (200, Some(content)) = (self.status, self.content) else {
            let status = u16::try_from(self.status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .filter(|s| s.is_client_error())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return plain(status, self.error.unwrap_or_default());
        };
        let mut reply = Response::new(Full::new(Bytes::from(content)));
        let h = reply.headers_mut();
        let ct = self
            .content_type
            .and_then(|c| HeaderValue::try_from(c).ok())
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        h.insert(CONTENT_TYPE, ct);
        if let Ok(v) = HeaderValue::try_from(content_disposition(self.filename.as_deref())) {
            h.insert(http::header::CONTENT_DISPOSITION, v);
        }
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        reply
    }
}

/// `attachment; filename="…"` with an ASCII fallback and the exact name as RFC 5987
/// `filename*`; quotes, backslashes and controls never reach the header.
fn content_disposition(filename: Option<&str>) -> String {
    let Some(name) = filename.filter(|n| !n.is_empty()) else {
        return "attachment".to_owned();
    };
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// Every response the proxy sends.
pub type Reply = Response<Full<Bytes>>;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// One row of `echovalue.outcome` (see extension/CONTRACT.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: i32,
    pub body: Option<String>,
    pub content_type: Option<String>,
    pub cost: Option<i32>,
    pub balance: Option<i64>,
    pub headers: Option<Value>,
}

impl Outcome {
    /// Removes header `name` from the outcome and returns its text value, if it has one.
    pub fn take_header(&mut self, name: &str) -> Option<String> {
        let headers = self.headers.as_mut()?.as_object_mut()?;
        let value = headers.remove(name)?;
        if headers.is_empty() {
            self.headers = None;
        }
        value.as_str().map(str::to_owned)
    }

    /// Reads the columns `status, body, content_type, cost, balance, headers` by name.
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Outcome {
            status: row.try_get("status")?,
            body: row.try_get("body")?,
            content_type: row.try_get("content_type")?,
            cost: row.try_get("cost")?,
            balance: row.try_get("balance")?,
            headers: row.try_get("headers")?,
        })
    }

    /// Status, body and content type as given; `x-cost`/`x-balance` when not NULL; every key of
    /// `headers` as a header. A status outside 100..=599 is a contract breach and becomes 500.
    pub fn into_reply(self) -> Reply {
        let Some(status) = u16::try_from(self.status)
            .ok()
            .filter(|s| (100..600).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
        else {
            tracing::error!(status = self.status, "outcome status is not an HTTP status");
            return internal_error();
        };
        let mut reply = plain(status, self.body.unwrap_or_default());
        let h = reply.headers_mut();
        if let Some(ct) = self
            .content_type
            .and_then(|c| HeaderValue::try_from(c).ok())
        {
            h.insert(CONTENT_TYPE, ct);
        }
        if let Some(cost) = self.cost {
            h.insert("x-cost", HeaderValue::from(cost));
        }
        if let Some(balance) = self.balance {
            h.insert("x-balance", HeaderValue::from(balance));
        }
        if let Some(Value::Object(extra)) = self.headers {
            for (name, value) in extra {
                let text = match value {
                    Value::String(s) => s,
                    Value::Null => continue,
                    other => other.to_string(),
                };
                match (
                    HeaderName::try_from(name.as_str()),
                    HeaderValue::try_from(text),
                ) {
                    (Ok(n), Ok(v)) => {
                        h.insert(n, v);
                    }
                    _ => {
                        tracing::warn!(header = %name, "outcome header is not a valid HTTP header; dropped")
                    }
                }
            }
        }
        reply
    }
}

/// A `text/plain; charset=utf-8` reply.
pub fn plain(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut reply = Response::new(Full::new(body.into()));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    reply
}

/// The texts of SPEC §5 for the errors the proxy decides itself.
pub fn unauthorized() -> Reply {
    plain(StatusCode::UNAUTHORIZED, "Unauthorized")
}
pub fn not_found() -> Reply {
    plain(StatusCode::NOT_FOUND, "Not Found")
}
pub fn method_not_allowed(allow: &'static str) -> Reply {
    let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    r
}
pub fn payload_too_large() -> Reply {
    plain(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large")
}
pub fn request_timeout() -> Reply {
    plain(StatusCode::REQUEST_TIMEOUT, "Request Timeout")
}
pub fn internal_error() -> Reply {
    plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}
/// 503, with `Retry-After: 1`: every cause (no connection, a timeout, full queues) is one a
/// client can retry soon.
pub fn unavailable() -> Reply {
    let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_is_safe() {
        assert_eq!(content_disposition(None), "attachment");
        assert_eq!(
            content_disposition(Some("report.pdf")),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report%2Epdf"
        );
        let tricky = content_disposition(Some("a\"b\\c\r\nSet-Cookie: x=1 é.txt"));
        assert!(!tricky.contains('\r') && !tricky.contains('\n'), "{tricky}");
        assert!(
            tricky.starts_with("attachment; filename=\"a_b_c__Set-Cookie: x=1 _.txt\""),
            "{tricky}"
        );
        assert!(HeaderValue::try_from(tricky).is_ok());
    }
    use http_body_util::BodyExt;
    use serde_json::json;

    fn outcome(status: i32) -> Outcome {
        Outcome {
            status,
            body: Some("OK".into()),
            content_type: Some(TEXT_PLAIN.into()),
            cost: Some(1),
            balance: Some(99),
            headers: None,
        }
    }

    async fn body(r: Reply) -> String {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn success_with_credit_headers() {
        let r = outcome(200).into_reply();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-cost"], "1");
        assert_eq!(r.headers()["x-balance"], "99");
        assert_eq!(r.headers()[CONTENT_TYPE], TEXT_PLAIN);
        assert_eq!(body(r).await, "OK");
    }

    #[tokio::test]
    async fn unresolved_wallet_has_no_credit_headers() {
        let o = Outcome {
            body: Some("Unauthorized".into()),
            cost: None,
            balance: None,
            content_type: None,
            ..outcome(401)
        };
        let r = o.into_reply();
        assert_eq!(r.status(), 401);
        assert!(r.headers().get("x-cost").is_none());
        assert!(r.headers().get("x-balance").is_none());
        assert_eq!(r.headers()[CONTENT_TYPE], TEXT_PLAIN);
        assert_eq!(body(r).await, "Unauthorized");
    }

    #[tokio::test]
    async fn json_and_extra_headers() {
        let o = Outcome {
            content_type: Some("application/json".into()),
            body: Some(r#"{"error":"spending_limit_exceeded"}"#.into()),
            headers: Some(
                json!({"retry-after": "7", "x-limit-daily-remaining": 3, "bad header": "x", "gone": null}),
            ),
            ..outcome(429)
        };
        let r = o.into_reply();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()["retry-after"], "7");
        assert_eq!(r.headers()["x-limit-daily-remaining"], "3");
        assert!(r.headers().get("gone").is_none());
        assert_eq!(body(r).await, r#"{"error":"spending_limit_exceeded"}"#);
    }

    #[tokio::test]
    async fn bad_status_is_internal_error() {
        for s in [0, 99, 600, 1000, -1] {
            let r = outcome(s).into_reply();
            assert_eq!(r.status(), 500);
            assert!(r.headers().get("x-cost").is_none());
            assert_eq!(body(r).await, "Internal Server Error");
        }
    }
}
