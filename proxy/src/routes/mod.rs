//! The routing table: one `match (method, path)` from a request line to an [`Operation`],
//! most of them an API function of [`crate::api`] (one line per endpoint).
//!
//! Current paths (SPEC §2) win over the 2023 ones: a two-segment path whose first segment is a
//! current top-level name (`/token/logs`, `/kv/x`, `/token/keys`, ...) is never read as a 2023
//! `/{group}/{key}` path.

use http::Method;

use crate::api::{self, Function};
use crate::assets::{self, Asset};

/// A known path pattern; its [`Route::pattern`] is the metrics label (never the raw path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Token,
    TokenLogs,
    TokenKeys,
    TokenKey,
    TokenSettings,
    Recharge,
    KvGroups,
    KvKeys,
    Kv,
    Webhook,
    NamedWebhook,
    WebhookTest,
    Attachment,
    Root,
    Logs,
    LegacyKv,
    Healthz,
    Metrics,
    OpenApi,
    Dashboard,
    DashboardStatic,
    StripeWebhook,
    Unknown,
}

impl Route {
    pub fn pattern(self) -> &'static str {
        match self {
            Route::Token => "/token",
            Route::TokenLogs => "/token/logs",
            Route::TokenKeys => "/token/keys",
            Route::TokenKey => "/token/keys/{id}",
            Route::TokenSettings => "/token/settings",
            Route::Recharge => "/recharge",
            Route::KvGroups => "/kv",
            Route::KvKeys => "/kv/{group}",
            Route::Kv => "/kv/{group}/{key}",
            Route::Webhook => "/webhook",
            Route::NamedWebhook => "/webhook/{webhookId}",
            Route::WebhookTest => "/webhook/{webhookId}/test",
            Route::Attachment => "/attachments/{id}",
            Route::Root => "/",
            Route::Logs => "/logs",
            Route::LegacyKv => "/{group}/{key}",
            Route::Healthz => "/healthz",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
            Route::Dashboard => "/dashboard",
            Route::DashboardStatic => "/dashboard/static/{file}",
            // The configured path may differ; the label names the endpoint, not the path.
            Route::StripeWebhook => "stripe-webhook",
            Route::Unknown => "unmatched",
        }
    }

    /// The methods served on this path, for `Allow` and CORS preflights.
    pub fn allow(self) -> &'static str {
        match self {
            Route::Token | Route::Root | Route::TokenKeys => "GET, POST, OPTIONS",
            Route::TokenKey => "DELETE, OPTIONS",
            Route::TokenSettings => "GET, PUT, OPTIONS",
            Route::NamedWebhook => "GET, PUT, PATCH, DELETE, OPTIONS",
            Route::WebhookTest => "POST, OPTIONS",
            Route::Kv | Route::LegacyKv | Route::Webhook => "GET, POST, DELETE, OPTIONS",
            Route::TokenLogs
            | Route::Recharge
            | Route::Logs
            | Route::Attachment
            | Route::KvGroups
            | Route::KvKeys => "GET, OPTIONS",
            Route::Healthz
            | Route::Metrics
            | Route::OpenApi
            | Route::Dashboard
            | Route::DashboardStatic => "GET",
            Route::StripeWebhook => "POST",
            Route::Unknown => "",
        }
    }
}

/// What a request asks for, before its body or headers are looked at.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// An API function whose arguments come from the request (see [`api::Source`]).
    Api(&'static Function),
    /// `POST /token`: the form body must be `token=new`.
    TokenForm,
    /// `POST /` (2023): form `token=new` or `token=recharge&amount=`.
    LegacyForm,
    /// `GET /attachments/{id}?expires=…&sig=…`, the raw id segment (checked in SQL).
    AttachmentGet(String),
    Healthz,
    Metrics,
    /// A file compiled into the proxy (the OpenAPI description, the dashboard).
    Asset(Asset),
    /// `POST` on the configured Stripe webhook path: verify, then record the event.
    StripeWebhook,
    Preflight,
    MethodNotAllowed,
    NotFound,
}

/// Top-level names of current paths; a 2023 `/{group}/{key}` may not start with one of them.
const CURRENT_TOP_LEVEL: &[&str] = &[
    "token",
    "kv",
    "recharge",
    "webhook",
    "attachments",
    "healthz",
    "metrics",
];

/// Like [`resolve`], with the Stripe webhook at `stripe_webhook_path` (a setting): that exact
/// path wins over every other route. Stripe is not a browser, so there is no preflight.
pub fn resolve_with_webhook(
    method: &Method,
    path: &str,
    stripe_webhook_path: &str,
) -> (Route, Operation) {
    if path != stripe_webhook_path {
        return resolve(method, path);
    }
    let op = match *method {
        Method::POST => Operation::StripeWebhook,
        _ => Operation::MethodNotAllowed,
    };
    (Route::StripeWebhook, op)
}

/// Maps a method and a raw (still percent-encoded) path without query to its route and operation.
pub fn resolve(method: &Method, path: &str) -> (Route, Operation) {
    let route = route_of(path);
    let op = match (method, route) {
        (_, Route::Unknown) => Operation::NotFound,
        // A preflight only where browsers call the API: the paths whose methods include OPTIONS.
        (&Method::OPTIONS, _) if route.allow().contains("OPTIONS") => Operation::Preflight,
        (&Method::OPTIONS, _) => Operation::MethodNotAllowed,

        (&Method::POST, Route::Token) => Operation::TokenForm,
        (&Method::POST, Route::Root) => Operation::LegacyForm,
        (&Method::GET, Route::Healthz) => Operation::Healthz,
        (&Method::GET, Route::Metrics) => Operation::Metrics,
        (&Method::GET, Route::OpenApi) => Operation::Asset(assets::openapi()),
        (&Method::GET, Route::Dashboard) => Operation::Asset(assets::dashboard_index()),
        (&Method::GET, Route::DashboardStatic) => {
            match path
                .strip_prefix(assets::STATIC_PREFIX)
                .and_then(assets::dashboard_static)
            {
                Some(asset) => Operation::Asset(asset),
                None => Operation::NotFound,
            }
        }
        (&Method::GET, Route::Attachment) => {
            Operation::AttachmentGet(path.rsplit('/').next().unwrap_or("").to_owned())
        }

        (&Method::GET, Route::Token | Route::Root) => Operation::Api(&api::WALLET_GET),
        (&Method::GET, Route::Recharge) => Operation::Api(&api::RECHARGE_LINK),
        (&Method::GET, Route::TokenLogs | Route::Logs) => Operation::Api(&api::LOGS_GET),
        (&Method::POST, Route::TokenKeys) => Operation::Api(&api::TOKEN_KEY_CREATE),
        (&Method::GET, Route::TokenKeys) => Operation::Api(&api::TOKEN_KEY_LIST),
        (&Method::DELETE, Route::TokenKey) => Operation::Api(&api::TOKEN_KEY_REVOKE),
        (&Method::GET, Route::TokenSettings) => Operation::Api(&api::SETTINGS_GET),
        (&Method::PUT, Route::TokenSettings) => Operation::Api(&api::SETTINGS_PUT),
        (&Method::POST, Route::Webhook) => Operation::Api(&api::WEBHOOK_SET),
        (&Method::GET, Route::Webhook) => Operation::Api(&api::WEBHOOK_GET),
        (&Method::DELETE, Route::Webhook) => Operation::Api(&api::WEBHOOK_DELETE),
        (&Method::GET, Route::NamedWebhook) => Operation::Api(&api::WEBHOOK_SHOW),
        (&Method::PUT, Route::NamedWebhook) => Operation::Api(&api::WEBHOOK_PUT),
        (&Method::PATCH, Route::NamedWebhook) => Operation::Api(&api::WEBHOOK_PATCH),
        (&Method::DELETE, Route::NamedWebhook) => Operation::Api(&api::WEBHOOK_REMOVE),
        (&Method::POST, Route::WebhookTest) => Operation::Api(&api::WEBHOOK_TEST),
        (&Method::GET, Route::KvGroups) => Operation::Api(&api::KV_GROUPS),
        (&Method::GET, Route::KvKeys) => Operation::Api(&api::KV_LIST),
        (&Method::POST, Route::Kv | Route::LegacyKv) => Operation::Api(&api::KV_SET),
        (&Method::GET, Route::Kv | Route::LegacyKv) => Operation::Api(&api::KV_GET),
        (&Method::DELETE, Route::Kv | Route::LegacyKv) => Operation::Api(&api::KV_DELETE),

        _ => Operation::MethodNotAllowed,
    };
    (route, op)
}

fn route_of(path: &str) -> Route {
    if path == "/" {
        return Route::Root;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Route::Unknown;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["token"] => Route::Token,
        ["token", "logs"] => Route::TokenLogs,
        ["token", "keys"] => Route::TokenKeys,
        ["token", "keys", id] if !id.is_empty() => Route::TokenKey,
        ["token", "settings"] => Route::TokenSettings,
        ["recharge"] => Route::Recharge,
        ["webhook"] => Route::Webhook,
        ["webhook", id] if !id.is_empty() => Route::NamedWebhook,
        ["webhook", id, "test"] if !id.is_empty() => Route::WebhookTest,
        ["attachments", id] if !id.is_empty() => Route::Attachment,
        ["logs"] => Route::Logs,
        ["healthz"] => Route::Healthz,
        ["metrics"] => Route::Metrics,
        ["openapi.json"] => Route::OpenApi,
        // `/dashboard/{x}` stays a 2023 key path; the dashboard's files are one level deeper
        ["dashboard"] => Route::Dashboard,
        ["dashboard", "static", file] if !file.is_empty() => Route::DashboardStatic,
        // A trailing slash leaves an empty last segment: `/kv/g/` is not `/kv/g/{key}`.
        ["kv"] => Route::KvGroups,
        ["kv", group] if !group.is_empty() => Route::KvKeys,
        ["kv", _, key] if !key.is_empty() => Route::Kv,
        [group, key] if !CURRENT_TOP_LEVEL.contains(group) && !key.is_empty() => Route::LegacyKv,
        _ => Route::Unknown,
    }
}

#[cfg(test)]
mod tests;
