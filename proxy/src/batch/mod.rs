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
//!
//! The queues are bounded: a call that finds `ECHOVALUE_QUEUE_MAX` calls waiting, or that
//! waits `ECHOVALUE_QUEUE_TIMEOUT_MS` before its transaction starts (say behind a wallet row
//! another session holds locked), is answered [`DbError::TimedOut`] and never runs. Whoever
//! comes first, the call's transaction or its deadline, takes the call's `claim`, so a call
//! either runs and is answered, or is refused and never charged.
//!
//! Layout: [`queues`] and [`slots`] are the two levels' bookkeeping, plain data with unit
//! tests; [`follow`] asks the database whether to batch at all; this module holds the tasks
//! that drive them and the guards that hand work on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::oneshot;

use crate::api::Statement;
use crate::db::{self, DbError};
use crate::metrics::BatchMetrics;
use crate::outcome::Outcome;

mod follow;
mod queues;
mod run;
mod slots;

use run::run_batch;

pub use queues::Queues;
pub use slots::Slots;

type Answer = Result<Outcome, DbError>;

/// A queued call and where its answer goes; `claim` is taken by whichever comes first, the
/// transaction that runs it or its deadline.
struct Waiting {
    statement: Statement,
    reply: oneshot::Sender<Answer>,
    claim: Arc<AtomicBool>,
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
    /// Whether the database lets calls share a transaction ([`Batcher::follow_database`]).
    grouping: AtomicBool,
    queue_max: usize,
    queue_timeout: Duration,
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

/// How many calls run together, how many transactions at once, and how long and how many may
/// wait.
pub struct Sizes {
    /// The largest batch; 1 turns batching off.
    pub max: usize,
    /// Transactions of token calls at once.
    pub slots: usize,
    /// Most calls waiting in the queues.
    pub queue_max: usize,
    /// Longest wait of a call before its transaction starts.
    pub queue_timeout: Duration,
}

impl Batcher {
    pub fn new(pool: Pool, sizes: &Sizes, metrics: BatchMetrics) -> Self {
        let (max, slots) = (sizes.max, sizes.slots);
        metrics.group_commit.set(i64::from(max > 1));
        Batcher {
            inner: Arc::new(Inner {
                pool,
                max,
                grouping: AtomicBool::new(true),
                queue_max: sizes.queue_max,
                queue_timeout: sizes.queue_timeout,
                queues: Mutex::new(Queues::default()),
                slots: Mutex::new(Slots::new(slots)),
                metrics,
            }),
        }
    }

    /// Runs one call: alone when it has no token or batching is off; otherwise once its token
    /// is idle (after the token's call in flight, with the others that waited for it) and a
    /// slot is free (in the next slot to come free, with everything else that waited).
    pub async fn call(&self, mut statement: Statement) -> Answer {
        let grouping = self.inner.max > 1 && self.inner.grouping.load(Ordering::Relaxed);
        let Some(token) = statement.token.take().filter(|_| grouping) else {
            return db::call(&self.inner.pool, &statement).await;
        };
        if self.inner.metrics.queued.get() >= to_i64(self.inner.queue_max) {
            return Err(DbError::TimedOut("the batch queues are full".into()));
        }
        let claim = Arc::new(AtomicBool::new(false));
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            statement,
            reply,
            claim: claim.clone(),
        };
        let work = self.queued(&token, waiting, answer);
        tokio::pin!(work);
        match tokio::time::timeout(self.inner.queue_timeout, &mut work).await {
            Ok(answer) => answer,
            // Its transaction took the claim first: it runs (bounded by statement_timeout).
            Err(_) if claim.swap(true, Ordering::SeqCst) => work.await,
            Err(_) => Err(DbError::TimedOut(
                "the call waited in the batch queues past ECHOVALUE_QUEUE_TIMEOUT_MS".into(),
            )),
        }
    }

    async fn queued(
        &self,
        token: &str,
        waiting: Waiting,
        answer: oneshot::Receiver<Answer>,
    ) -> Answer {
        let arrived = {
            let mut queues = self.inner.queues();
            let arrived = queues.arrive(token, waiting);
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
                driver: false,
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
///
/// A driver's future is only dropped unfinished without a panic when the runtime shuts down
/// and cancels its tasks: then the waiting calls are abandoned. Spawning another driver there
/// would be cancelled at once by the shutting-down runtime, inside `spawn`, and drop a Busy
/// again: a recursion that overflowed the stack.
struct Busy {
    inner: Arc<Inner>,
    token: String,
    held: bool,
    /// Held by a driver task (see [`drive`]), not by a request.
    driver: bool,
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
        let cancelled_driver = self.driver && !std::thread::panicking();
        if let (false, Ok(runtime)) = (cancelled_driver, tokio::runtime::Handle::try_current()) {
            let inner = self.inner.clone();
            runtime.spawn(drive(Busy {
                inner,
                token,
                held: true,
                driver: true,
            }));
            return;
        }
        // Shutting down (no runtime left, or a cancelled driver): the waiting calls get an
        // error, not silence.
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
            // A call whose client went away, or whose deadline passed, while it waited never
            // ran: it is not run now.
            if !call.reply.is_closed() && !call.claim.swap(true, Ordering::SeqCst) {
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

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
