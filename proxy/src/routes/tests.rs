//! The routing table's cases: current and 2023 paths, which wins where they collide, wrong
//! methods, preflights, the Stripe webhook path and the metrics labels.

use super::*;

fn op(m: Method, p: &str) -> Operation {
    resolve(&m, p).1
}

#[test]
fn current_paths() {
    assert_eq!(
        resolve(&Method::POST, "/token"),
        (Route::Token, Operation::TokenForm)
    );
    assert_eq!(
        resolve(&Method::GET, "/token"),
        (Route::Token, Operation::Api(&api::WALLET_GET))
    );
    assert_eq!(
        op(Method::GET, "/recharge"),
        Operation::Api(&api::RECHARGE_LINK)
    );
    assert_eq!(
        resolve(&Method::GET, "/token/logs"),
        (Route::TokenLogs, Operation::Api(&api::LOGS_GET))
    );
    assert_eq!(op(Method::POST, "/kv/g/k"), Operation::Api(&api::KV_SET));
    assert_eq!(op(Method::GET, "/kv/g/k"), Operation::Api(&api::KV_GET));
    assert_eq!(
        op(Method::DELETE, "/kv/g/k"),
        Operation::Api(&api::KV_DELETE)
    );
    assert_eq!(op(Method::GET, "/healthz"), Operation::Healthz);
    assert_eq!(op(Method::GET, "/metrics"), Operation::Metrics);
    assert_eq!(
        resolve(&Method::POST, "/webhook"),
        (Route::Webhook, Operation::Api(&api::WEBHOOK_SET))
    );
    assert_eq!(
        op(Method::GET, "/webhook"),
        Operation::Api(&api::WEBHOOK_GET)
    );
    assert_eq!(
        op(Method::DELETE, "/webhook"),
        Operation::Api(&api::WEBHOOK_DELETE)
    );
    assert_eq!(op(Method::PUT, "/webhook"), Operation::MethodNotAllowed);
    assert_eq!(op(Method::GET, "/webhook/"), Operation::NotFound);
}

#[test]
fn named_webhooks() {
    assert_eq!(
        resolve(&Method::GET, "/webhook/alerts"),
        (Route::NamedWebhook, Operation::Api(&api::WEBHOOK_SHOW))
    );
    assert_eq!(
        op(Method::PUT, "/webhook/alerts"),
        Operation::Api(&api::WEBHOOK_PUT)
    );
    assert_eq!(
        op(Method::PATCH, "/webhook/alerts"),
        Operation::Api(&api::WEBHOOK_PATCH)
    );
    assert_eq!(
        op(Method::DELETE, "/webhook/alerts"),
        Operation::Api(&api::WEBHOOK_REMOVE)
    );
    assert_eq!(
        op(Method::POST, "/webhook/alerts"),
        Operation::MethodNotAllowed
    );
    assert_eq!(op(Method::OPTIONS, "/webhook/alerts"), Operation::Preflight);
    assert_eq!(
        Route::NamedWebhook.allow(),
        "GET, PUT, PATCH, DELETE, OPTIONS"
    );
    assert_eq!(op(Method::GET, "/webhook/a/b/c"), Operation::NotFound);
    assert_eq!(
        resolve(&Method::POST, "/webhook/alerts/test"),
        (Route::WebhookTest, Operation::Api(&api::WEBHOOK_TEST))
    );
    assert_eq!(
        op(Method::GET, "/webhook/alerts/test"),
        Operation::MethodNotAllowed
    );
    assert_eq!(Route::WebhookTest.allow(), "POST, OPTIONS");
    assert_eq!(op(Method::POST, "/webhook//test"), Operation::NotFound);
}

#[test]
fn legacy_paths() {
    assert_eq!(
        resolve(&Method::POST, "/"),
        (Route::Root, Operation::LegacyForm)
    );
    assert_eq!(op(Method::GET, "/"), Operation::Api(&api::WALLET_GET));
    assert_eq!(
        resolve(&Method::GET, "/logs"),
        (Route::Logs, Operation::Api(&api::LOGS_GET))
    );
    assert_eq!(
        resolve(&Method::GET, "/g/k"),
        (Route::LegacyKv, Operation::Api(&api::KV_GET))
    );
    assert_eq!(op(Method::POST, "/g/k"), Operation::Api(&api::KV_SET));
    assert_eq!(op(Method::DELETE, "/g/k"), Operation::Api(&api::KV_DELETE));
    // "logs" is not a current top-level name, so /logs/x is a 2023 kv path.
    assert_eq!(op(Method::GET, "/logs/x"), Operation::Api(&api::KV_GET));
}

#[test]
fn current_paths_win_over_legacy_kv() {
    assert_eq!(resolve(&Method::GET, "/token/logs").0, Route::TokenLogs);
    assert_eq!(
        resolve(&Method::POST, "/token/logs").1,
        Operation::MethodNotAllowed
    );
    for p in ["/token/x", "/recharge/x", "/healthz/x", "/metrics/x"] {
        assert_eq!(
            resolve(&Method::GET, p),
            (Route::Unknown, Operation::NotFound),
            "{p}"
        );
    }
}

#[test]
fn token_keys() {
    assert_eq!(
        resolve(&Method::POST, "/token/keys"),
        (Route::TokenKeys, Operation::Api(&api::TOKEN_KEY_CREATE))
    );
    assert_eq!(
        op(Method::GET, "/token/keys"),
        Operation::Api(&api::TOKEN_KEY_LIST)
    );
    assert_eq!(
        resolve(&Method::DELETE, "/token/keys/ab%2Dc"),
        (Route::TokenKey, Operation::Api(&api::TOKEN_KEY_REVOKE))
    );
    assert_eq!(
        op(Method::DELETE, "/token/keys/%FF"),
        Operation::Api(&api::TOKEN_KEY_REVOKE)
    );
    assert_eq!(
        op(Method::DELETE, "/token/keys"),
        Operation::MethodNotAllowed
    );
    assert_eq!(
        op(Method::GET, "/token/keys/x"),
        Operation::MethodNotAllowed
    );
    assert_eq!(op(Method::DELETE, "/token/keys/"), Operation::NotFound);
    assert_eq!(op(Method::DELETE, "/token/keys/a/b"), Operation::NotFound);
    assert_eq!(
        resolve(&Method::GET, "/token/keys/secret-id").0.pattern(),
        "/token/keys/{id}"
    );
}

#[test]
fn settings() {
    assert_eq!(
        op(Method::GET, "/token/settings"),
        Operation::Api(&api::SETTINGS_GET)
    );
    assert_eq!(
        op(Method::PUT, "/token/settings"),
        Operation::Api(&api::SETTINGS_PUT)
    );
    assert_eq!(
        op(Method::POST, "/token/settings"),
        Operation::MethodNotAllowed
    );
    assert_eq!(op(Method::GET, "/token/settings/x"), Operation::NotFound);
    // never a 2023 /{group}/{key}: `token` is a current top-level name
    assert_eq!(
        resolve(&Method::GET, "/token/settings").0,
        Route::TokenSettings
    );
}

#[test]
fn kv_listing_routes() {
    assert_eq!(
        resolve(&Method::GET, "/kv"),
        (Route::KvGroups, Operation::Api(&api::KV_GROUPS))
    );
    // `/kv/{group}` was never a 2023 path: "kv" is a current top-level name
    assert_eq!(
        resolve(&Method::GET, "/kv/default"),
        (Route::KvKeys, Operation::Api(&api::KV_LIST))
    );
    assert_eq!(Route::KvKeys.pattern(), "/kv/{group}");
    for m in [Method::POST, Method::DELETE, Method::PUT] {
        assert_eq!(op(m.clone(), "/kv"), Operation::MethodNotAllowed, "{m}");
        assert_eq!(op(m.clone(), "/kv/g"), Operation::MethodNotAllowed, "{m}");
    }
    assert_eq!(op(Method::OPTIONS, "/kv/g"), Operation::Preflight);
    assert_eq!(Route::KvKeys.allow(), "GET, OPTIONS");
    // the 2023 paths keep their own: a group named like a listing is still a 2023 key path
    assert_eq!(op(Method::GET, "/kvs/k"), Operation::Api(&api::KV_GET));
}

#[test]
fn unknown_paths_and_trailing_slashes() {
    for p in [
        "/kv/g/k/",
        "/kv/g/k/x",
        "/kv/g/",
        "/kv/",
        "/kv//",
        "/token/",
        "/a/b/c",
        "/g/",
        "",
        "x",
        "/nope",
    ] {
        assert_eq!(op(Method::GET, p), Operation::NotFound, "{p:?}");
    }
}

#[test]
fn wrong_methods_and_preflight() {
    assert_eq!(op(Method::PUT, "/kv/g/k"), Operation::MethodNotAllowed);
    assert_eq!(op(Method::DELETE, "/token"), Operation::MethodNotAllowed);
    assert_eq!(op(Method::POST, "/recharge"), Operation::MethodNotAllowed);
    assert_eq!(op(Method::HEAD, "/"), Operation::MethodNotAllowed);
    assert_eq!(op(Method::POST, "/healthz"), Operation::MethodNotAllowed);
    assert_eq!(op(Method::OPTIONS, "/kv/g/k"), Operation::Preflight);
    assert_eq!(op(Method::OPTIONS, "/token"), Operation::Preflight);
    assert_eq!(op(Method::OPTIONS, "/nope"), Operation::NotFound);
    for p in [
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/dashboard",
        "/dashboard/static/app.js",
    ] {
        assert_eq!(op(Method::OPTIONS, p), Operation::MethodNotAllowed, "{p}");
    }
    assert_eq!(Route::Kv.allow(), "GET, POST, DELETE, OPTIONS");
}

#[test]
fn stripe_webhook_at_its_configured_path() {
    let hook = |m: Method, p: &str| resolve_with_webhook(&m, p, "/stripe/webhook");
    assert_eq!(
        hook(Method::POST, "/stripe/webhook"),
        (Route::StripeWebhook, Operation::StripeWebhook)
    );
    assert_eq!(
        hook(Method::GET, "/stripe/webhook"),
        (Route::StripeWebhook, Operation::MethodNotAllowed)
    );
    assert_eq!(
        hook(Method::OPTIONS, "/stripe/webhook").1,
        Operation::MethodNotAllowed
    );
    assert_eq!(Route::StripeWebhook.allow(), "POST");
    // Other paths route as before; a 2023 kv path that is not the webhook stays one.
    assert_eq!(
        hook(Method::GET, "/token").1,
        Operation::Api(&api::WALLET_GET)
    );
    assert_eq!(
        hook(Method::GET, "/stripe/other").1,
        Operation::Api(&api::KV_GET)
    );
    assert_eq!(
        resolve_with_webhook(&Method::POST, "/hooks/s", "/hooks/s").1,
        Operation::StripeWebhook
    );
    assert_eq!(
        resolve_with_webhook(&Method::POST, "/stripe/webhook", "/hooks/s").1,
        Operation::Api(&api::KV_SET)
    );
}

#[test]
fn attachments() {
    assert_eq!(
        resolve(&Method::GET, "/attachments/42"),
        (Route::Attachment, Operation::AttachmentGet("42".into()))
    );
    // the id is checked in SQL (404 for anything not a number)
    assert_eq!(
        resolve(&Method::GET, "/attachments/x%2F1").1,
        Operation::AttachmentGet("x%2F1".into())
    );
    assert_eq!(
        resolve(&Method::POST, "/attachments/42").1,
        Operation::MethodNotAllowed
    );
    // never a 2023 kv path, nor a longer path
    assert_eq!(
        resolve(&Method::GET, "/attachments/").1,
        Operation::NotFound
    );
    assert_eq!(
        resolve(&Method::GET, "/attachments/1/2").1,
        Operation::NotFound
    );
}

#[test]
fn labels_are_patterns() {
    assert_eq!(
        resolve(&Method::GET, "/kv/secret/thing").0.pattern(),
        "/kv/{group}/{key}"
    );
    assert_eq!(resolve(&Method::GET, "/a/b").0.pattern(), "/{group}/{key}");
    assert_eq!(resolve(&Method::GET, "/zzz").0.pattern(), "unmatched");
}
