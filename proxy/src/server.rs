//! The accept loop: HTTP/1.1 and HTTP/2 (auto-detected) on a bound listener, with bounded
//! request heads, connections capped and closed when idle ([`crate::conn`]), and a graceful
//! stop that lets in-flight requests finish within the grace.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;

use echovalue_common::listen;

use crate::config::Config;
use crate::conn::{Activity, Tracked};
use crate::db;
use crate::handler::{handle, State};
use echovalue_common::admission::{Admission, Permit};

// hyper asserts its read buffer is at least this big.
const MIN_HEADER_BYTES: usize = 8192;
/// How often waiting calls check again even without a notification (one may be lost while
/// the LISTEN connection is down), and the longest pause between reconnects.
const LISTEN_POLL: Duration = Duration::from_secs(2);
const LISTEN_RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How often the proxy asks whether calls may share a transaction (`echovalue.group_commit()`).
const GROUP_COMMIT_CHECK: Duration = Duration::from_secs(10);
/// How long an idle connection told to close may take to do so before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Requests in flight at once on one HTTP/2 connection.
const MAX_H2_STREAMS: u32 = 32;
/// Later than any deadline here (a day).
const FAR: Duration = Duration::from_secs(86_400);

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
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        // Requests in flight per HTTP/2 connection, as an HTTP/1 client gets one per connection
        // times a few: the connection caps then bound the calls one address can queue.
        .max_concurrent_streams(MAX_H2_STREAMS);
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
    let grouping_task = {
        let state = state.clone();
        tokio::spawn(async move { state.batcher.follow_database(GROUP_COMMIT_CHECK).await })
    };
    let admission = Admission::new(
        state.config.limits.max_connections,
        state.config.limits.max_connections_per_address,
    );
    // The proxies in front carry many clients' connections: no cap per address for them.
    let trusted = state.config.trusted();
    // Told once on shutdown: every connection then finishes its requests and closes.
    let (stop_conns, conns_stopping) = tokio::sync::watch::channel(false);
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
        let permit = match admission.admit(peer.ip(), trusted.contains(peer.ip())) {
            Ok(permit) => permit,
            Err(refused) => {
                // Closed at once: a client that hit a cap gets no slot to hold.
                state.metrics.connection_refused(refused);
                tracing::debug!(?refused, "connection refused at accept");
                continue;
            }
        };
        let activity = Activity::new();
        let service = {
            let (state, activity) = (state.clone(), activity.clone());
            service_fn(move |req| {
                let in_flight = activity.begin();
                let answer = handle(state.clone(), peer, req);
                async move {
                    // In flight until its body is sent (a slow download is not idle).
                    let reply = answer.await?;
                    Ok::<_, Infallible>(reply.map(|body| Tracked::new(body, in_flight)))
                }
            })
        };
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let limits = (
            state.config.limits.header_timeout(),
            state.config.limits.idle_timeout(),
        );
        tokio::spawn(watch(
            conn,
            activity,
            limits,
            conns_stopping.clone(),
            permit,
        ));
    }

    drop(listener);
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down; finishing in-flight requests"
    );
    let _ = stop_conns.send(true);
    tokio::select! {
        () = admission.closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; the remaining connections end with the process"),
    }
    let _ = stop_listen.send(true);
    let _ = listener_task.await;
    grouping_task.abort();
    pool.close();
    Ok(())
}

/// Serves one connection until it ends, closing it gracefully (in-flight requests finish) when
/// it has been idle too long or the server stops, and dropping it when a graceful close takes
/// longer than [`CLOSE_GRACE`] (a client that does not read its answers).
async fn watch<C>(
    conn: C,
    activity: Arc<Activity>,
    (first, idle): (Duration, Duration),
    mut stopping: tokio::sync::watch::Receiver<bool>,
    permit: Permit,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Debug,
{
    tokio::pin!(conn);
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let hard_stop = closing.unwrap_or_else(|| tokio::time::Instant::now() + FAR);
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = ?e, "connection ended with an error");
                }
                break;
            }
            () = activity.idle(first, idle), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            _ = stopping.wait_for(|stop| *stop), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                // The server's own grace bounds this one.
                closing = Some(tokio::time::Instant::now() + FAR);
            }
            () = tokio::time::sleep_until(hard_stop), if closing.is_some() => break,
        }
    }
    drop(permit);
}
