//! Wake-ups from Postgres: one dedicated, non-pooled connection LISTENs on a process's
//! channels and turns each NOTIFY into a wake-up of whoever owns the channel (the mailhook's
//! workers; the proxy's calls waiting for a webhook test).
//!
//! NOTIFY is only a hint; the tables are the truth. So every worker is also woken after each
//! (re)connect (notifications sent while the connection was down are lost) and on a poll
//! timer (one missed for any other reason is caught up). A broken connection is replaced
//! after a capped exponential backoff ([`reconnect_delay`]). The timer also checks that the
//! connection still answers, so a silently dead one is noticed within one poll interval.
//!
//! On Citus (SPEC section 18) a NOTIFY is sent on the node where its transaction runs, and an
//! API call runs on the node of its wallet: so the connection asks the extension for the other
//! nodes (`echovalue.listen_nodes()`, none on a single Postgres) and listens on each of them
//! too, with the same credentials, each with a connection and a reconnect loop of its own.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Notify};
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// What a notification wakes: called with each notification's payload, and with `None` after
/// every (re)connect and poll tick (a notification may have been missed meanwhile).
pub type Wake = Arc<dyn Fn(Option<&str>) + Send + Sync>;

/// A channel and what a notification on it wakes.
#[derive(Clone)]
pub struct Subscription {
    pub channel: &'static str,
    pub wake: Wake,
}

impl Subscription {
    /// A channel that wakes one worker. Wake-ups coalesce: many NOTIFYs while the worker is
    /// busy give it one more pass, not one per notification.
    pub fn worker(channel: &'static str, wake: Arc<Notify>) -> Self {
        Subscription {
            channel,
            wake: Arc::new(move |_| wake.notify_one()),
        }
    }
}

/// How often to poll and how long at most to wait before reconnecting.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub poll: Duration,
    pub reconnect_max: Duration,
}

/// The first reconnect waits this long; each failure in a row doubles it up to the cap.
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// Delay before reconnect attempt `failures` (0 after the first failure): 250 ms doubled per
/// further failure in a row, never above `max`. Pure, so the policy is unit-tested.
pub fn reconnect_delay(failures: u32, max: Duration) -> Duration {
    FIRST_RECONNECT_DELAY
        .saturating_mul(2u32.saturating_pow(failures))
        .min(max)
}

/// Listens until `stop` turns true (or its sender is dropped), reconnecting as needed, on the
/// node `pg` names and on every other node the extension lists (each started once, when a
/// connection of the first node first names it).
pub async fn run(
    pg: tokio_postgres::Config,
    subscriptions: Vec<Subscription>,
    timing: Timing,
    stop: watch::Receiver<bool>,
) {
    let (found, mut nodes) = mpsc::unbounded_channel::<(String, u16)>();
    let first = run_on(
        pg.clone(),
        subscriptions.clone(),
        timing,
        stop.clone(),
        Some(found),
    );
    let others = async {
        let mut started = HashSet::new();
        let mut tasks = Vec::new();
        // (ends when the first node's listener stops and drops its sender)
        while let Some((host, port)) = nodes.recv().await {
            if started.insert((host.clone(), port)) {
                tracing::info!(%host, port, "listening on another node too");
                tasks.push(tokio::spawn(run_on(
                    node_config(&pg, &host, port),
                    subscriptions.clone(),
                    timing,
                    stop.clone(),
                    None,
                )));
            }
        }
        for task in tasks {
            let _ = task.await;
        }
    };
    tokio::join!(first, others);
}

/// Asks for the other nodes and hands each to `found`. An extension without the function
/// (before 0.10.0) or a refusal means this node alone: it is only logged.
async fn discover(client: &Client, found: &mpsc::UnboundedSender<(String, u16)>) {
    let rows = match client
        .query("select host, port from echovalue.listen_nodes()", &[])
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!(error = %e, "no other nodes to listen on");
            return;
        }
    };
    for row in rows {
        let (host, port): (String, i32) = (row.get(0), row.get(1));
        if let Ok(port) = u16::try_from(port) {
            let _ = found.send((host, port));
        }
    }
}

/// `pg` with another node's host and port: the same role, password, database and settings.
/// (tokio-postgres can add hosts to a config but not replace them, so it is built anew.)
fn node_config(pg: &tokio_postgres::Config, host: &str, port: u16) -> tokio_postgres::Config {
    let mut node = tokio_postgres::Config::new();
    node.host(host).port(port);
    if let Some(user) = pg.get_user() {
        node.user(user);
    }
    if let Some(password) = pg.get_password() {
        node.password(password);
    }
    if let Some(dbname) = pg.get_dbname() {
        node.dbname(dbname);
    }
    if let Some(options) = pg.get_options() {
        node.options(options);
    }
    if let Some(name) = pg.get_application_name() {
        node.application_name(name);
    }
    if let Some(timeout) = pg.get_connect_timeout() {
        node.connect_timeout(*timeout);
    }
    node.keepalives(pg.get_keepalives())
        .keepalives_idle(pg.get_keepalives_idle());
    node
}

/// One node's listener: connects, LISTENs and reconnects until `stop`; the first node's
/// (`found`) also asks for the other nodes after each connect.
async fn run_on(
    pg: tokio_postgres::Config,
    subscriptions: Vec<Subscription>,
    timing: Timing,
    mut stop: watch::Receiver<bool>,
    found: Option<mpsc::UnboundedSender<(String, u16)>>,
) {
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        match listen_once(&pg, &subscriptions, timing, &mut stop, found.as_ref()).await {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Lost(why)) => {
                tracing::warn!(%why, "LISTEN connection lost; reconnecting");
                failures = 0;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN; retrying");
            }
        }
        let delay = reconnect_delay(failures, timing.reconnect_max);
        failures = failures.saturating_add(1);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

enum Ended {
    Stopped,
    Lost(String),
}

/// One connection's life: connect, LISTEN, wake everyone, then forward notifications and
/// poll ticks until the connection breaks or `stop` says so.
async fn listen_once(
    pg: &tokio_postgres::Config,
    subscriptions: &[Subscription],
    timing: Timing,
    stop: &mut watch::Receiver<bool>,
    found: Option<&mpsc::UnboundedSender<(String, u16)>>,
) -> Result<Ended, tokio_postgres::Error> {
    let (client, mut connection) = pg.connect(NoTls).await?;
    // The connection must be polled for the client to work; its messages come back here.
    let (tx, mut messages) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            let failed = message.is_err();
            if tx.send(message).is_err() || failed {
                break;
            }
        }
    });
    let result = serve(&client, &mut messages, subscriptions, timing, stop, found).await;
    drop(client);
    driver.abort();
    result
}

async fn serve(
    client: &Client,
    messages: &mut mpsc::UnboundedReceiver<Result<AsyncMessage, tokio_postgres::Error>>,
    subscriptions: &[Subscription],
    timing: Timing,
    stop: &mut watch::Receiver<bool>,
    found: Option<&mpsc::UnboundedSender<(String, u16)>>,
) -> Result<Ended, tokio_postgres::Error> {
    // (before LISTEN, which stays the session's last statement until the first poll tick)
    if let Some(found) = found {
        discover(client, found).await;
    }
    let listen: String = subscriptions
        .iter()
        .map(|s| format!("LISTEN {};", quote_ident(s.channel)))
        .collect();
    client.batch_execute(&listen).await?;
    tracing::info!(
        channels = ?subscriptions.iter().map(|s| s.channel).collect::<Vec<_>>(),
        "listening"
    );
    // Anything notified while we were not listening is found by this re-scan.
    wake_all(subscriptions);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + timing.poll, timing.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    for s in subscriptions.iter().filter(|s| s.channel == n.channel()) {
                        (s.wake)(Some(n.payload()));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ok(Ended::Lost(e.to_string())),
                None => return Ok(Ended::Lost("connection closed".into())),
            },
            _ = tick.tick() => {
                // A dead TCP peer may never report an error: ask, with a deadline.
                match tokio::time::timeout(timing.poll, client.simple_query("")).await {
                    Ok(Ok(_)) => wake_all(subscriptions),
                    Ok(Err(e)) => return Ok(Ended::Lost(e.to_string())),
                    Err(_) => return Ok(Ended::Lost("connection does not answer".into())),
                }
            }
            _ = stop.changed() => return Ok(Ended::Stopped),
        }
    }
}

fn wake_all(subscriptions: &[Subscription]) {
    for s in subscriptions {
        (s.wake)(None);
    }
}

/// A channel name as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_quarter_second() {
        let max = Duration::from_secs(30);
        assert_eq!(reconnect_delay(0, max), Duration::from_millis(250));
        assert_eq!(reconnect_delay(1, max), Duration::from_millis(500));
        assert_eq!(reconnect_delay(2, max), Duration::from_secs(1));
        assert_eq!(reconnect_delay(6, max), Duration::from_secs(16));
    }

    #[test]
    fn backoff_is_capped_and_never_overflows() {
        let max = Duration::from_secs(30);
        assert_eq!(reconnect_delay(7, max), max);
        for failures in [8, 31, 32, 64, 1000, u32::MAX] {
            assert_eq!(reconnect_delay(failures, max), max, "{failures}");
        }
        // A cap below the first delay wins.
        assert_eq!(
            reconnect_delay(0, Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn backoff_never_shrinks_while_failures_grow() {
        let max = Duration::from_secs(30);
        let mut last = Duration::ZERO;
        for failures in 0..100 {
            let d = reconnect_delay(failures, max);
            assert!(d >= last, "{failures}");
            last = d;
        }
    }

    #[test]
    fn another_node_keeps_the_role_database_and_settings() {
        let pg: tokio_postgres::Config =
            "postgresql://echovalue_mailhook:secret@10.0.0.1:5432/echovalue?application_name=mh&connect_timeout=3"
                .parse()
                .unwrap();
        let node = node_config(&pg, "10.0.0.2", 6432);
        assert_eq!(
            node.get_hosts(),
            &[tokio_postgres::config::Host::Tcp("10.0.0.2".into())]
        );
        assert_eq!(node.get_ports(), &[6432]);
        assert_eq!(node.get_user(), Some("echovalue_mailhook"));
        assert_eq!(node.get_password(), Some(&b"secret"[..]));
        assert_eq!(node.get_dbname(), Some("echovalue"));
        assert_eq!(node.get_application_name(), Some("mh"));
        assert_eq!(node.get_connect_timeout(), Some(&Duration::from_secs(3)));
    }

    #[test]
    fn channel_names_are_quoted() {
        assert_eq!(quote_ident("echovalue_stripe"), "\"echovalue_stripe\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
