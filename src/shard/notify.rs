//! A single-threaded "something changed" signal for tasks on one shard.
//!
//! Used to wake long-poll fetches when a partition's high watermark moves. Waiters register
//! with [`Notify::wait`] and are all woken by [`Notify::notify_all`]; a waiter checks its
//! condition again after waking (wake-ups may be spurious). Not `Send`: it lives on the shard
//! that owns the partition.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Wakes every registered waiter at once.
#[derive(Default)]
pub struct Notify {
    generation: std::cell::Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn new() -> Rc<Notify> {
        Rc::new(Notify::default())
    }

    /// Wakes all current waiters.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Resolves at the next [`Notify::notify_all`] after this call.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            notify: self,
            generation: self.generation.get(),
        }
    }
}

/// The future of [`Notify::wait`].
pub struct Wait<'a> {
    notify: &'a Notify,
    generation: u64,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut wakers = self.notify.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
