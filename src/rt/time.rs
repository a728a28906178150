//! Time through the seam: [`now`] and [`Instant`] (the virtual clock under simulation),
//! [`unix_time_ms`] (the wall clock, virtual too under simulation), [`sleep`] and [`timeout`];
//! [`LogLimiter`], one log line per interval of this clock.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::{glommio_backend, sim};

/// A point of this thread's clock: the monotonic clock on glommio, the virtual one under
/// simulation. Like `std::time::Instant`, but [`Instant::elapsed`] asks the same clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(std::time::Instant);

/// Now, on this thread's clock.
pub fn now() -> Instant {
    if sim::is_active() {
        sim::now()
    } else {
        Instant(std::time::Instant::now())
    }
}

/// Milliseconds since the Unix epoch on this thread's wall clock: the system's on glommio;
/// under simulation a virtual one that starts at `sim::Config::unix_start_ms`.
pub fn unix_time_ms() -> i64 {
    if sim::is_active() {
        sim::unix_time_ms()
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

impl Instant {
    pub fn from_std(instant: std::time::Instant) -> Self {
        Instant(instant)
    }

    pub fn into_std(self) -> std::time::Instant {
        self.0
    }

    /// Time since `self` on this thread's clock (zero if `self` is later).
    pub fn elapsed(&self) -> Duration {
        now().0.saturating_duration_since(self.0)
    }

    pub fn saturating_duration_since(&self, earlier: Instant) -> Duration {
        self.0.saturating_duration_since(earlier.0)
    }

    pub fn checked_duration_since(&self, earlier: Instant) -> Option<Duration> {
        self.0.checked_duration_since(earlier.0)
    }

    pub fn checked_add(&self, duration: Duration) -> Option<Instant> {
        self.0.checked_add(duration).map(Instant)
    }
}

impl std::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0 + rhs)
    }
}

impl std::ops::AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        self.0 += rhs;
    }
}

impl std::ops::Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        Instant(self.0 - rhs)
    }
}

/// Saturating, like `std::time::Instant`'s.
impl std::ops::Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.0.saturating_duration_since(rhs.0)
    }
}

/// Completes after `duration` (of virtual time under simulation), counted from its first poll
/// like glommio's `timer::sleep`.
pub fn sleep(duration: Duration) -> Sleep {
    Sleep(if sim::is_active() {
        SleepInner::Sim(sim::SimSleep::new(duration))
    } else {
        SleepInner::GlommioNotStarted(duration)
    })
}

/// Runs `future` for at most `limit` (of virtual time under simulation): `Some(output)` if it
/// finished in time, `None` if the limit passed first (the future is then dropped, so whatever
/// it started elsewhere, such as an append on another shard, goes on without it).
pub async fn timeout<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    futures_lite::future::or(async { Some(future.await) }, async {
        sleep(limit).await;
        None
    })
    .await
}

/// The future [`sleep`] returns.
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep(SleepInner);

enum SleepInner {
    GlommioNotStarted(Duration),
    Glommio(glommio_backend::Timer),
    Sim(sim::SimSleep),
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let inner = &mut self.get_mut().0;
        if let SleepInner::GlommioNotStarted(duration) = inner {
            *inner = SleepInner::Glommio(glommio_backend::Timer::new(*duration));
        }
        match inner {
            SleepInner::Glommio(timer) => Pin::new(timer).poll(cx).map(|_| ()),
            SleepInner::Sim(sleep) => Pin::new(sleep).poll(cx),
            SleepInner::GlommioNotStarted(_) => unreachable!("started above"),
        }
    }
}

/// Allows one log line per interval (on this thread's clock) and counts the others, for
/// events that can come in floods (refused connections, failed accepts, bad frames).
pub struct LogLimiter {
    interval: Duration,
    last: Cell<Option<Instant>>,
    suppressed: Cell<u64>,
}

impl LogLimiter {
    pub const fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            last: Cell::new(None),
            suppressed: Cell::new(0),
        }
    }

    /// `Some(lines not logged since the last one)` if a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        if self.last.get().is_some_and(|t| t.elapsed() < self.interval) {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.last.set(Some(now()));
        Some(self.suppressed.replace(0))
    }
}
