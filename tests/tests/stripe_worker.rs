//! The worker process dies between recording and applying: events recorded while no worker
//! runs, a worker (the built `echovalue-mailhook` binary) SIGKILLed in the middle of a batch
//! with one event's transaction open, then restarted. Every wallet is still credited exactly
//! once. Alone in its test binary, so no other test's worker applies these events meanwhile.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use echovalue_proxy::config::Secret;
use echovalue_tests::stripe::{deliver_signed, paid_session_event, TEST_SECRET};
use echovalue_tests::{env, Admin, TestProxy};

const EVENTS: usize = 10;
/// The wallet whose row is held locked, so the worker stops inside that event's transaction.
const STUCK: usize = 5;

/// The worker process; killed if the test fails before it stops it.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start_worker() -> Result<Worker> {
    let child = Command::new(env::mailhook_bin()?)
        .env("ECHOVALUE_DATABASE_URL", env::mailhook_url()?)
        .env("ECHOVALUE_MAILHOOK_POLL_SECS", "1")
        .env("ECHOVALUE_MAILHOOK_RECONNECT_MAX_SECS", "1")
        .env("ECHOVALUE_LOG", "warn")
        // any free port: the SMTP tests may run a mailhook on the default one
        .env("ECHOVALUE_SMTP_LISTEN", "127.0.0.1:0")
        // recharges only: no webhook dispatcher sending other tests' queued mail
        .env("ECHOVALUE_DELIVERY_CONCURRENCY", "0")
        // this test holds a wallet locked while the worker waits for it, on purpose
        .env("ECHOVALUE_LOCK_TIMEOUT_MS", "120000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start echovalue-mailhook")?;
    Ok(Worker(child))
}

/// Counts the events in each state among `ids`.
async fn count_state(admin: &Admin, ids: &[String], state: &str) -> Result<usize> {
    let mut n = 0;
    for id in ids {
        if admin
            .stripe_event(id)
            .await?
            .is_some_and(|(s, _)| s == state)
        {
            n += 1;
        }
    }
    Ok(n)
}

async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    for _ in 0..400 {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out waiting for {what}")
}

#[tokio::test]
async fn worker_killed_mid_batch_then_restarted_credits_exactly_once() -> Result<()> {
    let proxy =
        TestProxy::start_with(|c| c.stripe_webhook_secret = Some(Secret::new(TEST_SECRET))).await?;
    let admin = Admin::connect().await?;
    let locker = Admin::connect().await?;
    let tier = admin.new_tier(10_000).await?;

    // 1. Stripe delivers while no worker runs: recorded, pending.
    let mut wallets = Vec::new();
    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..EVENTS {
        let w = admin.new_wallet().await?;
        let (evt, body) = paid_session_event(&w.hash, &tier.link_id);
        let r = deliver_signed(proxy.api(), &body).await?;
        assert_eq!(r.status, 200, "{:?}", r.text());
        wallets.push(w);
        ids.push(evt);
        bodies.push(body);
    }
    assert_eq!(count_state(&admin, &ids, "pending").await?, EVENTS);

    // 2. A worker starts and blocks inside the transaction of event STUCK (its wallet row is
    //    locked by another session): events before it are applied, the rest wait.
    let locker_pid = locker.lock_wallet(&wallets[STUCK]).await?;
    let mut worker = start_worker()?;
    wait_until("the worker to block on the locked wallet", || async {
        Ok(admin.sessions_blocked_by(locker_pid).await? >= 1)
    })
    .await?;
    assert_eq!(count_state(&admin, &ids, "applied").await?, STUCK);

    // 3. SIGKILL the worker. Its backend is still inside the open transaction; end it as a
    //    crash would (the transaction rolls back), then release the lock.
    worker.0.kill()?; // SIGKILL
    worker.0.wait()?;
    admin.end_sessions_blocked_by(locker_pid).await?;
    wait_until("the killed worker's transaction to end", || async {
        Ok(admin.sessions_blocked_by(locker_pid).await? == 0)
    })
    .await?;
    locker.commit().await?;
    assert_eq!(count_state(&admin, &ids, "applied").await?, STUCK);
    assert_eq!(count_state(&admin, &ids, "pending").await?, EVENTS - STUCK);
    assert_eq!(
        admin.balance(&wallets[STUCK]).await?,
        100,
        "rolled back entirely"
    );
    assert_eq!(admin.recharge_logs(&wallets[STUCK]).await?.0, 0);

    // 4. Restarted, it applies what is left, each once; Stripe's retries change nothing.
    let mut worker = start_worker()?;
    wait_until("every event to be applied", || async {
        Ok(count_state(&admin, &ids, "applied").await? == EVENTS)
    })
    .await?;
    for body in &bodies {
        let r = deliver_signed(proxy.api(), body).await?;
        assert_eq!(r.json()?["duplicate"], true);
    }
    tokio::time::sleep(Duration::from_millis(2000)).await; // two poll intervals
    for (i, w) in wallets.iter().enumerate() {
        assert_eq!(admin.balance(w).await?, 100 + 10_000, "wallet {i}");
        assert_eq!(admin.recharge_logs(w).await?, (1, 0), "wallet {i}");
    }

    // 5. SIGTERM stops it cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &worker.0.id().to_string()])
        .status()?;
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(s) = worker.0.try_wait()? {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match exited {
        Some(s) => assert!(s.success(), "exit status {s}"),
        None => {
            bail!("the worker did not stop within 5 s of SIGTERM");
        }
    }
    admin.drop_tier(&tier).await?;
    Ok(())
}
