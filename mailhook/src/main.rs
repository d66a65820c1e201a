//! `echovalue-mailhook`: the Mail2Webhook worker, a placeholder for now.
//!
//! Email reception (SMTP), webhook delivery and recharge processing are not implemented yet
//! (a later issue). Until then this binary exists so the service layout, `.ci/serve` and
//! deployments already have their final shape: it reads its configuration (`config.rs`:
//! flags and env, `--print-config`), logs that email is not available, and waits for
//! SIGTERM or SIGINT, then exits 0.

mod config;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[tokio::main(flavor = "current_thread")]
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

    tracing::warn!(
        "email (Mail2Webhook) is not implemented yet; this worker only waits for a stop signal"
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, exiting"),
        _ = int.recv() => tracing::info!("SIGINT received, exiting"),
    }
    Ok(())
}
