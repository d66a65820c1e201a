//! The database side: the connection pool and one SQL call per request.
//!
//! Every API function is called with named arguments (`=>`) through a cached prepared
//! statement, so a signature drift in the extension fails loudly instead of shifting values.
//! A [`Call`] borrows from the request; [`Call::statement`] turns it into an owned
//! [`Statement`], which is what runs, alone here or with others of its token in
//! [`crate::batch`].

use std::error::Error;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{Pool, PoolError, QueueMode};
use echovalue_common::pool::{build, Settings};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use crate::config::Config;
use crate::outcome::{Download, Outcome};

/// One API function call; tokens and values are borrowed from the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Call<'a> {
    TokenNew {
        client_addr: IpAddr,
    },
    WalletGet {
        token: &'a str,
    },
    RechargeLink {
        token: &'a str,
        amount: Option<&'a str>,
    },
    LogsGet {
        token: &'a str,
        n: Option<&'a str>,
    },
    TokenKeyCreate {
        token: &'a str,
        spec: &'a str,
    },
    TokenKeyList {
        token: &'a str,
    },
    TokenKeyRevoke {
        token: &'a str,
        key_id: &'a str,
    },
    KvSet {
        token: &'a str,
        group: &'a str,
        key: &'a str,
        value: &'a str,
        ttl: Option<&'a str>,
    },
    KvGet {
        token: &'a str,
        group: &'a str,
        key: &'a str,
    },
    KvDelete {
        token: &'a str,
        group: &'a str,
        key: &'a str,
    },
    WebhookSet {
        token: &'a str,
        body: &'a str,
    },
    WebhookGet {
        token: &'a str,
    },
    WebhookDelete {
        token: &'a str,
    },
    /// A Stripe webhook body whose signature the proxy verified.
    StripeEventRecord {
        payload: &'a str,
    },
    /// A request the proxy refused itself after seeing a well-formed token.
    Refuse {
        token: &'a str,
        operation: &'a str,
        status: i32,
        error: &'a str,
    },
}

/// One bound parameter, owned so a statement can wait in a queue after its request's borrows
/// end. It encodes exactly as the value it holds would (type checks included).
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(Option<String>),
    Int(i32),
    Inet(IpAddr),
}

impl ToSql for Arg {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        // The inner value's own check, so a variant never encodes as another variant's type.
        match self {
            Arg::Text(v) => v.to_sql_checked(ty, out),
            Arg::Int(v) => v.to_sql_checked(ty, out),
            Arg::Inet(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <Option<String> as ToSql>::accepts(ty)
            || <i32 as ToSql>::accepts(ty)
            || <IpAddr as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}

/// One API function call ready to run: its statement text and owned parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: &'static str,
    pub args: Vec<Arg>,
}

impl Statement {
    /// The parameters as `tokio-postgres` takes them.
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
    }
}

/// Why a call produced no outcome. The detail is for the server log only (it never holds a
/// token: tokens travel as bound parameters, which Postgres does not echo in errors).
#[derive(Debug, Clone, PartialEq)]
pub enum DbError {
    /// No connection could be had in time, or it broke: 503.
    Unavailable(String),
    /// The database answered with an error: 500.
    Internal(String),
}

macro_rules! outcome_sql {
    ($call:literal) => {
        concat!(
            "select status, body, content_type, cost, balance, headers from echovalue.",
            $call
        )
    };
}

impl Call<'_> {
    /// The statement text and its parameters, the request method and path last.
    pub fn statement(&self, method: &str, path: &str) -> Statement {
        let (sql, mut args): (&'static str, Vec<Arg>) = match self {
            Call::TokenNew { client_addr } => (
                outcome_sql!("token_new(client_addr => $1, http_method => $2, http_path => $3)"),
                vec![Arg::Inet(*client_addr)],
            ),
            Call::WalletGet { token } => (
                outcome_sql!("wallet_get(token => $1, http_method => $2, http_path => $3)"),
                vec![Arg::from(*token)],
            ),
            Call::RechargeLink { token, amount } => (
                outcome_sql!("recharge_link(token => $1, amount => $2, http_method => $3, http_path => $4)"),
                vec![Arg::from(*token), Arg::from(*amount)],
            ),
            Call::LogsGet { token, n } => (
                outcome_sql!("logs_get(token => $1, n => $2, http_method => $3, http_path => $4)"),
                vec![Arg::from(*token), Arg::from(*n)],
            ),
            Call::TokenKeyCreate { token, spec } => (
                outcome_sql!("token_key_create(token => $1, spec => $2, http_method => $3, http_path => $4)"),
                vec![Arg::from(*token), Arg::from(*spec)],
            ),
            Call::TokenKeyList { token } => (
                outcome_sql!("token_key_list(token => $1, http_method => $2, http_path => $3)"),
                vec![Arg::from(*token)],
            ),
            Call::TokenKeyRevoke { token, key_id } => (
                outcome_sql!("token_key_revoke(token => $1, key_id => $2, http_method => $3, http_path => $4)"),
                vec![Arg::from(*token), Arg::from(*key_id)],
            ),
            Call::KvSet { token, group, key, value, ttl } => (
                outcome_sql!("kv_set(token => $1, grp => $2, key => $3, value => $4, ttl => $5, http_method => $6, http_path => $7)"),
                vec![Arg::from(*token), Arg::from(*group), Arg::from(*key), Arg::from(*value), Arg::from(*ttl)],
            ),
            Call::KvGet { token, group, key } => (
                outcome_sql!("kv_get(token => $1, grp => $2, key => $3, http_method => $4, http_path => $5)"),
                vec![Arg::from(*token), Arg::from(*group), Arg::from(*key)],
            ),
            Call::KvDelete { token, group, key } => (
                outcome_sql!("kv_delete(token => $1, grp => $2, key => $3, http_method => $4, http_path => $5)"),
                vec![Arg::from(*token), Arg::from(*group), Arg::from(*key)],
            ),
            Call::WebhookSet { token, body } => (
                outcome_sql!("webhook_set(token => $1, body => $2, http_method => $3, http_path => $4)"),
                vec![Arg::from(*token), Arg::from(*body)],
            ),
            Call::WebhookGet { token } => (
                outcome_sql!("webhook_get(token => $1, http_method => $2, http_path => $3)"),
                vec![Arg::from(*token)],
            ),
            Call::WebhookDelete { token } => (
                outcome_sql!("webhook_delete(token => $1, http_method => $2, http_path => $3)"),
                vec![Arg::from(*token)],
            ),
            Call::StripeEventRecord { payload } => (
                outcome_sql!("stripe_event_record(payload => $1, http_method => $2, http_path => $3)"),
                vec![Arg::from(*payload)],
            ),
            Call::Refuse { token, operation, status, error } => (
                outcome_sql!("request_refuse(token => $1, operation => $2, status => $3, error => $4, http_method => $5, http_path => $6)"),
                vec![Arg::from(*token), Arg::from(*operation), Arg::Int(*status), Arg::from(*error)],
            ),
        };
        args.extend([Arg::from(method), Arg::from(path)]);
        Statement { sql, args }
    }

    /// The token whose calls may share a transaction (see [`crate::batch`]); `None` for calls
    /// without a wallet token.
    pub fn token(&self) -> Option<&str> {
        match self {
            Call::TokenNew { .. } | Call::StripeEventRecord { .. } => None,
            Call::WalletGet { token }
            | Call::RechargeLink { token, .. }
            | Call::LogsGet { token, .. }
            | Call::TokenKeyCreate { token, .. }
            | Call::TokenKeyList { token }
            | Call::TokenKeyRevoke { token, .. }
            | Call::KvSet { token, .. }
            | Call::KvGet { token, .. }
            | Call::KvDelete { token, .. }
            | Call::WebhookSet { token, .. }
            | Call::WebhookGet { token }
            | Call::WebhookDelete { token }
            | Call::Refuse { token, .. } => Some(token),
        }
    }
}

/// Builds the pool; connections are opened lazily, so the proxy starts even while the database
/// is down and answers 503 until it is back.
pub fn pool(config: &Config) -> anyhow::Result<Pool> {
    build(
        &config.database_url,
        &Settings {
            application_name: "echovalue-proxy",
            max_size: config.pool_size,
            timeout: Duration::from_secs(config.db_timeout_secs.max(1)),
            // The most recently used connection first: at 16 requests in flight only ~16
            // backends stay busy and warm, where FIFO would rotate every request through all 64
            // (measured: 40% fewer KV gets per second at 16 clients after a burst of 64 grew the
            // pool).
            queue_mode: QueueMode::Lifo,
        },
    )
}

/// Runs one API function in a transaction of its own and reads its outcome row.
pub async fn call(pool: &Pool, statement: &Statement) -> Result<Outcome, DbError> {
    let client = pool.get().await.map_err(from_pool)?;
    let stmt = client
        .prepare_cached(statement.sql)
        .await
        .map_err(from_query)?;
    let row = client
        .query_one(&stmt, &statement.params())
        .await
        .map_err(from_query)?;
    Outcome::from_row(&row).map_err(from_query)
}

/// Why a group of statements did not all get outcomes from one committed transaction.
#[derive(Debug)]
pub enum GroupError {
    /// Nothing committed and no statement is to blame (no connection, or COMMIT failed): each
    /// statement gets this error, as it would have alone.
    All(DbError),
    /// A statement failed and the transaction was rolled back: nothing of the group is
    /// applied, and each statement is to run again alone.
    Statement(DbError),
}

/// Runs statements in ONE transaction on one connection, in one round trip: `BEGIN`, the
/// statements in the given order (each sees the effects of those before it, so every outcome
/// carries its own exact balance) and `COMMIT`, pipelined; one WAL flush for all. `now()` is
/// the transaction's start, which is after every one of these requests arrived, so their
/// timestamps stay consistent. Outcomes are handed back only once `COMMIT` succeeded.
///
/// If a statement fails, Postgres aborts the transaction, the statements after it fail too and
/// `COMMIT` rolls back: nothing is applied ([`GroupError::Statement`]). If `BEGIN` itself
/// failed on a live connection, each statement ran and committed on its own, so each gets its
/// own result, exactly as alone.
pub async fn call_group(
    pool: &Pool,
    statements: &[Statement],
) -> Result<Vec<Result<Outcome, DbError>>, GroupError> {
    type Step<'c> = Pin<
        Box<
            dyn Future<Output = Result<Option<tokio_postgres::Row>, tokio_postgres::Error>>
                + Send
                + 'c,
        >,
    >;
    let client = pool
        .get()
        .await
        .map_err(|e| GroupError::All(from_pool(e)))?;
    let mut prepared = Vec::with_capacity(statements.len());
    for s in statements {
        // Before BEGIN: a statement that cannot be prepared is one to run alone.
        let stmt = client
            .prepare_cached(s.sql)
            .await
            .map_err(|e| GroupError::Statement(from_query(e)))?;
        prepared.push(stmt);
    }
    let params: Vec<_> = statements.iter().map(Statement::params).collect();
    let mut steps: Vec<Step<'_>> = Vec::with_capacity(statements.len() + 2);
    steps.push(Box::pin(async {
        client.batch_execute("begin").await.map(|()| None)
    }));
    for (stmt, params) in prepared.iter().zip(&params) {
        steps.push(Box::pin(async {
            client.query_one(stmt, params).await.map(Some)
        }));
    }
    steps.push(Box::pin(async {
        client.batch_execute("commit").await.map(|()| None)
    }));
    let mut results = join_in_order(steps).await;
    let commit = results.pop().unwrap_or(Ok(None));
    let begin = results.remove(0);
    let outcome = |row: Result<Option<tokio_postgres::Row>, tokio_postgres::Error>| {
        let row = row.map_err(from_query)?;
        let row = row.ok_or_else(|| DbError::Internal("a statement returned no row".into()))?;
        Outcome::from_row(&row).map_err(from_query)
    };
    if begin.is_err() {
        // No transaction: every statement that ran was its own; the connection's state is
        // unknown, so it is not reused.
        drop(deadpool_postgres::Object::take(client));
        return Ok(results.into_iter().map(outcome).collect());
    }
    if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
        let detail = from_query_ref(e);
        if commit.is_err() {
            drop(deadpool_postgres::Object::take(client));
        }
        return Err(GroupError::Statement(detail));
    }
    if let Err(e) = commit {
        // The transaction is over either way (rolled back, or the connection is gone).
        drop(deadpool_postgres::Object::take(client));
        return Err(GroupError::All(from_query(e)));
    }
    Ok(results.into_iter().map(outcome).collect())
}

/// Awaits the futures together, polling each in list order: `tokio-postgres` sends a query
/// on its first poll, so the statements reach the server in this order, pipelined on one
/// connection. (`join_all` of many futures gives no such promise about first polls.)
async fn join_in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// `GET /attachments/{id}`: one call to `echovalue.attachment_get`, which checks the signature
/// and expiry before looking anything up.
pub async fn attachment(
    pool: &Pool,
    id: &str,
    expires: Option<&str>,
    sig: Option<&str>,
) -> Result<Download, DbError> {
    const SQL: &str = "select status, content_type, filename, content, error \
         from echovalue.attachment_get(attachment_id => $1, expires => $2, sig => $3)";
    let client = pool.get().await.map_err(from_pool)?;
    let stmt = client.prepare_cached(SQL).await.map_err(from_query)?;
    let row = client
        .query_one(&stmt, &[&id, &expires, &sig])
        .await
        .map_err(from_query)?;
    Download::from_row(&row).map_err(from_query)
}

/// `select 1` through the pool, for `/healthz`.
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await.map_err(from_pool)?;
    client.simple_query("select 1").await.map_err(from_query)?;
    Ok(())
}

fn from_pool(e: PoolError) -> DbError {
    match e {
        PoolError::NoRuntimeSpecified => DbError::Internal(e.to_string()),
        other => DbError::Unavailable(other.to_string()),
    }
}

fn from_query(e: tokio_postgres::Error) -> DbError {
    from_query_ref(&e)
}

fn from_query_ref(e: &tokio_postgres::Error) -> DbError {
    let Some(db) = e.as_db_error() else {
        // No SQLSTATE: the connection broke or could not be used.
        return DbError::Unavailable(e.to_string());
    };
    let code = db.code().code();
    // Class 08 connection exception, 53 insufficient resources, 57P0x server going away.
    if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") {
        DbError::Unavailable(format!("{code}: {}", db.message()))
    } else {
        DbError::Internal(format!("{code}: {}", db.message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_every_argument() {
        let (m, p) = ("POST", "/kv/g/k?ttl=5");
        let call = Call::KvSet {
            token: "t",
            group: "g",
            key: "k",
            value: "v",
            ttl: Some("5"),
        };
        let Statement { sql, args } = call.statement(m, p);
        assert_eq!(
            sql,
            "select status, body, content_type, cost, balance, headers from echovalue.kv_set(token => $1, grp => $2, key => $3, value => $4, ttl => $5, http_method => $6, http_path => $7)"
        );
        assert_eq!(args.len(), 7);
        assert_eq!(args[4], Arg::Text(Some("5".into())));
        assert_eq!(args[6], Arg::Text(Some("/kv/g/k?ttl=5".into())));
        assert_eq!(call.token(), Some("t"));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for call in [
            Call::TokenNew { client_addr: ip },
            Call::WalletGet { token: "t" },
            Call::RechargeLink {
                token: "t",
                amount: None,
            },
            Call::LogsGet {
                token: "t",
                n: None,
            },
            Call::KvGet {
                token: "t",
                group: "g",
                key: "k",
            },
            Call::KvDelete {
                token: "t",
                group: "g",
                key: "k",
            },
            Call::TokenKeyCreate {
                token: "t",
                spec: "{}",
            },
            Call::TokenKeyList { token: "t" },
            Call::TokenKeyRevoke {
                token: "t",
                key_id: "k",
            },
            Call::WebhookSet {
                token: "t",
                body: "{}",
            },
            Call::WebhookGet { token: "t" },
            Call::WebhookDelete { token: "t" },
            Call::Refuse {
                token: "t",
                operation: "kv_get",
                status: 405,
                error: "e",
            },
            Call::StripeEventRecord { payload: "{}" },
        ] {
            let Statement { sql, args } = call.statement(m, p);
            let placeholders = sql.matches('$').count();
            assert_eq!(placeholders, args.len(), "{sql}");
            assert_eq!(sql.matches("=>").count(), args.len(), "{sql}");
            let tokenless = matches!(call, Call::TokenNew { .. } | Call::StripeEventRecord { .. });
            assert_eq!(call.token().is_none(), tokenless, "{sql}");
        }
    }

    #[test]
    fn bad_database_url_is_refused() {
        let c = Config {
            database_url: "port=notaport".into(),
            ..Config::default()
        };
        assert!(pool(&c).is_err());
    }
}
