//! The group coordinator's internal offsets log `<data_dir>/internal/__consumer_offsets-0/`
//! (an [`InternalLog`]): committed offsets and group snapshots are appended and applied once
//! durable, replayed at load, and compacted when superseded records dominate. See the parent
//! module's doc for when groups are written.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;

use super::{GroupCoordinator, OffsetsStore};
use crate::coordinator::offsets::{
    self, CommittedOffset, GroupKind, LogRecord, OffsetChange, OffsetKey, Offsets, PendingChange,
    PendingTxnOffsets,
};
use crate::storage::internal_log::{internal_log_dir, InternalLog, InternalLogLimits, RecordCodec};
use crate::storage::{StorageError, TailCache};

/// The offsets log is compacted when it holds more than this many records...
const COMPACT_RECORDS_MIN: usize = 10_000;
/// ... and more than this many times the live offsets.
const COMPACT_RATIO: usize = 2;
/// Records per batch of a compaction snapshot of the offsets log, or of an append too large
/// for one batch (each batch well under `max.message.bytes`; an OffsetCommit that fits one
/// batch is written as one).
const BATCH_RECORDS_MAX: usize = 100;

/// A group snapshot larger than this is not persisted (it would not fit a record batch).
const GROUP_SNAPSHOT_BYTES_MAX: usize = 512 * 1024;

/// Bytes of record data per batch of a compaction snapshot of the offsets log (or of an
/// append too large for one batch).
const BATCH_BYTES_MAX: usize = 256 * 1024;

/// The offsets log's name under `<data_dir>/internal/`.
pub const OFFSETS_LOG_NAME: &str = "__consumer_offsets";

/// The offsets log's limits and compaction policy.
pub const OFFSETS_LOG_LIMITS: InternalLogLimits = InternalLogLimits {
    compact_records_min: COMPACT_RECORDS_MIN,
    compact_ratio: COMPACT_RATIO,
    batch_records_max: BATCH_RECORDS_MAX,
    batch_bytes_max: BATCH_BYTES_MAX,
    max_message_bytes: 1_048_588,
    segment_bytes: 16 * 1024 * 1024,
};

/// The offsets log's records: committed offsets and group snapshots, in Kafka's
/// `__consumer_offsets` encoding (`coordinator::offsets`).
pub struct OffsetsCodec;

impl RecordCodec for OffsetsCodec {
    type Record = LogRecord;
    const NAME: &'static str = "offsets log";

    fn encode_batch(records: &[LogRecord], now_ms: i64) -> Result<bytes::Bytes, String> {
        offsets::encode_records(records, now_ms)
    }

    fn decode_batches(bytes: bytes::Bytes) -> Result<(Vec<LogRecord>, i64), String> {
        offsets::decode_batches(bytes)
    }

    fn record_bytes(record: &LogRecord) -> usize {
        match record {
            LogRecord::Offset((k, v)) => {
                k.group.len() + k.topic.len() + v.as_ref().map_or(0, |v| v.metadata.len()) + 64
            }
            LogRecord::Group((_, g, s)) => g.len() + s.as_ref().map_or(0, |s| s.len()) + 64,
            LogRecord::Pending(_, change) => {
                let bytes: usize = match change {
                    PendingChange::Hold(offsets) => offsets
                        .iter()
                        .map(|(k, v)| k.group.len() + k.topic.len() + v.metadata.len() + 160)
                        .sum(),
                    PendingChange::Release(keys) => keys
                        .iter()
                        .map(|k| k.group.len() + k.topic.len() + 64)
                        .sum(),
                };
                bytes + 64
            }
        }
    }
}

/// The internal offsets log's directory under the data directory.
pub fn offsets_log_dir(data_dir: &Path) -> std::path::PathBuf {
    internal_log_dir(data_dir, OFFSETS_LOG_NAME)
}

impl GroupCoordinator {
    /// Applies records that are durable (in the node-local log, or replicated up to the high
    /// watermark) to the offsets tables; groups' records change nothing here (the group
    /// state machines already hold them).
    pub(super) fn apply_durable(&self, records: Vec<LogRecord>) {
        let mut table = self.offsets.borrow_mut();
        for record in records {
            match record {
                LogRecord::Offset(change) => table.apply(change),
                LogRecord::Pending(producer_id, change) => {
                    self.pending.borrow_mut().apply(producer_id, change)
                }
                LogRecord::Group(_) => {}
            }
        }
    }

    /// Opens the offsets log under `data_dir` and rebuilds the offsets table and the groups
    /// from it, then compacts it if due.
    pub async fn load(&self, data_dir: &Path, cache: Rc<TailCache>) -> Result<(), StorageError> {
        // Group snapshots: the last record of each (kind, group) wins.
        let mut snapshots: BTreeMap<(GroupKind, String), Option<bytes::Bytes>> = BTreeMap::new();
        // Built aside (no RefCell borrow held across the replay's awaits), then installed.
        let mut table = Offsets::default();
        let mut pending = PendingTxnOffsets::new();
        let log = InternalLog::<OffsetsCodec>::open(
            &offsets_log_dir(data_dir),
            OFFSETS_LOG_LIMITS,
            cache,
            |record| match record {
                LogRecord::Offset(change) => table.apply(change),
                LogRecord::Group((kind, group, snapshot)) => {
                    snapshots.insert((kind, group), snapshot);
                }
                LogRecord::Pending(producer_id, change) => pending.apply(producer_id, change),
            },
        )
        .await?;
        *self.offsets.borrow_mut() = table;
        *self.pending.borrow_mut() = pending;
        self.restore_groups(snapshots);
        tracing::info!(
            records = log.records(),
            groups = self.offsets.borrow().group_ids().len(),
            classic_groups = self.groups.borrow().group_ids().len(),
            consumer_groups = self.consumer.borrow().group_ids().len(),
            "committed offsets and groups loaded"
        );
        *self.log.borrow_mut() = Some(OffsetsStore::Local(Rc::new(log)));
        self.maybe_compact().await
    }

    /// Rebuilds the groups from their last snapshots. A snapshot that does not decode is
    /// skipped with an error (its members rejoin, as after losing the group); committed
    /// offsets are not affected.
    pub(super) fn restore_groups(
        &self,
        snapshots: BTreeMap<(GroupKind, String), Option<bytes::Bytes>>,
    ) {
        let now = crate::shard::now_ms();
        for ((kind, group_id), snapshot) in snapshots {
            let Some(json) = snapshot else { continue };
            let restored = match kind {
                GroupKind::Classic => serde_json::from_slice(&json)
                    .map_err(|e| e.to_string())
                    .map(|snap| self.groups.borrow_mut().restore(&group_id, snap, now)),
                GroupKind::Consumer => serde_json::from_slice(&json)
                    .map_err(|e| e.to_string())
                    .and_then(|snap| self.consumer.borrow_mut().restore(&group_id, snap, now)),
            };
            if let Err(e) = restored {
                tracing::error!(group = %group_id, ?kind, error = %e, "a group snapshot in the offsets log is unreadable; the group starts empty");
            }
        }
    }

    /// The snapshot records of `ids` of one kind (a tombstone for a group that is gone).
    pub(super) fn group_records(&self, kind: GroupKind, ids: Vec<String>) -> Vec<LogRecord> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let json = match kind {
                GroupKind::Classic => self
                    .groups
                    .borrow()
                    .snapshot(&id)
                    .map(|s| serde_json::to_vec(&s)),
                GroupKind::Consumer => self
                    .consumer
                    .borrow()
                    .snapshot(&id)
                    .map(|s| serde_json::to_vec(&s)),
            };
            let json = match json.transpose() {
                Ok(json) => json,
                Err(e) => {
                    tracing::error!(group = %id, error = %e, "encoding a group snapshot failed");
                    continue;
                }
            };
            if json
                .as_ref()
                .is_some_and(|j| j.len() > GROUP_SNAPSHOT_BYTES_MAX)
            {
                tracing::warn!(group = %id, "group snapshot too large to persist; a restart forgets the group's members");
                continue;
            }
            out.push(LogRecord::Group((kind, id, json.map(bytes::Bytes::from))));
        }
        out
    }

    /// Writes the snapshots of the groups that changed since the last call: before answering a
    /// request that changed a group (SyncGroup, LeaveGroup, ConsumerGroupHeartbeat,
    /// DeleteGroups), as Kafka answers after its records are written, and from the tick
    /// (timeouts) and at shutdown. A failed write is logged, not answered with an error (the
    /// change is already in memory; members and assignments are recoverable state).
    pub async fn persist_groups(&self) {
        // Whoever holds the lock may be writing our change: wait for it, then write the rest.
        let Ok(_permit) = self.persist_lock.acquire_permit(1).await else {
            return;
        };
        let classic = self.groups.borrow_mut().take_dirty();
        let consumer = self.consumer.borrow_mut().take_dirty();
        if classic.is_empty() && consumer.is_empty() {
            return;
        }
        let mut records = self.group_records(GroupKind::Classic, classic);
        records.extend(self.group_records(GroupKind::Consumer, consumer));
        if let Err(e) = self.append_records(records, crate::shard::now_ms()).await {
            tracing::error!(error = ?e, "persisting group metadata failed");
        }
    }

    /// Live records of the offsets log: the committed offsets, the groups and the producers
    /// with offsets held.
    fn live_records(&self) -> usize {
        self.pending.borrow().producers()
            + self.offsets.borrow().len()
            + self.groups.borrow().group_ids().len()
            + self.consumer.borrow().group_ids().len()
    }

    /// Compacts the offsets log when superseded records dominate it (at load, and from the
    /// tick loop while running).
    pub async fn maybe_compact(&self) -> Result<(), StorageError> {
        // Replicated partitions are compacted by the log cleaner (`replicated`).
        let Some(OffsetsStore::Local(log)) = self.log.borrow().clone() else {
            return Ok(());
        };
        log.compact_if_due(|| self.live_records(), || self.snapshot_records())
            .await
            .map(|_| ())
    }

    /// The records that rebuild the live state: every committed offset and every group's
    /// snapshot (the dirty groups are written here, so they are not dirty any more). Taken
    /// under the log's exclusive lock: no commit is between its append and its table entry.
    pub(super) fn snapshot_records(&self) -> Vec<LogRecord> {
        let mut records: Vec<LogRecord> = self
            .offsets
            .borrow()
            .all_changes()
            .into_iter()
            .map(LogRecord::Offset)
            .collect();
        let classic = self.groups.borrow().group_ids();
        self.groups.borrow_mut().take_dirty();
        records.extend(self.group_records(GroupKind::Classic, classic));
        let consumer = self.consumer.borrow().group_ids();
        self.consumer.borrow_mut().take_dirty();
        records.extend(self.group_records(GroupKind::Consumer, consumer));
        records.extend(self.pending.borrow().records());
        records
    }

    /// Appends `changes` to the offsets log and, once durable, applies them to the table.
    pub async fn write_offsets(
        &self,
        changes: Vec<OffsetChange>,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        let records = changes.into_iter().map(LogRecord::Offset).collect();
        self.append_records(records, now_ms).await
    }

    /// Holds `offsets` for `producer_id`'s transaction (coordinated on another node) until
    /// its marker: durable before the answer. COORDINATOR_NOT_AVAILABLE (retriable) past the
    /// bound of offsets held.
    pub async fn hold_txn_offsets(
        &self,
        producer_id: i64,
        offsets: Vec<(OffsetKey, CommittedOffset)>,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        if !self.pending.borrow().fits(producer_id, &offsets) {
            tracing::warn!(
                held = self.pending.borrow().len(),
                "too many transactional offsets held; TxnOffsetCommit refused for now"
            );
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let record = LogRecord::Pending(producer_id, PendingChange::Hold(offsets));
        self.append_records(vec![record], now_ms).await
    }

    /// `producer_id`'s marker for the groups `in_partition` accepts (one `__consumer_offsets`
    /// partition): their held offsets are committed (if `commit`) and released, in one batch.
    pub async fn end_txn_offsets(
        &self,
        producer_id: i64,
        commit: bool,
        in_partition: impl Fn(&str) -> bool,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        let ended = self.pending.borrow().for_marker(producer_id, in_partition);
        if ended.is_empty() {
            return Ok(());
        }
        let keys = ended.iter().map(|(k, _)| k.clone()).collect();
        let mut records: Vec<LogRecord> = if commit {
            ended
                .into_iter()
                .map(|(k, v)| LogRecord::Offset((k, Some(v))))
                .collect()
        } else {
            Vec::new()
        };
        records.push(LogRecord::Pending(
            producer_id,
            PendingChange::Release(keys),
        ));
        self.append_records(records, now_ms).await
    }

    /// Appends `records` to the offsets log and, once durable, applies the offsets among them
    /// to the table.
    pub(super) async fn append_records(
        &self,
        records: Vec<LogRecord>,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        if records.is_empty() {
            return Ok(());
        }
        let store = self
            .log
            .borrow()
            .clone()
            .ok_or(crate::error::coordinator_gone_code())?;
        let log = match store {
            OffsetsStore::Local(log) => log,
            OffsetsStore::Replicated(store) => {
                return self.append_replicated(store, records, now_ms).await
            }
        };
        let applied = log
            .append(records, now_ms, |records| self.apply_durable(records))
            .await;
        match applied {
            Ok(()) => Ok(()),
            Err(StorageError::InvalidRecord(e)) => {
                tracing::error!(error = %e, "encoding an offsets batch failed");
                Err(ResponseError::UnknownServerError)
            }
            Err(e) => {
                tracing::error!(error = %e, "appending to the offsets log failed");
                Err(crate::error::offsets_log_code(&e))
            }
        }
    }
}
