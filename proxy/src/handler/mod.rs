//! One request, start to finish: route it, check the token, read the body when the operation
//! needs one, make the one SQL call ([`calls`]), and render the outcome. Business rules stay
//! in SQL.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use deadpool_postgres::Pool;
use echovalue_common::token;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, StatusCode};
use hyper::body::Body;

use crate::api::{self, Arg};
use crate::awaits::Awaits;
use crate::batch::{self, Batcher};
use crate::client::client_addr;
use crate::config::Config;
use crate::db::{self, DbError};
use crate::metrics::Metrics;
use crate::outcome::{self, plain, Reply};
use crate::request::{declared_too_large, query_param, read_body};
use crate::routes::{self, Operation, Route};
use crate::{cors, stripe};

mod calls;
use calls::Ctx;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What every request shares.
pub struct State {
    pub pool: Pool,
    pub metrics: Metrics,
    pub config: Config,
    /// Runs the API calls, batching those that would wait (group commit).
    pub batcher: Batcher,
    /// Calls waiting for the worker's answer (webhook tests).
    pub awaits: Arc<Awaits>,
}

impl State {
    pub fn new(pool: Pool, config: Config) -> Self {
        let metrics = Metrics::new();
        let sizes = batch::Sizes {
            max: config.batch_max,
            slots: config.batch_slots(),
            queue_max: config.limits.queue_max,
            queue_timeout: config.limits.queue_timeout(),
        };
        let batcher = Batcher::new(pool.clone(), &sizes, metrics.batch());
        State {
            pool,
            metrics,
            config,
            batcher,
            awaits: Arc::new(Awaits::default()),
        }
    }
}

/// The hyper service: never fails, every problem becomes a reply.
pub async fn handle<B>(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<B>,
) -> Result<Reply, Infallible>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let method = req.method().clone();
    let (route, op) =
        routes::resolve_with_webhook(&method, req.uri().path(), &state.config.stripe_webhook_path);
    let mut reply = if declared_too_large(req.headers(), state.config.max_body_bytes) {
        outcome::payload_too_large()
    } else {
        dispatch(&state, peer, route, op, req).await
    };
    cors::decorate(reply.headers_mut());
    let elapsed = started.elapsed();
    state
        .metrics
        .observe(route.pattern(), &method, reply.status(), elapsed);
    // The route pattern, not the path: paths carry user keys, and tokens never appear here.
    tracing::info!(
        method = %method,
        route = route.pattern(),
        status = reply.status().as_u16(),
        micros = elapsed.as_micros() as u64,
        "request"
    );
    Ok(reply)
}

async fn dispatch<B>(
    state: &State,
    peer: SocketAddr,
    route: Route,
    op: Operation,
    req: Request<B>,
) -> Reply
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let token = parts
        .headers
        .get("x-token")
        .and_then(|v| v.to_str().ok())
        .filter(|t| token::is_well_formed(t));
    let ctx = Ctx {
        state,
        route,
        method: parts.method.as_str(),
        path: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
    };
    let query = parts.uri.query();

    match op {
        Operation::Api(function) => match token {
            Some(token) => {
                ctx.api(function, token, parts.uri.path(), query, body)
                    .await
            }
            None => outcome::unauthorized(),
        },
        Operation::NotFound => outcome::not_found(),
        Operation::Preflight => cors::preflight(route.allow()),
        Operation::Healthz => match db::ping(&state.pool).await {
            Ok(()) => plain(StatusCode::OK, "ok"),
            Err(e) => failure(e),
        },
        Operation::Asset(asset) => asset.into_reply(),
        Operation::Metrics => match state.metrics.render(&state.pool) {
            Ok(text) => {
                let mut r = plain(StatusCode::OK, text);
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
                r
            }
            Err(_) => outcome::internal_error(),
        },
        Operation::MethodNotAllowed => {
            let refused = outcome::method_not_allowed(route.allow());
            let status = StatusCode::METHOD_NOT_ALLOWED;
            let mut reply = ctx
                .refuse_optional(token, status, "Method Not Allowed", refused)
                .await;
            if reply.status() == status {
                reply
                    .headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static(route.allow()));
            }
            reply
        }
        Operation::AttachmentGet(id) => {
            // A value Postgres cannot hold (NUL) is no value: the function refuses it as absent.
            let expires = query_param(query, "expires").filter(|v| !v.contains('\0'));
            let sig = query_param(query, "sig").filter(|v| !v.contains('\0'));
            match db::attachment(&state.pool, &id, expires.as_deref(), sig.as_deref()).await {
                Ok(download) => download.into_reply(),
                Err(e) => failure(e),
            }
        }
        Operation::StripeWebhook => {
            let Some(secret) = state.config.stripe_webhook_secret.as_ref() else {
                // 503, not 404: Stripe keeps retrying for days, so events sent before the
                // operator sets the secret are not lost.
                tracing::warn!(
                    "Stripe webhook refused: ECHOVALUE_STRIPE_WEBHOOK_SECRET is not set"
                );
                return outcome::unavailable();
            };
            let body = match read_body(body, &state.config).await {
                Ok(b) => b,
                Err(reply) => return reply,
            };
            // A header that is not visible ASCII cannot be a valid signature.
            let signature = parts
                .headers
                .get("stripe-signature")
                .map(|v| v.to_str().unwrap_or(""));
            match stripe::verify(&body, signature, secret.expose()) {
                Ok(payload) => {
                    let args = vec![Arg::from(payload)];
                    ctx.run(ctx.statement(&api::STRIPE_EVENT_RECORD, None, args))
                        .await
                }
                Err(rejection) => plain(StatusCode::BAD_REQUEST, rejection.body()),
            }
        }
        Operation::TokenForm | Operation::LegacyForm => {
            let legacy = op == Operation::LegacyForm;
            let body = match read_body(body, &state.config).await {
                Ok(b) => b,
                Err(reply) => return reply,
            };
            let addr = client_addr(peer, &parts.headers, &state.config.trusted());
            ctx.token_form(&body, legacy, token, addr).await
        }
    }
}

/// 503 when the database cannot be reached in time or the call ran out of time, 500 for
/// anything it answered with an error. The detail goes to the log only (it never holds a
/// parameter, so no token or value).
fn failure(e: DbError) -> Reply {
    match e {
        DbError::Unavailable(detail) => {
            tracing::warn!(%detail, "database unavailable");
            outcome::unavailable()
        }
        DbError::TimedOut(detail) => {
            tracing::warn!(%detail, "call timed out; answered 503");
            outcome::unavailable()
        }
        DbError::Internal(detail) => {
            tracing::error!(%detail, "database error");
            outcome::internal_error()
        }
    }
}
