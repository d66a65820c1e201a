//! Wallet alerts over the real stack (SPEC §14): a real proxy charging a wallet with 100
//! parallel requests, the real mailhook delivering the alert to a real receiver on loopback
//! (exactly one, signed, and none while the balance stays below), a recharge through the
//! signed Stripe path sending `wallet.recharged`, and alert emails through a real SMTP relay
//! on loopback (Python's aiosmtpd): the right subject and text, and a relay down, then up,
//! retried until the email arrives once.

mod delivery_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use delivery_support::*;
use echovalue_proxy::config::Secret;
use echovalue_tests::stripe::{deliver_signed, paid_session_event, TEST_SECRET};
use echovalue_tests::{Admin, TestProxy, Wallet};
use futures_util::future::join_all;
use mail_parser::MessageParser;
use serde_json::{json, Value};

/// Sets the wallet's alert settings through the SQL API (loopback URLs allowed in this session).
async fn settings(admin: &Admin, w: &Wallet, body: Value) -> Result<()> {
    let (status, reply) = admin
        .call_allowing_insecure(
            "select status, body from echovalue.settings_put(token => $1, body => $2)",
            &[&w.token, &body.to_string()],
        )
        .await?;
    anyhow::ensure!(status == 200, "settings_put: {status} {reply}");
    Ok(())
}

/// Sends `n` requests at once, each charged one credit; returns how many got an answer.
async fn charge(proxy: &TestProxy, w: &Wallet, n: usize) -> Result<usize> {
    let calls = (0..n).map(|i| {
        let api = proxy.api();
        let path = format!("/kv/g/k{i}");
        async move { api.get(&path, w.t()).await }
    });
    let replies = join_all(calls).await;
    let mut answered = 0;
    for r in replies {
        let r = r?;
        anyhow::ensure!(r.status == 404, "expected a charged 404, got {}", r.status);
        answered += 1;
    }
    Ok(answered)
}

/// The alerts the wallet has queued (webhook and email), as (kind, state).
async fn alerts(admin: &Admin, w: &Wallet) -> Result<Vec<(String, String)>> {
    let rows = admin
        .client()
        .query(
            "select kind, state from echovalue.deliveries
              where kind in ('alert', 'alert_email')
                and wallet_id = (select id from echovalue.wallets where hash = $1) order by id",
            &[&w.hash],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[tokio::test]
async fn one_low_balance_alert_under_load_then_the_recharge() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    let proxy =
        TestProxy::start_with(|c| c.stripe_webhook_secret = Some(Secret::new(TEST_SECRET))).await?;
    let receiver = Receiver::start(&[]).await?;
    let w = admin.new_wallet().await?;
    settings(
        &admin,
        &w,
        json!({"low_balance_threshold": 100, "low_balance_webhook": {"url": receiver.url("/alert")}}),
    )
    .await?;
    admin.set_balance(&w, 150).await?;
    let (_, secret) = admin.mailbox(&w).await?.context("a mailbox")?;
    let _hook = Mailhook::start().await?;

    // 100 parallel charges take the balance from 150 to 50, across the threshold once
    assert_eq!(charge(&proxy, &w, 100).await?, 100);
    assert_eq!(admin.balance(&w).await?, 50);
    let got = wait_for("the alert", Duration::from_secs(20), || async {
        Ok(Some(receiver.got()).filter(|g| !g.is_empty()))
    })
    .await?;
    // and below it, more charges alert nothing
    assert_eq!(charge(&proxy, &w, 20).await?, 20);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bodies: Vec<String> = receiver
        .got()
        .iter()
        .map(|g| String::from_utf8_lossy(&g.body).into_owned())
        .collect();
    assert_eq!(bodies.len(), 1, "exactly one alert: {bodies:#?}");
    assert_eq!(
        alerts(&admin, &w).await?,
        vec![("alert".to_owned(), "delivered".to_owned())]
    );
    let alert = &got[0];
    assert_eq!(
        alert.json(),
        json!({"type": "wallet.low_balance", "wallet": 99, "threshold": 100, "token_hash": w.hash})
    );
    assert_eq!(alert.header(":path"), "/alert");
    verify_signature(&secret, alert)?;

    // a recharge through the signed Stripe path: wallet.recharged, once
    let tier = admin.new_tier(1000).await?;
    let (_, event) = paid_session_event(&w.hash, &tier.link_id);
    assert_eq!(deliver_signed(proxy.api(), &event).await?.status, 200);
    let got = wait_for("the recharge alert", Duration::from_secs(20), || async {
        Ok(Some(receiver.got()).filter(|g| g.len() >= 2))
    })
    .await?;
    assert_eq!(
        got[1].json(),
        json!({"type": "wallet.recharged", "credits": 1000, "wallet": 1030, "token_hash": w.hash})
    );
    verify_signature(&secret, &got[1])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.got().len(), 2);
    admin.drop_tier(&tier).await?;
    Ok(())
}

/// A real SMTP server on loopback (aiosmtpd) storing what it receives in a maildir.
struct Relay {
    child: Child,
    maildir: PathBuf,
}

impl Relay {
    fn start(port: u16, maildir: &Path) -> Result<Self> {
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .spawn()
            .context("cannot run python3 -m aiosmtpd (installed by .ci/setup)")?;
        Ok(Self {
            child,
            maildir: maildir.to_owned(),
        })
    }

    /// The messages received, as text.
    fn received(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The email alerts' log entries of the wallet: (status_code, error).
async fn email_logs(admin: &Admin, w: &Wallet) -> Result<Vec<(i32, Option<String>)>> {
    let rows = admin
        .client()
        .query(
            "select status_code, error from echovalue.logs
              where endpoint = 'email' and method = 'SMTP' and path like 'msg\\_%'
                and wallet_id = (select id from echovalue.wallets where hash = $1) order by id",
            &[&w.hash],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[tokio::test]
async fn alert_email_through_a_relay_that_is_down_then_up() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    let proxy = TestProxy::start().await?;
    // a free port, with nothing listening on it yet: the relay is down
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let port_text = port.to_string();
    let _hook = Mailhook::start_with(
        true,
        &[
            ("ECHOVALUE_RELAY_HOST", "127.0.0.1"),
            ("ECHOVALUE_RELAY_PORT", &port_text),
            ("ECHOVALUE_RELAY_TLS", "none"),
            ("ECHOVALUE_RELAY_FROM", "alerts@echovalue.test"),
            ("ECHOVALUE_RELAY_TIMEOUT_SECS", "3"),
        ],
    )
    .await?;
    // the mailhook registers its relay at start; email alerts can be set from then on
    wait_for("the relay registered", Duration::from_secs(10), || async {
        let n: i64 = admin
            .client()
            .query_one("select count(*) from echovalue.mail_relay", &[])
            .await?
            .get(0);
        Ok((n == 1).then_some(()))
    })
    .await?;
    let w = admin.new_wallet().await?;
    settings(
        &admin,
        &w,
        json!({"low_balance_threshold": 100, "low_balance_email": "ops@example.com"}),
    )
    .await?;
    admin.set_balance(&w, 100).await?;
    assert_eq!(charge(&proxy, &w, 1).await?, 1);

    // relay down: the attempt fails without a reply and is kept for a retry
    let first = wait_for("the failed attempt", Duration::from_secs(20), || async {
        Ok(Some(email_logs(&admin, &w).await?).filter(|l| !l.is_empty()))
    })
    .await?;
    assert_eq!(
        first,
        vec![(0, Some("the relay could not be reached".to_owned()))],
        "no reply from a relay that is down; the relay's own error stays in the operator's log"
    );
    assert_eq!(
        alerts(&admin, &w).await?,
        vec![("alert_email".to_owned(), "pending".to_owned())]
    );

    // relay up, the retry made due now instead of in 30 s: the email arrives, once
    let maildir = std::env::temp_dir().join(format!("ev-relay-{}", rand::random::<u64>()));
    let relay = Relay::start(port, &maildir)?;
    // Up means accepting connections (a loaded machine may take seconds to start Python).
    wait_for("the relay to listen", Duration::from_secs(20), || async {
        let up = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok();
        Ok(up.then_some(()))
    })
    .await?;
    make_due(&admin, &w).await?;
    admin
        .client()
        .execute("select pg_notify('echovalue_alert_email', 'test')", &[])
        .await?;
    let mails = wait_for("the alert email", Duration::from_secs(20), || async {
        Ok(Some(relay.received()).filter(|m| !m.is_empty()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(relay.received().len(), 1, "the email arrives once");
    let mail = MessageParser::default()
        .parse(mails[0].as_bytes())
        .context("the relay stored a message mail-parser cannot read")?;
    let address = |a: Option<&mail_parser::Address>| {
        a.and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_owned)
    };
    assert_eq!(
        address(mail.from()).as_deref(),
        Some("alerts@echovalue.test")
    );
    assert_eq!(address(mail.to()).as_deref(), Some("ops@example.com"));
    assert_eq!(
        mail.header_raw("X-RcptTo").map(str::trim),
        Some("ops@example.com")
    );
    assert_eq!(
        mail.subject(),
        Some("echovalue: low balance, 99 credits left")
    );
    assert_eq!(
        mail.body_text(0).as_deref().map(str::trim_end),
        Some(
            format!(
                "Your echovalue wallet has 99 credits left, below your alert threshold of 100 \
                 credits.\nWallet: {}",
                w.hash
            )
            .as_str()
        )
    );
    assert!(
        mail.message_id().is_some_and(|id| id.starts_with("msg_")),
        "{:?}",
        mail.message_id()
    );
    let logs = email_logs(&admin, &w).await?;
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert_eq!(logs[1], (250, None));
    assert_eq!(
        alerts(&admin, &w).await?,
        vec![("alert_email".to_owned(), "delivered".to_owned())]
    );
    drop(relay);
    let _ = std::fs::remove_dir_all(&maildir);
    // the relay stays registered after its mailhook stops; the operator removes it
    admin
        .client()
        .execute("select echovalue.relay_register(null)", &[])
        .await?;
    Ok(())
}
