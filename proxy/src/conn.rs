//! How long a connection may stay open without a request in flight. hyper's own timeouts
//! cover only parts of this (its HTTP/1 header timeout starts after the protocol is told from
//! the first bytes, and HTTP/2 has no idle timeout), so the accept loop watches each
//! connection's [`Activity`]. How many may be open is [`echovalue_common::admission`].

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};

use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

/// The requests in flight on one connection and when the last one ended.
pub struct Activity {
    in_flight: AtomicUsize,
    /// When the connection was accepted, then when its last request ended; `None` before
    /// its first request ended (the first request has its own, shorter, deadline).
    last_end: Mutex<Option<Instant>>,
    accepted: Instant,
    changed: Notify,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_end: Mutex::new(None),
            accepted: Instant::now(),
            changed: Notify::new(),
        })
    }

    /// A request started; it counts as in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        InFlight(self.clone())
    }

    /// Resolves when the connection has had no request in flight for `idle` since its last
    /// request ended, or none at all within `first` of being accepted.
    pub async fn idle(&self, first: Duration, idle: Duration) {
        loop {
            let woken = self.changed.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                let last_end = *self.last_end.lock().unwrap_or_else(PoisonError::into_inner);
                let deadline = last_end.map_or(self.accepted + first, |t| t + idle);
                if Instant::now() >= deadline {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = woken => {}
                }
            } else {
                woken.await;
            }
        }
    }
}

/// A request in flight on a connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self
            .0
            .last_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// A response body that keeps its request in flight until hyper has sent it and drops it.
pub struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(body: B, in_flight: InFlight) -> Self {
        Tracked {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_accept_then_from_the_last_answer() {
        let act = Activity::new();
        let (first, idle) = (Duration::from_secs(10), Duration::from_secs(60));
        let start = Instant::now();
        act.idle(first, idle).await;
        assert_eq!(start.elapsed(), first);

        let act = Activity::new();
        let request = act.begin();
        let watcher = tokio::spawn({
            let act = act.clone();
            async move {
                act.idle(first, idle).await;
                Instant::now()
            }
        });
        // a request in flight is never idle, however long it takes
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!watcher.is_finished());
        let ended = Instant::now();
        drop(request);
        assert_eq!(watcher.await.unwrap() - ended, idle);
    }
}
