//! One HTTP call to the service: the request as a value, the answer fully read, and `-v`'s
//! lines on stderr. The token travels only in the `x-token` header (marked sensitive), never
//! in a URL, so no message here (which names URLs) can show it.

use std::time::Duration;

use reqwest::blocking::Client as Http;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::redirect::Policy;
use reqwest::{Method, StatusCode};

use crate::encode;

/// What ended a command before it had an answer to show: the server could not be reached,
/// or something local (config file, stdin, a name no URL can hold). Exit status 2.
#[derive(Debug)]
pub struct Failure(pub String);

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure(s)
    }
}

/// A request: method, path with its query (already encoded), body with its content type,
/// and whether the token goes along.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub body: Option<(Vec<u8>, String)>,
    pub with_token: bool,
}

impl Request {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            body: None,
            with_token: true,
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    pub fn body(mut self, bytes: Vec<u8>, content_type: &str) -> Self {
        self.body = Some((bytes, content_type.to_owned()));
        self
    }

    pub fn json(self, bytes: Vec<u8>) -> Self {
        self.body(bytes, "application/json")
    }

    pub fn without_token(mut self) -> Self {
        self.with_token = false;
        self
    }
}

/// An answer, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn value(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn is_json(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("application/json"))
    }
}

/// The HTTP client of one command: base URL, token, `-v`.
pub struct Client {
    http: Http,
    base: String,
    token: Option<HeaderValue>,
    verbose: bool,
    timeout_secs: u64,
}

impl Client {
    /// `timeout_secs` 0 waits for ever.
    pub fn new(
        base: &str,
        token: Option<&str>,
        verbose: bool,
        timeout_secs: u64,
    ) -> Result<Self, Failure> {
        match reqwest::Url::parse(base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(_) => return Err(format!("the base URL {base} is not http or https").into()),
            Err(e) => return Err(format!("the base URL {base} is not a URL: {e}").into()),
        }
        let token = match token {
            Some(t) => {
                let mut v = HeaderValue::from_str(t.trim())
                    .map_err(|_| Failure("the token is not a valid header value".into()))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let timeout = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs));
        let http = Http::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .redirect(Policy::none())
            .user_agent(concat!("echovalue-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.to_owned(),
            token,
            verbose,
            timeout_secs,
        })
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Sends the request and reads the whole answer.
    pub fn send(&self, req: &Request) -> Result<Response, Failure> {
        let url = encode::join(&self.base, &req.path);
        if self.verbose {
            eprintln!("> {} {url}", req.method);
        }
        let mut call = self.http.request(req.method.clone(), &url);
        if let (true, Some(token)) = (req.with_token, &self.token) {
            call = call.header("x-token", token.clone());
        }
        if let Some((bytes, content_type)) = &req.body {
            call = call.header(CONTENT_TYPE, content_type).body(bytes.clone());
        }
        let resp = call.send().map_err(|e| self.unreachable(&url, e))?;
        let status = resp.status();
        if self.verbose {
            eprintln!("< {:?} {status}", resp.version());
            for (name, value) in resp.headers() {
                let n = name.as_str();
                if matches!(n, "x-cost" | "x-balance" | "retry-after") || n.starts_with("x-limit-")
                {
                    eprintln!("< {n}: {}", String::from_utf8_lossy(value.as_bytes()));
                }
            }
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .bytes()
            .map_err(|e| self.unreachable(&url, e))?
            .to_vec();
        Ok(Response {
            status,
            content_type,
            body,
        })
    }

    /// Why a call got no answer, naming the URL (which never holds the token).
    fn unreachable(&self, url: &str, e: reqwest::Error) -> Failure {
        if e.is_timeout() {
            return Failure(format!(
                "no answer from {url} in time (10 s to connect, --timeout {} s in all)",
                self.timeout_secs
            ));
        }
        let e = e.without_url();
        let mut why = vec![e.to_string()];
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !why.contains(&text) {
                why.push(text);
            }
            source = s.source();
        }
        Failure(format!("cannot reach {url}: {}", why.join(": ")))
    }
}
