//! Wallet settings (SPEC section 14) and token scopes (section 15) over HTTP: GET and PUT
//! /token/settings, their refusals, a 405 on another method, scopes and groups given at
//! creation and listed, and what a token without a scope gets (a charged 403).

use anyhow::Result;
use echovalue_tests::{setup, Api, Reply, Wallet};
use reqwest::Method;
use serde_json::{json, Value};

async fn put_settings(api: &Api, w: &Wallet, body: &[u8]) -> Result<Reply> {
    api.send(
        Method::PUT,
        "/token/settings",
        w.t(),
        Some(body.to_vec()),
        &[("content-type", "application/json")],
    )
    .await
}

/// `POST /token/keys` with this spec.
async fn post_keys(api: &Api, root: &Wallet, spec: &Value) -> Result<Reply> {
    api.send(
        Method::POST,
        "/token/keys",
        root.t(),
        Some(spec.to_string().into_bytes()),
        &[("content-type", "application/json")],
    )
    .await
}

/// A new token of `root`'s wallet made with this spec.
async fn new_token(api: &Api, root: &Wallet, spec: Value) -> Result<(Wallet, Value)> {
    let r = post_keys(api, root, &spec).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let made = r.json()?;
    let token = made["token"].as_str().unwrap_or_default().to_owned();
    Ok((Wallet::from_token(token), made))
}

#[tokio::test]
async fn settings_round_trip_and_refusals() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;

    let r = api.get("/token/settings", w.t()).await?;
    assert_eq!((r.status, r.cost()), (200, Some(1)));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json()?,
        json!({"low_balance_threshold": 0, "low_balance_webhook": null, "low_balance_email": null})
    );

    let body = json!({"low_balance_threshold": 500, "low_balance_webhook": {
        "url": "https://hooks.slack.com/services/T000/B000/XXXX", "format": "slack",
        "headers": {"X-Secret": "do-not-show"}}});
    let r = put_settings(api, &w, body.to_string().as_bytes()).await?;
    assert_eq!(
        (r.status, r.text(), r.cost()),
        (200, "OK".to_owned(), Some(1))
    );
    let r = api.get("/token/settings", w.t()).await?;
    let shown = r.json()?;
    assert_eq!(shown["low_balance_threshold"], 500);
    assert_eq!(
        shown["low_balance_webhook"],
        json!({"url": "https://hooks.slack.com/services/T000/B000/XXXX", "format": "slack",
               "headers": {"X-Secret": "<redacted>"}, "options": {}})
    );
    assert!(!r.text().contains("do-not-show"));

    // refused: a charged 400 with the rule, the settings unchanged (no relay here: other
    // test binaries may have left one registered)
    admin
        .client()
        .execute("select echovalue.relay_register(null)", &[])
        .await?;
    for (body, rule) in [
        (
            &b"{\"low_balance_threshold\":-5}"[..],
            "low_balance_threshold must be an integer",
        ),
        (
            b"{\"low_balance_webhook\":{\"url\":\"http://example.com/\"}}",
            "low_balance_webhook: url must use https",
        ),
        (
            b"{\"low_balance_email\":\"ops@example.com\"}",
            "needs an SMTP relay",
        ),
        (b"{\"alerts\":true}", "unknown field alerts"),
        (
            b"{\"low_balance_threshold\":1,\"x\":\"\\u0000\"}",
            "body must be",
        ),
        (b"{\"low_balance_threshold\":\x00}", "body must be"),
        (b"[]", "body must be a JSON object"),
    ] {
        let r = put_settings(api, &w, body).await?;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
        assert!(
            r.text().contains(rule),
            "{} -> {}",
            String::from_utf8_lossy(body),
            r.text()
        );
        assert_eq!(r.cost(), Some(1));
    }
    let r = api.get("/token/settings", w.t()).await?;
    assert_eq!(r.json()?["low_balance_threshold"], 500);

    // another method: 405, charged like a read of the settings
    let r = api.post("/token/settings", w.t(), "").await?;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, PUT, OPTIONS"));

    // the logs name the endpoint `settings`
    let r = api.get("/token/logs?type=settings&n=3", w.t()).await?;
    let logs = r.json()?;
    let logs = logs["logs"].as_array().cloned().unwrap_or_default();
    assert_eq!(logs.len(), 3);
    assert!(logs.iter().all(|l| l["path"] == "/token/settings"));
    Ok(())
}

#[tokio::test]
async fn scopes_and_groups_over_http() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let root = admin.new_wallet().await?;

    // the defaults: no webhook, no settings
    let (plain, made) = new_token(api, &root, json!({"label": "ci"})).await?;
    assert_eq!(
        made["scopes"],
        json!(["kv:read", "kv:write", "logs", "wallet"])
    );
    assert_eq!(made["groups"], Value::Null);
    for path in ["/webhook", "/token/settings", "/webhook/default"] {
        let r = api.get(path, plain.t()).await?;
        assert_eq!(
            (r.status, r.text(), r.cost()),
            (403, "Forbidden".to_owned(), Some(1)),
            "{path}"
        );
    }
    let r = api
        .send(
            Method::POST,
            "/webhook",
            plain.t(),
            Some(br#"{"url":"https://evil.example/steal"}"#.to_vec()),
            &[("content-type", "application/json")],
        )
        .await?;
    assert_eq!(r.status, 403, "a limited token cannot re-point the mail");
    assert_eq!(api.post("/kv/any/k", plain.t(), "v").await?.status, 200);

    // settings only, for group `a` only
    let (narrow, made) = new_token(
        api,
        &root,
        json!({"label": "narrow", "scopes": ["settings", "kv:read"], "groups": ["a"]}),
    )
    .await?;
    assert_eq!(made["scopes"], json!(["kv:read", "settings"]));
    assert_eq!(made["groups"], json!(["a"]));
    assert_eq!(api.get("/token/settings", narrow.t()).await?.status, 200);
    assert_eq!(api.get("/kv/a/k", narrow.t()).await?.status, 404);
    assert_eq!(api.get("/kv/any/k", narrow.t()).await?.status, 403);
    assert_eq!(api.post("/kv/a/k", narrow.t(), "v").await?.status, 403);
    assert_eq!(api.get("/token", narrow.t()).await?.status, 403);
    // a 2023 path is the same group rule
    assert_eq!(api.get("/any/k", narrow.t()).await?.status, 403);

    // listed with the root token; the root token has every scope
    let keys = api.get("/token/keys", root.t()).await?.json()?;
    let keys = keys["keys"].as_array().cloned().unwrap_or_default();
    let by_label = |l: &str| keys.iter().find(|k| k["label"] == l).cloned();
    assert_eq!(
        by_label("root").map(|k| k["scopes"].clone()),
        Some(json!([
            "kv:read", "kv:write", "logs", "wallet", "webhook", "settings"
        ]))
    );
    assert_eq!(
        by_label("narrow").map(|k| k["groups"].clone()),
        Some(json!(["a"]))
    );

    // refused specs
    for spec in [
        json!({"scopes": ["admin"]}),
        json!({"scopes": []}),
        json!({"groups": ["a/b"]}),
        json!({"groups": [""]}),
    ] {
        let r = post_keys(api, &root, &spec).await?;
        assert_eq!(r.status, 400, "{spec} -> {}", r.text());
    }
    Ok(())
}
