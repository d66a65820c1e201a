//! echovalue-proxy: the thin HTTP front of the echovalue Postgres extension. It parses a
//! request, makes one SQL call to an `echovalue.*` API function (extension/CONTRACT.md) and
//! renders the returned `echovalue.outcome` row; no business rule lives here.
//!
//! Layout, one concern per module: [`config`] (every setting, flags + `ECHOVALUE_*` env),
//! [`routes`] (the `match (method, path)` table, one line per endpoint), [`api`] (the API
//! functions of the extension, each with where its arguments come from), [`handler`] (one
//! request start to finish: route → token → arguments, reading the body if one is needed →
//! call → render), [`request`] (reading a request within its bounds), [`batch`] (group commit: calls of a busy token, or that find every slot
//! taken, commit together), [`db`] (the pool, one call, a pipelined group transaction),
//! [`outcome`] (the one outcome → response mapping and the proxy's own error replies),
//! [`awaits`] (a call that waits for the worker's answer: the webhook test, woken by NOTIFY),
//! [`client`] (client address), [`cors`], [`metrics`] (Prometheus), [`server`] (accept loop,
//! graceful stop), [`stripe`] (the `Stripe-Signature` check of the Stripe webhook), [`assets`]
//! (the OpenAPI description and the dashboard, compiled in). The
//! token format check is `echovalue_common::token`, shared with the mailhook and the tests.
//!
//! Stable API for embedding and integration tests:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let config = echovalue_proxy::Config {
//!     database_url: "host=/tmp/ev port=55433 user=echovalue_proxy dbname=postgres".into(),
//!     ..echovalue_proxy::Config::default()
//! };
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(echovalue_proxy::run(listener, config, async {
//!     let _ = stopped.await;
//! }));
//! // ... talk HTTP to `addr` ...
//! let _ = stop.send(());
//! server.await??;
//! # Ok(()) }
//! ```
//!
//! [`run`] returns once the shutdown future resolved and open connections finished (or the
//! grace period ran out). The token format check, password redaction, the pool builder and the
//! log and signal set-up are shared with the mailhook in `echovalue_common`.

pub mod api;
pub mod assets;
pub mod awaits;
pub mod batch;
pub mod client;
pub mod config;
pub mod conn;
pub mod cors;
pub mod db;
pub mod handler;
pub mod limits;
pub mod metrics;
pub mod outcome;
pub mod request;
pub mod routes;
pub mod server;
pub mod stripe;

pub use config::Config;
pub use server::run;
