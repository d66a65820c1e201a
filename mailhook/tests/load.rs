//! Exact accounting under load while hostile clients hold what they can (issue 15): 1,000
//! concurrent requests on a 100-credit wallet give exactly 100 charged answers, each logged
//! once, while 500 idle HTTP connections and 50 SMTP sessions trickling DATA are held open
//! against the same proxy, mailhook and database.

mod smtp_support;

use std::time::Duration;

use anyhow::Result;
use echovalue_tests::{Admin, TestProxy};
use smtp_support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const REQUESTS: usize = 1000;
const CREDITS: i64 = 100;
const IDLE: usize = 500;
const SLOW_SMTP: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exact_accounting_while_idle_connections_and_slow_smtp_sessions_are_held() -> Result<()> {
    let proxy = TestProxy::start_with(|c| {
        c.pool_size = 16;
        c.limits.max_connections_per_address = 0;
        c.limits.header_timeout_secs = 120;
    })
    .await?;
    let hook = Mailhook::start_with(&[("ECHOVALUE_SMTP_MAX_SESSIONS_PER_ADDRESS", "0")]).await?;
    let admin = Admin::connect().await?;

    // 500 connections that never send a request.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(proxy.addr).await?);
    }
    // 50 SMTP sessions in DATA, a line every 200 ms, for as long as the test runs.
    let (_mail_wallet, email) = wallet_with_webhook(&admin).await?;
    let mut slow = JoinSet::new();
    for _ in 0..SLOW_SMTP {
        let mut c = Raw::connect(&hook).await?;
        assert_eq!(code(&c.cmd("EHLO load.test").await?), "250");
        assert_eq!(code(&c.cmd("MAIL FROM:<a@example.com>").await?), "250");
        assert_eq!(code(&c.cmd(&format!("RCPT TO:<{email}>")).await?), "250");
        assert_eq!(code(&c.cmd("DATA").await?), "354");
        slow.spawn(async move {
            let Raw { rd: _rd, mut wr } = c;
            while wr.write_all(b"slow text\r\n").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    let w = admin.new_wallet_with(CREDITS).await?;
    let (rows_before, charged_before) = admin.log_counts(&w).await?;
    let mut set = JoinSet::new();
    for i in 0..REQUESTS {
        let (api, token) = (proxy.api().clone(), w.token.clone());
        set.spawn(async move {
            if i % 2 == 0 {
                api.post(&format!("/kv/load/k{i}"), Some(&token), "v").await
            } else {
                api.get("/token", Some(&token)).await
            }
        });
    }
    let (mut ok, mut refused, mut other) = (0, 0, Vec::new());
    while let Some(joined) = set.join_next().await {
        let r = joined??;
        match r.status {
            200 => ok += 1,
            402 => refused += 1,
            s => other.push((s, r.text())),
        }
    }
    assert!(other.is_empty(), "unexpected statuses: {other:?}");
    assert_eq!(
        (ok, refused),
        (CREDITS as usize, REQUESTS - CREDITS as usize)
    );
    assert_eq!(admin.balance(&w).await?, 0);
    let (rows, charged) = admin.log_counts(&w).await?;
    assert_eq!(
        charged - charged_before,
        CREDITS,
        "every charge logged once"
    );
    let refusals_logged = rows - rows_before - CREDITS;
    assert!(
        Admin::refusals_logged_ok(refusals_logged, refused),
        "{refusals_logged} of {refused} refusals logged"
    );

    // Everything held is still held, and the stack still serves.
    assert_eq!(slow.len(), SLOW_SMTP);
    assert_eq!(proxy.api().get("/token", Some(&w.token)).await?.status, 402);
    assert!(Raw::connect(&hook)
        .await?
        .cmd("NOOP")
        .await?
        .starts_with("250"));
    drop(idle);
    slow.abort_all();
    Ok(())
}
