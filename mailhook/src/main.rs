//! `echovalue-mailhook`: the Mail2Webhook worker.
//!
//! Now: the SMTP receiver. `smtp_command.rs` is the pure command parser, `smtp.rs` the
//! sessions, `message.rs` turns raw mail into the payload fields with mail-parser, `store.rs`
//! makes the two SQL calls (recipient check, receive), `config.rs` holds every setting.
//! Webhook delivery is not built yet: received mail waits in the delivery queue in Postgres.
//! SIGTERM or SIGINT stops accepting, lets open sessions finish (bounded), and exits 0.

mod config;
mod message;
mod smtp;
mod smtp_command;
mod store;

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
    tracing::warn!("webhook delivery is not implemented yet; received mail stays queued");

    let (stop, stopped) = tokio::sync::watch::channel(false);
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
    Ok(())
}
