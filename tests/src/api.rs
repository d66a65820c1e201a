//! A thin HTTP client for the tests: every call returns status, headers and the raw body
//! together, so assertions can look at bytes, `x-cost` and `x-balance` of the same reply.

use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::header::HeaderMap;
use reqwest::Method;

/// One HTTP reply, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text (lossy, for assertions and messages).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("body is not JSON: {:?}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn header_i64(&self, name: &str) -> Option<i64> {
        self.header(name).and_then(|v| v.trim().parse().ok())
    }

    /// `x-cost` as a number; `None` when absent or not a number.
    pub fn cost(&self) -> Option<i64> {
        self.header_i64("x-cost")
    }

    /// `x-balance` as a number; `None` when absent or not a number.
    pub fn balance(&self) -> Option<i64> {
        self.header_i64("x-balance")
    }
}

/// Requests against one proxy's base URL.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(base: String) -> Result<Self> {
        // A request that hangs must fail the test, not stall the suite; the proxy under test
        // is never reached through a system HTTP proxy.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self { http, base })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends any request. `token` becomes `x-token`; `headers` are added as given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Reply> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = token {
            req = req.header("x-token", t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path} failed"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?.to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Reply> {
        self.send(Method::GET, path, token, None, &[]).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Result<Reply> {
        self.send(Method::DELETE, path, token, None, &[]).await
    }

    /// The value of an unlabelled metric in the proxy's `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let text = self.get("/metrics", None).await?.text();
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(str::trim);
        match value {
            Some(v) => v
                .parse()
                .with_context(|| format!("metric {name} is not a number: {v:?}")),
            None => Ok(0.0),
        }
    }

    /// POST with the content type `curl -d` uses, as the seeds' examples do.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> Result<Reply> {
        self.send(
            Method::POST,
            path,
            token,
            Some(body.into()),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await
    }

    /// `POST /token` with `token=new`, as if from `client_addr` (needs a proxy that trusts
    /// `X-Forwarded-For`).
    pub async fn token_new_from(&self, client_addr: &str) -> Result<Reply> {
        self.send(
            Method::POST,
            "/token",
            None,
            Some(b"token=new".to_vec()),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-forwarded-for", client_addr),
            ],
        )
        .await
    }
}
