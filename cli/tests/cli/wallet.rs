//! `token new --save`, where the URL and token come from, `balance`, `-v`, `--json`, `logs`,
//! `recharge`, `health`, `request`, `completions`, and the exit status of each kind of answer.

use std::time::Duration;

use anyhow::{bail, Result};
use echovalue_tests::token::is_well_formed;
use echovalue_tests::{setup, Wallet};
use tokio::net::TcpListener;

use crate::support::{Cli, Out};

/// A base URL where nothing listens: a loopback port just closed.
async fn closed_url() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}"))
}

/// `token new --save`, waiting out the creation limit of 127.0.0.1 (one token per 10 s per
/// client address) when another test made a token from it just before.
async fn token_new_saved(cli: &Cli) -> Result<Out> {
    for _ in 0..3 {
        let out = cli.run(&["token", "new", "--save"]).await?;
        if out.code == 1 && out.stderr.starts_with("429 ") {
            tokio::time::sleep(Duration::from_secs(11)).await;
            continue;
        }
        return Ok(out);
    }
    bail!("token new kept answering 429")
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

#[tokio::test]
async fn token_new_save_then_the_saved_token_and_url_serve() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let base = proxy.api().base();
    let cli = Cli::new(base)?;

    let out = token_new_saved(&cli).await?;
    let token = out.ok().trim().to_owned();
    assert!(is_well_formed(&token), "{out:?}");
    assert_eq!(out.stdout, format!("{token}\n"));
    let path = cli.config_path();
    assert_eq!(
        out.stderr,
        format!("saved the token to {}\n", path.display())
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&path)?, 0o600);
        assert_eq!(mode(path.parent().unwrap())?, 0o700);
    }
    let saved = std::fs::read_to_string(&path)?;
    assert!(saved.contains(&token) && saved.contains(base), "{saved}");
    let w = Wallet::from_token(token.clone());

    // no ECHOVALUE_TOKEN: the file's token
    assert_eq!(cli.run(&["balance"]).await?.ok(), "99\n");
    assert_eq!(admin.balance(&w).await?, 99);
    let out = cli.run(&["-v", "balance"]).await?;
    assert_eq!(out.ok(), "98\n");
    for want in [
        format!("> GET {base}/token"),
        "< HTTP/1.1 200 OK".to_owned(),
        "< x-cost: 1".to_owned(),
        "< x-balance: 98".to_owned(),
    ] {
        assert!(out.stderr.lines().any(|l| l == want), "{want}: {out:#?}");
    }
    assert!(!out.stderr.contains(&token), "-v never shows the token");
    let out = cli.run(&["balance", "--json"]).await?;
    let j = out.json()?;
    assert_eq!(
        (j["wallet"].as_i64(), j["hash"].as_str()),
        (Some(97), Some(w.hash.as_str()))
    );
    assert!(
        !out.stdout.contains("\n  "),
        "the body as received: {out:?}"
    );

    // a second --save would lose the saved token: refused before any request
    let out = cli.run(&["token", "new", "--save"]).await?;
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("already holds a token") && out.stderr.contains("--force"));
    assert!(!out.stderr.contains(&token));
    assert_eq!(std::fs::read_to_string(&path)?, saved);

    // ECHOVALUE_TOKEN beats the file, --token beats ECHOVALUE_TOKEN
    let (env_w, flag_w) = (admin.new_wallet().await?, admin.new_wallet().await?);
    let env = [("ECHOVALUE_TOKEN", env_w.token.as_str())];
    assert_eq!(cli.run_with(&["balance"], &env, None).await?.ok(), "99\n");
    let args = ["balance", "--token", flag_w.token.as_str()];
    assert_eq!(cli.run_with(&args, &env, None).await?.ok(), "99\n");
    assert_eq!(
        (admin.balance(&env_w).await?, admin.balance(&flag_w).await?),
        (99, 99)
    );

    // ECHOVALUE_URL beats the file's url, --url beats ECHOVALUE_URL
    let closed = closed_url().await?;
    let env = [("ECHOVALUE_URL", closed.as_str())];
    assert_eq!(cli.run_with(&["balance"], &env, None).await?.code, 2);
    let args = ["--url", base, "balance"];
    assert_eq!(cli.run_with(&args, &env, None).await?.ok(), "96\n");
    let env = [("ECHOVALUE_URL", "")];
    assert_eq!(cli.run_with(&["balance"], &env, None).await?.ok(), "95\n");

    // --config elsewhere has no token: the server's 401, and a hint
    let other = cli.dir().join("other.toml");
    let out = cli
        .run(&["--config", other.to_str().unwrap(), "balance"])
        .await?;
    out.fails(1, "401 Unauthorized");
    assert!(out.stderr.contains("hint: no token was sent"), "{out:#?}");
    Ok(())
}

#[tokio::test]
async fn exit_status_by_kind_of_answer() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let base = proxy.api().base();
    let w = admin.new_wallet().await?;
    let cli = Cli::with_token(base, &w.token)?;

    // 4xx: 1, the API's own text on stderr
    let out = cli
        .run(&["kv", "set", "g", "k", "v", "--ttl", "abc"])
        .await?;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr
            .starts_with("400 Bad Request: ttl must be an integer from 1 to "),
        "{out:#?}"
    );
    cli.run(&["kv", "get", "g", "missing"])
        .await?
        .fails(1, "404 Key Not Found");
    let empty = admin.new_wallet_with(0).await?;
    let out = Cli::with_token(base, &empty.token)?
        .run(&["balance"])
        .await?;
    out.fails(1, "402 Insufficient credits");

    // nothing listens: 2, naming the URL, never the token
    let closed = closed_url().await?;
    let out = cli.run(&["-v", "--url", &closed, "balance"]).await?;
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.stderr
            .contains(&format!("error: cannot reach {closed}/token: ")),
        "{out:#?}"
    );
    assert!(!out.stderr.contains(&w.token) && out.stdout.is_empty());

    // usage errors keep clap's status 2
    for args in [
        &["kv", "set"][..],
        &["nope"],
        &["webhook", "set", "--header", "x"],
    ] {
        let out = cli.run(args).await?;
        assert_eq!(out.code, 2, "{args:?}: {out:#?}");
        assert!(out.stderr.contains("Usage:") || out.stderr.contains("error:"));
    }
    assert_eq!(admin.balance(&w).await?, 98, "two calls charged");
    Ok(())
}

#[tokio::test]
async fn logs_as_lines_and_by_type() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let w = admin.new_wallet().await?;
    let cli = Cli::with_token(proxy.api().base(), &w.token)?;
    assert_eq!(
        cli.run(&["kv", "set", "g", "k", "v", "--ttl", "60"])
            .await?
            .ok(),
        "OK\n"
    );
    cli.run(&["kv", "get", "g", "missing"])
        .await?
        .fails(1, "404 Key Not Found");
    assert_eq!(cli.run(&["balance"]).await?.ok(), "97\n");

    let out = cli.run(&["logs", "-n", "3", "--type", "kv"]).await?;
    let lines: Vec<Vec<&str>> = out.ok().lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{out:#?}");
    assert_eq!(
        lines[0][1..],
        ["GET", "/kv/g/missing", "404", "1", "98", "Key Not Found"]
    );
    assert_eq!(lines[1][1..], ["POST", "/kv/g/k?ttl=60", "200", "1", "99"]);
    assert!(lines.iter().all(|l| l[0].ends_with('Z')), "{out:#?}");

    let j = cli.run(&["logs", "-n", "1", "--json"]).await?.json()?;
    assert_eq!(
        (j["n"].as_i64(), j["logs"].as_array().map(Vec::len)),
        (Some(1), Some(1))
    );
    let out = cli.run(&["logs", "-n", "abc"]).await?;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.starts_with("400 Bad Request: "), "{out:#?}");
    Ok(())
}

#[tokio::test]
async fn recharge_health_request_and_completions() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let base = proxy.api().base();
    let w = admin.new_wallet().await?;
    let cli = Cli::with_token(base, &w.token)?;

    // a tier of this test's own: its link, then 501 once it has none
    let mut tier = admin.new_tier(1000).await?;
    while tier.amount >= 1_000_000_000 {
        // the API takes amounts of at most 9 digits; new_tier rarely draws 10
        admin.drop_tier(&tier).await?;
        tier = admin.new_tier(1000).await?;
    }
    let amount = tier.amount.to_string();
    let out = cli.run(&["recharge", "--amount", &amount]).await?;
    let want = format!(
        "https://buy.stripe.com/test_{}?client_reference_id={}\n",
        tier.link_id, w.hash
    );
    assert_eq!(out.ok(), want);
    admin.set_recharge_link(tier.amount, None).await?;
    let out = cli.run(&["recharge", "--amount", &amount]).await?;
    admin.drop_tier(&tier).await?;
    out.fails(2, "501 Not Implemented");
    let out = cli.run(&["recharge", "--amount", "abc"]).await?;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.starts_with("400 Bad Request: "), "{out:#?}");

    // health needs no token
    assert_eq!(Cli::new(base)?.run(&["health"]).await?.ok(), "ok\n");

    // anything else: request METHOD PATH, with the token
    let args = ["request", "POST", "/kv/raw/k?ttl=60", "--body", "a=1&b"];
    assert_eq!(cli.run(&args).await?.ok(), "OK\n");
    assert_eq!(
        cli.run(&["request", "get", "/kv/raw/k"]).await?.ok(),
        "a=1&b\n"
    );
    let out = cli.run(&["request", "GET", "/"]).await?;
    assert!(
        out.ok().starts_with("{\n  \"wallet\": "),
        "2023 path, pretty: {out:#?}"
    );
    cli.run(&["request", "GET", "/no/such/path/here"])
        .await?
        .fails(1, "404 Not Found");

    let out = Cli::new(base)?.run(&["completions", "bash"]).await?;
    let script = out.ok();
    assert!(script.contains("echovalue") && script.contains("kv") && script.len() > 1000);
    Ok(())
}
