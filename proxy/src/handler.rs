//! One request, start to finish: route it, check the token, read the body when the operation
//! needs one, make the one SQL call, and render the outcome. Business rules stay in SQL.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::Pool;
use echovalue_common::token;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, StatusCode};
use hyper::body::Body;

use crate::api::{self, sql_text, Arg, Function, NotText, Source, Statement};
use crate::awaits::Awaits;
use crate::batch::Batcher;
use crate::client::client_addr;
use crate::config::Config;
use crate::db::{self, DbError};
use crate::metrics::Metrics;
use crate::outcome::{self, plain, Outcome, Reply};
use crate::request::{declared_too_large, query_param, read_body, segment};
use crate::routes::{self, Operation, Route};
use crate::{cors, stripe};

const TOKEN_FORM: &str = "Bad Request: body must be token=new";
const LEGACY_FORM: &str = "Bad Request: body must be token=new or token=recharge";
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
        let batcher = Batcher::new(
            pool.clone(),
            config.batch_max,
            config.batch_slots(),
            metrics.batch(),
        );
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
            let expires = query_param(query, "expires");
            let sig = query_param(query, "sig");
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
            let addr = client_addr(peer, &parts.headers, state.config.trust_forwarded);
            ctx.token_form(&body, legacy, token, addr).await
        }
    }
}

/// One request's side of its database calls: the route (whose pattern tells the extension
/// what a refusal costs), and the method and path that get logged.
struct Ctx<'a> {
    state: &'a State,
    route: Route,
    method: &'a str,
    path: &'a str,
}

impl Ctx<'_> {
    fn statement(&self, f: &'static Function, token: Option<&str>, args: Vec<Arg>) -> Statement {
        f.statement(token, args, self.method, self.path)
    }

    async fn run(&self, statement: Statement) -> Reply {
        let outcome = match self.state.batcher.call(statement).await {
            Ok(outcome) => self.awaited(outcome).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(outcome) => outcome.into_reply(),
            Err(e) => failure(e),
        }
    }

    /// An outcome that names an answer of the worker to wait for (a webhook test) becomes
    /// that answer, with the call's own cost, balance and headers.
    async fn awaited(&self, mut first: Outcome) -> Result<Outcome, DbError> {
        let Some(id) = first.take_header(crate::awaits::HEADER) else {
            return Ok(first);
        };
        let wait = Duration::from_secs(self.state.config.webhook_test_wait_secs);
        let answer = self
            .state
            .awaits
            .answer(&self.state.pool, &id, wait)
            .await?;
        Ok(Outcome {
            cost: first.cost,
            balance: first.balance,
            headers: first.headers,
            ..answer
        })
    }

    /// An API function with its arguments taken from the request as [`Function::args`] says;
    /// the body is read only when an argument needs it. An argument that is not text Postgres
    /// can hold is the function's charged 400, never a database error.
    async fn api<B>(
        &self,
        f: &'static Function,
        token: &str,
        raw_path: &str,
        query: Option<&str>,
        body: B,
    ) -> Reply
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut body = Some(body);
        let mut args = Vec::with_capacity(f.args.len());
        for (name, source) in f.args {
            let value = match *source {
                Source::Token => Some(token.to_owned()),
                Source::Segment(from_end, not_text) => {
                    match (segment(raw_path, from_end), not_text) {
                        (Some(text), _) => Some(text),
                        (None, NotText::Empty) => Some(String::new()),
                        (None, NotText::Refuse(error)) => {
                            return self.refuse(token, StatusCode::BAD_REQUEST, error).await
                        }
                    }
                }
                Source::Query(key) => match query_param(query, key) {
                    Some(v) if v.contains('\0') => {
                        let error = format!("Bad Request: {key} must not hold a NUL character");
                        return self.refuse(token, StatusCode::BAD_REQUEST, &error).await;
                    }
                    v => v,
                },
                Source::Body(error) => {
                    let Some(body) = body.take() else {
                        return outcome::internal_error(); // two body arguments: a table bug
                    };
                    let bytes = match read_body(body, &self.state.config).await {
                        Ok(b) => b,
                        Err(reply) => return reply,
                    };
                    match sql_text(&bytes) {
                        Some(text) => Some(text.to_owned()),
                        None => return self.refuse(token, StatusCode::BAD_REQUEST, error).await,
                    }
                }
                Source::Given => {
                    tracing::error!(function = f.name, argument = name, "no value for argument");
                    return outcome::internal_error();
                }
            };
            args.push(Arg::Text(value));
        }
        self.run(self.statement(f, Some(token), args)).await
    }

    /// A refusal that needs a wallet: charged and logged like any error of the request's
    /// operation, which the extension decides from the route and the method.
    async fn refuse(&self, token: &str, status: StatusCode, error: &str) -> Reply {
        match self.refusal(token, status, error).await {
            Ok(outcome) => outcome.into_reply(),
            Err(e) => failure(e),
        }
    }

    async fn refusal(
        &self,
        token: &str,
        status: StatusCode,
        error: &str,
    ) -> Result<Outcome, DbError> {
        let args = vec![
            Arg::from(token),
            Arg::from(self.route.pattern()),
            Arg::Int(i32::from(status.as_u16())),
            Arg::from(error),
        ];
        let statement = self.statement(&api::REQUEST_REFUSE, Some(token), args);
        self.state.batcher.call(statement).await
    }

    /// A refusal that does not depend on the token: with a well-formed token the wallet is
    /// charged and logged (when the route is one the extension prices); without one, or with
    /// one the database does not know, the plain refusal is the answer (the token was not
    /// needed to know the request is wrong).
    async fn refuse_optional(
        &self,
        token: Option<&str>,
        status: StatusCode,
        error: &str,
        plain_reply: Reply,
    ) -> Reply {
        let Some(token) = token else {
            return plain_reply;
        };
        match self.refusal(token, status, error).await {
            Ok(o) if o.status == 401 || o.cost.is_none() => plain_reply,
            Ok(o) => o.into_reply(),
            Err(e) => failure(e),
        }
    }

    /// `POST /token` (`token=new`) and the 2023 `POST /` (`token=new` or `token=recharge`).
    async fn token_form(
        &self,
        body: &[u8],
        legacy: bool,
        token: Option<&str>,
        addr: std::net::IpAddr,
    ) -> Reply {
        let mut kind = None;
        let mut amount = None;
        for (k, v) in form_urlencoded::parse(body) {
            match k.as_ref() {
                "token" if kind.is_none() => kind = Some(v.into_owned()),
                "amount" if amount.is_none() => amount = Some(v.into_owned()),
                _ => {}
            }
        }
        match (kind.as_deref(), legacy) {
            (Some("new"), _) => {
                let args = vec![Arg::Inet(addr)];
                self.run(self.statement(&api::TOKEN_NEW, None, args)).await
            }
            (Some("recharge"), true) => match token {
                Some(token) if !amount.as_deref().unwrap_or("").contains('\0') => {
                    let args = vec![Arg::from(token), Arg::from(amount.as_deref())];
                    self.run(self.statement(&api::RECHARGE_LINK, Some(token), args))
                        .await
                }
                Some(token) => {
                    let error = "Bad Request: amount must not hold a NUL character";
                    self.refuse(token, StatusCode::BAD_REQUEST, error).await
                }
                None => outcome::unauthorized(),
            },
            _ => {
                let error = if legacy { LEGACY_FORM } else { TOKEN_FORM };
                let status = StatusCode::BAD_REQUEST;
                self.refuse_optional(token, status, error, plain(status, error))
                    .await
            }
        }
    }
}

/// 503 when the database cannot be reached in time, 500 for anything it answered with an
/// error. The detail goes to the log only.
fn failure(e: DbError) -> Reply {
    match e {
        DbError::Unavailable(detail) => {
            tracing::warn!(%detail, "database unavailable");
            outcome::unavailable()
        }
        DbError::Internal(detail) => {
            tracing::error!(%detail, "database error");
            outcome::internal_error()
        }
    }
}
