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
const CLAIM_SQL: &str =
    "select delivery_id, attempt, message_id, recipient, subject, body, wallet_id \
     from echovalue.alert_email_claim(batch => 1, lease_seconds => $1)";

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

/// The relay's transport, made once at start (a relay that cannot be set up stops the
/// mailhook there, not later).
pub struct Sender {
    relay: Relay,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Sender {
    pub fn new(relay: Relay) -> anyhow::Result<Self> {
        let tls = match relay.tls {
            RelayTls::None => Tls::None,
            RelayTls::StartTls => Tls::Required(TlsParameters::new(relay.host.clone())?),
            RelayTls::Implicit => Tls::Wrapper(TlsParameters::new(relay.host.clone())?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&relay.host)
            .port(relay.port)
            .tls(tls)
            .timeout(Some(relay.timeout));
        if let Some((user, password)) = &relay.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            relay,
        })
    }
}

/// Tells the extension which relay this worker sends through.
async fn register(pool: &Pool, relay: &Relay) -> anyhow::Result<()> {
    let client = pool.get().await?;
    client
        .execute(REGISTER_SQL, &[&relay.from])
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
    wallet: Option<i64>,
}

/// Registers the relay (trying again until the database answers), then sends alert emails
/// one at a time until `stop` turns true, woken by `wake` or every `poll`. A mailhook without a
/// relay runs none of this and leaves the registration alone (another one may have a relay;
/// an operator removes it with `select echovalue.relay_register(null)`).
pub async fn run(
    sender: Sender,
    pool: Pool,
    wake: Arc<Notify>,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    while let Err(e) = register(&pool, &sender.relay).await {
        tracing::warn!(error = %format!("{e:#}"), "registering the SMTP relay failed; trying again");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
    // One email per claim, its lease longer than the whole send may take.
    let lease = i32::try_from(sender.relay.timeout.as_secs() + 30).unwrap_or(i32::MAX);
    tracing::info!(relay = ?sender.relay, "alert email sender running");
    while !*stop.borrow() {
        let job = match claim(&pool, lease).await {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "claiming alert emails failed");
                None
            }
        };
        if let Some(job) = job {
            send(&pool, &sender, job).await;
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

async fn claim(pool: &Pool, lease: i32) -> anyhow::Result<Option<Job>> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(CLAIM_SQL).await?;
    let Some(r) = client.query_opt(&stmt, &[&lease]).await? else {
        return Ok(None);
    };
    Ok(Some(Job {
        delivery_id: r.try_get("delivery_id")?,
        attempt: r.try_get("attempt")?,
        message_id: r.try_get("message_id")?,
        recipient: r.try_get("recipient")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        wallet: r.try_get("wallet_id")?,
    }))
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
/// the lease, with the same Message-ID). The wallet's log gets what happened in a few words;
/// the relay's own reply, which is the operator's business, goes to this process's log.
async fn send(pool: &Pool, sender: &Sender, job: Job) {
    let sent = match message(&sender.relay, &job) {
        Err(e) => Err((Response::Refused, None, format!("{e:#}"))),
        // the whole send within the timeout: lettre's applies to each step
        Ok(email) => {
            match tokio::time::timeout(sender.relay.timeout, sender.transport.send(email)).await {
                Err(_) => Err((Response::Network, None, "timed out".to_owned())),
                Ok(Ok(reply)) => Ok(i32::from(u16::from(reply.code()))),
                Ok(Err(e)) => {
                    let code = e.status().map(|c| i32::from(u16::from(c)));
                    // a 5xx reply will not change; a 4xx or no reply may
                    let response = if e.is_permanent() {
                        Response::Refused
                    } else {
                        Response::Network
                    };
                    tracing::warn!(delivery = job.delivery_id, error = %e, "the relay did not take an alert email");
                    Err((response, code, e.to_string()))
                }
            }
        }
    };
    let (response, status, error) = match sent {
        Ok(code) => (
            Response::Status {
                code: 250,
                retry_after: None,
            },
            Some(code),
            None,
        ),
        Err((response, code, detail)) => {
            let said = match (&response, code) {
                (Response::Refused, Some(c)) => format!("the relay refused the email ({c})"),
                (_, Some(c)) => format!("the relay deferred the email ({c})"),
                (Response::Refused, None) => format!("the email could not be made: {detail}"),
                (_, None) => "the relay could not be reached".to_owned(),
            };
            (response, code, Some(said))
        }
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
        wallet: job.wallet,
    };
    if let Err(e) = attempt.record(pool).await {
        tracing::warn!(delivery = job.delivery_id, error = %format!("{e:#}"), "recording an alert email attempt failed; it will be tried again after its lease");
    }
}
