//! A group of API calls in ONE transaction on one connection, pipelined: what group commit
//! ([`crate::batch`]) runs.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use deadpool_postgres::Pool;

use super::{from_pool, from_query, from_query_ref, DbError};
use crate::api::Statement;
use crate::outcome::Outcome;

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
