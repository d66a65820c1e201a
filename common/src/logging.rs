//! Logs of a binary: tracing events to stderr through the `ECHOVALUE_LOG` filter, coloured
//! only on a terminal so journald and log files stay plain.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

/// Always off, whatever `ECHOVALUE_LOG` says: tokio-postgres logs every statement's parameter
/// values at debug level under this target, and those are tokens, stored values and webhook
/// header secrets.
const NEVER: &str = "tokio_postgres::query=off";

/// `spec` (tracing-subscriber syntax, e.g. `info` or `warn,echovalue_proxy=debug`) as a
/// filter, with [`NEVER`] last so it overrides the same target in `spec`, or an error naming
/// the setting.
pub fn filter(spec: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(spec).context("invalid ECHOVALUE_LOG filter")?;
    EnvFilter::try_new(format!("{spec},{NEVER}")).context("invalid ECHOVALUE_LOG filter")
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

    /// What `spec` lets through of a debug event with this target (a scoped subscriber,
    /// writing to a buffer).
    fn shows(spec: &str, target_is_query: bool) -> bool {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::fmt::MakeWriter;
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Buf {
            type Writer = Buf;
            fn make_writer(&'a self) -> Buf {
                self.clone()
            }
        }
        let buf = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter(spec).unwrap())
            .with_writer(buf.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            if target_is_query {
                tracing::debug!(target: "tokio_postgres::query", "parameters: ev_tok_sk_live_secret");
            } else {
                tracing::debug!(target: "echovalue_proxy::handler", "a request");
            }
        });
        let out = buf.0.lock().unwrap().clone();
        !out.is_empty()
    }

    #[test]
    fn statement_parameters_are_never_logged() {
        assert!(shows("debug", false), "debug shows debug events");
        for spec in [
            "debug",
            "trace",
            "tokio_postgres=trace",
            "debug,tokio_postgres::query=trace",
        ] {
            assert!(
                !shows(spec, true),
                "{spec} must not show statement parameters"
            );
        }
    }

    #[test]
    fn installs_once() {
        assert!(init("info").is_ok());
        tracing::info!("logging from a unit test");
        assert!(init("info").is_err());
    }
}
