//! Group commit: calls share transactions when they would otherwise wait.
//!
//! Two levels, both only under load, so a lone call runs alone with no extra statements:
//!
//! * **Per token.** Every charge updates its wallet's row, and Postgres holds that row lock
//!   until the commit's WAL flush is done, so calls of one token commit one flush at a time.
//!   The first call of a token marks the token busy; calls of that token arriving meanwhile
//!   wait in the token's queue, and when the busy call is done a driver task runs the queue in
//!   batches of up to `ECHOVALUE_BATCH_MAX` calls. A token therefore has at most one call or
//!   batch in the database at a time.
//! * **Across tokens.** At most `ECHOVALUE_BATCH_SLOTS` transactions run at once (one per
//!   slot). A call or token batch that finds every slot taken waits, and the next slot to come
//!   free runs everything that waited (up to `ECHOVALUE_BATCH_MAX` calls) as one transaction:
//!   one commit and one WAL flush instead of one per request, which is where a small request
//!   spends much of its time in the database. The tokens of one transaction are distinct (see
//!   above) and sorted, so two transactions lock wallets in the same order, unless several
//!   tokens of one wallet are busy at once (a deadlock Postgres then breaks: the transaction it
//!   aborts is rolled back and its calls run one by one).
//!
//! Every batch is one transaction ([`db::call_group`]): its calls run in order, each seeing
//! the ones before it, so each answer carries its own exact balance, and no answer leaves
//! before its transaction committed. If a call of a batch fails in the database, the batch is
//! rolled back and its calls run one by one, so one bad request never fails or loses the
//! others. Calls are keyed by the token string, which is never logged. Calls without a token
//! (new wallets, Stripe events) always run alone.

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

/// The slots bookkeeping alone: how many more transactions may start now, and what waits for
/// a slot, oldest first.
#[derive(Debug)]
pub struct Slots<U> {
    free: usize,
    waiting: VecDeque<U>,
}

impl<U> Slots<U> {
    /// `n` transactions at once (at least one).
    pub fn new(n: usize) -> Self {
        Slots {
            free: n.max(1),
            waiting: VecDeque::new(),
        }
    }

    /// A unit arrives: when a slot is free it is taken and the unit comes back (the caller
    /// runs it now); otherwise the unit waits (`None`).
    pub fn arrive(&mut self, unit: U) -> Option<U> {
        if self.free > 0 {
            self.free -= 1;
            Some(unit)
        } else {
            self.waiting.push_back(unit);
            None
        }
    }

    /// A slot's transaction is done: the units to run next in it, oldest first, as many as
    /// fit in `max` calls (`size` counts a unit's calls; the first is taken whatever its size).
    /// When nothing waits, the slot is freed and the result is empty.
    pub fn next(&mut self, max: usize, size: impl Fn(&U) -> usize) -> Vec<U> {
        let mut units = Vec::new();
        let mut calls = 0;
        while let Some(unit) = self.waiting.front() {
            let n = size(unit);
            if !units.is_empty() && calls + n > max {
                break;
            }
            calls += n;
            units.extend(self.waiting.pop_front());
        }
        if units.is_empty() {
            self.free += 1;
        }
        units
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.free
    }

    /// Removes whatever waits, freeing the slot of the caller.
    pub fn abandon(&mut self) -> Vec<U> {
        self.free += 1;
        self.waiting.drain(..).collect()
    }
}

/// A queued call and where its answer goes.
struct Waiting {
    statement: Statement,
    reply: oneshot::Sender<Answer>,
}

/// Calls of one token, in arrival order, to run in one transaction (with other units when they
/// waited for a slot); `done` is told once every call of it has its answer.
struct Unit {
    token: String,
    calls: Vec<Waiting>,
    done: oneshot::Sender<()>,
}

struct Inner {
    pool: Pool,
    max: usize,
    queues: Mutex<Queues<Waiting>>,
    slots: Mutex<Slots<Unit>>,
    metrics: BatchMetrics,
}

impl Inner {
    fn queues(&self) -> MutexGuard<'_, Queues<Waiting>> {
        // No code panics while holding the lock; if it ever did, the map is still consistent.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slots(&self) -> MutexGuard<'_, Slots<Unit>> {
        // As above: nothing panics while holding it.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs API calls, batching those that would wait. Cheap to share (one per proxy).
pub struct Batcher {
    inner: Arc<Inner>,
}

impl Batcher {
    /// `max` is the largest batch, 1 turns batching off; `slots` is how many transactions of
    /// token calls run at once.
    pub fn new(pool: Pool, max: usize, slots: usize, metrics: BatchMetrics) -> Self {
        Batcher {
            inner: Arc::new(Inner {
                pool,
                max,
                queues: Mutex::new(Queues::default()),
                slots: Mutex::new(Slots::new(slots)),
                metrics,
            }),
        }
    }

    /// Runs one call: alone when it has no token or batching is off; otherwise once its token
    /// is idle (after the token's call in flight, with the others that waited for it) and a
    /// slot is free (in the next slot to come free, with everything else that waited).
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
        if let Some(first) = arrived {
            // From here until it drops, this call holds the token: dropping the guard (when
            // the call is done, or when the request is cancelled) hands any queue to a driver.
            let _busy = Busy {
                inner: self.inner.clone(),
                token: token.to_owned(),
                held: true,
            };
            submit(&self.inner, token, vec![first]).await;
        }
        answer
            .await
            .unwrap_or_else(|_| Err(DbError::Internal("a batch ended without answering".into())))
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
        let token = busy.token.clone();
        submit(&busy.inner, &token, batch).await;
    }
}

/// Runs calls of `token` in a slot's transaction, and resolves once each has its answer: at
/// once in a free slot, or, when every slot is taken, in the next one to come free, together
/// with everything else that waited.
async fn submit(inner: &Arc<Inner>, token: &str, calls: Vec<Waiting>) {
    let (done, finished) = oneshot::channel();
    let n = calls.len();
    let unit = Unit {
        token: token.to_owned(),
        calls,
        done,
    };
    let arrived = {
        let mut slots = inner.slots();
        let arrived = slots.arrive(unit);
        if arrived.is_none() {
            inner.metrics.queued.inc_by(to_i64(n));
        }
        arrived
    };
    let Some(unit) = arrived else {
        // A slot's driver runs it; an error here means that driver is gone, and then so is
        // every reply of the unit, which its callers see.
        let _ = finished.await;
        return;
    };
    // Held until this unit is done; dropping it (also when the request is cancelled) hands
    // the slot to whatever waits.
    let _slot = Slot {
        inner: inner.clone(),
        held: true,
    };
    execute(inner, vec![unit]).await;
}

/// Holds a slot. Dropped while units wait, it spawns a driver for them (which then holds the
/// slot); otherwise it frees the slot. So a slot never stays taken with nobody running what
/// waits for it, even when a request is cancelled or a driver panics.
struct Slot {
    inner: Arc<Inner>,
    held: bool,
}

impl Slot {
    /// The next units for this slot; empty when nothing waits, and then the slot is free.
    fn next(&mut self) -> Vec<Unit> {
        let mut slots = self.inner.slots();
        let units = slots.next(self.inner.max, |u| u.calls.len());
        let calls: usize = units.iter().map(|u| u.calls.len()).sum();
        self.inner.metrics.queued.dec_by(to_i64(calls));
        drop(slots);
        if units.is_empty() {
            self.held = false;
        }
        units
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let units = self.next();
        if units.is_empty() {
            return;
        }
        self.held = false;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = self.inner.clone();
            runtime.spawn(async move {
                let mut slot = Slot { inner, held: true };
                let mut units = units;
                while !units.is_empty() {
                    execute(&slot.inner, units).await;
                    units = slot.next();
                }
            });
            return;
        }
        // No runtime left (shutting down): the waiting calls get an error, not silence.
        let mut slots = self.inner.slots();
        let abandoned = slots.abandon();
        drop(slots);
        let calls: usize = units.iter().chain(&abandoned).map(|u| u.calls.len()).sum();
        self.inner.metrics.queued.dec_by(to_i64(calls));
        drop(units);
        drop(abandoned);
    }
}

/// Runs units as one transaction (a single call alone), answers every call, then tells each
/// unit it is done. Units are sorted by token, so every transaction locks wallets in one order.
async fn execute(inner: &Inner, mut units: Vec<Unit>) {
    units.sort_by(|a, b| a.token.cmp(&b.token));
    let mut statements = Vec::new();
    let mut replies = Vec::new();
    let mut dones = Vec::with_capacity(units.len());
    for unit in units {
        for call in unit.calls {
            // A call whose client went away while it waited never ran: it is not run now.
            if !call.reply.is_closed() {
                statements.push(call.statement);
                replies.push(call.reply);
            }
        }
        dones.push(unit.done);
    }
    run_batch(inner, &statements, replies).await;
    for done in dones {
        let _ = done.send(());
    }
}

async fn run_batch(inner: &Inner, statements: &[Statement], replies: Vec<oneshot::Sender<Answer>>) {
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
    fn slots_run_at_once_until_taken_then_hand_on_what_waited() {
        let mut s = Slots::new(2);
        assert_eq!(s.arrive("a"), Some("a"));
        assert_eq!(s.arrive("b"), Some("b"));
        assert_eq!(s.free(), 0);
        // Every slot taken: the rest waits, in arrival order.
        assert_eq!(s.arrive("c"), None);
        assert_eq!(s.arrive("d"), None);
        assert_eq!(s.arrive("e"), None);
        // A slot comes free: it takes what waited, at most `max` calls (one each here).
        assert_eq!(s.next(2, |_| 1), vec!["c", "d"]);
        assert_eq!(s.next(2, |_| 1), vec!["e"]);
        assert_eq!(s.free(), 0);
        // Nothing waits: the slot is freed, and so is the other when it is done.
        assert!(s.next(2, |_| 1).is_empty());
        assert_eq!(s.free(), 1);
        assert!(s.next(2, |_| 1).is_empty());
        assert_eq!(s.free(), 2);
        // Zero slots would stop everything: there is always one.
        assert_eq!(Slots::new(0).arrive(1), Some(1));
    }

    #[test]
    fn a_slot_takes_units_whole_and_at_least_one() {
        let mut s = Slots::new(1);
        assert_eq!(s.arrive(vec![0]), Some(vec![0]));
        for unit in [vec![1; 5], vec![2; 3], vec![3; 2], vec![4; 9]] {
            assert_eq!(s.arrive(unit), None);
        }
        // 5 + 3 fit in 8; the next unit would not, so it waits for the next transaction.
        assert_eq!(s.next(8, Vec::len), vec![vec![1; 5], vec![2; 3]]);
        assert_eq!(s.next(8, Vec::len), vec![vec![3; 2]]);
        // A unit larger than `max` still runs (alone), never waits forever.
        assert_eq!(s.next(8, Vec::len), vec![vec![4; 9]]);
        assert!(s.next(8, Vec::len).is_empty());
        assert_eq!(s.free(), 1);
        // Abandoning hands back what waited and frees the caller's slot.
        assert_eq!(s.arrive(vec![5]), Some(vec![5]));
        assert_eq!(s.arrive(vec![6]), None);
        assert_eq!(s.abandon(), vec![vec![6]]);
        assert_eq!(s.free(), 1);
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
