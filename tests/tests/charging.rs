//! Credits: an empty wallet gets 402 and nothing changes; every response of a resolved
//! wallet carries `x-cost` and `x-balance`, errors included.

use anyhow::Result;
use echovalue_tests::setup;
use reqwest::Method;

#[tokio::test]
async fn empty_wallet_gets_402_and_nothing_changes() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    assert_eq!(api.post("/kv/g/k", w.t(), "before").await?.status, 200);
    admin.set_balance(&w, 0).await?;
    let (rows_before, _) = admin.log_counts(&w).await?;

    let calls: Vec<(Method, &str, Option<&str>)> = vec![
        (Method::GET, "/token", None),
        (Method::GET, "/kv/g/k", None),
        (Method::POST, "/kv/g/k", Some("after")),
        (Method::DELETE, "/kv/g/k", None),
        (Method::GET, "/token/logs?n=1", None),
        (Method::POST, "/kv/g/k?ttl=abc", Some("x")),
        (Method::GET, "/g/k", None),
    ];
    for (method, path, body) in &calls {
        let r = api
            .send(
                method.clone(),
                path,
                w.t(),
                body.map(|b| b.as_bytes().to_vec()),
                &[],
            )
            .await?;
        assert_eq!(r.status, 402, "{method} {path}: {:?}", r.text());
        assert_eq!(r.text(), "Insufficient credits", "{method} {path}");
        assert_eq!(
            (r.cost(), r.balance()),
            (Some(0), Some(0)),
            "{method} {path}"
        );
    }
    assert_eq!(admin.balance(&w).await?, 0, "never negative");
    let (rows_after, _) = admin.log_counts(&w).await?;
    assert_eq!(
        rows_after - rows_before,
        calls.len() as i64,
        "every 402 is logged"
    );

    // The value survived the refused overwrite and delete.
    admin.set_balance(&w, 10).await?;
    assert_eq!(api.get("/kv/g/k", w.t()).await?.text(), "before");

    // The refusals are in the logs with cost 0.
    let r = api
        .get(&format!("/token/logs?n={}", calls.len() + 1), w.t())
        .await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    let j = r.json()?;
    let logs = j["logs"].as_array().cloned().unwrap_or_default();
    assert_eq!(logs.len(), calls.len() + 1);
    assert_eq!(logs[0]["status_code"], 200, "the successful get is newest");
    for e in &logs[1..] {
        assert_eq!(e["status_code"], 402, "{e}");
        assert_eq!(e["cost"], 0, "{e}");
        assert_eq!(e["balance"], 0, "{e}");
        assert_eq!(e["error"], "Insufficient credits", "{e}");
    }
    Ok(())
}

#[tokio::test]
async fn one_credit_left_pays_for_exactly_one_request() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet_with(1).await?;
    let r = api.post("/kv/g/k", w.t(), "v").await?;
    assert_eq!((r.status, r.cost(), r.balance()), (200, Some(1), Some(0)));
    let r = api.get("/kv/g/k", w.t()).await?;
    assert_eq!((r.status, r.cost(), r.balance()), (402, Some(0), Some(0)));
    Ok(())
}

#[tokio::test]
async fn cost_headers_on_every_response_with_a_wallet() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    let mut expected = 100;
    let calls: Vec<(Method, &str, Option<&str>, u16, i64)> = vec![
        (Method::POST, "/kv/g/k", Some("v"), 200, 1),
        (Method::GET, "/kv/g/k", None, 200, 1),
        (Method::GET, "/kv/g/nope", None, 404, 1),
        (Method::POST, "/kv/g/k?ttl=-1", Some("v"), 400, 1),
        (Method::POST, "/kv/reserved-g/k", Some("v"), 400, 1),
        (Method::PUT, "/kv/g/k", Some("v"), 405, 1),
        (Method::GET, "/token", None, 200, 1),
        (Method::GET, "/recharge?amount=2", None, 400, 0),
        (Method::DELETE, "/kv/g/k", None, 200, 1),
        (Method::DELETE, "/kv/g/k", None, 404, 1),
    ];
    for (method, path, body, status, cost) in calls {
        let r = api
            .send(
                method.clone(),
                path,
                w.t(),
                body.map(|b| b.as_bytes().to_vec()),
                &[],
            )
            .await?;
        expected -= cost;
        assert_eq!(r.status, status, "{method} {path}: {:?}", r.text());
        assert_eq!(r.cost(), Some(cost), "{method} {path}: x-cost");
        assert_eq!(r.balance(), Some(expected), "{method} {path}: x-balance");
    }
    assert_eq!(admin.balance(&w).await?, expected);
    Ok(())
}

#[tokio::test]
async fn sql_and_http_share_one_wallet() -> Result<()> {
    // Every HTTP operation is also a SQL call with the same charging.
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    assert_eq!(api.post("/kv/g/k", w.t(), "from http").await?.status, 200);
    assert_eq!(
        admin.sql_kv_get(&w, "g", "k").await?,
        (200, "from http".into())
    );
    let r = api.get("/token", w.t()).await?;
    assert_eq!(r.balance(), Some(97));
    Ok(())
}
