//! The `echovalue-proxy` binary: read the configuration, bind, serve until SIGTERM or SIGINT.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use echovalue_proxy::{run, Config};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if config.print_config {
        print!("{config}");
        return Ok(());
    }
    let filter =
        EnvFilter::try_new(log_filter(&config.log)).context("invalid ECHOVALUE_LOG filter")?;
    // Logs go to stderr, coloured only on a terminal so journald and files stay plain.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    run(listener, config, shutdown_signal()).await
}

/// The operator's filter, with the Stripe crate's own logs off unless the filter names that
/// crate: it logs an error when its generated types cannot parse an event (which the proxy
/// then records anyway, see `stripe::verify`) and a warning when the account's API version is
/// not the one it was generated for; neither is something an operator acts on.
fn log_filter(configured: &str) -> String {
    if configured.contains("stripe_webhook") {
        configured.to_owned()
    } else {
        format!("{configured},stripe_webhook=off")
    }
}

/// Resolves on the first SIGINT or SIGTERM (what systemd and container runtimes send).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn stripe_crate_logs_are_off_unless_asked_for() {
        assert_eq!(log_filter("info"), "info,stripe_webhook=off");
        assert_eq!(log_filter("stripe_webhook=debug"), "stripe_webhook=debug");
        for f in ["info", "debug", "warn,echovalue_proxy=debug"] {
            assert!(
                tracing_subscriber::EnvFilter::try_new(log_filter(f)).is_ok(),
                "{f}"
            );
        }
    }
}
