//! The storage engine's small I/O layer: every file operation storage does goes through here,
//! to one of two backends chosen per thread.
//!
//! - [`real`] (the default): glommio's O_DIRECT `DmaFile` for segment files, with the shard's
//!   bounded pool of open descriptors ([`set_open_files_max`]), and `std::fs` on glommio's
//!   blocking thread pool for the rare metadata operations.
//! - [`sim`]: a [`SimDisk`](sim::SimDisk) installed for the current thread
//!   ([`sim::install`]): in-memory files that lose unsynced writes on a crash, tear writes at
//!   sector boundaries, and fail with EIO/ENOSPC from a seeded schedule, for deterministic
//!   simulation (`tests/it/simulate.rs`).
//!
//! [`DataFile`] and the free functions below are the whole interface; storage code does not
//! know which backend runs. The backend is an enum, not a trait object: there are exactly two,
//! the choice is made once per file (at open) and per metadata call, and static dispatch keeps
//! the hot path (write, fdatasync, read of a segment) free of boxed futures. Both backends
//! return the same errors: an [`StorageError::Io`] naming the operation, around an
//! `io::Error` with the raw OS errno, so [`is_disk_full`] and the EIO paths cannot tell them
//! apart. Nothing here panics on an I/O error.
//!
//! What this does not cover yet: the cleaner's scan of an interrupted swap file
//! (`cleaner::swap_last_offset`) reads through `std::fs` inside [`blocking`], so compaction is
//! not simulated.

pub mod real;
pub mod sim;

use super::StorageError;
use bytes::Bytes;
use std::path::{Path, PathBuf};

pub use real::{
    blocking, open_files, set_open_files_max, OPEN_FILES_PER_SHARD_DEFAULT,
    OPEN_FILES_SHED_ON_EMFILE,
};

/// O_DIRECT alignment of offsets, lengths and buffers on these disks (GLOMMIO.md).
pub const DIRECT_IO_ALIGN: u64 = 512;

/// Round `v` down to the O_DIRECT alignment.
pub fn align_down(v: u64) -> u64 {
    v & !(DIRECT_IO_ALIGN - 1)
}

/// Round `v` up to the O_DIRECT alignment.
pub fn align_up(v: u64) -> u64 {
    (v + DIRECT_IO_ALIGN - 1) & !(DIRECT_IO_ALIGN - 1)
}

/// Build an I/O error mapper naming the operation.
pub fn io_err<E: Into<std::io::Error>>(op: &'static str) -> impl FnOnce(E) -> StorageError {
    move |e| StorageError::Io {
        op,
        source: e.into(),
    }
}

/// Is `e` the file system being full (ENOSPC, or EDQUOT: a quota is full)?
pub fn is_disk_full(e: &StorageError) -> bool {
    match e {
        StorageError::Io { source, .. } => {
            matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT)
            ) || matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        }
        _ => false,
    }
}

/// One O_DIRECT file (a segment's `.log`). Cheap to clone (shared). On the real disk the
/// descriptor is opened on first use and may be closed by the shard's pool while the file is
/// idle and clean, then reopened by the next operation (see [`real`]); on a simulated disk it
/// stays open.
#[derive(Clone)]
pub struct DataFile(Backend);

#[derive(Clone)]
enum Backend {
    Real(real::RealFile),
    Sim(sim::SimFile),
}

impl DataFile {
    /// Open for reading and writing, creating the file if needed (`DmaFile::create` would be
    /// write-only: GLOMMIO.md pitfall 2).
    pub async fn open_rw(path: &Path) -> Result<DataFile, StorageError> {
        Ok(DataFile(match sim::current() {
            Some(disk) => Backend::Sim(
                disk.open(path, true, true)
                    .await
                    .map_err(io_err("open segment"))?,
            ),
            None => Backend::Real(real::RealFile::open_rw(path).await?),
        }))
    }

    /// Open read-only.
    pub async fn open_read(path: &Path) -> Result<DataFile, StorageError> {
        Ok(DataFile(match sim::current() {
            Some(disk) => Backend::Sim(
                disk.open(path, false, false)
                    .await
                    .map_err(io_err("open segment"))?,
            ),
            None => Backend::Real(real::RealFile::open_read(path).await?),
        }))
    }

    /// The file was renamed to `path` (e.g. a cleaned segment swapped in): a later reopen
    /// must use the new name.
    pub fn renamed(&self, path: &Path) {
        match &self.0 {
            Backend::Real(f) => f.renamed(path),
            // A simulated file stays open on its inode: nothing to reopen by name.
            Backend::Sim(_) => {}
        }
    }

    /// Whether the descriptor is open now (for tests and metrics).
    pub fn is_open(&self) -> bool {
        match &self.0 {
            Backend::Real(f) => f.is_open(),
            Backend::Sim(_) => true,
        }
    }

    /// Current file size in bytes.
    pub async fn size(&self) -> Result<u64, StorageError> {
        match &self.0 {
            Backend::Real(f) => f.size().await,
            Backend::Sim(f) => f.size().await.map_err(io_err("stat segment")),
        }
    }

    /// Write `data` at aligned position `pos`. The buffer is padded with zeros to the
    /// alignment; at most `write_bytes_max` per I/O, all issued at once (several writes in
    /// flight), then awaited.
    pub async fn write_padded(
        &self,
        pos: u64,
        parts: &[&[u8]],
        write_bytes_max: usize,
    ) -> Result<(), StorageError> {
        assert_eq!(
            pos % DIRECT_IO_ALIGN,
            0,
            "unaligned O_DIRECT write position"
        );
        assert!((write_bytes_max as u64).is_multiple_of(DIRECT_IO_ALIGN) && write_bytes_max > 0);
        match &self.0 {
            Backend::Real(f) => f.write_padded(pos, parts, write_bytes_max).await,
            Backend::Sim(f) => {
                let mut data = parts.concat();
                data.resize(align_up(data.len() as u64) as usize, 0);
                f.write(pos, &data, write_bytes_max)
                    .await
                    .map_err(io_err("write segment"))
            }
        }
    }

    /// `fdatasync` the file.
    pub async fn sync(&self) -> Result<(), StorageError> {
        match &self.0 {
            Backend::Real(f) => f.sync().await,
            Backend::Sim(f) => f.sync().await.map_err(io_err("fdatasync segment")),
        }
    }

    /// Preallocate up to `size` bytes (the file size becomes `size`; new blocks read as zeros).
    pub async fn preallocate(&self, size: u64) -> Result<(), StorageError> {
        match &self.0 {
            Backend::Real(f) => f.preallocate(size).await,
            Backend::Sim(f) => f
                .preallocate(size)
                .await
                .map_err(io_err("preallocate segment")),
        }
    }

    /// Truncate (or extend) the file to `size` bytes.
    pub async fn truncate(&self, size: u64) -> Result<(), StorageError> {
        match &self.0 {
            Backend::Real(f) => f.truncate(size).await,
            Backend::Sim(f) => f.truncate(size).await.map_err(io_err("truncate segment")),
        }
    }

    /// Read `len` bytes at `pos` (any alignment), copied once into `Bytes`. Returns fewer
    /// bytes at the end of the file.
    pub async fn read(&self, pos: u64, len: usize) -> Result<Bytes, StorageError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        match &self.0 {
            Backend::Real(f) => f.read(pos, len).await,
            Backend::Sim(f) => f.read(pos, len).await.map_err(io_err("read segment")),
        }
    }
}

/// Create a directory and its parents.
pub async fn create_dir_all(dir: &Path) -> Result<(), StorageError> {
    match sim::current() {
        Some(disk) => disk
            .create_dir_all(dir)
            .await
            .map_err(io_err("create partition directory")),
        None => real::create_dir_all(dir).await,
    }
}

/// File names (not paths) in `dir`.
pub async fn list_dir(dir: &Path) -> Result<Vec<String>, StorageError> {
    match sim::current() {
        Some(disk) => disk
            .list_dir(dir)
            .await
            .map_err(io_err("list partition directory")),
        None => real::list_dir(dir).await,
    }
}

/// `fsync` a directory so that created, renamed and removed names are durable.
pub async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    match sim::current() {
        Some(disk) => disk.sync_dir(dir).await.map_err(io_err("fsync directory")),
        None => real::sync_dir(dir).await,
    }
}

/// Atomically replace `path` with `data`: write `path.tmp`, fdatasync, rename, fsync the
/// directory. A crash leaves either the old or the new file, never a half-written one.
pub async fn write_file_atomic(path: &Path, data: Vec<u8>) -> Result<(), StorageError> {
    match sim::current() {
        Some(disk) => disk
            .write_file_atomic(path, &data)
            .await
            .map_err(io_err("write metadata file")),
        None => real::write_file_atomic(path, data).await,
    }
}

/// Rename `from` to `to` (replacing `to`); the caller fsyncs the directory.
pub async fn rename_file(from: &Path, to: &Path) -> Result<(), StorageError> {
    match sim::current() {
        Some(disk) => disk
            .rename(from, to)
            .await
            .map_err(io_err("rename segment file")),
        None => real::rename_file(from, to).await,
    }
}

/// Read a whole small file; `Ok(None)` if it does not exist.
pub async fn read_small_file(path: &Path, max_bytes: u64) -> Result<Option<Vec<u8>>, StorageError> {
    match sim::current() {
        Some(disk) => disk
            .read_small_file(path, max_bytes)
            .await
            .map_err(io_err("read metadata file")),
        None => real::read_small_file(path, max_bytes).await,
    }
}

/// Remove files (missing ones are fine), then fsync the directory.
pub async fn remove_files(dir: &Path, names: Vec<String>) -> Result<(), StorageError> {
    match sim::current() {
        Some(disk) => disk
            .remove_files(dir, &names)
            .await
            .map_err(io_err("remove segment files")),
        None => real::remove_files(dir, names).await,
    }
}

/// Remove a directory tree, then fsync its parent.
pub async fn remove_dir_all(dir: &Path) -> Result<(), StorageError> {
    match sim::current() {
        Some(disk) => disk
            .remove_dir_all(dir)
            .await
            .map_err(io_err("remove partition directory")),
        None => real::remove_dir_all(dir).await,
    }
}

/// A regular file of at least `min_bytes` in `dir` or one directory below it (a segment), for
/// [`super::prime_disk`] when the disk is too full to write its probe file.
pub async fn find_non_empty_file(
    dir: &Path,
    min_bytes: u64,
) -> Result<Option<PathBuf>, StorageError> {
    match sim::current() {
        Some(disk) => disk
            .find_non_empty_file(dir, min_bytes)
            .await
            .map_err(io_err("look for a disk probe file")),
        None => real::find_non_empty_file(dir, min_bytes).await,
    }
}

/// Write a small non-empty file with ordinary (buffered) I/O, for [`super::prime_disk`].
pub async fn write_plain_file(path: &Path, data: Vec<u8>) -> Result<(), StorageError> {
    match sim::current() {
        Some(disk) => disk
            .write_whole_file(path, &data)
            .await
            .map_err(io_err("write disk probe file")),
        None => real::write_plain_file(path, data).await,
    }
}
