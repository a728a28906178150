//! The metadata quorum's durable Raft log: raft-rs's [`Storage`] over a journal on the storage
//! engine.
//!
//! [`RaftLog`] keeps, in memory, what raft-rs reads through [`Storage`] (the hard state, the
//! voters, the latest snapshot and the entries after it) and, on disk, a journal of the changes
//! that rebuild it: an [`InternalLog`] of [`RaftRecord`]s in
//! `<data_dir>/internal/__cluster_metadata_raft-0/` (so it is group-committed, fdatasync'd,
//! CRC-checked and recovered like any partition). Journal records, one Kafka record each (key
//! = one kind byte, value = the protobuf bytes of the raft-rs message):
//! - `Entry` (kind 1): an entry at index `i` replaces every entry at `i` and above (raft's
//!   truncate-and-append of a conflicting suffix);
//! - `HardState` (kind 2): term, vote and commit;
//! - `Snapshot` (kind 3): a snapshot received from the leader: it replaces the whole log (as
//!   raft-rs's `MemStorage::apply_snapshot`);
//! - `Compacted` (kind 4): this node's own snapshot at its applied index: the entries up to its
//!   index are dropped, the later ones stay (on a log that ends before its index, the first
//!   record of a compacted journal, it is the whole log).
//!
//! # Invariants
//! - **Durable before visible.** [`RaftLog::persist`] appends the records of one Ready
//!   (snapshot, entries, hard state) as one journal append and changes the in-memory state only
//!   once the append is fdatasync'd; raft-rs sees nothing through [`Storage`] that a crash could
//!   take back. The driver (`cluster::node`) sends a Ready's `persisted_messages` (votes, append
//!   acks) only after `persist` resolved.
//! - **A crash loses only what was not reported durable**: a torn tail is cut off by the
//!   partition log's recovery (whole batches survive, CRC-checked); an append that was in
//!   flight may survive in part (a prefix of its batches), which only holds records raft-rs has
//!   not been told are durable.
//! - **The commit index on disk is clamped** to `[snapshot index, last index]` when the journal
//!   is replayed: a leader may learn a commit index beyond its own persisted log (a majority of
//!   the others acknowledged), and raft-rs refuses a hard state whose commit is past the log.
//!   A lower commit index is always safe (it is learnt again from the leader). A sole voter's
//!   commit index is its last index: each of its durable entries is on the whole majority.
//! - **Compaction** ([`RaftLog::compact_if_due`]) writes, as the journal's live state, a
//!   `Compacted` snapshot at the applied index holding the applied metadata (JSON
//!   `ClusterMetadata`), then the entries after it and the hard state, and moves the journal
//!   start past everything before. A crash inside it leaves the old records followed by a
//!   prefix of these, which replays to the same state (`Compacted` keeps later entries; the
//!   entries it writes again are identical).
//! - A damaged journal (a record that does not decode, an entry with a gap before it or inside
//!   the snapshot, a compaction past the log) fails [`RaftLog::open`] with
//!   `StorageError::CorruptMessage`; it never panics and never deletes anything.
//!
//! # Bootstrap ([`RaftLog::open`] of an empty journal)
//! - One voter (the single-node default): a snapshot at index 1, term 1, voters [this node],
//!   holding the node's current metadata (from the caller: the legacy metadata log, or fresh
//!   metadata), so an existing single-node data directory starts unchanged.
//! - Several voters: a snapshot at index 0 with the voters and empty metadata; the first leader
//!   proposes the cluster's first metadata (`cluster::node`).
//!
//! Either is written to the journal (durably) before `open` returns; from then on the journal
//! is the only source, the legacy log is never read again.
//!
//! # Entries
//! `entry.data` is the JSON of one proposal's `Vec<MetadataRecord>` (applied atomically);
//! `entry.context` is the proposal id (`cluster::node`). Empty entries (a new leader's no-op)
//! and entries whose data does not decode apply nothing (the same on every node: the bytes are
//! the same). [`apply_entry`] is that rule, used by replay here and by the node.
//!
//! # Bounds
//! The in-memory log holds the entries after the latest snapshot: compaction keeps the journal
//! (and so them) to about [`COMPACT_RECORDS_MIN`] records plus twice the unapplied entries.
//! One journal batch is at most [`RAFT_BATCH_BYTES_MAX`] (a snapshot of the metadata, at most
//! `METADATA_BATCH_BYTES_MAX`, fits with its framing); a replay read is
//! `internal_log::REPLAY_READ_BYTES_MAX`.
//!
//! Lives on the coordinator shard (shard 0), on `crate::rt` only (runs under `rt::sim` on a
//! simulated disk). Its writes come from one task at a time (the node driver): `persist` and
//! compaction are never concurrent.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;

use bytes::{Buf, Bytes};
use kafka_protocol::records::RecordBatchDecoder;
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage};

use crate::cluster::raft_id;
use crate::coordinator::metadata::METADATA_BATCH_BYTES_MAX;
use crate::coordinator::metadata::{ClusterMetadata, MetadataRecord};
use crate::storage::internal_log::{internal_log_dir, InternalLog, InternalLogLimits, RecordCodec};
use crate::storage::{StorageError, TailCache};
use freshet_protocol::batch::{self, Compression};

/// The journal's name under `<data_dir>/internal/`.
pub const RAFT_LOG_NAME: &str = "__cluster_metadata_raft";
/// The journal is compacted once it holds more than this many records (and more than twice the
/// entries that stay).
pub const COMPACT_RECORDS_MIN: usize = 1_000;
/// The largest journal batch: a snapshot of the largest metadata plus its framing.
pub const RAFT_BATCH_BYTES_MAX: u32 = METADATA_BATCH_BYTES_MAX + (8 << 20);

/// The journal's limits and compaction policy.
pub const RAFT_LOG_LIMITS: InternalLogLimits = InternalLogLimits {
    compact_records_min: COMPACT_RECORDS_MIN,
    compact_ratio: 2,
    batch_records_max: 1_000,
    batch_bytes_max: (METADATA_BATCH_BYTES_MAX / 2) as usize,
    max_message_bytes: RAFT_BATCH_BYTES_MAX,
    segment_bytes: 16 * 1024 * 1024,
};

/// The journal's directory under the data directory.
pub fn raft_log_dir(data_dir: &Path) -> std::path::PathBuf {
    internal_log_dir(data_dir, RAFT_LOG_NAME)
}

/// One journal record; see the module doc.
#[derive(Debug, Clone, PartialEq)]
pub enum RaftRecord {
    Entry(Entry),
    HardState(HardState),
    /// A snapshot from the leader: replaces the whole log.
    Snapshot(Snapshot),
    /// This node's own snapshot: drops the entries up to its index, keeps the later ones.
    Compacted(Snapshot),
}

impl RaftRecord {
    fn kind(&self) -> u8 {
        match self {
            RaftRecord::Entry(_) => 1,
            RaftRecord::HardState(_) => 2,
            RaftRecord::Snapshot(_) => 3,
            RaftRecord::Compacted(_) => 4,
        }
    }

    fn encode(&self) -> Result<Vec<u8>, String> {
        let bytes = match self {
            RaftRecord::Entry(e) => e.write_to_bytes(),
            RaftRecord::HardState(hs) => hs.write_to_bytes(),
            RaftRecord::Snapshot(s) | RaftRecord::Compacted(s) => s.write_to_bytes(),
        };
        bytes.map_err(|e| e.to_string())
    }

    fn decode(kind: u8, value: &[u8]) -> Result<RaftRecord, String> {
        let bad = |e: protobuf::ProtobufError| format!("record of kind {kind}: {e}");
        Ok(match kind {
            1 => RaftRecord::Entry(Entry::parse_from_bytes(value).map_err(bad)?),
            2 => RaftRecord::HardState(HardState::parse_from_bytes(value).map_err(bad)?),
            3 => RaftRecord::Snapshot(Snapshot::parse_from_bytes(value).map_err(bad)?),
            4 => RaftRecord::Compacted(Snapshot::parse_from_bytes(value).map_err(bad)?),
            other => return Err(format!("unknown record kind {other}")),
        })
    }
}

/// The journal's codec: one Kafka record per [`RaftRecord`], key = kind, value = protobuf.
pub struct RaftCodec;

impl RecordCodec for RaftCodec {
    type Record = RaftRecord;
    /// The metadata log of the cluster (the legacy `__cluster_metadata` log is read only to
    /// bootstrap a single node's journal): its compactions are logged as
    /// "metadata log compacted", as before the quorum.
    const NAME: &'static str = "metadata log";

    fn encode_batch(records: &[RaftRecord], now_ms: i64) -> Result<Bytes, String> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let key = Bytes::from(vec![r.kind()]);
            out.push((Some(key), Some(Bytes::from(r.encode()?)), now_ms));
        }
        batch::encode_batch(&out, Compression::None)
    }

    fn decode_batches(mut bytes: Bytes) -> Result<(Vec<RaftRecord>, i64), String> {
        let mut out = Vec::new();
        let mut next_offset = -1;
        while bytes.has_remaining() {
            let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| e.to_string())?;
            for record in set.records {
                next_offset = record.offset + 1;
                let key = record.key.ok_or("raft log record without a key")?;
                let value = record.value.ok_or("raft log record without a value")?;
                if key.len() != 1 {
                    return Err(format!("raft log record key of {} bytes", key.len()));
                }
                out.push(RaftRecord::decode(key[0], &value)?);
            }
        }
        Ok((out, next_offset))
    }

    fn record_bytes(record: &RaftRecord) -> usize {
        match record {
            RaftRecord::Entry(e) => e.data.len() + e.context.len() + 32,
            RaftRecord::HardState(_) => 32,
            RaftRecord::Snapshot(s) | RaftRecord::Compacted(s) => s.data.len() + 128,
        }
    }
}

/// The JSON of one proposal's records: `entry.data`.
pub fn encode_records(records: &[MetadataRecord]) -> Result<Vec<u8>, String> {
    serde_json::to_vec(records).map_err(|e| e.to_string())
}

/// The records of an entry: `None` for an entry that applies nothing (empty: a leader's no-op;
/// a conf change; data that does not decode, logged).
pub fn entry_records(entry: &Entry) -> Option<Vec<MetadataRecord>> {
    if entry.data.is_empty() || entry.get_entry_type() != raft::prelude::EntryType::EntryNormal {
        return None;
    }
    match serde_json::from_slice(&entry.data) {
        Ok(records) => Some(records),
        Err(e) => {
            tracing::error!(index = entry.index, error = %e, "metadata entry does not decode; skipped");
            None
        }
    }
}

/// The metadata after a committed entry (see [`entry_records`]): the same on every node.
pub fn apply_entry(metadata: &ClusterMetadata, entry: &Entry) -> Option<ClusterMetadata> {
    let records = entry_records(entry)?;
    let mut next = metadata.clone();
    for record in &records {
        next.replay_in_place(record);
    }
    Some(next)
}

/// The metadata a snapshot holds (JSON `ClusterMetadata`; empty data: empty metadata, the
/// multi-voter bootstrap).
pub fn snapshot_metadata(snapshot: &Snapshot) -> Result<ClusterMetadata, StorageError> {
    if snapshot.data.is_empty() {
        return Ok(ClusterMetadata::default());
    }
    serde_json::from_slice(&snapshot.data).map_err(|e| {
        StorageError::CorruptMessage(format!(
            "metadata snapshot at index {}: {e}",
            snapshot.get_metadata().index
        ))
    })
}

/// A snapshot at (`index`, `term`) of `voters` (raft ids) holding `metadata`.
pub fn make_snapshot(
    index: u64,
    term: u64,
    conf_state: ConfState,
    metadata: &ClusterMetadata,
) -> Result<Snapshot, StorageError> {
    let data = serde_json::to_vec(metadata)
        .map_err(|e| StorageError::InvalidRecord(format!("metadata snapshot: {e}")))?;
    let mut snapshot = Snapshot {
        data: data.into(),
        ..Snapshot::default()
    };
    let meta = snapshot.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(conf_state);
    Ok(snapshot)
}

/// What raft-rs reads: the latest snapshot, the entries after it, the hard state.
#[derive(Debug, Default, Clone, PartialEq)]
struct Mem {
    hard_state: HardState,
    snapshot: Snapshot,
    /// `entries[i].index == snapshot index + 1 + i`.
    entries: Vec<Entry>,
}

impl Mem {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    fn term(&self, index: u64) -> Option<u64> {
        let meta = self.snapshot.get_metadata();
        if index == meta.index {
            return Some(meta.term);
        }
        if index < self.first_index() || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.first_index()) as usize].term)
    }

    /// Applies one journal record (replay, and durable appends); `Err` for damage.
    fn apply(&mut self, record: RaftRecord) -> Result<(), String> {
        match record {
            RaftRecord::Entry(entry) => {
                let index = entry.index;
                if index < self.first_index() || index > self.last_index() + 1 {
                    return Err(format!(
                        "entry {index} outside [{}, {}]",
                        self.first_index(),
                        self.last_index() + 1
                    ));
                }
                self.entries.truncate((index - self.first_index()) as usize);
                self.entries.push(entry);
            }
            RaftRecord::HardState(hs) => self.hard_state = hs,
            RaftRecord::Snapshot(snapshot) => {
                let meta = snapshot.get_metadata();
                if meta.index < self.snapshot_index() {
                    return Err(format!(
                        "snapshot {} older than snapshot {}",
                        meta.index,
                        self.snapshot_index()
                    ));
                }
                self.hard_state.term = self.hard_state.term.max(meta.term);
                self.hard_state.commit = meta.index;
                self.entries.clear();
                self.snapshot = snapshot;
            }
            RaftRecord::Compacted(snapshot) => {
                let meta = snapshot.get_metadata();
                if meta.index <= self.snapshot_index() {
                    // Already compacted further (a repeated compaction after a crash).
                    return Ok(());
                }
                if meta.index > self.last_index() {
                    // The journal's start after a compaction: nothing before it.
                    self.entries.clear();
                    self.snapshot = snapshot;
                    return Ok(());
                }
                if self.term(meta.index) != Some(meta.term) {
                    return Err(format!(
                        "compaction at {} (term {}) does not match the log (last index {})",
                        meta.index,
                        meta.term,
                        self.last_index()
                    ));
                }
                self.entries
                    .drain(..(meta.index - self.snapshot_index()) as usize);
                self.snapshot = snapshot;
            }
        }
        Ok(())
    }

    /// The hard state's commit within what the log holds (see the module doc).
    fn clamp_commit(&mut self) {
        let commit = self.hard_state.commit;
        self.hard_state.commit = commit.clamp(self.snapshot_index(), self.last_index());
    }
}

/// The journal, the in-memory state and what was applied at open; shared by the node driver
/// and raft-rs (which owns a clone as its [`Storage`]).
struct Inner {
    journal: InternalLog<RaftCodec>,
    mem: RefCell<Mem>,
    /// A follower asked for a snapshot newer than ours: compact at the next chance.
    snapshot_wanted: Cell<bool>,
    /// The applied index and metadata rebuilt at open (the snapshot plus the committed entries).
    opened: (u64, ClusterMetadata),
}

/// The durable raft-rs [`Storage`] of the metadata quorum (see the module doc). A cheap handle:
/// clones share the journal. Lives on the coordinator shard; opened by the node's owner,
/// closed by [`RaftLog::close`] (the node's `stop`).
#[derive(Clone)]
pub struct RaftLog {
    inner: Rc<Inner>,
}

impl RaftLog {
    /// Opens (recovers) the journal in `dir` and replays it; an empty journal is bootstrapped
    /// (module doc) for `voters` (Kafka node ids), with `single_node_metadata()` when this is a
    /// single voter. Fails with `CorruptMessage` on a damaged journal.
    pub async fn open(
        dir: &Path,
        cache: Rc<TailCache>,
        voters: &[i32],
        single_node_metadata: impl FnOnce() -> ClusterMetadata,
    ) -> Result<RaftLog, StorageError> {
        Self::open_with_limits(dir, RAFT_LOG_LIMITS, cache, voters, single_node_metadata).await
    }

    /// [`RaftLog::open`] with other journal limits than [`RAFT_LOG_LIMITS`]: the simulator
    /// compacts often (a small `compact_records_min`) so that snapshots travel.
    pub async fn open_with_limits(
        dir: &Path,
        limits: InternalLogLimits,
        cache: Rc<TailCache>,
        voters: &[i32],
        single_node_metadata: impl FnOnce() -> ClusterMetadata,
    ) -> Result<RaftLog, StorageError> {
        assert!(!voters.is_empty(), "a quorum has voters");
        let mut mem = Mem::default();
        let mut damage: Option<String> = None;
        let mut replayed = 0usize;
        let journal = InternalLog::<RaftCodec>::open(dir, limits, cache, |record| {
            replayed += 1;
            if damage.is_none() {
                if let Err(e) = mem.apply(record) {
                    damage = Some(e);
                }
            }
        })
        .await?;
        let replay = match damage {
            Some(e) => Err(e),
            None => Ok((mem, replayed)),
        };
        match Self::prepare(&journal, replay, voters, single_node_metadata).await {
            Ok((mem, opened)) => Ok(RaftLog {
                inner: Rc::new(Inner {
                    journal,
                    mem: RefCell::new(mem),
                    snapshot_wanted: Cell::new(false),
                    opened,
                }),
            }),
            Err(e) => {
                let _ = journal.close().await;
                Err(e)
            }
        }
    }

    /// The applied metadata of the journal in `dir` as a stopped node left it (what
    /// [`RaftLog::open`] would rebuild), without bootstrapping an empty journal: `None` when it
    /// holds no record. For offline readers (`freshet user list`); it writes nothing but what
    /// the journal's own recovery writes (a torn tail cut off).
    pub async fn read_applied(
        dir: &Path,
        cache: Rc<TailCache>,
    ) -> Result<Option<ClusterMetadata>, StorageError> {
        let mut mem = Mem::default();
        let mut damage: Option<String> = None;
        let mut replayed = 0usize;
        let journal = InternalLog::<RaftCodec>::open(dir, RAFT_LOG_LIMITS, cache, |record| {
            replayed += 1;
            if damage.is_none() {
                if let Err(e) = mem.apply(record) {
                    damage = Some(e);
                }
            }
        })
        .await?;
        journal.close().await?;
        if let Some(e) = damage {
            return Err(StorageError::CorruptMessage(format!(
                "{}: {e}",
                RaftCodec::NAME
            )));
        }
        if replayed == 0 {
            return Ok(None);
        }
        mem.clamp_commit();
        if mem.snapshot.get_metadata().get_conf_state().voters.len() == 1 {
            mem.hard_state.commit = mem.last_index();
        }
        Ok(Some(applied_at_open(&mem)?.1))
    }

    /// After the replay (the state and the records replayed, or the damage found): bootstraps
    /// an empty journal, checks the state, clamps the commit index, applies the committed
    /// entries.
    async fn prepare(
        journal: &InternalLog<RaftCodec>,
        replay: Result<(Mem, usize), String>,
        voters: &[i32],
        single_node_metadata: impl FnOnce() -> ClusterMetadata,
    ) -> Result<(Mem, (u64, ClusterMetadata)), StorageError> {
        let corrupt = |e: &str| StorageError::CorruptMessage(format!("{}: {e}", RaftCodec::NAME));
        let (mut mem, replayed) = replay.map_err(|e| corrupt(&e))?;
        if replayed == 0 {
            let record = RaftRecord::Snapshot(bootstrap_snapshot(voters, single_node_metadata)?);
            let mut next = mem.clone();
            if let Err(e) = next.apply(record.clone()) {
                unreachable!("a bootstrap snapshot applies to an empty log: {e}");
            }
            journal
                .append(vec![record], crate::rt::unix_time_ms(), |_| ())
                .await?;
            mem = next;
            tracing::info!(voters = ?voters, index = mem.snapshot_index(), "metadata raft log bootstrapped");
        } else if mem
            .snapshot
            .get_metadata()
            .get_conf_state()
            .voters
            .is_empty()
        {
            return Err(corrupt("no snapshot before the entries"));
        }
        mem.clamp_commit();
        if mem.snapshot.get_metadata().get_conf_state().voters.len() == 1 {
            // A sole voter's durable entries are all committed (it is the whole majority); its
            // driver does not write the commit index apart (one fdatasync per change).
            mem.hard_state.commit = mem.last_index();
        }
        let opened = applied_at_open(&mem)?;
        Ok((mem, opened))
    }

    /// The applied index and metadata rebuilt at open: the snapshot's metadata with every
    /// committed entry after it applied.
    pub fn applied_at_open(&self) -> (u64, ClusterMetadata) {
        self.inner.opened.clone()
    }

    /// Appends a Ready's snapshot, entries and hard state to the journal (one append) and
    /// resolves once they are durable; only then are they visible through [`Storage`]. On an
    /// error nothing changes in memory (the journal may hold a prefix: replay decides).
    pub async fn persist(
        &self,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
    ) -> Result<(), StorageError> {
        let mut records = Vec::with_capacity(entries.len() + 2);
        records.extend(snapshot.map(RaftRecord::Snapshot));
        records.extend(entries.into_iter().map(RaftRecord::Entry));
        records.extend(hard_state.map(RaftRecord::HardState));
        if records.is_empty() {
            return Ok(());
        }
        // Checked before writing: raft-rs gives only entries that continue the log.
        let mut next = self.inner.mem.borrow().clone();
        for record in &records {
            if let Err(e) = next.apply(record.clone()) {
                panic!("raft-rs gave a Ready that does not fit the log: {e}");
            }
        }
        self.inner
            .journal
            .append(records, crate::rt::unix_time_ms(), |_| ())
            .await?;
        *self.inner.mem.borrow_mut() = next;
        Ok(())
    }

    /// Compacts the journal to a snapshot at `applied_index` holding `applied` (the metadata at
    /// that index) if it has grown past its limits or a follower asked for a newer snapshot
    /// than the latest. Returns whether it compacted.
    pub async fn compact_if_due(
        &self,
        applied_index: u64,
        applied: &ClusterMetadata,
    ) -> Result<bool, StorageError> {
        let wanted = self.inner.snapshot_wanted.get();
        let (snapshot_index, last_index) = {
            let mem = self.inner.mem.borrow();
            (mem.snapshot_index(), mem.last_index())
        };
        assert!(applied_index <= last_index, "applied past the log");
        if applied_index <= snapshot_index {
            return Ok(false);
        }
        let live = (last_index - applied_index) as usize + 2;
        if !wanted && !self.inner.journal.is_compaction_due(live) {
            return Ok(false);
        }
        let snapshot = {
            let mem = self.inner.mem.borrow();
            let term = mem
                .term(applied_index)
                .expect("applied entries are in the log");
            let conf_state = mem.snapshot.get_metadata().get_conf_state().clone();
            make_snapshot(applied_index, term, conf_state, applied)?
        };
        let records = || {
            let mem = self.inner.mem.borrow();
            let mut records = vec![RaftRecord::Compacted(snapshot.clone())];
            let keep = (applied_index - mem.snapshot_index()) as usize;
            records.extend(mem.entries[keep..].iter().cloned().map(RaftRecord::Entry));
            records.push(RaftRecord::HardState(mem.hard_state.clone()));
            records
        };
        if wanted {
            self.inner.journal.compact(records).await?;
        } else if !self.inner.journal.compact_if_due(|| live, records).await? {
            return Ok(false);
        }
        let compacted = self
            .inner
            .mem
            .borrow_mut()
            .apply(RaftRecord::Compacted(snapshot));
        if let Err(e) = compacted {
            panic!("compaction at the applied index must fit the log: {e}");
        }
        self.inner.snapshot_wanted.set(false);
        Ok(true)
    }

    /// The latest snapshot's index and the last entry's index.
    pub fn indexes(&self) -> (u64, u64) {
        let mem = self.inner.mem.borrow();
        (mem.snapshot_index(), mem.last_index())
    }

    /// The durable hard state.
    pub fn hard_state(&self) -> HardState {
        self.inner.mem.borrow().hard_state.clone()
    }

    /// The voters (raft ids) of the latest snapshot.
    pub fn voters(&self) -> Vec<u64> {
        let mem = self.inner.mem.borrow();
        mem.snapshot.get_metadata().get_conf_state().voters.clone()
    }

    /// Journal records from its start (tests and status).
    pub fn journal_records(&self) -> usize {
        self.inner.journal.records()
    }

    /// Flushes and closes the journal.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.inner.journal.close().await
    }
}

/// The snapshot an empty journal starts from (module doc, "Bootstrap").
fn bootstrap_snapshot(
    voters: &[i32],
    single_node_metadata: impl FnOnce() -> ClusterMetadata,
) -> Result<Snapshot, StorageError> {
    let conf_state = ConfState::from((
        voters.iter().map(|v| raft_id(*v)).collect::<Vec<_>>(),
        vec![],
    ));
    if voters.len() == 1 {
        make_snapshot(1, 1, conf_state, &single_node_metadata())
    } else {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().set_conf_state(conf_state);
        Ok(snapshot)
    }
}

/// The applied index and metadata of a replayed log: the snapshot plus the committed entries.
fn applied_at_open(mem: &Mem) -> Result<(u64, ClusterMetadata), StorageError> {
    let mut metadata = snapshot_metadata(&mem.snapshot)?;
    let first = mem.first_index();
    let commit = mem.hard_state.commit;
    for entry in &mem.entries[..(commit + 1 - first) as usize] {
        if let Some(next) = apply_entry(&metadata, entry) {
            metadata = next;
        }
    }
    Ok((commit, metadata))
}

fn raft_error(e: raft::StorageError) -> raft::Error {
    raft::Error::Store(e)
}

impl Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let mem = self.inner.mem.borrow();
        Ok(RaftState::new(
            mem.hard_state.clone(),
            mem.snapshot.get_metadata().get_conf_state().clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let mem = self.inner.mem.borrow();
        if low < mem.first_index() {
            return Err(raft_error(raft::StorageError::Compacted));
        }
        assert!(
            high <= mem.last_index() + 1 && low <= high,
            "raft-rs asked for entries [{low}, {high}) past the log (last {})",
            mem.last_index()
        );
        let first = mem.first_index();
        let mut entries = mem.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let mem = self.inner.mem.borrow();
        if idx < mem.snapshot_index() {
            return Err(raft_error(raft::StorageError::Compacted));
        }
        mem.term(idx)
            .ok_or_else(|| raft_error(raft::StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.inner.mem.borrow().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.inner.mem.borrow().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let mem = self.inner.mem.borrow();
        if mem.snapshot_index() < request_index {
            self.inner.snapshot_wanted.set(true);
            return Err(raft_error(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(mem.snapshot.clone())
    }
}
