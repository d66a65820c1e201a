//! Hostile SMTP clients against the real binary and database (issue 15, items 1 and 7): a
//! MIME bomb is refused fast with nothing stored while another session's mail is accepted,
//! sessions are capped per address, a session and a slow DATA end at their deadlines, the
//! bytes all sessions buffer are bounded, and `<LF>.<CR><LF>` does not end DATA.

mod smtp_support;

use std::time::{Duration, Instant};

use anyhow::Result;
use echovalue_tests::Admin;
use smtp_support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpSocket;

/// Children whose boundaries never appear: mail-parser scans the rest of the message for each
/// (16,000 of them in 1 MB took 11 s of CPU before the caps).
fn mime_bomb(n: usize) -> String {
    let mut m = String::from("Subject: bomb\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n");
    for i in 0..n {
        m.push_str(&format!(
            "--x\r\nContent-Type: multipart/mixed; boundary=never{i}\r\n\r\n"
        ));
    }
    m
}

async fn open_data(c: &mut Raw, email: &str) -> Result<()> {
    assert_eq!(code(&c.cmd("EHLO client.test").await?), "250");
    assert_eq!(code(&c.cmd("MAIL FROM:<a@example.com>").await?), "250");
    assert_eq!(code(&c.cmd(&format!("RCPT TO:<{email}>")).await?), "250");
    assert_eq!(code(&c.cmd("DATA").await?), "354");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mime_bomb_is_refused_fast_while_another_session_is_served() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start().await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let before = admin.balance(&w).await?;

    let mut other = Raw::connect(&hook).await?;
    open_data(&mut other, &email).await?;
    other
        .send("Subject: meanwhile\r\n\r\nstill here\r\n")
        .await?;

    let mut bomber = Raw::connect(&hook).await?;
    open_data(&mut bomber, &email).await?;
    let bomb = mime_bomb(16_000);
    bomber.send(&bomb).await?;
    let started = Instant::now();
    let r = bomber.cmd(".").await?;
    let took = started.elapsed();
    assert!(r.starts_with("552 5.3.4 too many multipart parts"), "{r}");
    assert!(took < Duration::from_secs(2), "refusing took {took:?}");
    println!("a {} byte MIME bomb refused in {took:?}", bomb.len());

    let r = other.cmd(".").await?;
    assert!(r.starts_with("250"), "{r}");
    let msgs = admin.messages(&w).await?;
    assert_eq!(msgs.len(), 1, "only the other session's mail is stored");
    assert_eq!(msgs[0].subject.as_deref(), Some("meanwhile"));
    assert_eq!(
        admin.balance(&w).await?,
        before - 1,
        "the bomb cost nothing"
    );
    // The bomber's session goes on, and may send a real message.
    assert_eq!(code(&bomber.cmd("MAIL FROM:<a@example.com>").await?), "250");
    Ok(())
}

#[tokio::test]
async fn lf_dot_crlf_does_not_end_data() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start().await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let mut c = Raw::connect(&hook).await?;
    open_data(&mut c, &email).await?;
    // A receiver that took <LF>.<CR><LF> as the end would run the smuggled transaction.
    c.send(&format!(
        "Subject: outer\r\n\r\nbody\n.\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<{email}>\r\n\
         DATA\r\nSubject: smuggled\r\n\r\nx\r\n"
    ))
    .await?;
    let r = c.cmd(".").await?;
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("QUIT").await?.starts_with("221"));
    let msgs = admin.messages(&w).await?;
    assert_eq!(msgs.len(), 1, "one message, the smuggled one is its text");
    assert_eq!(msgs[0].subject.as_deref(), Some("outer"));
    let text = msgs[0].text.clone().unwrap_or_default();
    assert!(text.contains("MAIL FROM:<evil@example.com>"), "{text}");
    Ok(())
}

/// The first reply line of a session from `from`.
async fn greeting_from(hook: &echovalue_tests::MailhookProcess, from: &str) -> Result<String> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(from.parse()?, 0))?;
    let (rd, _wr) = socket.connect(hook.addr).await?.into_split();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(rd).read_line(&mut line),
    )
    .await??;
    Ok(line)
}

#[tokio::test]
async fn sessions_are_capped_per_address() -> Result<()> {
    let hook = Mailhook::start_with(&[("ECHOVALUE_SMTP_MAX_SESSIONS_PER_ADDRESS", "2")]).await?;
    let _a = Raw::connect_from(&hook, "127.0.0.5").await?;
    let _b = Raw::connect_from(&hook, "127.0.0.5").await?;
    let third = greeting_from(&hook, "127.0.0.5").await?;
    assert!(third.starts_with("421 4.7.0"), "{third}");
    let elsewhere = greeting_from(&hook, "127.0.0.6").await?;
    assert!(elsewhere.starts_with("220"), "{elsewhere}");
    drop(_a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = greeting_from(&hook, "127.0.0.5").await?;
    assert!(again.starts_with("220"), "{again}");
    Ok(())
}

#[tokio::test]
async fn a_busy_session_and_a_slow_data_end_at_their_deadlines() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start_with(&[
        ("ECHOVALUE_SMTP_SESSION_TIMEOUT_SECS", "3"),
        ("ECHOVALUE_SMTP_DATA_TIMEOUT_SECS", "1"),
        ("ECHOVALUE_SMTP_MIN_DATA_RATE", "100000"),
    ])
    .await?;
    // A NOOP every 300 ms never trips the per-command timeout, but the session ends.
    let mut c = Raw::connect(&hook).await?;
    let started = Instant::now();
    let last = loop {
        let r = c.cmd("NOOP").await?;
        if !r.starts_with("250") {
            break r;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(last.starts_with("421 4.4.2 session time limit"), "{last}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );

    // DATA at a few bytes a second: cut off after about a second (the DATA deadline; the
    // session's is an hour here), nothing stored.
    let hook = Mailhook::start_with(&[
        ("ECHOVALUE_SMTP_SESSION_TIMEOUT_SECS", "3600"),
        ("ECHOVALUE_SMTP_DATA_TIMEOUT_SECS", "1"),
        ("ECHOVALUE_SMTP_MIN_DATA_RATE", "100000"),
    ])
    .await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let mut c = Raw::connect(&hook).await?;
    open_data(&mut c, &email).await?;
    let Raw { mut rd, mut wr } = c;
    let trickle = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while wr.write_all(b"slow line\r\n").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = Instant::now();
    let mut r = String::new();
    tokio::time::timeout(Duration::from_secs(10), rd.read_line(&mut r)).await??;
    assert!(r.starts_with("421 4.4.2"), "{r}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    trickle.abort();
    assert!(admin.messages(&w).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn the_bytes_all_sessions_buffer_are_bounded() -> Result<()> {
    let admin = Admin::connect().await?;
    // Room for one 64 KiB reservation at a time.
    let hook = Mailhook::start_with(&[("ECHOVALUE_SMTP_MAX_BUFFERED_BYTES", "100000")]).await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let body = format!("{}\r\n", "y".repeat(70)).repeat(500); // 36 KB
    let mut a = Raw::connect(&hook).await?;
    open_data(&mut a, &email).await?;
    a.send(&format!("Subject: first\r\n\r\n{body}")).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = Raw::connect(&hook).await?;
    open_data(&mut b, &email).await?;
    b.send(&format!("Subject: second\r\n\r\n{body}")).await?;
    let r = b.cmd(".").await?;
    assert!(r.starts_with("452 4.3.1"), "{r}");
    let r = a.cmd(".").await?;
    assert!(r.starts_with("250"), "{r}");
    // Stored, the first message's bytes are given back.
    assert_eq!(code(&b.cmd("MAIL FROM:<a@example.com>").await?), "250");
    assert_eq!(code(&b.cmd(&format!("RCPT TO:<{email}>")).await?), "250");
    assert_eq!(code(&b.cmd("DATA").await?), "354");
    b.send(&format!("Subject: second\r\n\r\n{body}")).await?;
    assert!(b.cmd(".").await?.starts_with("250"));
    assert_eq!(admin.messages(&w).await?.len(), 2);
    Ok(())
}
