//! The real storage backend: glommio's `DmaFile` for segment files and `std::fs` on glommio's
//! blocking thread pool for everything else. [`super`](crate::storage::io) dispatches here
//! unless a simulated disk is installed for the thread.
//!
//! - [`RealFile`]: an O_DIRECT segment file (glommio `DmaFile`), for aligned writes,
//!   `fdatasync`, preallocation and reads that copy once into `Bytes` (glommio's `ReadResult`
//!   is not `Send`; the `Bytes` may cross shards). Its descriptor comes from the shard's
//!   bounded pool of open files ([`set_open_files_max`]): opened on use, closed when idle,
//!   clean and least recently used, so idle partitions hold no descriptor; when opening one
//!   fails with EMFILE, idle files are closed and the open retried once.
//! - Metadata helpers (list a directory, write a small file atomically, remove files, fsync a
//!   directory): rare operations run on glommio's blocking thread pool through
//!   `executor().spawn_blocking`, so the shard never blocks on them.
//!
//! Every error is mapped to [`StorageError::Io`] naming the operation. Nothing here panics on
//! an I/O error.

use super::{align_up, io_err, DIRECT_IO_ALIGN};
use crate::storage::StorageError;
use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Idle segment files closed when opening one fails with EMFILE/ENFILE (then it is retried).
pub const OPEN_FILES_SHED_ON_EMFILE: usize = 16;

/// Open segment files per shard when nothing configures it ([`set_open_files_max`]).
pub const OPEN_FILES_PER_SHARD_DEFAULT: usize = 1024;

/// The shard's pool of open segment files: at most `open_files_max` [`RealFile`]s hold a
/// descriptor at once; opening one more closes the least recently used file that is neither
/// in use (an I/O in flight) nor dirty (written since its last successful `fdatasync`). A
/// dirty file is never closed by the pool: a write error reported at `fdatasync` must reach
/// the descriptor that wrote (Linux reports it once per open file). When every open file is
/// busy or dirty the pool goes over its limit rather than fail; it shrinks back as they
/// become clean. Lives on one shard thread (thread-local), like the files it holds.
struct FilePool {
    open_files_max: usize,
    /// Open files by last use: (tick, slot). The smallest tick is the least recently used.
    lru: std::collections::BTreeMap<u64, std::rc::Weak<FileSlot>>,
    tick: u64,
}

thread_local! {
    static POOL: RefCell<FilePool> = const {
        RefCell::new(FilePool {
            open_files_max: OPEN_FILES_PER_SHARD_DEFAULT,
            lru: std::collections::BTreeMap::new(),
            tick: 0,
        })
    };
}

/// Sets this shard's limit of open segment files (see `FilePool`); at least 1.
pub fn set_open_files_max(open_files_max: usize) {
    POOL.with(|p| p.borrow_mut().open_files_max = open_files_max.max(1));
}

/// Segment files holding a descriptor on this shard now.
pub fn open_files() -> usize {
    POOL.with(|p| p.borrow().lru.len())
}

impl FilePool {
    /// Marks `slot` (open) as the most recently used.
    fn touch(&mut self, slot: &Rc<FileSlot>) {
        if slot.tick.get() != 0 {
            self.lru.remove(&slot.tick.get());
        }
        self.tick += 1;
        slot.tick.set(self.tick);
        self.lru.insert(self.tick, Rc::downgrade(slot));
    }

    /// Closes up to `n` least recently used idle, clean files (whatever the limit).
    fn shed(&mut self, n: usize) -> Vec<Rc<DmaFile>> {
        let limit = self.open_files_max;
        self.open_files_max = self.lru.len().saturating_sub(n).max(1);
        let closed = if self.lru.len() >= self.open_files_max {
            self.make_room()
        } else {
            Vec::new()
        };
        self.open_files_max = limit;
        closed
    }

    /// Closes least recently used idle, clean files until one more fits under the limit.
    /// Returns the files to drop (dropped by the caller, outside the pool's borrow).
    fn make_room(&mut self) -> Vec<Rc<DmaFile>> {
        let mut closed = Vec::new();
        if self.lru.len() < self.open_files_max {
            return closed;
        }
        let mut excess = self.lru.len() + 1 - self.open_files_max;
        let ticks: Vec<u64> = self.lru.keys().copied().collect();
        for tick in ticks {
            if excess == 0 {
                break;
            }
            let Some(slot) = self.lru.get(&tick).and_then(std::rc::Weak::upgrade) else {
                self.lru.remove(&tick);
                excess -= 1;
                continue;
            };
            if slot.is_dirty() {
                continue;
            }
            let mut open = slot.open.borrow_mut();
            // Another holder of the descriptor means an I/O in flight: keep it.
            if open.as_ref().is_some_and(|f| Rc::strong_count(f) > 1) {
                continue;
            }
            if let Some(f) = open.take() {
                closed.push(f);
            }
            drop(open);
            slot.tick.set(0);
            self.lru.remove(&tick);
            excess -= 1;
        }
        closed
    }
}

/// The state behind a [`RealFile`]: its path and, while the pool lets it, its descriptor.
struct FileSlot {
    /// Where a reopen finds the file (updated by [`RealFile::renamed`]).
    path: RefCell<PathBuf>,
    writable: bool,
    open: RefCell<Option<Rc<DmaFile>>>,
    /// Position in the pool's LRU; 0 when closed.
    tick: Cell<u64>,
    /// Generations of writes started and of writes covered by a successful `fdatasync`.
    write_gen: Cell<u64>,
    synced_gen: Cell<u64>,
}

impl FileSlot {
    fn is_dirty(&self) -> bool {
        self.write_gen.get() > self.synced_gen.get()
    }
}

impl Drop for FileSlot {
    fn drop(&mut self) {
        let tick = self.tick.get();
        if tick != 0 {
            // try_with: the pool may already be gone when the thread exits.
            let _ = POOL.try_with(|p| {
                if let Ok(mut p) = p.try_borrow_mut() {
                    p.lru.remove(&tick);
                }
            });
        }
    }
}

/// One O_DIRECT file (a segment's `.log`) on the real disk. Cheap to clone (shared `Rc`). The descriptor is
/// opened on first use and may be closed by the shard's `FilePool` while the file is idle
/// and clean, then reopened (read-write, never created) by the next operation: idle
/// partitions hold no descriptor.
#[derive(Clone)]
pub(super) struct RealFile {
    slot: Rc<FileSlot>,
}

impl RealFile {
    /// Open for reading and writing, creating the file if needed (`DmaFile::create` would be
    /// write-only: GLOMMIO.md pitfall 2).
    pub(super) async fn open_rw(path: &Path) -> Result<RealFile, StorageError> {
        let file = RealFile::closed(path, true);
        file.descriptor(true).await?;
        Ok(file)
    }

    /// Open read-only.
    pub(super) async fn open_read(path: &Path) -> Result<RealFile, StorageError> {
        let file = RealFile::closed(path, false);
        file.descriptor(false).await?;
        Ok(file)
    }

    fn closed(path: &Path, writable: bool) -> RealFile {
        RealFile {
            slot: Rc::new(FileSlot {
                path: RefCell::new(path.to_path_buf()),
                writable,
                open: RefCell::new(None),
                tick: Cell::new(0),
                write_gen: Cell::new(0),
                synced_gen: Cell::new(0),
            }),
        }
    }

    /// The open descriptor, opening it (through the pool) if it was closed.
    async fn descriptor(&self, create: bool) -> Result<Rc<DmaFile>, StorageError> {
        if let Some(f) = self.slot.open.borrow().as_ref() {
            let f = f.clone();
            POOL.with(|p| p.borrow_mut().touch(&self.slot));
            return Ok(f);
        }
        let closed = POOL.with(|p| p.borrow_mut().make_room());
        drop(closed);
        let path = self.slot.path.borrow().clone();
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(self.slot.writable)
            .create(create && self.slot.writable);
        let opened = match options.dma_open(&path).await {
            // Out of descriptors (connections took them): give back idle files, try once more.
            Err(e) if crate::rt::is_out_of_descriptors(&e) => {
                let shed = POOL.with(|p| p.borrow_mut().shed(OPEN_FILES_SHED_ON_EMFILE));
                let freed = shed.len();
                drop(shed);
                if freed == 0 {
                    return Err(io_err("open segment")(e));
                }
                // glommio closes dropped files on its next I/O cycle: let it run.
                glommio::yield_if_needed().await;
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                tracing::warn!(
                    freed,
                    "out of descriptors opening a segment: closed idle segment files"
                );
                options
                    .dma_open(&path)
                    .await
                    .map_err(io_err("open segment"))?
            }
            other => other.map_err(io_err("open segment"))?,
        };
        let opened = Rc::new(opened);
        // Another task may have opened it meanwhile: keep theirs, close ours.
        let f = {
            let mut open = self.slot.open.borrow_mut();
            open.get_or_insert(opened).clone()
        };
        POOL.with(|p| p.borrow_mut().touch(&self.slot));
        Ok(f)
    }

    /// The file was renamed to `path` (e.g. a cleaned segment swapped in): a later reopen
    /// must use the new name.
    pub(super) fn renamed(&self, path: &Path) {
        *self.slot.path.borrow_mut() = path.to_path_buf();
    }

    /// Whether the descriptor is open now (for tests and metrics).
    pub(super) fn is_open(&self) -> bool {
        self.slot.open.borrow().is_some()
    }

    /// Starts a write: the file is dirty until an `fdatasync` begun after it succeeds.
    fn begin_write(&self) {
        self.slot.write_gen.set(self.slot.write_gen.get() + 1);
    }

    /// Current file size in bytes.
    pub(super) async fn size(&self) -> Result<u64, StorageError> {
        self.descriptor(false)
            .await?
            .file_size()
            .await
            .map_err(io_err("stat segment"))
    }

    /// Write `data` at aligned position `pos`. The buffer is padded with zeros to the
    /// alignment; at most `write_bytes_max` per I/O, all issued at once (several writes in
    /// flight), then awaited.
    pub(super) async fn write_padded(
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
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let dma = self.descriptor(false).await?;
        self.begin_write();
        let padded = align_up(total as u64) as usize;
        let mut tasks = Vec::new();
        let mut part_idx = 0usize;
        let mut part_off = 0usize;
        let mut chunk_start = 0usize;
        while chunk_start < padded {
            let chunk_len = (padded - chunk_start).min(write_bytes_max);
            let mut buf = dma.alloc_dma_buffer(chunk_len);
            let dst = buf.as_bytes_mut();
            let mut filled = 0usize;
            while filled < chunk_len && part_idx < parts.len() {
                let src = &parts[part_idx][part_off..];
                let n = src.len().min(chunk_len - filled);
                dst[filled..filled + n].copy_from_slice(&src[..n]);
                filled += n;
                part_off += n;
                if part_off == parts[part_idx].len() {
                    part_idx += 1;
                    part_off = 0;
                }
            }
            dst[filled..].fill(0);
            let file = dma.clone();
            let at = pos + chunk_start as u64;
            tasks.push(glommio::spawn_local(async move {
                let n = file.write_at(buf, at).await?;
                Ok::<(usize, usize), glommio::GlommioError<()>>((n, chunk_len))
            }));
            chunk_start += chunk_len;
        }
        let mut first_err = None;
        for t in tasks {
            match t.await {
                Ok((n, want)) if n == want => {}
                Ok((n, want)) => {
                    first_err.get_or_insert(StorageError::Io {
                        op: "write segment",
                        source: std::io::Error::new(
                            std::io::ErrorKind::WriteZero,
                            format!("short O_DIRECT write: {n} of {want} bytes"),
                        ),
                    });
                }
                Err(e) => {
                    first_err.get_or_insert(io_err("write segment")(e));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `fdatasync` the file.
    pub(super) async fn sync(&self) -> Result<(), StorageError> {
        let dma = self.descriptor(false).await?;
        let covered = self.slot.write_gen.get();
        dma.fdatasync().await.map_err(io_err("fdatasync segment"))?;
        if covered > self.slot.synced_gen.get() {
            self.slot.synced_gen.set(covered);
        }
        Ok(())
    }

    /// Preallocate up to `size` bytes (the file size becomes `size`; new blocks read as zeros).
    pub(super) async fn preallocate(&self, size: u64) -> Result<(), StorageError> {
        let dma = self.descriptor(false).await?;
        self.begin_write();
        dma.pre_allocate(size, false)
            .await
            .map_err(io_err("preallocate segment"))
    }

    /// Truncate (or extend) the file to `size` bytes.
    pub(super) async fn truncate(&self, size: u64) -> Result<(), StorageError> {
        let dma = self.descriptor(false).await?;
        self.begin_write();
        dma.truncate(size).await.map_err(io_err("truncate segment"))
    }

    /// Read `len` bytes at `pos` (any alignment), copied once into `Bytes`. Returns fewer
    /// bytes at the end of the file.
    pub(super) async fn read(&self, pos: u64, len: usize) -> Result<Bytes, StorageError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let rr = self
            .descriptor(false)
            .await?
            .read_at(pos, len)
            .await
            .map_err(io_err("read segment"))?;
        Ok(Bytes::copy_from_slice(&rr))
    }
}

/// Run a blocking closure on glommio's blocking thread pool.
pub async fn blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(f).await
}

/// Create a directory and its parents.
pub(super) async fn create_dir_all(dir: &Path) -> Result<(), StorageError> {
    let dir = dir.to_path_buf();
    blocking(move || std::fs::create_dir_all(&dir))
        .await
        .map_err(io_err("create partition directory"))
}

/// File names (not paths) in `dir`.
pub(super) async fn list_dir(dir: &Path) -> Result<Vec<String>, StorageError> {
    let dir = dir.to_path_buf();
    blocking(move || -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    })
    .await
    .map_err(io_err("list partition directory"))
}

/// `fsync` a directory so that created, renamed and removed names are durable.
pub(super) async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let dir = dir.to_path_buf();
    blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(io_err("fsync directory"))
}

/// Atomically replace `path` with `data`: write `path.tmp`, fdatasync, rename, fsync the
/// directory. A crash leaves either the old or the new file, never a half-written one.
pub(super) async fn write_file_atomic(path: &Path, data: Vec<u8>) -> Result<(), StorageError> {
    let path = path.to_path_buf();
    blocking(move || -> std::io::Result<()> {
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &path)?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(io_err("write metadata file"))
}

/// Rename `from` to `to` (replacing `to`); the caller fsyncs the directory.
pub(super) async fn rename_file(from: &Path, to: &Path) -> Result<(), StorageError> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    blocking(move || std::fs::rename(&from, &to))
        .await
        .map_err(io_err("rename segment file"))
}

/// Read a whole small file; `Ok(None)` if it does not exist.
pub(super) async fn read_small_file(
    path: &Path,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>, StorageError> {
    let path = path.to_path_buf();
    blocking(move || -> std::io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        match std::fs::File::open(&path) {
            Ok(f) => {
                let mut data = Vec::new();
                f.take(max_bytes).read_to_end(&mut data)?;
                Ok(Some(data))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(io_err("read metadata file"))
}

/// Remove files (missing ones are fine), then fsync the directory.
pub(super) async fn remove_files(dir: &Path, names: Vec<String>) -> Result<(), StorageError> {
    let dir = dir.to_path_buf();
    blocking(move || -> std::io::Result<()> {
        for name in &names {
            match std::fs::remove_file(dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(io_err("remove segment files"))
}

/// Remove a directory tree, then fsync its parent.
pub(super) async fn remove_dir_all(dir: &Path) -> Result<(), StorageError> {
    let dir = dir.to_path_buf();
    blocking(move || -> std::io::Result<()> {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(io_err("remove partition directory"))
}

/// A regular file of at least `min_bytes` in `dir` or one directory below it (a segment), for
/// [`crate::storage::prime_disk`] when the disk is too full to write its probe file.
pub(super) async fn find_non_empty_file(
    dir: &Path,
    min_bytes: u64,
) -> Result<Option<PathBuf>, StorageError> {
    let dir = dir.to_path_buf();
    blocking(move || -> std::io::Result<Option<PathBuf>> {
        let big_enough =
            |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() >= min_bytes);
        let mut subdirs = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if big_enough(&path) {
                return Ok(Some(path));
            }
            if path.is_dir() {
                subdirs.push(path);
            }
        }
        for sub in subdirs {
            for entry in std::fs::read_dir(&sub)? {
                let path = entry?.path();
                if big_enough(&path) {
                    return Ok(Some(path));
                }
            }
        }
        Ok(None)
    })
    .await
    .map_err(io_err("look for a disk probe file"))
}

/// Write a small non-empty file with ordinary (buffered) I/O, for [`crate::storage::prime_disk`].
pub(super) async fn write_plain_file(path: &Path, data: Vec<u8>) -> Result<(), StorageError> {
    let path = path.to_path_buf();
    blocking(move || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&data)?;
        f.sync_all()
    })
    .await
    .map_err(io_err("write disk probe file"))
}
