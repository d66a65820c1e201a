//! Group commit per token: the calls of a hot token share transactions.
//!
//! Every charge updates its wallet's row, and Postgres holds that row lock until the commit's
//! WAL flush is done, so calls of one token commit one flush at a time. Here, the first call
//! of a token runs alone as usual (no extra statements when there is no contention) and marks
//! the token busy; calls of that token arriving meanwhile wait in a queue. When the busy call
//! is done, a driver task runs the queue in batches of up to `ECHOVALUE_BATCH_MAX` calls, each
//! batch one transaction ([`db::call_group`]): one flush for all, every call still seeing the
//! ones before it, so each answer carries its own exact balance, and no answer leaves before
//! its transaction committed. When the queue is empty the token's entry goes away.
//!
//! If a call of a batch fails in the database, the batch is rolled back and its calls run one
//! by one, so one bad request never fails or loses the others. Calls are keyed by the token
//! string, which is never logged. Other tokens of the same wallet are not batched together.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use deadpool_postgres::Pool;
use tokio::sync::oneshot;

use crate::db::{self, DbError, GroupError, Statement};
use crate::metrics::BatchMetrics;
use crate::outcome::Outcome;

type Answer = Result<Outcome, DbError>;

/// The bookkeeping alone: which tokens are busy and what waits for each. A token has an entry
/// exactly while a call of it runs (or a driver drains its queue).
#[derive(Debug)]
pub struct Queues<T> {
    busy: HashMap<String, VecDeque<T>>,
}

impl<T> Default for Queues<T> {
    fn default() -> Self {
        Queues {
            busy: HashMap::new(),
        }
    }
}

impl<T> Queues<T> {
    /// A call of `key` arrives: when the key is idle it becomes busy and the item comes back
    /// (the caller runs it now); when busy, the item joins the key's queue (`None`).
    pub fn arrive(&mut self, key: &str, item: T) -> Option<T> {
        match self.busy.get_mut(key) {
            Some(queue) => {
                queue.push_back(item);
                None
            }
            None => {
                self.busy.insert(key.to_owned(), VecDeque::new());
                Some(item)
            }
        }
    }

    /// The next batch of `key`, oldest first, at most `max` items. When nothing waits, the key
    /// becomes idle (its entry is removed) and the batch is empty.
    pub fn next_batch(&mut self, key: &str, max: usize) -> Vec<T> {
        let Some(queue) = self.busy.get_mut(key) else {
            return Vec::new();
        };
        if queue.is_empty() {
            self.busy.remove(key);
            return Vec::new();
        }
        let n = queue.len().min(max.max(1));
        queue.drain(..n).collect()
    }

    /// Makes `key` idle when nothing waits for it; `false` when calls wait (it stays busy).
    pub fn release_if_idle(&mut self, key: &str) -> bool {
        match self.busy.get(key) {
            Some(queue) if !queue.is_empty() => false,
            _ => {
                self.busy.remove(key);
                true
            }
        }
    }

    /// Removes `key` with whatever waits for it.
    pub fn abandon(&mut self, key: &str) -> Vec<T> {
        self.busy.remove(key).map(Vec::from).unwrap_or_default()
    }

    /// Number of busy keys.
    pub fn busy_keys(&self) -> usize {
        self.busy.len()
    }
}

/// A queued call and where its answer goes.
struct Waiting {
    statement: Statement,
    reply: oneshot::Sender<Answer>,
}

struct Inner {
    pool: Pool,
    max: usize,
    queues: Mutex<Queues<Waiting>>,
    metrics: BatchMetrics,
}

impl Inner {
    fn queues(&self) -> MutexGuard<'_, Queues<Waiting>> {
        // No code panics while holding the lock; if it ever did, the map is still consistent.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs API calls, batching those of a busy token. Cheap to share (one per proxy).
pub struct Batcher {
    inner: Arc<Inner>,
}

impl Batcher {
    /// `max` is the largest batch; 1 turns batching off.
    pub fn new(pool: Pool, max: usize, metrics: BatchMetrics) -> Self {
        Batcher {
            inner: Arc::new(Inner {
                pool,
                max,
                queues: Mutex::new(Queues::default()),
                metrics,
            }),
        }
    }

    /// Runs one call: alone when it has no token, batching is off, or its token is idle;
    /// otherwise after the token's call in flight, in a batch with the others that waited.
    pub async fn call(&self, token: Option<&str>, statement: Statement) -> Answer {
        let Some(token) = token.filter(|_| self.inner.max > 1) else {
            return db::call(&self.inner.pool, &statement).await;
        };
        let (reply, answer) = oneshot::channel();
        let arrived = {
            let mut queues = self.inner.queues();
            let arrived = queues.arrive(token, Waiting { statement, reply });
            if arrived.is_none() {
                self.inner.metrics.queued.inc();
            }
            arrived
        };
        let Some(Waiting { statement, .. }) = arrived else {
            return answer.await.unwrap_or_else(|_| {
                Err(DbError::Internal("a batch ended without answering".into()))
            });
        };
        // From here until it drops, this call holds the token: dropping the guard (when the
        // call is done, or when the request is cancelled) hands any queue to a driver.
        let _busy = Busy {
            inner: self.inner.clone(),
            token: token.to_owned(),
            held: true,
        };
        db::call(&self.inner.pool, &statement).await
    }
}

/// Holds a busy token. Dropped while calls wait, it spawns a driver for them (which then holds
/// the token); otherwise it makes the token idle. So a token never stays busy with nobody
/// running its queue, even when a request is cancelled or a driver panics.
struct Busy {
    inner: Arc<Inner>,
    token: String,
    held: bool,
}

impl Busy {
    /// The next batch; empty when the queue is done, and then the token is idle.
    fn next_batch(&mut self) -> Vec<Waiting> {
        let mut queues = self.inner.queues();
        let batch = queues.next_batch(&self.token, self.inner.max);
        self.inner.metrics.queued.dec_by(to_i64(batch.len()));
        drop(queues);
        if batch.is_empty() {
            self.held = false;
        }
        batch
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if !self.held || self.inner.queues().release_if_idle(&self.token) {
            return;
        }
        self.held = false;
        let token = std::mem::take(&mut self.token);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = self.inner.clone();
            runtime.spawn(drive(Busy {
                inner,
                token,
                held: true,
            }));
            return;
        }
        // No runtime left (shutting down): the waiting calls get an error, not silence.
        let mut queues = self.inner.queues();
        let abandoned = queues.abandon(&token);
        self.inner.metrics.queued.dec_by(to_i64(abandoned.len()));
        drop(queues);
        drop(abandoned);
    }
}

/// Runs a token's queue batch after batch until it is empty.
async fn drive(mut busy: Busy) {
    loop {
        let batch = busy.next_batch();
        if batch.is_empty() {
            return;
        }
        run_batch(&busy.inner, batch).await;
    }
}

async fn run_batch(inner: &Inner, batch: Vec<Waiting>) {
    // A call whose client went away while it waited never ran: it is not run now.
    let (statements, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .filter(|w| !w.reply.is_closed())
        .map(|w| (w.statement, w.reply))
        .unzip();
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
    match db::call_group(&inner.pool, &statements).await {
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
        Err(GroupError::Statement(e)) => {
            inner.metrics.fallbacks.inc();
            tracing::warn!(
                error = ?e,
                calls = statements.len(),
                "a call failed in a batch; the batch was rolled back and its calls run one by one"
            );
            // In arrival order, each in its own transaction, as if there had been no batch.
            for (statement, reply) in statements.iter().zip(replies) {
                let _ = reply.send(db::call(&inner.pool, statement).await);
            }
        }
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_call_leads_later_ones_queue() {
        let mut q = Queues::default();
        assert_eq!(q.arrive("a", 1), Some(1));
        assert_eq!(q.arrive("a", 2), None);
        assert_eq!(q.arrive("a", 3), None);
        // Another key is independent.
        assert_eq!(q.arrive("b", 10), Some(10));
        assert_eq!(q.busy_keys(), 2);
        assert!(q.release_if_idle("b"));
        assert_eq!(q.busy_keys(), 1);
        // Calls wait for "a": it stays busy.
        assert!(!q.release_if_idle("a"));
        assert_eq!(q.next_batch("a", 64), vec![2, 3]);
        // Arrivals during a batch wait for the next one.
        assert_eq!(q.arrive("a", 4), None);
        assert_eq!(q.next_batch("a", 64), vec![4]);
        assert_eq!(q.busy_keys(), 1);
        // An empty queue ends the key's busy time: no entry is left behind.
        assert_eq!(q.next_batch("a", 64), Vec::<i32>::new());
        assert_eq!(q.busy_keys(), 0);
        assert_eq!(q.arrive("a", 5), Some(5));
    }

    #[test]
    fn batches_are_capped_and_in_arrival_order() {
        let mut q = Queues::default();
        assert_eq!(q.arrive("a", 0), Some(0));
        for i in 1..=10 {
            assert_eq!(q.arrive("a", i), None);
        }
        assert_eq!(q.next_batch("a", 4), vec![1, 2, 3, 4]);
        assert_eq!(q.next_batch("a", 4), vec![5, 6, 7, 8]);
        assert_eq!(q.next_batch("a", 0), vec![9]);
        assert_eq!(q.next_batch("a", 4), vec![10]);
        assert!(q.next_batch("a", 4).is_empty());
        assert_eq!(q.busy_keys(), 0);
        // Unknown keys are idle.
        assert!(q.next_batch("x", 4).is_empty());
        assert!(q.release_if_idle("x"));
    }

    #[test]
    fn abandon_hands_back_what_waited() {
        let mut q = Queues::default();
        assert_eq!(q.arrive("a", 1), Some(1));
        assert_eq!(q.arrive("a", 2), None);
        assert_eq!(q.abandon("a"), vec![2]);
        assert_eq!(q.busy_keys(), 0);
        assert!(q.abandon("a").is_empty());
    }
}
