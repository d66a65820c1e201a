//! One request's database calls: an API function with its arguments taken from the request,
//! a refusal the extension prices, the token forms, and waiting for the worker's answer where
//! the outcome asks for it ([`crate::awaits`]).

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use hyper::body::Body;

use super::{failure, State};
use crate::api::{self, sql_text, Arg, Function, NotText, Source, Statement};
use crate::db::DbError;
use crate::outcome::{self, plain, Outcome, Reply};
use crate::request::{query_param, read_body, segment};
use crate::routes::Route;

const TOKEN_FORM: &str = "Bad Request: body must be token=new";
const LEGACY_FORM: &str = "Bad Request: body must be token=new or token=recharge";

/// One request's side of its database calls: the route (whose pattern tells the extension
/// what a refusal costs), and the method and path that get logged.
pub(super) struct Ctx<'a> {
    pub state: &'a State,
    pub route: Route,
    pub method: &'a str,
    pub path: &'a str,
}

impl Ctx<'_> {
    pub(super) fn statement(
        &self,
        f: &'static Function,
        token: Option<&str>,
        args: Vec<Arg>,
    ) -> Statement {
        f.statement(token, args, self.method, self.path)
    }

    pub(super) async fn run(&self, statement: Statement) -> Reply {
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
    pub(super) async fn api<B>(
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
    pub(super) async fn refuse(&self, token: &str, status: StatusCode, error: &str) -> Reply {
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
    pub(super) async fn refuse_optional(
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
    pub(super) async fn token_form(
        &self,
        body: &[u8],
        legacy: bool,
        token: Option<&str>,
        addr: IpAddr,
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
