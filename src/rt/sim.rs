//! The deterministic simulated executor: one thread, seeded scheduling, a virtual clock.
//!
//! [`run`] (or [`run_with`]) makes the calling thread a simulation until its future is done:
//! every `rt` call on that thread ([`super::spawn_local`], [`super::sleep`], [`super::now`],
//! [`super::yield_if_needed`], [`super::spawn_blocking`]...) goes here instead of to glommio.
//!
//! - **Order.** Woken tasks wait in one ready set; each step polls one of them chosen by a
//!   splitmix64 generator seeded from [`Config::seed`]. Same seed (and same program) => same
//!   interleaving, step for step; different seeds explore different ones.
//! - **Time.** The clock is virtual: it advances by [`Config::poll_cost`] per poll and, when no
//!   task can run, jumps straight to the earliest pending timer. Sleeping for hours takes no
//!   real time, and timers fire in deadline order. The wall clock ([`super::unix_time_ms`])
//!   starts at [`Config::unix_start_ms`] and moves with it.
//! - **Blocking calls** run inline on the simulation thread (then the caller yields once, as
//!   it would while the real pool works).
//! - **`yield_if_needed`** yields on every [`Config::yield_every_calls`]th call.
//! - **Stuck runs panic** with the seed: no runnable task and no timer (a deadlock), or more
//!   than [`Config::steps_max`] polls (a livelock).
//! - **Sockets are not simulated**: `rt::net` panics under simulation.
//!
//! Task machinery (task cells, wakers, reference counts) is the `async-task` crate's, the one
//! under glommio and smol; this file holds no `unsafe`. Tasks' panics propagate out of
//! [`run`]. Tasks still pending when the main future finishes are dropped, in the simulation.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_task::Runnable;

/// Settings of one simulation run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seeds the scheduling order (and [`random_u64`]).
    pub seed: u64,
    /// `yield_if_needed` yields on every Nth call (1: always).
    pub yield_every_calls: u64,
    /// Virtual time one task poll costs, so that loops waiting on the clock progress.
    pub poll_cost: Duration,
    /// Task polls after which the run panics as a livelock; 0: no limit.
    pub steps_max: u64,
    /// The wall clock ([`super::unix_time_ms`]) at the start of the run, in ms since the Unix
    /// epoch; it then advances with the virtual clock.
    pub unix_start_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0,
            yield_every_calls: 4,
            poll_cost: Duration::from_micros(1),
            steps_max: 0,
            // 2026-01-01T00:00:00Z: fixed, so that timestamps replay with the seed.
            unix_start_ms: 1_767_225_600_000,
        }
    }
}

/// Runs `future` to completion as a simulation seeded with `seed`; returns its output.
pub fn run<T: 'static>(seed: u64, future: impl Future<Output = T> + 'static) -> T {
    run_with(
        Config {
            seed,
            ..Config::default()
        },
        future,
    )
}

/// [`run`] with every setting of [`Config`].
pub fn run_with<T: 'static>(config: Config, future: impl Future<Output = T> + 'static) -> T {
    assert!(!is_active(), "rt::sim::run cannot be nested");
    let executor = Rc::new(Executor::new(config));
    CURRENT.with(|c| *c.borrow_mut() = Some(executor.clone()));
    let _current = Teardown;
    let output = Rc::new(RefCell::new(None));
    let slot = output.clone();
    spawn(async move {
        let value = future.await;
        *slot.borrow_mut() = Some(value);
    })
    .detach();
    loop {
        if let Some(value) = output.borrow_mut().take() {
            return value;
        }
        executor.step();
    }
}

/// Whether this thread is running a simulation (the `rt` calls go here).
pub fn is_active() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

/// Virtual time since the simulation started.
pub fn elapsed() -> Duration {
    with(|ex| ex.elapsed.get())
}

/// The virtual clock as an [`super::Instant`] (what [`super::now`] returns under simulation).
pub fn now() -> super::Instant {
    with(|ex| super::Instant::from_std(ex.start + ex.elapsed.get()))
}

/// The simulated wall clock: [`Config::unix_start_ms`] plus the virtual time elapsed.
pub fn unix_time_ms() -> i64 {
    with(|ex| ex.config.unix_start_ms + ex.elapsed.get().as_millis() as i64)
}

/// Advances the virtual clock by `duration` within the current poll, as a blocking call or a
/// long loop on the thread would: timers due meanwhile fire late (what `rt::stall` detects).
pub fn block_for(duration: Duration) {
    with(|ex| ex.elapsed.set(ex.elapsed.get() + duration));
}

/// Task polls so far in this simulation.
pub fn steps() -> u64 {
    with(|ex| ex.steps.get())
}

/// The next number of the simulation's seeded generator (for fault and workload choices that
/// must replay with the seed).
pub fn random_u64() -> u64 {
    with(|ex| ex.next_u64())
}

/// A seeded random number in `0..n` (`n` > 0).
pub fn random_below(n: u64) -> u64 {
    assert!(n > 0, "random_below(0)");
    random_u64() % n
}

/// Calls `hook(step)` after every task poll of this simulation (replacing an earlier hook):
/// where a simulator checks its invariants.
pub fn on_step(hook: impl FnMut(u64) + 'static) {
    with(|ex| *ex.on_step.borrow_mut() = Some(Box::new(hook)));
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Executor>>> = const { RefCell::new(None) };
}

fn current() -> Option<Rc<Executor>> {
    CURRENT.with(|c| c.borrow().clone())
}

fn with<R>(f: impl FnOnce(&Executor) -> R) -> R {
    let ex = current().expect("rt::sim: this thread is not running a simulation (rt::sim::run)");
    f(&ex)
}

type Hook = Box<dyn FnMut(u64)>;

struct Executor {
    config: Config,
    rng: Cell<u64>,
    /// Real instant the virtual clock counts from.
    start: std::time::Instant,
    elapsed: Cell<Duration>,
    /// Tasks that can run; one is picked at random per step.
    ready: RefCell<Vec<Runnable>>,
    /// Where wakers schedule tasks (a waker may be `Send`-called: hence the mutex).
    scheduled: Arc<Mutex<Vec<Runnable>>>,
    /// Pending sleeps by (deadline, registration number).
    timers: RefCell<BTreeMap<(Duration, u64), Waker>>,
    timers_registered: Cell<u64>,
    steps: Cell<u64>,
    yield_calls: Cell<u64>,
    on_step: RefCell<Option<Hook>>,
}

impl Executor {
    fn new(config: Config) -> Self {
        Executor {
            rng: Cell::new(config.seed),
            config,
            start: std::time::Instant::now(),
            elapsed: Cell::new(Duration::ZERO),
            ready: RefCell::new(Vec::new()),
            scheduled: Arc::new(Mutex::new(Vec::new())),
            timers: RefCell::new(BTreeMap::new()),
            timers_registered: Cell::new(0),
            steps: Cell::new(0),
            yield_calls: Cell::new(0),
            on_step: RefCell::new(None),
        }
    }

    /// splitmix64: small, fast, and the same sequence everywhere for a seed.
    fn next_u64(&self) -> u64 {
        let state = self.rng.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.rng.set(state);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn collect_scheduled(&self) {
        let mut scheduled = self.scheduled.lock().unwrap_or_else(|e| e.into_inner());
        self.ready.borrow_mut().append(&mut scheduled);
    }

    /// Wakes every timer whose deadline has come (in deadline order).
    fn fire_due_timers(&self) {
        let now = self.elapsed.get();
        loop {
            let due = {
                let mut timers = self.timers.borrow_mut();
                match timers.first_key_value() {
                    Some((&(at, _), _)) if at <= now => timers.pop_first().map(|(_, w)| w),
                    _ => None,
                }
            };
            match due {
                Some(waker) => waker.wake(),
                None => break,
            }
        }
    }

    /// One step: poll one ready task, or advance the clock to the next timer.
    fn step(&self) {
        self.collect_scheduled();
        self.fire_due_timers();
        self.collect_scheduled();
        if self.ready.borrow().is_empty() {
            let next = self
                .timers
                .borrow()
                .first_key_value()
                .map(|(&(at, _), _)| at);
            let Some(at) = next else {
                panic!(
                    "rt::sim (seed {}): deadlock: no task can run and no timer is pending",
                    self.config.seed
                );
            };
            self.elapsed.set(self.elapsed.get().max(at));
            return;
        }
        let runnable = {
            let mut ready = self.ready.borrow_mut();
            let i = (self.next_u64() % ready.len() as u64) as usize;
            ready.swap_remove(i)
        };
        let step = self.steps.get() + 1;
        self.steps.set(step);
        if self.config.steps_max != 0 && step > self.config.steps_max {
            panic!(
                "rt::sim (seed {}): still running after {} steps (a livelock?)",
                self.config.seed, self.config.steps_max
            );
        }
        self.elapsed.set(self.elapsed.get() + self.config.poll_cost);
        runnable.run();
        let hook = self.on_step.borrow_mut().take();
        if let Some(mut hook) = hook {
            hook(step);
            let mut slot = self.on_step.borrow_mut();
            if slot.is_none() {
                *slot = Some(hook);
            }
        }
    }

    /// Takes everything still queued (tasks, timers' wakers): dropped by the caller.
    fn take_pending(&self) -> (Vec<Runnable>, BTreeMap<(Duration, u64), Waker>) {
        self.collect_scheduled();
        let ready = std::mem::take(&mut *self.ready.borrow_mut());
        let timers = std::mem::take(&mut *self.timers.borrow_mut());
        (ready, timers)
    }
}

/// Ends the simulation on this thread (also when a task panicked): drops the tasks still
/// pending while the simulation is current (their destructors may use `rt`), then clears it.
struct Teardown;

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Some(ex) = current() {
            if std::thread::panicking() {
                // Destructors of half-run tasks could panic again: leak them instead.
                let pending = ex.take_pending();
                std::mem::forget(pending);
            } else {
                // Dropping a task may wake or release others: repeat until nothing is left.
                for _ in 0..1000 {
                    let (ready, timers) = ex.take_pending();
                    if ready.is_empty() && timers.is_empty() {
                        break;
                    }
                    drop(ready);
                    drop(timers);
                }
            }
        }
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// Cancellation shared by a task and its handles: [`SimJoinHandle::cancel`] sets it and
/// wakes the task, which then completes with `None` (its future is dropped, never polled).
#[derive(Default)]
struct CancelState {
    cancelled: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

struct Cancellable<T> {
    future: Pin<Box<dyn Future<Output = T>>>,
    state: Rc<CancelState>,
}

impl<T> Future for Cancellable<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        if this.state.cancelled.get() {
            return Poll::Ready(None);
        }
        match this.future.as_mut().poll(cx) {
            Poll::Ready(value) => Poll::Ready(Some(value)),
            Poll::Pending => {
                *this.state.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

pub(super) fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> SimTask<T> {
    let queue = with(|ex| ex.scheduled.clone());
    let state = Rc::new(CancelState::default());
    let future = Cancellable {
        future: Box::pin(future),
        state: state.clone(),
    };
    let schedule = move |runnable| {
        queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(runnable)
    };
    let (runnable, task) = async_task::spawn_local(future, schedule);
    runnable.schedule();
    SimTask { task, state }
}

/// A simulated task: awaiting gives its output; dropping it cancels it.
pub(super) struct SimTask<T> {
    task: async_task::Task<Option<T>>,
    state: Rc<CancelState>,
}

impl<T> SimTask<T> {
    pub(super) fn detach(self) -> SimJoinHandle<T> {
        SimJoinHandle {
            task: Some(self.task),
            state: self.state,
        }
    }

    pub(super) async fn cancel(self) -> Option<T> {
        self.task.cancel().await.flatten()
    }
}

impl<T> Future for SimTask<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match Pin::new(&mut self.get_mut().task).poll(cx) {
            Poll::Ready(Some(value)) => Poll::Ready(value),
            // Only a JoinHandle cancels, and detaching consumed this Task.
            Poll::Ready(None) => unreachable!("a task awaited through its Task is not cancelled"),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A detached simulated task: keeps running when dropped; awaiting gives `None` if cancelled.
pub(super) struct SimJoinHandle<T> {
    task: Option<async_task::Task<Option<T>>>,
    state: Rc<CancelState>,
}

impl<T> SimJoinHandle<T> {
    pub(super) fn cancel(&self) {
        self.state.cancelled.set(true);
        let waker = self.state.waker.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for SimJoinHandle<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.detach();
        }
    }
}

impl<T> Future for SimJoinHandle<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.get_mut().task.as_mut() {
            Some(task) => Pin::new(task).poll(cx),
            None => Poll::Ready(None),
        }
    }
}

/// A simulated sleep: its deadline is set when first polled, it wakes when the virtual clock
/// reaches it.
pub(super) struct SimSleep {
    duration: Duration,
    key: Option<(Duration, u64)>,
}

impl SimSleep {
    pub(super) fn new(duration: Duration) -> Self {
        SimSleep {
            duration,
            key: None,
        }
    }
}

impl Future for SimSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        with(|ex| {
            let now = ex.elapsed.get();
            let key = *this.key.get_or_insert_with(|| {
                let n = ex.timers_registered.get();
                ex.timers_registered.set(n + 1);
                (now + this.duration, n)
            });
            if now >= key.0 {
                ex.timers.borrow_mut().remove(&key);
                return Poll::Ready(());
            }
            ex.timers.borrow_mut().insert(key, cx.waker().clone());
            Poll::Pending
        })
    }
}

impl Drop for SimSleep {
    fn drop(&mut self) {
        if let (Some(key), Some(ex)) = (self.key, current()) {
            // Not while a teardown holds the map (it took it: nothing to remove then).
            if let Ok(mut timers) = ex.timers.try_borrow_mut() {
                timers.remove(&key);
            }
        }
    }
}

/// Returns `Pending` once (after waking itself), then `Ready`: the others run in between.
#[derive(Default)]
pub(super) struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.yielded {
            return Poll::Ready(());
        }
        this.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Whether this call of `yield_if_needed` yields (every [`Config::yield_every_calls`]th).
pub(super) fn should_yield() -> bool {
    with(|ex| {
        let n = ex.yield_calls.get() + 1;
        ex.yield_calls.set(n);
        n % ex.config.yield_every_calls.max(1) == 0
    })
}
