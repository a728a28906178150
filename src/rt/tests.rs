//! Tests of the runtime seam: the simulated executor's determinism, clock and task semantics,
//! and the same task semantics on the glommio backend.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use super::sync::{RwLock, Semaphore};
use super::{sim, sleep, spawn_local, yield_now};

/// Ten tasks that each log their id at three yield points: the interleaving of a seed.
fn interleaving(seed: u64) -> Vec<u32> {
    sim::run(seed, async {
        let log = Rc::new(RefCell::new(Vec::new()));
        let tasks: Vec<_> = (0..10)
            .map(|id| {
                let log = log.clone();
                spawn_local(async move {
                    for _ in 0..3 {
                        log.borrow_mut().push(id);
                        yield_now().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let order = log.borrow().clone();
        order
    })
}

#[test]
fn the_same_seed_gives_the_same_interleaving() {
    for seed in [0, 1, 42, u64::MAX] {
        assert_eq!(interleaving(seed), interleaving(seed), "seed {seed}");
    }
}

#[test]
fn different_seeds_give_different_interleavings() {
    let first = interleaving(0);
    let distinct = (1..20).filter(|&s| interleaving(s) != first).count();
    assert!(
        distinct >= 15,
        "only {distinct} of 19 seeds differ from seed 0"
    );
}

#[test]
fn virtual_sleeps_of_hours_finish_at_once_and_in_deadline_order() {
    let real = std::time::Instant::now();
    let (order, elapsed) = sim::run(7, async {
        let order = Rc::new(RefCell::new(Vec::new()));
        let start = super::now();
        let tasks: Vec<_> = [5u64, 1, 3, 2, 4]
            .into_iter()
            .map(|hours| {
                let order = order.clone();
                spawn_local(async move {
                    sleep(Duration::from_secs(hours * 3600)).await;
                    let late = start.elapsed() - Duration::from_secs(hours * 3600);
                    assert!(
                        late < Duration::from_millis(1),
                        "{hours} h: woke {late:?} late"
                    );
                    order.borrow_mut().push(hours);
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let order = order.borrow().clone();
        (order, start.elapsed())
    });
    assert_eq!(order, vec![1, 2, 3, 4, 5]);
    assert!(elapsed >= Duration::from_secs(5 * 3600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5 * 3600 + 1), "{elapsed:?}");
    assert!(
        real.elapsed() < Duration::from_secs(5),
        "{:?}",
        real.elapsed()
    );
}

#[test]
fn the_virtual_clock_is_the_simulations_own() {
    sim::run(3, async {
        let before = sim::elapsed();
        sleep(Duration::from_millis(1500)).await;
        let slept = sim::elapsed() - before;
        assert!(slept >= Duration::from_millis(1500), "{slept:?}");
        assert!(slept < Duration::from_millis(1501), "{slept:?}");
    });
    assert!(!sim::is_active(), "the simulation ends with run");
}

/// Task semantics: dropping a Task cancels it, dropping a JoinHandle does not, a cancelled
/// JoinHandle gives None and its future is dropped without being polled again.
async fn task_semantics() {
    let runs = Rc::new(Cell::new(0));
    let dropped = {
        let r = runs.clone();
        spawn_local(async move {
            sleep(Duration::from_millis(10)).await;
            r.set(r.get() + 1);
        })
    };
    drop(dropped);
    let r = runs.clone();
    let detached = spawn_local(async move {
        sleep(Duration::from_millis(10)).await;
        r.set(r.get() + 10);
    })
    .detach();
    drop(detached);
    let r = runs.clone();
    let awaited = spawn_local(async move {
        sleep(Duration::from_millis(20)).await;
        r.set(r.get() + 100);
        7
    });
    assert_eq!(awaited.await, 7);
    assert_eq!(
        runs.get(),
        110,
        "the dropped Task must not run, the detached one must"
    );

    struct OnDrop(Rc<Cell<bool>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let future_dropped = Rc::new(Cell::new(false));
    let guard = OnDrop(future_dropped.clone());
    let r = runs.clone();
    let handle = spawn_local(async move {
        let _guard = guard;
        sleep(Duration::from_secs(3600)).await;
        r.set(r.get() + 1000);
    })
    .detach();
    sleep(Duration::from_millis(1)).await;
    let cancelled_at = super::now();
    handle.cancel();
    assert_eq!(handle.await, None);
    assert!(future_dropped.get(), "a cancelled task's future is dropped");
    let waited = cancelled_at.elapsed();
    assert!(waited < Duration::from_secs(60), "cancel took {waited:?}");
    let finished = spawn_local(async { 5 }).detach();
    assert_eq!(finished.await, Some(5));
    assert_eq!(runs.get(), 110);
}

#[test]
fn task_drop_detach_and_cancel_under_simulation() {
    for seed in 0..20 {
        sim::run(seed, task_semantics());
    }
}

#[test]
fn task_drop_detach_and_cancel_on_glommio() {
    super::run_on_new_executor(1 << 20, 64, task_semantics()).expect("a glommio executor");
}

#[test]
fn spawn_blocking_runs_inline_under_simulation() {
    let thread = std::thread::current().id();
    let (ran_on, value) = sim::run(1, async move {
        super::spawn_blocking(move || (std::thread::current().id(), 41 + 1)).await
    });
    assert_eq!(ran_on, thread);
    assert_eq!(value, 42);
}

#[test]
fn yield_if_needed_yields_every_nth_call() {
    let config = sim::Config {
        seed: 9,
        yield_every_calls: 3,
        ..sim::Config::default()
    };
    let steps = sim::run_with(config, async {
        let before = sim::steps();
        for _ in 0..9 {
            super::yield_if_needed().await;
        }
        sim::steps() - before
    });
    assert_eq!(steps, 3, "9 calls, one yield (one more poll) every 3rd");
}

#[test]
#[should_panic(expected = "deadlock")]
fn a_simulation_with_nothing_left_to_run_panics() {
    sim::run(5, std::future::pending::<()>());
}

#[test]
#[should_panic(expected = "livelock")]
fn a_simulation_past_its_step_limit_panics() {
    let config = sim::Config {
        steps_max: 1000,
        ..sim::Config::default()
    };
    sim::run_with(config, async {
        loop {
            yield_now().await;
        }
    });
}

#[test]
#[should_panic(expected = "not simulated")]
fn sockets_panic_under_simulation() {
    sim::run(1, async {
        let _ = super::net::bind("127.0.0.1:0".parse().unwrap());
    });
}

#[test]
fn the_step_hook_sees_every_poll() {
    let seen = sim::run(2, async {
        let seen = Rc::new(Cell::new(0u64));
        let s = seen.clone();
        sim::on_step(move |_| s.set(s.get() + 1));
        let before = sim::steps();
        for _ in 0..5 {
            yield_now().await;
        }
        (seen.get(), sim::steps() - before)
    });
    assert_eq!(seen.0, seen.1);
}

/// Waiters queued on a semaphore (one unit) get it in arrival order, whatever the seed.
#[test]
fn semaphore_waiters_are_served_in_arrival_order() {
    for seed in 0..30 {
        let order = sim::run(seed, async {
            let semaphore = Rc::new(Semaphore::new(0));
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for id in 0..8 {
                let (semaphore, order) = (semaphore.clone(), order.clone());
                tasks.push(spawn_local(async move {
                    // Arrive in id order: task `id` waits id ms before queueing.
                    sleep(Duration::from_millis(id)).await;
                    let _permit = semaphore.acquire_permit(1).await.unwrap();
                    order.borrow_mut().push(id);
                    yield_now().await;
                }));
            }
            sleep(Duration::from_millis(100)).await;
            semaphore.signal(1);
            for task in tasks {
                task.await;
            }
            let order = order.borrow().clone();
            order
        });
        assert_eq!(order, (0..8).collect::<Vec<_>>(), "seed {seed}");
    }
}

/// The order in which four waiters (1 and 3 write, 2 and 4 read, arriving in id order) get
/// the lock after its first holder (a reader or a writer) lets go.
fn rwlock_order(seed: u64, first_writes: bool) -> Vec<u64> {
    sim::run(seed, async move {
        let lock = Rc::new(RwLock::new(()));
        let order = Rc::new(RefCell::new(Vec::new()));
        let (first_read, first_write) = if first_writes {
            (None, Some(lock.write().await.unwrap()))
        } else {
            (Some(lock.read().await.unwrap()), None)
        };
        let mut tasks = Vec::new();
        for (id, write) in [(1u64, true), (2, false), (3, true), (4, false)] {
            let (lock, order) = (lock.clone(), order.clone());
            tasks.push(spawn_local(async move {
                sleep(Duration::from_millis(id)).await;
                if write {
                    let _g = lock.write().await.unwrap();
                    order.borrow_mut().push(id);
                    yield_now().await;
                } else {
                    let _g = lock.read().await.unwrap();
                    order.borrow_mut().push(id);
                    yield_now().await;
                }
            }));
        }
        sleep(Duration::from_millis(100)).await;
        drop((first_read, first_write));
        for task in tasks {
            task.await;
        }
        let order = order.borrow().clone();
        order
    })
}

/// What glommio's RwLock guarantees, pinned down so that a change of lock shows: the first
/// waiter gets it first and every waiter gets it; a reader joins readers holding the lock
/// ahead of a waiting writer (readers are preferred); but when a writer lets go, the waiters
/// it wakes race for the lock, so their order is the scheduler's (here: the seed's) choice.
/// The same seed replays the same order.
#[test]
fn rwlock_fairness_under_simulation() {
    let mut orders_behind_writer = std::collections::BTreeSet::new();
    for seed in 0..100 {
        let behind_writer = rwlock_order(seed, true);
        let mut sorted = behind_writer.clone();
        sorted.sort();
        assert_eq!(sorted, vec![1, 2, 3, 4], "seed {seed}: {behind_writer:?}");
        assert_eq!(behind_writer[0], 1, "seed {seed}: {behind_writer:?}");
        assert_eq!(
            rwlock_order(seed, true),
            behind_writer,
            "seed {seed} replays"
        );
        orders_behind_writer.insert(behind_writer);
        assert_eq!(rwlock_order(seed, false), vec![2, 4, 1, 3], "seed {seed}");
    }
    assert!(orders_behind_writer.len() > 1, "{orders_behind_writer:?}");
}

#[test]
fn the_wall_clock_is_virtual_under_simulation_and_replays() {
    let run = || {
        sim::run(4, async {
            let start = super::unix_time_ms();
            sleep(Duration::from_secs(86_400)).await;
            (start, super::unix_time_ms())
        })
    };
    let (start, end) = run();
    assert_eq!(start, sim::Config::default().unix_start_ms);
    assert!(
        (86_400_000..86_400_010).contains(&(end - start)),
        "{}",
        end - start
    );
    assert_eq!(run(), (start, end), "the same seed, the same timestamps");
    let real = super::unix_time_ms();
    assert!(
        real > 1_700_000_000_000,
        "outside a simulation it is the system clock: {real}"
    );
}
