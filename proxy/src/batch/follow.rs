//! Whether to batch at all: the extension's answer (`echovalue.group_commit()`), asked again
//! and again (see [`super`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Batcher;
use crate::db;

impl Batcher {
    /// Asks the database every `every` whether calls may share a transaction, and batches only
    /// while they may: on a distributed install (Citus) the extension says no, because Citus
    /// runs a call on its wallet's node only outside a transaction block, and a transaction
    /// over several wallets' nodes commits in two phases. Until the first answer, and while
    /// the database cannot be asked, the last answer stands. Runs until dropped.
    pub async fn follow_database(&self, every: Duration) {
        loop {
            match db::group_commit(&self.inner.pool).await {
                Ok(allowed) => {
                    if self.inner.grouping.swap(allowed, Ordering::Relaxed) != allowed {
                        tracing::info!(group_commit = allowed, "the database changed group commit");
                    }
                    let on = self.inner.max > 1 && allowed;
                    self.inner.metrics.group_commit.set(i64::from(on));
                }
                Err(e) => tracing::debug!(error = ?e, "could not ask whether to group commits"),
            }
            tokio::time::sleep(every).await;
        }
    }
}
