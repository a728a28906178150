//! The deterministic simulator of the storage engine (issue 11): a seeded run drives one
//! [`PartitionLog`] on a [`SimDisk`] inside `rt`'s simulated executor ([`rt::sim`]: one
//! thread, a seeded scheduling order, a virtual clock), with random operations and faults,
//! and checks the log against a model after every step.
//!
//! # A run
//! One seed decides everything: the log's config (small segments and index intervals, so
//! rolls and index lookups happen; for some seeds rolls and retention by time on the
//! simulated clock), the disk's faults (none for half the seeds; otherwise EIO
//! on write/fsync/read and ENOSPC on write/preallocate, each up to a few percent), the
//! latency hook (each disk operation sleeps 0 to 150 µs on the virtual clock, which reorders
//! the flusher, the appends and the reads, as does the seeded scheduler) and [`STEPS`] operations: spawn concurrent appends of batches of
//! random sizes (group commit), send the next batch of one idempotent producer (or retry the
//! one not acknowledged yet, with the same sequence), read at a random offset, wait for the
//! appends in flight, delete records below a random offset, apply retention by size, close
//! and reopen, crash now, or arm a crash a random number of
//! disk operations ahead (so it falls inside a flush, a segment roll or a recovery). A crash
//! powers the disk off, lets every task of the old log fail, drops it, applies
//! [`SimDisk::crash`] (unsynced writes kept, lost or torn; unsynced names kept up to a seeded
//! point) and reopens the log. Timers run on the virtual clock and nothing does real I/O, so a
//! seed replays exactly (`same_seed_same_run` checks it); a task that never finishes makes
//! the executor panic with the seed (no runnable task, no timer).
//!
//! # The checks ([`Model`])
//! - No acknowledged append lost: after every reopen, every batch whose append returned `Ok`
//!   and that retention did not remove is in the log at the offsets it was given, byte for
//!   byte; the high watermark is past every acknowledged offset.
//! - No torn or corrupt batch served: every batch a read returns passes
//!   [`batch::validate`] (framing, magic, CRC-32C, record count) and is one that was sent.
//! - Offsets dense and monotonic: a read returns the batch holding the requested offset and
//!   then batches each starting right after the previous one; an offset is never given to two
//!   different batches (across crashes too).
//! - High watermark <= log end, log start <= high watermark; neither the high watermark nor
//!   the log start moves back while the log is open; after a reopen the high watermark is not
//!   below any acknowledged offset, and the log start not above the highest one seen (or
//!   asked for by a retention or DeleteRecords that failed: its checkpoint may be durable).
//! - Reads never pass the high watermark they report, and return exactly what was written.
//! - Idempotence: a batch is stored once; a retry of a batch already in the log (durable
//!   before a crash although its append failed) is answered with the original offsets. A
//!   retry is refused (OutOfOrderSequence) only if the producer's batches may all be gone.
//! - An append fails only with an I/O error, and only when the disk failed (a fault or a
//!   crash): with no faults an append never fails.
//!
//! # Running and replaying
//! `bash tests/simulate.sh N` runs N seeds from a random base (or `--base B`) and ends with
//! `simulation: N seeds passed, F failed`. A failure prints its seed, step and the replay
//! command: `bash tests/simulate.sh --seed S` (= `FRESHET_SIM_SEED=S cargo test --test it --
//! simulate::replay --nocapture`), which prints every step.
//!
//! What this does not simulate: compaction (`simulate_compact.rs` does), the internal logs
//! and the metadata state machine (`simulate_internal.rs` does), transactions, several
//! producers in flight.

use crate::sim_runner;
use crate::storage_common::producer_batch;
use bytes::Bytes;
use freshet::rt;
use freshet::storage::io::sim::{self, Faults, SimDisk};
use freshet::storage::{AppendInfo, LogConfig, PartitionLog, StorageError, TailCache};
use freshet_protocol::batch::{self, encode_batch, Compression, NewRecord};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Operations per seed.
const STEPS: usize = 150;
/// Seeds run by `seeds` when FRESHET_SIM_SEEDS is not set.
const SEEDS_DEFAULT: u64 = 20;
/// Tail cache per log in the simulation (small, so reads go to the disk too).
const CACHE_BYTES: usize = 64 << 10;
/// Appends in flight at most.
const INFLIGHT_MAX: usize = 8;
/// Yields after dropping a crashed log, so its remaining tasks run into the dead disk.
const DRAIN_YIELDS: usize = 200;
/// Latency of a disk operation: 0 to `latency_steps_max` times this, on the virtual clock.
const LATENCY_STEP_US: u64 = 50;
/// Opens tried after a crash (each may crash again or meet a fault) before giving up.
const REOPEN_ATTEMPTS_MAX: usize = 10;

/// xorshift64* through splitmix64.
pub(crate) struct Rng(u64);
impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// What a seed's run found: `Err` names the step and the broken rule.
type Verdict = Result<(), String>;

/// The model: what the log must contain.
#[derive(Default)]
struct Model {
    /// Every batch ever sent, by its identity (bytes from `magic` on: what the log does not
    /// rewrite), with its record count.
    sent: HashMap<Bytes, i32>,
    /// Acknowledged appends: base offset -> (last offset, identity).
    acked: BTreeMap<i64, (i64, Bytes)>,
    /// Every batch seen in the log (served or acknowledged): base -> (last, identity). An
    /// offset range is never given to two different batches.
    seen: BTreeMap<i64, (i64, Bytes)>,
    /// Where each batch of `seen` is: a batch is stored once (an idempotent producer's retry
    /// of a batch that is already in the log gets the original offsets).
    placed: HashMap<Bytes, i64>,
    /// Whether the disk failed since the last check of append results (fault or crash).
    disk_failed: bool,
    /// Highest log start offset observed.
    log_start_max: i64,
    /// High watermark and log start last observed on the open log.
    hw: i64,
    log_start: i64,
}

fn identity(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(&b[16..])
}

impl Model {
    /// Records that `b` (validated) was found in the log at its offsets.
    fn saw(&mut self, b: &[u8]) -> Verdict {
        let h = batch::validate(b).map_err(|e| format!("served a corrupt batch: {e}"))?;
        let (base, last) = (h.base_offset(), h.last_offset());
        let id = identity(b);
        if !self.sent.contains_key(&id) {
            return Err(format!("served batch {base}..={last} that was never sent"));
        }
        // Any known batch overlapping this range must be this very batch.
        if let Some((&kb, (kl, kid))) = self.seen.range(..=last).next_back() {
            if *kl >= base && (kb != base || *kl != last || *kid != id) {
                return Err(format!(
                    "offsets {base}..={last} served with other content than {kb}..={kl} had"
                ));
            }
        }
        self.place(&id, base)?;
        self.seen.insert(base, (last, id));
        Ok(())
    }

    fn place(&mut self, id: &Bytes, base: i64) -> Verdict {
        match self.placed.insert(id.clone(), base) {
            Some(other) if other != base => Err(format!(
                "one batch stored twice: at offsets {other} and {base}"
            )),
            _ => Ok(()),
        }
    }

    /// An append's result.
    fn append_done(&mut self, id: &Bytes, result: Result<AppendInfo, StorageError>) -> Verdict {
        match result {
            Ok(info) => {
                let count = self.sent[id];
                if info.last_offset - info.base_offset + 1 != i64::from(count) {
                    return Err(format!("append of {count} records got {info:?}"));
                }
                if let Some((&kb, (kl, kid))) = self.seen.range(..=info.last_offset).next_back() {
                    if *kl >= info.base_offset && (kb != info.base_offset || kid != id) {
                        return Err(format!(
                            "acknowledged {}..={} over {kb}..={kl} (another batch)",
                            info.base_offset, info.last_offset
                        ));
                    }
                }
                self.place(id, info.base_offset)?;
                self.seen
                    .insert(info.base_offset, (info.last_offset, id.clone()));
                self.acked
                    .insert(info.base_offset, (info.last_offset, id.clone()));
                Ok(())
            }
            Err(StorageError::Io { .. }) if self.disk_failed => Ok(()),
            Err(e) => Err(format!(
                "append failed with {e:?} (disk failed: {})",
                self.disk_failed
            )),
        }
    }

    /// The open log's offsets are consistent and did not move back.
    fn check_offsets(&mut self, log: &PartitionLog) -> Verdict {
        let (start, hw, leo) = (
            log.log_start_offset(),
            log.high_watermark(),
            log.log_end_offset(),
        );
        if !(start <= hw && hw <= leo) {
            return Err(format!(
                "offsets out of order: log start {start}, high watermark {hw}, log end {leo}"
            ));
        }
        if hw < self.hw || start < self.log_start {
            return Err(format!(
                "moved back: high watermark {} -> {hw}, log start {} -> {start}",
                self.hw, self.log_start
            ));
        }
        self.hw = hw;
        self.log_start = start;
        self.log_start_max = self.log_start_max.max(start);
        Ok(())
    }

    /// Checks one read's answer at `offset`.
    fn check_read(&mut self, offset: i64, batches: &[Bytes], hw: i64) -> Verdict {
        let mut next = offset;
        for (i, b) in batches.iter().enumerate() {
            self.saw(b)?;
            let h = batch::header(b).ok_or("short batch")?;
            let (base, last) = (h.base_offset(), h.last_offset());
            let ok = if i == 0 {
                base <= offset && offset <= last
            } else {
                base == next
            };
            if !ok {
                return Err(format!(
                    "read at {offset}: batch {base}..={last} where offset {next} was due"
                ));
            }
            if last >= hw {
                return Err(format!(
                    "read at {offset} served {base}..={last} past the high watermark {hw}"
                ));
            }
            next = last + 1;
        }
        Ok(())
    }
}

/// One batch of `records` records with unique content (`id` in every key), `value_len`-byte
/// values.
fn make_batch(id: u64, records: usize, value_len: usize, ts: i64) -> Bytes {
    let records: Vec<NewRecord> = (0..records)
        .map(|i| {
            (
                Some(Bytes::from(format!("id-{id}-{i}"))),
                Some(Bytes::from(vec![(id as usize + i) as u8; value_len])),
                ts + i as i64,
            )
        })
        .collect();
    encode_batch(&records, Compression::None).expect("encode batch")
}

/// Appends in flight and their results, shared with the tasks.
type Results = Rc<RefCell<Vec<(Bytes, Result<AppendInfo, StorageError>)>>>;

struct Sim {
    rng: Rng,
    disk: SimDisk,
    dir: PathBuf,
    config: LogConfig,
    faults: Faults,
    model: Model,
    log: Option<Rc<PartitionLog>>,
    inflight: Vec<rt::JoinHandle<()>>,
    results: Results,
    next_id: u64,
    now_ms: i64,
    trace: String,
    verbose: bool,
    /// A power-off is armed (or happened) and no crash has followed yet.
    armed: bool,
    /// Faults are off for a retried open.
    faults_suspended: bool,
    stats: Stats,
    producer: Producer,
}

/// What the runs did, summed over seeds (to see that the checks had something to check).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stats {
    appends_acked: u64,
    appends_failed: u64,
    reads: u64,
    crashes: u64,
    changes_lost: u64,
    writes_torn: u64,
    names_lost: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.appends_acked += o.appends_acked;
        self.appends_failed += o.appends_failed;
        self.reads += o.reads;
        self.crashes += o.crashes;
        self.changes_lost += o.changes_lost;
        self.writes_torn += o.writes_torn;
        self.names_lost += o.names_lost;
    }
}

/// The one idempotent producer: one batch in flight at a time, retried (same sequence) until
/// acknowledged, as a Kafka producer with `enable.idempotence` does.
struct Producer {
    id: i64,
    next_seq: i32,
    /// The batch being sent (kept for the retry until acknowledged) and its record count.
    current: Option<(Bytes, i32)>,
    inflight: bool,
    /// Last offset acknowledged to this producer.
    last_acked: i64,
    results: Results,
}

/// Why opening the log did not work.
enum OpenFailed {
    /// The disk powered off during recovery: crash again and retry.
    Down,
    /// An injected fault: retry with faults off.
    Fault,
    /// A broken rule.
    Broken(String),
}

impl Sim {
    fn note(&mut self, step: usize, what: String) {
        if self.verbose {
            eprintln!("step {step}: {what}");
        }
        let _ = writeln!(self.trace, "{step} {what}");
    }

    fn log(&self) -> Rc<PartitionLog> {
        self.log.clone().expect("log open")
    }

    /// Whether an I/O error is allowed now: faults are on or a power-off is armed.
    fn may_fail(&self) -> bool {
        self.faults_on() || self.armed || self.disk.is_down()
    }

    /// Feeds finished appends to the model; disk failure is judged from the disk's state.
    fn collect(&mut self) -> Verdict {
        self.model.disk_failed = self.may_fail();
        let done: Vec<_> = self.results.borrow_mut().drain(..).collect();
        for (id, result) in done {
            if result.is_ok() {
                self.stats.appends_acked += 1;
            } else {
                self.stats.appends_failed += 1;
            }
            self.model.append_done(&id, result)?;
        }
        let done: Vec<_> = self.producer.results.borrow_mut().drain(..).collect();
        for (id, result) in done {
            self.producer.inflight = false;
            match result {
                Ok(info) => {
                    self.stats.appends_acked += 1;
                    self.producer.next_seq += self.producer.current.take().map_or(0, |c| c.1);
                    self.producer.last_acked = info.last_offset;
                    self.model.append_done(&id, Ok(info))?;
                }
                Err(StorageError::Io { .. }) if self.model.disk_failed => {
                    self.stats.appends_failed += 1;
                }
                Err(
                    e @ (StorageError::OutOfOrderSequence(_)
                    | StorageError::InvalidProducerEpoch(_)),
                ) => {
                    // Allowed only if the producer's batches may all be gone (retention or
                    // DeleteRecords passed them): then its state may be too. A new producer.
                    let start = self.log.as_ref().map_or(0, |l| l.log_start_offset());
                    if start <= self.producer.last_acked {
                        return Err(format!(
                            "idempotent retry refused with {e:?} (log start {start}, last acked {})",
                            self.producer.last_acked
                        ));
                    }
                    self.producer.id += 1;
                    self.producer.next_seq = 0;
                    self.producer.current = None;
                    self.producer.last_acked = -1;
                }
                Err(e) => return Err(format!("idempotent append failed: {e:?}")),
            }
        }
        Ok(())
    }

    /// Waits for every append in flight.
    async fn settle(&mut self) -> Verdict {
        for t in std::mem::take(&mut self.inflight) {
            t.await;
        }
        self.collect()
    }

    /// Opens the log (after a crash or a close) and checks it against the model. A power-off
    /// during recovery crashes again; an injected fault retries with faults off (the
    /// partition stays offline until the disk works; no data may be lost meanwhile).
    async fn reopen(&mut self, step: usize) -> Verdict {
        self.faults_suspended = false;
        for _attempt in 0..REOPEN_ATTEMPTS_MAX {
            let failed = self.try_reopen(step).await;
            self.faults_suspended = false;
            self.disk.set_faults(self.faults.clone());
            match failed {
                Ok(()) => return Ok(()),
                Err(OpenFailed::Broken(e)) => return Err(e),
                Err(OpenFailed::Down) => {
                    self.note(step, "power off during recovery".into());
                    self.drain_and_crash(step).await;
                }
                Err(OpenFailed::Fault) => {
                    self.note(step, "open hit an injected fault; retrying without".into());
                    self.disk.set_faults(Faults::default());
                    self.faults_suspended = true;
                }
            }
        }
        Err(format!("no open in {REOPEN_ATTEMPTS_MAX} attempts"))
    }

    /// The kind of an I/O error met while opening.
    fn open_error(&self, e: StorageError, what: String) -> OpenFailed {
        match e {
            StorageError::Io { .. } if self.disk.is_down() => OpenFailed::Down,
            StorageError::Io { .. } if self.faults_on() && !self.faults_suspended => {
                OpenFailed::Fault
            }
            e => OpenFailed::Broken(format!("{what}: {e:?}")),
        }
    }

    async fn try_reopen(&mut self, step: usize) -> Result<(), OpenFailed> {
        let cache = TailCache::new(CACHE_BYTES);
        let log = PartitionLog::open(&self.dir, self.config.clone(), cache)
            .await
            .map_err(|e| self.open_error(e, "reopen failed".into()))?;
        let log = Rc::new(log);
        let (start, hw, leo) = (
            log.log_start_offset(),
            log.high_watermark(),
            log.log_end_offset(),
        );
        let broken = OpenFailed::Broken;
        if hw != leo {
            return Err(broken(format!(
                "after open high watermark {hw} != log end {leo}"
            )));
        }
        if start > self.model.log_start_max {
            return Err(broken(format!(
                "after open log start {start} > highest seen {}",
                self.model.log_start_max
            )));
        }
        // Read the whole log back: dense, intact, and every acknowledged batch there.
        let mut offset = start;
        let mut found = BTreeMap::new();
        while offset < hw {
            let data = log
                .read(offset, 256 << 10, true)
                .await
                .map_err(|e| self.open_error(e, format!("read at {offset} after open")))?;
            if data.batches.is_empty() {
                return Err(broken(format!(
                    "no batch at {offset} below high watermark {hw}"
                )));
            }
            self.model
                .check_read(offset, &data.batches, data.high_watermark)
                .map_err(broken)?;
            for b in &data.batches {
                let h = batch::header(b).ok_or(broken("short batch".into()))?;
                found.insert(h.base_offset(), identity(b));
                offset = h.last_offset() + 1;
            }
        }
        for (base, (last, id)) in self.model.acked.range(start..) {
            if found.get(base) != Some(id) {
                return Err(broken(format!(
                    "acknowledged batch {base}..={last} lost or changed (log {start}..{hw})"
                )));
            }
        }
        // Batches beyond the log end are forgotten: their offsets may be given again.
        self.model.seen.retain(|&base, _| base < hw);
        self.model.placed.retain(|_, base| *base < hw);
        self.model.hw = hw;
        self.model.log_start = start;
        self.model.log_start_max = self.model.log_start_max.max(start);
        self.note(step, format!("reopened: log {start}..{hw}"));
        self.log = Some(log);
        Ok(())
    }

    fn faults_on(&self) -> bool {
        let f = &self.faults;
        f.write_eio_ppm
            + f.write_enospc_ppm
            + f.sync_eio_ppm
            + f.read_eio_ppm
            + f.preallocate_enospc_ppm
            > 0
    }

    /// Power off now (if not already), let the old log's tasks fail, crash the disk, reopen.
    async fn crash(&mut self, step: usize) -> Verdict {
        if !self.disk.is_down() {
            self.disk.power_off_after(1);
        }
        self.armed = true;
        self.settle().await?;
        self.log = None;
        self.drain_and_crash(step).await;
        self.model.hw = 0;
        self.model.log_start = 0;
        self.reopen(step).await
    }

    /// With the disk down and the log dropped: let the old tasks run into the dead disk, then
    /// crash it (it works again).
    async fn drain_and_crash(&mut self, step: usize) {
        if !self.disk.is_down() {
            self.disk.power_off_after(1);
        }
        for _ in 0..DRAIN_YIELDS {
            sim::yield_once().await;
        }
        let report = self.disk.crash();
        self.armed = false;
        self.stats.crashes += 1;
        self.stats.changes_lost += report.changes_lost;
        self.stats.writes_torn += report.writes_torn;
        self.stats.names_lost += report.names_lost;
        self.note(step, format!("crash: {report:?}"));
    }

    /// The producer sends its next batch, or retries the one not acknowledged yet.
    fn spawn_producer_append(&mut self) -> String {
        if self.producer.inflight {
            return "producer busy".into();
        }
        let (b, retry) = match &self.producer.current {
            Some((b, _)) => (b.clone(), true),
            None => {
                let count = 1 + self.rng.below(5) as i32;
                let b = producer_batch(
                    self.producer.id,
                    0,
                    self.producer.next_seq,
                    count as usize,
                    false,
                    None,
                );
                self.model.sent.insert(identity(&b), count);
                self.producer.current = Some((b.clone(), count));
                (b, false)
            }
        };
        self.producer.inflight = true;
        let log = self.log();
        let results = self.producer.results.clone();
        let now = self.now_ms;
        let ident = identity(&b);
        self.inflight.push(
            rt::spawn_local(async move {
                let r = log.append(b, now).await;
                results.borrow_mut().push((ident, r));
            })
            .detach(),
        );
        format!(
            "producer {} seq {}{}",
            self.producer.id,
            self.producer.next_seq,
            if retry { " (retry)" } else { "" }
        )
    }

    fn spawn_append(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        let records_max = self.rng.pick(&[2, 8, 40]);
        let records = 1 + self.rng.below(records_max) as usize;
        let value_len_max = self.rng.pick(&[16, 300, 3000]);
        let value_len = self.rng.below(value_len_max) as usize;
        let b = make_batch(id, records, value_len, self.now_ms);
        let ident = identity(&b);
        self.model.sent.insert(ident.clone(), records as i32);
        let log = self.log();
        let results = self.results.clone();
        let now = self.now_ms;
        self.inflight.push(
            rt::spawn_local(async move {
                let r = log.append(b, now).await;
                results.borrow_mut().push((ident, r));
            })
            .detach(),
        );
    }

    async fn read_somewhere(&mut self, step: usize) -> Verdict {
        let log = self.log();
        let (start, hw) = (log.log_start_offset(), log.high_watermark());
        let offset = start + self.rng.below((hw - start + 1) as u64) as i64;
        let max_bytes = self.rng.pick(&[1usize, 4096, 64 << 10]);
        match log.read(offset, max_bytes, true).await {
            Ok(data) => {
                self.stats.reads += 1;
                self.note(
                    step,
                    format!("read {offset}: {} batches", data.batches.len()),
                );
                self.model
                    .check_read(offset, &data.batches, data.high_watermark)
            }
            Err(StorageError::Io { .. }) if self.may_fail() => Ok(()),
            // Retention may have moved the start while the read waited to start: fine.
            Err(StorageError::OffsetOutOfRange { .. }) if log.log_start_offset() > start => Ok(()),
            Err(e) => Err(format!("read at {offset} ({start}..{hw}): {e:?}")),
        }
    }

    /// DeleteRecords at a random offset up to the high watermark.
    async fn delete_records(&mut self, step: usize) -> Verdict {
        let log = self.log();
        let (start, hw) = (log.log_start_offset(), log.high_watermark());
        let target = start + self.rng.below((hw - start + 1) as u64) as i64;
        let r = log.delete_records(target).await;
        self.note(step, format!("delete records below {target}: {r:?}"));
        match r {
            Ok(new_start) if new_start >= target && new_start == log.log_start_offset() => Ok(()),
            Ok(new_start) => Err(format!(
                "delete records below {target} moved the log start to {new_start}"
            )),
            Err(StorageError::Io { .. }) if self.may_fail() => {
                // Its checkpoint may be durable: after a crash the log may start at `target`.
                self.model.log_start_max = self.model.log_start_max.max(target);
                Ok(())
            }
            Err(e) => Err(format!("delete records below {target}: {e:?}")),
        }
    }

    /// One random operation.
    async fn step(&mut self, step: usize) -> Verdict {
        self.now_ms += self.rng.below(1000) as i64;
        if self.disk.is_down() {
            return self.crash(step).await;
        }
        match self.rng.below(100) {
            0..=7 => {
                let what = self.spawn_producer_append();
                self.note(step, what);
            }
            8..=39 => {
                let n = 1 + self.rng.below(4) as usize;
                for _ in 0..n.min(INFLIGHT_MAX.saturating_sub(self.inflight.len())) {
                    self.spawn_append();
                }
                self.note(step, format!("append x{n}"));
            }
            40..=64 => self.read_somewhere(step).await?,
            65..=76 => {
                self.settle().await?;
                self.note(step, "settle".into());
            }
            77..=79 => self.delete_records(step).await?,
            80..=84 => {
                let keep = self.rng.pick(&[-1i64, 32 << 10, 128 << 10]);
                let mut config = self.config.clone();
                config.retention_bytes = keep;
                let log = self.log();
                log.set_config(config);
                let r = log.apply_retention(self.now_ms).await;
                self.note(step, format!("retention to {keep} bytes: {r:?}"));
                match r {
                    Ok(_) => {}
                    Err(StorageError::Io { .. }) if self.may_fail() => {
                        // Failed after its checkpoint may have become durable: after a crash
                        // the log may start at any segment base up to the high watermark.
                        self.model.log_start_max =
                            self.model.log_start_max.max(log.high_watermark());
                    }
                    Err(e) => return Err(format!("retention failed: {e:?}")),
                }
            }
            85..=89 => {
                self.settle().await?;
                let r = self.log().close().await;
                self.note(step, format!("close: {r:?}"));
                match r {
                    Ok(()) => {
                        self.log = None;
                        self.model.hw = 0;
                        self.model.log_start = 0;
                        self.reopen(step).await?;
                    }
                    Err(StorageError::Io { .. }) if self.may_fail() => {
                        self.crash(step).await?;
                    }
                    Err(e) => return Err(format!("close failed: {e:?}")),
                }
            }
            90..=94 => {
                let ops = 1 + self.rng.below(60);
                self.disk.power_off_after(ops);
                self.armed = true;
                self.note(step, format!("power off in {ops} disk operations"));
            }
            95..=97 => {
                // Crash while the appends in flight are being written (or right now).
                if !self.armed {
                    self.disk.power_off_after(1 + self.rng.below(30));
                }
                self.crash(step).await?
            }
            _ => {
                for _ in 0..self.rng.below(20) {
                    sim::yield_once().await;
                }
            }
        }
        self.collect()?;
        if let Some(log) = &self.log {
            let log = log.clone();
            self.model.check_offsets(&log)?;
        }
        Ok(())
    }
}

/// Runs one seed on a thread of its own (thread-local state such as the shard's "disk
/// primed" flag starts fresh, so a seed runs the same alone or after others); the trace of
/// its steps is returned with the verdict.
fn run_seed(seed: u64, verbose: bool) -> (Verdict, String, Stats) {
    let result = std::thread::spawn(move || {
        rt::sim::run(seed, async move {
            let mut rng = Rng::new(seed);
            let disk = SimDisk::new(rng.next());
            let _installed = sim::install(&disk);
            let config = LogConfig {
                segment_bytes: rng.pick(&[8u64 << 10, 32 << 10, 256 << 10]),
                index_interval_bytes: rng.pick(&[256u32, 1024, 4096]),
                // The clock advances up to 1 s per step: these roll and expire by time too.
                segment_ms: rng.pick(&[604_800_000i64, 20_000]),
                retention_ms: rng.pick(&[604_800_000i64, 60_000]),
                ..LogConfig::default()
            };
            let faults = if rng.below(2) == 0 {
                Faults::default()
            } else {
                Faults {
                    write_eio_ppm: rng.pick(&[0u32, 5_000, 20_000]),
                    write_enospc_ppm: rng.pick(&[0u32, 5_000, 20_000]),
                    sync_eio_ppm: rng.pick(&[0u32, 5_000, 20_000]),
                    read_eio_ppm: rng.pick(&[0u32, 5_000, 20_000]),
                    preallocate_enospc_ppm: rng.pick(&[0u32, 20_000, 100_000]),
                }
            };
            let latency_steps_max = rng.pick(&[0u64, 2, 4]);
            let latency_rng = Rc::new(RefCell::new(Rng::new(rng.next())));
            disk.set_latency(Some(Rc::new(move |_op| {
                let n = latency_rng.borrow_mut().below(latency_steps_max);
                if n == 0 {
                    return None;
                }
                let fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> = Box::pin(
                    rt::sleep(std::time::Duration::from_micros(n * LATENCY_STEP_US)),
                );
                Some(fut)
            })));
            let mut s = Sim {
                rng,
                disk: disk.clone(),
                dir: Path::new("/sim/topic-0").to_path_buf(),
                config,
                faults: faults.clone(),
                model: Model::default(),
                log: None,
                inflight: Vec::new(),
                results: Rc::new(RefCell::new(Vec::new())),
                next_id: 0,
                now_ms: 1_700_000_000_000,
                trace: String::new(),
                verbose,
                armed: false,
                faults_suspended: false,
                producer: Producer {
                    id: 1000,
                    next_seq: 0,
                    current: None,
                    inflight: false,
                    last_acked: -1,
                    results: Rc::new(RefCell::new(Vec::new())),
                },
                stats: Stats::default(),
            };
            s.note(
                0,
                format!("config {:?} faults {faults:?}", s.config.segment_bytes),
            );
            let mut verdict = s.reopen(0).await;
            disk.set_faults(faults);
            if verdict.is_ok() {
                for step in 1..=STEPS {
                    if let Err(e) = s.step(step).await {
                        verdict = Err(format!("step {step}: {e}"));
                        break;
                    }
                }
            }
            if verdict.is_ok() {
                verdict = s
                    .crash(STEPS + 1)
                    .await
                    .map_err(|e| format!("final crash: {e}"));
            }
            if verdict.is_err() && verbose {
                dump(&disk, &s.dir);
            }
            // Let the appends still in flight finish before the executor goes.
            s.disk.power_off_after(1);
            let _ = s.settle().await;
            s.log = None;
            (verdict, s.trace, s.stats)
        })
    })
    .join();
    match result {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            (
                Err(format!("panicked: {msg}")),
                String::new(),
                Stats::default(),
            )
        }
    }
}

/// Prints the partition directory: each file's size and, for segments, its batches.
fn dump(disk: &SimDisk, dir: &Path) {
    for (name, size) in disk.listing(dir) {
        eprintln!("{name}: {size:?} bytes");
        if !name.ends_with(".log") {
            continue;
        }
        let data = disk.file_content(&dir.join(&name)).unwrap_or_default();
        let mut pos = 0usize;
        while pos + 61 <= data.len() {
            let Some(h) = batch::header(&data[pos..]) else {
                break;
            };
            let len = h.total_len();
            if len < 61 || pos + len as usize > data.len() {
                eprintln!("  @{pos}: no batch (length {len})");
                break;
            }
            let ok = batch::validate(&data[pos..pos + len as usize]).is_ok();
            eprintln!(
                "  @{pos}: {}..={} {len} bytes valid={ok}",
                h.base_offset(),
                h.last_offset()
            );
            pos += len as usize;
        }
    }
}

const SIM: sim_runner::Simulator<Stats> = sim_runner::Simulator {
    name: "storage",
    replay_flag: "--seed",
    run_seed,
};

/// Runs FRESHET_SIM_SEEDS seeds (default [`SEEDS_DEFAULT`]) from FRESHET_SIM_BASE (default 1)
/// and prints `simulation: N seeds passed, F failed` (`sim_runner::seeds`).
#[test]
fn seeds() {
    sim_runner::seeds(&SIM, SEEDS_DEFAULT);
}

/// Replays FRESHET_SIM_SEED (default 1) printing every step.
#[test]
fn replay() {
    sim_runner::replay(&SIM);
}

/// A seed replays exactly: the same steps, disk choices and results twice.
#[test]
fn same_seed_same_run() {
    sim_runner::same_seed_twice(&SIM, [7, 8]);
}

/// Found by the simulator (seed 42): an append that rolls the segment fails after the new
/// segment was created (an EIO on its write, its fdatasync or the checkpoint), the log is
/// closed cleanly, and the checkpoint then names the new, empty segment. Recovery removes that
/// segment and makes the previous one (trusted, not rescanned) active again: its partial
/// last block must be reloaded, or the next append rewrites that block without the end of
/// the last batch, corrupting an acknowledged batch (the partition goes offline at the next
/// open). This fails each disk operation of a rolling append in turn (then closes, or
/// crashes if the close fails), reopens, appends, reopens and reads everything back.
#[test]
fn failed_roll_then_reopen_keeps_every_batch() {
    const OPS_MAX: u64 = 40;
    for fail_at in 1..=OPS_MAX {
        if let Err(e) = rt::sim::run(fail_at, fail_during_roll(fail_at)) {
            panic!("EIO at disk operation {fail_at} of the rolling append: {e}");
        }
    }
}

async fn fail_during_roll(fail_at: u64) -> Verdict {
    let disk = SimDisk::new(fail_at);
    let _installed = sim::install(&disk);
    let dir = Path::new("/roll/p-0");
    let config = LogConfig {
        segment_bytes: 8 << 10,
        index_interval_bytes: 256,
        ..LogConfig::default()
    };
    let open = || PartitionLog::open(dir, config.clone(), TailCache::new(CACHE_BYTES));
    let mut model = Model::default();
    let mut id = 0u64;
    let mut append = |log: Rc<PartitionLog>, model: &mut Model, value_len: usize| {
        id += 1;
        // Odd sizes: batches end inside a 512-byte block.
        let b = make_batch(id, 1, value_len, 1_700_000_000_000);
        model.sent.insert(identity(&b), 1);
        async move { (identity(&b), log.append(b, 1_700_000_000_000).await) }
    };
    let log = Rc::new(open().await.map_err(|e| format!("open: {e:?}"))?);
    // A third of the first segment, then a batch that does not fit: a roll.
    for _ in 0..3 {
        let (b, r) = append(log.clone(), &mut model, 801).await;
        model.append_done(&b, r)?;
    }
    disk.fail_once_after(fail_at);
    model.disk_failed = true;
    let (b, r) = append(log.clone(), &mut model, 6001).await;
    model.append_done(&b, r)?;
    if log.close().await.is_err() {
        drop(log);
        disk.power_off_after(1);
        for _ in 0..DRAIN_YIELDS {
            sim::yield_once().await;
        }
        disk.crash();
    }
    model.disk_failed = false;
    let log = Rc::new(open().await.map_err(|e| format!("reopen: {e:?}"))?);
    // Small batches: they fit in the first segment if it is active again.
    for _ in 0..3 {
        let (b, r) = append(log.clone(), &mut model, 801).await;
        model.append_done(&b, r)?;
    }
    log.close().await.map_err(|e| format!("close: {e:?}"))?;
    drop(log);
    let log = open()
        .await
        .map_err(|e| format!("open after close: {e:?}"))?;
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let data = log
            .read(offset, 1 << 20, true)
            .await
            .map_err(|e| format!("read at {offset}: {e:?}"))?;
        model.check_read(offset, &data.batches, data.high_watermark)?;
        let last = data.batches.last().and_then(|b| batch::header(b));
        offset = last.ok_or("empty read")?.last_offset() + 1;
    }
    for (base, (_, id)) in &model.acked {
        if model.seen.get(base).map(|s| &s.1) != Some(id) {
            return Err(format!("acknowledged batch at {base} lost"));
        }
    }
    Ok(())
}
