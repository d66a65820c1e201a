//! `POST|GET|DELETE /webhook` over HTTP: the seed 002 round trip, the mailbox address and
//! secret, refusals (charged and logged like other errors), 404, 405, 401, 402, CORS.

use anyhow::Result;
use echovalue_tests::{setup, Api, Reply, Wallet};
use reqwest::Method;

async fn set_webhook(api: &Api, w: &Wallet, body: impl Into<Vec<u8>>) -> Result<Reply> {
    api.send(
        Method::POST,
        "/webhook",
        w.t(),
        Some(body.into()),
        &[("content-type", "application/json")],
    )
    .await
}

#[tokio::test]
async fn configure_read_and_delete_as_the_seed_shows() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;

    // Before any webhook: only email and hash (and the list of named webhooks, SPEC §12).
    let r = api.get("/webhook", w.t()).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!((r.cost(), r.balance()), (Some(1), Some(99)));
    let j = r.json()?;
    let obj = j.as_object().expect("an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["email", "hash", "webhooks"]);
    assert_eq!(j["webhooks"], serde_json::json!([]));
    assert_eq!(j["hash"], w.hash.as_str());
    let (mailbox, secret) = admin.mailbox(&w).await?.expect("a mailbox after GET");
    assert_eq!(j["email"], format!("{mailbox}@localhost").as_str());
    // The address can be shared without sharing the credential.
    assert!(!w.token.contains(&mailbox) && !mailbox.contains(&w.token));

    let r = set_webhook(
        api,
        &w,
        r#"{"url":"https://yourdomain.com/webhook","headers":{"Authorization":"Bearer secret"}}"#,
    )
    .await?;
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    assert_eq!((r.cost(), r.balance()), (Some(1), Some(98)));
    let (url, headers) = admin.webhook(&w).await?.expect("stored");
    assert_eq!(url, "https://yourdomain.com/webhook");
    assert_eq!(headers["Authorization"], "Bearer secret");

    let r = api.get("/webhook", w.t()).await?;
    assert_eq!((r.status, r.cost(), r.balance()), (200, Some(1), Some(97)));
    let j = r.json()?;
    assert_eq!(j["webhook"], "https://yourdomain.com/webhook");
    assert_eq!(
        j["headers"],
        serde_json::json!({"Authorization": "<redacted>"})
    );
    assert_eq!(j["email"], format!("{mailbox}@localhost").as_str());
    assert_eq!(j["hash"], w.hash.as_str());
    assert_eq!(j["secret"], secret.as_str());
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(!r.text().contains("Bearer secret"));

    // Upsert replaces, headers optional.
    let r = set_webhook(api, &w, r#"{"url":"https://hooks.example.net/in"}"#).await?;
    assert_eq!(r.status, 200);
    let (url, headers) = admin.webhook(&w).await?.expect("stored");
    assert_eq!(url, "https://hooks.example.net/in");
    assert_eq!(headers, serde_json::json!({}));

    let r = api.delete("/webhook", w.t()).await?;
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    assert_eq!(r.cost(), Some(1));
    let r = api.delete("/webhook", w.t()).await?;
    assert_eq!((r.status, r.text().as_str()), (404, "Webhook Not Found"));
    assert_eq!((r.cost(), r.balance()), (Some(1), Some(94)));
    assert!(admin.webhook(&w).await?.is_none());
    let last = admin.last_log(&w).await?;
    assert_eq!(
        last,
        (
            "DELETE".into(),
            "/webhook".into(),
            "webhook".into(),
            404,
            Some("Webhook Not Found".into()),
            1
        )
    );
    // The mailbox and secret outlive the webhook.
    assert_eq!(admin.mailbox(&w).await?, Some((mailbox, secret)));
    Ok(())
}

#[tokio::test]
async fn refusals_are_400_charged_and_change_nothing() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    assert_eq!(
        set_webhook(api, &w, r#"{"url":"https://example.com/ok"}"#)
            .await?
            .status,
        200
    );
    let cases: &[(&[u8], &str)] = &[
        (b"not json", "Bad Request: body must be a JSON object"),
        (b"", "Bad Request: body must be a JSON object"),
        (b"\xff\xfe{}", "Bad Request: body must be a JSON object"),
        (
            b"{\"url\":\"https://example.com/\x00\"}",
            "Bad Request: body must be a JSON object",
        ),
        (b"{}", "Bad Request: url is required"),
        (br#"{"url":1}"#, "Bad Request: url must be a string"),
        (
            br#"{"url":"http://example.com/"}"#,
            "Bad Request: url must use https",
        ),
        (
            br#"{"url":"https://localhost/"}"#,
            "Bad Request: url host is not a public address (loopback)",
        ),
        (
            br#"{"url":"https://127.0.0.1:8443/"}"#,
            "Bad Request: url host is not a public address (loopback)",
        ),
        (
            br#"{"url":"https://[::ffff:10.0.0.1]/"}"#,
            "Bad Request: url host is not a public address (IPv4-mapped)",
        ),
        (
            br#"{"url":"https://169.254.169.254/"}"#,
            "Bad Request: url host is not a public address (link-local)",
        ),
        (
            br#"{"url":"https://0x7f.1/"}"#,
            "Bad Request: url host is not a canonical IPv4 address",
        ),
        (
            br#"{"url":"https://example.com/","headers":{"Host":"evil"}}"#,
            "Bad Request: header Host is set by the service",
        ),
        (
            br#"{"url":"https://example.com/","headers":{"X-A":"a\r\nX-B: b"}}"#,
            "Bad Request: header X-A must be printable ASCII",
        ),
        (
            br#"{"url":"https://example.com/","headers":{"X-A":1}}"#,
            "Bad Request: header X-A must be a string",
        ),
    ];
    let mut balance = admin.balance(&w).await?;
    for (body, expected) in cases {
        let r = set_webhook(api, &w, body.to_vec()).await?;
        assert_eq!(
            (r.status, r.text().as_str()),
            (400, *expected),
            "body {:?}",
            String::from_utf8_lossy(body)
        );
        balance -= 1;
        assert_eq!((r.cost(), r.balance()), (Some(1), Some(balance)));
        let last = admin.last_log(&w).await?;
        assert_eq!(
            (last.2.as_str(), last.3, last.4.as_deref()),
            ("webhook", 400, Some(*expected))
        );
    }
    let (url, _) = admin.webhook(&w).await?.expect("still there");
    assert_eq!(url, "https://example.com/ok");

    // Wrong method: 405 with Allow, charged as a webhook read.
    let r = api.send(Method::PUT, "/webhook", w.t(), None, &[]).await?;
    assert_eq!((r.status, r.cost()), (405, Some(1)));
    assert_eq!(r.header("allow"), Some("GET, POST, DELETE, OPTIONS"));
    // Unknown or missing token: 401, nothing charged.
    let r = api.get("/webhook", None).await?;
    assert_eq!((r.status, r.cost()), (401, None));
    let r = set_webhook(api, &Wallet::from_token("ev_tok_sk_live_x".into()), "{}").await?;
    assert_eq!(r.status, 401);
    // A browser may call it.
    let r = api
        .send(
            Method::OPTIONS,
            "/webhook",
            None,
            None,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await?;
    assert_eq!(r.status, 204);
    Ok(())
}

#[tokio::test]
async fn an_empty_wallet_gets_402_and_nothing_changes() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    assert_eq!(
        set_webhook(api, &w, r#"{"url":"https://example.com/keep"}"#)
            .await?
            .status,
        200
    );
    admin.set_balance(&w, 0).await?;
    for r in [
        set_webhook(api, &w, r#"{"url":"https://example.com/new"}"#).await?,
        set_webhook(api, &w, "bad").await?,
        api.get("/webhook", w.t()).await?,
        api.delete("/webhook", w.t()).await?,
    ] {
        assert_eq!((r.status, r.text().as_str()), (402, "Insufficient credits"));
        assert_eq!((r.cost(), r.balance()), (Some(0), Some(0)));
    }
    let (url, _) = admin.webhook(&w).await?.expect("kept");
    assert_eq!(url, "https://example.com/keep");
    Ok(())
}
