//! The time a shard spends handling one request (the request quota's measure, KIP-124).
//!
//! A request handler runs inside [`timed`], which adds up the wall time of its polls: the
//! analogue of Kafka's request-handler thread time, without the waits (a disk, a peer, a
//! timer). Work a handler sends to another shard (`shard::Router::invoke_on`) runs there inside
//! [`timed`] too, and its time is added to the caller's when the answer comes back ([`add`]),
//! so a request is charged for the time of every shard that worked on it. A thread-local holds
//! the handler being polled (polls of different tasks never nest on one thread), so a handler
//! can read its time so far ([`busy_so_far`]).

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

thread_local! {
    /// While a future is being polled inside [`timed`]: when this poll started, and its time
    /// before this poll (plus what other shards reported during it, [`add`]).
    static POLLING: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
}

/// Puts back the [`POLLING`] state of an enclosing poll (also when the future panics).
struct RestorePolling(Option<(Instant, Duration)>);

impl Drop for RestorePolling {
    fn drop(&mut self) {
        POLLING.set(self.0);
    }
}

/// Runs `future` and returns its output with the time spent polling it (and the time other
/// shards spent on its behalf).
pub async fn timed<F: Future>(future: F) -> (F::Output, Duration) {
    let mut future = std::pin::pin!(future);
    let mut busy = Duration::ZERO;
    let output = std::future::poll_fn(|cx| {
        let started = Instant::now();
        let _restore = RestorePolling(POLLING.replace(Some((started, busy))));
        let poll = future.as_mut().poll(cx);
        let before = POLLING.get().map_or(busy, |(_, before)| before);
        busy = before + started.elapsed();
        poll
    })
    .await;
    (output, busy)
}

/// The time the future being polled inside [`timed`] has taken so far (zero outside).
pub fn busy_so_far() -> Duration {
    POLLING.get().map_or(Duration::ZERO, |(started, before)| {
        before + started.elapsed()
    })
}

/// Adds `elapsed` (another shard's time on the current future's behalf) to the future being
/// polled inside [`timed`]; nothing outside.
pub fn add(elapsed: Duration) {
    if let Some((started, before)) = POLLING.get() {
        POLLING.set(Some((started, before + elapsed)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            std::hint::spin_loop();
        }
    }

    /// Only the time spent inside the polls counts, not the waits between them; time added
    /// by another shard counts.
    #[test]
    fn timed_counts_polls_and_added_time_not_waits() {
        let mut polls = 0;
        let mut seen_in_second_poll = Duration::ZERO;
        let handler = std::future::poll_fn(|cx| {
            polls += 1;
            if polls == 1 {
                let waker = cx.waker().clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(150));
                    waker.wake();
                });
                spin(Duration::from_millis(20));
                return std::task::Poll::Pending;
            }
            seen_in_second_poll = busy_so_far();
            add(Duration::from_millis(500));
            spin(Duration::from_millis(20));
            std::task::Poll::Ready(7)
        });
        let started = Instant::now();
        let (out, busy) = futures_lite::future::block_on(timed(handler));
        let wall = started.elapsed();
        assert_eq!(out, 7);
        assert!(seen_in_second_poll >= Duration::from_millis(20));
        let own = busy - Duration::from_millis(500);
        assert!(own >= Duration::from_millis(40), "{busy:?}");
        assert!(
            own + Duration::from_millis(100) <= wall,
            "{busy:?} of {wall:?}"
        );
        assert_eq!(busy_so_far(), Duration::ZERO, "outside a poll");
        add(Duration::from_secs(1));
        assert_eq!(
            busy_so_far(),
            Duration::ZERO,
            "nothing to add to outside a poll"
        );
    }

    /// A timed future inside a timed future: the inner time counts in both.
    #[test]
    fn nested_timing_counts_in_both() {
        let (((), inner), outer) = futures_lite::future::block_on(timed(async {
            timed(async { spin(Duration::from_millis(10)) }).await
        }));
        assert!(inner >= Duration::from_millis(10));
        assert!(outer >= inner);
    }
}
