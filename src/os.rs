//! The few facts and settings the broker takes from the operating system outside its I/O path:
//! the effective user, resource limits (locked memory, open files), file-system space, the
//! data directory's lock. One place, through `rustix`, so no `unsafe` is needed for any of them.
//! (Whether a glommio error means the process ran out of descriptors is the runtime seam's:
//! `rt::is_out_of_descriptors`.)
//!
//! Nothing here is on the data path; every call is a single cheap syscall made at start-up, by
//! `freshet tune`, or when an admin request asks for disk space.

use std::fs::File;
use std::io;
use std::path::Path;

use rustix::process::{getrlimit, setrlimit, Resource};

/// Whether the process runs as root (root is not charged for locked memory, and may raise its
/// hard limits).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The effective user id.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The soft RLIMIT_MEMLOCK in bytes, or `None` when unlimited.
pub fn memlock_limit_bytes() -> Option<u64> {
    getrlimit(Resource::Memlock).current
}

/// The soft RLIMIT_NOFILE (open file descriptors), or `None` when unlimited.
pub fn open_files_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, and returns the soft limit in force after
/// the attempt (`None` when unlimited). Failing to raise it is not an error: the caller lives
/// with the limit it has.
pub fn raise_open_files_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            let raised = rustix::process::Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            if setrlimit(Resource::Nofile, raised).is_err() {
                tracing::warn!("could not raise the open files limit from {current} to {maximum}");
            }
        }
    }
    open_files_limit()
}

/// Physical memory in bytes (0 if unknown).
pub fn physical_memory_bytes() -> u64 {
    let info = rustix::system::sysinfo();
    info.totalram.saturating_mul(u64::from(info.mem_unit))
}

/// Takes an exclusive, non-blocking `flock` on `file`. `Ok(false)` when another process holds
/// it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// (total, usable) bytes of the file system holding `dir`, as Java's `FileStore` reports them
/// (blocks and blocks available to unprivileged users, times the fragment size).
pub fn disk_space(dir: &Path) -> io::Result<(i64, i64)> {
    let stats = rustix::fs::statvfs(dir)?;
    let fragment = u128::from(stats.f_frsize);
    let bytes = |blocks: u64| i64::try_from(u128::from(blocks) * fragment).unwrap_or(i64::MAX);
    Ok((bytes(stats.f_blocks), bytes(stats.f_bavail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_space_of_an_existing_directory_is_positive() {
        let (total, usable) = disk_space(Path::new("/")).unwrap();
        assert!(total > 0 && usable >= 0 && usable <= total);
        assert!(disk_space(Path::new("/no/such/dir/here")).is_err());
    }

    #[test]
    fn a_second_exclusive_lock_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        let first = File::create(&path).unwrap();
        assert!(try_lock_exclusive(&first).unwrap());
        let second = File::open(&path).unwrap();
        assert!(!try_lock_exclusive(&second).unwrap());
    }

    #[test]
    fn the_open_files_limit_is_known_after_raising_it() {
        let after = raise_open_files_limit();
        assert_eq!(after, open_files_limit());
    }
}
