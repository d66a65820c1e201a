//! The `echovalue-proxy` binary: read the configuration, bind, serve until SIGTERM or SIGINT.

use anyhow::Context;
use clap::Parser;
use echovalue_common::{logging, shutdown};
use echovalue_proxy::{run, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if config.print_config {
        print!("{config}");
        return Ok(());
    }
    logging::init(&log_filter(&config.log))?;
    let shutdown = shutdown::on_signal().context("cannot listen for SIGTERM and SIGINT")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    run(listener, config, shutdown).await
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

#[cfg(test)]
mod tests {
    use super::log_filter;
    use echovalue_common::logging;

    #[test]
    fn stripe_crate_logs_are_off_unless_asked_for() {
        assert_eq!(log_filter("info"), "info,stripe_webhook=off");
        assert_eq!(log_filter("stripe_webhook=debug"), "stripe_webhook=debug");
        for f in ["info", "debug", "warn,echovalue_proxy=debug"] {
            assert!(logging::filter(&log_filter(f)).is_ok(), "{f}");
        }
    }
}
