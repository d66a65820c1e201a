//! The `echovalue-mailhook` binary: read the configuration, run the workers until SIGTERM or
//! SIGINT.

use std::time::Duration;

use clap::Parser;
use echovalue_common::{logging, shutdown};
use echovalue_mailhook::{run, Config};

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
    logging::init(&config.log)?;
    let shutdown = shutdown::on_signal()?;
    run(config, shutdown).await
}
