//! `webhook set|get|show|put|patch|test|remove|delete`. No mailhook runs here, so `webhook
//! test` gets the answer the proxy gives at its deadline (1 s in this test's proxy).

use anyhow::Result;
use echovalue_tests::{Admin, TestProxy};
use serde_json::{json, Value};

use crate::support::Cli;

#[tokio::test]
async fn every_webhook_subcommand() -> Result<()> {
    let proxy = TestProxy::start_with(|c| c.webhook_test_wait_secs = 1).await?;
    let admin = Admin::connect().await?;
    let w = admin.new_wallet().await?;
    let cli = Cli::with_token(proxy.api().base(), &w.token)?;

    // POST /webhook from the flags: the webhook `default`
    let args = [
        "webhook",
        "set",
        "--url",
        "https://example.com/hook",
        "--header",
        "Authorization: Bearer s3cret",
        "--format",
        "slack",
    ];
    assert_eq!(cli.run(&args).await?.ok(), "OK\n");
    let j = cli.run(&["webhook", "get", "--json"]).await?.json()?;
    assert_eq!(j["webhook"], "https://example.com/hook");
    assert_eq!(j["headers"], json!({"Authorization": "<redacted>"}));
    assert!(j["email"].as_str().is_some_and(|e| e.contains('@')), "{j}");
    // plain: the same JSON, indented
    let out = cli.run(&["webhook", "get"]).await?;
    assert!(out.ok().starts_with("{\n  \""), "{out:#?}");
    assert_eq!(serde_json::from_str::<Value>(&out.stdout)?, j);
    assert!(!out.stdout.contains("s3cret"));

    // --id names another one
    let args = [
        "webhook",
        "set",
        "--id",
        "second",
        "--url",
        "https://example.com/2",
    ];
    assert_eq!(cli.run(&args).await?.ok(), "OK\n");
    let j = cli
        .run(&["webhook", "show", "second", "--json"])
        .await?
        .json()?;
    assert_eq!(
        (j["webhookId"].as_str(), j["webhook"].as_str()),
        (Some("second"), Some("https://example.com/2"))
    );

    // PUT from the flags, then from stdin; PATCH changes one field
    let args = [
        "webhook",
        "put",
        "third",
        "--url",
        "https://example.com/3",
        "--format",
        "discord",
        "--json",
    ];
    let j = cli.run(&args).await?.json()?;
    assert_eq!(
        (j["webhookId"].as_str(), j["format"].as_str()),
        (Some("third"), Some("discord"))
    );
    let body = br#"{"url":"https://example.com/3b","format":"teams"}"#;
    let args = ["webhook", "put", "third", "--body", "-", "--json"];
    let j = cli.run_with(&args, &[], Some(body)).await?.json()?;
    assert_eq!(j["webhook"], "https://example.com/3b");
    let args = [
        "webhook",
        "patch",
        "third",
        "--body",
        r#"{"format":"slack"}"#,
        "--json",
    ];
    let j = cli.run(&args).await?.json()?;
    assert_eq!(
        (j["format"].as_str(), j["webhook"].as_str()),
        (Some("slack"), Some("https://example.com/3b"))
    );
    let args = ["webhook", "patch", "third", "--format", "discord"];
    let out = cli.run(&args).await?;
    assert!(out.ok().contains("\n  \"format\": \"discord\""), "{out:#?}");

    // the server's URL rules, in its words
    let args = ["webhook", "put", "bad", "--url", "ftp://example.com/x"];
    let out = cli.run(&args).await?;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.starts_with("400 Bad Request: "), "{out:#?}");

    // the test button: no worker took it, a 200 that says so
    let out = cli.run(&["webhook", "test", "third", "--json"]).await?;
    let j = out.json()?;
    assert_eq!(j["success"], false, "{out:#?}");
    assert!(
        j["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("webhook call failed: ")),
        "{out:#?}"
    );
    cli.run(&["webhook", "test", "nope"])
        .await?
        .fails(1, "404 Webhook Not Found");

    // remove a named one; delete the default one
    assert_eq!(cli.run(&["webhook", "remove", "third"]).await?.ok(), "OK\n");
    cli.run(&["webhook", "show", "third"])
        .await?
        .fails(1, "404 Webhook Not Found");
    cli.run(&["webhook", "remove", "third"])
        .await?
        .fails(1, "404 Webhook Not Found");
    assert_eq!(cli.run(&["webhook", "delete"]).await?.ok(), "OK\n");
    cli.run(&["webhook", "delete"])
        .await?
        .fails(1, "404 Webhook Not Found");
    let j = cli.run(&["webhook", "get", "--json"]).await?.json()?;
    let ids: Vec<&str> = j["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["webhookId"].as_str())
        .collect();
    assert_eq!(ids, ["second"]);
    Ok(())
}
