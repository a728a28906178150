//! A single-threaded "something changed" signal for tasks on one shard.
//!
//! Used to wake long-poll fetches when a partition's high watermark moves. Waiters register
//! with [`Notify::wait`] and are all woken by [`Notify::notify_all`]; a waiter checks its
//! condition again after waking (wake-ups may be spurious). Not `Send`: it lives on the shard
//! that owns the partition.

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
}
