//! `POST /webhook/{webhookId}/test` over the real stack: the proxy queues the test, the real
//! mailhook makes the one call to a real receiver on loopback, and the HTTP call answers with
//! its outcome. Success (in the webhook's format, signed), a 500, a receiver that is down, a
//! timeout and a refused address each give their answer, none is retried, and each attempt
//! is logged as a `webhook-delivery`; with no worker running the call answers at its deadline.

mod delivery_support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use delivery_support::*;
use echovalue_tests::{Admin, Reply, TestProxy, Wallet};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Points webhook `hook` of the wallet at `url` (slack format) through the SQL API.
async fn point(admin: &Admin, w: &Wallet, url: &str) -> Result<()> {
    let body = json!({"url": url, "format": "slack"}).to_string();
    let (status, _) = admin
        .call_allowing_insecure(
            "select status, body from echovalue.webhook_put(token => $1, webhook_id => 'hook', body => $2)",
            &[&w.token, &body],
        )
        .await?;
    anyhow::ensure!(status == 200, "webhook_put: {status}");
    Ok(())
}

async fn test_call(proxy: &TestProxy, w: &Wallet) -> Result<(Reply, Value)> {
    let r = proxy
        .api()
        .send(Method::POST, "/webhook/hook/test", w.t(), None, &[])
        .await?;
    let j = r.json().with_context(|| r.text())?;
    Ok((r, j))
}

/// (state, attempts) of the wallet's test deliveries, oldest first.
async fn tests_of(admin: &Admin, w: &Wallet) -> Result<Vec<(String, i32)>> {
    let rows = admin
        .client()
        .query(
            "select state, attempts from echovalue.deliveries
              where kind = 'test' and wallet_id = (select id from echovalue.wallets where hash = $1)
              order by id",
            &[&w.hash],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[tokio::test]
async fn each_outcome_of_a_test_call() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    let proxy = TestProxy::start_with(|c| c.webhook_test_wait_secs = 6).await?;
    let w = admin.new_wallet().await?;
    let receiver = Receiver::start(&[200, 500]).await?;
    point(&admin, &w, &receiver.url("/t")).await?;
    let (_, secret) = admin.mailbox(&w).await?.context("a mailbox")?;
    let hook = Mailhook::start_with(true, &[("ECHOVALUE_DELIVERY_TIMEOUT_SECS", "2")]).await?;

    // delivered: the sample email in the webhook's format, signed
    let (r, j) = test_call(&proxy, &w).await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        j,
        json!({"success": true, "message": "test webhook delivered"})
    );
    assert_eq!((r.cost(), r.balance()), (Some(1), Some(98)));
    assert!(
        r.header("x-echovalue-await").is_none(),
        "internal header kept inside"
    );
    let got = receiver.got();
    assert_eq!(got.len(), 1);
    verify_signature(&secret, &got[0])?;
    assert_eq!(
        String::from_utf8(got[0].body.clone())?,
        json!({"text": "*Test webhook from echovalue*\nFrom: echovalue &lt;test@localhost&gt;\n\nThis is a test delivery of your webhook hook."})
            .to_string()
    );

    // a 500: failed at once, not retried
    let (_, j) = test_call(&proxy, &w).await?;
    assert_eq!(j["success"], false);
    assert!(
        j["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("webhook call failed: ") && m.contains("500")),
        "{j}"
    );

    // a timeout: the receiver answers after the mailhook's 2 s
    let slow = Receiver::start_on(
        TcpListener::bind("127.0.0.1:0").await?,
        &[],
        Duration::from_secs(4),
    )?;
    point(&admin, &w, &slow.url("/slow")).await?;
    let (_, j) = test_call(&proxy, &w).await?;
    assert_eq!(j["success"], false, "{j}");

    // the receiver is down
    let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    point(&admin, &w, &format!("http://127.0.0.1:{port}/down")).await?;
    let (_, j) = test_call(&proxy, &w).await?;
    assert_eq!(j["success"], false);
    assert!(
        j["message"]
            .as_str()
            .is_some_and(|m| m.contains("connection")),
        "{j}"
    );

    // a refused address: this worker may not call loopback
    drop(hook);
    let hook = Mailhook::start_with(false, &[]).await?;
    point(&admin, &w, &receiver.url("/refused")).await?;
    let (_, j) = test_call(&proxy, &w).await?;
    assert_eq!(j["success"], false);
    assert!(
        j["message"]
            .as_str()
            .is_some_and(|m| m.contains("URL is refused")),
        "{j}"
    );
    assert_eq!(receiver.got().len(), 2, "nothing more reached the receiver");

    // no worker: the call answers at its deadline, and the test never runs later
    drop(hook);
    let started = Instant::now();
    let (r, j) = test_call(&proxy, &w).await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        j,
        json!({"success": false, "message": "webhook call failed: no worker took the test in time"})
    );
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // and a worker that comes back later does not make it
    let hook = Mailhook::start().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.got().len(), 2, "the ended test was never sent");
    drop(hook);

    // each test: one attempt, ended, and one webhook-delivery log entry; 6 tests and 4
    // configurations paid
    let tests = tests_of(&admin, &w).await?;
    let states: Vec<&str> = tests.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        states,
        [
            "delivered",
            "failed",
            "failed",
            "failed",
            "failed",
            "failed"
        ]
    );
    assert!(tests.iter().all(|t| t.1 <= 1), "{tests:?}");
    assert_eq!(delivery_logs(&admin, &w).await?.len(), 6);
    assert_eq!(admin.balance(&w).await?, 100 - 6 - 4);

    // 404 for a webhook that does not exist (charged); 401 without a token
    let r = proxy
        .api()
        .send(Method::POST, "/webhook/nope/test", w.t(), None, &[])
        .await?;
    assert_eq!(
        (r.status, r.text().as_str(), r.cost()),
        (404, "Webhook Not Found", Some(1))
    );
    let r = proxy
        .api()
        .send(Method::POST, "/webhook/hook/test", None, None, &[])
        .await?;
    assert_eq!(r.status, 401);
    receiver.stop();
    slow.stop();
    Ok(())
}

/// The call's NOTIFY alone wakes the mailhook: with a poll of an hour, the test is still
/// delivered within its window. On Citus the call runs on its wallet's worker and notifies
/// there: the mailhook, connected to the coordinator, listens on every node
/// (`echovalue.listen_nodes()`), which this test needs there.
#[tokio::test]
async fn a_test_call_wakes_the_mailhook_without_a_poll() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    let proxy = TestProxy::start_with(|c| c.webhook_test_wait_secs = 6).await?;
    let w = admin.new_wallet().await?;
    let receiver = Receiver::start(&[]).await?;
    point(&admin, &w, &receiver.url("/t")).await?;
    let _hook = Mailhook::start_with(true, &[("ECHOVALUE_MAILHOOK_POLL_SECS", "3600")]).await?;
    // past the scan every listener makes once it listens: from here only a NOTIFY wakes it
    admin.wait_mailhook_listening().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..3 {
        let (r, j) = test_call(&proxy, &w).await?;
        assert_eq!(r.status, 200);
        assert_eq!(
            j,
            json!({"success": true, "message": "test webhook delivered"})
        );
    }
    assert_eq!(receiver.got().len(), 3);
    Ok(())
}

/// Asking for a test's answer while the test waits takes no lock a claim would skip: a claim
/// made at that moment (with no poll, the one chance its NOTIFY gives) still takes the test.
#[tokio::test]
async fn asking_for_the_answer_leaves_the_test_to_a_claim() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    let w = admin.new_wallet().await?;
    point(&admin, &w, "http://127.0.0.1:9/t").await?;
    let test: String = admin
        .client()
        .query_one(
            "select headers ->> 'x-echovalue-await'
               from echovalue.webhook_test(token => $1, webhook_id => 'hook')",
            &[&w.token],
        )
        .await?
        .get(0);
    // <wallet id>:<delivery id>:<webhook-id>
    let delivery: i64 = test.split(':').nth(1).context("an id")?.parse()?;

    // the proxy's ask, in a transaction left open while the worker claims
    let asker = Admin::connect().await?;
    asker.client().batch_execute("begin").await?;
    let answer: Option<i32> = asker
        .client()
        .query_one(
            "select status from echovalue.webhook_test_result(test => $1)",
            &[&test],
        )
        .await?
        .get(0);
    assert_eq!(answer, None, "not done yet");
    let claimed: Vec<i64> = admin
        .client()
        .query(
            "select delivery_id from echovalue.delivery_claim(batch => 1000, lease_seconds => 60)",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    asker.commit().await?;
    assert!(claimed.contains(&delivery), "{delivery} not in {claimed:?}");
    Ok(())
}
