//! `echovalue-mailhook`: the background worker of echovalue. It holds no state: all work is
//! claimed from tables in Postgres (`FOR UPDATE SKIP LOCKED`), so any number of copies may run
//! against one database.
//!
//! Layout: [`config`] (every setting, flags + `ECHOVALUE_*` env), the LISTEN connection of
//! `echovalue_common::listen` (it wakes the workers on NOTIFY, after each reconnect and on a
//! poll timer; reconnects with capped backoff), and one module per kind of work woken by its channel:
//! [`recharge`] (Stripe events → credits), [`delivery`] (the webhook dispatcher, woken on
//! `echovalue_mail`: it claims due deliveries, POSTs the signed payloads, every resolved
//! address checked by the extension first, and records each attempt), [`schedule`] (the
//! scheduler of scheduled webhooks, woken on `echovalue_schedule` and when the next run is
//! due) and [`alert_mail`] (alert emails through the operator's relay, woken on
//! `echovalue_alert_email`). The SMTP receiver of
//! Mail2Webhook runs beside them: [`smtp_command`] is the pure command parser, [`smtp`] the
//! sessions, [`smtp_io`] their bounded reads (a line, the DATA text) and writes, [`message`]
//! turns raw mail into the payload fields with mail-parser, and [`store`] makes its two SQL
//! calls (recipient check, receive) and builds the connection pools every part uses (with
//! `echovalue_common::pool`).
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

pub mod alert_mail;
pub mod bounds;
pub mod config;
pub mod delivery;
pub mod message;
pub mod mime_caps;
pub mod recharge;
pub mod schedule;
pub mod smtp;
pub mod smtp_command;
pub mod smtp_io;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use echovalue_common::listen::{self, Subscription};
use tokio::sync::{watch, Notify};

pub use config::Config;

/// Runs the SMTP receiver, the listener and every worker until `shutdown` resolves, then lets
/// each finish the item in hand (open SMTP sessions within the shutdown grace) and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let pg = echovalue_common::pool::pg_config(&config.database_url, store::APPLICATION_NAME)?;
    let (stop, stopped) = watch::channel(false);

    let recharge_wake = Arc::new(Notify::new());
    let mail_wake = Arc::new(Notify::new());
    let mut subscriptions = vec![Subscription::worker(
        recharge::CHANNEL,
        recharge_wake.clone(),
    )];
    let schedule_wake = Arc::new(Notify::new());
    let alert_wake = Arc::new(Notify::new());
    let delivery_settings = config.delivery();
    // Alert emails go where deliveries do, when a relay is configured.
    let sender = match (config.relay()?, &delivery_settings) {
        (Some(relay), Some(_)) => Some(alert_mail::Sender::new(relay).context("the SMTP relay")?),
        _ => None,
    };
    if sender.is_some() {
        subscriptions.push(Subscription::worker(
            alert_mail::CHANNEL,
            alert_wake.clone(),
        ));
    }
    if delivery_settings.is_some() {
        subscriptions.push(Subscription::worker(
            delivery::dispatch::CHANNEL,
            mail_wake.clone(),
        ));
        subscriptions.push(Subscription::worker(
            schedule::CHANNEL,
            schedule_wake.clone(),
        ));
    }
    let timing = listen::Timing {
        poll: config.poll_interval(),
        reconnect_max: config.reconnect_max(),
    };
    let listener = tokio::spawn(listen::run(pg, subscriptions, timing, stopped.clone()));
    // One connection: events are applied one at a time.
    let recharge_pool = store::pool(&config, 1)?;
    let recharge = tokio::spawn(recharge::run(recharge_pool, recharge_wake, stopped.clone()));
    // Scheduled runs are deliveries: planned only where they are also made.
    let scheduler = match delivery_settings {
        Some(_) => Some(tokio::spawn(schedule::run(
            store::pool(&config, 1)?,
            schedule_wake,
            config.poll_interval(),
            stopped.clone(),
        ))),
        None => None,
    };
    let alert_sender = match sender {
        Some(sender) => Some(tokio::spawn(alert_mail::run(
            sender,
            store::pool(&config, 1)?,
            alert_wake,
            config.poll_interval(),
            stopped.clone(),
        ))),
        None => None,
    };
    let dispatcher = match delivery_settings {
        Some(settings) => {
            let pool = store::pool(&config, settings.concurrency.min(16))?;
            Some(tokio::spawn(delivery::dispatch::run(
                settings,
                pool,
                mail_wake,
                stopped.clone(),
            )))
        }
        None => {
            tracing::warn!("ECHOVALUE_DELIVERY_CONCURRENCY=0: received mail stays queued");
            None
        }
    };

    let store = store::Store::new(&config)?;
    let smtp_listener = tokio::net::TcpListener::bind(config.smtp_listen)
        .await
        .with_context(|| format!("cannot listen for SMTP on {}", config.smtp_listen))?;
    tracing::info!(listen = %smtp_listener.local_addr()?, "smtp receiver listening");
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let smtp = tokio::spawn(smtp::serve(
        smtp_listener,
        config.smtp_limits(),
        store,
        stopped,
        grace,
    ));

    shutdown.await;
    tracing::info!("stopping");
    let _ = stop.send(true);
    listener.await.context("the listener task failed")?;
    recharge.await.context("the recharge worker failed")?;
    smtp.await.context("the SMTP receiver failed")?;
    if let Some(scheduler) = scheduler {
        scheduler.await.context("the scheduler failed")?;
    }
    if let Some(sender) = alert_sender {
        sender.await.context("the alert email sender failed")??;
    }
    if let Some(dispatcher) = dispatcher {
        dispatcher
            .await
            .context("the webhook dispatcher failed")??;
    }
    Ok(())
}
