//! Webhook delivery end to end: the real `echovalue-mailhook` binary receives mail from real
//! SMTP clients (swaks, Python smtplib) and POSTs it to a real HTTP receiver on loopback. The
//! tests check what arrives (the seed 002 payload, the Standard Webhooks signature verified
//! here with the wallet's secret), what the queue and the logs then hold, retries (time travel
//! in SQL instead of sleeping), the address checks at delivery, a kill -9 mid-delivery, and the
//! signed attachment download on the proxy.
//!
//! The tests run one at a time (`SERIAL`): every dispatcher claims any due delivery, and the
//! address-check test needs the only running dispatcher to be a strict one.

mod delivery_support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context, Result};
use delivery_support::*;
use echovalue_tests::{Admin, TestProxy};
use tokio::net::TcpListener;

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
