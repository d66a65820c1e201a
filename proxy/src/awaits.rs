//! Calls whose answer comes from the worker: `POST /webhook/{id}/test` queues a delivery
//! that only the mailhook may make, and its outcome names it in the `x-echovalue-await`
//! header (extension/CONTRACT.md). The proxy then asks `webhook_test_result` for the answer,
//! sleeps until the NOTIFY `echovalue_webhook_test` that names the test (or a re-check after
//! the LISTEN connection came back), asks again, and at the deadline asks for the final
//! answer. No database connection is held while waiting; any proxy and any worker may meet,
//! because the table is the truth and the notification only a wake-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use echovalue_common::listen::Subscription;
use tokio::sync::Notify;

use crate::db::{from_pool, from_query, DbError};
use crate::outcome::Outcome;

/// The outcome header naming the worker's answer to wait for; never sent to the client.
pub const HEADER: &str = "x-echovalue-await";
/// The channel `delivery_record` NOTIFYs when a test is done, with the test's await value.
pub const CHANNEL: &str = "echovalue_webhook_test";

/// `wallet` is the routing hint the await value spells (extension/CONTRACT.md).
const RESULT_SQL: &str = "select status, body, content_type, cost, balance, headers \
     from echovalue.webhook_test_result(test => $1, final => $2, \
     wallet => echovalue.test_wallet($1))";

/// The calls waiting now, by await value.
#[derive(Default)]
pub struct Awaits {
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

/// Removes a waiter from the map when its call ends, however it ends.
struct Registered<'a> {
    awaits: &'a Awaits,
    id: String,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.awaits.waiting.lock() {
            w.remove(&self.id);
        }
    }
}

impl Awaits {
    /// The LISTEN subscription that wakes the waiters: the one a notification names, or all
    /// of them to check again (after a reconnect or on the poll timer).
    pub fn subscription(self: &Arc<Self>) -> Subscription {
        let me = self.clone();
        Subscription {
            channel: CHANNEL,
            wake: Arc::new(move |payload| me.wake(payload)),
        }
    }

    fn wake(&self, payload: Option<&str>) {
        let Ok(w) = self.waiting.lock() else { return };
        match payload {
            Some(id) => {
                if let Some(n) = w.get(id) {
                    n.notify_one();
                }
            }
            None => w.values().for_each(|n| n.notify_one()),
        }
    }

    /// How many calls wait now.
    pub fn len(&self) -> usize {
        self.waiting.lock().map_or(0, |w| w.len())
    }

    /// Whether no call waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The worker's answer to `id`, waiting at most `wait` for it.
    pub async fn answer(&self, pool: &Pool, id: &str, wait: Duration) -> Result<Outcome, DbError> {
        let notify = Arc::new(Notify::new());
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(id.to_owned(), notify.clone());
        }
        let _registered = Registered {
            awaits: self,
            id: id.to_owned(),
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // registered before asking, so a notification sent in between is not missed
            if let Some(outcome) = result(pool, id, false).await? {
                return Ok(outcome);
            }
            tokio::select! {
                () = notify.notified() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        result(pool, id, true)
            .await?
            .ok_or_else(|| DbError::Internal("webhook_test_result gave no final answer".into()))
    }
}

/// One `webhook_test_result` call; `None` while the worker is not done.
async fn result(pool: &Pool, id: &str, last: bool) -> Result<Option<Outcome>, DbError> {
    let client = pool.get().await.map_err(from_pool)?;
    let stmt = client
        .prepare_cached(RESULT_SQL)
        .await
        .map_err(from_query)?;
    let row = client
        .query_one(&stmt, &[&id, &last])
        .await
        .map_err(from_query)?;
    let status: Option<i32> = row.try_get("status").map_err(from_query)?;
    if status.is_none() {
        return Ok(None);
    }
    Outcome::from_row(&row).map(Some).map_err(from_query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_the_named_waiter_or_all() {
        let a = Arc::new(Awaits::default());
        let (one, two) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        a.waiting.lock().unwrap().insert("1:x".into(), one.clone());
        a.waiting.lock().unwrap().insert("2:y".into(), two.clone());
        let s = a.subscription();
        assert_eq!(s.channel, CHANNEL);
        (s.wake)(Some("1:x"));
        (s.wake)(Some("9:unknown"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            // a stored permit: the named one is woken, the other is not
            tokio::time::timeout(Duration::from_millis(50), one.notified())
                .await
                .expect("woken");
            assert!(
                tokio::time::timeout(Duration::from_millis(50), two.notified())
                    .await
                    .is_err()
            );
            (s.wake)(None);
            tokio::time::timeout(Duration::from_millis(50), two.notified())
                .await
                .expect("woken by a re-check");
        });
        {
            let _r = Registered {
                awaits: &a,
                id: "1:x".into(),
            };
        }
        assert_eq!(a.len(), 1, "a finished call leaves the map");
    }
}
