//! Reactor stall detection: a shard that does not get back to its reactor in time.
//!
//! A shard serves every connection and partition it owns from one thread, so anything that
//! keeps that thread from polling (a blocking syscall, a page fault on a saturated disk, a long
//! loop that never yields, or many ready tasks in a row) delays every request of the shard; that
//! is what Redpanda and Seastar call a reactor stall. [`watch`] runs on each shard as a task
//! that asks for a timer every [`STALL_TICK`] and measures how late it woke: a timer can only
//! fire when the reactor polls, so a wake-up more than [`STALL_BOUND`] late means the reactor
//! was away that long (or the thread was not scheduled, which costs clients the same). Each
//! stall is handed to the caller (the broker counts it in `freshet_reactor_stalls_total` and
//! the `freshet_reactor_stall_seconds` histogram) and logged, at most one line per
//! [`STALL_LOG_INTERVAL`] with the number of stalls not logged.
//!
//! What it does not do: name the code that stalled. A stack sample needs a signal handler on
//! the shard thread that walks the stack (glommio's `detect_stalls` does so with SIGUSR1), and
//! walking a stack is not async-signal-safe; the log says which shard and for how long, and the
//! preceding log lines usually say what it was doing (a slow fdatasync is logged on its own by
//! the flusher). And it samples: a stall is seen when it covers a tick's due time and lasts past
//! it by the bound, so every stall of 30 ms or more is seen ([`STALL_TICK`] + [`STALL_BOUND`])
//! and a shorter one only if it falls on a tick. Cost: one timer per shard every 20 ms (about
//! 1% of a core per idle shard, mostly the executor's spin before it parks again; a 5 ms tick
//! cost 7%, which `fetchadmin_fetch::long_poll_with_too_little_data_parks_without_cpu` refuses).

use std::time::Duration;

/// How often the watch asks for a timer (see the module docs for the cost and what is seen).
pub const STALL_TICK: Duration = Duration::from_millis(20);
/// A timer this much later than asked is a stall (the "e.g. 10 ms").
pub const STALL_BOUND: Duration = Duration::from_millis(10);
/// At most one stall log line per shard per this interval.
pub const STALL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How late a timer asked for `asked` woke after `slept`, if that is a stall (over `bound`).
pub fn stall_of(slept: Duration, asked: Duration, bound: Duration) -> Option<Duration> {
    let late = slept.saturating_sub(asked);
    (late > bound).then_some(late)
}

/// Watches this thread's reactor until dropped (see the module docs); `on_stall` gets the
/// length of each stall. `shard` names the shard in the log.
pub async fn watch(shard: usize, mut on_stall: impl FnMut(Duration)) {
    let mut last_log: Option<super::Instant> = None;
    let mut not_logged = 0u64;
    loop {
        let started = super::now();
        super::sleep(STALL_TICK).await;
        let Some(late) = stall_of(started.elapsed(), STALL_TICK, STALL_BOUND) else {
            continue;
        };
        on_stall(late);
        if last_log.is_none_or(|t| t.elapsed() >= STALL_LOG_INTERVAL) {
            tracing::warn!(
                shard,
                stall_ms = late.as_millis() as u64,
                stalls_not_logged = not_logged,
                "reactor stall: the shard did not get back to its reactor for {late:?} (a blocking call, a long loop, or the thread not scheduled); every request of the shard waited"
            );
            last_log = Some(super::now());
            not_logged = 0;
        } else {
            not_logged += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timer that woke on time or a little late is no stall; past the bound it is, and the
    /// stall's length is how late it woke.
    #[test]
    fn only_wakeups_later_than_the_bound_are_stalls() {
        let ms = Duration::from_millis;
        assert_eq!(stall_of(ms(5), ms(5), ms(10)), None);
        assert_eq!(stall_of(ms(3), ms(5), ms(10)), None);
        assert_eq!(stall_of(ms(15), ms(5), ms(10)), None);
        assert_eq!(stall_of(ms(16), ms(5), ms(10)), Some(ms(11)));
        assert_eq!(stall_of(ms(2005), ms(5), ms(10)), Some(ms(2000)));
    }

    /// Under simulation a task that holds the thread (virtual time advanced without yielding)
    /// is seen by the watch as one stall of that length.
    #[test]
    fn a_task_that_holds_the_thread_is_one_stall() {
        let stalls = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = stalls.clone();
        crate::rt::sim::run(7, async move {
            let watch = crate::rt::spawn_local(watch(0, move |d| seen.borrow_mut().push(d)));
            crate::rt::sleep(Duration::from_millis(50)).await;
            crate::rt::sim::block_for(Duration::from_millis(300));
            crate::rt::sleep(Duration::from_millis(50)).await;
            drop(watch);
        });
        let stalls = stalls.borrow();
        assert_eq!(stalls.len(), 1, "stalls seen: {stalls:?}");
        // The tick asked before the hold was already partly slept.
        assert!(
            stalls[0] >= Duration::from_millis(300) - STALL_TICK,
            "{stalls:?}"
        );
    }
}
