//! The database side: the pool, one API call in a transaction of its own ([`call`]), a group
//! of calls in one pipelined transaction ([`group::call_group`], for [`crate::batch`]), the
//! attachment download and the health check. What the calls are is [`crate::api`].

use std::time::Duration;

use deadpool_postgres::{Pool, PoolError, QueueMode};
use echovalue_common::pool::{build, Settings};

use crate::api::Statement;
use crate::config::Config;
use crate::outcome::{Download, Outcome};

mod group;

pub use group::{call_group, GroupError};

/// Why a call produced no outcome. The detail is for the server log only (it never holds a
/// token: tokens travel as bound parameters, which Postgres does not echo in errors).
#[derive(Debug, Clone, PartialEq)]
pub enum DbError {
    /// No connection could be had in time, or it broke: 503.
    Unavailable(String),
    /// The call ran out of time: its statement or its wait for a lock was cancelled
    /// (`statement_timeout`, `lock_timeout`), or it waited too long in the batch queues: 503,
    /// and nothing was charged (its transaction was rolled back, or it never ran).
    TimedOut(String),
    /// The database answered with an error: 500.
    Internal(String),
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
            statement_timeout_ms: config.limits.statement_timeout_ms,
            lock_timeout_ms: config.limits.lock_timeout_ms,
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

/// Whether the database lets calls share a transaction (`echovalue.group_commit()`: not on a
/// distributed install, extension/CONTRACT.md).
pub async fn group_commit(pool: &Pool) -> Result<bool, DbError> {
    let client = pool.get().await.map_err(from_pool)?;
    let row = client
        .query_one("select echovalue.group_commit()", &[])
        .await
        .map_err(from_query)?;
    row.try_get(0).map_err(from_query)
}

/// `select 1` through the pool, for `/healthz`.
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await.map_err(from_pool)?;
    client.simple_query("select 1").await.map_err(from_query)?;
    Ok(())
}

pub(crate) fn from_pool(e: PoolError) -> DbError {
    match e {
        PoolError::NoRuntimeSpecified => DbError::Internal(e.to_string()),
        other => DbError::Unavailable(other.to_string()),
    }
}

pub(crate) fn from_query(e: tokio_postgres::Error) -> DbError {
    from_query_ref(&e)
}

pub(crate) fn from_query_ref(e: &tokio_postgres::Error) -> DbError {
    let Some(db) = e.as_db_error() else {
        // No SQLSTATE: the connection broke or could not be used.
        return DbError::Unavailable(e.to_string());
    };
    let code = db.code().code();
    // 57014 query_canceled (statement_timeout), 55P03 lock_not_available (lock_timeout).
    if code == "57014" || code == "55P03" {
        return DbError::TimedOut(format!("{code}: {}", db.message()));
    }
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
    fn bad_database_url_is_refused() {
        let c = Config {
            database_url: "port=notaport".into(),
            ..Config::default()
        };
        assert!(pool(&c).is_err());
    }
}
