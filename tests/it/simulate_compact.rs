//! The deterministic simulator of log compaction (issue 11): a seeded run drives one
//! compacted [`PartitionLog`] (`cleanup.policy=compact`, small segments) on a [`SimDisk`]
//! inside `rt`'s simulated executor, with concurrent keyed appends (group commit), cleaning
//! rounds (the shard cleaner's `PartitionLog::clean`: offset map, filter, crash-safe swap,
//! cleaner checkpoint), closes, crashes (now, or armed a random number of disk operations
//! ahead: inside a flush, a swap or the completion of an interrupted swap at open) and I/O
//! faults, and checks the log against a model after every cleaning round and every reopen.
//! The storage simulator (`simulate.rs`) checks the log without compaction, where batches are
//! never rewritten; this one checks what compaction may and may not do to them.
//!
//! # The checks
//! - No torn or corrupt batch served: every batch read passes `cleaner::validate_stored`
//!   (framing, CRC-32C) and decodes; no batch is served past the high watermark.
//! - Offsets monotonic: batches and records come in strictly increasing offsets (compaction
//!   leaves gaps, never reorders); an acknowledged offset keeps its key and value (a record
//!   served at an acknowledged offset is that record) and is never given to another append.
//! - Nothing invented: every record served is one that was sent, with its key.
//! - The latest value per key survives: for every key, its last acknowledged record is in the
//!   log unless a later record of that key is (written but not acknowledged, then found
//!   durable): nothing acknowledged and not superseded is lost, across crashes in any step of
//!   a round. A tombstone (one record in six) may be removed once its delete horizon passed
//!   (`delete.retention.ms` is 0, 3 s or a day; the clock moves up to 1 s a step), but then
//!   no older record of its key is left: a deleted key never comes back.
//! - After a reopen the high watermark is the log end and past every acknowledged offset.
//! - An append or a round fails only with an I/O error, and only when the disk failed.
//!
//! Seeds: `bash tests/simulate.sh N` runs N of them too; one seed:
//! `bash tests/simulate.sh --compact-seed S` (= `FRESHET_SIM_SEED=S cargo test --test it --
//! simulate_compact::replay --nocapture`). Not simulated here: idempotent producers and transactions in a compacted log, retention with
//! `cleanup.policy=compact,delete`.

use crate::sim_runner;
use crate::simulate::Rng;
use bytes::Bytes;
use freshet::rt;
use freshet::storage::cleaner::{self, LogCleanState, OffsetMap};
use freshet::storage::io::sim::{self, Faults, SimDisk};
use freshet::storage::{AppendInfo, LogConfig, PartitionLog, StorageError, TailCache};
use freshet_protocol::batch::{encode_batch, Compression, NewRecord};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Steps per seed.
const STEPS: usize = 120;
/// Seeds run by `seeds` when FRESHET_SIM_SEEDS is not set.
const SEEDS_DEFAULT: u64 = 20;
/// Keys written (few, so most records are superseded).
const KEYS: u64 = 12;
/// Appends in flight at most.
const INFLIGHT_MAX: usize = 6;
/// Tail cache of the log.
const CACHE_BYTES: usize = 64 << 10;
/// Memory of the cleaner's offset map (small: some rounds stop when it fills).
const OFFSET_MAP_BYTES: usize = 48 * 64;
/// Yields after dropping a crashed log, so its remaining tasks run into the dead disk.
const DRAIN_YIELDS: usize = 200;
/// Opens tried after a crash before giving up.
const REOPEN_ATTEMPTS_MAX: usize = 10;
/// Latency of a disk operation: 0 to 3 times this, on the virtual clock.
const LATENCY_STEP_US: u64 = 50;

type Verdict = Result<(), String>;

/// One append's records (key, value) and its result.
type Results = Rc<RefCell<Vec<(Vec<(String, String)>, Result<AppendInfo, StorageError>)>>>;

/// What the runs did, summed over seeds.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    appends_acked: u64,
    appends_failed: u64,
    rounds: u64,
    segments_cleaned: u64,
    records_dropped: u64,
    rounds_failed: u64,
    crashes: u64,
    /// Crashes that left a committed `.swap` file for the next open to complete.
    swaps_interrupted: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.appends_acked += o.appends_acked;
        self.appends_failed += o.appends_failed;
        self.rounds += o.rounds;
        self.segments_cleaned += o.segments_cleaned;
        self.records_dropped += o.records_dropped;
        self.rounds_failed += o.rounds_failed;
        self.crashes += o.crashes;
        self.swaps_interrupted += o.swaps_interrupted;
    }
}

enum OpenFailed {
    Down,
    Fault,
    Broken(String),
}

struct Sim {
    rng: Rng,
    disk: SimDisk,
    dir: PathBuf,
    config: LogConfig,
    faults: Faults,
    log: Option<Rc<PartitionLog>>,
    clean_state: LogCleanState,
    map: OffsetMap,
    /// Acknowledged records: offset -> (key, value).
    acked: BTreeMap<i64, (String, String)>,
    /// Every value sent, with its key (values are unique).
    sent: HashMap<String, String>,
    /// Per key, tombstones sent and not acknowledged (in flight, or failed: they may be in the
    /// log, and may even have been removed after their horizon).
    tombstones_unknown: HashMap<String, u32>,
    inflight: Vec<rt::JoinHandle<()>>,
    results: Results,
    next_value: u64,
    now_ms: i64,
    trace: String,
    verbose: bool,
    armed: bool,
    faults_suspended: bool,
    stats: Stats,
}

impl Sim {
    fn note(&mut self, step: usize, what: String) {
        if self.verbose {
            eprintln!("step {step}: {what}");
        }
        let _ = writeln!(self.trace, "{step} {what}");
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

    fn may_fail(&self) -> bool {
        self.faults_on() || self.armed || self.disk.is_down()
    }

    fn log(&self) -> Rc<PartitionLog> {
        self.log.clone().expect("log open")
    }

    fn spawn_append(&mut self) {
        let n = 1 + self.rng.below(4);
        let mut kv = Vec::new();
        for _ in 0..n {
            let key = format!("k{}", self.rng.below(KEYS));
            // A tombstone now and then: the model's value "" (a value is never empty).
            if self.rng.below(6) == 0 {
                *self.tombstones_unknown.entry(key.clone()).or_default() += 1;
                kv.push((key, String::new()));
                continue;
            }
            let value = format!("v{}", self.next_value);
            self.next_value += 1;
            self.sent.insert(value.clone(), key.clone());
            kv.push((key, value));
        }
        let records: Vec<NewRecord> = kv
            .iter()
            .map(|(k, v)| {
                (
                    Some(Bytes::from(k.clone())),
                    (!v.is_empty()).then(|| Bytes::from(v.clone())),
                    self.now_ms,
                )
            })
            .collect();
        let b = encode_batch(&records, Compression::None).expect("encode");
        let log = self.log();
        let results = self.results.clone();
        let now = self.now_ms;
        self.inflight.push(
            rt::spawn_local(async move {
                let r = log.append(b, now).await;
                results.borrow_mut().push((kv, r));
            })
            .detach(),
        );
    }

    /// Feeds finished appends to the model.
    fn collect(&mut self) -> Verdict {
        let may_fail = self.may_fail();
        let done: Vec<_> = self.results.borrow_mut().drain(..).collect();
        for (kv, result) in done {
            match result {
                Ok(info) => {
                    self.stats.appends_acked += 1;
                    if info.last_offset - info.base_offset + 1 != kv.len() as i64 {
                        return Err(format!("append of {} records got {info:?}", kv.len()));
                    }
                    for (i, r) in kv.into_iter().enumerate() {
                        let offset = info.base_offset + i as i64;
                        if r.1.is_empty() {
                            if let Some(n) = self.tombstones_unknown.get_mut(&r.0) {
                                *n -= 1;
                            }
                        }
                        if let Some(old) = self.acked.insert(offset, r.clone()) {
                            return Err(format!(
                                "acknowledged offset {offset} given again: {old:?} then {r:?}"
                            ));
                        }
                    }
                }
                Err(StorageError::Io { .. }) if may_fail => self.stats.appends_failed += 1,
                Err(e) => return Err(format!("append failed with {e:?} (disk failed: false)")),
            }
        }
        Ok(())
    }

    async fn settle(&mut self) -> Verdict {
        for t in std::mem::take(&mut self.inflight) {
            t.await;
        }
        self.collect()
    }

    /// Reads the whole log and checks it against the model (see the module doc). Long (~85
    /// lines): one pass over the log, each check beside the data it reads.
    async fn check_log(&self, log: &PartitionLog) -> Result<(), StorageError> {
        let fail = |why: String| StorageError::CorruptMessage(why);
        let (start, hw) = (log.log_start_offset(), log.high_watermark());
        let mut offset = start;
        let mut last_seen = -1i64;
        let mut present: BTreeMap<i64, (String, String)> = BTreeMap::new();
        while offset < hw {
            let data = log.read(offset, 64 << 10, true).await?;
            if data.batches.is_empty() {
                return Err(fail(format!("no batch at {offset} below hw {hw}")));
            }
            for b in &data.batches {
                let h = cleaner::validate_stored(b)
                    .map_err(|e| fail(format!("served a corrupt batch: {e:?}")))?;
                if h.base_offset() <= last_seen || h.last_offset() < h.base_offset() {
                    return Err(fail(format!(
                        "batch {}..={} after offset {last_seen}",
                        h.base_offset(),
                        h.last_offset()
                    )));
                }
                if h.last_offset() >= data.high_watermark {
                    return Err(fail(format!(
                        "batch {}..={} past the high watermark {}",
                        h.base_offset(),
                        h.last_offset(),
                        data.high_watermark
                    )));
                }
                last_seen = h.last_offset();
                offset = h.last_offset() + 1;
                let mut bytes = b.clone();
                let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
                    .map_err(|e| fail(format!("undecodable batch: {e}")))?;
                let mut prev = h.base_offset() - 1;
                for r in set.records {
                    let text = |b: Option<Bytes>| {
                        b.map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default()
                    };
                    let (k, v) = (text(r.key), text(r.value));
                    if r.offset <= prev || r.offset > h.last_offset() {
                        return Err(fail(format!("record offset {} out of order", r.offset)));
                    }
                    prev = r.offset;
                    let tombstone = v.is_empty() && k.starts_with('k');
                    if !tombstone && self.sent.get(&v) != Some(&k) {
                        return Err(fail(format!("served {k}={v} that was never sent")));
                    }
                    if let Some(a) = self.acked.get(&r.offset) {
                        if *a != (k.clone(), v.clone()) {
                            return Err(fail(format!(
                                "offset {} holds {k}={v}, acknowledged as {a:?}",
                                r.offset
                            )));
                        }
                    }
                    present.insert(r.offset, (k, v));
                }
            }
        }
        // The latest acknowledged record of each key survives unless superseded in the log; a
        // tombstone may go once its delete horizon passed, but then no older value of its key
        // may be left (a deleted key never comes back).
        let mut latest: BTreeMap<&str, (i64, bool)> = BTreeMap::new();
        for (&o, (k, v)) in &self.acked {
            latest.insert(k, (o, v.is_empty()));
        }
        for (k, (o, tombstone)) in latest {
            let superseded = present.range(o + 1..).any(|(_, (pk, _))| pk == k);
            if superseded || present.contains_key(&o) || o < start {
                continue;
            }
            // A tombstone not acknowledged may be after it, then removed after its horizon.
            let maybe_deleted = self.tombstones_unknown.get(k).is_some_and(|&n| n > 0);
            if !tombstone && !maybe_deleted {
                return Err(fail(format!(
                    "the latest acknowledged record of {k} (offset {o}) is gone (log {start}..{hw})"
                )));
            }
            if let Some((old, _)) = present.range(..o).find(|(_, (pk, _))| pk == k) {
                return Err(fail(format!(
                    "{k} deleted at offset {o} (tombstone removed) came back with offset {old}"
                )));
            }
        }
        Ok(())
    }

    async fn reopen(&mut self, step: usize) -> Verdict {
        self.faults_suspended = false;
        for _ in 0..REOPEN_ATTEMPTS_MAX {
            let r = self.try_reopen(step).await;
            self.faults_suspended = false;
            self.disk.set_faults(self.faults.clone());
            match r {
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

    fn open_error(&self, e: StorageError) -> OpenFailed {
        match e {
            StorageError::Io { .. } if self.disk.is_down() => OpenFailed::Down,
            StorageError::Io { .. } if self.faults_on() && !self.faults_suspended => {
                OpenFailed::Fault
            }
            e => OpenFailed::Broken(format!("after open: {e:?}")),
        }
    }

    async fn try_reopen(&mut self, step: usize) -> Result<(), OpenFailed> {
        let log = PartitionLog::open(&self.dir, self.config.clone(), TailCache::new(CACHE_BYTES))
            .await
            .map_err(|e| self.open_error(e))?;
        let (hw, leo) = (log.high_watermark(), log.log_end_offset());
        if hw != leo {
            return Err(OpenFailed::Broken(format!(
                "after open hw {hw} != log end {leo}"
            )));
        }
        if let Some((&o, _)) = self.acked.iter().next_back() {
            if o >= hw {
                return Err(OpenFailed::Broken(format!(
                    "acknowledged offset {o} lost: high watermark {hw}"
                )));
            }
        }
        self.check_log(&log).await.map_err(|e| self.open_error(e))?;
        self.note(
            step,
            format!(
                "reopened: log {}..{hw}, {} segments",
                log.log_start_offset(),
                log.segment_count()
            ),
        );
        self.clean_state = LogCleanState::default();
        self.log = Some(Rc::new(log));
        Ok(())
    }

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
        let swaps = self.disk.listing(&self.dir);
        if swaps.iter().any(|(name, _)| name.ends_with(".swap")) {
            self.stats.swaps_interrupted += 1;
        }
        self.note(step, format!("crash: {report:?}"));
    }

    async fn crash(&mut self, step: usize) -> Verdict {
        if !self.disk.is_down() {
            self.disk.power_off_after(1);
        }
        self.armed = true;
        self.settle().await?;
        self.log = None;
        self.drain_and_crash(step).await;
        self.reopen(step).await
    }

    /// One cleaning round, then the whole log checked.
    async fn clean(&mut self, step: usize) -> Verdict {
        let log = self.log();
        let force = self.rng.below(2) == 0;
        let r = log
            .clean(&mut self.clean_state, &mut self.map, self.now_ms, force)
            .await;
        self.note(step, format!("clean (force {force}): {r:?}"));
        match r {
            Ok(Some(report)) => {
                self.stats.rounds += 1;
                self.stats.segments_cleaned += report.segments_cleaned as u64;
                self.stats.records_dropped += report.records_read - report.records_kept;
            }
            Ok(None) => {}
            Err(StorageError::Io { .. }) if self.may_fail() => {
                self.stats.rounds_failed += 1;
                return self.crash(step).await;
            }
            Err(e) => return Err(format!("cleaning failed with {e:?}")),
        }
        match self.check_log(&log).await {
            Ok(()) => Ok(()),
            Err(StorageError::Io { .. }) if self.may_fail() => Ok(()),
            Err(e) => Err(format!("after cleaning: {e:?}")),
        }
    }

    async fn step(&mut self, step: usize) -> Verdict {
        self.now_ms += self.rng.below(1000) as i64;
        if self.disk.is_down() {
            return self.crash(step).await;
        }
        match self.rng.below(100) {
            0..=39 => {
                let n = 1 + self.rng.below(3) as usize;
                for _ in 0..n.min(INFLIGHT_MAX.saturating_sub(self.inflight.len())) {
                    self.spawn_append();
                }
                self.note(step, format!("append x{n}"));
            }
            40..=54 => {
                self.settle().await?;
                self.note(step, "settle".into());
            }
            55..=74 => self.clean(step).await?,
            75..=80 => {
                self.settle().await?;
                let r = self.log().close().await;
                self.note(step, format!("close: {r:?}"));
                match r {
                    Ok(()) => {
                        self.log = None;
                        self.reopen(step).await?;
                    }
                    Err(StorageError::Io { .. }) if self.may_fail() => self.crash(step).await?,
                    Err(e) => return Err(format!("close failed: {e:?}")),
                }
            }
            81..=89 => {
                let ops = 1 + self.rng.below(60);
                self.disk.power_off_after(ops);
                self.armed = true;
                self.note(step, format!("power off in {ops} disk operations"));
            }
            90..=94 => self.crash(step).await?,
            _ => {
                for _ in 0..self.rng.below(20) {
                    sim::yield_once().await;
                }
            }
        }
        self.collect()
    }
}

/// Runs one seed on a thread of its own. Long (~100 lines): the seed's whole setup (config,
/// faults, latency hook, state) and run, read top to bottom as in `simulate::run_seed`.
fn run_seed(seed: u64, verbose: bool) -> (Verdict, String, Stats) {
    let result = std::thread::spawn(move || {
        rt::sim::run(seed, async move {
            let mut rng = Rng::new(seed);
            let disk = SimDisk::new(rng.next());
            let _installed = sim::install(&disk);
            let config = LogConfig {
                segment_bytes: rng.pick(&[1u64 << 10, 2 << 10, 8 << 10]),
                index_interval_bytes: rng.pick(&[128u32, 1024]),
                cleanup_compact: true,
                cleanup_delete: false,
                min_cleanable_dirty_ratio: rng.pick(&[0.0f64, 0.5]),
                // The clock advances up to 1 s per step: tombstones' horizons pass too.
                delete_retention_ms: rng.pick(&[0i64, 3_000, 86_400_000]),
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
            let latency_rng = Rc::new(RefCell::new(Rng::new(rng.next())));
            let latency_steps_max = rng.pick(&[0u64, 4]);
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
                dir: Path::new("/sim/compacted-0").to_path_buf(),
                config,
                faults: faults.clone(),
                log: None,
                clean_state: LogCleanState::default(),
                map: OffsetMap::with_memory(OFFSET_MAP_BYTES),
                acked: BTreeMap::new(),
                sent: HashMap::new(),
                tombstones_unknown: HashMap::new(),
                inflight: Vec::new(),
                results: Rc::new(RefCell::new(Vec::new())),
                next_value: 0,
                now_ms: 1_700_000_000_000,
                trace: String::new(),
                verbose,
                armed: false,
                faults_suspended: false,
                stats: Stats::default(),
            };
            s.note(
                0,
                format!("segment {} bytes, {faults:?}", s.config.segment_bytes),
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

const SIM: sim_runner::Simulator<Stats> = sim_runner::Simulator {
    name: "compaction",
    replay_flag: "--compact-seed",
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

/// A seed replays exactly.
#[test]
fn same_seed_same_run() {
    sim_runner::same_seed_twice(&SIM, [3, 4]);
}
