//! Logs of a binary: tracing events to stderr through the `ECHOVALUE_LOG` filter, coloured
//! only on a terminal so journald and log files stay plain.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

/// `spec` (tracing-subscriber syntax, e.g. `info` or `warn,echovalue_proxy=debug`) as a
/// filter, or an error naming the setting.
pub fn filter(spec: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(spec).context("invalid ECHOVALUE_LOG filter")
}

/// Installs the process-wide subscriber; once per process, from `main`.
pub fn init(spec: &str) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(filter(spec)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        for ok in [
            "info",
            "debug",
            "warn,echovalue_proxy=debug",
            "info,stripe_webhook=off",
        ] {
            assert!(filter(ok).is_ok(), "{ok}");
        }
        let e = filter("echovalue_proxy=loud").unwrap_err();
        assert!(e.to_string().contains("ECHOVALUE_LOG"), "{e}");
        assert!(init("echovalue_proxy=loud").is_err());
    }

    #[test]
    fn installs_once() {
        assert!(init("info").is_ok());
        tracing::info!("logging from a unit test");
        assert!(init("info").is_err());
    }
}
