//! The scheduler of scheduled webhooks (SPEC §13): it has the extension plan every due run
//! (`schedule_claim`: each run charged and queued as a delivery in one transaction, so the
//! dispatcher makes it, signed and retried), then sleeps until the next run is due
//! (`schedule_next_due`, one index look-up however many schedules there are). A NOTIFY on
//! `echovalue_schedule` (a schedule changed) wakes it early, and it looks again after the poll
//! interval at the latest (the fallback scan). Any number of schedulers may run: the claim
//! skips what another one holds.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{watch, Notify};

/// The channel `_webhook_store` NOTIFYs when a webhook's next run changed.
pub const CHANNEL: &str = "echovalue_schedule";

const CLAIM_SQL: &str = "select echovalue.schedule_claim(batch => $1)";
/// Seconds until the earliest planned run, by the database's clock; NULL when none is planned.
const DUE_SQL: &str = "select extract(epoch from echovalue.schedule_next_due() \
     - pg_catalog.clock_timestamp())::float8";
/// Webhooks planned per transaction.
const BATCH: i32 = 500;
/// A run that is due but was not planned (its wallet was busy) is tried again after this.
const BUSY_PAUSE: Duration = Duration::from_millis(200);

/// How long to sleep until a run `due_in` seconds away (negative: overdue), at most `poll`.
pub fn sleep_for(due_in: Option<f64>, poll: Duration) -> Duration {
    match due_in {
        None => poll,
        Some(s) if !s.is_finite() || s <= 0.0 => BUSY_PAUSE.min(poll),
        Some(s) => Duration::try_from_secs_f64(s).map_or(poll, |d| d.min(poll)),
    }
}

/// Runs until `stop` turns true.
pub async fn run(pool: Pool, wake: Arc<Notify>, poll: Duration, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(200);
    tracing::info!("scheduler running");
    while !*stop.borrow() {
        let pause = match pass(&pool).await {
            Ok(due_in) => {
                backoff = Duration::from_millis(200);
                sleep_for(due_in, poll)
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "planning scheduled runs failed");
                let pause = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                pause
            }
        };
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Plans every due run, then says in how many seconds the next one is due.
async fn pass(pool: &Pool) -> anyhow::Result<Option<f64>> {
    let client = pool.get().await?;
    let claim = client.prepare_cached(CLAIM_SQL).await?;
    loop {
        let planned: i32 = client.query_one(&claim, &[&BATCH]).await?.try_get(0)?;
        if planned > 0 {
            tracing::info!(planned, "scheduled runs planned");
        }
        if planned < BATCH {
            break;
        }
    }
    let due = client.prepare_cached(DUE_SQL).await?;
    Ok(client.query_one(&due, &[]).await?.try_get(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_until_the_next_run_within_the_poll() {
        let poll = Duration::from_secs(30);
        assert_eq!(sleep_for(None, poll), poll);
        assert_eq!(sleep_for(Some(2.5), poll), Duration::from_millis(2500));
        assert_eq!(sleep_for(Some(3600.0), poll), poll);
        // overdue (a busy wallet): a short pause, never a spin
        assert_eq!(sleep_for(Some(-5.0), poll), BUSY_PAUSE);
        assert_eq!(sleep_for(Some(0.0), poll), BUSY_PAUSE);
        assert_eq!(sleep_for(Some(f64::NAN), poll), BUSY_PAUSE);
        assert_eq!(
            sleep_for(Some(-1.0), Duration::from_millis(50)),
            Duration::from_millis(50)
        );
    }
}
