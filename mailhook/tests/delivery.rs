//! Webhook delivery end to end: the real `echovalue-mailhook` binary receives mail from real
//! SMTP clients (swaks, Python smtplib) and POSTs it to a real HTTP receiver on loopback. The
//! tests check what arrives (the seed 002 payload, the Standard Webhooks signature verified
//! here with the wallet's secret), what the queue and the logs then hold, retries (time travel
//! in SQL instead of sleeping), the address checks at delivery, a kill -9 mid-delivery, and the
//! signed attachment download on the proxy.
//!
//! The tests run one at a time (`SERIAL`): every dispatcher claims any due delivery, and the
//! address-check test needs the only running dispatcher to be a strict one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use echovalue_tests::{env, Admin, MailhookProcess, TestProxy, Wallet};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The mailhook (SMTP receiver and dispatcher), scanning every second.
struct Mailhook;

impl Mailhook {
    /// A dispatcher allowed to deliver to the test's plain-HTTP loopback receiver.
    async fn start() -> Result<MailhookProcess> {
        Self::start_with(true, &[]).await
    }

    /// `insecure` is the one switch, `echovalue.webhook_allow_insecure`, set for the mailhook's
    /// role: its sessions read it when they connect (delivery tests run one at a time).
    async fn start_with(insecure: bool, extra_env: &[(&str, &str)]) -> Result<MailhookProcess> {
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
struct Got {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

#[derive(Default)]
struct ReceiverState {
    got: Vec<Got>,
    /// Statuses to answer, in order; 200 once empty.
    script: VecDeque<u16>,
    delay: Duration,
}

/// A plain HTTP/1.1 receiver on loopback: reads each request whole, records it, answers
/// with the next scripted status and closes the connection.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Result<Self> {
        Self::start_on(
            TcpListener::bind("127.0.0.1:0").await?,
            script,
            Duration::ZERO,
        )
    }

    fn start_on(listener: TcpListener, script: &[u16], delay: Duration) -> Result<Self> {
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

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn got(&self) -> Vec<Got> {
        self.state.lock().map(|s| s.got.clone()).unwrap_or_default()
    }

    fn stop(&self) {
        self.task.abort();
    }
}

async fn serve(mut conn: TcpStream, state: Arc<Mutex<ReceiverState>>) -> Result<()> {
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
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
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
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
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
async fn exclusive(admin: &Admin) -> Result<tokio::sync::MutexGuard<'static, ()>> {
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
async fn wallet_with_webhook(admin: &Admin, url: &str) -> Result<(Wallet, String, String)> {
    let w = admin.new_wallet().await?;
    let row = admin
        .client()
        .query_one(
            "select body::json->>'email' from echovalue.webhook_get(token => $1)",
            &[&w.token],
        )
        .await?;
    let email: String = row.get(0);
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
async fn deliveries(
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
async fn make_due(admin: &Admin, w: &Wallet) -> Result<()> {
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
async fn delivery_logs(admin: &Admin, w: &Wallet) -> Result<Vec<(i32, Option<String>, i32)>> {
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
fn swaks(hook: &MailhookProcess, to: &str, args: &[&str]) -> Result<()> {
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
fn smtplib_bulk(hook: &MailhookProcess, to: &str, n: usize, tag: &str) -> Result<()> {
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
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("HOST", "127.0.0.1")
        .env("PORT", hook.addr.port().to_string())
        .env("TO", to)
        .env("N", n.to_string())
        .env("TAG", tag)
        .output()
        .context("cannot run python3")?;
    if !out.status.success() {
        bail!("smtplib failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Verifies a Standard Webhooks signature the way a receiver would.
fn verify_signature(secret: &str, got: &Got) -> Result<()> {
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

#[tokio::test]
async fn delivers_the_seed_payload_signed_with_attachments() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    let proxy = TestProxy::start().await?;
    let receiver = Receiver::start(&[]).await?;
    let (w, email, secret) = wallet_with_webhook(&admin, &receiver.url("/hook?src=ev")).await?;
    let hook = Mailhook::start().await?;
    let dir = std::env::temp_dir().join(format!("ev-delivery-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pdf = dir.join("report.pdf");
    let content = b"%PDF-1.4 not really a pdf \x00\x01\x02 but binary".to_vec();
    std::fs::write(&pdf, &content)?;
    swaks(
        &hook,
        &email,
        &[
            "--header",
            "Subject: Alert: Server down",
            "--header",
            "Message-ID: <alert-1@example.com>",
            "--body",
            "Server #3 is not responding",
            "--attach-type",
            "application/pdf",
            "--attach",
            &format!("@{}", pdf.display()),
        ],
    )?;

    let got = wait_for("the webhook", Duration::from_secs(20), || async {
        Ok(receiver.got().first().cloned())
    })
    .await?;
    verify_signature(&secret, &got)?;
    assert!(
        got.header("webhook-id").starts_with("msg_"),
        "{:?}",
        got.headers
    );
    assert_eq!(got.header("authorization"), "Bearer user-secret");
    assert_eq!(got.header("content-type"), "application/json");

    let p = got.json();
    assert_eq!(p["externalMessageId"], "alert-1@example.com");
    assert!(
        p["receivedAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() >= 20),
        "{p}"
    );
    assert_eq!(p["from"]["email"], "john@gmail.com");
    assert_eq!(p["from"]["name"], "John Snow");
    assert_eq!(p["to"]["hash"], w.hash.as_str());
    assert_eq!(p["subject"], "Alert: Server down");
    assert!(
        p["text"]
            .as_str()
            .is_some_and(|t| t.contains("Server #3 is not responding")),
        "{p}"
    );
    assert!(p.get("html").is_some());
    assert_eq!(p["headers"]["Subject"], "Alert: Server down");
    let att = &p["attachments"][0];
    assert_eq!(att["filename"], "report.pdf");
    assert_eq!(att["contentType"], "application/pdf");
    assert_eq!(att["size"], content.len());
    assert!(att["downloadUrlExpiresAt"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let keys: Vec<&str> = p
        .as_object()
        .context("object")?
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "externalMessageId",
        "receivedAt",
        "from",
        "to",
        "subject",
        "text",
        "html",
        "headers",
        "attachments",
    ];
    want.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, want);

    // delivered, logged free of charge with the status
    let d = wait_for("delivered state", Duration::from_secs(10), || async {
        let d = deliveries(&admin, &w).await?;
        Ok((d.first().map(|x| x.0.as_str()) == Some("delivered")).then_some(d))
    })
    .await?;
    assert_eq!(d[0].1, 1);
    assert_eq!(d[0].2, Some(200));
    assert_eq!(delivery_logs(&admin, &w).await?, vec![(200, None, 0)]);

    // the download URL works on the proxy: right bytes, type, disposition
    let url = att["downloadUrl"].as_str().context("downloadUrl")?;
    let path = &url[url.find("/attachments/").context("path in downloadUrl")?..];
    let r = proxy.api().get(path, None).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, content);
    assert_eq!(r.header("content-type"), Some("application/pdf"));
    assert!(r
        .header("content-disposition")
        .is_some_and(|v| v.starts_with("attachment; filename=\"report.pdf\"")));
    // tampered: signature, id or expiry changed
    let sig_at = path.find("sig=").context("sig")? + 4;
    let flipped = if &path[sig_at..sig_at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    let tampered = format!("{}{flipped}{}", &path[..sig_at], &path[sig_at + 1..]);
    assert_eq!(proxy.api().get(&tampered, None).await?.status, 403);
    let later = path.replacen("expires=", "expires=9", 1);
    assert_eq!(proxy.api().get(&later, None).await?.status, 403);
    assert_eq!(
        proxy
            .api()
            .get(path.split('?').next().unwrap_or(path), None)
            .await?
            .status,
        403
    );
    // expired: correctly signed by the installation key, but in the past
    let id: i64 = path["/attachments/".len()..path.find('?').context("query")?].parse()?;
    let past = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64
        - 10;
    let sig: String = admin
        .client()
        .query_one("select echovalue._attachment_sig($1, $2)", &[&id, &past])
        .await?
        .get(0);
    let expired = format!("/attachments/{id}?expires={past}&sig={sig}");
    assert_eq!(proxy.api().get(&expired, None).await?.status, 403);
    // purged: a valid URL for a row that is gone
    admin
        .client()
        .execute("delete from echovalue.attachments where id = $1", &[&id])
        .await?;
    assert_eq!(proxy.api().get(path, None).await?.status, 404);
    receiver.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn retries_500_then_delivers_with_the_same_id() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    let receiver = Receiver::start(&[500, 503]).await?;
    let (w, email, secret) = wallet_with_webhook(&admin, &receiver.url("/flaky")).await?;
    let hook = Mailhook::start().await?;
    swaks(&hook, &email, &["--header", "Subject: flaky"])?;
    for n in 1..=2 {
        wait_for("a failed attempt", Duration::from_secs(20), || async {
            let d = deliveries(&admin, &w).await?;
            Ok(d.first().filter(|x| x.1 == n && x.2.is_some()).cloned())
        })
        .await?;
        let d = deliveries(&admin, &w).await?;
        assert_eq!(d[0].0, "pending", "retried, not failed: {d:?}");
        make_due(&admin, &w).await?;
    }
    wait_for("delivery", Duration::from_secs(20), || async {
        let d = deliveries(&admin, &w).await?;
        Ok((d[0].0 == "delivered").then_some(()))
    })
    .await?;
    let got = receiver.got();
    assert_eq!(got.len(), 3);
    let ids: HashSet<&str> = got.iter().map(|g| g.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "webhook-id stable across retries: {ids:?}");
    for g in &got {
        verify_signature(&secret, g)?;
    }
    let logs = delivery_logs(&admin, &w).await?;
    assert_eq!(
        logs.iter().map(|l| l.0).collect::<Vec<_>>(),
        vec![500, 503, 200]
    );
    assert!(
        logs[0].1.as_deref().is_some_and(|e| e.contains("500")),
        "{logs:?}"
    );
    assert!(logs.iter().all(|l| l.2 == 0));
    receiver.stop();
    Ok(())
}

#[tokio::test]
async fn receiver_down_then_up_is_retried_and_delivered() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    // a port nothing listens on, for now
    let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}/later");
    let (w, email, _) = wallet_with_webhook(&admin, &url).await?;
    let hook = Mailhook::start().await?;
    swaks(&hook, &email, &["--header", "Subject: later"])?;
    let d = wait_for("a refused connection", Duration::from_secs(20), || async {
        let d = deliveries(&admin, &w).await?;
        Ok(d.first().filter(|x| x.1 >= 1 && x.3.is_some()).cloned())
    })
    .await?;
    assert_eq!(d.0, "pending");
    assert_eq!(d.2, None, "no HTTP status without a response");
    assert!(
        d.3.as_deref().is_some_and(|e| e.contains("connection")),
        "{d:?}"
    );
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let receiver = Receiver::start_on(listener, &[], Duration::ZERO)?;
    make_due(&admin, &w).await?;
    wait_for("delivery", Duration::from_secs(20), || async {
        Ok((deliveries(&admin, &w).await?[0].0 == "delivered").then_some(()))
    })
    .await?;
    assert_eq!(receiver.got().len(), 1);
    let logs = delivery_logs(&admin, &w).await?;
    assert_eq!(logs.first().map(|l| l.0), Some(0), "{logs:?}");
    assert_eq!(logs.last().map(|l| l.0), Some(200), "{logs:?}");
    receiver.stop();
    Ok(())
}

#[tokio::test]
async fn client_error_ends_the_delivery() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    let receiver = Receiver::start(&[400]).await?;
    let (w, email, _) = wallet_with_webhook(&admin, &receiver.url("/strict")).await?;
    let hook = Mailhook::start().await?;
    swaks(&hook, &email, &["--header", "Subject: refused"])?;
    let d = wait_for("failure", Duration::from_secs(20), || async {
        let d = deliveries(&admin, &w).await?;
        Ok(d.first().filter(|x| x.0 == "failed").cloned())
    })
    .await?;
    assert_eq!((d.1, d.2), (1, Some(400)));
    // nothing is due any more: a scan sends nothing
    make_due(&admin, &w).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.got().len(), 1);
    assert_eq!(delivery_logs(&admin, &w).await?.len(), 1);
    receiver.stop();
    Ok(())
}

#[tokio::test]
async fn non_public_targets_are_refused_at_delivery() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    let receiver = Receiver::start(&[]).await?;
    let port = receiver.addr.port();
    // a name that resolves to loopback, and literal loopback addresses, stored behind the
    // API's back: the strict dispatcher (the production default) must not connect
    let mut wallets = Vec::new();
    for url in [
        format!("https://localhost:{port}/x"),
        format!("https://127.0.0.1:{port}/x"),
        format!("https://[::ffff:127.0.0.1]:{port}/x"),
        format!("http://127.0.0.1:{port}/x"),
    ] {
        let (w, email, _) = wallet_with_webhook(&admin, &url).await?;
        wallets.push((w, email, url));
    }
    let hook = Mailhook::start_with(false, &[]).await?;
    for (_, email, _) in &wallets {
        swaks(&hook, email, &["--header", "Subject: ssrf"])?;
    }
    for (w, _, url) in &wallets {
        let d = wait_for("refusal", Duration::from_secs(20), || async {
            let d = deliveries(&admin, w).await?;
            Ok(d.first().filter(|x| x.0 == "failed").cloned())
        })
        .await
        .with_context(|| url.clone())?;
        assert_eq!(d.1, 1, "{url}: not retried");
        let err = d.3.unwrap_or_default();
        assert!(
            err.starts_with("the webhook URL is refused: url ")
                && (err.contains("public") || err.contains("https")),
            "{url}: {err}"
        );
    }
    assert!(
        receiver.got().is_empty(),
        "nothing reached the loopback receiver"
    );
    receiver.stop();
    Ok(())
}

#[tokio::test]
async fn kill9_mid_delivery_loses_nothing() -> Result<()> {
    const N: usize = 200;
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    let receiver = Receiver::start_on(
        TcpListener::bind("127.0.0.1:0").await?,
        &[],
        Duration::from_millis(100),
    )?;
    let (w, email, secret) = wallet_with_webhook(&admin, &receiver.url("/bulk")).await?;
    admin.set_balance(&w, 1000).await?;
    let mut hook = Mailhook::start_with(true, &[("ECHOVALUE_DELIVERY_CONCURRENCY", "8")]).await?;
    let tag = format!("{}", std::process::id());
    smtplib_bulk(&hook, &email, N, &tag)?;
    wait_for("some deliveries", Duration::from_secs(30), || async {
        Ok((receiver.got().len() >= 40).then_some(()))
    })
    .await?;
    hook.kill9();
    let before = receiver.got().len();
    assert!(
        before < N,
        "the kill came too late to test anything ({before})"
    );
    // leased rows of the dead worker are due at once instead of after the lease
    let _restarted = Mailhook::start().await?;
    make_due(&admin, &w).await?;
    wait_for("all delivered", Duration::from_secs(60), || async {
        let d = deliveries(&admin, &w).await?;
        Ok((d.len() == N && d.iter().all(|x| x.0 == "delivered")).then_some(()))
    })
    .await?;
    let got = receiver.got();
    let mut by_id: HashMap<String, HashSet<String>> = HashMap::new();
    for g in &got {
        verify_signature(&secret, g)?;
        let p = g.json();
        by_id
            .entry(g.header("webhook-id").to_owned())
            .or_default()
            .insert(p["externalMessageId"].as_str().unwrap_or("").to_owned());
    }
    let messages: HashSet<&String> = by_id.values().flatten().collect();
    assert_eq!(messages.len(), N, "every message arrived");
    assert_eq!(by_id.len(), N, "one webhook-id per message");
    assert!(
        by_id.values().all(|m| m.len() == 1),
        "a duplicate always carries its message's id"
    );
    eprintln!(
        "kill -9 after {before} receipts: {} requests for {N} messages",
        got.len()
    );
    receiver.stop();
    Ok(())
}

#[tokio::test]
async fn a_backlog_drains_without_waiting_for_the_poll() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    let receiver = Receiver::start(&[]).await?;
    let (gone, gone_email, _) = wallet_with_webhook(&admin, &receiver.url("/gone")).await?;
    let (w, email, _) = wallet_with_webhook(&admin, &receiver.url("/backlog")).await?;
    // queued while no dispatcher runs: first mail of a wallet that then deletes its webhook,
    // then more mail than the dispatcher has slots
    let smtp_only = Mailhook::start_with(false, &[("ECHOVALUE_DELIVERY_CONCURRENCY", "0")]).await?;
    let tag = format!("backlog-{}", std::process::id());
    smtplib_bulk(&smtp_only, &gone_email, 10, &format!("{tag}-gone"))?;
    smtplib_bulk(&smtp_only, &email, 30, &tag)?;
    drop(smtp_only);
    admin
        .client()
        .execute(
            "delete from echovalue.webhooks where wallet_id = (select id from echovalue.wallets where hash = $1)",
            &[&gone.hash],
        )
        .await?;
    // one scan at start, then only notifications: none come, so the first scan must drain it all
    let _dispatcher = Mailhook::start_with(
        true,
        &[
            ("ECHOVALUE_DELIVERY_CONCURRENCY", "4"),
            ("ECHOVALUE_MAILHOOK_POLL_SECS", "3600"),
        ],
    )
    .await?;
    wait_for("the backlog", Duration::from_secs(30), || async {
        let d = deliveries(&admin, &w).await?;
        Ok(d.iter().all(|x| x.0 == "delivered").then_some(()))
    })
    .await?;
    assert_eq!(receiver.got().len(), 30);
    let d = deliveries(&admin, &gone).await?;
    assert_eq!(d.len(), 10);
    assert!(
        d.iter()
            .all(|x| x.0 == "failed" && x.3.as_deref() == Some("no webhook configured")),
        "{d:?}"
    );
    receiver.stop();
    Ok(())
}
