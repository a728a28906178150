//! A single-threaded "something changed" signal for tasks on one shard.
//!
//! Used to wake long-poll fetches when a partition's high watermark moves. Waiters register
//! with [`Notify::wait`] and are all woken by [`Notify::notify_all`]; a waiter checks its
//! condition again after waking (wake-ups may be spurious). Not `Send`: it lives on the shard
//! that owns the partition.
//!
//! The one wake-up primitive of a shard (issue 11 merged the server's `StopWaiters` into it):
//! a latched condition ("the shard is stopping") is a flag plus a `Notify`, awaited with
//! [`Notify::until`], which checks the flag before each wait so a waiter that comes after the
//! notification does not wait forever.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Wakes every registered waiter at once.
#[derive(Default)]
pub struct Notify {
    generation: std::cell::Cell<u64>,
    /// Registered wakers by waiter id. A [`Wait`] that is dropped before it resolves removes
    /// its entry, so a waiter that gave up (a long poll that timed out, a closed connection)
    /// keeps neither a waker nor, through it, its task's memory alive until the next wake-up.
    wakers: RefCell<BTreeMap<u64, Waker>>,
    next_waiter: std::cell::Cell<u64>,
}

impl Notify {
    pub fn new() -> Rc<Notify> {
        Rc::new(Notify::default())
    }

    /// Wakes all current waiters.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    /// Resolves at the next [`Notify::notify_all`] after this call.
    pub fn wait(&self) -> Wait<'_> {
        let id = self.next_waiter.get();
        self.next_waiter.set(id + 1);
        Wait {
            notify: self,
            generation: self.generation.get(),
            id,
        }
    }

    /// Resolves once `done()` is true: checked at once, then after each [`Notify::notify_all`].
    /// The caller sets what `done` reads before it notifies (a latched flag such as
    /// `Shard::stopping`). Dropping the future unregisters its waker, as [`Wait`] does.
    pub async fn until(&self, done: impl Fn() -> bool) {
        while !done() {
            self.wait().await;
        }
    }

    /// Wakers registered now (for tests and invariants).
    pub fn waiters(&self) -> usize {
        self.wakers.borrow().len()
    }
}

/// The future of [`Notify::wait`]; unregisters its waker when dropped.
pub struct Wait<'a> {
    notify: &'a Notify,
    generation: u64,
    id: u64,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut wakers = self.notify.wakers.borrow_mut();
        match wakers.get_mut(&self.id) {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => {
                wakers.insert(self.id, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.notify.wakers.borrow_mut().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_waiter_leaves_no_waker_behind() {
        let notify = Notify::new();
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            let mut wait = Box::pin(notify.wait());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert_eq!(notify.waiters(), 1);
        }
        assert_eq!(notify.waiters(), 0, "dropped waiters must unregister");
        let mut wait = Box::pin(notify.wait());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        notify.notify_all();
        assert_eq!(notify.waiters(), 0);
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }

    /// `until` resolves at once when the condition already holds, waits while it does not
    /// (a spurious notification included), resolves at the notification that follows the
    /// condition becoming true, and leaves no waker behind when dropped.
    #[test]
    fn until_waits_for_the_condition_and_unregisters() {
        let notify = Notify::new();
        let done = std::cell::Cell::new(false);
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        {
            let mut until = Box::pin(notify.until(|| done.get()));
            assert!(until.as_mut().poll(&mut cx).is_pending());
            assert_eq!(notify.waiters(), 1);
        }
        assert_eq!(notify.waiters(), 0, "a dropped until must unregister");
        let mut until = Box::pin(notify.until(|| done.get()));
        assert!(until.as_mut().poll(&mut cx).is_pending());
        notify.notify_all();
        assert!(
            until.as_mut().poll(&mut cx).is_pending(),
            "woken, but not done"
        );
        done.set(true);
        notify.notify_all();
        assert!(until.as_mut().poll(&mut cx).is_ready());
        assert_eq!(notify.waiters(), 0);
        let mut late = Box::pin(notify.until(|| done.get()));
        assert!(
            late.as_mut().poll(&mut cx).is_ready(),
            "a latched condition needs no wake-up"
        );
    }
}
