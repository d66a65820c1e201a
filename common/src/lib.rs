//! echovalue-common: what both binaries, `echovalue-proxy` and `echovalue-mailhook`, need
//! and must do the same way, written once. No pgrx and no business rule: the extension holds
//! the rules and keeps its own copy of the token format, the one the SQL functions use.
//!
//! Layout, one concern per module: [`token`] (the token format check, so the proxy refuses a
//! mistyped token without a database round trip and the tests build tokens that pass it),
//! [`redact`] (a database URL or connection string with its password hidden, for logs and
//! `--print-config`), [`pool`] (the libpq settings and the lazily connecting deadpool-postgres
//! pool), [`listen`] (one LISTEN connection that reconnects with backoff and turns NOTIFYs into
//! wake-ups), [`logging`] (the tracing subscriber behind `ECHOVALUE_LOG`) and [`shutdown`] (the
//! SIGTERM/SIGINT future that stops a binary) and [`admission`] (connections capped in all and
//! per address, for the proxy's HTTP and the mailhook's SMTP), [`print_config`] (the
//! `--print-config` line format).

pub mod admission;
pub mod listen;
pub mod logging;
pub mod pool;
pub mod print_config;
pub mod redact;
pub mod shutdown;
pub mod token;
