//! HTTP-level behaviour that belongs to the proxy: unknown paths, wrong methods, body
//! limits, CORS, health, metrics and the client address.

use anyhow::Result;
use echovalue_tests::token::{random_client_addr, random_unknown};
use echovalue_tests::{setup, TestProxy};
use reqwest::Method;

fn allow_set(r: &echovalue_tests::Reply) -> Vec<String> {
    r.header("allow")
        .unwrap_or("")
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty())
        .collect()
}

#[tokio::test]
async fn unknown_paths_are_404() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let w = admin.new_wallet().await?;
    for path in [
        "/nope",
        "/a/b/c",
        "/kv/a/b/c",
        "/token/nope",
        "/kv/",
        "/dashboard/",
        "/dashboard/static/nope.js",
    ] {
        for tok in [None, w.t()] {
            let r = proxy.api().get(path, tok).await?;
            assert_eq!(
                r.status,
                404,
                "{path} token={}: {:?}",
                tok.is_some(),
                r.text()
            );
            assert_eq!(r.text(), "Not Found", "{path}");
            assert!(r
                .header("content-type")
                .unwrap_or("")
                .starts_with("text/plain"));
        }
    }
    Ok(())
}

#[tokio::test]
async fn wrong_method_is_405_with_allow_and_charged() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    // Charged what the path's operation costs (SPEC 4); `None` where the spec names no
    // single price (a logs call costs per entry returned).
    let cases: Vec<(Method, &str, &[&str], Option<i64>)> = vec![
        (Method::PUT, "/kv/a/b", &["GET", "POST", "DELETE"], Some(1)),
        (
            Method::PATCH,
            "/kv/a/b",
            &["GET", "POST", "DELETE"],
            Some(1),
        ),
        (Method::PUT, "/a/b", &["GET", "POST", "DELETE"], Some(1)),
        (Method::DELETE, "/token", &["GET", "POST"], Some(1)),
        (Method::DELETE, "/recharge", &["GET"], Some(0)),
        (Method::POST, "/token/logs", &["GET"], None),
    ];
    let mut balance = 100;
    for (method, path, allowed, want_cost) in cases {
        let r = api
            .send(method.clone(), path, w.t(), Some(b"x".to_vec()), &[])
            .await?;
        assert_eq!(r.status, 405, "{method} {path}: {:?}", r.text());
        assert_eq!(r.text(), "Method Not Allowed");
        assert!(r
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"));
        let allow = allow_set(&r);
        for m in allowed {
            assert!(
                allow.iter().any(|a| a == m),
                "{method} {path}: Allow {allow:?} lacks {m}"
            );
        }
        assert!(
            !allow.iter().any(|a| a == method.as_str()),
            "Allow lists {method}"
        );
        let cost = r.cost().unwrap_or(-1);
        assert!(
            cost >= 0,
            "{method} {path}: x-cost on a 405 with a valid token"
        );
        if let Some(want) = want_cost {
            assert_eq!(
                cost, want,
                "{method} {path}: charged what the operation costs"
            );
        }
        balance -= cost;
        assert_eq!(r.balance(), Some(balance), "{method} {path}");
    }
    assert_eq!(admin.balance(&w).await?, balance);
    // Without a token the method is still wrong.
    let r = api
        .send(Method::PUT, "/kv/a/b", None, Some(b"x".to_vec()), &[])
        .await?;
    assert!(matches!(r.status, 401 | 405), "{}", r.status);
    assert_eq!(r.header("x-cost"), None);
    Ok(())
}

#[tokio::test]
async fn body_above_the_limit_is_413() -> Result<()> {
    let proxy = TestProxy::start_with(|c| c.max_body_bytes = 4096).await?;
    let admin = echovalue_tests::Admin::connect().await?;
    let w = admin.new_wallet().await?;
    let r = proxy
        .api()
        .post("/kv/g/big", w.t(), vec![b'a'; 4096])
        .await?;
    assert_eq!(
        r.status,
        400,
        "at the limit the value rule decides: {:?}",
        r.text()
    );
    let r = proxy
        .api()
        .post("/kv/g/big", w.t(), vec![b'a'; 64 * 1024])
        .await?;
    assert_eq!((r.status, r.text().as_str()), (413, "Payload Too Large"));
    Ok(())
}

#[tokio::test]
async fn default_body_limit_still_takes_the_largest_value() -> Result<()> {
    // 1000 four-byte characters is the largest legal value: 4000 bytes.
    let (proxy, admin) = setup().await?;
    let w = admin.new_wallet().await?;
    let r = proxy
        .api()
        .post("/kv/g/k", w.t(), "🦀".repeat(1000))
        .await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    let r = proxy
        .api()
        .post("/kv/g/k", w.t(), vec![b'a'; 2 * 1024 * 1024])
        .await?;
    assert_eq!(r.status, 413);
    Ok(())
}

#[tokio::test]
async fn oversized_headers_are_refused() -> Result<()> {
    let proxy = TestProxy::start().await?;
    let big = "a".repeat(40 * 1024);
    let r = proxy
        .api()
        .send(Method::GET, "/healthz", None, None, &[("x-big", &big)])
        .await?;
    assert_eq!(
        r.status, 431,
        "a 40 KiB header is above the default head limit"
    );
    Ok(())
}

#[tokio::test]
async fn cors_preflight_and_exposed_headers() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let origin = "https://app.example.com";
    let r = api
        .send(
            Method::OPTIONS,
            "/kv/default/mykey",
            None,
            None,
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "x-token, content-type"),
            ],
        )
        .await?;
    assert!(
        matches!(r.status, 200 | 204),
        "preflight status {}",
        r.status
    );
    let allow_origin = r.header("access-control-allow-origin").unwrap_or("");
    assert!(
        allow_origin == "*" || allow_origin == origin,
        "allow-origin {allow_origin:?}"
    );
    let allow_headers = r
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        allow_headers == "*"
            || (allow_headers.contains("x-token") && allow_headers.contains("content-type")),
        "allow-headers {allow_headers:?}"
    );
    let allow_methods = r
        .header("access-control-allow-methods")
        .unwrap_or("")
        .to_ascii_uppercase();
    assert!(
        allow_methods == "*" || allow_methods.contains("POST"),
        "allow-methods {allow_methods:?}"
    );
    assert_eq!(r.header("x-cost"), None, "a preflight is not charged");

    let w = admin.new_wallet().await?;
    let r = api
        .send(
            Method::GET,
            "/kv/default/mykey",
            w.t(),
            None,
            &[("origin", origin)],
        )
        .await?;
    assert_eq!(r.status, 404);
    let allow_origin = r.header("access-control-allow-origin").unwrap_or("");
    assert!(
        allow_origin == "*" || allow_origin == origin,
        "allow-origin {allow_origin:?}"
    );
    let expose = r
        .header("access-control-expose-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        expose.contains("x-cost") && expose.contains("x-balance"),
        "expose {expose:?}"
    );
    Ok(())
}

#[tokio::test]
async fn healthz() -> Result<()> {
    let proxy = TestProxy::start().await?;
    let r = proxy.api().get("/healthz", None).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cost"), None);
    Ok(())
}

#[tokio::test]
async fn metrics_count_requests_and_never_show_tokens() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    let unknown = random_unknown();
    assert_eq!(api.post("/kv/g/k", w.t(), "v").await?.status, 200);
    assert_eq!(api.get("/kv/g/missing", w.t()).await?.status, 404);
    assert_eq!(api.get("/token", Some(&unknown)).await?.status, 401);
    assert_eq!(
        api.get(&format!("/kv/{}/x", w.token), w.t()).await?.status,
        400
    );

    let r = api.get("/metrics", None).await?;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        !text.contains(&w.token) && !text.contains(&unknown),
        "a token leaked into metrics"
    );
    assert!(
        !text.contains(&w.token[15..47]),
        "part of a token leaked into metrics"
    );

    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let has = |parts: &[&str]| samples.iter().any(|l| parts.iter().all(|p| l.contains(p)));
    assert!(
        has(&["\"200\"", "kv"]),
        "no counter for kv with status 200:\n{text}"
    );
    assert!(
        has(&["\"404\"", "kv"]),
        "no counter for kv with status 404:\n{text}"
    );
    assert!(has(&["\"401\""]), "no counter for status 401:\n{text}");
    assert!(has(&["_bucket{", "le=\""]), "no latency histogram:\n{text}");
    assert!(
        text.contains("# TYPE") && text.contains("histogram"),
        "no histogram type:\n{text}"
    );
    Ok(())
}

#[tokio::test]
async fn forwarded_for_is_ignored_unless_trusted() -> Result<()> {
    let proxy = TestProxy::start().await?;
    // Two different forwarded addresses from the same socket peer: when they are ignored,
    // both count against 127.0.0.1, so the second is always limited.
    let first = proxy.api().token_new_from(&random_client_addr()).await?;
    assert!(matches!(first.status, 200 | 429), "{}", first.status);
    let second = proxy.api().token_new_from(&random_client_addr()).await?;
    assert_eq!(
        second.status,
        429,
        "X-Forwarded-For was trusted: {:?}",
        second.text()
    );
    assert!(second.header("retry-after").is_some());
    Ok(())
}

#[tokio::test]
async fn unreachable_database_is_503_without_details() -> Result<()> {
    let proxy = TestProxy::spawn_with(|c| {
        c.database_url =
            "host=/nonexistent-echovalue-socket-dir port=1 user=nobody dbname=none".into();
        c.db_timeout_secs = 1;
    })
    .await?;
    let api = proxy.api();
    let tok = random_unknown();
    for (method, path) in [
        (Method::GET, "/healthz"),
        (Method::GET, "/token"),
        (Method::POST, "/kv/g/k"),
    ] {
        let r = api
            .send(method.clone(), path, Some(&tok), Some(b"v".to_vec()), &[])
            .await?;
        assert_eq!(r.status, 503, "{method} {path}: {:?}", r.text());
        assert_eq!(r.text(), "Service Unavailable", "{method} {path}");
    }
    // Refusals that need no database still work.
    assert_eq!(api.get("/token", Some("malformed")).await?.status, 401);
    assert_eq!(api.get("/nope", None).await?.status, 404);
    assert_eq!(api.get("/metrics", None).await?.status, 200);
    Ok(())
}

/// Every argument reaches the database as text it can hold: a NUL character (or bytes that are
/// not UTF-8) in a path segment or query value is the operation's charged 400, or for a token
/// id one that names nothing (404), never a database error; and nothing is stored.
#[tokio::test]
async fn nul_in_path_or_query_is_a_charged_refusal_not_a_500() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    let cases: Vec<(Method, &str, u16, &str)> = vec![
        (
            Method::POST,
            "/kv/a%00/k",
            400,
            "Bad Request: group and key must be UTF-8",
        ),
        (
            Method::GET,
            "/kv/g/k%00",
            400,
            "Bad Request: group and key must be UTF-8",
        ),
        (
            Method::DELETE,
            "/g%00/k",
            400,
            "Bad Request: group and key must be UTF-8",
        ),
        (
            Method::POST,
            "/kv/g/k?ttl=%00",
            400,
            "Bad Request: ttl must not hold a NUL",
        ),
        (
            Method::GET,
            "/token/logs?n=%00",
            400,
            "Bad Request: n must not hold a NUL",
        ),
        (
            Method::GET,
            "/recharge?amount=1%00",
            400,
            "Bad Request: amount must not hold",
        ),
        (Method::DELETE, "/token/keys/%00", 404, "Not Found"),
    ];
    let mut balance = admin.balance(&w).await?;
    let (logged_before, _) = admin.log_counts(&w).await?;
    let n = cases.len() as i64;
    for (method, path, status, text) in cases {
        let r = api
            .send(method.clone(), path, w.t(), Some(b"v".to_vec()), &[])
            .await?;
        assert_eq!(r.status, status, "{method} {path}: {:?}", r.text());
        assert!(
            r.text().starts_with(text),
            "{method} {path}: {:?}",
            r.text()
        );
        // charged what the operation costs, and logged (recharge links are free)
        let cost = r.cost().unwrap_or(-1);
        assert_eq!(
            cost,
            i64::from(!path.starts_with("/recharge")),
            "{method} {path}"
        );
        balance -= cost;
        assert_eq!(r.balance(), Some(balance), "{method} {path}");
    }
    assert_eq!(admin.balance(&w).await?, balance);
    assert!(admin.kv_keys(&w, "g").await?.is_empty(), "nothing stored");
    let (logged, _) = admin.log_counts(&w).await?;
    assert_eq!(logged - logged_before, n, "every refusal is logged");
    Ok(())
}

#[tokio::test]
async fn attachment_queries_holding_nul_are_refused_not_500() -> Result<()> {
    let (proxy, _admin) = setup().await?;
    for q in ["expires=%00&sig=x", "expires=1&sig=a%00b", "expires=%00"] {
        let r = proxy
            .api()
            .get(&format!("/attachments/1?{q}"), None)
            .await?;
        assert!(
            r.status == 403 || r.status == 404,
            "{q}: {} {}",
            r.status,
            r.text()
        );
    }
    Ok(())
}
