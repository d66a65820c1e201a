//! CORS: browsers call the API with `fetch`, so every response allows any origin and exposes
//! the credit headers, and preflights on known paths are answered without a database call.

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::outcome::{plain, Reply};

const EXPOSE: &str =
    "x-cost, x-balance, x-limit-daily-remaining, x-limit-monthly-remaining, retry-after";
const ALLOW_HEADERS: &str = "x-token, content-type";
// One day: preflights are cheap for us but cost the browser a round trip.
const MAX_AGE: &str = "86400";

/// Adds the headers every response carries.
pub fn decorate(headers: &mut HeaderMap) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE),
    );
}

/// The answer to an `OPTIONS` preflight on a path serving `allow`.
pub fn preflight(allow: &'static str) -> Reply {
    let mut reply = plain(StatusCode::NO_CONTENT, "");
    let h = reply.headers_mut();
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(allow),
    );
    h.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
    h.remove(http::header::CONTENT_TYPE);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_headers() {
        let mut r = preflight("GET, OPTIONS");
        decorate(r.headers_mut());
        assert_eq!(r.status(), 204);
        let h = r.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, OPTIONS");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "x-token, content-type");
        assert!(h[ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap()
            .contains("x-balance"));
        assert!(h.get(http::header::CONTENT_TYPE).is_none());
    }
}
