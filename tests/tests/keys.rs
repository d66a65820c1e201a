//! API tokens with spending limits over HTTP (SPEC section 9): create, list and revoke with the
//! root token; each limit at its edge; the windows rolling over; concurrency; 401 and 403.

use anyhow::Result;
use echovalue_tests::token::{self, sha256_hex};
use echovalue_tests::{setup, Admin, Api, Reply, TestProxy, Wallet};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// `POST /token/keys` with a JSON body.
async fn create(api: &Api, root: &Wallet, spec: &str) -> Result<Reply> {
    api.send(
        Method::POST,
        "/token/keys",
        root.t(),
        Some(spec.as_bytes().to_vec()),
        &[("content-type", "application/json")],
    )
    .await
}

/// A new token of `root`'s wallet with these limits; returns (token, id).
async fn new_key(api: &Api, root: &Wallet, limits: Value) -> Result<(String, String)> {
    let r = create(
        api,
        root,
        &json!({ "label": "test", "limits": limits }).to_string(),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json()?;
    Ok((
        b["token"].as_str().unwrap_or_default().to_owned(),
        b["id"].as_str().unwrap_or_default().to_owned(),
    ))
}

fn spending_limit(limit: &str, description: &str, current: i64, requested: i64, max: i64) -> Value {
    json!({
        "error": "spending_limit_exceeded",
        "error_description": description,
        "limit": limit,
        "current": current,
        "requested": requested,
        "max": max,
    })
}

/// Asserts a spending-limit 402: JSON body as SPEC section 9 says, nothing charged.
fn assert_limit_402(r: &Reply, expected: Value, balance: i64) -> Result<()> {
    assert_eq!(r.status, 402, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()?, expected);
    // The exact text too: compact, in SPEC section 9's order.
    let text = format!(
        r#"{{"error":"spending_limit_exceeded","error_description":{},"limit":{},"current":{},"requested":{},"max":{}}}"#,
        expected["error_description"],
        expected["limit"],
        expected["current"],
        expected["requested"],
        expected["max"]
    );
    assert_eq!(r.text(), text);
    assert_eq!(r.cost(), Some(0));
    assert_eq!(r.balance(), Some(balance));
    Ok(())
}

fn remaining(r: &Reply) -> (Option<&str>, Option<&str>) {
    (
        r.header("x-limit-daily-remaining"),
        r.header("x-limit-monthly-remaining"),
    )
}

#[tokio::test]
async fn root_token_creates_lists_and_revokes_tokens() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let root = admin.new_wallet().await?;

    let r = create(
        api,
        &root,
        r#"{"label":"CI pipeline","limits":{"per_request":5,"daily":100,"monthly":1000}}"#,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!((r.cost(), r.balance()), (Some(1), Some(99)));
    let b = r.json()?;
    let sub = b["token"].as_str().unwrap_or_default().to_owned();
    let id = b["id"].as_str().unwrap_or_default().to_owned();
    assert!(
        token::is_well_formed(&sub),
        "not a well-formed token: {sub:?}"
    );
    assert_ne!(sub, root.token);
    assert_eq!(b["label"], "CI pipeline");
    assert_eq!(
        b["limits"],
        json!({"per_request": 5, "daily": 100, "monthly": 1000})
    );
    assert!(b["created"].as_str().is_some_and(|c| c.ends_with('Z')));

    // The new token pays from the same wallet, whose hash stays the root token's.
    let w = api.get("/token", Some(&sub)).await?;
    assert_eq!(w.status, 200);
    assert_eq!(w.json()?["hash"], root.hash.as_str());
    assert_eq!(w.balance(), Some(98));
    assert_eq!(remaining(&w), (Some("99"), Some("999")));

    // Listed with a recognisable prefix and its usage; never the token itself.
    let l = api.get("/token/keys", root.t()).await?;
    assert_eq!(l.status, 200);
    assert_eq!(l.cost(), Some(1));
    let text = l.text();
    assert!(
        !text.contains(&sub) && !text.contains(&root.token),
        "{text}"
    );
    let keys = l.json()?["keys"].as_array().cloned().unwrap_or_default();
    assert_eq!(keys.len(), 2, "{text}");
    assert_eq!(keys[0]["root"], true);
    let k = &keys[1];
    assert_eq!(k["id"], id.as_str());
    assert_eq!(k["label"], "CI pipeline");
    assert_eq!(
        k["prefix"],
        format!("{}...{}", &sub[..19], &sub[sub.len() - 4..]).as_str()
    );
    assert_eq!(k["usage"], json!({"daily": 1, "monthly": 1}));
    assert!(k["last_used"].is_string() && k["revoked"].is_null(), "{k}");
    // Only the hash is stored.
    let stored: i64 = admin
        .client()
        .query_one(
            "select count(*) from echovalue.tokens where hash = decode($1, 'hex')",
            &[&sha256_hex(&sub)],
        )
        .await?
        .get(0);
    assert_eq!(stored, 1);

    // Revoked: the very next request with it is 401, on every path.
    let d = api.delete(&format!("/token/keys/{id}"), root.t()).await?;
    assert_eq!(
        (d.status, d.text().as_str(), d.cost()),
        (200, "OK", Some(1))
    );
    for path in ["/token", "/kv/g/k", "/token/logs", "/token/keys"] {
        let r = api.get(path, Some(&sub)).await?;
        assert_eq!(
            (r.status, r.text().as_str()),
            (401, "Unauthorized"),
            "{path}"
        );
        assert_eq!(r.cost(), None, "{path}");
    }
    let l = api.get("/token/keys", root.t()).await?.json()?;
    assert!(l["keys"][1]["revoked"].is_string(), "{l}");
    // Again: a no-op; unknown ids and the root token are refused.
    let again = api.delete(&format!("/token/keys/{id}"), root.t()).await?;
    assert_eq!(again.status, 200);
    let unknown = api
        .delete("/token/keys/6f1c1c50-0000-4000-8000-000000000000", root.t())
        .await?;
    assert_eq!((unknown.status, unknown.cost()), (404, Some(1)));
    let root_id = l["keys"][0]["id"].as_str().unwrap_or_default().to_owned();
    let r = api
        .delete(&format!("/token/keys/{root_id}"), root.t())
        .await?;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(api.get("/token", root.t()).await?.status, 200);
    Ok(())
}

#[tokio::test]
async fn each_limit_holds_at_its_edge_and_windows_roll_over() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let root = admin.new_wallet_with(1000).await?;
    let (sub, _) = new_key(
        api,
        &root,
        json!({"per_request": 3, "daily": 5, "monthly": 8}),
    )
    .await?;
    let mut balance = 999;
    // Enough log entries for a 4-entry logs request.
    for i in 0..4 {
        let r = api.post(&format!("/kv/g/k{i}"), root.t(), "v").await?;
        assert_eq!(r.status, 200);
        assert_eq!(remaining(&r), (None, None), "the root token is not limited");
        balance -= 1;
    }

    // Per request: 3 entries cost 3 = the limit; 4 would cost 4.
    let r = api.get("/token/logs?n=3", Some(&sub)).await?;
    assert_eq!((r.status, r.cost()), (200, Some(3)));
    balance -= 3;
    assert_eq!(remaining(&r), (Some("2"), Some("5")));
    let r = api.get("/token/logs?n=4", Some(&sub)).await?;
    assert_limit_402(
        &r,
        spending_limit("per_request", "Per-request limit exceeded", 0, 4, 3),
        balance,
    )?;

    // Daily: 3 spent; 2 more reach the limit exactly, the next is refused and changes nothing.
    for left in ["1", "0"] {
        let r = api.post("/kv/g/sub", Some(&sub), "v1").await?;
        assert_eq!(r.status, 200);
        balance -= 1;
        assert_eq!(r.balance(), Some(balance));
        assert_eq!(r.header("x-limit-daily-remaining"), Some(left));
    }
    let r = api.post("/kv/g/sub", Some(&sub), "v2").await?;
    assert_limit_402(
        &r,
        spending_limit("daily", "Daily limit exceeded", 5, 1, 5),
        balance,
    )?;
    assert_eq!(remaining(&r), (Some("0"), Some("3")));
    assert_eq!(api.get("/kv/g/sub", root.t()).await?.text(), "v1");
    balance -= 1;
    assert_eq!(admin.balance(&root).await?, balance);
    let logs = api.get("/token/logs?n=2", root.t()).await?.json()?;
    balance -= 2;
    let refused = &logs["logs"][1];
    assert_eq!(refused["status_code"], 402, "{logs}");
    assert_eq!(refused["error"], "Daily limit exceeded");
    assert_eq!(refused["cost"], 0);

    // 24 hours later the spending still counts (its hour is not over); 25 hours later it
    // has left the daily window but not the monthly one.
    admin.age_token_usage(&root, 24).await?;
    let r = api.get("/token", Some(&sub)).await?;
    assert_eq!(r.status, 402, "{}", r.text());
    admin.age_token_usage(&root, 1).await?;
    for _ in 0..3 {
        let r = api.get("/token", Some(&sub)).await?;
        assert_eq!(r.status, 200, "{}", r.text());
        balance -= 1;
    }
    let r = api.get("/token", Some(&sub)).await?;
    assert_limit_402(
        &r,
        spending_limit("monthly", "Monthly limit exceeded", 8, 1, 8),
        balance,
    )?;
    // 30 days and an hour later all of it is out of the monthly window too.
    admin.age_token_usage(&root, 30 * 24 + 1).await?;
    let r = api.get("/token", Some(&sub)).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(remaining(&r), (Some("4"), Some("7")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_never_exceed_a_limit() -> Result<()> {
    const REQUESTS: usize = 200;
    const DAILY: i64 = 25;
    let proxy = TestProxy::start_with(|c| c.pool_size = 16).await?;
    let admin = Admin::connect().await?;
    let root = admin.new_wallet_with(1000).await?;
    let (sub, _) = new_key(proxy.api(), &root, json!({ "daily": DAILY })).await?;

    let mut set = JoinSet::new();
    for i in 0..REQUESTS {
        let api = proxy.api().clone();
        let sub = sub.clone();
        set.spawn(async move { api.post(&format!("/kv/race/k{i}"), Some(&sub), "v").await });
    }
    let (mut ok, mut refused, mut other) = (0, 0, Vec::new());
    while let Some(joined) = set.join_next().await {
        let r = joined??;
        match r.status {
            200 => ok += 1,
            402 if r.json()?["limit"] == "daily" => refused += 1,
            s => other.push((s, r.text())),
        }
    }
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    assert_eq!(ok, DAILY as usize);
    assert_eq!(refused, REQUESTS - DAILY as usize);
    assert_eq!(admin.token_usage_total(&root).await?, DAILY);
    assert_eq!(admin.balance(&root).await?, 999 - DAILY);
    Ok(())
}

#[tokio::test]
async fn only_the_root_token_manages_tokens() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let root = admin.new_wallet().await?;
    let (sub, id) = new_key(api, &root, Value::Null).await?;
    let sub = Wallet::from_token(sub);

    let attempts = [
        create(api, &sub, "{}").await?,
        api.get("/token/keys", sub.t()).await?,
        api.delete(&format!("/token/keys/{id}"), sub.t()).await?,
    ];
    for r in &attempts {
        assert_eq!((r.status, r.text().as_str()), (403, "Forbidden"));
        assert_eq!(
            r.cost(),
            Some(1),
            "a refused request of a known wallet is charged"
        );
    }
    assert_eq!(admin.balance(&root).await?, 100 - 1 - 3);
    // The sub-token was not revoked by its own attempt.
    assert_eq!(api.get("/token", sub.t()).await?.status, 200);
    Ok(())
}

#[tokio::test]
async fn mistyped_tokens_and_bad_requests() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let root = admin.new_wallet().await?;

    // One character off: the checksum fails, 401 without a charge.
    let mut typo = root.token.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo)?;
    for r in [
        create(api, &Wallet::from_token(typo.clone()), "{}").await?,
        api.get("/token/keys", Some(&typo)).await?,
    ] {
        assert_eq!((r.status, r.cost()), (401, None));
    }
    assert_eq!(admin.balance(&root).await?, 100);

    for (body, reason) in [
        (&b"{not json"[..], "Bad Request: body must be JSON"),
        (&b"\xff\xfe"[..], "Bad Request: body must be JSON"),
        (
            &b"{\"label\":\"a\0\"}"[..],
            "Bad Request: body must be JSON",
        ),
        (
            &br#"{"limits":{"dayly":5}}"#[..],
            "Bad Request: unknown limit \"dayly\"",
        ),
        (
            &br#"{"limits":{"daily":-5}}"#[..],
            "Bad Request: limits.daily must be",
        ),
    ] {
        let r = api
            .send(
                Method::POST,
                "/token/keys",
                root.t(),
                Some(body.to_vec()),
                &[],
            )
            .await?;
        assert_eq!(r.status, 400, "{body:?}");
        assert!(r.text().starts_with(reason), "{body:?}: {}", r.text());
        assert_eq!(r.cost(), Some(1));
    }
    let r = api
        .send(Method::PUT, "/token/keys", root.t(), None, &[])
        .await?;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST, OPTIONS"));
    let r = api.delete("/token/keys/%FF", root.t()).await?;
    assert_eq!((r.status, r.text().as_str()), (404, "Not Found"));
    // Nothing was created by any of it.
    let keys = api.get("/token/keys", root.t()).await?.json()?;
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1));
    Ok(())
}
