//! The runtime seam: the one place through which tasks, timers, yields, locks, blocking calls
//! and sockets go. Nothing else in the broker names glommio, except the storage I/O layer
//! (`storage::io`, the DmaFile backend).
//!
//! Two backends, chosen per thread at run time (no cargo feature, so one test binary uses
//! both):
//! - **glommio** (`glommio_backend`), the default: the real thread-per-core executors, their
//!   io_uring reactor and blocking pool. [`start_pool`] starts the broker's executors.
//! - **simulation** ([`sim`]): while [`sim::run`] runs on a thread, every call below goes to a
//!   deterministic single-threaded executor with a seeded scheduling order and a virtual clock.
//!
//! The names follow glommio's so that moving code onto the seam is a change of path:
//! [`spawn_local`] returns a [`Task`] (awaitable; dropping it cancels the task), whose
//! [`Task::detach`] returns a [`JoinHandle`] (dropping it does not cancel; [`JoinHandle::cancel`]
//! does; awaiting gives `None` if cancelled). [`sync`] has the semaphore and the read-write
//! lock, [`net`] the TCP types. Time is [`now`] / [`Instant`] and [`unix_time_ms`] (both
//! virtual under simulation) and [`sleep`].

mod glommio_backend;
mod join;
pub mod net;
pub mod notify;
pub mod sim;
pub mod stall;
pub mod sync;
mod time;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use glommio_backend::{
    is_out_of_descriptors, memlock_needed, run_on_new_executor, run_on_own_thread, start_pool,
    Pool, PoolSettings, PoolStartError,
};
pub use join::{first_of, join_all};
pub use notify::Notify;
pub use time::{now, sleep, timeout, unix_time_ms, Instant, LogLimiter, Sleep};

/// Spawns `future` as a task of this thread's executor (glommio's, or the simulation's).
pub fn spawn_local<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    if sim::is_active() {
        Task(TaskInner::Sim(sim::spawn(future)))
    } else {
        Task(TaskInner::Glommio(glommio_backend::spawn_local(future)))
    }
}

/// Spawns `future` into `queue` (see [`create_task_queue`]).
pub fn spawn_local_into<T: 'static>(
    future: impl Future<Output = T> + 'static,
    queue: TaskQueue,
) -> Result<Task<T>, net::Error> {
    match queue.0 {
        QueueInner::Glommio(handle) => {
            glommio_backend::spawn_local_into(future, handle).map(|t| Task(TaskInner::Glommio(t)))
        }
        QueueInner::Sim => Ok(spawn_local(future)),
    }
}

/// A task queue: on glommio a queue with its own CPU shares; under simulation, the one queue.
#[derive(Debug, Clone, Copy)]
pub struct TaskQueue(QueueInner);

#[derive(Debug, Clone, Copy)]
enum QueueInner {
    Glommio(glommio_backend::TaskQueueHandle),
    Sim,
}

/// A background queue with `shares` CPU shares (the default queue has 1000) for work that
/// must not stall requests (the log cleaner).
pub fn create_task_queue(shares: usize, name: &str) -> TaskQueue {
    if sim::is_active() {
        TaskQueue(QueueInner::Sim)
    } else {
        TaskQueue(QueueInner::Glommio(glommio_backend::create_task_queue(
            shares, name,
        )))
    }
}

/// Yields to other tasks if this one has run for its time slice (under simulation: every
/// few calls).
pub async fn yield_if_needed() {
    if sim::is_active() {
        if sim::should_yield() {
            sim::YieldNow::default().await;
        }
    } else {
        glommio_backend::yield_if_needed().await;
    }
}

/// Lets every other runnable task run before this one continues.
pub async fn yield_now() {
    if sim::is_active() {
        sim::YieldNow::default().await;
    } else {
        glommio_backend::yield_now().await;
    }
}

/// Runs `f` on the executor's blocking thread pool (under simulation: inline, now) and gives
/// its result.
pub fn spawn_blocking<F, R>(f: F) -> Pin<Box<dyn Future<Output = R>>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if sim::is_active() {
        let value = f();
        Box::pin(async move {
            sim::YieldNow::default().await;
            value
        })
    } else {
        Box::pin(glommio_backend::spawn_blocking(f))
    }
}

/// A spawned task: awaiting it gives its output; dropping it cancels it.
#[must_use = "tasks get cancelled when dropped, use `.detach()` to run them in the background"]
pub struct Task<T>(TaskInner<T>);

enum TaskInner<T> {
    Glommio(glommio_backend::Task<T>),
    Sim(sim::SimTask<T>),
}

impl<T> Task<T> {
    /// Lets the task run in the background; the handle can still cancel or await it.
    pub fn detach(self) -> JoinHandle<T> {
        match self.0 {
            TaskInner::Glommio(t) => JoinHandle(JoinInner::Glommio(t.detach())),
            TaskInner::Sim(t) => JoinHandle(JoinInner::Sim(t.detach())),
        }
    }

    /// Cancels the task and waits until it stopped; its output if it had just finished.
    pub async fn cancel(self) -> Option<T> {
        match self.0 {
            TaskInner::Glommio(t) => t.cancel().await,
            TaskInner::Sim(t) => t.cancel().await,
        }
    }
}

impl<T> Future for Task<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.get_mut().0 {
            TaskInner::Glommio(t) => Pin::new(t).poll(cx),
            TaskInner::Sim(t) => Pin::new(t).poll(cx),
        }
    }
}

/// A detached task: dropping the handle leaves it running.
pub struct JoinHandle<T>(JoinInner<T>);

enum JoinInner<T> {
    Glommio(glommio_backend::JoinHandle<T>),
    Sim(sim::SimJoinHandle<T>),
}

impl<T> JoinHandle<T> {
    /// Cancels the task: it is not polled again, and awaiting the handle gives `None`.
    pub fn cancel(&self) {
        match &self.0 {
            JoinInner::Glommio(h) => h.cancel(),
            JoinInner::Sim(h) => h.cancel(),
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match &mut self.get_mut().0 {
            JoinInner::Glommio(h) => Pin::new(h).poll(cx),
            JoinInner::Sim(h) => Pin::new(h).poll(cx),
        }
    }
}

#[cfg(test)]
mod tests;
