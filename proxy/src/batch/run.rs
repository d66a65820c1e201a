//! One batch's transaction and its answers (see [`super`]).

use tokio::sync::oneshot;

use super::{Answer, Inner};
use crate::api::Statement;
use crate::db::{self, DbError, GroupError};

pub(super) async fn run_batch(
    inner: &Inner,
    statements: &[Statement],
    replies: Vec<oneshot::Sender<Answer>>,
) {
    if statements.len() < 2 {
        // A batch of one is a plain call: no BEGIN/COMMIT round trips.
        for (statement, reply) in statements.iter().zip(replies) {
            let _ = reply.send(db::call(&inner.pool, statement).await);
        }
        return;
    }
    inner.metrics.batches.inc();
    inner
        .metrics
        .batched_requests
        .inc_by(u64::try_from(statements.len()).unwrap_or(u64::MAX));
    match db::call_group(&inner.pool, statements).await {
        Ok(answers) => {
            for (answer, reply) in answers.into_iter().zip(replies) {
                let _ = reply.send(answer);
            }
        }
        Err(GroupError::All(e)) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        // A call ran out of time (a held row lock, a slow statement): run one by one, every call
        // behind it could wait as long again, so the whole batch is answered 503 (nothing of it
        // committed) and its clients retry.
        Err(GroupError::Statement(e @ DbError::TimedOut(_))) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(GroupError::Statement(e)) => {
            inner.metrics.fallbacks.inc();
            tracing::warn!(
                error = ?e,
                calls = statements.len(),
                "a call failed in a batch; the batch was rolled back and its calls run one by one"
            );
            // In the batch's order, each in its own transaction, as if there had been no batch.
            for (statement, reply) in statements.iter().zip(replies) {
                let _ = reply.send(db::call(&inner.pool, statement).await);
            }
        }
    }
}
