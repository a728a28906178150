//! One internal log: the durable, replayed, self-compacting record log under the coordinator's
//! state machines (committed offsets and groups, transactions, cluster metadata).
//!
//! An [`InternalLog`] is a [`PartitionLog`] in `<data_dir>/internal/<name>-0/` (so it is
//! group-committed, fdatasync'd, CRC-checked and recovered like any partition) plus what every
//! internal log needs on top of it:
//! - **Load by replay** ([`InternalLog::open`]): every record from the log start to the high
//!   watermark is decoded by the log's [`RecordCodec`] and handed, in order, to a callback that
//!   applies it to the caller's state machine. A batch that does not decode fails the load
//!   (`CorruptMessage`): the state is never rebuilt from part of a log.
//! - **Durable append** ([`InternalLog::append`]): the records are encoded into ONE record
//!   batch when they fit `max_message_bytes` (all or nothing after a crash: recovery keeps a
//!   prefix of whole batches, so an append written as several batches could come back in
//!   part, as the simulator found: half an OffsetCommit); only a larger append (many group
//!   snapshots, tombstones of many expired offsets or ids) is split into batches of at most
//!   [`InternalLogLimits::batch_records_max`] records and about
//!   [`InternalLogLimits::batch_bytes_max`] bytes, each of them whole after a crash. The
//!   `on_durable` callback runs only once the append is fdatasync'd: a change applied there is
//!   never seen before it would survive a crash.
//! - **Compaction** ([`InternalLog::compact_if_due`]): once the log holds more than
//!   `compact_records_min` records and more than `compact_ratio` times the live ones, a
//!   snapshot of the live state (records that rebuild it on replay) is appended in one append
//!   of record batches of at most [`InternalLogLimits::batch_records_max`] records and about
//!   [`InternalLogLimits::batch_bytes_max`] bytes (a part of it left by a crash replays to the
//!   same state: it only repeats live records) and the log start is moved past everything
//!   before it. Appends hold a shared lock and
//!   compaction an exclusive one, so no append is between its write and its `on_durable` while
//!   the snapshot is taken: every record below the snapshot is superseded by it. A crash
//!   between the snapshot's append and the move of the log start leaves the old records and
//!   the snapshot, which replay to the same state.
//!
//! Lives on the coordinator shard (shard 0) only; created at startup by the coordinator that
//! owns it, closed at shutdown. This is the log that the cluster issue puts under Raft: the
//! records of each log are explicit types (its codec's `Record`), and replay is a pure apply.
//!
//! Bounds: a replay read is at most [`REPLAY_READ_BYTES_MAX`]; a batch at most
//! `max_message_bytes` (the append fails with MESSAGE_TOO_LARGE past it, nothing written).

use std::cell::Cell;
use std::marker::PhantomData;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;

use crate::storage::{LogConfig, PartitionLog, StorageError, TailCache};

/// Bytes read per call while replaying an internal log at startup.
pub const REPLAY_READ_BYTES_MAX: usize = 1 << 20;

/// How an internal log's records are written and read: the explicit record type of that log
/// and its encoding into Kafka record batches.
pub trait RecordCodec {
    /// One record of the log (a change, a tombstone or a piece of a snapshot).
    type Record;
    /// The log's name in messages (e.g. `"offsets log"`).
    const NAME: &'static str;
    /// One record batch holding `records` (never empty), stamped with `now_ms`.
    fn encode_batch(records: &[Self::Record], now_ms: i64) -> Result<Bytes, String>;
    /// The records of `bytes` (one or more whole batches) and the offset after the last one.
    fn decode_batches(bytes: Bytes) -> Result<(Vec<Self::Record>, i64), String>;
    /// About how many bytes `record` takes in a batch (to split appends into batches).
    fn record_bytes(record: &Self::Record) -> usize;
}

/// The limits and compaction policy of one internal log.
#[derive(Clone, Copy, Debug)]
pub struct InternalLogLimits {
    /// No compaction while the log holds at most this many records...
    pub compact_records_min: usize,
    /// ... or at most this many times the live records.
    pub compact_ratio: usize,
    /// Records per batch of a compaction snapshot or of an append too large for one batch.
    pub batch_records_max: usize,
    /// Bytes of record data per batch of a compaction snapshot or of an append too large for
    /// one batch (estimated by [`RecordCodec::record_bytes`]).
    pub batch_bytes_max: usize,
    /// The largest batch the log accepts (`max.message.bytes` of its partition log).
    pub max_message_bytes: u32,
    /// Segment size: small, so the segments compaction leaves behind are deleted soon.
    pub segment_bytes: u64,
}

/// The internal log's directory `<data_dir>/internal/<name>-0/`. It cannot collide with a
/// topic's (topic directories sit directly in the data directory).
pub fn internal_log_dir(data_dir: &Path, name: &str) -> std::path::PathBuf {
    data_dir.join("internal").join(format!("{name}-0"))
}

/// The payload of one append of `records` (not empty) within `limits`: ONE record batch when
/// it fits `max_message_bytes` (all or nothing after a crash), else batches of at most
/// `batch_records_max` records and about `batch_bytes_max` bytes, each whole after a crash.
/// Also what a group coordinator appends to its replicated `__consumer_offsets` partition.
pub fn encode_append<C: RecordCodec>(
    limits: &InternalLogLimits,
    records: &[C::Record],
    now_ms: i64,
) -> Result<Bytes, StorageError> {
    match C::encode_batch(records, now_ms) {
        Ok(batch) if batch.len() <= limits.max_message_bytes as usize => Ok(batch),
        // Larger than one batch may be: split (a crash may keep a prefix of the batches).
        Ok(_) => encode_chunked::<C>(limits, records, now_ms),
        Err(e) => Err(StorageError::InvalidRecord(format!("{}: {e}", C::NAME))),
    }
}

/// `records` as record batches within `limits`, concatenated (one append).
fn encode_chunked<C: RecordCodec>(
    limits: &InternalLogLimits,
    records: &[C::Record],
    now_ms: i64,
) -> Result<Bytes, StorageError> {
    let mut payload = bytes::BytesMut::new();
    for chunk in chunks::<C>(limits, records) {
        let batch = C::encode_batch(chunk, now_ms)
            .map_err(|e| StorageError::InvalidRecord(format!("{}: {e}", C::NAME)))?;
        payload.extend_from_slice(&batch);
    }
    Ok(payload.freeze())
}

/// Splits `records` into runs of at most `batch_records_max` records and about
/// `batch_bytes_max` bytes (a run has at least one record), one batch each.
fn chunks<'r, C: RecordCodec>(
    limits: &InternalLogLimits,
    records: &'r [C::Record],
) -> Vec<&'r [C::Record]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, r) in records.iter().enumerate() {
        let n = C::record_bytes(r);
        if i > start
            && (i - start >= limits.batch_records_max
                || bytes.saturating_add(n) > limits.batch_bytes_max)
        {
            out.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(n);
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// An open internal log; see the module doc.
pub struct InternalLog<C: RecordCodec> {
    log: PartitionLog,
    limits: InternalLogLimits,
    /// Records from the log start (the compaction trigger).
    records: Cell<usize>,
    /// Appends hold it shared; compaction holds it exclusively.
    write_lock: crate::rt::sync::RwLock<()>,
    codec: PhantomData<C>,
}

impl<C: RecordCodec> InternalLog<C> {
    /// Opens (recovers) the log in `dir` and replays it: `apply` gets every record in log
    /// order. Returns the open log; the caller compacts it if due ([`Self::compact_if_due`]).
    pub async fn open(
        dir: &Path,
        limits: InternalLogLimits,
        cache: Rc<TailCache>,
        mut apply: impl FnMut(C::Record),
    ) -> Result<InternalLog<C>, StorageError> {
        assert!(limits.batch_records_max > 0 && limits.compact_ratio > 0);
        let config = LogConfig {
            retention_ms: -1,
            segment_bytes: limits.segment_bytes,
            max_message_bytes: limits.max_message_bytes,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir, config, cache).await?;
        let mut offset = log.log_start_offset();
        let mut records = 0usize;
        while offset < log.high_watermark() {
            let data = log.read(offset, REPLAY_READ_BYTES_MAX, true).await?;
            if data.batches.is_empty() {
                break;
            }
            for batch in data.batches {
                let (decoded, next) = C::decode_batches(batch)
                    .map_err(|e| StorageError::CorruptMessage(format!("{}: {e}", C::NAME)))?;
                records += decoded.len();
                decoded.into_iter().for_each(&mut apply);
                // A batch left empty by compaction still moves the replay on.
                offset = offset.max(next);
            }
            crate::rt::yield_if_needed().await;
        }
        Ok(InternalLog {
            log,
            limits,
            records: Cell::new(records),
            write_lock: crate::rt::sync::RwLock::new(()),
            codec: PhantomData,
        })
    }

    /// Records in the log from its start (superseded ones included).
    pub fn records(&self) -> usize {
        self.records.get()
    }

    /// The underlying log's (start, high watermark) offsets.
    pub fn offsets(&self) -> (i64, i64) {
        (self.log.log_start_offset(), self.log.high_watermark())
    }

    /// Whether superseded records dominate a log whose state has `live` records.
    pub fn is_compaction_due(&self, live: usize) -> bool {
        let records = self.records.get();
        records > self.limits.compact_records_min
            && records > self.limits.compact_ratio.saturating_mul(live)
    }

    /// `records` as record batches within the limits, concatenated (one append).
    fn encode(&self, records: &[C::Record], now_ms: i64) -> Result<Bytes, StorageError> {
        encode_chunked::<C>(&self.limits, records, now_ms)
    }

    /// Appends `records` durably, as one record batch if they fit `max_message_bytes` (all
    /// or nothing after a crash; else as several, each whole), then hands them to
    /// `on_durable` (before any compaction can take a snapshot). Nothing is written for no
    /// records. On an error nothing is applied (the records may or may not be in the log:
    /// replay after a restart decides).
    pub async fn append(
        &self,
        records: Vec<C::Record>,
        now_ms: i64,
        on_durable: impl FnOnce(Vec<C::Record>),
    ) -> Result<(), StorageError> {
        if records.is_empty() {
            on_durable(records);
            return Ok(());
        }
        let payload = encode_append::<C>(&self.limits, &records, now_ms)?;
        let Ok(_shared) = self.write_lock.read().await else {
            return Err(StorageError::Closed);
        };
        self.log.append(payload, now_ms).await?;
        self.records.set(self.records.get() + records.len());
        on_durable(records);
        Ok(())
    }

    /// Compacts the log if superseded records dominate it: `live` counts the live records now,
    /// `snapshot` returns the records that rebuild the live state. `snapshot` is called with the
    /// exclusive lock held, right before its append is issued. Returns whether it compacted.
    pub async fn compact_if_due(
        &self,
        live: impl Fn() -> usize,
        snapshot: impl FnOnce() -> Vec<C::Record>,
    ) -> Result<bool, StorageError> {
        if !self.is_compaction_due(live()) {
            return Ok(false);
        }
        let Ok(_exclusive) = self.write_lock.write().await else {
            return Ok(false);
        };
        // Appends may have run while the lock was awaited: check again.
        if !self.is_compaction_due(live()) {
            return Ok(false);
        }
        self.compact_locked(snapshot).await?;
        Ok(true)
    }

    /// Compacts now, whatever the ratio (tests, and [`Self::compact_if_due`]).
    pub async fn compact(
        &self,
        snapshot: impl FnOnce() -> Vec<C::Record>,
    ) -> Result<(), StorageError> {
        let Ok(_exclusive) = self.write_lock.write().await else {
            return Err(StorageError::Closed);
        };
        self.compact_locked(snapshot).await
    }

    /// The snapshot's append and the move of the log start; the caller holds the lock
    /// exclusively.
    async fn compact_locked(
        &self,
        snapshot: impl FnOnce() -> Vec<C::Record>,
    ) -> Result<(), StorageError> {
        let before = self.log.high_watermark() - self.log.log_start_offset();
        let records = snapshot();
        let now = crate::rt::unix_time_ms();
        let payload = self.encode(&records, now)?;
        // One append: the snapshot is on disk entirely or not at all.
        let start = if payload.is_empty() {
            self.log.high_watermark()
        } else {
            self.log.append(payload, now).await?.base_offset
        };
        self.log.delete_records(start).await?;
        self.records.set(records.len());
        tracing::info!(
            records_before = before,
            records_after = records.len(),
            "{} compacted",
            C::NAME
        );
        Ok(())
    }

    /// Flushes and closes the log (shutdown).
    pub async fn close(&self) -> Result<(), StorageError> {
        self.log.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy log of (key, value) strings: "k=v", a tombstone "k=".
    struct KvCodec;

    impl RecordCodec for KvCodec {
        type Record = (String, String);
        const NAME: &'static str = "kv log";

        fn encode_batch(records: &[(String, String)], now_ms: i64) -> Result<Bytes, String> {
            let records: Vec<_> = records
                .iter()
                .map(|(k, v)| (None, Some(Bytes::from(format!("{k}={v}"))), now_ms))
                .collect();
            freshet_protocol::batch::encode_batch(
                &records,
                freshet_protocol::batch::Compression::None,
            )
        }

        fn decode_batches(mut bytes: Bytes) -> Result<(Vec<(String, String)>, i64), String> {
            use bytes::Buf;
            let mut out = Vec::new();
            let mut next = -1;
            while bytes.has_remaining() {
                let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
                    .map_err(|e| e.to_string())?;
                for r in set.records {
                    next = r.offset + 1;
                    let text = String::from_utf8(r.value.ok_or("no value")?.to_vec())
                        .map_err(|e| e.to_string())?;
                    let (k, v) = text.split_once('=').ok_or("no =")?;
                    out.push((k.to_string(), v.to_string()));
                }
            }
            Ok((out, next))
        }

        fn record_bytes((k, v): &(String, String)) -> usize {
            k.len() + v.len() + 16
        }
    }

    const LIMITS: InternalLogLimits = InternalLogLimits {
        compact_records_min: 50,
        compact_ratio: 2,
        batch_records_max: 10,
        batch_bytes_max: 4096,
        max_message_bytes: 64 * 1024,
        segment_bytes: 64 * 1024,
    };

    fn run<T: 'static>(fut: impl std::future::Future<Output = T> + 'static) -> T {
        crate::rt::run_on_new_executor(1 << 20, 64, fut).expect("executor")
    }

    type Table = std::collections::BTreeMap<String, String>;

    fn apply(table: &mut Table, (k, v): (String, String)) {
        if v.is_empty() {
            table.remove(&k);
        } else {
            table.insert(k, v);
        }
    }

    async fn open(dir: &Path, cache: Rc<TailCache>) -> (InternalLog<KvCodec>, Table) {
        let mut table = Table::new();
        let log = InternalLog::<KvCodec>::open(dir, LIMITS, cache, |r| apply(&mut table, r))
            .await
            .unwrap();
        (log, table)
    }

    /// Appends are applied only once durable and replay to the same table after a reopen; an
    /// append that fails (a batch over `max_message_bytes`) applies nothing; compaction keeps
    /// the log within `compact_ratio` times the live records and replays to the same table.
    #[test]
    fn replay_durable_apply_and_compaction() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("internal").join("kv-0");
        run(async move {
            let cache = TailCache::new(1 << 20);
            let (log, mut table) = open(&dir, cache.clone()).await;
            assert!(table.is_empty());
            for round in 0..20 {
                let records = (0..5)
                    .map(|k| (format!("k{k}"), format!("v{round}")))
                    .collect();
                let mut applied = false;
                log.append(records, 1, |rs| {
                    applied = true;
                    rs.into_iter().for_each(|r| apply(&mut table, r));
                })
                .await
                .unwrap();
                assert!(applied);
            }
            log.append(vec![("k4".into(), String::new())], 1, |rs| {
                rs.into_iter().for_each(|r| apply(&mut table, r))
            })
            .await
            .unwrap();
            assert_eq!(log.records(), 101);
            // One record larger than a batch may be: refused whole, nothing applied.
            let huge = vec![("big".to_string(), "x".repeat(100 * 1024))];
            let refused = log
                .append(huge, 1, |_| panic!("applied a failed append"))
                .await;
            assert!(matches!(refused, Err(StorageError::MessageTooLarge { .. })));
            assert_eq!(log.records(), 101);
            log.close().await.unwrap();

            let (log, replayed) = open(&dir, cache.clone()).await;
            assert_eq!(replayed, table);
            assert_eq!(replayed.len(), 4);
            assert!(log.is_compaction_due(replayed.len()));
            let snapshot = || replayed.clone().into_iter().collect::<Vec<_>>();
            assert!(log.compact_if_due(|| 4, snapshot).await.unwrap());
            assert_eq!(log.records(), 4);
            let (start, end) = log.offsets();
            assert_eq!(
                end - start,
                4,
                "the log start moved past the superseded records"
            );
            assert!(!log.compact_if_due(|| 4, Vec::new).await.unwrap());
            log.close().await.unwrap();

            let (log, again) = open(&dir, cache).await;
            assert_eq!(again, table);
            assert_eq!(log.records(), 4);
            log.close().await.unwrap();
        });
    }

    /// An append that fits one batch is one batch (all or nothing after a crash); one larger
    /// than `max_message_bytes` is split into batches and still written whole.
    #[test]
    fn an_append_is_one_batch_unless_too_large_for_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("internal").join("kv-0");
        run(async move {
            let cache = TailCache::new(1 << 20);
            let (log, mut table) = open(&dir, cache.clone()).await;
            let apply_all = |table: &mut Table, rs: Vec<(String, String)>| {
                rs.into_iter().for_each(|r| apply(table, r))
            };
            // 30 records: three batches by `batch_records_max`, but they fit one.
            let small: Vec<_> = (0..30).map(|k| (format!("s{k}"), "v".into())).collect();
            log.append(small, 1, |rs| apply_all(&mut table, rs))
                .await
                .unwrap();
            assert_eq!(log.offsets(), (0, 30));
            let batches = log.log.read(0, 1 << 20, true).await.unwrap().batches;
            assert_eq!(
                batches.len(),
                1,
                "an append that fits one batch is one batch"
            );
            // 20 records of 5 KiB: 100 KiB, more than one batch may hold (64 KiB).
            let large: Vec<_> = (0..20)
                .map(|k| (format!("l{k}"), "x".repeat(5 << 10)))
                .collect();
            log.append(large, 1, |rs| apply_all(&mut table, rs))
                .await
                .unwrap();
            assert_eq!(log.offsets(), (0, 50));
            log.close().await.unwrap();
            let (log, replayed) = open(&dir, cache).await;
            assert_eq!(replayed, table);
            assert_eq!(replayed.len(), 50);
            log.close().await.unwrap();
        });
    }
}
