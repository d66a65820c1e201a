//! `echovalue-mailhook`: the background worker of echovalue. It holds no state: all work is
//! claimed from tables in Postgres (`FOR UPDATE SKIP LOCKED`), so any number of copies may run
//! against one database.
//!
//! Layout: [`config`] (every setting, flags + `ECHOVALUE_*` env), [`listen`] (one LISTEN
//! connection that wakes the workers on NOTIFY, after each reconnect and on a poll timer;
//! reconnects with capped backoff), [`db`] (a worker's own lazily reopened connection), and
//! one module per kind of work woken by its channel: [`recharge`] (Stripe events → credits).
//! Mail2Webhook (SMTP reception, webhook delivery) joins as more workers beside it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = echovalue_mailhook::Config {
//!     database_url: "host=/tmp/ev port=55433 user=echovalue_mailhook dbname=postgres".into(),
//!     ..echovalue_mailhook::Config::default()
//! };
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let worker = tokio::spawn(echovalue_mailhook::run(config, async {
//!     let _ = stopped.await;
//! }));
//! // ... pending Stripe events get applied ...
//! let _ = stop.send(());
//! worker.await??;
//! # Ok(()) }
//! ```

pub mod config;
pub mod db;
pub mod listen;
pub mod recharge;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{watch, Notify};

pub use config::Config;

/// Runs the listener and every worker until `shutdown` resolves, then lets each finish the
/// item in hand and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut pg: tokio_postgres::Config = config
        .database_url
        .parse()
        .context("the database URL is not a valid libpq connection string or URL")?;
    if pg.get_application_name().is_none() {
        pg.application_name("echovalue-mailhook");
    }
    let (stop, stopped) = watch::channel(false);

    let recharge_wake = Arc::new(Notify::new());
    let subscriptions = vec![listen::Subscription {
        channel: recharge::CHANNEL,
        wake: recharge_wake.clone(),
    }];
    let timing = listen::Timing {
        poll: config.poll_interval(),
        reconnect_max: config.reconnect_max(),
    };
    let listener = tokio::spawn(listen::run(
        pg.clone(),
        subscriptions,
        timing,
        stopped.clone(),
    ));
    let recharge = tokio::spawn(recharge::run(pg, recharge_wake, stopped));

    shutdown.await;
    tracing::info!("stopping");
    let _ = stop.send(true);
    listener.await.context("the listener task failed")?;
    recharge.await.context("the recharge worker failed")?;
    Ok(())
}
