//! The dispatcher's wake-up: its own (non-pooled) connection that LISTENs on
//! `echovalue_mail` and pokes a [`Notify`] for every notification. It reconnects with capped
//! backoff and pokes once after each (re)connect, so whatever was queued while it was away is
//! scanned. Notifications are only wake-ups: the queue in Postgres is the truth, and the
//! dispatcher also scans on a timer. (Kept apart so it can fold into a shared LISTEN module.)

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_postgres::{AsyncMessage, NoTls};

/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs until `stop` turns true.
pub async fn run(
    database_url: String,
    channel: &'static str,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    while !*stop.borrow() {
        match listen_once(&database_url, channel, &wake, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "LISTEN connection lost");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: Ok when stopped, Err when the connection failed.
async fn listen_once(
    database_url: &str,
    channel: &str,
    wake: &Notify,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut config: tokio_postgres::Config = database_url.parse()?;
    config.application_name("echovalue-mailhook-listen");
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if tx.send(()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    tracing::info!(channel, "listening for notifications");
    wake.notify_one(); // re-scan: anything queued while this connection was down
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(()) => wake.notify_one(),
                None => {
                    return match driver.await {
                        Ok(Err(e)) => Err(e.into()),
                        _ => Err(anyhow::anyhow!("the LISTEN connection closed")),
                    };
                }
            },
            _ = stop.changed() => {
                driver.abort();
                return Ok(());
            }
        }
    }
}
