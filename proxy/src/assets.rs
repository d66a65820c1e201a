//! The files the proxy serves itself, compiled into the binary: the OpenAPI description
//! (`proxy/openapi.json`) and the dashboard (`proxy/dashboard/`: `index.html` at `/dashboard`,
//! everything under `static/` at `/dashboard/static/…`). No build step and no disk access at
//! run time; a change to a file shows after `cargo build`.
//!
//! The dashboard's assets sit three segments deep so no path of theirs can be a 2023
//! `/{group}/{key}` path. Its pages may only run the scripts and styles served here and may
//! only talk to this origin (a strict Content-Security-Policy, no inline script).

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use include_dir::{include_dir, Dir};

use crate::outcome::Reply;

static OPENAPI: &[u8] = include_bytes!("../openapi.json");
static DASHBOARD_INDEX: &[u8] = include_bytes!("../dashboard/index.html");
static DASHBOARD_STATIC: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/dashboard/static");

/// The path prefix of the dashboard's assets.
pub const STATIC_PREFIX: &str = "/dashboard/static/";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One compiled-in file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// Served with the dashboard's security headers (CSP, no framing, no referrer).
    pub page: bool,
}

/// `GET /openapi.json`.
pub fn openapi() -> Asset {
    Asset {
        body: OPENAPI,
        content_type: "application/json",
        page: false,
    }
}

/// `GET /dashboard`.
pub fn dashboard_index() -> Asset {
    Asset {
        body: DASHBOARD_INDEX,
        content_type: "text/html; charset=utf-8",
        page: true,
    }
}

/// `GET /dashboard/static/{name}` for a raw (not percent-decoded) name: only files of the
/// directory itself, by their exact name; anything else (subdirectories, `..`, encoded
/// characters) is no asset.
pub fn dashboard_static(name: &str) -> Option<Asset> {
    if name.is_empty() || name.contains(['/', '\\', '%']) || name.starts_with('.') {
        return None;
    }
    let file = DASHBOARD_STATIC.get_file(name)?;
    let content_type = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => return None,
    };
    Some(Asset {
        body: file.contents(),
        content_type,
        page: true,
    })
}

impl Asset {
    pub fn into_reply(self) -> Reply {
        let mut reply = Response::new(Full::new(Bytes::from_static(self.body)));
        *reply.status_mut() = StatusCode::OK;
        let h = reply.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        // Revalidated on every load: a new proxy version serves new files at once.
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        if self.page {
            h.insert("content-security-policy", HeaderValue::from_static(CSP));
            h.insert("x-frame-options", HeaderValue::from_static("DENY"));
            h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_of_the_static_directory_are_served() {
        for file in DASHBOARD_STATIC.files() {
            let name = file.path().to_str().unwrap_or_default();
            let asset = dashboard_static(name);
            assert!(asset.is_some(), "{name} has no content type");
        }
        for bad in [
            "",
            "..",
            "../index.html",
            "a/b.js",
            "%2e%2e",
            ".hidden.js",
            "nope.js",
        ] {
            assert_eq!(dashboard_static(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_openapi_document_is_json_of_version_3_1() {
        let doc: serde_json::Value = serde_json::from_slice(openapi().body).expect("JSON");
        assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3.1"));
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn pages_forbid_inline_script_and_other_hosts() {
        let r = dashboard_index().into_reply();
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap_or("");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        assert!(csp.contains("connect-src 'self'"));
        let html = std::str::from_utf8(DASHBOARD_INDEX).unwrap_or("");
        assert!(!html.contains("<script>"), "inline script in index.html");
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
