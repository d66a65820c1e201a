//! The `echovalue-mailhook` binary: read the configuration, run the workers until SIGTERM or
//! SIGINT.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use echovalue_mailhook::{run, Config};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// Longest wait at exit for blocking work still running (a webhook host's DNS lookup runs on
/// the blocking pool and cannot be cancelled; its delivery is retried after its lease).
const EXIT_WAIT: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve());
    runtime.shutdown_timeout(EXIT_WAIT);
    result
}

async fn serve() -> anyhow::Result<()> {
    let config = Config::parse();
    if config.print_config {
        print!("{config}");
        return Ok(());
    }
    let filter = EnvFilter::try_new(&config.log).context("invalid ECHOVALUE_LOG filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    run(config, async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
    .await
}
