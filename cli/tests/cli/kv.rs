//! `kv set|get|delete|list|groups`: values byte for byte, names encoded whole, pages.

use anyhow::{Context, Result};
use echovalue_tests::setup;

use crate::support::{Cli, Out};

#[tokio::test]
async fn values_and_names_go_as_given() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let w = admin.new_wallet().await?;
    let cli = Cli::with_token(proxy.api().base(), &w.token)?;

    let out = cli
        .run(&["kv", "set", "my group", "my key", "hello world"])
        .await?;
    assert_eq!(out.ok(), "OK\n");
    assert_eq!(
        admin.sql_kv_get(&w, "my group", "my key").await?,
        (200, "hello world".to_owned())
    );
    // get prints the value exactly: no newline added
    let out = cli.run(&["kv", "get", "my group", "my key"]).await?;
    assert_eq!(out.ok(), "hello world");

    // no VALUE, or `-`: stdin, byte for byte
    let value = "line 1\n  line 2\t✓\n\n";
    let out = cli
        .run_with(&["kv", "set", "g", "in"], &[], Some(value.as_bytes()))
        .await?;
    assert_eq!(out.ok(), "OK\n");
    assert_eq!(cli.run(&["kv", "get", "g", "in"]).await?.ok(), value);
    let args = ["kv", "set", "g", "dash", "-", "--ttl", "60"];
    assert_eq!(cli.run_with(&args, &[], Some(b"-x")).await?.ok(), "OK\n");
    assert_eq!(cli.run(&["kv", "get", "g", "dash"]).await?.ok(), "-x");
    let ttl = admin
        .key_ttl_seconds(&w, "g", "dash")
        .await?
        .context("no key")?;
    assert!((50.0..=60.0).contains(&ttl), "{ttl}");
    assert_eq!(
        cli.run(&["kv", "set", "g", "neg", "-5"]).await?.ok(),
        "OK\n"
    );
    assert_eq!(cli.run(&["kv", "get", "g", "neg"]).await?.ok(), "-5");

    // a name is one segment whatever it holds: `/` reaches the server inside the key
    let out = cli.run(&["kv", "set", "g", "a/b", "v"]).await?;
    out.fails(
        1,
        "400 Bad Request: key must not contain '/' or control characters",
    );
    let odd = "q?#%25 é+";
    assert_eq!(cli.run(&["kv", "set", "g", odd, "v"]).await?.ok(), "OK\n");
    assert_eq!(admin.sql_kv_get(&w, "g", odd).await?, (200, "v".to_owned()));
    assert_eq!(cli.run(&["kv", "get", "g", odd]).await?.ok(), "v");

    // delete, then the key is gone
    assert_eq!(cli.run(&["kv", "delete", "g", "neg"]).await?.ok(), "OK\n");
    cli.run(&["kv", "get", "g", "neg"])
        .await?
        .fails(1, "404 Key Not Found");
    cli.run(&["kv", "delete", "g", "neg"])
        .await?
        .fails(1, "404 Key Not Found");

    // -v: what it cost and what is left
    let out = cli.run(&["-v", "kv", "get", "g", "dash"]).await?;
    assert_eq!(out.ok(), "-x");
    let balance = admin.balance(&w).await?;
    assert!(out.stderr.contains("< x-cost: 1\n"), "{out:#?}");
    assert!(
        out.stderr.contains(&format!("< x-balance: {balance}\n")),
        "{out:#?}"
    );
    Ok(())
}

/// The cells of each line of stdout.
fn rows(out: &Out) -> Vec<Vec<String>> {
    out.ok()
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

fn first_cells(out: &Out) -> Vec<String> {
    rows(out).into_iter().map(|r| r[0].clone()).collect()
}

#[tokio::test]
async fn listings_page_follow_cursors_and_count_groups() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let w = admin.new_wallet().await?;
    let cli = Cli::with_token(proxy.api().base(), &w.token)?;
    let keys: Vec<String> = (1..=5).map(|i| format!("k{i}")).collect();
    admin.kv_fill(&w, "pages", &keys).await?;
    admin.kv_fill(&w, "other", &["x".to_owned()]).await?;

    // one page, and on stderr the command for the next
    let out = cli.run(&["kv", "list", "pages", "--limit", "2"]).await?;
    let page = rows(&out);
    assert_eq!(first_cells(&out), ["k1", "k2"]);
    assert!(
        page.iter().all(|r| r.len() == 2 && r[1].ends_with('Z')),
        "{out:#?}"
    );
    let hint = out.stderr.trim_end();
    let rest = hint
        .strip_prefix("next: echovalue kv list pages --cursor ")
        .with_context(|| format!("{out:#?}"))?;
    let cursor = rest
        .strip_suffix(" --limit 2")
        .context("the hint keeps --limit")?;
    let cursor = cursor.trim_matches('\'');
    let out = cli
        .run(&["kv", "list", "pages", "--cursor", cursor, "--limit", "2"])
        .await?;
    assert_eq!(first_cells(&out), ["k3", "k4"]);

    // --all follows the cursors: every key once, in order, no hint
    let out = cli
        .run(&["kv", "list", "pages", "--limit", "2", "--all"])
        .await?;
    assert_eq!(first_cells(&out), keys);
    assert_eq!(out.stderr, "");
    let out = cli
        .run(&["-v", "kv", "list", "pages", "--limit", "2", "--all"])
        .await?;
    let pages = out.stderr.matches("< HTTP/1.1 200 OK").count();
    assert!(pages >= 3, "one request a page: {out:#?}");

    // --json: the body of one page as received; with --all one body of every key
    let j = cli
        .run(&["kv", "list", "pages", "--limit", "2", "--json"])
        .await?
        .json()?;
    assert_eq!(j["keys"].as_array().map(Vec::len), Some(2));
    assert!(j["cursor"].is_string(), "{j}");
    let args = ["kv", "list", "pages", "--limit", "2", "--all", "--json"];
    let j = cli.run(&args).await?.json()?;
    let listed: Vec<&str> = j["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["key"].as_str())
        .collect();
    assert_eq!(listed, keys);
    assert!(j["cursor"].is_null());

    let out = cli.run(&["kv", "list", "pages", "--prefix", "k4"]).await?;
    assert_eq!(first_cells(&out), ["k4"]);
    assert_eq!(out.stderr, "");

    // groups with their key counts, one page or all
    let out = cli.run(&["kv", "groups"]).await?;
    let want = [["other", "1"], ["pages", "5"]];
    assert_eq!(rows(&out), want);
    let out = cli.run(&["kv", "groups", "--limit", "1"]).await?;
    assert_eq!(rows(&out), [["other", "1"]]);
    assert!(
        out.stderr
            .starts_with("next: echovalue kv groups --cursor "),
        "{out:#?}"
    );
    let out = cli.run(&["kv", "groups", "--limit", "1", "--all"]).await?;
    assert_eq!(rows(&out), want);
    let j = cli.run(&["kv", "groups", "--json"]).await?.json()?;
    assert_eq!(j["groups"][1]["keys"], 5);

    // the server's rules, in its words
    let out = cli.run(&["kv", "list", "pages", "--limit", "0"]).await?;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.starts_with("400 Bad Request: limit must be "),
        "{out:#?}"
    );
    Ok(())
}
