//! The `Stripe-Signature` check of Stripe webhooks, done by `async-stripe-webhook` (the
//! stripe-rust family's webhook crate): HMAC-SHA256 of `"{t}.{body}"` with the endpoint
//! secret, any of several `v1=` signatures may match (secret rotation), constant-time compare,
//! 5-minute tolerance on `t`. The proxy only decides "verified or not"; what an event means is
//! decided in SQL (`echovalue.stripe_event_record`).

use stripe_webhook::{Webhook, WebhookError};

/// Why a webhook request is refused; the text is the `400` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MissingSignature,
    BadSignature,
    Stale,
    NotUtf8,
}

impl Rejection {
    pub fn body(self) -> &'static str {
        match self {
            Rejection::MissingSignature => "Bad Request: missing Stripe-Signature header",
            Rejection::BadSignature => "Bad Request: invalid Stripe-Signature",
            Rejection::Stale => {
                "Bad Request: Stripe-Signature timestamp outside the 5-minute tolerance"
            }
            Rejection::NotUtf8 => "Bad Request: body is not UTF-8",
        }
    }
}

/// Checks the signature of a webhook body against the endpoint secret; `Ok` with the body as
/// text when Stripe signed it within the tolerance.
pub fn verify<'b>(
    body: &'b [u8],
    signature: Option<&str>,
    secret: &str,
) -> Result<&'b str, Rejection> {
    let signature = signature.ok_or(Rejection::MissingSignature)?;
    let payload = std::str::from_utf8(body).map_err(|_| Rejection::NotUtf8)?;
    match Webhook::construct_event(payload, signature, secret) {
        Ok(_) => Ok(payload),
        // The crate checks signature, then timestamp, then parses the event with its own
        // types: a parse error therefore comes from a genuine, fresh Stripe request. Its
        // types may lag behind Stripe's API, so such an event is still recorded (the
        // database checks the few fields it needs) rather than refused and lost.
        Err(WebhookError::BadParse(_)) => Ok(payload),
        Err(WebhookError::BadTimestamp(_)) => Err(Rejection::Stale),
        Err(WebhookError::BadSignature | WebhookError::BadHeader(_) | WebhookError::BadKey) => {
            Err(Rejection::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    const SECRET: &str = "whsec_unit_test";
    const EVENT: &str = r#"{"id":"evt_1","object":"event","api_version":"2024-06-20","created":1700000000,"livemode":false,"pending_webhooks":1,"request":{"id":null,"idempotency_key":null},"type":"checkout.session.completed","data":{"object":{"id":"cs_1","object":"checkout.session","client_reference_id":"abc","payment_link":"plink_1","payment_status":"paid"}}}"#;

    /// Signs independently of the crate under test.
    fn sign(secret: &str, t: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn accepts_a_fresh_valid_signature() {
        let t = now();
        let header = format!("t={t},v1={}", sign(SECRET, t, EVENT));
        assert_eq!(verify(EVENT.as_bytes(), Some(&header), SECRET), Ok(EVENT));
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let t = now();
        let good = sign(SECRET, t, EVENT);
        let old = sign("whsec_rotated_out", t, EVENT);
        for header in [
            format!("t={t},v1={old},v1={good}"),
            format!("t={t},v1={good},v1={old}"),
            format!("t={t},v0={old},v1={good}"),
        ] {
            assert_eq!(
                verify(EVENT.as_bytes(), Some(&header), SECRET),
                Ok(EVENT),
                "{header}"
            );
        }
    }

    #[test]
    fn refuses_wrong_secret_tampered_body_and_garbage() {
        let t = now();
        let wrong = format!("t={t},v1={}", sign("whsec_other", t, EVENT));
        assert_eq!(
            verify(EVENT.as_bytes(), Some(&wrong), SECRET),
            Err(Rejection::BadSignature)
        );
        let header = format!("t={t},v1={}", sign(SECRET, t, EVENT));
        let tampered = EVENT.replace("plink_1", "plink_3");
        assert_eq!(
            verify(tampered.as_bytes(), Some(&header), SECRET),
            Err(Rejection::BadSignature)
        );
        let sig = sign(SECRET, t, EVENT);
        for garbage in [
            String::new(),
            "nonsense".to_owned(),
            format!("v1={sig}"),
            format!("t={t}"),
            format!("t=abc,v1={sig}"),
            format!("t={},v1={sig}", t + 1),
            format!("t={t},v1=zz"),
        ] {
            assert_eq!(
                verify(EVENT.as_bytes(), Some(&garbage), SECRET),
                Err(Rejection::BadSignature),
                "{garbage:?}"
            );
        }
        assert_eq!(
            verify(EVENT.as_bytes(), None, SECRET),
            Err(Rejection::MissingSignature)
        );
    }

    #[test]
    fn refuses_timestamps_outside_five_minutes() {
        for t in [now() - 301, now() - 3600, now() + 3600] {
            let header = format!("t={t},v1={}", sign(SECRET, t, EVENT));
            assert_eq!(
                verify(EVENT.as_bytes(), Some(&header), SECRET),
                Err(Rejection::Stale),
                "t={t}"
            );
        }
        let t = now() - 240;
        let header = format!("t={t},v1={}", sign(SECRET, t, EVENT));
        assert_eq!(verify(EVENT.as_bytes(), Some(&header), SECRET), Ok(EVENT));
    }

    #[test]
    fn an_event_the_crate_parses_fully_is_verified() {
        // The crate's own example event; a full checkout session would parse the same way.
        let body = r#"{"id":"evt_test","object":"event","api_version":"2017-05-25","created":1492774577,"livemode":false,"pending_webhooks":1,"data":{"object":{"object":"bank_account","country":"us","currency":"usd","id":"ba_test","last4":"6789","status":"verified"}},"type":"account.external_account.created"}"#;
        assert!(
            Webhook::insecure(body).is_ok(),
            "the crate parses this event"
        );
        let t = now();
        let header = format!("t={t},v1={}", sign(SECRET, t, body));
        assert_eq!(verify(body.as_bytes(), Some(&header), SECRET), Ok(body));
    }

    #[test]
    fn a_signed_body_the_crate_cannot_parse_is_still_verified() {
        let body = r#"{"id":"evt_2","type":"some.future_event"}"#;
        let t = now();
        let header = format!("t={t},v1={}", sign(SECRET, t, body));
        assert_eq!(verify(body.as_bytes(), Some(&header), SECRET), Ok(body));
        // ... but only when signed: the same body with a bad signature is refused.
        let bad = format!("t={t},v1={}", sign("whsec_other", t, body));
        assert_eq!(
            verify(body.as_bytes(), Some(&bad), SECRET),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn refuses_a_body_that_is_not_utf8() {
        let t = now();
        assert_eq!(
            verify(&[0xff, 0xfe], Some(&format!("t={t},v1=00")), SECRET),
            Err(Rejection::NotUtf8)
        );
    }
}
