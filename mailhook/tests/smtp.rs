//! The SMTP receiver end to end: the real `echovalue-mailhook` binary against the real
//! database, driven by real clients (`swaks`, Python `smtplib`) and by raw SMTP over TCP for
//! the protocol edges. Each test asserts what the database then holds: the message, its
//! attachments, the charge, the log entry and the queued delivery.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use echovalue_tests::{env, Admin, MailhookProcess, Wallet};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The mailhook, receiving only: these tests check the queued delivery, not its sending.
struct Mailhook;

impl Mailhook {
    async fn start() -> Result<MailhookProcess> {
        Self::start_with(&[]).await
    }

    async fn start_with(extra_env: &[(&str, &str)]) -> Result<MailhookProcess> {
        Self::start_on(&env::mailhook_url()?, extra_env).await
    }

    async fn start_on(database_url: &str, extra_env: &[(&str, &str)]) -> Result<MailhookProcess> {
        let mut envs = vec![("ECHOVALUE_DELIVERY_CONCURRENCY", "0")];
        envs.extend_from_slice(extra_env);
        MailhookProcess::start(
            env!("CARGO_BIN_EXE_echovalue-mailhook"),
            database_url,
            &envs,
        )
        .await
    }
}

/// A wallet with a webhook, its inbound address and the admin connection.
async fn wallet_with_webhook(admin: &Admin) -> Result<(Wallet, String)> {
    let w = admin.new_wallet().await?;
    let row = admin
        .client()
        .query_one(
            "select status, body from echovalue.webhook_set(token => $1, body => $2)",
            &[&w.token, &r#"{"url":"https://example.com/hook"}"#],
        )
        .await?;
    let status: i32 = row.get(0);
    assert_eq!(status, 200, "webhook_set: {:?}", row.get::<_, String>(1));
    let row = admin
        .client()
        .query_one(
            "select body::json->>'email' from echovalue.webhook_get(token => $1)",
            &[&w.token],
        )
        .await?;
    Ok((w, row.get(0)))
}

/// Runs swaks against the mailhook; returns (exit ok, transcript).
fn swaks(hook: &MailhookProcess, to: &str, args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &hook.port(), "--to", to])
        .args(["--from", "sender@example.com", "--helo", "client.test"])
        .args(args)
        .output()
        .context("cannot run swaks (installed by .ci/setup)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// Runs a Python smtplib script with HOST, PORT and TO in its environment; returns its
/// stdout (the script prints the outcome) or fails with its output.
fn python(hook: &MailhookProcess, to: &str, script: &str) -> Result<String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("HOST", "127.0.0.1")
        .env("PORT", hook.port())
        .env("TO", to)
        .output()
        .context("cannot run python3")?;
    if !out.status.success() {
        bail!(
            "python failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A raw SMTP connection: send lines, read replies.
struct Raw {
    rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(hook: &MailhookProcess) -> Result<Self> {
        let (rd, wr) = TcpStream::connect(hook.addr).await?.into_split();
        let mut raw = Self {
            rd: BufReader::new(rd),
            wr,
        };
        let greeting = raw.reply().await?;
        assert!(greeting.starts_with("220 mx.test"), "{greeting}");
        Ok(raw)
    }

    async fn send(&mut self, data: &str) -> Result<()> {
        self.wr.write_all(data.as_bytes()).await?;
        Ok(())
    }

    /// One whole reply (all its lines), or "" when the server closed.
    async fn reply(&mut self) -> Result<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), self.rd.read_line(&mut line))
                .await
                .context("no reply within 20 s")??;
            if n == 0 {
                return Ok(all);
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(all);
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> Result<String> {
        self.send(&format!("{line}\r\n")).await?;
        self.reply().await
    }
}

fn code(reply: &str) -> &str {
    reply.get(..3).unwrap_or(reply)
}

#[tokio::test]
async fn swaks_plain_text_is_stored_charged_logged_and_queued() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start().await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let before = admin.balance(&w).await?;

    // A LISTENer sees the insert's wake-up after the commit.
    let (listener, mut conn) =
        tokio_postgres::connect(&env::admin_url()?, tokio_postgres::NoTls).await?;
    let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = futures_util::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = ntx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    listener.batch_execute("listen echovalue_mail").await?;

    let (ok, out) = swaks(
        &hook,
        &email,
        &[
            "--header",
            "Subject: Alert: Server down",
            "--header",
            "Message-ID: <swaks-1@example.com>",
            "--h-From",
            "\"John Snow\" <john@example.com>",
            "--body",
            "Server #3 is not responding\n..a line starting with a dot",
        ],
    )?;
    assert!(ok, "{out}");
    assert!(out.contains("250 2.0.0 queued as"), "{out}");

    let msgs = admin.messages(&w).await?;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.message_id.as_deref(), Some("swaks-1@example.com"));
    assert_eq!(m.from_email.as_deref(), Some("john@example.com"));
    assert_eq!(m.from_name.as_deref(), Some("John Snow"));
    assert_eq!(m.subject.as_deref(), Some("Alert: Server down"));
    let text = m.text.as_deref().unwrap_or("");
    assert!(text.contains("Server #3 is not responding"), "{text:?}");
    assert!(
        text.contains("\n..a line starting with a dot"),
        "dot-unstuffing: {text:?}"
    );
    assert_eq!(m.html, None);
    assert_eq!(m.headers["Subject"], "Alert: Server down");
    assert!(m.size_bytes > 0);
    assert!(m.attachments.is_empty());
    assert_eq!(m.pending_deliveries, 1);
    assert_eq!(admin.balance(&w).await?, before - 1);
    let (method, path, endpoint, status, error, cost) = admin.last_log(&w).await?;
    assert_eq!(
        (
            method.as_str(),
            path.as_str(),
            endpoint.as_str(),
            status,
            error,
            cost
        ),
        ("SMTP", email.as_str(), "email", 200, None, 1)
    );
    let (channel, payload) = tokio::time::timeout(Duration::from_secs(10), nrx.recv())
        .await?
        .context("listener ended")?;
    assert_eq!(channel, "echovalue_mail");
    assert!(payload.parse::<i64>().is_ok(), "{payload}");
    Ok(())
}

#[tokio::test]
async fn smtplib_multipart_with_attachments() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start().await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let out = python(
        &hook,
        &email,
        r#"
import os, smtplib
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "Ops Bot <ops@example.com>"
m["To"] = os.environ["TO"]
m["Subject"] = "Report with files"
m.set_content("See the attached report.")
m.add_alternative("<p>See the <b>attached</b> report.</p>", subtype="html")
m.add_attachment(bytes(range(256)) * 40, maintype="application", subtype="pdf", filename="report.pdf")
m.add_attachment("a,b\n1,2\n", subtype="csv", filename="data.csv")
with smtplib.SMTP(os.environ["HOST"], int(os.environ["PORT"])) as s:
    s.ehlo("client.test")
    print(s.send_message(m))
"#,
    )?;
    assert_eq!(out.trim(), "{}", "no refused recipients");
    let msgs = admin.messages(&w).await?;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.subject.as_deref(), Some("Report with files"));
    assert_eq!(m.from_name.as_deref(), Some("Ops Bot"));
    assert!(m
        .text
        .as_deref()
        .unwrap_or("")
        .contains("See the attached report."));
    assert!(m.html.as_deref().unwrap_or("").contains("<b>attached</b>"));
    assert_eq!(m.attachments.len(), 2);
    let pdf = &m.attachments[0];
    assert_eq!(pdf.filename.as_deref(), Some("report.pdf"));
    assert_eq!(pdf.content_type, "application/pdf");
    let expected: Vec<u8> = (0..40).flat_map(|_| 0..=255u8).collect();
    assert_eq!(pdf.size, 10240);
    assert_eq!(pdf.content, expected, "base64 decoded byte for byte");
    let csv = &m.attachments[1];
    assert_eq!(csv.filename.as_deref(), Some("data.csv"));
    assert_eq!(csv.content_type, "text/csv");
    // a text part travels in canonical form: its line breaks are CRLF
    assert_eq!(csv.content, b"a,b\r\n1,2\r\n");
    Ok(())
}

#[tokio::test]
async fn smtplib_html_only_and_latin1_quoted_printable() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start().await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    python(
        &hook,
        &email,
        r#"
import os, smtplib
raw = (b"From: =?ISO-8859-1?Q?Ren=E9_Caf=E9?= <rene@example.com>\r\n"
       b"To: " + os.environ["TO"].encode() + b"\r\n"
       b"Subject: =?ISO-8859-1?Q?Cr=E8me_br=FBl=E9e?=\r\n"
       b"MIME-Version: 1.0\r\n"
       b"Content-Type: text/plain; charset=ISO-8859-1\r\n"
       b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
       b"Un caf=E9 cr=E8me, s'il vous pla=EEt. =\r\nSuite \xe0 la ligne.\r\n")
html = (b"From: web@example.com\r\nTo: " + os.environ["TO"].encode() + b"\r\n"
        b"Subject: html only\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><body><h1>Build failed</h1><p>Job <b>42</b> broke.</p></body></html>\r\n")
with smtplib.SMTP(os.environ["HOST"], int(os.environ["PORT"])) as s:
    s.sendmail("rene@example.com", [os.environ["TO"]], raw)
    s.sendmail("web@example.com", [os.environ["TO"]], html)
"#,
    )?;
    let msgs = admin.messages(&w).await?;
    assert_eq!(msgs.len(), 2);
    let latin = &msgs[0];
    assert_eq!(latin.subject.as_deref(), Some("Crème brûlée"));
    assert_eq!(latin.from_name.as_deref(), Some("René Café"));
    let text = latin.text.as_deref().unwrap_or("");
    assert!(
        text.contains("Un café crème, s'il vous plaît. Suite à la ligne."),
        "{text:?}"
    );
    let html = &msgs[1];
    assert!(html
        .html
        .as_deref()
        .unwrap_or("")
        .contains("<h1>Build failed</h1>"));
    let text = html.text.as_deref().unwrap_or("");
    assert!(
        text.contains("Build failed") && text.contains("42"),
        "{text:?}"
    );
    assert!(!text.contains('<'), "a text version, not HTML: {text:?}");
    Ok(())
}

#[tokio::test]
async fn recipients_are_checked_at_rcpt() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start().await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let domain = email.split('@').nth(1).unwrap_or("localhost").to_owned();

    // The seeds' form: <token>@<domain>.
    let (ok, out) = swaks(
        &hook,
        &format!("{}@{domain}", w.token),
        &["--body", "by token"],
    )?;
    assert!(ok, "{out}");
    assert_eq!(admin.messages(&w).await?.len(), 1);

    let (ok, out) = swaks(&hook, &format!("000000000000000000000000@{domain}"), &[])?;
    assert!(!ok && out.contains("550 5.1.1 no such mailbox"), "{out}");
    let (ok, out) = swaks(&hook, &email.replace(&domain, "example.com"), &[])?;
    assert!(!ok && out.contains("550 5.7.1"), "{out}");

    let no_hook = admin.new_wallet().await?;
    let (ok, out) = swaks(&hook, &format!("{}@{domain}", no_hook.token), &[])?;
    assert!(
        !ok && out.contains("550 5.1.1 mailbox has no webhook"),
        "{out}"
    );

    admin.set_balance(&w, 0).await?;
    let (ok, out) = swaks(&hook, &email, &[])?;
    assert!(!ok && out.contains("452 4.2.2"), "{out}");
    assert_eq!(admin.messages(&w).await?.len(), 1, "nothing stored");
    assert_eq!(admin.balance(&w).await?, 0);
    Ok(())
}

#[tokio::test]
async fn oversize_messages_get_552_and_nothing_is_stored() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start_with(&[("ECHOVALUE_SMTP_MAX_BYTES", "20000")]).await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let before = admin.balance(&w).await?;

    // swaks sends no SIZE: refused after the data, which is read and dropped.
    let body = "x".repeat(70).repeat(400);
    let (ok, out) = swaks(&hook, &email, &["--body", &body])?;
    assert!(!ok && out.contains("552 5.3.4"), "{out}");
    // smtplib declares SIZE=: refused at MAIL.
    let out = python(
        &hook,
        &email,
        r#"
import os, smtplib
with smtplib.SMTP(os.environ["HOST"], int(os.environ["PORT"])) as s:
    s.ehlo("client.test")
    print("size", s.esmtp_features.get("size"))
    try:
        s.sendmail("a@example.com", [os.environ["TO"]], b"Subject: big\r\n\r\n" + b"y" * 30000)
    except smtplib.SMTPSenderRefused as e:
        print("refused", e.smtp_code)
"#,
    )?;
    assert!(
        out.contains("size 20000") && out.contains("refused 552"),
        "{out}"
    );
    // Just under the limit goes through.
    let (ok, out) = swaks(&hook, &email, &["--body", &"z".repeat(15000)])?;
    assert!(ok, "{out}");
    assert_eq!(admin.messages(&w).await?.len(), 1);
    assert_eq!(admin.balance(&w).await?, before - 1);
    Ok(())
}

#[tokio::test]
async fn protocol_edges_over_raw_tcp() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start().await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let mut c = Raw::connect(&hook).await?;

    assert_eq!(code(&c.cmd("MAIL FROM:<a@example.com>").await?), "503");
    let ehlo = c.cmd("EHLO client.test").await?;
    for ext in ["250-mx.test", "SIZE 10485760", "PIPELINING", "8BITMIME"] {
        assert!(ehlo.contains(ext), "{ehlo}");
    }
    assert_eq!(code(&c.cmd("VRFY someone").await?), "252");
    assert_eq!(code(&c.cmd("NOOP").await?), "250");
    assert_eq!(code(&c.cmd("HELP").await?), "214");
    assert_eq!(code(&c.cmd("STARTTLS").await?), "502");
    assert_eq!(code(&c.cmd("BOGUS").await?), "500");
    assert_eq!(
        code(&c.cmd(&format!("NOOP {}", "x".repeat(2000))).await?),
        "500"
    );
    assert_eq!(code(&c.cmd("DATA").await?), "503");
    assert_eq!(code(&c.cmd(&format!("RCPT TO:<{email}>")).await?), "503");

    // PIPELINING: a whole batch in one write, the replies in order.
    c.send(&format!(
        "RSET\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<{email}>\r\nRCPT TO:<other@example.com>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        email.to_uppercase()
    ))
    .await?;
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(code(&c.reply().await?).to_owned());
    }
    // the second, different recipient is deferred: one recipient per message
    assert_eq!(codes, ["250", "250", "250", "452", "250", "354"]);
    c.send("Subject: pipelined\r\n\r\nline one\r\n.\r\n")
        .await?;
    assert_eq!(code(&c.reply().await?), "250");

    // Credits gone between RCPT and DATA: 452 at the end of DATA, nothing stored.
    assert_eq!(code(&c.cmd("MAIL FROM:<a@example.com>").await?), "250");
    assert_eq!(code(&c.cmd(&format!("RCPT TO:<{email}>")).await?), "250");
    admin.set_balance(&w, 0).await?;
    assert_eq!(code(&c.cmd("DATA").await?), "354");
    let r = c.cmd("Subject: late\r\n\r\nno credits by now\r\n.").await?;
    assert!(r.starts_with("452 4.2.2"), "{r}");
    let msgs = admin.messages(&w).await?;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].subject.as_deref(), Some("pipelined"));

    assert!(c.cmd("QUIT").await?.starts_with("221"));
    assert_eq!(c.reply().await?, "", "closed after QUIT");
    Ok(())
}

/// One whole SMTP conversation in one write per phase; the reply to the end of DATA.
async fn send_one(addr: SocketAddr, i: usize, to: String) -> Result<String> {
    let (rd, mut wr) = TcpStream::connect(addr).await?.into_split();
    let mut rd = BufReader::new(rd);
    wr.write_all(
        format!("EHLO c{i}\r\nMAIL FROM:<s{i}@example.com>\r\nRCPT TO:<{to}>\r\nDATA\r\n")
            .as_bytes(),
    )
    .await?;
    // greeting, EHLO (multi-line), MAIL, RCPT, then 354 (or a refusal of RCPT and DATA)
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line).await? == 0 {
            bail!("closed early: {seen}");
        }
        if line.starts_with("354 ") {
            break;
        }
        if line.starts_with("554 ") || line.starts_with("503 ") {
            return Ok(seen);
        }
        seen.push_str(&line);
    }
    wr.write_all(format!("Subject: n{i}\r\n\r\nbody {i}\r\n.\r\nQUIT\r\n").as_bytes())
        .await?;
    let mut line = String::new();
    rd.read_line(&mut line).await?;
    Ok(line)
}

#[tokio::test]
async fn many_concurrent_sessions_each_store_once() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start().await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let before = admin.balance(&w).await?;
    const SESSIONS: usize = 50;
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|i| tokio::spawn(send_one(hook.addr, i, email.clone())))
        .collect();
    for t in tasks {
        let line = t.await??;
        assert!(line.starts_with("250 2.0.0 queued"), "{line}");
    }
    let msgs = admin.messages(&w).await?;
    assert_eq!(msgs.len(), SESSIONS);
    assert_eq!(admin.balance(&w).await?, before - SESSIONS as i64);
    let mut subjects: Vec<String> = msgs.into_iter().filter_map(|m| m.subject).collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), SESSIONS);
    Ok(())
}

#[tokio::test]
async fn concurrent_mail_never_overspends_a_wallet() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start().await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    admin.set_balance(&w, 10).await?;
    let tasks: Vec<_> = (0..40)
        .map(|i| tokio::spawn(send_one(hook.addr, i, email.clone())))
        .collect();
    let (mut stored, mut deferred) = (0, 0);
    for t in tasks {
        let reply = t.await??;
        if reply.starts_with("250 ") {
            stored += 1;
        } else if reply.contains("452 4.2.2") {
            deferred += 1;
        } else {
            bail!("unexpected reply {reply:?}");
        }
    }
    assert_eq!((stored, deferred), (10, 30));
    assert_eq!(admin.messages(&w).await?.len(), 10);
    assert_eq!(admin.balance(&w).await?, 0);
    Ok(())
}

#[tokio::test]
async fn idle_sessions_time_out_and_a_dead_database_means_451() -> Result<()> {
    let hook = Mailhook::start_with(&[("ECHOVALUE_SMTP_TIMEOUT_SECS", "1")]).await?;
    let mut c = Raw::connect(&hook).await?;
    let started = std::time::Instant::now();
    let r = c.reply().await?;
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Nothing listens on port 1: every database call fails, and the sender is told to retry.
    let down = Mailhook::start_on(
        "host=127.0.0.1 port=1 user=echovalue_mailhook dbname=echovalue connect_timeout=1",
        &[("ECHOVALUE_DB_TIMEOUT_SECS", "1")],
    )
    .await?;
    let mut c = Raw::connect(&down).await?;
    c.cmd("EHLO client.test").await?;
    c.cmd("MAIL FROM:<a@example.com>").await?;
    let r = c.cmd("RCPT TO:<someone@localhost>").await?;
    assert!(r.starts_with("451 4.3.0"), "{r}");
    Ok(())
}

#[tokio::test]
async fn session_and_command_limits_then_graceful_shutdown() -> Result<()> {
    let mut hook = Mailhook::start_with(&[
        ("ECHOVALUE_SMTP_MAX_SESSIONS", "2"),
        ("ECHOVALUE_SMTP_MAX_COMMANDS", "3"),
        ("ECHOVALUE_SHUTDOWN_GRACE_SECS", "5"),
    ])
    .await?;
    let mut a = Raw::connect(&hook).await?;
    let mut b = Raw::connect(&hook).await?;
    // A third concurrent session is turned away.
    let (rd, _wr) = TcpStream::connect(hook.addr).await?.into_split();
    let mut third = String::new();
    BufReader::new(rd).read_line(&mut third).await?;
    assert!(third.starts_with("421 4.3.2"), "{third}");

    for _ in 0..3 {
        assert_eq!(code(&a.cmd("NOOP").await?), "250");
    }
    let r = a.cmd("NOOP").await?;
    assert!(r.starts_with("421 4.7.0"), "{r}");

    // SIGTERM: open sessions are told 421 at once, and the process exits 0.
    assert_eq!(code(&b.cmd("NOOP").await?), "250");
    let pid = hook.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status()?;
    assert!(status.success());
    let r = b.reply().await?;
    assert!(r.starts_with("421 4.3.2"), "{r}");
    let started = std::time::Instant::now();
    let exit = loop {
        if let Some(s) = hook.child.try_wait()? {
            break s;
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the mailhook did not exit after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    Ok(())
}
