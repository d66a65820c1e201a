//! Scheduled webhooks over the real stack (SPEC §13): webhooks made with the SQL API, the real
//! mailhook planning and delivering their runs to a real receiver on loopback. Several
//! workers never run an occurrence twice; a worker killed mid-run leaves one run, made after
//! the restart; ten minutes of downtime give one run for the latest missed minute; a paused
//! schedule and an empty wallet do not run (the wallet's skip is recorded and logged); a
//! schedule changed through the API wakes the sleeping scheduler, which then runs at the
//! minute, not at its poll.
//!
//! Times are moved in SQL (next_run_at) instead of waiting for the clock.

mod delivery_support;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result};
use delivery_support::*;
use echovalue_tests::{Admin, Wallet};
use serde_json::json;
use tokio::net::TcpListener;

/// Makes `id` a scheduled webhook of `w` posting to `url`, with the SQL API.
async fn schedule(admin: &Admin, w: &Wallet, id: &str, url: &str, cron: &str) -> Result<()> {
    let body =
        json!({"url": url, "schedule": {"cron": cron, "timezone": "Europe/Rome"}}).to_string();
    let (status, reply) = admin
        .call_allowing_insecure(
            "select status, body from echovalue.webhook_put(token => $1, webhook_id => $2, body => $3)",
            &[&w.token, &id, &body],
        )
        .await?;
    anyhow::ensure!(status == 200, "webhook_put {id}: {status} {reply}");
    Ok(())
}

/// Makes every planned run of the wallet due `ago` in the past (as after downtime).
async fn due_since(admin: &Admin, w: &Wallet, ago: &str) -> Result<()> {
    admin
        .client()
        .execute(
            &format!(
                "update echovalue.webhooks set next_run_at = now() - interval '{ago}'
                  where next_run_at is not null
                    and wallet_id = (select id from echovalue.wallets where hash = $1)"
            ),
            &[&w.hash],
        )
        .await?;
    Ok(())
}

/// Every schedule off: before a test, so only its own runs are planned; after it, so no
/// later test's worker makes them.
async fn only_these(admin: &Admin) -> Result<()> {
    admin
        .client()
        .execute(
            "update echovalue.webhooks set next_run_at = null where next_run_at is not null",
            &[],
        )
        .await?;
    Ok(())
}

/// (webhook, scheduled_for as text, state) of the wallet's runs.
async fn runs(admin: &Admin, w: &Wallet) -> Result<Vec<(String, String, String)>> {
    let rows = admin
        .client()
        .query(
            "select webhook, scheduled_for::text, state from echovalue.deliveries
              where kind = 'scheduled' and wallet_id = (select id from echovalue.wallets where hash = $1)
              order by webhook, scheduled_for",
            &[&w.hash],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

#[tokio::test]
async fn workers_run_each_occurrence_once() -> Result<()> {
    const N: usize = 20;
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    only_these(&admin).await?;
    let receiver = Receiver::start(&[]).await?;
    let w = admin.new_wallet_with(1000).await?;
    for i in 0..N {
        schedule(
            &admin,
            &w,
            &format!("s{i}"),
            &receiver.url(&format!("/s{i}")),
            "*/5 * * * *",
        )
        .await?;
    }
    // 10 minutes of downtime for all of them, then three workers at once
    due_since(&admin, &w, "10 minutes").await?;
    let _workers = [
        Mailhook::start().await?,
        Mailhook::start().await?,
        Mailhook::start().await?,
    ];
    let got = wait_for("a run of each", Duration::from_secs(30), || async {
        let got = receiver.got();
        Ok((got.len() >= N).then_some(got))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_after = receiver.got();
    let mut seen = HashSet::new();
    for g in &got_after {
        let p = g.json();
        assert_eq!(p["type"], "scheduled_webhook_run");
        assert_eq!(p["walletHash"], w.hash.as_str());
        let key = (
            p["webhookId"].as_str().unwrap_or("").to_owned(),
            p["scheduledFor"].as_str().unwrap_or("").to_owned(),
        );
        assert!(seen.insert(key.clone()), "occurrence {key:?} ran twice");
    }
    assert!(got.len() >= N);
    let planned = runs(&admin, &w).await?;
    // one run per webhook for the latest missed occurrence (a minute boundary passing during
    // the test may add the next occurrence, never a second run of one)
    let ids: HashSet<&str> = planned.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len(), N);
    let stale: i64 = admin
        .client()
        .query_one(
            "select count(*) from echovalue.deliveries
              where kind = 'scheduled' and scheduled_for < now() - interval '5 minutes'
                and wallet_id = (select id from echovalue.wallets where hash = $1)",
            &[&w.hash],
        )
        .await?
        .get(0);
    assert_eq!(
        stale, 0,
        "the missed occurrences collapsed into the latest: {planned:?}"
    );
    let charged: i64 = admin
        .client()
        .query_one(
            "select coalesce(sum(cost), 0)::bigint from echovalue.logs
              where method = 'CRON' and wallet_id = (select id from echovalue.wallets where hash = $1)",
            &[&w.hash],
        )
        .await?
        .get(0);
    assert_eq!(charged, 2 * planned.len() as i64, "each run charged once");
    assert_eq!(
        got_after.len(),
        planned.len(),
        "each run delivered once: {planned:?}"
    );
    receiver.stop();
    only_these(&admin).await
}

#[tokio::test]
async fn a_worker_killed_mid_run_leaves_one_run() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    only_these(&admin).await?;
    // the first POST hangs until the worker is gone
    let receiver = Receiver::start_on(
        TcpListener::bind("127.0.0.1:0").await?,
        &[],
        Duration::from_secs(3),
    )?;
    let w = admin.new_wallet_with(100).await?;
    schedule(&admin, &w, "nightly", &receiver.url("/n"), "0 3 * * *").await?;
    due_since(&admin, &w, "1 second").await?;
    let mut hook = Mailhook::start().await?;
    wait_for("the run's POST", Duration::from_secs(20), || async {
        Ok((!receiver.got().is_empty()).then_some(()))
    })
    .await?;
    hook.kill9();
    let first = receiver.got();
    receiver
        .state
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .delay = Duration::ZERO;
    let _restarted = Mailhook::start().await?;
    make_due(&admin, &w).await?;
    wait_for("the run delivered", Duration::from_secs(20), || async {
        let r = runs(&admin, &w).await?;
        Ok(r.first().filter(|r| r.2 == "delivered").map(|_| ()))
    })
    .await?;
    let got = receiver.got();
    assert_eq!(
        runs(&admin, &w).await?.len(),
        1,
        "one run for the occurrence"
    );
    assert!(got.len() >= 2, "delivered again after the restart");
    let ids: HashSet<&str> = got.iter().map(|g| g.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "the same run, the same webhook-id");
    assert_eq!(
        got[0].json()["scheduledFor"],
        first[0].json()["scheduledFor"]
    );
    assert_eq!(
        admin.balance(&w).await?,
        100 - 1 - 2,
        "configured once, charged once"
    );
    receiver.stop();
    only_these(&admin).await
}

#[tokio::test]
async fn paused_and_unpaid_schedules_do_not_run() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    only_these(&admin).await?;
    let receiver = Receiver::start(&[]).await?;
    let paused = admin.new_wallet().await?;
    schedule(&admin, &paused, "p", &receiver.url("/p"), "* * * * *").await?;
    // due (as after downtime), then paused: the pause drops the due run
    due_since(&admin, &paused, "1 minute").await?;
    let (status, _) = admin
        .call_allowing_insecure(
            "select status, body from echovalue.webhook_patch(token => $1, webhook_id => 'p', body => '{\"schedule\":{\"active\":false}}')",
            &[&paused.token],
        )
        .await?;
    assert_eq!(status, 200);
    let broke = admin.new_wallet().await?;
    schedule(&admin, &broke, "b", &receiver.url("/b"), "* * * * *").await?;
    admin.set_balance(&broke, 1).await?;
    due_since(&admin, &broke, "1 second").await?;
    let _hook = Mailhook::start().await?;
    let skipped = wait_for("the skip", Duration::from_secs(20), || async {
        let row = admin
            .client()
            .query_one(
                "select last_status, last_error, next_run_at > now() from echovalue.webhooks
                  where name = 'b' and wallet_id = (select id from echovalue.wallets where hash = $1)",
                &[&broke.hash],
            )
            .await?;
        let status: Option<String> = row.get(0);
        Ok(status.map(|s| (s, row.get::<_, Option<String>>(1), row.get::<_, bool>(2))))
    })
    .await?;
    assert_eq!(skipped.0, "failure");
    assert_eq!(
        skipped.1.as_deref(),
        Some("Insufficient credits: the run was skipped")
    );
    assert!(skipped.2, "the next run is still planned");
    let last = admin.last_log(&broke).await?;
    assert_eq!((last.0.as_str(), last.3, last.5), ("CRON", 402, 0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.got().is_empty(), "nothing ran");
    assert!(runs(&admin, &paused).await?.is_empty() && runs(&admin, &broke).await?.is_empty());
    receiver.stop();
    only_these(&admin).await
}

#[tokio::test]
async fn a_changed_schedule_wakes_the_scheduler_and_it_runs_on_time() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    only_these(&admin).await?;
    let receiver = Receiver::start(&[]).await?;
    let w = admin.new_wallet().await?;
    // a poll far longer than the test: only the wake-up and the due-time sleep can run it
    let _hook = Mailhook::start_with(true, &[("ECHOVALUE_MAILHOOK_POLL_SECS", "300")]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    schedule(&admin, &w, "soon", &receiver.url("/soon"), "0 3 * * *").await?;
    // the API changes the schedule to every minute: its NOTIFY wakes the scheduler, which
    // then sleeps until the minute starts
    let (status, _) = admin
        .call_allowing_insecure(
            "select status, body from echovalue.webhook_patch(token => $1, webhook_id => 'soon',
                    body => '{\"schedule\":{\"cron\":\"* * * * *\"}}')",
            &[&w.token],
        )
        .await?;
    assert_eq!(status, 200);
    let got = wait_for("the run", Duration::from_secs(75), || async {
        Ok(receiver.got().first().cloned())
    })
    .await?;
    let arrived = std::time::SystemTime::now();
    let p = got.json();
    assert_eq!(p["webhookId"], "soon");
    let due: f64 = admin
        .client()
        .query_one(
            "select extract(epoch from $1::text::timestamptz)::float8",
            &[&p["scheduledFor"].as_str().context("scheduledFor")?],
        )
        .await?
        .get(0);
    let late = arrived.duration_since(std::time::UNIX_EPOCH)?.as_secs_f64() - due;
    assert!(due % 60.0 == 0.0, "a minute's start: {p}");
    assert!(
        (0.0..20.0).contains(&late),
        "on time, not at the 300 s poll: {late} s late"
    );
    receiver.stop();
    only_these(&admin).await
}
