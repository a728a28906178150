//! [`SimDisk`]: an in-memory simulated disk for deterministic simulation of the storage
//! engine, installed per thread ([`install`]) so that every file operation of
//! [`super`](crate::storage::io) on that thread goes to it instead of glommio and `std::fs`.
//!
//! # The model (what a crash keeps)
//! It follows Linux ext4/xfs with `data=ordered`, written so that every behaviour the kernel
//! is allowed to show can happen, chosen by a seeded random generator:
//! - **File data.** Each file (inode) has *durable* content and a list of *pending* changes
//!   since its last successful `fdatasync`: writes and size changes (truncate, preallocate).
//!   Reads see durable content with the pending changes applied, as the page cache would. A
//!   successful `fdatasync` makes every pending change of that file durable. On [`crash`]
//!   each pending change independently is *kept*, *lost*, or (a write) *torn*: only its
//!   first whole 512-byte sectors reach the disk ([`SECTOR_BYTES`]), as when power fails in
//!   the middle of a multi-sector write.
//! - **Names.** Creating, renaming and removing a name (and creating a directory) is a
//!   namespace operation, applied at once to what the process sees and appended to an ordered
//!   journal. `fsync` of a directory makes every journal entry up to the last one touching
//!   that directory durable (the journal commits in order, as ext4's does). On a crash a
//!   seeded *prefix* of the uncommitted journal survives, so a rename is atomic and names
//!   are never reordered, but a created or renamed name survives only if its directory was
//!   synced (or a luckier crash). A file whose name did not survive is gone with its data.
//! - **A failed operation.** A write failing with EIO may have written a prefix of its
//!   sectors (pending, like any write); ENOSPC writes nothing. A failed `fdatasync` leaves
//!   the pending changes pending (a later sync or the crash decides).
//! - **Power off.** [`SimDisk::power_off_after`] makes the disk fail every operation with
//!   EIO after a given number of further operations, so a crash can fall *inside* a flush,
//!   a segment roll or a recovery. [`SimDisk::crash`] then applies the crash and powers the
//!   disk back on. Descriptors opened before it fail with EIO forever (their process is
//!   dead); the caller must let the old tasks finish before it reopens (path operations
//!   cannot tell an old task from a new one).
//!
//! - **One node's power off** (a simulation of several nodes, each with its data directory on
//!   the one disk): [`SimDisk::power_off_dir`] (now) or [`SimDisk::power_off_dir_after`] (a
//!   number of that directory's operations ahead) fails every operation on a path under that
//!   directory, or on a descriptor opened there, with EIO until [`SimDisk::crash_dir`], which
//!   applies a crash to that directory only (its unsynced changes kept, lost or torn, a seeded
//!   prefix of its uncommitted names kept, the rest of the disk untouched) and kills the
//!   descriptors opened under it. The directory's parent must be durable, and no rename may
//!   cross the directory's boundary.
//!
//! Faults ([`Faults`]) are drawn per operation from the same seeded generator: EIO on write,
//! `fdatasync` (of a file or a directory) and read, ENOSPC on write and preallocate. Every
//! error is an `io::Error` carrying the raw OS errno, exactly like a real one, so the
//! storage engine's error paths (`is_disk_full`, EIO handling) run unchanged. A latency hook
//! ([`SimDisk::set_latency`]) may delay any operation with an arbitrary future (the
//! simulator sleeps a seeded time on `rt`'s virtual clock, which reorders tasks
//! deterministically).
//!
//! Memory: everything lives in memory; the content of every file plus its pending changes
//! since its last sync. It is meant for simulations of a few MiB, not for benchmarks.
//! What this does not do yet: a capacity (ENOSPC only by injection), bit rot in durable data,
//! file locks, and hard links.

use bytes::Bytes;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// Bytes per sector: a torn write keeps a whole number of sectors.
pub const SECTOR_BYTES: u64 = 512;

/// The kinds of operation, given to the latency hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Open (or create) a file.
    Open,
    /// Write file data.
    Write,
    /// `fdatasync` a file.
    Sync,
    /// Read file data or a file's size.
    Read,
    /// Truncate or preallocate a file.
    SetLen,
    /// Create, rename or remove a name; create a directory.
    Namespace,
    /// List a directory.
    List,
    /// `fsync` a directory.
    SyncDir,
}

/// Fault probabilities, in parts per million per operation of that kind.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// A write fails with EIO (having written a random prefix of its sectors).
    pub write_eio_ppm: u32,
    /// A write fails with ENOSPC (writing nothing).
    pub write_enospc_ppm: u32,
    /// An `fdatasync` (of a file or a directory) fails with EIO.
    pub sync_eio_ppm: u32,
    /// A read fails with EIO.
    pub read_eio_ppm: u32,
    /// A preallocation fails with ENOSPC.
    pub preallocate_enospc_ppm: u32,
}

/// The latency hook: a future to await before an operation of that kind, or none.
pub type LatencyHook = Rc<dyn Fn(Op) -> Option<Pin<Box<dyn Future<Output = ()>>>>>;

/// What a [`SimDisk::crash`] did: pending changes kept, lost, torn; journal entries kept of
/// those uncommitted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    pub changes_kept: u64,
    pub changes_lost: u64,
    pub writes_torn: u64,
    pub names_kept: u64,
    pub names_lost: u64,
}

/// A simulated disk (a cheap handle: clones share the disk). Single-threaded (`!Send`), like
/// the shard that uses it.
#[derive(Clone)]
pub struct SimDisk {
    state: Rc<RefCell<State>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(u64),
}

/// One namespace operation: its changes apply together (a rename is atomic).
struct NsOp {
    changes: Vec<(PathBuf, Option<Entry>)>,
}

enum Pending {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Default)]
struct Inode {
    durable: Vec<u8>,
    pending: Vec<Pending>,
    /// `durable` with `pending` applied: what reads see.
    current: Vec<u8>,
}

struct State {
    rng: Rng,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    /// Names as the process sees them.
    names: BTreeMap<PathBuf, Entry>,
    /// Names as a crash would leave them, before the uncommitted journal.
    durable_names: BTreeMap<PathBuf, Entry>,
    journal: Vec<NsOp>,
    faults: Faults,
    ops: u64,
    power_off_at: Option<u64>,
    /// The operation (by count) that fails once with EIO.
    fail_at: Option<u64>,
    down: bool,
    /// Incremented by each crash: descriptors of an older epoch are dead.
    epoch: u64,
    /// Directories crashed on their own ([`SimDisk::crash_dir`]), by path.
    regions: BTreeMap<PathBuf, Region>,
    latency: Option<LatencyHook>,
}

/// A directory that powers off and crashes on its own (one simulated node's data directory).
#[derive(Default)]
struct Region {
    /// Powered off: every operation under it fails until its crash.
    down: bool,
    /// Operations under it until it powers off ([`SimDisk::power_off_dir_after`]).
    ops_left: Option<u64>,
    /// Incremented by each of its crashes: descriptors opened under it before are dead.
    epoch: u64,
}

/// xorshift64* seeded through splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance_ppm(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < u64::from(ppm)
    }
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn apply(buf: &mut Vec<u8>, change: &Pending) {
    match change {
        Pending::Write { pos, data } => {
            let pos = *pos as usize;
            let end = pos + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[pos..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => buf.resize(*len as usize, 0),
    }
}

fn apply_ns(names: &mut BTreeMap<PathBuf, Entry>, op: &NsOp) {
    for (path, entry) in &op.changes {
        match entry {
            Some(e) => {
                names.insert(path.clone(), *e);
            }
            None => {
                names.remove(path);
            }
        }
    }
}

/// Paths strictly below `dir` in `names`.
fn descendants(names: &BTreeMap<PathBuf, Entry>, dir: &Path) -> Vec<PathBuf> {
    names
        .keys()
        .filter(|p| p.starts_with(dir) && p.as_path() != dir)
        .cloned()
        .collect()
}

/// A future that returns `Pending` once (waking itself first): lets every other ready task
/// run. For latency hooks that reorder tasks without a clock.
pub fn yield_once() -> impl Future<Output = ()> {
    struct YieldOnce(bool);
    impl Future for YieldOnce {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                Poll::Ready(())
            } else {
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
    YieldOnce(false)
}

impl State {
    /// Counts an operation; fails it with EIO when the disk is (or now goes) down.
    fn begin(&mut self) -> io::Result<()> {
        if self.down {
            return Err(errno(libc::EIO));
        }
        self.ops += 1;
        if self.power_off_at.is_some_and(|at| self.ops >= at) {
            self.down = true;
            return Err(errno(libc::EIO));
        }
        if self.fail_at == Some(self.ops) {
            self.fail_at = None;
            return Err(errno(libc::EIO));
        }
        Ok(())
    }

    /// [`State::begin`] for an operation on `paths`: also fails when one of them is under a
    /// powered-off directory ([`SimDisk::power_off_dir`]).
    fn begin_at(&mut self, paths: &[&Path]) -> io::Result<()> {
        for path in paths {
            self.region_gate(path)?;
        }
        self.begin()
    }

    /// Counts an operation on `path` against the powered-off directories holding it: fails
    /// with EIO if one is off (or goes off now).
    fn region_gate(&mut self, path: &Path) -> io::Result<()> {
        let mut result = Ok(());
        for (dir, r) in self.regions.iter_mut() {
            if !path.starts_with(dir) {
                continue;
            }
            if let Some(left) = r.ops_left {
                if left <= 1 {
                    r.ops_left = None;
                    r.down = true;
                } else {
                    r.ops_left = Some(left - 1);
                }
            }
            if r.down {
                result = Err(errno(libc::EIO));
            }
        }
        result
    }

    fn region_down(&self, path: &Path) -> bool {
        self.regions
            .iter()
            .any(|(dir, r)| r.down && path.starts_with(dir))
    }

    /// The crash count of the directories holding `path` (a descriptor opened when it was
    /// different is dead).
    fn region_epoch(&self, path: &Path) -> u64 {
        self.regions
            .iter()
            .filter(|(dir, _)| path.starts_with(dir))
            .map(|(_, r)| r.epoch)
            .sum()
    }

    fn ns(&mut self, changes: Vec<(PathBuf, Option<Entry>)>) {
        let op = NsOp { changes };
        apply_ns(&mut self.names, &op);
        self.journal.push(op);
    }

    fn dir_exists(&self, dir: &Path) -> io::Result<()> {
        match self.names.get(dir) {
            Some(Entry::Dir) => Ok(()),
            Some(Entry::File(_)) => Err(errno(libc::ENOTDIR)),
            None => Err(errno(libc::ENOENT)),
        }
    }

    fn inode(&mut self, ino: u64) -> &mut Inode {
        self.inodes.entry(ino).or_default()
    }

    fn push(&mut self, ino: u64, change: Pending) {
        let inode = self.inode(ino);
        apply(&mut inode.current, &change);
        inode.pending.push(change);
    }

    fn sync_file(&mut self, ino: u64) {
        let inode = self.inode(ino);
        for change in std::mem::take(&mut inode.pending) {
            apply(&mut inode.durable, &change);
        }
        debug_assert_eq!(inode.durable, inode.current);
    }

    /// Opens `path` (creating an empty file when `create`): its inode.
    fn open(&mut self, path: &Path, create: bool, truncate: bool) -> io::Result<u64> {
        self.begin_at(&[path])?;
        match self.names.get(path) {
            Some(Entry::File(ino)) => {
                let ino = *ino;
                if truncate {
                    self.push(ino, Pending::SetLen(0));
                }
                Ok(ino)
            }
            Some(Entry::Dir) => Err(errno(libc::EISDIR)),
            None if create => {
                let parent = path.parent().ok_or_else(|| errno(libc::ENOENT))?;
                self.dir_exists(parent)?;
                let ino = self.next_ino;
                self.next_ino += 1;
                self.inodes.insert(ino, Inode::default());
                self.ns(vec![(path.to_path_buf(), Some(Entry::File(ino)))]);
                Ok(ino)
            }
            None => Err(errno(libc::ENOENT)),
        }
    }

    /// One write at `pos` (with faults): pending on success.
    fn write(&mut self, ino: u64, pos: u64, data: &[u8]) -> io::Result<()> {
        self.begin()?;
        if self.rng.chance_ppm(self.faults.write_enospc_ppm) {
            return Err(errno(libc::ENOSPC));
        }
        if self.rng.chance_ppm(self.faults.write_eio_ppm) {
            let sectors = data.len() as u64 / SECTOR_BYTES;
            let kept = (self.rng.below(sectors + 1) * SECTOR_BYTES) as usize;
            if kept > 0 {
                self.push(
                    ino,
                    Pending::Write {
                        pos,
                        data: data[..kept].to_vec(),
                    },
                );
            }
            return Err(errno(libc::EIO));
        }
        self.push(
            ino,
            Pending::Write {
                pos,
                data: data.to_vec(),
            },
        );
        Ok(())
    }

    fn fdatasync(&mut self, ino: u64) -> io::Result<()> {
        self.begin()?;
        if self.rng.chance_ppm(self.faults.sync_eio_ppm) {
            return Err(errno(libc::EIO));
        }
        self.sync_file(ino);
        Ok(())
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.begin_at(&[dir])?;
        self.dir_exists(dir)?;
        if self.rng.chance_ppm(self.faults.sync_eio_ppm) {
            return Err(errno(libc::EIO));
        }
        let touches = |op: &NsOp| {
            op.changes
                .iter()
                .any(|(p, _)| p.parent() == Some(dir) || p.as_path() == dir)
        };
        if let Some(last) = self.journal.iter().rposition(touches) {
            for op in self.journal.drain(..=last) {
                apply_ns(&mut self.durable_names, &op);
            }
        }
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.begin_at(&[from, to])?;
        let entry = *self.names.get(from).ok_or_else(|| errno(libc::ENOENT))?;
        let parent = to.parent().ok_or_else(|| errno(libc::ENOENT))?;
        self.dir_exists(parent)?;
        if matches!(self.names.get(to), Some(Entry::Dir)) {
            return Err(errno(libc::EISDIR));
        }
        self.ns(vec![
            (from.to_path_buf(), None),
            (to.to_path_buf(), Some(entry)),
        ]);
        Ok(())
    }

    fn read(&mut self, ino: u64, pos: u64, len: usize) -> io::Result<Bytes> {
        self.begin()?;
        if self.rng.chance_ppm(self.faults.read_eio_ppm) {
            return Err(errno(libc::EIO));
        }
        let current = &self.inode(ino).current;
        let start = (pos as usize).min(current.len());
        let end = start.saturating_add(len).min(current.len());
        Ok(Bytes::copy_from_slice(&current[start..end]))
    }

    fn crash(&mut self) -> CrashReport {
        let mut report = CrashReport::default();
        let uncommitted = self.journal.len() as u64;
        let kept = self.rng.below(uncommitted + 1);
        for op in self.journal.drain(..kept as usize) {
            apply_ns(&mut self.durable_names, &op);
        }
        self.journal.clear();
        report.names_kept = kept;
        report.names_lost = uncommitted - kept;
        self.names = self.durable_names.clone();
        let live: std::collections::BTreeSet<u64> = self
            .names
            .values()
            .filter_map(|e| match e {
                Entry::File(ino) => Some(*ino),
                Entry::Dir => None,
            })
            .collect();
        self.inodes.retain(|ino, _| live.contains(ino));
        for inode in self.inodes.values_mut() {
            crash_inode(&mut self.rng, inode, &mut report);
        }
        self.epoch += 1;
        self.down = false;
        self.power_off_at = None;
        report
    }

    /// The crash of the directory `dir` alone: see [`SimDisk::crash_dir`].
    fn crash_dir(&mut self, dir: &Path) -> CrashReport {
        let mut report = CrashReport::default();
        let under = |p: &PathBuf| p.starts_with(dir);
        let touched: Vec<u64> = self
            .names
            .iter()
            .chain(self.durable_names.iter())
            .filter(|(p, _)| under(p))
            .filter_map(|(_, e)| match e {
                Entry::File(ino) => Some(*ino),
                Entry::Dir => None,
            })
            .collect();
        // The directory's uncommitted names: a seeded prefix survives; the others' stay queued.
        let (mine, others): (Vec<NsOp>, Vec<NsOp>) = std::mem::take(&mut self.journal)
            .into_iter()
            .partition(|op| op.changes.iter().any(|(p, _)| under(p)));
        assert!(
            mine.iter()
                .all(|op| op.changes.iter().all(|(p, _)| under(p))),
            "SimDisk::crash_dir({}): a namespace operation crosses the directory",
            dir.display()
        );
        self.journal = others;
        let kept = self.rng.below(mine.len() as u64 + 1);
        report.names_kept = kept;
        report.names_lost = mine.len() as u64 - kept;
        for op in mine.iter().take(kept as usize) {
            apply_ns(&mut self.durable_names, op);
        }
        self.names.retain(|p, _| !under(p));
        for (p, e) in self.durable_names.iter().filter(|(p, _)| under(p)) {
            self.names.insert(p.clone(), *e);
        }
        let live: std::collections::BTreeSet<u64> = self
            .names
            .values()
            .filter_map(|e| match e {
                Entry::File(ino) => Some(*ino),
                Entry::Dir => None,
            })
            .collect();
        for ino in touched {
            if !live.contains(&ino) {
                self.inodes.remove(&ino);
            } else if let Some(inode) = self.inodes.get_mut(&ino) {
                crash_inode(&mut self.rng, inode, &mut report);
            }
        }
        let region = self.regions.entry(dir.to_path_buf()).or_default();
        region.down = false;
        region.ops_left = None;
        region.epoch += 1;
        report
    }
}

/// A crash of one file: each of its pending changes is kept, lost or (a write) torn at a
/// sector boundary, in order.
fn crash_inode(rng: &mut Rng, inode: &mut Inode, report: &mut CrashReport) {
    for change in std::mem::take(&mut inode.pending) {
        let change = match (rng.below(3), change) {
            (0, change) => {
                report.changes_kept += 1;
                change
            }
            (1, _) => {
                report.changes_lost += 1;
                continue;
            }
            (_, Pending::Write { pos, data }) => {
                // Torn: the sectors before a random sector boundary inside the write.
                let end = pos + data.len() as u64;
                let first = (pos / SECTOR_BYTES + 1) * SECTOR_BYTES;
                if first >= end {
                    report.changes_lost += 1;
                    continue;
                }
                let boundaries = (end - 1 - first) / SECTOR_BYTES + 1;
                let cut = first + rng.below(boundaries) * SECTOR_BYTES;
                report.writes_torn += 1;
                Pending::Write {
                    pos,
                    data: data[..(cut - pos) as usize].to_vec(),
                }
            }
            (_, change) => {
                report.changes_kept += 1;
                change
            }
        };
        apply(&mut inode.durable, &change);
    }
    inode.current = inode.durable.clone();
}

/// The simulated disk installed for this thread, if any.
pub(crate) fn current() -> Option<SimDisk> {
    CURRENT.with(|c| c.borrow().clone())
}

thread_local! {
    static CURRENT: RefCell<Option<SimDisk>> = const { RefCell::new(None) };
}

/// Routes this thread's storage I/O to `disk` until the guard is dropped (then to whatever
/// was installed before: usually the real disk).
pub fn install(disk: &SimDisk) -> Installed {
    let prev = CURRENT.with(|c| c.replace(Some(disk.clone())));
    Installed { prev }
}

/// The guard of [`install`].
pub struct Installed {
    prev: Option<SimDisk>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let prev = self.prev.take();
        let _ = CURRENT.try_with(|c| c.replace(prev));
    }
}

/// A file opened on a [`SimDisk`]: the inode it names (a rename or removal of its name does
/// not affect it, as with a real descriptor).
#[derive(Clone)]
pub(crate) struct SimFile {
    disk: SimDisk,
    ino: u64,
    epoch: u64,
    /// The path it was opened by, and the crash count of the directories holding it then
    /// ([`SimDisk::crash_dir`]).
    path: PathBuf,
    region_epoch: u64,
    writable: bool,
}

impl SimDisk {
    /// An empty disk (only the root directory `/`) whose random choices come from `seed`.
    pub fn new(seed: u64) -> SimDisk {
        let mut names = BTreeMap::new();
        names.insert(PathBuf::from("/"), Entry::Dir);
        SimDisk {
            state: Rc::new(RefCell::new(State {
                rng: Rng::new(seed),
                inodes: BTreeMap::new(),
                next_ino: 1,
                durable_names: names.clone(),
                names,
                journal: Vec::new(),
                faults: Faults::default(),
                ops: 0,
                power_off_at: None,
                fail_at: None,
                down: false,
                epoch: 0,
                regions: BTreeMap::new(),
                latency: None,
            })),
        }
    }

    /// Sets the fault probabilities from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.state.borrow_mut().faults = faults;
    }

    /// Sets (or removes) the latency hook.
    pub fn set_latency(&self, hook: Option<LatencyHook>) {
        self.state.borrow_mut().latency = hook;
    }

    /// The disk fails every operation with EIO from the `ops`-th operation from now on
    /// (1 = the next one), until [`SimDisk::crash`].
    pub fn power_off_after(&self, ops: u64) {
        let mut s = self.state.borrow_mut();
        s.power_off_at = Some(s.ops + ops.max(1));
    }

    /// The `ops`-th operation from now (1 = the next one) fails with EIO, having no effect;
    /// the others work. For tests that fail each step of a sequence in turn.
    pub fn fail_once_after(&self, ops: u64) {
        let mut s = self.state.borrow_mut();
        s.fail_at = Some(s.ops + ops.max(1));
    }

    /// Whether the disk is powered off (every operation fails).
    pub fn is_down(&self) -> bool {
        self.state.borrow().down
    }

    /// Operations begun so far.
    pub fn op_count(&self) -> u64 {
        self.state.borrow().ops
    }

    /// Power failure and reboot: unsynced changes are kept, lost or torn and uncommitted
    /// names kept up to a seeded point (see the module docs); the disk works again and every
    /// descriptor opened before is dead.
    pub fn crash(&self) -> CrashReport {
        self.state.borrow_mut().crash()
    }

    /// Powers off the directory `dir` alone (one node's data directory in a simulation of
    /// several): every operation on a path under it, or on a descriptor opened under it,
    /// fails with EIO until [`SimDisk::crash_dir`]; the rest of the disk works on.
    pub fn power_off_dir(&self, dir: &Path) {
        let mut s = self.state.borrow_mut();
        s.regions.entry(dir.to_path_buf()).or_default().down = true;
    }

    /// [`SimDisk::power_off_dir`] at the `ops`-th operation under `dir` from now (1 = the
    /// next one; that one fails): a node's crash inside a write, a sync or a recovery.
    pub fn power_off_dir_after(&self, dir: &Path, ops: u64) {
        let mut s = self.state.borrow_mut();
        s.regions.entry(dir.to_path_buf()).or_default().ops_left = Some(ops.max(1));
    }

    /// Whether `path` is under a directory powered off by [`SimDisk::power_off_dir`].
    pub fn is_dir_down(&self, path: &Path) -> bool {
        self.state.borrow().region_down(path)
    }

    /// Power failure and reboot of the directory `dir` alone: its files' unsynced changes are
    /// kept, lost or torn and a seeded prefix of its uncommitted names is kept, as
    /// [`SimDisk::crash`] does for the whole disk; descriptors opened under it before are dead;
    /// it works again. Names and files elsewhere are untouched. `dir`'s parent must be durable
    /// and no rename may cross `dir`'s boundary (that panics: a simulator's mistake).
    pub fn crash_dir(&self, dir: &Path) -> CrashReport {
        self.state.borrow_mut().crash_dir(dir)
    }

    /// The content a process sees in `path` now (None if no such file). For tests.
    pub fn file_content(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.borrow();
        match s.names.get(path) {
            Some(Entry::File(ino)) => Some(
                s.inodes
                    .get(ino)
                    .map_or_else(Vec::new, |i| i.current.clone()),
            ),
            _ => None,
        }
    }

    /// Names of the files and directories directly in `dir` now, with file sizes (directories:
    /// None). For tests and replay dumps.
    pub fn listing(&self, dir: &Path) -> Vec<(String, Option<u64>)> {
        let s = self.state.borrow();
        s.names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, e)| {
                let name = p
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                let size = match e {
                    Entry::File(ino) => {
                        Some(s.inodes.get(ino).map_or(0, |i| i.current.len() as u64))
                    }
                    Entry::Dir => None,
                };
                (name, size)
            })
            .collect()
    }

    async fn delay(&self, op: Op) {
        let hook = self.state.borrow().latency.clone();
        if let Some(fut) = hook.and_then(|h| h(op)) {
            fut.await;
        }
    }

    pub(crate) async fn open(
        &self,
        path: &Path,
        writable: bool,
        create: bool,
    ) -> io::Result<SimFile> {
        self.delay(Op::Open).await;
        let mut s = self.state.borrow_mut();
        let ino = s.open(path, create && writable, false)?;
        Ok(SimFile {
            disk: self.clone(),
            ino,
            epoch: s.epoch,
            path: path.to_path_buf(),
            region_epoch: s.region_epoch(path),
            writable,
        })
    }

    pub(crate) async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.delay(Op::Namespace).await;
        let mut s = self.state.borrow_mut();
        s.begin_at(&[dir])?;
        let mut missing = Vec::new();
        for a in dir.ancestors() {
            match s.names.get(a) {
                Some(Entry::Dir) => break,
                Some(Entry::File(_)) => return Err(errno(libc::ENOTDIR)),
                None if a.as_os_str().is_empty() => break,
                None => missing.push(a.to_path_buf()),
            }
        }
        for a in missing.into_iter().rev() {
            s.ns(vec![(a, Some(Entry::Dir))]);
        }
        Ok(())
    }

    pub(crate) async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.delay(Op::List).await;
        let mut s = self.state.borrow_mut();
        s.begin_at(&[dir])?;
        s.dir_exists(dir)?;
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    pub(crate) async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.delay(Op::SyncDir).await;
        self.state.borrow_mut().sync_dir(dir)
    }

    /// write `path.tmp`, fdatasync, rename over `path`, fsync the directory.
    pub(crate) async fn write_file_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        self.write_whole_file(&tmp, data).await?;
        self.delay(Op::Namespace).await;
        self.state.borrow_mut().rename(&tmp, path)?;
        let parent = path.parent().ok_or_else(|| errno(libc::ENOENT))?;
        self.sync_dir(parent).await
    }

    /// Create or truncate `path`, write `data`, fdatasync.
    pub(crate) async fn write_whole_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.delay(Op::Open).await;
        let ino = self.state.borrow_mut().open(path, true, true)?;
        self.delay(Op::Write).await;
        self.alive_at(path)?.write(ino, 0, data)?;
        self.delay(Op::Sync).await;
        self.alive_at(path)?.fdatasync(ino)
    }

    /// The disk state, failing with EIO if `path` is under a powered-off directory.
    fn alive_at(&self, path: &Path) -> io::Result<std::cell::RefMut<'_, State>> {
        let mut s = self.state.borrow_mut();
        s.region_gate(path)?;
        Ok(s)
    }

    pub(crate) async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.delay(Op::Namespace).await;
        self.state.borrow_mut().rename(from, to)
    }

    pub(crate) async fn read_small_file(
        &self,
        path: &Path,
        max_bytes: u64,
    ) -> io::Result<Option<Vec<u8>>> {
        self.delay(Op::Read).await;
        let mut s = self.state.borrow_mut();
        let ino = match s.open(path, false, false) {
            Ok(ino) => ino,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        Ok(Some(s.read(ino, 0, max)?.to_vec()))
    }

    /// Remove the names (missing ones are fine), then fsync `dir`.
    pub(crate) async fn remove_files(&self, dir: &Path, names: &[String]) -> io::Result<()> {
        for name in names {
            self.delay(Op::Namespace).await;
            let mut s = self.state.borrow_mut();
            let path = dir.join(name);
            s.begin_at(&[&path])?;
            match s.names.get(&path) {
                Some(Entry::File(_)) => s.ns(vec![(path, None)]),
                Some(Entry::Dir) => return Err(errno(libc::EISDIR)),
                None => {}
            }
        }
        self.sync_dir(dir).await
    }

    /// Remove `dir` and everything below it (missing is fine), then fsync its parent.
    pub(crate) async fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.delay(Op::Namespace).await;
        {
            let mut s = self.state.borrow_mut();
            s.begin_at(&[dir])?;
            if s.names.contains_key(dir) {
                let mut changes: Vec<_> = descendants(&s.names, dir)
                    .into_iter()
                    .map(|p| (p, None))
                    .collect();
                changes.push((dir.to_path_buf(), None));
                s.ns(changes);
            }
        }
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => self.sync_dir(parent).await,
            _ => Ok(()),
        }
    }

    /// A file of at least `min_bytes` in `dir` or one directory below.
    pub(crate) async fn find_non_empty_file(
        &self,
        dir: &Path,
        min_bytes: u64,
    ) -> io::Result<Option<PathBuf>> {
        self.delay(Op::List).await;
        let mut s = self.state.borrow_mut();
        s.begin_at(&[dir])?;
        s.dir_exists(dir)?;
        let found = s.names.iter().find_map(|(p, e)| {
            let depth_ok =
                p.parent() == Some(dir) || p.parent().and_then(Path::parent) == Some(dir);
            let Entry::File(ino) = e else { return None };
            let len = s.inodes.get(ino).map_or(0, |i| i.current.len() as u64);
            (depth_ok && len >= min_bytes).then(|| p.clone())
        });
        Ok(found)
    }
}

impl SimFile {
    /// The disk state, failing with EIO if this descriptor died in a crash.
    fn state(&self) -> io::Result<std::cell::RefMut<'_, State>> {
        let mut s = self.disk.state.borrow_mut();
        if s.epoch != self.epoch || s.region_epoch(&self.path) != self.region_epoch {
            return Err(errno(libc::EIO));
        }
        s.region_gate(&self.path)?;
        Ok(s)
    }

    fn writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(errno(libc::EBADF))
        }
    }

    pub(crate) async fn size(&self) -> io::Result<u64> {
        self.disk.delay(Op::Read).await;
        let mut s = self.state()?;
        s.begin()?;
        Ok(s.inode(self.ino).current.len() as u64)
    }

    /// Writes the already padded `data` at `pos` in pieces of at most `write_bytes_max`
    /// (each an operation that may fail on its own); the first error is returned.
    pub(crate) async fn write(
        &self,
        pos: u64,
        data: &[u8],
        write_bytes_max: usize,
    ) -> io::Result<()> {
        self.writable()?;
        let mut first_err = None;
        for (i, chunk) in data.chunks(write_bytes_max).enumerate() {
            self.disk.delay(Op::Write).await;
            let at = pos + (i * write_bytes_max) as u64;
            if let Err(e) = self.state()?.write(self.ino, at, chunk) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub(crate) async fn sync(&self) -> io::Result<()> {
        self.disk.delay(Op::Sync).await;
        self.state()?.fdatasync(self.ino)
    }

    /// The file size becomes at least `size` (new bytes read as zeros).
    pub(crate) async fn preallocate(&self, size: u64) -> io::Result<()> {
        self.writable()?;
        self.disk.delay(Op::SetLen).await;
        let mut s = self.state()?;
        s.begin()?;
        let ppm = s.faults.preallocate_enospc_ppm;
        if s.rng.chance_ppm(ppm) {
            return Err(errno(libc::ENOSPC));
        }
        if size > s.inode(self.ino).current.len() as u64 {
            s.push(self.ino, Pending::SetLen(size));
        }
        Ok(())
    }

    pub(crate) async fn truncate(&self, size: u64) -> io::Result<()> {
        self.writable()?;
        self.disk.delay(Op::SetLen).await;
        let mut s = self.state()?;
        s.begin()?;
        s.push(self.ino, Pending::SetLen(size));
        Ok(())
    }

    pub(crate) async fn read(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        self.disk.delay(Op::Read).await;
        self.state()?.read(self.ino, pos, len)
    }
}

#[cfg(test)]
mod tests {
    //! SimDisk semantics, through the public storage I/O functions (which dispatch to it).
    use super::*;
    use crate::storage::io::{self as sio, DataFile};
    use futures_lite::future::block_on;

    fn dir() -> PathBuf {
        PathBuf::from("/d")
    }

    /// A fresh disk with `/d` created durably.
    fn disk(seed: u64) -> SimDisk {
        let disk = SimDisk::new(seed);
        let _g = install(&disk);
        block_on(async {
            sio::create_dir_all(&dir()).await.unwrap();
            sio::sync_dir(Path::new("/")).await.unwrap();
        });
        disk
    }

    fn sectors(fill: u8, n: usize) -> Vec<u8> {
        vec![fill; n * SECTOR_BYTES as usize]
    }

    #[test]
    fn crash_keeps_loses_or_tears_unsynced_writes_at_sector_boundaries() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let disk = disk(seed);
            let _g = install(&disk);
            let path = dir().join("f");
            block_on(async {
                let f = DataFile::open_rw(&path).await.unwrap();
                sio::sync_dir(&dir()).await.unwrap();
                f.write_padded(0, &[&sectors(1, 2)], 1 << 20).await.unwrap();
                f.sync().await.unwrap();
                // Unsynced: four sectors of 2 over the synced ones and beyond.
                f.write_padded(0, &[&sectors(2, 4)], 1 << 20).await.unwrap();
                assert_eq!(f.read(0, 4096).await.unwrap().to_vec(), sectors(2, 4));
            });
            disk.crash();
            let data = disk.file_content(&path).expect("synced name survives");
            // A prefix of whole sectors of the new write, then the old content.
            let new = data.iter().take_while(|&&b| b == 2).count();
            assert_eq!(
                new % SECTOR_BYTES as usize,
                0,
                "seed {seed}: cut inside a sector"
            );
            let mut want = sectors(2, new / SECTOR_BYTES as usize);
            if want.len() < 2 * SECTOR_BYTES as usize {
                want.extend_from_slice(&sectors(1, 2)[want.len()..]);
            }
            assert_eq!(data, want, "seed {seed}");
            seen.insert(new / SECTOR_BYTES as usize);
        }
        // Lost (0), torn (1..3) and kept (4) all happen.
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn synced_data_survives_every_crash() {
        for seed in 0..50 {
            let disk = disk(seed);
            let _g = install(&disk);
            let path = dir().join("f");
            block_on(async {
                let f = DataFile::open_rw(&path).await.unwrap();
                f.write_padded(0, &[b"hello"], 512).await.unwrap();
                f.preallocate(4096).await.unwrap();
                f.sync().await.unwrap();
                sio::sync_dir(&dir()).await.unwrap();
            });
            disk.crash();
            let data = disk.file_content(&path).unwrap();
            assert_eq!(data.len(), 4096);
            assert_eq!(&data[..5], b"hello");
            assert!(data[5..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn a_created_name_is_durable_only_after_its_directory_is_synced() {
        let mut lost = 0;
        for seed in 0..100 {
            let disk = disk(seed);
            let _g = install(&disk);
            block_on(async {
                let f = DataFile::open_rw(&dir().join("a")).await.unwrap();
                f.write_padded(0, &[b"a"], 512).await.unwrap();
                f.sync().await.unwrap();
                let f = DataFile::open_rw(&dir().join("b")).await.unwrap();
                f.sync().await.unwrap();
                sio::sync_dir(&dir()).await.unwrap();
                DataFile::open_rw(&dir().join("c")).await.unwrap();
            });
            disk.crash();
            assert!(disk.file_content(&dir().join("a")).is_some());
            assert!(disk.file_content(&dir().join("b")).is_some());
            lost += usize::from(disk.file_content(&dir().join("c")).is_none());
        }
        assert!(lost > 0 && lost < 100, "c lost in {lost} of 100 crashes");
    }

    #[test]
    fn atomic_replace_leaves_the_old_or_the_new_file() {
        let (mut old, mut new) = (0, 0);
        for seed in 0..100 {
            let disk = disk(seed);
            let _g = install(&disk);
            let path = dir().join("meta");
            block_on(async {
                sio::write_file_atomic(&path, b"old".to_vec())
                    .await
                    .unwrap();
                // Power fails somewhere inside the second replace.
                disk.power_off_after(1 + seed % 5);
                let _ = sio::write_file_atomic(&path, b"new".to_vec()).await;
            });
            assert!(disk.is_down() || seed % 5 >= 4);
            disk.crash();
            match disk.file_content(&path).as_deref() {
                Some(b"old") => old += 1,
                Some(b"new") => new += 1,
                other => panic!("seed {seed}: {other:?}"),
            }
        }
        assert!(old > 0 && new > 0, "old {old}, new {new}");
    }

    #[test]
    fn faults_are_real_os_errors() {
        let disk = disk(1);
        let _g = install(&disk);
        block_on(async {
            let f = DataFile::open_rw(&dir().join("f")).await.unwrap();
            disk.set_faults(Faults {
                write_enospc_ppm: 1_000_000,
                preallocate_enospc_ppm: 1_000_000,
                ..Faults::default()
            });
            let e = f.write_padded(0, &[b"x"], 512).await.unwrap_err();
            assert!(sio::is_disk_full(&e), "{e:?}");
            assert!(sio::is_disk_full(
                &f.preallocate(1 << 20).await.unwrap_err()
            ));
            disk.set_faults(Faults {
                sync_eio_ppm: 1_000_000,
                read_eio_ppm: 1_000_000,
                ..Faults::default()
            });
            f.write_padded(0, &[b"x"], 512).await.unwrap();
            for e in [f.sync().await.unwrap_err(), f.read(0, 1).await.unwrap_err()] {
                match e {
                    crate::storage::StorageError::Io { source, .. } => {
                        assert_eq!(source.raw_os_error(), Some(libc::EIO))
                    }
                    other => panic!("{other:?}"),
                }
            }
            disk.set_faults(Faults::default());
            // The failed sync left the write pending: a later one makes it durable.
            f.sync().await.unwrap();
        });
    }

    #[test]
    fn power_off_fails_everything_and_old_descriptors_stay_dead() {
        let disk = disk(3);
        let _g = install(&disk);
        let path = dir().join("f");
        let f = block_on(async {
            let f = DataFile::open_rw(&path).await.unwrap();
            sio::sync_dir(&dir()).await.unwrap();
            disk.power_off_after(2);
            f.write_padded(0, &[b"x"], 512).await.unwrap();
            assert!(f.sync().await.is_err());
            assert!(disk.is_down());
            assert!(sio::list_dir(&dir()).await.is_err());
            f
        });
        disk.crash();
        block_on(async {
            assert!(
                f.read(0, 1).await.is_err(),
                "a descriptor from before the crash"
            );
            let g = DataFile::open_rw(&path).await.unwrap();
            assert!(g.size().await.unwrap() <= 512);
            assert_eq!(sio::list_dir(&dir()).await.unwrap(), vec!["f".to_string()]);
        });
    }

    #[test]
    fn fail_once_fails_exactly_one_operation() {
        let disk = disk(4);
        let _g = install(&disk);
        block_on(async {
            let f = DataFile::open_rw(&dir().join("f")).await.unwrap();
            disk.fail_once_after(2);
            f.write_padded(0, &[b"x"], 512).await.unwrap();
            assert!(f.sync().await.is_err());
            f.sync().await.unwrap();
        });
    }

    #[test]
    fn latency_hook_runs_before_each_operation() {
        let disk = disk(5);
        let _g = install(&disk);
        let calls = Rc::new(std::cell::Cell::new(0));
        let c = calls.clone();
        disk.set_latency(Some(Rc::new(move |_op| {
            c.set(c.get() + 1);
            let fut: Pin<Box<dyn Future<Output = ()>>> = Box::pin(yield_once());
            Some(fut)
        })));
        block_on(async {
            let f = DataFile::open_rw(&dir().join("f")).await.unwrap();
            f.write_padded(0, &[b"x"], 512).await.unwrap();
            f.sync().await.unwrap();
        });
        assert_eq!(calls.get(), 3);
    }

    /// A node's crash in a simulation of several nodes on one disk: `power_off_dir` fails
    /// everything under that directory only; `crash_dir` crashes it (unsynced data and names
    /// there kept, lost or torn; its old descriptors dead) and leaves every other directory's
    /// unsynced data, unsynced names and descriptors as they were.
    #[test]
    fn crash_dir_crashes_that_directory_alone() {
        let (a, b) = (dir().join("a"), dir().join("b"));
        let (mut kept, mut lost) = (0, 0);
        for seed in 0..100 {
            let disk = disk(seed);
            let _g = install(&disk);
            let (fa, fb) = block_on(async {
                for d in [&a, &b] {
                    sio::create_dir_all(d).await.unwrap();
                }
                sio::sync_dir(&dir()).await.unwrap();
                let mut files = Vec::new();
                for d in [&a, &b] {
                    let f = DataFile::open_rw(&d.join("synced")).await.unwrap();
                    f.write_padded(0, &[&sectors(1, 1)], 1 << 20).await.unwrap();
                    f.sync().await.unwrap();
                    sio::sync_dir(d).await.unwrap();
                    // Unsynced: a second sector and a new name.
                    f.write_padded(512, &[&sectors(2, 1)], 1 << 20)
                        .await
                        .unwrap();
                    DataFile::open_rw(&d.join("new")).await.unwrap();
                    files.push(f);
                }
                (files.remove(0), files.remove(0))
            });
            disk.power_off_dir(&a);
            assert!(disk.is_dir_down(&a.join("synced")) && !disk.is_dir_down(&b));
            block_on(async {
                assert!(
                    fa.read(0, 512).await.is_err(),
                    "a's descriptor while a is off"
                );
                assert!(sio::list_dir(&a).await.is_err());
                assert!(DataFile::open_rw(&a.join("x")).await.is_err());
                assert_eq!(fb.read(0, 512).await.unwrap().to_vec(), sectors(1, 1));
                assert_eq!(sio::list_dir(&b).await.unwrap().len(), 2);
            });
            disk.crash_dir(&a);
            let content = disk.file_content(&a.join("synced")).expect("synced name");
            assert_eq!(content[..512], sectors(1, 1)[..], "seed {seed}");
            if content.len() == 1024 {
                kept += 1;
            } else {
                assert_eq!(content.len(), 512, "seed {seed}");
                lost += 1;
            }
            // b is untouched: its unsynced sector and name are still there.
            let mut want = sectors(1, 1);
            want.extend(sectors(2, 1));
            assert_eq!(disk.file_content(&b.join("synced")), Some(want));
            assert!(disk.file_content(&b.join("new")).is_some());
            assert!(!disk.is_dir_down(&a));
            block_on(async {
                assert!(
                    fa.read(0, 512).await.is_err(),
                    "a descriptor from before a's crash"
                );
                fb.sync().await.unwrap();
                let again = DataFile::open_rw(&a.join("synced")).await.unwrap();
                assert_eq!(again.read(0, 512).await.unwrap().to_vec(), sectors(1, 1));
            });
        }
        assert!(kept > 0 && lost > 0, "kept {kept}, lost {lost}");
    }

    /// `power_off_dir_after(dir, n)`: the n-th operation under `dir` fails and the directory
    /// stays off; operations elsewhere do not count and keep working.
    #[test]
    fn power_off_dir_after_counts_that_directory_only() {
        let disk = disk(7);
        let _g = install(&disk);
        let (a, b) = (dir().join("a"), dir().join("b"));
        block_on(async {
            for d in [&a, &b] {
                sio::create_dir_all(d).await.unwrap();
            }
            let fa = DataFile::open_rw(&a.join("f")).await.unwrap();
            let fb = DataFile::open_rw(&b.join("f")).await.unwrap();
            sio::sync_dir(&dir()).await.unwrap();
            sio::sync_dir(&a).await.unwrap();
            disk.power_off_dir_after(&a, 3);
            fa.write_padded(0, &[b"1"], 512).await.unwrap();
            fb.write_padded(0, &[b"1"], 512).await.unwrap();
            fb.sync().await.unwrap();
            fa.sync().await.unwrap();
            assert!(!disk.is_dir_down(&a));
            assert!(fa.write_padded(0, &[b"2"], 512).await.is_err(), "the third");
            assert!(disk.is_dir_down(&a));
            assert!(fa.read(0, 1).await.is_err());
            fb.sync().await.unwrap();
        });
        disk.crash_dir(&a);
        assert_eq!(disk.file_content(&a.join("f")).unwrap()[0], b'1');
    }

    #[test]
    fn the_guard_restores_the_previous_backend() {
        let disk = SimDisk::new(6);
        assert!(current().is_none());
        {
            let _g = install(&disk);
            assert!(current().is_some());
        }
        assert!(current().is_none());
    }
}
