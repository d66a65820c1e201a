//! Request bodies: `--body` text, stdin or a file, and the JSON objects the flag forms build.
//! Only the fields given go in; the server checks them all (unknown fields, bad limits, URL
//! rules), so nothing is checked here.

use std::io::Read;

use serde_json::{Map, Value};

use crate::args::{KeyFields, WebhookFields};

/// A `--body` argument: `-` reads stdin, `@FILE` reads that file, anything else is the body.
pub fn from_arg(arg: &str) -> Result<Vec<u8>, String> {
    if arg == "-" {
        stdin()
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
    } else {
        Ok(arg.as_bytes().to_vec())
    }
}

/// All of stdin, as bytes.
pub fn stdin() -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(buf)
}

/// A webhook's body: `--body` as given, or `{"url","headers","webhookId","format"}` from the
/// flags (`id` only for `POST /webhook`, where the body names the webhook).
pub fn webhook(id: Option<&str>, f: &WebhookFields) -> Result<Vec<u8>, String> {
    if let Some(body) = &f.body {
        return from_arg(body);
    }
    let mut o = Map::new();
    put(&mut o, "url", f.url.clone().map(Value::String));
    if !f.headers.is_empty() {
        let headers: Map<String, Value> = f
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        o.insert("headers".into(), Value::Object(headers));
    }
    put(&mut o, "webhookId", id.map(|s| Value::String(s.to_owned())));
    put(&mut o, "format", f.format.clone().map(Value::String));
    Ok(Value::Object(o).to_string().into_bytes())
}

/// A new token's body: `--body` as given, or `{"label","limits","scopes","groups"}`.
pub fn key(f: &KeyFields) -> Result<Vec<u8>, String> {
    if let Some(body) = &f.body {
        return from_arg(body);
    }
    let mut o = Map::new();
    put(&mut o, "label", f.label.clone().map(Value::String));
    let mut limits = Map::new();
    put(
        &mut limits,
        "per_request",
        f.per_request.as_deref().map(number),
    );
    put(&mut limits, "daily", f.daily.as_deref().map(number));
    put(&mut limits, "monthly", f.monthly.as_deref().map(number));
    if !limits.is_empty() {
        o.insert("limits".into(), Value::Object(limits));
    }
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    put(
        &mut o,
        "scopes",
        (!f.scopes.is_empty()).then(|| strings(&f.scopes)),
    );
    put(
        &mut o,
        "groups",
        (!f.groups.is_empty()).then(|| strings(&f.groups)),
    );
    Ok(Value::Object(o).to_string().into_bytes())
}

fn put(o: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        o.insert(key.to_owned(), v);
    }
}

/// A limit as JSON: a number or `null` as written; anything else as a string, for the server
/// to refuse in its own words.
fn number(s: &str) -> Value {
    match serde_json::from_str::<Value>(s.trim()) {
        Ok(v @ (Value::Number(_) | Value::Null)) => v,
        _ => Value::String(s.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: Vec<u8>) -> Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn webhook_body_has_only_the_given_fields() {
        let f = WebhookFields {
            url: Some("https://example.com/hook".into()),
            ..Default::default()
        };
        assert_eq!(
            parsed(webhook(None, &f).unwrap()),
            serde_json::json!({"url": "https://example.com/hook"})
        );
        let f = WebhookFields {
            url: Some("https://example.com/hook".into()),
            headers: vec![
                ("Authorization".into(), "Bearer a:b".into()),
                ("X-Team".into(), "ops".into()),
            ],
            format: Some("slack".into()),
            body: None,
        };
        assert_eq!(
            parsed(webhook(Some("alerts"), &f).unwrap()),
            serde_json::json!({"url": "https://example.com/hook", "webhookId": "alerts",
                "format": "slack", "headers": {"Authorization": "Bearer a:b", "X-Team": "ops"}})
        );
        assert_eq!(webhook(None, &WebhookFields::default()).unwrap(), b"{}");
    }

    #[test]
    fn a_given_body_is_sent_as_it_is() {
        let f = WebhookFields {
            body: Some("{\"format\": \"discord\" }".into()),
            ..Default::default()
        };
        assert_eq!(webhook(None, &f).unwrap(), b"{\"format\": \"discord\" }");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        std::fs::write(&path, b"{\"label\":\"from file\"}").unwrap();
        let f = KeyFields {
            body: Some(format!("@{}", path.display())),
            ..Default::default()
        };
        assert_eq!(key(&f).unwrap(), b"{\"label\":\"from file\"}");
        assert!(from_arg("@/no/such/file").is_err());
    }

    #[test]
    fn key_body_has_only_the_given_fields_and_limits_as_numbers() {
        assert_eq!(key(&KeyFields::default()).unwrap(), b"{}");
        let f = KeyFields {
            label: Some("CI pipeline".into()),
            per_request: Some("5".into()),
            monthly: Some("null".into()),
            scopes: vec!["kv:read".into(), "logs".into()],
            groups: vec!["ci".into()],
            ..Default::default()
        };
        assert_eq!(
            parsed(key(&f).unwrap()),
            serde_json::json!({"label": "CI pipeline", "limits": {"per_request": 5, "monthly": null},
                "scopes": ["kv:read", "logs"], "groups": ["ci"]})
        );
        let f = KeyFields {
            daily: Some("lots".into()),
            ..Default::default()
        };
        assert_eq!(
            parsed(key(&f).unwrap()),
            serde_json::json!({"limits": {"daily": "lots"}})
        );
    }
}
