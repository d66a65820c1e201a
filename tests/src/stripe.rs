//! Stripe webhook fixtures: events shaped like the ones Stripe sends for Payment Links, and
//! `Stripe-Signature` headers computed here with `hmac` + `sha2`, independently of the
//! proxy's verification code.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::api::{Api, Reply};

/// The endpoint secret the test proxies are configured with.
pub const TEST_SECRET: &str = "whsec_echovalue_integration_test_secret";

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A fresh id with a prefix (`evt`, `cs`, `plink`), unique across test runs.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_test_{:016x}", rand::random::<u64>())
}

/// `t=<t>,v1=<hex hmac-sha256 of "<t>.<body>">`.
pub fn signature(body: &str, secret: &str, t: i64) -> String {
    format!("t={t},v1={}", v1(body, secret, t))
}

/// The bare `v1` value, for headers with several signatures.
pub fn v1(body: &str, secret: &str, t: i64) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(format!("{t}.{body}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a checkout session event carries for echovalue.
#[derive(Debug, Clone)]
pub struct Session<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub session_id: &'a str,
    pub client_reference_id: Option<&'a str>,
    pub payment_link: &'a str,
    pub payment_status: &'a str,
}

/// A `checkout.session.*` event as Stripe sends it for a Payment Link (the fields Stripe
/// always includes at the top, a realistic subset of the session object).
pub fn session_event(s: &Session<'_>) -> String {
    serde_json::json!({
        "id": s.event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": now(),
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": s.event_type,
        "data": {"object": {
            "id": s.session_id,
            "object": "checkout.session",
            "amount_subtotal": 100,
            "amount_total": 100,
            "client_reference_id": s.client_reference_id,
            "currency": "eur",
            "customer_details": {"email": "payer@example.com", "name": "Payer"},
            "livemode": false,
            "metadata": {},
            "mode": "payment",
            "payment_intent": "pi_test_1",
            "payment_link": s.payment_link,
            "payment_status": s.payment_status,
            "status": "complete",
            "url": null
        }}
    })
    .to_string()
}

/// A new `checkout.session.completed`, paid, for a wallet hash and a payment link: its event
/// id and body.
pub fn paid_session_event(wallet_hash: &str, payment_link: &str) -> (String, String) {
    let event_id = unique("evt");
    let body = session_event(&Session {
        event_id: &event_id,
        event_type: "checkout.session.completed",
        session_id: &unique("cs"),
        client_reference_id: Some(wallet_hash),
        payment_link,
        payment_status: "paid",
    });
    (event_id, body)
}

/// POSTs a body to the webhook path with the given `Stripe-Signature` (none when `None`).
pub async fn deliver(
    api: &Api,
    path: &str,
    body: &str,
    signature: Option<&str>,
) -> anyhow::Result<Reply> {
    let mut headers = vec![("content-type", "application/json; charset=utf-8")];
    if let Some(sig) = signature {
        headers.push(("stripe-signature", sig));
    }
    api.send(
        reqwest::Method::POST,
        path,
        None,
        Some(body.as_bytes().to_vec()),
        &headers,
    )
    .await
}

/// POSTs a body signed now with [`TEST_SECRET`] to `/stripe/webhook`.
pub async fn deliver_signed(api: &Api, body: &str) -> anyhow::Result<Reply> {
    let sig = signature(body, TEST_SECRET, now());
    deliver(api, "/stripe/webhook", body, Some(&sig)).await
}
