//! The worker's LISTEN connection: a NOTIFY wakes it (polling is off here), and after the
//! connection is lost it reconnects with backoff and re-scans, so an event recorded while
//! nobody listened is still applied. Alone in its test binary: it blocks logins of
//! `echovalue_mailhook` for a moment, and no other worker may apply its events meanwhile.

use std::time::Duration;

use anyhow::{bail, Result};
use echovalue_tests::stripe::paid_session_event;
use echovalue_tests::{Admin, TestWorker, Tier, Wallet};

/// Polling off in practice: only NOTIFY and re-scans after reconnects wake the worker.
const NO_POLL_SECS: u64 = 3600;

/// Backends of the worker's LISTEN connection (its last statement was the LISTEN).
async fn listen_backends(admin: &Admin) -> Result<Vec<i32>> {
    Ok(admin
        .client()
        .query(
            "select pid from pg_stat_activity \
             where usename = 'echovalue_mailhook' and query like 'LISTEN %'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

#[tokio::test]
async fn notify_wakes_the_worker_and_a_lost_listener_reconnects_and_rescans() -> Result<()> {
    let admin = Admin::connect().await?;
    let tier = admin.new_tier(42).await?;
    let w = admin.new_wallet().await?;
    let worker = TestWorker::start_with(|c| {
        c.poll_secs = NO_POLL_SECS;
        c.reconnect_max_secs = 1;
    })?;
    admin.wait_mailhook_listening().await?;

    // NOTIFY is the wake-up: applied long before any poll.
    let (first, body) = paid_session_event(&w.hash, &tier.link_id);
    assert_eq!(admin.stripe_record(&body).await?, 200);
    admin.wait_stripe_state(&first, "applied").await?;

    let outcome = lost_listener(&admin, &tier, &w).await;
    // Always give the role its logins back, even when the test failed.
    admin
        .client()
        .batch_execute("alter role echovalue_mailhook login")
        .await?;
    outcome?;

    assert_eq!(admin.balance(&w).await?, 100 + 2 * 42);
    worker.stop().await?;
    admin.drop_tier(&tier).await?;
    Ok(())
}

async fn lost_listener(admin: &Admin, tier: &Tier, w: &Wallet) -> Result<()> {
    // The listener's connection dies and it cannot log in again for now.
    admin
        .client()
        .batch_execute("alter role echovalue_mailhook nologin")
        .await?;
    let pids = listen_backends(admin).await?;
    if pids.is_empty() {
        bail!("no LISTEN connection to end");
    }
    for pid in pids {
        admin
            .client()
            .execute("select pg_terminate_backend($1::int)", &[&pid])
            .await?;
    }
    // Recorded while nobody listens: its NOTIFY is lost, and nothing polls.
    let (second, body) = paid_session_event(&w.hash, &tier.link_id);
    assert_eq!(admin.stripe_record(&body).await?, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        admin
            .stripe_event(&second)
            .await?
            .map(|(s, _)| s)
            .as_deref(),
        Some("pending"),
        "nothing woke the worker while its listener was down"
    );
    // Logins allowed again: the listener reconnects (backoff capped at 1 s) and re-scans.
    admin
        .client()
        .batch_execute("alter role echovalue_mailhook login")
        .await?;
    admin.wait_stripe_state(&second, "applied").await?;
    admin.wait_mailhook_listening().await
}
