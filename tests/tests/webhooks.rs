//! Named webhooks over HTTP (SPEC §12): `PUT/GET/PATCH/DELETE /webhook/{webhookId}`,
//! `webhookId` in the seeds' `POST /webhook`, the list in `GET /webhook`, refusals (charged
//! and logged), hostile ids in the path, 405 with `Allow`, CORS preflights, and the logs
//! `type` filter.

use anyhow::Result;
use echovalue_tests::{setup, Api, Reply, Wallet};
use reqwest::Method;
use serde_json::{json, Value};

async fn send_json(api: &Api, m: Method, path: &str, w: &Wallet, body: &str) -> Result<Reply> {
    api.send(
        m,
        path,
        w.t(),
        Some(body.as_bytes().to_vec()),
        &[("content-type", "application/json")],
    )
    .await
}

#[tokio::test]
async fn create_read_patch_and_delete_by_name() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;

    let r = send_json(
        api,
        Method::PUT,
        "/webhook/alerts",
        &w,
        r#"{"url":"https://hooks.slack.com/services/T/B/x","format":"slack","headers":{"X-Key":"k"}}"#,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!((r.cost(), r.balance()), (Some(1), Some(99)));
    let alerts = r.json()?;
    assert_eq!(alerts["webhookId"], "alerts");
    assert_eq!(alerts["webhook"], "https://hooks.slack.com/services/T/B/x");
    assert_eq!(alerts["format"], "slack");
    assert_eq!(alerts["headers"], json!({"X-Key": "<redacted>"}));
    assert_eq!(alerts["includeAttachments"], true);
    assert_eq!(alerts["hash"], w.hash.as_str());
    assert!(!r.text().contains("\"k\""), "header values never shown");
    let email = alerts["email"].as_str().unwrap_or_default().to_owned();
    let (mailbox, _) = admin.mailbox(&w).await?.expect("the wallet's mailbox");
    assert!(
        email.ends_with("@localhost") && !email.starts_with(&mailbox),
        "{email}"
    );

    // POST /webhook as the seeds use it is `default`; with webhookId another one
    let r = send_json(
        api,
        Method::POST,
        "/webhook",
        &w,
        r#"{"url":"https://example.com/d"}"#,
    )
    .await?;
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    let r = send_json(
        api,
        Method::POST,
        "/webhook",
        &w,
        r#"{"webhookId":"pager","url":"https://events.pagerduty.com/v2/enqueue","format":"pagerduty","options":{"routing_key":"R123"}}"#,
    )
    .await?;
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));

    let r = api.get("/webhook", w.t()).await?;
    let j = r.json()?;
    assert_eq!(
        j["webhook"], "https://example.com/d",
        "the seed object is default's"
    );
    assert_eq!(j["email"], format!("{mailbox}@localhost").as_str());
    let ids: Vec<&str> = j["webhooks"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["webhookId"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["alerts", "default", "pager"]);
    assert_eq!(j["webhooks"][2]["options"], json!({"routing_key": "***"}));
    assert!(!r.text().contains("R123"));

    let r = api.get("/webhook/alerts", w.t()).await?;
    assert_eq!(r.json()?["email"], email.as_str());
    let r = send_json(
        api,
        Method::PATCH,
        "/webhook/alerts",
        &w,
        r#"{"format":"discord"}"#,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let patched = r.json()?;
    assert_eq!(patched["format"], "discord");
    assert_eq!(
        patched["headers"], alerts["headers"],
        "untouched fields stay"
    );
    assert_eq!(patched["email"], email.as_str(), "the address stays");

    let r = api.delete("/webhook/alerts", w.t()).await?;
    assert_eq!(
        (r.status, r.text().as_str(), r.cost()),
        (200, "OK", Some(1))
    );
    for r in [
        api.get("/webhook/alerts", w.t()).await?,
        api.delete("/webhook/alerts", w.t()).await?,
        send_json(api, Method::PATCH, "/webhook/alerts", &w, "{}").await?,
    ] {
        assert_eq!(
            (r.status, r.text().as_str(), r.cost()),
            (404, "Webhook Not Found", Some(1))
        );
    }
    let last = admin.last_log(&w).await?;
    assert_eq!(
        (last.0.as_str(), last.1.as_str(), last.2.as_str(), last.3),
        ("PATCH", "/webhook/alerts", "webhook", 404)
    );
    Ok(())
}

#[tokio::test]
async fn hostile_ids_and_bodies_are_charged_refusals() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    let put = |path: &'static str, body: &'static str| send_json(api, Method::PUT, path, &w, body);
    let webhook_id = "Bad Request: webhookId must be 1 to 30 characters of A-Z, a-z, 0-9, _ and -";
    let cases: Vec<(Reply, &str)> = vec![
        (
            put("/webhook/call", r#"{"url":"https://a.example.com/"}"#).await?,
            "Bad Request: webhookId call is reserved",
        ),
        (
            put("/webhook/a%20b", r#"{"url":"https://a.example.com/"}"#).await?,
            webhook_id,
        ),
        (
            put("/webhook/a%00b", r#"{"url":"https://a.example.com/"}"#).await?,
            webhook_id,
        ),
        (
            put("/webhook/%FF", r#"{"url":"https://a.example.com/"}"#).await?,
            webhook_id,
        ),
        (
            put(
                "/webhook/abcdefghijklmnopqrstuvwxyz012345",
                r#"{"url":"https://a.example.com/"}"#,
            )
            .await?,
            webhook_id,
        ),
        (
            put(
                "/webhook/ok",
                r#"{"webhookId":"other","url":"https://a.example.com/"}"#,
            )
            .await?,
            "Bad Request: webhookId in the body differs from the one in the path",
        ),
        (
            put("/webhook/ok", "{\"url\":\"https://a.example.com/\u{0}\"}").await?,
            "Bad Request: body must be a JSON object",
        ),
        (
            put(
                "/webhook/ok",
                r#"{"url":"https://a.example.com/","format":"custom"}"#,
            )
            .await?,
            "Bad Request: template is required for format custom",
        ),
        (
            put(
                "/webhook/ok",
                r#"{"url":"https://a.example.com/","format":"telegram"}"#,
            )
            .await?,
            "Bad Request: options.chat_id is required for format telegram",
        ),
    ];
    let mut balance = 100;
    for (r, want) in &cases {
        balance -= 1;
        assert_eq!((r.status, r.text().as_str()), (400, *want));
        assert_eq!((r.cost(), r.balance()), (Some(1), Some(balance)));
    }
    // a path id that is not text names no webhook
    let r = api.get("/webhook/%00", w.t()).await?;
    assert_eq!(
        (r.status, r.text().as_str(), r.cost()),
        (404, "Webhook Not Found", Some(1))
    );
    // a template nested too deep, or too large, is refused (SPEC §12 limits)
    let deep = json!({"url": "https://a.example.com/", "format": "custom",
                      "template": {"a": {"b": {"c": {"d": {"e": {"f": "{{subject}}"}}}}}}});
    let r = send_json(api, Method::PUT, "/webhook/deep", &w, &deep.to_string()).await?;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Bad Request: template must be at most 5 levels deep")
    );
    let big =
        json!({"url": "https://a.example.com/", "format": "custom", "template": "x".repeat(3000)});
    let r = send_json(api, Method::PUT, "/webhook/big", &w, &big.to_string()).await?;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Bad Request: template must be at most 2048 bytes")
    );
    assert!(admin.webhook(&w).await?.is_none());

    // wrong method: 405 with Allow, charged; a browser's preflight names the methods
    let r = api
        .send(Method::POST, "/webhook/x", w.t(), None, &[])
        .await?;
    assert_eq!((r.status, r.cost()), (405, Some(1)));
    assert_eq!(r.header("allow"), Some("GET, PUT, PATCH, DELETE, OPTIONS"));
    let r = api
        .send(
            Method::OPTIONS,
            "/webhook/x",
            None,
            None,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "PATCH"),
            ],
        )
        .await?;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, PUT, PATCH, DELETE, OPTIONS")
    );
    // no token, or an empty wallet
    assert_eq!(api.get("/webhook/x", None).await?.status, 401);
    admin.set_balance(&w, 0).await?;
    let r = put("/webhook/x", r#"{"url":"https://a.example.com/"}"#).await?;
    assert_eq!(
        (r.status, r.text().as_str(), r.cost()),
        (402, "Insufficient credits", Some(0))
    );
    Ok(())
}

#[tokio::test]
async fn logs_filter_by_type() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    api.get("/kv/g/missing", w.t()).await?;
    send_json(
        api,
        Method::POST,
        "/webhook",
        &w,
        r#"{"url":"https://example.com/h"}"#,
    )
    .await?;
    api.get("/token", w.t()).await?;
    let r = api.get("/token/logs?n=10&type=webhook", w.t()).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let j: Value = r.json()?;
    assert_eq!(j["n"], 1);
    assert_eq!(j["logs"][0]["endpoint"], "webhook");
    assert_eq!(j["logs"][0]["path"], "/webhook");
    assert_eq!(r.cost(), Some(1), "one entry returned, one credit");
    let r = api.get("/token/logs?type=kv", w.t()).await?;
    assert_eq!(r.json()?["logs"][0]["path"], "/kv/g/missing");
    let r = api.get("/token/logs?type=bogus", w.t()).await?;
    assert_eq!(
        (r.status, r.text().as_str(), r.cost()),
        (
            400,
            "Bad Request: type must be one of kv, token, webhook, webhook-delivery, email, recharge, settings",
            Some(1)
        )
    );
    let r = api.get("/token/logs?type=%00", w.t()).await?;
    assert_eq!((r.status, r.cost()), (400, Some(1)));
    Ok(())
}

#[tokio::test]
async fn a_scheduled_webhook_over_http() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    let r = send_json(
        api,
        Method::PUT,
        "/webhook/standup",
        &w,
        r#"{"url":"https://ci.example.com/hooks/standup","schedule":{"cron":"0 9 * * 1-5","timezone":"Europe/Rome"}}"#,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json()?;
    assert!(
        j.get("email").is_none(),
        "a scheduled webhook has no address"
    );
    let s = &j["schedule"];
    assert_eq!(
        (
            s["cron"].as_str(),
            s["timezone"].as_str(),
            s["active"].as_bool()
        ),
        (Some("0 9 * * 1-5"), Some("Europe/Rome"), Some(true))
    );
    let next = s["nextRunAt"].as_str().unwrap_or_default().to_owned();
    // 09:00 in Rome is 08:00 or 07:00 UTC, on a weekday
    assert!(
        next.contains("T08:00:00") || next.contains("T07:00:00"),
        "{next}"
    );
    assert_eq!(
        (s["lastRunAt"].clone(), s["lastStatus"].clone()),
        (Value::Null, Value::Null)
    );

    let r = send_json(
        api,
        Method::PATCH,
        "/webhook/standup",
        &w,
        r#"{"schedule":{"active":false}}"#,
    )
    .await?;
    assert_eq!(r.json()?["schedule"]["nextRunAt"], Value::Null, "paused");
    for (body, want) in [
        (
            r#"{"url":"https://a.example.com/","schedule":{"cron":"0 0 31 * *","timezone":"UTC"}}"#,
            "Bad Request: schedule must not leave more than 30 days between two runs",
        ),
        (
            r#"{"url":"https://a.example.com/","schedule":{"cron":"0 9 * * *","timezone":"Europe/Atlantis"}}"#,
            "Bad Request: schedule.timezone must be an IANA time zone name such as Europe/Rome",
        ),
        (
            r#"{"url":"https://a.example.com/","format":"slack","schedule":{"cron":"*/5 * * * *","timezone":"UTC"}}"#,
            "Bad Request: a webhook is either a mailbox (format, template, options, includeAttachments) or scheduled (schedule), not both",
        ),
    ] {
        let r = send_json(api, Method::PUT, "/webhook/other", &w, body).await?;
        assert_eq!((r.status, r.text().as_str(), r.cost()), (400, want, Some(1)));
    }
    let r = api.get("/webhook", w.t()).await?;
    assert_eq!(r.json()?["webhooks"][0]["schedule"]["active"], false);
    Ok(())
}
