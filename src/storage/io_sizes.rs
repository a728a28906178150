//! The write sizes the storage engine uses, set once at broker start from the disk profile
//! that `freshet tune disk` measured (see [`crate::tuning::disk`]), or left at the defaults
//! (the constants of [`super::log`]).
//!
//! Process-wide: every shard writes to the same data directory, so one profile fits all. The
//! values are read on every flush round (relaxed atomics: a change only affects later rounds;
//! each value is used on its own, no two need to agree).

use std::sync::atomic::{AtomicU64, Ordering};

use super::log::{FLUSH_BYTES_MAX, PREALLOCATE_STEP_BYTES, WRITE_BYTES_MAX};

/// The sizes in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoSizes {
    /// Bytes per O_DIRECT write (a flush round issues its writes all at once).
    pub write_bytes_max: usize,
    /// Bytes written per flush round at most (one fdatasync each).
    pub flush_bytes_max: usize,
    /// Preallocation step of the active segment.
    pub preallocate_step_bytes: u64,
}

impl Default for IoSizes {
    fn default() -> Self {
        IoSizes {
            write_bytes_max: WRITE_BYTES_MAX,
            flush_bytes_max: FLUSH_BYTES_MAX,
            preallocate_step_bytes: PREALLOCATE_STEP_BYTES,
        }
    }
}

static WRITE: AtomicU64 = AtomicU64::new(WRITE_BYTES_MAX as u64);
static FLUSH: AtomicU64 = AtomicU64::new(FLUSH_BYTES_MAX as u64);
static PREALLOCATE: AtomicU64 = AtomicU64::new(PREALLOCATE_STEP_BYTES);

/// Install `sizes` (at start, before any log is opened). Panics on values the engine cannot
/// use (a programmer error: [`crate::tuning::disk`] clamps them).
pub fn set(sizes: IoSizes) {
    assert!(
        sizes.write_bytes_max >= 4096 && sizes.write_bytes_max.is_multiple_of(4096),
        "write_bytes_max must be a positive multiple of 4 KiB"
    );
    assert!(sizes.flush_bytes_max >= sizes.write_bytes_max);
    assert!(sizes.preallocate_step_bytes >= 1 << 20);
    WRITE.store(sizes.write_bytes_max as u64, Ordering::Relaxed);
    FLUSH.store(sizes.flush_bytes_max as u64, Ordering::Relaxed);
    PREALLOCATE.store(sizes.preallocate_step_bytes, Ordering::Relaxed);
}

/// The sizes in force.
pub fn get() -> IoSizes {
    IoSizes {
        write_bytes_max: WRITE.load(Ordering::Relaxed) as usize,
        flush_bytes_max: FLUSH.load(Ordering::Relaxed) as usize,
        preallocate_step_bytes: PREALLOCATE.load(Ordering::Relaxed),
    }
}
