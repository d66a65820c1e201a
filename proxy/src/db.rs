//! The database side: the connection pool and one SQL call per request.
//!
//! Every API function is called with named arguments (`=>`) through a cached prepared
//! statement, so a signature drift in the extension fails loudly instead of shifting values.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

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

/// Why a call produced no outcome. The detail is for the server log only (it never holds a
/// token: tokens travel as bound parameters, which Postgres does not echo in errors).
#[derive(Debug)]
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
    fn statement<'s>(
        &'s self,
        method: &'s String,
        path: &'s String,
    ) -> (&'static str, Vec<&'s (dyn ToSql + Sync)>) {
        match self {
            Call::TokenNew { client_addr } => (
                outcome_sql!("token_new(client_addr => $1, http_method => $2, http_path => $3)"),
                vec![client_addr, method, path],
            ),
            Call::WalletGet { token } => (
                outcome_sql!("wallet_get(token => $1, http_method => $2, http_path => $3)"),
                vec![token, method, path],
            ),
            Call::RechargeLink { token, amount } => (
                outcome_sql!("recharge_link(token => $1, amount => $2, http_method => $3, http_path => $4)"),
                vec![token, amount, method, path],
            ),
            Call::LogsGet { token, n } => (
                outcome_sql!("logs_get(token => $1, n => $2, http_method => $3, http_path => $4)"),
                vec![token, n, method, path],
            ),
            Call::TokenKeyCreate { token, spec } => (
                outcome_sql!("token_key_create(token => $1, spec => $2, http_method => $3, http_path => $4)"),
                vec![token, spec, method, path],
            ),
            Call::TokenKeyList { token } => (
                outcome_sql!("token_key_list(token => $1, http_method => $2, http_path => $3)"),
                vec![token, method, path],
            ),
            Call::TokenKeyRevoke { token, key_id } => (
                outcome_sql!("token_key_revoke(token => $1, key_id => $2, http_method => $3, http_path => $4)"),
                vec![token, key_id, method, path],
            ),
            Call::KvSet { token, group, key, value, ttl } => (
                outcome_sql!("kv_set(token => $1, grp => $2, key => $3, value => $4, ttl => $5, http_method => $6, http_path => $7)"),
                vec![token, group, key, value, ttl, method, path],
            ),
            Call::KvGet { token, group, key } => (
                outcome_sql!("kv_get(token => $1, grp => $2, key => $3, http_method => $4, http_path => $5)"),
                vec![token, group, key, method, path],
            ),
            Call::KvDelete { token, group, key } => (
                outcome_sql!("kv_delete(token => $1, grp => $2, key => $3, http_method => $4, http_path => $5)"),
                vec![token, group, key, method, path],
            ),
            Call::WebhookSet { token, body } => (
                outcome_sql!("webhook_set(token => $1, body => $2, http_method => $3, http_path => $4)"),
                vec![token, body, method, path],
            ),
            Call::WebhookGet { token } => (
                outcome_sql!("webhook_get(token => $1, http_method => $2, http_path => $3)"),
                vec![token, method, path],
            ),
            Call::WebhookDelete { token } => (
                outcome_sql!("webhook_delete(token => $1, http_method => $2, http_path => $3)"),
                vec![token, method, path],
            ),
            Call::StripeEventRecord { payload } => (
                outcome_sql!("stripe_event_record(payload => $1, http_method => $2, http_path => $3)"),
                vec![payload, method, path],
            ),
            Call::Refuse { token, operation, status, error } => (
                outcome_sql!("request_refuse(token => $1, operation => $2, status => $3, error => $4, http_method => $5, http_path => $6)"),
                vec![token, operation, status, error, method, path],
            ),
        }
    }
}

/// Builds the pool; connections are opened lazily, so the proxy starts even while the database
/// is down and answers 503 until it is back.
pub fn pool(config: &Config) -> anyhow::Result<Pool> {
    let mut pg: tokio_postgres::Config = config
        .database_url
        .parse()
        .context("the database URL is not a valid libpq connection string or URL")?;
    if pg.get_application_name().is_none() {
        pg.application_name("echovalue-proxy");
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeout = Some(Duration::from_secs(config.db_timeout_secs.max(1)));
    Pool::builder(manager)
        .max_size(config.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .build()
        .context("cannot build the database pool")
}

/// Runs one API function and reads its outcome row.
pub async fn call(
    pool: &Pool,
    call: &Call<'_>,
    method: &str,
    path: &str,
) -> Result<Outcome, DbError> {
    let (method, path) = (method.to_owned(), path.to_owned());
    let (sql, params) = call.statement(&method, &path);
    let client = pool.get().await.map_err(from_pool)?;
    let stmt = client.prepare_cached(sql).await.map_err(from_query)?;
    let row = client.query_one(&stmt, &params).await.map_err(from_query)?;
    Outcome::from_row(&row).map_err(from_query)
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
        let (m, p) = ("POST".to_owned(), "/kv/g/k?ttl=5".to_owned());
        let call = Call::KvSet {
            token: "t",
            group: "g",
            key: "k",
            value: "v",
            ttl: Some("5"),
        };
        let (sql, params) = call.statement(&m, &p);
        assert_eq!(
            sql,
            "select status, body, content_type, cost, balance, headers from echovalue.kv_set(token => $1, grp => $2, key => $3, value => $4, ttl => $5, http_method => $6, http_path => $7)"
        );
        assert_eq!(params.len(), 7);
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
            let (sql, params) = call.statement(&m, &p);
            let placeholders = sql.matches('$').count();
            assert_eq!(placeholders, params.len(), "{sql}");
            assert_eq!(sql.matches("=>").count(), params.len(), "{sql}");
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
