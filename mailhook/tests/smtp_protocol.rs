//! The SMTP receiver's protocol edges and bounds end to end, against the real binary and
//! database: raw SMTP over TCP (pipelining, bad commands, bare LF), many concurrent sessions,
//! concurrent mail on a small wallet, idle and dead-database sessions, session and command
//! limits, and a graceful shutdown.

mod smtp_support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};
use echovalue_tests::Admin;
use smtp_support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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
