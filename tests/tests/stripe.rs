//! Stripe recharges end to end: signed webhooks into a real proxy, recorded in Postgres, applied
//! by the mailhook worker running in-process (several tests in parallel means several workers
//! claiming from one queue). Each test has its own recharge tier and wallets.

use std::time::Duration;

use anyhow::Result;
use echovalue_proxy::config::Secret;
use echovalue_tests::stripe::{
    deliver, deliver_signed, now, session_event, signature, unique, v1, Session, TEST_SECRET,
};
use echovalue_tests::{setup, Admin, TestProxy, TestWorker};

const COMPLETED: &str = "checkout.session.completed";
const ASYNC_SUCCEEDED: &str = "checkout.session.async_payment_succeeded";

async fn proxy_with_secret() -> Result<TestProxy> {
    TestProxy::start_with(|c| c.stripe_webhook_secret = Some(Secret::new(TEST_SECRET))).await
}

fn paid<'a>(event_id: &'a str, session_id: &'a str, hash: &'a str, link: &'a str) -> Session<'a> {
    Session {
        event_id,
        event_type: COMPLETED,
        session_id,
        client_reference_id: Some(hash),
        payment_link: link,
        payment_status: "paid",
    }
}

#[tokio::test]
async fn paid_session_credits_once_and_is_logged() -> Result<()> {
    let proxy = proxy_with_secret().await?;
    let api = proxy.api();
    let admin = Admin::connect().await?;
    let tier = admin.new_tier(777).await?;
    let worker = TestWorker::start()?;
    let w = admin.new_wallet().await?;

    let (evt, cs) = (unique("evt"), unique("cs"));
    let body = session_event(&paid(&evt, &cs, &w.hash, &tier.link_id));
    let r = deliver_signed(api, &body).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert_eq!(
        r.json()?,
        serde_json::json!({"received": true, "duplicate": false})
    );
    assert_eq!(r.cost(), None, "a webhook has no wallet of its own");

    assert_eq!(admin.wait_stripe_state(&evt, "applied").await?, Some(777));
    assert_eq!(admin.balance(&w).await?, 100 + 777);
    assert_eq!(admin.recharge_logs(&w).await?, (1, 0), "one entry, cost 0");

    // Stripe delivers again (it does, at least once): acknowledged, nothing more.
    let r = deliver_signed(api, &body).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()?["duplicate"], true);
    tokio::time::sleep(Duration::from_millis(1500)).await; // > the worker's poll interval
    assert_eq!(admin.stripe_event_count(&evt).await?, 1);
    assert_eq!(admin.balance(&w).await?, 100 + 777);
    assert_eq!(admin.recharge_logs(&w).await?.0, 1);

    // The wallet sees the recharge in its logs, with the new balance.
    let r = api.get("/token/logs?n=1", w.t()).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    let entry = &r.json()?["logs"][0];
    assert_eq!(entry["endpoint"], "recharge");
    assert_eq!(entry["method"], "POST");
    assert_eq!(entry["path"], "/stripe/webhook");
    assert_eq!(entry["status_code"], 200);
    assert_eq!(entry["cost"], 0);
    assert_eq!(entry["balance"], 877);
    assert!(entry.get("error").is_none());

    worker.stop().await?;
    admin.drop_tier(&tier).await?;
    Ok(())
}

#[tokio::test]
async fn five_concurrent_deliveries_credit_once() -> Result<()> {
    let proxy = proxy_with_secret().await?;
    let admin = Admin::connect().await?;
    let tier = admin.new_tier(1000).await?;
    let worker = TestWorker::start()?;
    let w = admin.new_wallet().await?;

    let (evt, cs) = (unique("evt"), unique("cs"));
    let body = session_event(&paid(&evt, &cs, &w.hash, &tier.link_id));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let api = proxy.api().clone();
        let body = body.clone();
        tasks.push(tokio::spawn(
            async move { deliver_signed(&api, &body).await },
        ));
    }
    let mut new = 0;
    for t in tasks {
        let r = t.await??;
        assert_eq!(r.status, 200, "{:?}", r.text());
        if r.json()?["duplicate"] == false {
            new += 1;
        }
    }
    assert_eq!(new, 1, "exactly one delivery recorded the event");
    admin.wait_stripe_state(&evt, "applied").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(admin.balance(&w).await?, 100 + 1000);
    assert_eq!(admin.recharge_logs(&w).await?.0, 1);

    worker.stop().await?;
    admin.drop_tier(&tier).await?;
    Ok(())
}

#[tokio::test]
async fn unpaid_session_waits_for_async_payment_succeeded() -> Result<()> {
    let proxy = proxy_with_secret().await?;
    let api = proxy.api();
    let admin = Admin::connect().await?;
    let tier = admin.new_tier(3000).await?;
    let worker = TestWorker::start()?;
    let w = admin.new_wallet().await?;
    let cs = unique("cs");

    let completed = unique("evt");
    let body = session_event(&Session {
        payment_status: "unpaid",
        ..paid(&completed, &cs, &w.hash, &tier.link_id)
    });
    assert_eq!(deliver_signed(api, &body).await?.status, 200);
    admin.wait_stripe_state(&completed, "unpaid").await?;
    assert_eq!(
        admin.balance(&w).await?,
        100,
        "nothing for an unpaid session"
    );
    let (state, detail) = admin
        .stripe_unapplied(&completed)
        .await?
        .unwrap_or_default();
    assert_eq!(state, "unpaid", "kept and visible to the operator");
    assert_eq!(detail.as_deref(), Some("payment_status is unpaid"));

    let succeeded = unique("evt");
    let body = session_event(&Session {
        event_type: ASYNC_SUCCEEDED,
        ..paid(&succeeded, &cs, &w.hash, &tier.link_id)
    });
    assert_eq!(deliver_signed(api, &body).await?.status, 200);
    assert_eq!(
        admin.wait_stripe_state(&succeeded, "applied").await?,
        Some(3000)
    );
    assert_eq!(admin.balance(&w).await?, 100 + 3000);

    // A late `completed … paid` for the same session is not a second payment.
    let late = unique("evt");
    let body = session_event(&paid(&late, &cs, &w.hash, &tier.link_id));
    assert_eq!(deliver_signed(api, &body).await?.status, 200);
    admin.wait_stripe_state(&late, "ignored").await?;
    assert_eq!(admin.balance(&w).await?, 100 + 3000);

    worker.stop().await?;
    admin.drop_tier(&tier).await?;
    Ok(())
}

#[tokio::test]
async fn bad_signatures_are_refused_and_store_nothing() -> Result<()> {
    let proxy = proxy_with_secret().await?;
    let api = proxy.api();
    let admin = Admin::connect().await?;
    let w = admin.new_wallet().await?;
    let path = "/stripe/webhook";

    let evt = unique("evt");
    let cs = unique("cs");
    let body = session_event(&paid(&evt, &cs, &w.hash, "plink_x"));
    let t = now();
    let tampered = body.replace("\"paid\"", "\"PAID\"");
    let cases: Vec<(&str, String, Option<String>)> = vec![
        (
            "wrong secret",
            body.clone(),
            Some(signature(&body, "whsec_not_ours", t)),
        ),
        (
            "tampered body",
            tampered,
            Some(signature(&body, TEST_SECRET, t)),
        ),
        ("missing header", body.clone(), None),
        ("empty header", body.clone(), Some(String::new())),
        ("garbage header", body.clone(), Some("t=now,v1=zz".into())),
        (
            "no v1",
            body.clone(),
            Some(format!("t={t},v0={}", v1(&body, TEST_SECRET, t))),
        ),
        (
            "stale timestamp",
            body.clone(),
            Some(signature(&body, TEST_SECRET, t - 600)),
        ),
        (
            "timestamp from the future",
            body.clone(),
            Some(signature(&body, TEST_SECRET, t + 600)),
        ),
        (
            "signed with another t",
            body.clone(),
            Some(format!("t={},v1={}", t - 1, v1(&body, TEST_SECRET, t))),
        ),
    ];
    for (what, body, sig) in cases {
        let r = deliver(api, path, &body, sig.as_deref()).await?;
        assert_eq!(r.status, 400, "{what}: {:?}", r.text());
        assert!(
            r.text().starts_with("Bad Request: "),
            "{what}: {:?}",
            r.text()
        );
        assert!(!r.text().contains(TEST_SECRET), "{what}");
        assert_eq!(r.cost(), None, "{what}");
    }
    assert_eq!(admin.stripe_event_count(&evt).await?, 0, "nothing recorded");

    let r = deliver(
        api,
        path,
        &body,
        Some(&signature(&body, TEST_SECRET, t - 600)),
    )
    .await?;
    assert!(r.text().contains("tolerance"), "{:?}", r.text());
    let r = deliver(api, path, &body, None).await?;
    assert_eq!(r.text(), "Bad Request: missing Stripe-Signature header");

    // Secret rotation: one of several v1 signatures matching is enough.
    let rotated = format!(
        "t={t},v1={},v1={}",
        v1(&body, "whsec_old_secret", t),
        v1(&body, TEST_SECRET, t)
    );
    let r = deliver(api, path, &body, Some(&rotated)).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert_eq!(admin.stripe_event_count(&evt).await?, 1);
    Ok(())
}

#[tokio::test]
async fn signed_but_malformed_or_foreign_events() -> Result<()> {
    let proxy = proxy_with_secret().await?;
    let api = proxy.api();
    let admin = Admin::connect().await?;
    let worker = TestWorker::start()?;

    // Signed, but not an event: refused by the database's check, nothing stored.
    for body in ["[]", "{\"type\":\"x\"}", "not json"] {
        let r = deliver_signed(api, body).await?;
        assert_eq!(r.status, 400, "{body}: {:?}", r.text());
    }
    // An event type echovalue does not credit: acknowledged, kept as ignored.
    let evt = unique("evt");
    let body = format!(
        r#"{{"id":"{evt}","object":"event","type":"customer.created","data":{{"object":{{"id":"cus_1"}}}}}}"#
    );
    let r = deliver_signed(api, &body).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    admin.wait_stripe_state(&evt, "ignored").await?;

    // Above the body limit: 413 before anything is read into the database.
    let big = format!(
        r#"{{"id":"{}","type":"x","pad":"{}"}}"#,
        unique("evt"),
        "x".repeat(70_000)
    );
    let r = deliver_signed(api, &big).await?;
    assert_eq!(r.status, 413);

    worker.stop().await?;
    Ok(())
}

#[tokio::test]
async fn unknown_wallet_and_tier_are_kept_visible_and_retryable() -> Result<()> {
    let proxy = proxy_with_secret().await?;
    let api = proxy.api();
    let admin = Admin::connect().await?;
    let tier = admin.new_tier(500).await?;
    let worker = TestWorker::start()?;
    let w = admin.new_wallet().await?;

    let no_wallet = unique("evt");
    let stranger = echovalue_tests::token::sha256_hex(&unique("nobody"));
    let body = session_event(&paid(&no_wallet, &unique("cs"), &stranger, &tier.link_id));
    assert_eq!(deliver_signed(api, &body).await?.status, 200);

    let no_tier = unique("evt");
    let missing_link = unique("plink");
    let body = session_event(&paid(&no_tier, &unique("cs"), &w.hash, &missing_link));
    assert_eq!(deliver_signed(api, &body).await?.status, 200);

    let no_ref = unique("evt");
    let body = session_event(&Session {
        client_reference_id: None,
        ..paid(&no_ref, &unique("cs"), "", &tier.link_id)
    });
    assert_eq!(deliver_signed(api, &body).await?.status, 200);

    admin
        .wait_stripe_state(&no_wallet, "unknown_wallet")
        .await?;
    admin.wait_stripe_state(&no_tier, "unknown_tier").await?;
    admin.wait_stripe_state(&no_ref, "unknown_wallet").await?;
    let (state, detail) = admin.stripe_unapplied(&no_tier).await?.unwrap_or_default();
    assert_eq!(state, "unknown_tier");
    assert!(detail.unwrap_or_default().contains(&missing_link));
    assert!(admin.stripe_unapplied(&no_wallet).await?.is_some());
    assert!(admin.stripe_unapplied(&no_ref).await?.is_some());
    assert_eq!(admin.balance(&w).await?, 100);

    // The operator adds the missing tier and retries: credited once.
    let late_tier = admin.new_tier_for_link(&missing_link, 250).await?;
    assert_eq!(admin.stripe_retry(&no_tier).await?, "pending");
    assert_eq!(
        admin.wait_stripe_state(&no_tier, "applied").await?,
        Some(250)
    );
    assert_eq!(admin.balance(&w).await?, 100 + 250);
    assert!(admin.stripe_unapplied(&no_tier).await?.is_none());

    worker.stop().await?;
    admin.drop_tier(&tier).await?;
    admin.drop_tier(&late_tier).await?;
    Ok(())
}

#[tokio::test]
async fn webhook_endpoint_settings() -> Result<()> {
    // No secret configured: 503, so Stripe keeps the events and retries later.
    let (proxy, admin) = setup().await?;
    let w = admin.new_wallet().await?;
    let body = session_event(&paid(&unique("evt"), &unique("cs"), &w.hash, "plink_x"));
    let r = deliver_signed(proxy.api(), &body).await?;
    assert_eq!((r.status, r.text().as_str()), (503, "Service Unavailable"));

    // Only POST.
    let proxy = proxy_with_secret().await?;
    let r = proxy.api().get("/stripe/webhook", None).await?;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));

    // Another path when configured; the default one is then an ordinary 2023 kv path.
    let proxy = TestProxy::start_with(|c| {
        c.stripe_webhook_secret = Some(Secret::new(TEST_SECRET));
        c.stripe_webhook_path = "/hooks/stripe-in".into();
    })
    .await?;
    let evt = unique("evt");
    let body = session_event(&paid(&evt, &unique("cs"), &w.hash, "plink_x"));
    let sig = signature(&body, TEST_SECRET, now());
    let r = deliver(proxy.api(), "/hooks/stripe-in", &body, Some(&sig)).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert_eq!(admin.stripe_event_count(&evt).await?, 1);
    let r = deliver(proxy.api(), "/stripe/webhook", &body, Some(&sig)).await?;
    assert_eq!(r.status, 401, "a kv write without a token");
    Ok(())
}
