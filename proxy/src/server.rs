//! The accept loop: HTTP/1.1 and HTTP/2 (auto-detected) on a bound listener, with bounded
//! request heads, and a graceful stop that lets in-flight requests finish within the grace.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use echovalue_common::listen;

use crate::config::Config;
use crate::db;
use crate::handler::{handle, State};

// hyper asserts its read buffer is at least this big.
const MIN_HEADER_BYTES: usize = 8192;
/// How often waiting calls check again even without a notification (one may be lost while
/// the LISTEN connection is down), and the longest pause between reconnects.
const LISTEN_POLL: Duration = Duration::from_secs(2);
const LISTEN_RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting and waits up to
/// `config.shutdown_grace_secs` for open connections to finish their requests.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pool = db::pool(&config)?;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(config.read_timeout_secs.max(1)))
        .max_buf_size(config.max_header_bytes.max(MIN_HEADER_BYTES));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    // One LISTEN connection wakes the calls that wait for the worker (webhook tests).
    let pg = echovalue_common::pool::pg_config(&config.database_url, "echovalue-proxy")?;
    let state = Arc::new(State::new(pool.clone(), config));
    let (stop_listen, listen_stopped) = tokio::sync::watch::channel(false);
    let timing = listen::Timing {
        poll: LISTEN_POLL,
        reconnect_max: LISTEN_RECONNECT_MAX,
    };
    let listener_task = tokio::spawn(listen::run(
        pg,
        vec![state.awaits.subscription()],
        timing,
        listen_stopped,
    ));
    let graceful = GracefulShutdown::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }

    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let service = service_fn(move |req| handle(state.clone(), peer, req));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down; finishing in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
    let _ = stop_listen.send(true);
    let _ = listener_task.await;
    pool.close();
    Ok(())
}
