//! `GET /token/logs`: defaults, limits, fields, ordering, charging and the 2023 path.

use anyhow::Result;
use chrono::{DateTime, Duration};
use echovalue_tests::{setup, Api, Wallet};
use serde_json::Value;

/// Makes `k` cheap requests (1 credit each) so the wallet has `k` more log rows.
async fn make_requests(api: &Api, w: &Wallet, k: usize) -> Result<()> {
    for i in 0..k {
        let r = api.get(&format!("/kv/fill/k{i}"), w.t()).await?;
        assert_eq!(r.status, 404);
    }
    Ok(())
}

fn entries(r: &echovalue_tests::Reply) -> Result<Vec<Value>> {
    let j = r.json()?;
    let logs = j["logs"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        j["n"].as_u64(),
        Some(logs.len() as u64),
        "n = entries returned"
    );
    Ok(logs)
}

#[tokio::test]
async fn n_defaults_to_5_and_costs_one_per_entry() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    make_requests(api, &w, 7).await?;
    let r = api.get("/token/logs", w.t()).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/json"));
    assert_eq!(entries(&r)?.len(), 5);
    assert_eq!((r.cost(), r.balance()), (Some(5), Some(100 - 7 - 5)));

    let r = api.get("/token/logs?n=1", w.t()).await?;
    assert_eq!(entries(&r)?.len(), 1);
    assert_eq!(r.cost(), Some(1));
    Ok(())
}

#[tokio::test]
async fn fewer_entries_than_asked_cost_only_what_is_returned() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    make_requests(api, &w, 2).await?;
    // Token creation may itself be logged; count what the wallet holds.
    let (rows, _) = admin.log_counts(&w).await?;
    assert!((2..=3).contains(&rows), "{rows} log rows");
    let r = api.get("/token/logs?n=50", w.t()).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert_eq!(entries(&r)?.len() as i64, rows);
    assert_eq!((r.cost(), r.balance()), (Some(rows), Some(98 - rows)));
    Ok(())
}

#[tokio::test]
async fn n_above_100_is_cut_to_100() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet_with(1000).await?;
    // Log rows made through the SQL API are the same rows HTTP requests make.
    for i in 0..105 {
        let (status, _) = admin.sql_kv_get(&w, "fill", &format!("k{i}")).await?;
        assert_eq!(status, 404);
    }
    let r = api.get("/token/logs?n=150", w.t()).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert_eq!(entries(&r)?.len(), 100);
    assert_eq!((r.cost(), r.balance()), (Some(100), Some(1000 - 105 - 100)));
    Ok(())
}

#[tokio::test]
async fn bad_n_is_400() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    make_requests(api, &w, 3).await?;
    for q in ["n=0", "n=-1", "n=abc", "n=1.5"] {
        let r = api.get(&format!("/token/logs?{q}"), w.t()).await?;
        assert_eq!(r.status, 400, "{q}: {:?}", r.text());
        assert!(r.text().starts_with("Bad Request: "), "{q}: {:?}", r.text());
        assert!(
            r.cost().is_some() && r.balance().is_some(),
            "{q}: x-cost/x-balance on errors"
        );
    }
    Ok(())
}

#[tokio::test]
async fn entry_fields_newest_first() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    let set = api.post("/kv/g/k?ttl=60", w.t(), "v").await?;
    assert_eq!(set.status, 200);
    let miss = api.get("/kv/g/missing", w.t()).await?;
    assert_eq!(miss.status, 404);

    let r = api.get("/token/logs?n=2", w.t()).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    let logs = entries(&r)?;
    assert_eq!(logs.len(), 2);
    let (newest, older) = (&logs[0], &logs[1]);

    assert_eq!(newest["method"], "GET");
    assert_eq!(newest["path"], "/kv/g/missing");
    assert_eq!(newest["endpoint"], "kv");
    assert_eq!(newest["status_code"], 404);
    assert_eq!(newest["error"], "Key Not Found");
    assert_eq!(newest["cost"], 1);
    assert_eq!(newest["balance"], 98);

    assert_eq!(older["method"], "POST");
    assert_eq!(older["path"], "/kv/g/k?ttl=60", "path keeps the query");
    assert_eq!(older["endpoint"], "kv");
    assert_eq!(older["status_code"], 200);
    assert!(
        older.get("error").is_none(),
        "no error field on success: {older}"
    );
    assert_eq!(older["cost"], 1);
    assert_eq!(older["balance"], 99);

    let mut ids = Vec::new();
    let mut stamps = Vec::new();
    for e in &logs {
        let id = e["id"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "id is a non-empty string: {e}");
        ids.push(id.to_owned());
        let ts = e["timestamp"].as_str().unwrap_or_default();
        let exp = e["expiration"].as_str().unwrap_or_default();
        assert!(
            ts.ends_with('Z') && exp.ends_with('Z'),
            "UTC with Z: {ts} {exp}"
        );
        assert!(ts.contains('.'), "fractional seconds: {ts}");
        let (ts, exp) = (
            DateTime::parse_from_rfc3339(ts)?,
            DateTime::parse_from_rfc3339(exp)?,
        );
        assert_eq!(
            exp - ts,
            Duration::days(7),
            "expiration = timestamp + 7 days"
        );
        stamps.push(ts);
    }
    assert_ne!(ids[0], ids[1]);
    assert!(stamps[0] >= stamps[1], "newest first");
    Ok(())
}

#[tokio::test]
async fn logs_show_token_endpoint_and_own_requests_later() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    assert_eq!(api.get("/token", w.t()).await?.status, 200);
    assert_eq!(api.get("/token/logs?n=1", w.t()).await?.status, 200);
    let r = api.get("/token/logs?n=2", w.t()).await?;
    let logs = entries(&r)?;
    assert_eq!(logs[0]["path"], "/token/logs?n=1");
    assert_eq!(logs[0]["endpoint"], "token");
    assert_eq!(logs[0]["cost"], 1);
    assert_eq!(logs[1]["path"], "/token");
    assert_eq!(logs[1]["endpoint"], "token");
    Ok(())
}

#[tokio::test]
async fn logs_the_wallet_cannot_pay_for_are_402() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    make_requests(api, &w, 6).await?;
    admin.set_balance(&w, 3).await?;
    let r = api.get("/token/logs?n=5", w.t()).await?;
    assert_eq!((r.status, r.text().as_str()), (402, "Insufficient credits"));
    assert_eq!((r.cost(), r.balance()), (Some(0), Some(3)));
    assert_eq!(admin.balance(&w).await?, 3);
    // Three entries are affordable.
    let r = api.get("/token/logs?n=3", w.t()).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert_eq!((r.cost(), r.balance()), (Some(3), Some(0)));
    Ok(())
}

#[tokio::test]
async fn legacy_logs_path() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    make_requests(api, &w, 2).await?;
    assert_eq!(api.get("/default/mykey", w.t()).await?.status, 404);
    let r = api.get("/logs?n=2", w.t()).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    let logs = entries(&r)?;
    assert_eq!(logs.len(), 2);
    assert_eq!(r.cost(), Some(2));
    assert_eq!(logs[0]["path"], "/default/mykey", "logged as requested");
    assert_eq!(logs[0]["endpoint"], "kv");
    assert_eq!(logs[0]["error"], "Key Not Found");
    Ok(())
}

#[tokio::test]
async fn logs_are_per_wallet() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let a = admin.new_wallet().await?;
    let b = admin.new_wallet().await?;
    make_requests(api, &a, 3).await?;
    let r = api.get("/token/logs?n=10", b.t()).await?;
    assert_eq!(r.status, 200);
    let seen = entries(&r)?;
    assert!(
        seen.iter()
            .all(|e| !e["path"].as_str().unwrap_or("").starts_with("/kv/")),
        "b sees none of a's requests: {seen:?}"
    );
    assert_eq!(r.cost(), Some(seen.len() as i64));
    Ok(())
}

#[tokio::test]
async fn path_is_logged_as_requested() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    let path = "/kv/my%20group/caf%C3%A9?ttl=30";
    assert_eq!(api.post(path, w.t(), "v").await?.status, 200);
    let r = api.get("/token/logs?n=1", w.t()).await?;
    let logs = entries(&r)?;
    assert_eq!(logs[0]["path"], path);
    Ok(())
}
