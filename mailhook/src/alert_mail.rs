//! Alert emails (SPEC §14): the extension queues one per alert for a wallet with an alert
//! address (`alert_email_claim` hands out the recipient, subject and text it wrote); this
//! worker sends each through the operator's SMTP relay with lettre and records every attempt
//! with `delivery_record`, which logs it and plans the retry. The retry policy is the webhook
//! deliveries' (`delivery::retry`): a relay's 4xx and a failed connection are tried again, a
//! 5xx is final. At start it tells the extension whether there is a relay and its From
//! address (`relay_register`): without one, wallets cannot set an alert email.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::Pool;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::{watch, Notify};

use crate::delivery::dispatch::Attempt;
use crate::delivery::retry::{decide, Response};

/// The channel the extension NOTIFYs for each queued alert email.
pub const CHANNEL: &str = "echovalue_alert_email";

const REGISTER_SQL: &str = "select echovalue.relay_register(from_address => $1)";
const CLAIM_SQL: &str = "select delivery_id, attempt, message_id, recipient, subject, body \
     from echovalue.alert_email_claim(batch => $1, lease_seconds => $2)";
/// Emails claimed at once: alerts are rare, and they are sent one after the other.
const BATCH: i32 = 10;

/// How the connection to the relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTls {
    /// Plain SMTP upgraded with STARTTLS, which the relay must offer.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// No TLS: for a relay on this machine or a trusted network only.
    None,
}

/// The operator's relay (`ECHOVALUE_RELAY_*`).
#[derive(Clone, PartialEq, Eq)]
pub struct Relay {
    pub host: String,
    pub port: u16,
    pub tls: RelayTls,
    /// User and password, when the relay wants them.
    pub credentials: Option<(String, String)>,
    pub from: String,
    pub timeout: Duration,
}

/// Never prints the password.
impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Relay {
    fn transport(&self) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
        let tls = match self.tls {
            RelayTls::None => Tls::None,
            RelayTls::StartTls => Tls::Required(TlsParameters::new(self.host.clone())?),
            RelayTls::Implicit => Tls::Wrapper(TlsParameters::new(self.host.clone())?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(tls)
            .timeout(Some(self.timeout));
        if let Some((user, password)) = &self.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(builder.build())
    }
}

/// Tells the extension which relay this worker sends through (None: none).
async fn register(pool: &Pool, relay: Option<&Relay>) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let from = relay.map(|r| r.from.as_str());
    client
        .execute(REGISTER_SQL, &[&from])
        .await
        .context("registering the SMTP relay")?;
    Ok(())
}

/// One claimed alert email.
struct Job {
    delivery_id: i64,
    attempt: i32,
    message_id: String,
    recipient: String,
    subject: String,
    body: String,
}

/// Registers `relay` (trying again until the database answers), then, when there is one,
/// sends alert emails until `stop` turns true, woken by `wake` or every `poll`.
pub async fn run(
    relay: Option<Relay>,
    pool: Pool,
    wake: Arc<Notify>,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let transport = relay.as_ref().map(Relay::transport).transpose()?;
    while let Err(e) = register(&pool, relay.as_ref()).await {
        tracing::warn!(error = %format!("{e:#}"), "registering the SMTP relay failed; trying again");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
    let (Some(relay), Some(transport)) = (relay, transport) else {
        return Ok(());
    };
    let lease = i32::try_from(relay.timeout.as_secs() + 30).unwrap_or(i32::MAX);
    tracing::info!(relay = ?relay, "alert email sender running");
    while !*stop.borrow() {
        let jobs = match claim(&pool, lease).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "claiming alert emails failed");
                Vec::new()
            }
        };
        let more = !jobs.is_empty();
        for job in jobs {
            send(&pool, &transport, &relay, job).await;
        }
        if more {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
    Ok(())
}

async fn claim(pool: &Pool, lease: i32) -> anyhow::Result<Vec<Job>> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(CLAIM_SQL).await?;
    let rows = client.query(&stmt, &[&BATCH, &lease]).await?;
    rows.iter()
        .map(|r| {
            Ok(Job {
                delivery_id: r.try_get("delivery_id")?,
                attempt: r.try_get("attempt")?,
                message_id: r.try_get("message_id")?,
                recipient: r.try_get("recipient")?,
                subject: r.try_get("subject")?,
                body: r.try_get("body")?,
            })
        })
        .collect()
}

/// The email of a job; an address lettre cannot read is a final failure.
fn message(relay: &Relay, job: &Job) -> anyhow::Result<Message> {
    let domain = relay.from.rsplit('@').next().unwrap_or("localhost");
    Ok(Message::builder()
        .from(relay.from.parse().context("the relay's From address")?)
        .to(job.recipient.parse().context("the alert address")?)
        .subject(&job.subject)
        .message_id(Some(format!("<{}@{domain}>", job.message_id)))
        .header(ContentType::TEXT_PLAIN)
        .body(job.body.clone())?)
}

/// One attempt, recorded (a failure to record leaves the email leased: it is sent again after
/// the lease, with the same Message-ID).
async fn send(
    pool: &Pool,
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    relay: &Relay,
    job: Job,
) {
    let (response, status, error) = match message(relay, &job) {
        Err(e) => (Response::Refused, None, Some(format!("{e:#}"))),
        Ok(email) => match transport.send(email).await {
            Ok(reply) => (
                Response::Status {
                    code: 250,
                    retry_after: None,
                },
                Some(i32::from(u16::from(reply.code()))),
                None,
            ),
            Err(e) => {
                let code = e.status().map(|c| i32::from(u16::from(c)));
                // a 5xx reply will not change; a 4xx or no reply may
                let response = if e.is_permanent() {
                    Response::Refused
                } else {
                    Response::Network
                };
                (response, code, Some(e.to_string()))
            }
        },
    };
    let decision = decide(job.attempt, &response, rand::random::<f64>());
    tracing::info!(
        delivery = job.delivery_id,
        attempt = job.attempt,
        status = ?status,
        outcome = decision.record_args().0,
        error = error.as_deref().unwrap_or(""),
        "alert email attempt"
    );
    let attempt = Attempt {
        delivery_id: job.delivery_id,
        attempt: job.attempt,
        decision,
        status,
        error,
    };
    if let Err(e) = attempt.record(pool).await {
        tracing::warn!(delivery = job.delivery_id, error = %format!("{e:#}"), "recording an alert email attempt failed; it will be tried again after its lease");
    }
}
