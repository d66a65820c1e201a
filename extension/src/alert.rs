//! What a wallet alert says (SPEC §14): the subject and text of a `wallet.low_balance` or
//! `wallet.recharged` payload, shown by the chat formats (`format.rs`) and sent as the alert
//! email, so a webhook and an email of one alert say the same.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

use crate::format::{str_at, Mail};

/// Who an alert is from in the chat formats' `From:` line.
const ALERT_FROM: &str = "echovalue";

fn number_at(payload: &Value, key: &str) -> i64 {
    payload.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// The alert a payload is (its `type` is `wallet.low_balance` or `wallet.recharged`), as a
/// mail; None for any other payload.
pub(crate) fn mail(payload: &Value) -> Option<Mail> {
    let wallet = number_at(payload, "wallet");
    let hash = str_at(payload, &["token_hash"]);
    let (subject, text) = match payload.get("type")?.as_str()? {
        "wallet.low_balance" => {
            let threshold = number_at(payload, "threshold");
            (
                format!("echovalue: low balance, {wallet} credits left"),
                format!(
                    "Your echovalue wallet has {wallet} credits left, below your alert threshold \
                     of {threshold} credits.\nWallet: {hash}"
                ),
            )
        }
        "wallet.recharged" => {
            let credits = number_at(payload, "credits");
            (
                format!("echovalue: wallet recharged with {credits} credits"),
                format!(
                    "{credits} credits were added to your echovalue wallet; its balance is now \
                     {wallet} credits.\nWallet: {hash}"
                ),
            )
        }
        _ => return None,
    };
    Some(Mail {
        subject,
        from_email: String::new(),
        from_name: ALERT_FROM.to_owned(),
        text,
    })
}

/// `echovalue._alert_email(payload)`: `{"subject", "text"}` of the alert email for an alert
/// payload (its JSON text); NULL for any other payload.
#[pg_extern(immutable, parallel_safe, name = "_alert_email")]
fn alert_email_sql(p_payload: Option<&str>) -> Option<JsonB> {
    let payload: Value = serde_json::from_str(p_payload?).ok()?;
    let m = mail(&payload)?;
    Some(JsonB(json!({"subject": m.subject, "text": m.text})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_have_their_text_and_others_none() {
        let low = json!({"type": "wallet.low_balance", "wallet": 99, "threshold": 100,
                         "token_hash": "ab"});
        let m = mail(&low).unwrap();
        assert_eq!(m.subject, "echovalue: low balance, 99 credits left");
        assert!(m.text.contains("threshold of 100 credits.\nWallet: ab"));
        let up = json!({"type": "wallet.recharged", "credits": 5, "wallet": 7, "token_hash": "x"});
        assert_eq!(
            mail(&up).unwrap().subject,
            "echovalue: wallet recharged with 5 credits"
        );
        assert!(mail(&json!({"type": "scheduled_webhook_run"})).is_none());
        assert!(mail(&json!({"subject": "hi"})).is_none());
    }
}
