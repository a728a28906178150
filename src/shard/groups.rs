//! The group coordinator's runtime on the coordinator shard (shard 0): runs the pure state
//! machines of `coordinator::group` and `coordinator::offsets` and does their I/O.
//!
//! [`GroupCoordinator`] lives inside every [`super::Shard`] but is used on shard 0 only
//! (created with the shard, loaded by [`GroupCoordinator::load`] at startup, closed at
//! shutdown); other shards reach it with `invoke_on(COORDINATOR_SHARD, ...)`.
//!
//! - Delayed answers: a JoinGroup or SyncGroup gets a request id and a one-shot channel kept in
//!   `replies`; the request waits on the channel, and whichever call produces the
//!   `Effect::Reply` for that id (a later join, a leader's sync, a tick) completes it.
//! - Timers: [`GroupCoordinator::tick`] expires sessions and ends rebalances. A timer task on
//!   shard 0 does nothing else: it sleeps until [`GroupCoordinator::next_deadline_ms`] (at most
//!   [`GROUP_TICK_INTERVAL_MS`]), so a session ends on time whatever persistence or compaction
//!   is doing; DescribeGroups and DeleteGroups also bring their group's timers up to date
//!   first. The periodic work with I/O (writing changed groups, expiring offsets, compaction)
//!   runs in a separate loop every [`GROUP_TICK_INTERVAL_MS`].
//! - Durability: committed offsets are appended to the internal log
//!   `<data_dir>/internal/__consumer_offsets-0/` (a [`PartitionLog`], so group-committed and
//!   fdatasync'd like any partition) and applied to the table only once the append is durable,
//!   so a commit is acknowledged only when it survives a crash. [`GroupCoordinator::load`]
//!   replays the log. [`GroupCoordinator::maybe_compact`] (at load and on ticks) rewrites the
//!   live offsets and group snapshots once superseded records dominate, and moves the log
//!   start past the rest. The directory cannot collide with a topic's (topic directories sit
//!   directly in the data directory).
//! - Group metadata: classic and KIP-848 groups whose durable state changed are written to the
//!   same log as snapshots by [`GroupCoordinator::persist_groups`] (before SyncGroup,
//!   LeaveGroup, ConsumerGroupHeartbeat and DeleteGroups answer; changes by timeouts from the
//!   tick; at shutdown), and rebuilt by `load`. Followers' SyncGroup answers go out with the
//!   leader's, before the write.
//! - KIP-848 consumer groups (`coordinator::consumer_group`) share the group id namespace with
//!   classic groups: an empty group of one kind gives its id to the other, a group with
//!   members keeps it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;

use crate::coordinator::consumer_group::{self, ConsumerGroupConfig, ConsumerGroups, TopicsView};
use crate::coordinator::group::{
    Effect, GroupConfig, GroupState, Groups, JoinRequest, JoinResponse, RequestId, Response,
    SyncRequest, SyncResponse,
};
use crate::coordinator::offsets::{
    self, CommittedOffset, GroupKind, LogRecord, OffsetChange, OffsetKey, Offsets,
};
use crate::storage::{LogConfig, PartitionLog, StorageError, TailCache};

/// How often the coordinator shard ticks the group state machine, in milliseconds.
pub const GROUP_TICK_INTERVAL_MS: u64 = 250;

/// The offsets log is compacted at load when it holds more than this many records...
const COMPACT_RECORDS_MIN: usize = 10_000;
/// ... and more than this many times the live offsets.
const COMPACT_RATIO: usize = 2;
/// Records per batch in a compaction snapshot (each well under `max.message.bytes`).
const COMPACT_BATCH_RECORDS_MAX: usize = 100;

/// Bytes read per call while replaying the offsets log at startup.
const REPLAY_READ_BYTES_MAX: usize = 1 << 20;

/// A group snapshot larger than this is not persisted (it would not fit a record batch).
const GROUP_SNAPSHOT_BYTES_MAX: usize = 512 * 1024;

/// Bytes of record data per batch written to the offsets log.
const BATCH_BYTES_MAX: usize = 256 * 1024;

/// Splits `records` into runs of at most [`COMPACT_BATCH_RECORDS_MAX`] records and about
/// [`BATCH_BYTES_MAX`] bytes, one record batch each.
fn chunks_by_size(records: &[LogRecord]) -> Vec<&[LogRecord]> {
    let size = |r: &LogRecord| match r {
        LogRecord::Offset((k, v)) => {
            k.group.len() + k.topic.len() + v.as_ref().map_or(0, |v| v.metadata.len()) + 64
        }
        LogRecord::Group((_, g, s)) => g.len() + s.as_ref().map_or(0, |s| s.len()) + 64,
    };
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        let n = size(r);
        if i > start && (i - start >= COMPACT_BATCH_RECORDS_MAX || bytes + n > BATCH_BYTES_MAX) {
            out.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += n;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// The internal offsets log's directory under the data directory.
pub fn offsets_log_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("internal").join("__consumer_offsets-0")
}

/// The coordinator shard's group state; see the module doc.
pub struct GroupCoordinator {
    pub groups: RefCell<Groups>,
    /// KIP-848 consumer groups. A group id is a classic group or a consumer group, never both.
    pub consumer: RefCell<ConsumerGroups>,
    pub offsets: RefCell<Offsets>,
    log: RefCell<Option<Rc<PartitionLog>>>,
    replies: RefCell<HashMap<RequestId, flume::Sender<Response>>>,
    next_request_id: Cell<RequestId>,
    /// Records in the offsets log from its start (compaction trigger).
    log_records: Cell<usize>,
    /// When expired offsets were last looked for.
    last_expiry_check_ms: Cell<i64>,
    /// Serializes group snapshot writes, so a later write always holds a later state.
    persist_lock: glommio::sync::Semaphore,
    /// Appends hold it shared; compaction holds it exclusively, so that no commit is between
    /// its append and its entry in the table while the snapshot is taken.
    write_lock: glommio::sync::RwLock<()>,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig, consumer_config: ConsumerGroupConfig) -> GroupCoordinator {
        let salt = uuid::Uuid::new_v4();
        let consumer_salt = salt.as_u64_pair().1;
        let salt = salt.simple().to_string();
        GroupCoordinator {
            groups: RefCell::new(Groups::new(config, salt[..8].to_string())),
            consumer: RefCell::new(ConsumerGroups::new(consumer_config, consumer_salt)),
            offsets: RefCell::new(Offsets::default()),
            log: RefCell::new(None),
            replies: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(1),
            log_records: Cell::new(0),
            last_expiry_check_ms: Cell::new(0),
            persist_lock: glommio::sync::Semaphore::new(1),
            write_lock: glommio::sync::RwLock::new(()),
        }
    }

    /// Opens the offsets log under `data_dir` and rebuilds the offsets table from it.
    pub async fn load(&self, data_dir: &Path, cache: Rc<TailCache>) -> Result<(), StorageError> {
        let config = LogConfig {
            retention_ms: -1,
            // Small segments, so the ones compaction leaves behind are deleted soon.
            segment_bytes: 16 * 1024 * 1024,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&offsets_log_dir(data_dir), config, cache).await?;
        let mut offset = log.log_start_offset();
        let mut records = 0usize;
        // Group snapshots: the last record of each (kind, group) wins.
        let mut snapshots: BTreeMap<(GroupKind, String), Option<bytes::Bytes>> = BTreeMap::new();
        while offset < log.high_watermark() {
            let data = log.read(offset, REPLAY_READ_BYTES_MAX, true).await?;
            if data.batches.is_empty() {
                break;
            }
            for batch in data.batches {
                let (changes, next) = offsets::decode_batches(batch)
                    .map_err(|e| StorageError::CorruptMessage(format!("offsets log: {e}")))?;
                records += changes.len();
                let mut table = self.offsets.borrow_mut();
                for change in changes {
                    match change {
                        LogRecord::Offset(change) => table.apply(change),
                        LogRecord::Group((kind, group, snapshot)) => {
                            snapshots.insert((kind, group), snapshot);
                        }
                    }
                }
                offset = offset.max(next);
            }
            glommio::yield_if_needed().await;
        }
        self.restore_groups(snapshots);
        tracing::info!(
            records,
            groups = self.offsets.borrow().group_ids().len(),
            classic_groups = self.groups.borrow().group_ids().len(),
            consumer_groups = self.consumer.borrow().group_ids().len(),
            "committed offsets and groups loaded"
        );
        self.log_records.set(records);
        let log = Rc::new(log);
        *self.log.borrow_mut() = Some(log.clone());
        self.maybe_compact().await
    }

    /// Rebuilds the groups from their last snapshots. A snapshot that does not decode is
    /// skipped with an error (its members rejoin, as after losing the group); committed
    /// offsets are not affected.
    fn restore_groups(&self, snapshots: BTreeMap<(GroupKind, String), Option<bytes::Bytes>>) {
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
    fn group_records(&self, kind: GroupKind, ids: Vec<String>) -> Vec<LogRecord> {
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

    /// Compacts the offsets log when superseded records dominate it (at load, and from the
    /// tick loop while running).
    pub async fn maybe_compact(&self) -> Result<(), StorageError> {
        let records = self.log_records.get();
        let live = self.offsets.borrow().len()
            + self.groups.borrow().group_ids().len()
            + self.consumer.borrow().group_ids().len();
        if records <= COMPACT_RECORDS_MIN || records <= COMPACT_RATIO * live {
            return Ok(());
        }
        let Some(log) = self.log.borrow().clone() else {
            return Ok(());
        };
        let Ok(_exclusive) = self.write_lock.write().await else {
            return Ok(());
        };
        self.compact(&log).await
    }

    /// Rewrites the live offsets at the end of the log and moves the log start past everything
    /// before them, so the next start replays only them. The caller holds `write_lock`
    /// exclusively: no commit is in flight, so every record below the snapshot is superseded
    /// by it.
    async fn compact(&self, log: &PartitionLog) -> Result<(), StorageError> {
        let mut changes: Vec<LogRecord> = self
            .offsets
            .borrow()
            .all_changes()
            .into_iter()
            .map(LogRecord::Offset)
            .collect();
        // Every group's snapshot too: the dirty ones are written here, so they are not dirty.
        let classic = self.groups.borrow().group_ids();
        self.groups.borrow_mut().take_dirty();
        changes.extend(self.group_records(GroupKind::Classic, classic));
        let consumer = self.consumer.borrow().group_ids();
        self.consumer.borrow_mut().take_dirty();
        changes.extend(self.group_records(GroupKind::Consumer, consumer));
        let before = log.high_watermark() - log.log_start_offset();
        let mut payload = bytes::BytesMut::new();
        for chunk in chunks_by_size(&changes) {
            let batch = offsets::encode_records(chunk, crate::shard::now_ms())
                .map_err(|e| StorageError::InvalidRecord(format!("offsets snapshot: {e}")))?;
            payload.extend_from_slice(&batch);
        }
        // One append: the snapshot is on disk entirely or not at all.
        let start = if payload.is_empty() {
            log.high_watermark()
        } else {
            log.append(payload.freeze(), crate::shard::now_ms())
                .await?
                .base_offset
        };
        log.delete_records(start).await?;
        self.log_records.set(changes.len());
        tracing::info!(
            records_before = before,
            records_after = changes.len(),
            "offsets log compacted"
        );
        Ok(())
    }

    /// True once the offsets table is loaded (and commits can be written).
    pub fn is_loaded(&self) -> bool {
        self.log.borrow().is_some()
    }

    /// Flushes and closes the offsets log (shutdown), after writing the groups that changed.
    pub async fn close(&self) {
        self.persist_groups().await;
        let log = self.log.borrow_mut().take();
        if let Some(log) = log {
            if let Err(e) = log.close().await {
                tracing::error!(error = %e, "closing the offsets log failed");
            }
        }
    }

    fn run(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Reply {
                    request_id,
                    response,
                } => {
                    let sender = self.replies.borrow_mut().remove(&request_id);
                    match sender {
                        // The requester may be gone (connection closed): nothing to do.
                        Some(sender) => {
                            let _ = sender.send(response);
                        }
                        None => panic!("reply to unknown request id {request_id}"),
                    }
                }
            }
        }
    }

    fn park(&self) -> (RequestId, flume::Receiver<Response>) {
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        let (tx, rx) = flume::bounded(1);
        self.replies.borrow_mut().insert(id, tx);
        (id, rx)
    }

    pub async fn join(&self, now_ms: i64, req: JoinRequest) -> JoinResponse {
        let member_id = req.member_id.clone();
        // An empty consumer group gives its id to the classic group (Kafka converts it); one
        // with members keeps it.
        if self
            .consumer
            .borrow_mut()
            .remove_if_empty(&req.group_id)
            .is_err()
        {
            return JoinResponse {
                error: Some(ResponseError::InconsistentGroupProtocol),
                generation_id: -1,
                protocol_type: None,
                protocol_name: None,
                leader: String::new(),
                member_id,
                members: Vec::new(),
            };
        }
        let (id, rx) = self.park();
        let effects = self.groups.borrow_mut().join(now_ms, id, req);
        self.run(effects);
        match rx.recv_async().await {
            Ok(Response::Join(r)) => r,
            _ => JoinResponse {
                error: Some(crate::error::coordinator_gone_code()),
                generation_id: -1,
                protocol_type: None,
                protocol_name: None,
                leader: String::new(),
                member_id,
                members: Vec::new(),
            },
        }
    }

    pub async fn sync(&self, now_ms: i64, req: SyncRequest) -> SyncResponse {
        let (id, rx) = self.park();
        let effects = self.groups.borrow_mut().sync(now_ms, id, req);
        self.run(effects);
        let answer = rx.recv_async().await;
        self.persist_groups().await;
        match answer {
            Ok(Response::Sync(r)) => r,
            _ => SyncResponse {
                error: Some(crate::error::coordinator_gone_code()),
                protocol_type: None,
                protocol_name: None,
                assignment: bytes::Bytes::new(),
            },
        }
    }

    pub fn heartbeat(
        &self,
        now_ms: i64,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Option<ResponseError> {
        self.groups.borrow_mut().heartbeat(
            now_ms,
            group_id,
            member_id,
            group_instance_id,
            generation_id,
        )
    }

    pub async fn leave(
        &self,
        now_ms: i64,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> (Option<ResponseError>, Vec<Option<ResponseError>>) {
        let (top, each, effects) = self.groups.borrow_mut().leave(now_ms, group_id, members);
        self.run(effects);
        self.persist_groups().await;
        (top, each)
    }

    /// Runs the group timers that are due: sessions, pending member ids, rebalance delays and
    /// timeouts (classic), sessions and revocations (KIP-848). Pure work, no I/O: the changes
    /// are written by the next [`GroupCoordinator::persist_groups`].
    pub fn tick(&self, now_ms: i64) {
        let effects = self.groups.borrow_mut().tick(now_ms);
        self.run(effects);
        self.consumer.borrow_mut().tick(now_ms);
        let offsets = self.offsets.borrow();
        self.groups
            .borrow_mut()
            .remove_empty_groups(|id| offsets.has_group(id));
        self.consumer
            .borrow_mut()
            .remove_empty_groups(|id| offsets.has_group(id));
    }

    /// When, after `now_ms`, [`GroupCoordinator::tick`] next has something to do, if ever.
    pub fn next_deadline_ms(&self, now_ms: i64) -> Option<i64> {
        let classic = self.groups.borrow().next_deadline_ms(now_ms);
        let consumer = self.consumer.borrow().next_deadline_ms(now_ms);
        classic.into_iter().chain(consumer).min()
    }

    /// Brings one group's timers up to `now_ms` (before it is described or deleted), so an
    /// expired member is gone from the answer even if the timer task has not run yet.
    fn tick_group(&self, group_id: &str, now_ms: i64) {
        let effects = self.groups.borrow_mut().tick_one(group_id, now_ms);
        self.run(effects);
        self.consumer.borrow_mut().tick(now_ms);
    }

    /// ConsumerGroupHeartbeat (KIP-848), answered at once. A classic group with members keeps
    /// its id (GROUP_ID_NOT_FOUND, as Kafka without online migration); an empty one is
    /// converted.
    pub async fn consumer_heartbeat(
        &self,
        now_ms: i64,
        version: i16,
        metadata: &crate::coordinator::metadata::ClusterMetadata,
        req: consumer_group::HeartbeatRequest,
    ) -> consumer_group::HeartbeatResponse {
        let classic_in_use = {
            let mut groups = self.groups.borrow_mut();
            match groups.group(&req.group_id) {
                None => false,
                Some(_) => groups.delete_group(&req.group_id).is_err(),
            }
        };
        if classic_in_use {
            return consumer_group::HeartbeatResponse {
                error: Some(ResponseError::GroupIdNotFound),
                error_message: Some(format!("Group {} is not a consumer group.", req.group_id)),
                member_id: None,
                member_epoch: 0,
                heartbeat_interval_ms: 0,
                assignment: None,
            };
        }
        if !self.is_loaded() {
            return consumer_group::HeartbeatResponse {
                error: Some(ResponseError::CoordinatorLoadInProgress),
                error_message: None,
                member_id: None,
                member_epoch: 0,
                heartbeat_interval_ms: 0,
                assignment: None,
            };
        }
        let view = TopicsView {
            version: metadata.version,
            topics: &metadata.topics,
        };
        let response = self
            .consumer
            .borrow_mut()
            .heartbeat(now_ms, version, view, req);
        self.persist_groups().await;
        response
    }

    /// ConsumerGroupDescribe of one group, or Kafka's GROUP_ID_NOT_FOUND message.
    pub fn consumer_describe(&self, group_id: &str) -> Result<ConsumerGroupDescription, String> {
        self.consumer.borrow_mut().tick(crate::shard::now_ms());
        let consumer = self.consumer.borrow();
        let Some(g) = consumer.group(group_id) else {
            return Err(if self.groups.borrow().group(group_id).is_some() {
                format!("Group {group_id} is not a consumer group.")
            } else {
                format!("Group {group_id} not found.")
            });
        };
        Ok(ConsumerGroupDescription {
            state: g.state_name(),
            group_epoch: g.group_epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor.clone(),
            members: g
                .members
                .values()
                .map(|m| m.describe(g.target.get(&m.member_id).cloned().unwrap_or_default()))
                .collect(),
        })
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

    /// Appends `records` to the offsets log and, once durable, applies the offsets among them
    /// to the table.
    async fn append_records(
        &self,
        records: Vec<LogRecord>,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        if records.is_empty() {
            return Ok(());
        }
        let log = self
            .log
            .borrow()
            .clone()
            .ok_or(crate::error::coordinator_gone_code())?;
        let mut payload = bytes::BytesMut::new();
        for chunk in chunks_by_size(&records) {
            let batch = offsets::encode_records(chunk, now_ms).map_err(|e| {
                tracing::error!(error = %e, "encoding an offsets batch failed");
                ResponseError::UnknownServerError
            })?;
            payload.extend_from_slice(&batch);
        }
        let Ok(_shared) = self.write_lock.read().await else {
            return Err(crate::error::coordinator_gone_code());
        };
        if let Err(e) = log.append(payload.freeze(), now_ms).await {
            tracing::error!(error = %e, "appending to the offsets log failed");
            return Err(crate::error::offsets_log_code(&e));
        }
        self.log_records.set(self.log_records.get() + records.len());
        let mut table = self.offsets.borrow_mut();
        for record in records {
            if let LogRecord::Offset(change) = record {
                table.apply(change);
            }
        }
        Ok(())
    }

    /// Deletes expired committed offsets (Kafka's `offsets.retention.minutes`), at most every
    /// `offsets.retention.check.interval.ms`; Empty groups left without offsets are then
    /// forgotten by the tick.
    pub async fn maybe_expire_offsets(&self, now_ms: i64) {
        let (retention_ms, interval_ms) = {
            let groups = self.groups.borrow();
            (
                groups.config.offsets_retention_ms,
                groups.config.offsets_retention_check_interval_ms,
            )
        };
        if now_ms - self.last_expiry_check_ms.get() < interval_ms || !self.is_loaded() {
            return;
        }
        self.last_expiry_check_ms.set(now_ms);
        let expired = self.expired_offsets(now_ms, retention_ms);
        if expired.is_empty() {
            return;
        }
        let count = expired.len();
        let changes = expired.into_iter().map(|key| (key, None)).collect();
        match self.write_offsets(changes, now_ms).await {
            Ok(()) => tracing::info!(count, "expired committed offsets deleted"),
            Err(e) => tracing::warn!(error = ?e, "deleting expired offsets failed"),
        }
    }

    /// The committed offsets that expired at `now_ms`, by Kafka's conditions (see
    /// `offsets::Expiry`).
    fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<OffsetKey> {
        use crate::coordinator::offsets::Expiry;
        let groups = self.groups.borrow();
        let consumer = self.consumer.borrow();
        let policy = |id: &str| {
            if let Some(g) = consumer.group(id) {
                return Expiry::Unsubscribed(g.subscribed_topic_names());
            }
            match groups.group(id) {
                None => Expiry::Unsubscribed(Default::default()),
                Some(g) if g.protocol_type.is_none() => Expiry::Unsubscribed(Default::default()),
                Some(g) if g.state == GroupState::Empty => Expiry::All {
                    since_ms: g.state_timestamp_ms,
                },
                Some(g) if g.state == GroupState::Stable => match g.subscribed_topics() {
                    Some(topics) => Expiry::Unsubscribed(topics),
                    None => Expiry::Never,
                },
                Some(_) => Expiry::Never,
            }
        };
        self.offsets.borrow().expired(now_ms, retention_ms, policy)
    }

    /// Deletes (durably) every committed offset of `topics` (they were deleted).
    pub async fn drop_topics(&self, topics: &[String], now_ms: i64) -> Result<(), ResponseError> {
        let changes = self.offsets.borrow().of_topics(topics);
        let changes = changes.into_iter().map(|key| (key, None)).collect();
        self.write_offsets(changes, now_ms).await
    }

    /// OffsetCommit of `entries` (topic, partition, value): Kafka's member and generation (or
    /// member epoch) checks, then a durable write. Returns one error per entry, or a
    /// group-level error for all of them.
    pub async fn commit(
        &self,
        now_ms: i64,
        who: &Committer,
        entries: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let Committer {
            group_id,
            member_id,
            group_instance_id,
            generation_id,
            api_version,
        } = who;
        let (group_id, member_id, group_instance_id) = (
            group_id.as_str(),
            member_id.as_str(),
            group_instance_id.as_deref(),
        );
        let (generation_id, api_version) = (*generation_id, *api_version);
        let consumer_check = self.consumer.borrow().validate_offset_commit(
            group_id,
            member_id,
            generation_id,
            api_version,
        );
        match consumer_check {
            Some(check) => check?,
            None => {
                self.groups.borrow().validate_offset_commit(
                    group_id,
                    member_id,
                    group_instance_id,
                    generation_id,
                )?;
                self.groups.borrow_mut().ensure_group(group_id);
            }
        }
        let mut errors = Vec::with_capacity(entries.len());
        let mut changes = Vec::with_capacity(entries.len());
        for (topic, partition, value) in entries {
            if value.metadata.len() > offsets::OFFSET_METADATA_BYTES_MAX {
                errors.push(Some(ResponseError::OffsetMetadataTooLarge));
                continue;
            }
            errors.push(None);
            changes.push((
                OffsetKey {
                    group: group_id.to_string(),
                    topic,
                    partition,
                },
                Some(value),
            ));
        }
        match self.write_offsets(changes, now_ms).await {
            Ok(()) => Ok(errors),
            Err(e) => Ok(errors.into_iter().map(|x| x.or(Some(e))).collect()),
        }
    }

    /// OffsetFetch for one group: the asked partitions (`None`: every committed one), each with
    /// its committed offset if any.
    pub fn fetch(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
        member: Option<(Option<String>, i32)>,
    ) -> Result<FetchedOffsets, ResponseError> {
        if !self.is_loaded() {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        if let Some((member_id, member_epoch)) = member {
            self.consumer.borrow().validate_offset_fetch(
                group_id,
                member_id.as_deref(),
                member_epoch,
            )?;
        }
        let table = self.offsets.borrow();
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| (p, table.get(group_id, &topic, p).cloned()))
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut out: FetchedOffsets = Vec::new();
                for ((topic, partition), value) in table.of_group(group_id) {
                    match out.last_mut() {
                        Some((t, parts)) if *t == topic => parts.push((partition, Some(value))),
                        _ => out.push((topic, vec![(partition, Some(value))])),
                    }
                }
                out
            }
        })
    }

    /// ListGroups: every group, including those known only by their committed offsets
    /// (reported Empty, as after a Kafka coordinator load).
    pub fn list(&self) -> Vec<ListedGroup> {
        let groups = self.groups.borrow();
        let mut out: BTreeMap<String, ListedGroup> = groups
            .groups()
            .map(|g| {
                (
                    g.group_id.clone(),
                    ListedGroup {
                        group_id: g.group_id.clone(),
                        protocol_type: g.protocol_type.clone().unwrap_or_default(),
                        state: g.state.name(),
                        group_type: "classic",
                    },
                )
            })
            .collect();
        for g in self.consumer.borrow().groups() {
            out.insert(
                g.group_id.clone(),
                ListedGroup {
                    group_id: g.group_id.clone(),
                    protocol_type: "consumer".into(),
                    state: g.state_name(),
                    group_type: "consumer",
                },
            );
        }
        for id in self.offsets.borrow().group_ids() {
            out.entry(id.clone()).or_insert_with(|| ListedGroup {
                group_id: id,
                protocol_type: String::new(),
                state: GroupState::Empty.name(),
                group_type: "classic",
            });
        }
        out.into_values().collect()
    }

    /// DescribeGroups of one group; `None` if the broker knows nothing of it.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        self.tick_group(group_id, crate::shard::now_ms());
        // A consumer group is not described here (Kafka: "is not a classic group").
        if self.consumer.borrow().group(group_id).is_some() {
            return None;
        }
        let groups = self.groups.borrow();
        let Some(g) = groups.group(group_id) else {
            return self
                .offsets
                .borrow()
                .has_group(group_id)
                .then(|| GroupDescription {
                    state: GroupState::Empty,
                    protocol_type: String::new(),
                    protocol_data: String::new(),
                    members: Vec::new(),
                });
        };
        let stable = g.state == GroupState::Stable;
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let stable_protocol = stable.then_some(protocol.as_str());
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            // Kafka gives the protocol and the members' metadata and assignment only when the
            // group is stable.
            protocol_data: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members_in_order()
                .into_iter()
                .map(|m| m.describe(stable_protocol))
                .collect(),
        })
    }

    /// DeleteGroups of one group: NON_EMPTY_GROUP while it has members, GROUP_ID_NOT_FOUND if
    /// unknown; otherwise its committed offsets are deleted durably, then the group.
    pub async fn delete_group(&self, now_ms: i64, group_id: &str) -> Result<(), ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        self.tick_group(group_id, now_ms);
        if self.consumer.borrow().has_members(group_id) {
            return Err(ResponseError::NonEmptyGroup);
        }
        let known_consumer_group = self.consumer.borrow().group(group_id).is_some();
        let known_group = self.groups.borrow().group(group_id).is_some();
        if known_group {
            self.groups.borrow().check_deletable(group_id)?;
        } else if !known_consumer_group && !self.offsets.borrow().has_group(group_id) {
            return Err(ResponseError::GroupIdNotFound);
        }
        let tombstones: Vec<OffsetChange> = self
            .offsets
            .borrow()
            .of_group(group_id)
            .into_iter()
            .map(|((topic, partition), _)| {
                (
                    OffsetKey {
                        group: group_id.to_string(),
                        topic,
                        partition,
                    },
                    None,
                )
            })
            .collect();
        self.write_offsets(tombstones, now_ms).await?;
        // A member may have joined while the tombstones were written: then the group stays.
        let result = if known_consumer_group {
            self.consumer.borrow_mut().remove_if_empty(group_id)
        } else {
            match self.groups.borrow_mut().delete_group(group_id) {
                Ok(()) | Err(ResponseError::GroupIdNotFound) => Ok(()),
                Err(e) => Err(e),
            }
        };
        self.persist_groups().await;
        result
    }

    /// OffsetDelete: removes committed offsets of partitions the group's members do not
    /// subscribe to. Returns one error per asked partition, or a group-level error.
    pub async fn delete_offsets(
        &self,
        now_ms: i64,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let subscribed = {
            let groups = self.groups.borrow();
            let consumer = self.consumer.borrow();
            match groups.group(group_id) {
                None if consumer.group(group_id).is_some() => {
                    consumer.group(group_id).map(|g| g.subscribed_topic_names())
                }
                None if !self.offsets.borrow().has_group(group_id) => {
                    return Err(ResponseError::GroupIdNotFound)
                }
                None => Some(Default::default()),
                Some(g) if g.is_empty() => Some(Default::default()),
                Some(g) => g.subscribed_topics(),
            }
        };
        let mut errors = Vec::with_capacity(partitions.len());
        let mut changes = Vec::new();
        for (topic, partition) in partitions {
            let in_use = subscribed.as_ref().is_none_or(|s| s.contains(&topic));
            if in_use {
                errors.push(Some(ResponseError::GroupSubscribedToTopic));
                continue;
            }
            errors.push(None);
            if self
                .offsets
                .borrow()
                .get(group_id, &topic, partition)
                .is_some()
            {
                changes.push((
                    OffsetKey {
                        group: group_id.to_string(),
                        topic,
                        partition,
                    },
                    None,
                ));
            }
        }
        self.write_offsets(changes, now_ms).await?;
        Ok(errors)
    }
}

/// The group and member fields of an OffsetCommit request.
#[derive(Clone, Debug)]
pub struct Committer {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The generation (classic groups) or member epoch (consumer groups); -1 for none.
    pub generation_id: i32,
    pub api_version: i16,
}

/// What ConsumerGroupDescribe reports of a consumer group.
#[derive(Clone, Debug)]
pub struct ConsumerGroupDescription {
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<ConsumerMemberDescription>,
}

/// What ConsumerGroupDescribe reports of a member (shared with DescribeGroups' member
/// description through `coordinator::member`).
pub use crate::coordinator::member::{ConsumerMemberDescription, MemberDescription};

/// One row of ListGroups.
#[derive(Clone, Debug)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    /// Kafka's state name for the group's type.
    pub state: &'static str,
    /// "classic" or "consumer".
    pub group_type: &'static str,
}

/// What DescribeGroups reports of a group.
#[derive(Clone, Debug)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_data: String,
    pub members: Vec<MemberDescription>,
}

/// OffsetFetch's answer for one group: per topic, per partition, the committed offset if any.
pub type FetchedOffsets = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T: 'static>(fut: impl std::future::Future<Output = T> + 'static) -> T {
        glommio::LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .ring_depth(512)
            .make()
            .expect("glommio executor")
            .run(fut)
    }

    fn key(p: i32) -> OffsetKey {
        OffsetKey {
            group: "g".into(),
            topic: "t".into(),
            partition: p,
        }
    }

    fn value(offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 1,
        }
    }

    fn classic_join(member: &str) -> JoinRequest {
        JoinRequest {
            group_id: "classic".into(),
            member_id: member.into(),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), bytes::Bytes::from_static(b"sub"))],
            ..Default::default()
        }
    }

    /// Group metadata is persisted in the offsets log and rebuilt on load, also after the log
    /// is compacted: a stable classic group comes back Stable with its generation, members
    /// and assignments; a consumer group with its epochs and assignments; a deleted group
    /// stays deleted.
    #[test]
    fn groups_survive_reload_and_compaction() {
        use crate::coordinator::consumer_group::HeartbeatRequest;
        use crate::coordinator::metadata::{ClusterMetadata, TopicMeta};
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        run(async move {
            let cache = TailCache::new(1 << 20);
            let config = || {
                (
                    GroupConfig {
                        initial_rebalance_delay_ms: 0,
                        ..GroupConfig::default()
                    },
                    ConsumerGroupConfig::default(),
                )
            };
            let (gc, cc) = config();
            let c = GroupCoordinator::new(gc, cc);
            c.load(&data_dir, cache.clone()).await.unwrap();
            let now = crate::shard::now_ms();
            // A classic group: one member joins and syncs its assignment.
            let e = c.groups.borrow_mut().join(now, 1, classic_join(""));
            let m1 = match &e[0] {
                Effect::Reply {
                    response: Response::Join(j),
                    ..
                } if j.generation_id == 1 => j.member_id.clone(),
                other => panic!("{other:?}"),
            };
            let sync = SyncRequest {
                group_id: "classic".into(),
                member_id: m1.clone(),
                generation_id: 1,
                assignments: vec![(m1.clone(), bytes::Bytes::from_static(b"assigned"))],
                ..Default::default()
            };
            c.groups.borrow_mut().sync(now, 2, sync);
            // A group that is deleted before the restart.
            let e = c.groups.borrow_mut().join(now, 3, {
                let mut r = classic_join("");
                r.group_id = "gone".into();
                r
            });
            let x1 = match &e[0] {
                Effect::Reply {
                    response: Response::Join(j),
                    ..
                } => j.member_id.clone(),
                other => panic!("{other:?}"),
            };
            c.persist_groups().await;
            c.groups.borrow_mut().leave(now, "gone", &[(x1, None)]);
            c.groups.borrow_mut().delete_group("gone").unwrap();
            // A consumer group.
            let mut metadata = ClusterMetadata::default();
            let topic_id = uuid::Uuid::from_bytes([9; 16]);
            metadata.topics.insert(
                "t".into(),
                TopicMeta {
                    id: topic_id,
                    partitions: 3,
                    configs: BTreeMap::new(),
                    internal: false,
                },
            );
            let r = c
                .consumer_heartbeat(
                    now,
                    1,
                    &metadata,
                    HeartbeatRequest {
                        group_id: "kip848".into(),
                        member_id: "c1".into(),
                        member_epoch: 0,
                        rebalance_timeout_ms: 30_000,
                        subscribed_topic_names: Some(vec!["t".into()]),
                        owned: Some(Vec::new()),
                        ..Default::default()
                    },
                )
                .await;
            assert_eq!(r.member_epoch, 1);
            c.persist_groups().await;
            c.close().await;

            for round in 0..2 {
                let (gc, cc) = config();
                let c = GroupCoordinator::new(gc, cc);
                c.load(&data_dir, cache.clone()).await.unwrap();
                {
                    let groups = c.groups.borrow();
                    let g = groups.group("classic").expect("classic group restored");
                    assert_eq!(g.state, GroupState::Stable);
                    assert_eq!(g.generation_id, 1);
                    assert_eq!(g.leader.as_deref(), Some(m1.as_str()));
                    assert_eq!(&g.members[&m1].assignment[..], b"assigned");
                    assert!(groups.group("gone").is_none(), "round {round}");
                    let consumer = c.consumer.borrow();
                    let k = consumer.group("kip848").expect("consumer group restored");
                    assert_eq!((k.group_epoch, k.assignment_epoch), (1, 1));
                    assert_eq!(k.members["c1"].member_epoch, 1);
                    assert_eq!(k.members["c1"].assigned[&topic_id], [0, 1, 2].into());
                }
                // The restored member goes on heartbeating with its epoch.
                assert_eq!(
                    c.groups.borrow_mut().heartbeat(
                        crate::shard::now_ms(),
                        "classic",
                        &m1,
                        None,
                        1
                    ),
                    None
                );
                if round == 0 {
                    let log = c.log.borrow().clone().unwrap();
                    let _exclusive = c.write_lock.write().await.unwrap();
                    c.compact(&log).await.unwrap();
                }
                c.close().await;
            }
        });
    }

    /// Expired offsets are deleted durably: a simple consumer's by commit time, an Empty
    /// classic group's once it has been empty for the retention; a live group keeps its own.
    #[test]
    fn expired_offsets_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        run(async move {
            let cache = TailCache::new(1 << 20);
            let config = GroupConfig {
                initial_rebalance_delay_ms: 0,
                offsets_retention_ms: 1_000,
                offsets_retention_check_interval_ms: 0,
                ..GroupConfig::default()
            };
            let c = GroupCoordinator::new(config, ConsumerGroupConfig::default());
            c.load(&data_dir, cache.clone()).await.unwrap();
            let at = |group: &str, committed: i64| {
                (
                    OffsetKey {
                        group: group.into(),
                        topic: "t".into(),
                        partition: 0,
                    },
                    Some(CommittedOffset {
                        commit_timestamp_ms: committed,
                        ..value(1)
                    }),
                )
            };
            c.write_offsets(vec![at("simple", 0), at("live", 0)], 0)
                .await
                .unwrap();
            // "live" is a classic group with a member (PreparingRebalance, then joined).
            c.groups.borrow_mut().join(0, 1, {
                let mut r = classic_join("");
                r.group_id = "live".into();
                r
            });
            c.maybe_expire_offsets(500).await;
            assert_eq!(c.offsets.borrow().len(), 2, "not expired yet");
            c.maybe_expire_offsets(5_000).await;
            assert!(c.offsets.borrow().get("simple", "t", 0).is_none());
            assert!(c.offsets.borrow().get("live", "t", 0).is_some());
            c.close().await;
            let c = GroupCoordinator::new(GroupConfig::default(), ConsumerGroupConfig::default());
            c.load(&data_dir, cache).await.unwrap();
            assert!(
                c.offsets.borrow().get("simple", "t", 0).is_none(),
                "durably"
            );
            c.close().await;
        });
    }

    /// Committed offsets come back after a reload; a log of mostly superseded records is
    /// compacted at load to just the live offsets, and loads back to the same table.
    #[test]
    fn offsets_survive_reload_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        run(async move {
            let cache = TailCache::new(1 << 20);
            let c = GroupCoordinator::new(GroupConfig::default(), ConsumerGroupConfig::default());
            c.load(&data_dir, cache.clone()).await.unwrap();
            for round in 0..120 {
                let changes = (0..100).map(|p| (key(p), Some(value(round)))).collect();
                c.write_offsets(changes, crate::shard::now_ms())
                    .await
                    .unwrap();
            }
            c.write_offsets(vec![(key(99), None)], crate::shard::now_ms())
                .await
                .unwrap();
            // While running, the tick loop's compaction shrinks the log to the live offsets.
            c.maybe_compact().await.unwrap();
            assert_eq!(c.log_records.get(), 99);
            c.write_offsets(vec![(key(0), Some(value(119)))], crate::shard::now_ms())
                .await
                .unwrap();
            c.close().await;

            for _ in 0..2 {
                let c =
                    GroupCoordinator::new(GroupConfig::default(), ConsumerGroupConfig::default());
                c.load(&data_dir, cache.clone()).await.unwrap();
                {
                    let table = c.offsets.borrow();
                    assert_eq!(table.len(), 99);
                    assert_eq!(table.get("g", "t", 0), Some(&value(119)));
                    assert_eq!(table.get("g", "t", 99), None);
                }
                c.close().await;
            }
            let log = PartitionLog::open(&offsets_log_dir(&data_dir), LogConfig::default(), cache)
                .await
                .unwrap();
            assert_eq!(log.high_watermark() - log.log_start_offset(), 100);
            log.close().await.unwrap();
        });
    }
}
