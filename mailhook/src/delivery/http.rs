//! One webhook POST. The host is resolved by [`CheckedResolver`], which refuses the name when
//! ANY address it resolves to is not public, and hands the HTTP client exactly the addresses it
//! checked: the client connects only to those, so a second lookup (DNS rebinding) cannot swap
//! in a private address. Address literals never reach a resolver and are checked before the
//! request. Redirects are not followed (a 3xx is a failed attempt); no proxy from the
//! environment is used; every attempt has one overall timeout.

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::address;
use super::retry::{parse_retry_after, Response};

type BoxError = Box<dyn StdError + Send + Sync>;

/// A target refused before connecting; its text names the address class, never a secret.
#[derive(Debug)]
pub struct NotAllowed(pub String);

impl std::fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for NotAllowed {}

/// Checks every address of a lookup; the resolver and its unit tests share it.
pub fn check_all(addrs: &[IpAddr], allow_insecure: bool) -> Result<(), NotAllowed> {
    if addrs.is_empty() {
        return Err(NotAllowed("the host has no address".into()));
    }
    for addr in addrs {
        if let Err(class) = address::allowed(*addr, allow_insecure) {
            return Err(NotAllowed(format!(
                "the host resolves to a non-public address ({class})"
            )));
        }
    }
    Ok(())
}

/// How names are looked up: the system resolver in production, a table in unit tests.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(
        &self,
        host: String,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The system resolver (getaddrinfo through tokio).
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(
        &self,
        host: String,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// The resolver the HTTP client uses: look up, check all, return the checked addresses.
pub struct CheckedResolver<L> {
    lookup: L,
    allow_insecure: bool,
}

impl<L: Lookup> CheckedResolver<L> {
    pub fn new(lookup: L, allow_insecure: bool) -> Self {
        Self {
            lookup,
            allow_insecure,
        }
    }

    /// The checked addresses of `host` (port 0: the client sets the URL's port).
    pub fn resolve_checked(
        &self,
        host: &str,
    ) -> impl Future<Output = Result<Vec<SocketAddr>, BoxError>> + Send + 'static {
        let lookup = self.lookup.lookup(host.to_owned());
        let allow_insecure = self.allow_insecure;
        async move {
            let addrs = lookup.await?;
            check_all(&addrs, allow_insecure)?;
            Ok(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect())
        }
    }
}

impl<L: Lookup> Resolve for CheckedResolver<L> {
    fn resolve(&self, name: Name) -> Resolving {
        let checked = self.resolve_checked(name.as_str());
        Box::pin(async move {
            let addrs: Addrs = Box::new(checked.await?.into_iter());
            Ok(addrs)
        })
    }
}

/// The delivery HTTP client.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_insecure: bool,
}

/// One request to send.
pub struct Request<'a> {
    pub url: &'a str,
    pub headers: &'a serde_json::Value,
    pub webhook_id: &'a str,
    pub timestamp: i64,
    pub signature: &'a str,
    pub body: &'a str,
}

impl Sender {
    pub fn new(timeout: Duration, allow_insecure: bool) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver::new(SystemLookup, allow_insecure)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("echovalue-mailhook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            allow_insecure,
        })
    }

    /// Sends one attempt; the response and a short error text for the logs (status line or
    /// the kind of network failure; never header values or the secret).
    pub async fn send(&self, req: &Request<'_>) -> (Response, Option<String>) {
        let url = match self.check_url(req.url) {
            Ok(url) => url,
            Err(e) => return (Response::Refused, Some(e.0)),
        };
        let mut builder = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", req.webhook_id)
            .header("webhook-timestamp", req.timestamp.to_string())
            .header("webhook-signature", req.signature)
            .body(req.body.to_owned());
        if let Some(map) = req.headers.as_object() {
            for (name, value) in map {
                if let Some(v) = value.as_str() {
                    builder = builder.header(name.as_str(), v);
                }
            }
        }
        match builder.send().await {
            Ok(resp) => {
                let code = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let error = (!resp.status().is_success()).then(|| {
                    format!(
                        "HTTP {code}{}",
                        resp.status()
                            .canonical_reason()
                            .map(|r| format!(" {r}"))
                            .unwrap_or_default()
                    )
                });
                (Response::Status { code, retry_after }, error)
            }
            Err(e) => classify_error(&e),
        }
    }

    /// The URL, when its scheme and (for an address literal) its address are allowed.
    fn check_url(&self, raw: &str) -> Result<reqwest::Url, NotAllowed> {
        let url = reqwest::Url::parse(raw)
            .map_err(|_| NotAllowed("the webhook URL does not parse".into()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_insecure => {}
            _ => return Err(NotAllowed("the webhook URL is not https".into())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(NotAllowed("the webhook URL carries credentials".into()));
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(NotAllowed("the webhook URL has no host".into())),
        };
        if let Some(ip) = literal {
            check_all(&[ip], self.allow_insecure)?;
        }
        Ok(url)
    }
}

/// A failed send: refused by the resolver's check (final), or a network failure (retried).
fn classify_error(e: &reqwest::Error) -> (Response, Option<String>) {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<NotAllowed>() {
            return (Response::Refused, Some(refused.0.clone()));
        }
        source = err.source();
    }
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "network error"
    };
    // The innermost cause (e.g. "Connection refused", "dns error") without the URL.
    let mut inner = String::new();
    let mut source = e.source();
    while let Some(err) = source {
        inner = err.to_string();
        source = err.source();
    }
    let text = if inner.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {inner}")
    };
    (Response::Network, Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A resolver answering from a table, like a hostile DNS server would.
    struct Table(HashMap<&'static str, Vec<IpAddr>>);

    impl Lookup for Table {
        fn lookup(
            &self,
            host: String,
        ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
            let r =
                self.0.get(host.as_str()).cloned().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")
                });
            Box::pin(async move { r })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[tokio::test]
    async fn every_resolved_address_is_checked() {
        let table = Table(HashMap::from([
            (
                "public.example",
                vec![ip("93.184.216.34"), ip("2606:2800:220:1::1")],
            ),
            ("loopback.example", vec![ip("127.0.0.1")]),
            ("mixed.example", vec![ip("93.184.216.34"), ip("10.0.0.5")]),
            ("mapped.example", vec![ip("::ffff:127.0.0.1")]),
            ("metadata.example", vec![ip("169.254.169.254")]),
            ("empty.example", vec![]),
        ]));
        let strict = CheckedResolver::new(table, false);
        let ok = strict
            .resolve_checked("public.example")
            .await
            .expect("public");
        assert_eq!(ok.len(), 2);
        for host in [
            "loopback.example",
            "mixed.example",
            "mapped.example",
            "metadata.example",
            "empty.example",
        ] {
            let err = strict.resolve_checked(host).await.expect_err(host);
            assert!(err.downcast_ref::<NotAllowed>().is_some(), "{host}: {err}");
        }
        assert!(strict.resolve_checked("unknown.example").await.is_err());
    }

    #[tokio::test]
    async fn insecure_allows_loopback_only() {
        let table = Table(HashMap::from([
            ("loopback.example", vec![ip("127.0.0.1"), ip("::1")]),
            ("private.example", vec![ip("192.168.0.10")]),
        ]));
        let lax = CheckedResolver::new(table, true);
        assert!(lax.resolve_checked("loopback.example").await.is_ok());
        assert!(lax.resolve_checked("private.example").await.is_err());
    }

    #[test]
    fn literal_and_scheme_checks() {
        let strict = Sender::new(Duration::from_secs(1), false).expect("client");
        for bad in [
            "http://93.184.216.34/hook",
            "https://127.0.0.1/hook",
            "https://[::1]/hook",
            "https://[::ffff:7f00:1]/hook",
            "https://10.0.0.1/hook",
            "https://u:p@example.com/hook",
            "ftp://example.com/",
            "not a url",
        ] {
            assert!(strict.check_url(bad).is_err(), "{bad}");
        }
        assert!(strict.check_url("https://93.184.216.34/hook").is_ok());
        assert!(strict.check_url("https://example.com/hook").is_ok());
        let lax = Sender::new(Duration::from_secs(1), true).expect("client");
        assert!(lax.check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(lax.check_url("http://10.0.0.1/hook").is_err());
    }
}
