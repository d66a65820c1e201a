//! One webhook POST. The host is resolved by [`CheckedResolver`], which refuses the name when
//! the extension refuses ANY address it resolves to (`echovalue.delivery_addresses_error`, the
//! one place the rule lives), and hands the HTTP client exactly the addresses it checked: the
//! client connects only to those, so a second lookup (DNS rebinding) cannot swap in a private
//! address. The URL itself (scheme, credentials, an address literal) was judged by the
//! extension when the delivery was claimed. Redirects are not followed (a 3xx is a failed
//! attempt); no proxy from the environment is used; every attempt has one overall timeout.

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

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

/// Who judges the addresses a name resolved to: `Some(why)` refuses them all.
pub trait AddressCheck: Send + Sync + 'static {
    fn refusal(&self, addrs: Vec<IpAddr>) -> BoxFuture<'static, Result<Option<String>, BoxError>>;
}

/// The extension's rule, asked once per lookup: small next to the POST it guards.
pub struct SqlCheck(pub Pool);

impl AddressCheck for SqlCheck {
    fn refusal(&self, addrs: Vec<IpAddr>) -> BoxFuture<'static, Result<Option<String>, BoxError>> {
        const SQL: &str = "select echovalue.delivery_addresses_error(addrs => $1)";
        let pool = self.0.clone();
        Box::pin(async move {
            let client = pool.get().await?;
            let stmt = client.prepare_cached(SQL).await?;
            let row = client.query_one(&stmt, &[&addrs]).await?;
            Ok(row.try_get(0)?)
        })
    }
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
    check: Arc<dyn AddressCheck>,
}

impl<L: Lookup> CheckedResolver<L> {
    pub fn new(lookup: L, check: Arc<dyn AddressCheck>) -> Self {
        Self { lookup, check }
    }

    /// The checked addresses of `host` (port 0: the client sets the URL's port). A check that
    /// cannot be made (the database is down) fails the attempt like a network error: retried.
    pub fn resolve_checked(
        &self,
        host: &str,
    ) -> impl Future<Output = Result<Vec<SocketAddr>, BoxError>> + Send + 'static {
        let lookup = self.lookup.lookup(host.to_owned());
        let check = self.check.clone();
        async move {
            let addrs = lookup.await?;
            if let Some(why) = check.refusal(addrs.clone()).await? {
                return Err(Box::new(NotAllowed(why)) as BoxError);
            }
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
    pub fn new(timeout: Duration, check: Arc<dyn AddressCheck>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver::new(SystemLookup, check)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("echovalue-mailhook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
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

    /// The URL parsed; whether it may be called was decided when it was claimed.
    fn check_url(&self, raw: &str) -> Result<reqwest::Url, NotAllowed> {
        let url = reqwest::Url::parse(raw)
            .map_err(|_| NotAllowed("the webhook URL does not parse".into()))?;
        if url.host().is_none() {
            return Err(NotAllowed("the webhook URL has no host".into()));
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
    use std::sync::Mutex;

    /// A resolver answering from a table, like a hostile DNS server would.
    struct Table(HashMap<&'static str, Vec<IpAddr>>);

    impl Lookup for Table {
        fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
            let r =
                self.0.get(host.as_str()).cloned().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")
                });
            Box::pin(async move { r })
        }
    }

    /// Refuses any list holding `bad`, and records what it was asked (the rule itself is the
    /// extension's, tested in the SQL suite `delivery`).
    struct Refuse {
        bad: IpAddr,
        asked: Mutex<Vec<Vec<IpAddr>>>,
    }

    impl AddressCheck for Refuse {
        fn refusal(
            &self,
            addrs: Vec<IpAddr>,
        ) -> BoxFuture<'static, Result<Option<String>, BoxError>> {
            let why = addrs.contains(&self.bad).then(|| "refused".to_owned());
            self.asked.lock().unwrap().push(addrs);
            Box::pin(async move { Ok(why) })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[tokio::test]
    async fn every_resolved_address_is_checked_and_only_those_are_used() {
        let table = Table(HashMap::from([
            (
                "public.example",
                vec![ip("93.184.216.34"), ip("2606:2800:220:1::1")],
            ),
            ("mixed.example", vec![ip("93.184.216.34"), ip("10.0.0.5")]),
        ]));
        let check = Arc::new(Refuse {
            bad: ip("10.0.0.5"),
            asked: Mutex::new(Vec::new()),
        });
        let resolver = CheckedResolver::new(table, check.clone());
        let ok = resolver
            .resolve_checked("public.example")
            .await
            .expect("public");
        assert_eq!(
            ok,
            vec![
                SocketAddr::new(ip("93.184.216.34"), 0),
                SocketAddr::new(ip("2606:2800:220:1::1"), 0)
            ]
        );
        let err = resolver
            .resolve_checked("mixed.example")
            .await
            .expect_err("one address is refused");
        assert!(err.downcast_ref::<NotAllowed>().is_some(), "{err}");
        assert!(resolver.resolve_checked("unknown.example").await.is_err());
        let asked = check.asked.lock().unwrap();
        assert_eq!(asked.len(), 2, "one check per lookup that answered");
        assert_eq!(asked[1], vec![ip("93.184.216.34"), ip("10.0.0.5")]);
    }

    #[test]
    fn urls_are_parsed_only() {
        let check = Arc::new(Refuse {
            bad: ip("10.0.0.5"),
            asked: Mutex::new(Vec::new()),
        });
        let sender = Sender::new(Duration::from_secs(1), check).expect("client");
        assert!(sender.check_url("not a url").is_err());
        assert!(sender.check_url("https://example.com/hook").is_ok());
    }
}
