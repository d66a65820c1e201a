//! `echovalue-mailhook`: the Mail2Webhook worker.
//!
//! The SMTP receiver: `smtp_command.rs` is the pure command parser, `smtp.rs` the sessions,
//! `message.rs` turns raw mail into the payload fields with mail-parser, `store.rs` makes the
//! two SQL calls (recipient check, receive). The webhook dispatcher: `delivery/`. `config.rs`
//! holds every setting. SIGTERM or SIGINT stops accepting and claiming, lets open sessions and
//! in-flight deliveries finish (bounded), and exits 0.

mod config;
mod delivery;
mod message;
mod smtp;
mod smtp_command;
mod store;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = config::Config::parse();
    if config.print_config {
        print!("{config}");
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let store = store::Store::new(
        &config.database_url,
        config.db_pool_size,
        Duration::from_secs(config.db_timeout_secs.max(1)),
    )?;
    let listener = tokio::net::TcpListener::bind(config.smtp_listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "smtp receiver listening");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let dispatcher = match config.delivery() {
        Some(settings) => {
            let pool = store::pool(
                &config.database_url,
                settings.concurrency.min(16),
                Duration::from_secs(config.db_timeout_secs.max(1)),
            )?;
            let wake = Arc::new(tokio::sync::Notify::new());
            tokio::spawn(delivery::listen::run(
                config.database_url.clone(),
                "echovalue_mail",
                wake.clone(),
                stopped.clone(),
            ));
            Some(tokio::spawn(delivery::dispatch::run(
                settings,
                pool,
                wake,
                stopped.clone(),
            )))
        }
        None => {
            tracing::warn!("ECHOVALUE_DELIVERY_CONCURRENCY=0: received mail stays queued");
            None
        }
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
            _ = int.recv() => tracing::info!("SIGINT received, stopping"),
        }
        let _ = stop.send(true);
    });
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    smtp::serve(listener, config.smtp_limits(), store, stopped, grace).await;
    if let Some(dispatcher) = dispatcher {
        dispatcher.await??;
    }
    Ok(())
}
