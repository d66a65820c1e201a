//! `keys create|list|revoke` (scopes and groups enforced by the server, `--save`) and
//! `settings get|put`.

use anyhow::{Context, Result};
use echovalue_tests::setup;
use serde_json::{json, Value};

use crate::support::Cli;

#[tokio::test]
async fn keys_create_list_revoke_and_save() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let base = proxy.api().base();
    let w = admin.new_wallet().await?;
    let root = Cli::with_token(base, &w.token)?;

    let args = [
        "keys", "create", "--label", "reader", "--daily", "50", "--scope", "kv:read", "--group",
        "g", "--json",
    ];
    let j = root.run(&args).await?.json()?;
    assert_eq!(j["label"], "reader");
    assert_eq!(j["limits"]["daily"], 50);
    assert_eq!(
        (&j["scopes"], &j["groups"]),
        (&json!(["kv:read"]), &json!(["g"]))
    );
    let token = j["token"].as_str().context("a token")?.to_owned();
    let id = j["id"].as_str().context("an id")?.to_owned();
    let reader = Cli::with_token(base, &token)?;

    // the scope and the group are the server's to enforce
    reader
        .run(&["kv", "set", "g", "k", "v"])
        .await?
        .fails(1, "403 Forbidden");
    assert_eq!(root.run(&["kv", "set", "g", "k", "v"]).await?.ok(), "OK\n");
    let out = reader.run(&["-v", "kv", "get", "g", "k"]).await?;
    assert_eq!(out.ok(), "v");
    assert!(
        out.stderr.contains("< x-limit-daily-remaining: "),
        "{out:#?}"
    );
    reader
        .run(&["kv", "get", "other", "k"])
        .await?
        .fails(1, "403 Forbidden");
    reader
        .run(&["keys", "list"])
        .await?
        .fails(1, "403 Forbidden");

    // the list shows both tokens, never a token itself
    let out = root.run(&["keys", "list"]).await?;
    let list: Value = serde_json::from_str(out.ok())?;
    assert_eq!(list["keys"].as_array().map(Vec::len), Some(2), "{list}");
    assert!(!out.stdout.contains(&token) && !out.stdout.contains(&w.token));

    // a limit the server refuses
    let out = root.run(&["keys", "create", "--daily", "lots"]).await?;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.starts_with("400 Bad Request: "), "{out:#?}");

    // revoked: its next request is a 401
    root.run(&["keys", "revoke", &id]).await?.ok();
    reader
        .run(&["kv", "get", "g", "k"])
        .await?
        .fails(1, "401 Unauthorized");

    // --save into another config file, which then serves without ECHOVALUE_TOKEN
    let ci = root.dir().join("ci").join("config.toml");
    let ci_arg = ci.to_str().context("path")?;
    let out = root
        .run(&[
            "--config", ci_arg, "keys", "create", "--label", "ci", "--save",
        ])
        .await?;
    let made: Value = serde_json::from_str(out.ok())?;
    assert_eq!(out.stderr, format!("saved the token to {}\n", ci.display()));
    let saved = std::fs::read_to_string(&ci)?;
    assert!(
        saved.contains(made["token"].as_str().context("token")?),
        "{saved}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&ci)?.permissions().mode() & 0o777, 0o600);
    }
    let no_env = [("ECHOVALUE_TOKEN", "")];
    let out = root
        .run_with(&["--config", ci_arg, "balance"], &no_env, None)
        .await?;
    assert_eq!(out.ok(), format!("{}\n", admin.balance(&w).await?));
    // a second --save keeps the saved token unless --force
    let args = ["--config", ci_arg, "keys", "create", "--save"];
    assert_eq!(root.run(&args).await?.code, 2);
    let args = ["--config", ci_arg, "keys", "create", "--save", "--force"];
    let made: Value = serde_json::from_str(root.run(&args).await?.ok())?;
    assert!(std::fs::read_to_string(&ci)?.contains(made["token"].as_str().context("token")?));
    Ok(())
}

#[tokio::test]
async fn settings_get_and_put() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let w = admin.new_wallet().await?;
    let cli = Cli::with_token(proxy.api().base(), &w.token)?;

    let j = cli.run(&["settings", "get", "--json"]).await?.json()?;
    assert_eq!(j["low_balance_threshold"], 0, "{j}");
    let args = [
        "settings",
        "put",
        "--body",
        r#"{"low_balance_threshold":5}"#,
    ];
    assert_eq!(cli.run(&args).await?.ok(), "OK\n");
    let out = cli.run(&["settings", "get"]).await?;
    assert!(
        out.ok().contains("\n  \"low_balance_threshold\": 5"),
        "{out:#?}"
    );
    let args = ["settings", "put", "--body", "-"];
    let out = cli
        .run_with(&args, &[], Some(br#"{"low_balance_threshold":7}"#))
        .await?;
    assert_eq!(out.ok(), "OK\n");
    let j = cli.run(&["settings", "get", "--json"]).await?.json()?;
    assert_eq!(j["low_balance_threshold"], 7);

    let args = ["settings", "put", "--body", r#"{"bogus":1}"#];
    let out = cli.run(&args).await?;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.starts_with("400 Bad Request: "), "{out:#?}");
    Ok(())
}
