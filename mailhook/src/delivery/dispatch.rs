//! The dispatcher loop: claim due deliveries (as many as there are free delivery slots, at
//! most a batch), POST each in its own task, record each outcome; claim again while claims
//! return work, then sleep until a notification, the poll timer or a freed slot. A claimed row is leased in the database, so
//! a dispatcher killed mid-POST loses nothing: the row is claimed again when the lease ends
//! (at least once; a receiver may see a message twice, always with the same `webhook-id`).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

use super::http::{Request, Sender, SqlCheck};
use super::retry::{decide, Decision, Response};
use super::sign::signature;

/// The channel `mail_receive` NOTIFYs for each queued delivery.
pub const CHANNEL: &str = "echovalue_mail";

const CLAIM_SQL: &str =
    "select delivery_id, attempt, webhook_id, url, url_error, headers, secret, payload, wallet_id \
     from echovalue.delivery_claim(batch => $1, lease_seconds => $2)";
/// (`wallet`, the claim's, routes the call to the delivery's node on Citus)
const RECORD_SQL: &str = "select echovalue.delivery_record(delivery_id => $1, attempt => $2, \
     outcome => $3, status_code => $4, error => $5, retry_seconds => $6, wallet => $7)";

/// The dispatcher's settings (see `config.rs`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrency: usize,
    pub batch: usize,
    pub poll: Duration,
    pub timeout: Duration,
    pub lease: Duration,
    pub grace: Duration,
}

/// One claimed delivery.
struct Job {
    delivery_id: i64,
    attempt: i32,
    webhook_id: String,
    url: String,
    /// Why the extension says the URL may not be called now, if it says so.
    url_error: Option<String>,
    headers: serde_json::Value,
    secret: String,
    payload: String,
    wallet: Option<i64>,
}

/// Runs until `stop` turns true, then lets in-flight deliveries finish (at most `grace`).
pub async fn run(
    settings: Settings,
    pool: Pool,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let sender = Sender::new(settings.timeout, Arc::new(SqlCheck(pool.clone())))?;
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let freed = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let mut db_backoff = Duration::from_millis(200);
    tracing::info!(
        concurrency = settings.concurrency,
        "webhook dispatcher running"
    );
    while !*stop.borrow() {
        while tasks.try_join_next().is_some() {}
        let free = slots.available_permits().min(settings.batch.max(1));
        // Claim again as long as claims return work: a short batch does not mean nothing is
        // due (other dispatchers hold rows); only an empty one does.
        let mut more = false;
        if free > 0 {
            match claim(&pool, free, settings.lease).await {
                Ok(jobs) => {
                    db_backoff = Duration::from_millis(200);
                    more = !jobs.is_empty();
                    for job in jobs {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            // cannot happen: only this loop takes slots; the lease brings it back
                            tracing::error!(
                                delivery = job.delivery_id,
                                "no free slot for a claimed delivery"
                            );
                            continue;
                        };
                        let (pool, sender, freed) = (pool.clone(), sender.clone(), freed.clone());
                        tasks.spawn(async move {
                            deliver(&pool, &sender, job).await;
                            drop(permit);
                            freed.notify_one();
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?db_backoff, "claiming deliveries failed");
                    tokio::select! {
                        _ = tokio::time::sleep(db_backoff) => {}
                        _ = stop.changed() => {}
                    }
                    db_backoff = (db_backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
        }
        if more && slots.available_permits() > 0 {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = freed.notified(), if more || free == 0 => {}
            _ = tokio::time::sleep(settings.poll) => {}
            _ = stop.changed() => {}
        }
    }
    tracing::info!(in_flight = tasks.len(), "dispatcher stopping");
    let _ = tokio::time::timeout(settings.grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Claims up to `n` due deliveries for `lease`.
async fn claim(pool: &Pool, n: usize, lease: Duration) -> anyhow::Result<Vec<Job>> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(CLAIM_SQL).await?;
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    let lease = i32::try_from(lease.as_secs()).unwrap_or(i32::MAX);
    let rows = client.query(&stmt, &[&n, &lease]).await?;
    rows.iter()
        .map(|r| {
            Ok(Job {
                delivery_id: r.try_get("delivery_id")?,
                attempt: r.try_get("attempt")?,
                webhook_id: r.try_get("webhook_id")?,
                url: r.try_get("url")?,
                url_error: r.try_get("url_error")?,
                headers: r.try_get("headers")?,
                secret: r.try_get("secret")?,
                payload: r.try_get("payload")?,
                wallet: r.try_get("wallet_id")?,
            })
        })
        .collect()
}

/// One attempt of one delivery, recorded. A failure to record leaves the row leased: it is
/// claimed again after the lease (the receiver may get it twice, with the same id).
async fn deliver(pool: &Pool, sender: &Sender, job: Job) {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let signed = match &job.url_error {
        Some(why) => Err(anyhow::anyhow!("the webhook URL is refused: {why}")),
        None => signature(
            &job.secret,
            &job.webhook_id,
            timestamp,
            job.payload.as_bytes(),
        ),
    };
    let (response, error) = match signed {
        Ok(sig) => {
            let req = Request {
                url: &job.url,
                headers: &job.headers,
                webhook_id: &job.webhook_id,
                timestamp,
                signature: &sig,
                body: &job.payload,
            };
            sender.send(&req).await
        }
        Err(e) => (Response::Refused, Some(e.to_string())),
    };
    let decision = decide(job.attempt, &response, rand::random::<f64>());
    let status = match response {
        Response::Status { code, .. } => Some(i32::from(code)),
        Response::Network | Response::Refused => None,
    };
    let outcome = decision.record_args().0;
    tracing::info!(
        delivery = job.delivery_id,
        webhook_id = %job.webhook_id,
        attempt = job.attempt,
        status = ?status,
        outcome,
        error = error.as_deref().unwrap_or(""),
        "webhook attempt"
    );
    let attempt = Attempt {
        delivery_id: job.delivery_id,
        attempt: job.attempt,
        decision,
        status,
        error,
        wallet: job.wallet,
    };
    if let Err(e) = attempt.record(pool).await {
        tracing::warn!(delivery = job.delivery_id, error = %format!("{e:#}"), "recording a delivery attempt failed; it will be retried after its lease");
    }
}

/// What one attempt of a delivery (a webhook POST, an alert email) did, for `delivery_record`.
pub struct Attempt {
    pub delivery_id: i64,
    pub attempt: i32,
    pub decision: Decision,
    /// The HTTP status or SMTP reply code; None without a response.
    pub status: Option<i32>,
    pub error: Option<String>,
    /// The delivery's wallet, as its claim gave it: a routing hint only.
    pub wallet: Option<i64>,
}

impl Attempt {
    /// Records it. On failure the delivery stays leased and is tried again after its lease
    /// (the receiver may get it twice, with the same id).
    pub async fn record(&self, pool: &Pool) -> anyhow::Result<()> {
        let (outcome, retry_secs) = self.decision.record_args();
        let client = pool.get().await?;
        let stmt = client.prepare_cached(RECORD_SQL).await?;
        client
            .execute(
                &stmt,
                &[
                    &self.delivery_id,
                    &self.attempt,
                    &outcome,
                    &self.status,
                    &self.error,
                    &retry_secs,
                    &self.wallet,
                ],
            )
            .await?;
        Ok(())
    }
}
