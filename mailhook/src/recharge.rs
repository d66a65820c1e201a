//! Applies recorded Stripe events: woken by NOTIFY on [`CHANNEL`] (sent by
//! `echovalue.stripe_event_record`), by each reconnect of the listener and by its poll timer,
//! it calls `echovalue.stripe_event_apply()` until no event is pending.
//!
//! Each call claims one event and decides it in one transaction in the database (credit, log
//! entry and the event's new state commit together), so killing this process at any moment
//! leaves every event either applied once or still pending for the next pass.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{watch, Notify};

/// The channel `echovalue.stripe_event_record` notifies.
pub const CHANNEL: &str = "echovalue_stripe";

const APPLY_ONE: &str = "select event_id, state, credits from echovalue.stripe_event_apply()";

/// Runs until `stop` turns true; a pass in progress finishes its current event first.
pub async fn run(pool: Pool, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = wake.notified() => {}
            _ = stop.changed() => return,
        }
        match apply_pending(&pool, &stop).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "Stripe events decided"),
            // Left pending; the next wake-up (at the latest the poll timer) retries, on a
            // fresh connection if this one broke (the pool drops closed ones).
            Err(e) => tracing::warn!(error = %e, "applying Stripe events failed"),
        }
    }
}

/// Decides pending events one by one until none is left; returns how many it decided.
async fn apply_pending(pool: &Pool, stop: &watch::Receiver<bool>) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(APPLY_ONE).await?;
    let mut decided = 0;
    while !*stop.borrow() {
        let Some(row) = client.query_opt(&statement, &[]).await? else {
            break;
        };
        decided += 1;
        let event: &str = row.try_get("event_id")?;
        let state: &str = row.try_get("state")?;
        let credits: Option<i64> = row.try_get("credits")?;
        if state == "applied" {
            tracing::info!(event, credits, "Stripe event applied");
        } else {
            // Kept in echovalue.stripe_events_unapplied for the operator (or ignored).
            tracing::warn!(event, state, "Stripe event not applied");
        }
    }
    Ok(decided)
}
