//! What the delivery tests share: a real HTTP receiver on loopback that records every request
//! and answers as told, the mailhook process with the delivery switch set for its role, SMTP
//! clients (swaks, Python smtplib), and the SQL look-ups the tests assert on.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use echovalue_tests::{env, Admin, MailhookProcess, Wallet};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The mailhook (SMTP receiver and dispatcher), scanning every second.
pub struct Mailhook;

impl Mailhook {
    /// A dispatcher allowed to deliver to the test's plain-HTTP loopback receiver.
    pub async fn start() -> Result<MailhookProcess> {
        Self::start_with(true, &[]).await
    }

    /// `insecure` is the one switch, `echovalue.webhook_allow_insecure`, set for the mailhook's
    /// role: its sessions read it when they connect (delivery tests run one at a time).
    pub async fn start_with(insecure: bool, extra_env: &[(&str, &str)]) -> Result<MailhookProcess> {
        let admin = Admin::connect().await?;
        let value = if insecure { "on" } else { "off" };
        admin
            .client()
            .batch_execute(&format!(
                "alter role echovalue_mailhook set echovalue.webhook_allow_insecure = {value}"
            ))
            .await?;
        let mut envs = vec![
            ("ECHOVALUE_MAILHOOK_POLL_SECS", "1"),
            ("ECHOVALUE_DELIVERY_CONCURRENCY", "16"),
        ];
        envs.extend_from_slice(extra_env);
        MailhookProcess::start(
            env!("CARGO_BIN_EXE_echovalue-mailhook"),
            &env::mailhook_url()?,
            &envs,
        )
        .await
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

#[derive(Default)]
pub struct ReceiverState {
    pub got: Vec<Got>,
    /// Statuses to answer, in order; 200 once empty.
    pub script: VecDeque<u16>,
    pub delay: Duration,
}

/// A plain HTTP/1.1 receiver on loopback: reads each request whole, records it, answers
/// with the next scripted status and closes the connection.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<ReceiverState>>,
    pub task: Arc<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub async fn start(script: &[u16]) -> Result<Self> {
        Self::start_on(
            TcpListener::bind("127.0.0.1:0").await?,
            script,
            Duration::ZERO,
        )
    }

    pub fn start_on(listener: TcpListener, script: &[u16], delay: Duration) -> Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(ReceiverState {
            got: Vec::new(),
            script: script.iter().copied().collect(),
            delay,
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, state).await;
                });
            }
        });
        Ok(Self {
            addr,
            state,
            task: Arc::new(task),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn got(&self) -> Vec<Got> {
        self.state.lock().map(|s| s.got.clone()).unwrap_or_default()
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

pub async fn serve(mut conn: TcpStream, state: Arc<Mutex<ReceiverState>>) -> Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before the headers ended");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // the request target, as HTTP/2 would name it
    let target = head.split(' ').nth(1).unwrap_or("").to_owned();
    headers.insert(":path".to_owned(), target);
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before the body ended");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    let (status, delay) = {
        let mut s = state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        s.got.push(Got { headers, body });
        (s.script.pop_front().unwrap_or(200), s.delay)
    };
    tokio::time::sleep(delay).await;
    let reply =
        format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    conn.write_all(reply.as_bytes()).await?;
    conn.shutdown().await?;
    Ok(())
}

/// Polls `check` every 50 ms until it returns Some, or fails after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Takes the test lock and retires deliveries other tests left pending (the SMTP tests queue
/// mail to `https://example.com/hook` and never send it): every dispatcher claims any due
/// row, and those would take its slots (and, offline, its time) from this test's own.
pub async fn exclusive(admin: &Admin) -> Result<tokio::sync::MutexGuard<'static, ()>> {
    let guard = SERIAL.lock().await;
    admin
        .client()
        .execute(
            "update echovalue.deliveries set state = 'failed', last_error = 'retired by a delivery test'
              where state = 'pending'",
            &[],
        )
        .await?;
    Ok(guard)
}

/// A wallet whose webhook is `url` with one custom header; returns it, its inbound address
/// and its signing secret. The URL is stored directly (loopback URLs are refused by the API).
pub async fn wallet_with_webhook(admin: &Admin, url: &str) -> Result<(Wallet, String, String)> {
    let w = admin.new_wallet().await?;
    let email = admin.mail_address(&w).await?;
    let row = admin
        .client()
        .query_one(
            "with w as (select id from echovalue.wallets where hash = $1),
                  h as (insert into echovalue.webhooks (wallet_id, url, headers)
                        select id, $2, '{\"Authorization\":\"Bearer user-secret\"}' from w)
             select m.secret from echovalue.mailboxes m join w on m.wallet_id = w.id",
            &[&w.hash, &url],
        )
        .await?;
    Ok((w, email, row.get(0)))
}

/// (state, attempts, last_status, last_error) of each delivery of the wallet, oldest first.
pub async fn deliveries(
    admin: &Admin,
    w: &Wallet,
) -> Result<Vec<(String, i32, Option<i32>, Option<String>)>> {
    let rows = admin
        .client()
        .query(
            "select d.state, d.attempts, d.last_status, d.last_error from echovalue.deliveries d
              where d.wallet_id = (select id from echovalue.wallets where hash = $1) order by d.id",
            &[&w.hash],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// Time travel: the wallet's pending deliveries (waiting for a retry or leased) are due now.
pub async fn make_due(admin: &Admin, w: &Wallet) -> Result<()> {
    admin
        .client()
        .execute(
            "update echovalue.deliveries set next_attempt_at = now()
              where state = 'pending' and wallet_id = (select id from echovalue.wallets where hash = $1)",
            &[&w.hash],
        )
        .await?;
    admin
        .client()
        .execute("select pg_notify('echovalue_mail', 'test')", &[])
        .await?;
    Ok(())
}

/// The wallet's webhook-delivery log entries: (status_code, error, cost), oldest first.
pub async fn delivery_logs(admin: &Admin, w: &Wallet) -> Result<Vec<(i32, Option<String>, i32)>> {
    let rows = admin
        .client()
        .query(
            "select status_code, error, cost from echovalue.logs
              where endpoint = 'webhook-delivery'
                and wallet_id = (select id from echovalue.wallets where hash = $1) order by id",
            &[&w.hash],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Sends one message with swaks; fails unless it was accepted.
pub fn swaks(hook: &MailhookProcess, to: &str, args: &[&str]) -> Result<()> {
    let out = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &hook.addr.port().to_string(),
            "--to",
            to,
        ])
        .args([
            "--from",
            "john@gmail.com",
            "--helo",
            "client.test",
            "--h-From",
            "\"John Snow\" <john@gmail.com>",
        ])
        .args(args)
        .output()
        .context("cannot run swaks (installed by .ci/setup)")?;
    if !out.status.success() {
        bail!(
            "swaks failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Sends `n` messages over one smtplib connection, Message-IDs <bulk-K-TAG@test>.
pub fn smtplib_bulk(hook: &MailhookProcess, to: &str, n: usize, tag: &str) -> Result<()> {
    let script = r#"
import os, smtplib
from email.message import EmailMessage
s = smtplib.SMTP(os.environ["HOST"], int(os.environ["PORT"]))
for k in range(int(os.environ["N"])):
    m = EmailMessage()
    m["From"] = "bulk@example.com"
    m["To"] = os.environ["TO"]
    m["Subject"] = "bulk %d" % k
    m["Message-ID"] = "<bulk-%d-%s@test>" % (k, os.environ["TAG"])
    m.set_content("message %d" % k)
    s.send_message(m)
s.quit()
"#;
    smtplib(
        hook,
        script,
        &[("TO", to), ("N", &n.to_string()), ("TAG", tag)],
    )
}

/// Runs a Python smtplib script against the mailhook (`HOST` and `PORT` in its environment,
/// with `envs`); fails with its stderr when it fails.
pub fn smtplib(hook: &MailhookProcess, script: &str, envs: &[(&str, &str)]) -> Result<()> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("HOST", "127.0.0.1")
        .env("PORT", hook.addr.port().to_string())
        .envs(envs.iter().copied())
        .output()
        .context("cannot run python3")?;
    if !out.status.success() {
        bail!("smtplib failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Verifies a Standard Webhooks signature the way a receiver would.
pub fn verify_signature(secret: &str, got: &Got) -> Result<()> {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").context("secret prefix")?)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| anyhow::anyhow!("key"))?;
    let signed = format!(
        "{}.{}.",
        got.header("webhook-id"),
        got.header("webhook-timestamp")
    );
    mac.update(signed.as_bytes());
    mac.update(&got.body);
    let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let sent: Vec<&str> = got.header("webhook-signature").split(' ').collect();
    if !sent.contains(&want.as_str()) {
        bail!("signature mismatch: sent {sent:?}");
    }
    let ts: i64 = got.header("webhook-timestamp").parse()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    if (now - ts).abs() > 300 {
        bail!("timestamp {ts} is not within 5 minutes of {now}");
    }
    Ok(())
}
