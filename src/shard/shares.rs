//! Share groups (KIP-932) on the coordinator shard: runs the pure state machines of
//! `coordinator::share_group` (membership) and `coordinator::share_partition` (acquire and
//! acknowledge per share partition), keeps the share sessions of ShareFetch /
//! ShareAcknowledge, and the durable share state.
//!
//! [`ShareCoordinator`] lives inside every [`super::Shard`] but is used on shard 0 only
//! (loaded by [`ShareCoordinator::load`] at startup, closed at shutdown); the API handlers
//! and the HTTP share streams (`crate::http::share`, members that acquire with
//! [`fetch_records`] without a share session) reach it with `invoke_on(COORDINATOR_SHARD, ...)`. Share partitions are kept on shard 0 too
//! (not on the partition's owning shard): records are read from the owner with `invoke_on`,
//! so one share partition has one state machine whatever shard a request arrives on.
//!
//! - Durability: the state of each share partition (start and end offsets, the in-flight
//!   records with their delivery counts; Kafka's `ShareSnapshot`) is appended to the internal
//!   log `<data_dir>/internal/__share_group_state-0/` ([`SHARE_STATE_LOG_NAME`], an
//!   [`InternalLog`]) before a ShareAcknowledge (or a ShareFetch carrying acknowledgements) is
//!   answered; the last record of a share partition wins on replay ([`ShareCoordinator::load`]),
//!   acquired records come back available (their locks are gone), and the log is compacted to
//!   one record per share partition. Changes without an answer waiting (lock timeouts, members
//!   leaving, a new share partition's start offset) are written by the tick within
//!   [`SHARE_TICK_INTERVAL_MS`].
//! - Sessions (Kafka's `ShareSessionCache`): keyed by (group, member); epoch 0 opens one (no
//!   acknowledgements allowed), -1 closes it (acknowledgements only, then the member's acquired
//!   records are released), any other epoch must be the session's next
//!   (INVALID_SHARE_SESSION_EPOCH; SHARE_SESSION_NOT_FOUND without a session). At most
//!   `group_share_max_share_sessions` (SHARE_SESSION_LIMIT_REACHED beyond).
//! - The first fetch of a share partition starts it at the log end (`share_auto_offset_reset`
//!   `latest`, Kafka's default) or the log start (`earliest`).
//!
//! Bounds: a share partition holds at most `group_share_partition_max_record_locks` in-flight
//! records (see `share_partition`), a ShareFetch returns at most `max_records` records and
//! about `max_bytes` bytes. Not done yet: membership is not persisted (members rejoin after a
//! restart).
//!
//! In a cluster (`replicated`): the share partitions of a topic partition live on its leader
//! (NOT_LEADER_OR_FOLLOWER elsewhere) and their durable state goes to the share coordinators
//! of `__share_group_state` instead of the node-local log, which a cluster does not use.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Shard, COORDINATOR_SHARD};
use crate::cluster::broker_client::{BrokerClient, BrokerClientLimits};
use crate::coordinator::share_group::{ShareGroupConfig, ShareGroups};
use crate::coordinator::share_partition::{
    AcquiredRange, BatchSpan, ShareLimits, SharePartition, ShareState,
};
use crate::protocol::batch;
use crate::storage::internal_log::{internal_log_dir, InternalLog, InternalLogLimits, RecordCodec};
use crate::storage::{StorageError, TailCache};

pub mod replicated;

/// The share-state log's name (Kafka's `__share_group_state`).
pub const SHARE_STATE_LOG_NAME: &str = "__share_group_state";
/// How often lock timeouts, member expiry and deferred share-state writes run.
pub const SHARE_TICK_INTERVAL_MS: u64 = 250;
/// The longest a ShareFetch with nothing to hand out waits between looks (locks that run out
/// and releases make records available without an append).
const SHARE_FETCH_POLL_MS_MAX: u64 = 100;
/// Bytes read from a partition per look of a ShareFetch.
const SHARE_READ_BYTES_MAX: usize = 1 << 20;

/// The share-state log's limits: a record holds one share partition's state (at most
/// `record_locks_max` runs, about 20 bytes each as JSON: 2000 locks fit 64 KiB).
pub const SHARE_STATE_LOG_LIMITS: InternalLogLimits = InternalLogLimits {
    compact_records_min: 10_000,
    compact_ratio: 2,
    batch_records_max: 100,
    batch_bytes_max: 512 * 1024,
    max_message_bytes: 8 * 1_048_576,
    segment_bytes: 16 * 1024 * 1024,
};

/// A share partition: a group's view of one topic partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShareKey {
    pub group: String,
    pub topic_id: Uuid,
    pub partition: i32,
}

/// One record of the share-state log: a share partition's state, or its removal (`None`).
pub type ShareLogRecord = (ShareKey, Option<ShareState>);

/// The share-state log's encoding: JSON key and value in a plain record batch.
pub struct ShareStateCodec;

impl RecordCodec for ShareStateCodec {
    type Record = ShareLogRecord;
    const NAME: &'static str = "share-state log";

    fn encode_batch(records: &[ShareLogRecord], now_ms: i64) -> Result<Bytes, String> {
        let mut out = Vec::with_capacity(records.len());
        for (key, state) in records {
            let key = serde_json::to_vec(key).map_err(|e| e.to_string())?;
            let value = match state {
                Some(s) => Some(Bytes::from(
                    serde_json::to_vec(s).map_err(|e| e.to_string())?,
                )),
                None => None,
            };
            out.push((Some(Bytes::from(key)), value, now_ms));
        }
        batch::encode_batch(&out, batch::Compression::None)
    }

    fn decode_batches(mut bytes: Bytes) -> Result<(Vec<ShareLogRecord>, i64), String> {
        use bytes::Buf;
        let mut records = Vec::new();
        let mut next_offset = -1;
        while bytes.has_remaining() {
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
                .map_err(|e| e.to_string())?;
            for record in set.records {
                next_offset = record.offset + 1;
                let key = record.key.ok_or("share-state record without a key")?;
                let key: ShareKey = serde_json::from_slice(&key).map_err(|e| e.to_string())?;
                let state = match record.value {
                    Some(v) => Some(serde_json::from_slice(&v).map_err(|e| e.to_string())?),
                    None => None,
                };
                records.push((key, state));
            }
        }
        Ok((records, next_offset))
    }

    fn record_bytes((key, state): &ShareLogRecord) -> usize {
        key.group.len() + 96 + state.as_ref().map_or(0, |s| s.in_flight.len() * 24)
    }
}

/// Where an admin change of share state is written (`ShareCoordinator::admin_sink`).
enum AdminSink {
    Local(Rc<InternalLog<ShareStateCodec>>),
    Cluster(Rc<Shard>),
}

/// A share session (Kafka's `ShareSession`): the partitions a member fetches and the epoch its
/// next request must carry.
#[derive(Debug)]
struct ShareSession {
    next_epoch: i32,
    partitions: BTreeSet<(Uuid, i32)>,
}

/// Share-session epochs: 0 opens, -1 closes.
pub const SESSION_OPEN_EPOCH: i32 = 0;
pub const SESSION_CLOSE_EPOCH: i32 = -1;
/// How long a member that left its group keeps its open share session for its final
/// acknowledgements ([`ShareCoordinator::member_leaving`]).
pub const LEAVE_GRACE_MS: i64 = 5_000;

/// One acknowledgement batch of a request: (first, last, types).
pub type AckBatch = (i64, i64, Vec<i8>);

/// The coordinator shard's share groups; see the module doc.
pub struct ShareCoordinator {
    pub groups: RefCell<ShareGroups>,
    partitions: RefCell<HashMap<ShareKey, SharePartition>>,
    sessions: RefCell<HashMap<(String, String), ShareSession>>,
    /// Members that left their group (a leave heartbeat) while their share session was open:
    /// the session and the records it holds stay until the member's final ShareAcknowledge or
    /// ShareFetch (epoch -1) or this deadline, whichever comes first (a closing client sends
    /// the leave and its last acknowledgements at once, on different connections).
    leaving: RefCell<HashMap<(String, String), i64>>,
    /// In a cluster (empty on a single node): groups whose last share session on this node
    /// closed, at most one entry per group with share partitions here; the tick drops
    /// their share partitions from memory once written and without acquired records, so the
    /// next fetch loads them from the share coordinator and sees admin changes made while the
    /// group was empty (Kafka's `SharePartitionManager` does the same when the group empties).
    emptied: RefCell<BTreeSet<String>>,
    /// Share partitions changed since their last write.
    dirty: RefCell<BTreeSet<ShareKey>>,
    log: RefCell<Option<Rc<InternalLog<ShareStateCodec>>>>,
    /// Serializes writes, so a later record of a share partition holds a later state.
    write_lock: crate::rt::sync::Semaphore,
    limits: ShareLimits,
    sessions_max: usize,
    start_at_earliest: bool,
    /// In a cluster: the coordinator shard (the share-state calls need it; module doc).
    cluster: RefCell<Option<Weak<Shard>>>,
    /// In a cluster: the leader epoch of its topic partition each share partition was loaded
    /// at (written with its state; a new epoch loads it again).
    leader_epochs: RefCell<HashMap<ShareKey, i32>>,
    /// In a cluster: the state epoch of the state each share partition was loaded from (its
    /// writes carry it; an admin change since fences them, `replicated`).
    state_epochs: RefCell<HashMap<ShareKey, i32>>,
    /// In a cluster: this node's share-coordinator store (`replicated`).
    store: RefCell<Option<Rc<replicated::ShareStateStore>>>,
    /// The share-state calls to other brokers' share coordinators.
    client: BrokerClient,
    /// True on a cluster node once `start_cluster` ran.
    cluster_started: Cell<bool>,
}

/// What a session check decided for a request.
pub enum SessionCheck {
    /// Go on with these session partitions (empty for a closing request).
    Ok(Vec<(Uuid, i32)>),
    Refused(ResponseError),
}

impl ShareCoordinator {
    pub fn new(config: &crate::config::BrokerConfig) -> ShareCoordinator {
        ShareCoordinator {
            groups: RefCell::new(ShareGroups::new(ShareGroupConfig {
                session_timeout_ms: config.group_share_session_timeout_ms,
                heartbeat_interval_ms: config.group_share_heartbeat_interval_ms,
            })),
            partitions: RefCell::new(HashMap::new()),
            sessions: RefCell::new(HashMap::new()),
            leaving: RefCell::new(HashMap::new()),
            emptied: RefCell::new(BTreeSet::new()),
            dirty: RefCell::new(BTreeSet::new()),
            log: RefCell::new(None),
            write_lock: crate::rt::sync::Semaphore::new(1),
            limits: ShareLimits {
                record_lock_duration_ms: config.group_share_record_lock_duration_ms,
                delivery_count_limit: config.group_share_delivery_count_limit,
                record_locks_max: config.group_share_partition_max_record_locks,
            },
            sessions_max: config.group_share_max_share_sessions,
            start_at_earliest: config.share_auto_offset_reset == "earliest",
            cluster: RefCell::new(None),
            leader_epochs: RefCell::new(HashMap::new()),
            state_epochs: RefCell::new(HashMap::new()),
            store: RefCell::new(None),
            client: BrokerClient::new("freshet-broker", BrokerClientLimits::default()),
            cluster_started: Cell::new(false),
        }
    }

    /// A cluster node: the share state goes to the share coordinators (module doc); this
    /// node's coordinator shard serves the `__share_group_state` partitions it leads.
    pub fn start_cluster(&self, shard: &Rc<Shard>) {
        *self.cluster.borrow_mut() = Some(Rc::downgrade(shard));
        *self.store.borrow_mut() = Some(replicated::ShareStateStore::start(shard));
        self.cluster_started.set(true);
    }

    /// The coordinator shard, in a cluster.
    fn cluster_shard(&self) -> Option<Rc<Shard>> {
        self.cluster.borrow().as_ref().and_then(Weak::upgrade)
    }

    /// A metadata install on the coordinator shard (a cluster): the share coordinator's
    /// partitions load or unload, and share partitions whose topic partition this node no
    /// longer leads at the same epoch are dropped from memory (their next leader loads them).
    pub fn on_metadata(&self, metadata: &crate::coordinator::metadata::ClusterMetadata) {
        let store = self.store.borrow().clone();
        let Some(store) = store else { return };
        store.on_metadata(metadata);
        let Some(shard) = self.cluster_shard() else {
            return;
        };
        let me = shard.config.node_id;
        let moved: Vec<ShareKey> = self
            .leader_epochs
            .borrow()
            .iter()
            .filter(|(k, &epoch)| {
                metadata
                    .topic_by_id(k.topic_id)
                    .and_then(|(_, m)| m.assignment.get(k.partition as usize))
                    .is_none_or(|a| a.leader != me || a.leader_epoch != epoch)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in moved {
            self.forget(&key);
        }
    }

    /// Drops a share partition from memory without a write (a cluster: its topic partition
    /// moved; the share coordinator keeps its last written state).
    fn forget(&self, key: &ShareKey) {
        self.partitions.borrow_mut().remove(key);
        self.dirty.borrow_mut().remove(key);
        self.leader_epochs.borrow_mut().remove(key);
        self.state_epochs.borrow_mut().remove(key);
    }

    /// The record lock duration of `group` (ShareFetch's `acquisition_lock_timeout_ms`): its
    /// `share.record.lock.duration.ms` group config, else `group_share_record_lock_duration_ms`.
    pub fn lock_duration_ms(
        &self,
        metadata: &crate::coordinator::metadata::ClusterMetadata,
        group: &str,
    ) -> i64 {
        crate::coordinator::group_config::share_record_lock_duration_ms(
            metadata.group_configs.get(group),
            self.limits.record_lock_duration_ms,
        )
    }

    /// True once the share state is loaded.
    pub fn is_loaded(&self) -> bool {
        self.log.borrow().is_some() || self.cluster_started.get()
    }

    /// Opens the share-state log under `data_dir` and rebuilds every share partition (and its
    /// group) from it, then compacts it if due.
    pub async fn load(&self, data_dir: &Path, cache: Rc<TailCache>) -> Result<(), StorageError> {
        let mut states: BTreeMap<ShareKey, Option<ShareState>> = BTreeMap::new();
        let log = InternalLog::<ShareStateCodec>::open(
            &internal_log_dir(data_dir, SHARE_STATE_LOG_NAME),
            SHARE_STATE_LOG_LIMITS,
            cache,
            |(key, state)| {
                states.insert(key, state);
            },
        )
        .await?;
        {
            let mut partitions = self.partitions.borrow_mut();
            let mut groups = self.groups.borrow_mut();
            for (key, state) in states {
                if let Some(state) = state {
                    groups.ensure(&key.group);
                    partitions.insert(key, SharePartition::restore(self.limits, &state));
                }
            }
        }
        *self.log.borrow_mut() = Some(Rc::new(log));
        self.maybe_compact().await;
        Ok(())
    }

    /// Flushes pending writes and closes the log (shutdown).
    pub async fn close(&self) {
        self.write_dirty().await;
        let log = self.log.borrow_mut().take();
        if let Some(log) = log {
            if let Err(e) = log.close().await {
                tracing::error!(error = %e, "closing the share-state log failed");
            }
        }
    }

    fn log(&self) -> Option<Rc<InternalLog<ShareStateCodec>>> {
        self.log.borrow().clone()
    }

    /// Writes the states of `keys` durably (the share partitions as they are when the write
    /// starts). Serialized with other writes.
    pub async fn write(&self, keys: BTreeSet<ShareKey>) -> Result<(), ResponseError> {
        if keys.is_empty() {
            return Ok(());
        }
        if let Some(shard) = self.cluster_shard() {
            return self.write_replicated(&shard, keys).await;
        }
        let closed = || crate::error::storage_code(&StorageError::Closed);
        let Some(log) = self.log() else {
            return Err(closed());
        };
        let Ok(_permit) = self.write_lock.acquire_permit(1).await else {
            return Err(closed());
        };
        let records: Vec<ShareLogRecord> = {
            let partitions = self.partitions.borrow();
            let mut dirty = self.dirty.borrow_mut();
            keys.into_iter()
                .map(|k| {
                    dirty.remove(&k);
                    let state = partitions.get(&k).map(|p| p.state());
                    (k, state)
                })
                .collect()
        };
        log.append(records, super::now_ms(), |_| {})
            .await
            .map_err(|e| crate::error::storage_code(&e))
    }

    /// A cluster's write: each share partition's state (as it is when the write starts) to
    /// its share coordinator with the leader epoch it was loaded at; share partitions no
    /// longer here are skipped (never removed by a deposed leader). The first error is
    /// answered; the others are still written.
    async fn write_replicated(
        &self,
        shard: &Rc<Shard>,
        keys: BTreeSet<ShareKey>,
    ) -> Result<(), ResponseError> {
        let Ok(_permit) = self.write_lock.acquire_permit(1).await else {
            return Err(crate::error::coordinator_gone_code());
        };
        let records: Vec<(ShareKey, ShareState, i32)> = {
            let partitions = self.partitions.borrow();
            let epochs = self.leader_epochs.borrow();
            let state_epochs = self.state_epochs.borrow();
            let mut dirty = self.dirty.borrow_mut();
            keys.into_iter()
                .filter_map(|k| {
                    dirty.remove(&k);
                    let mut state = partitions.get(&k)?.state();
                    state.state_epoch = state_epochs.get(&k).copied().unwrap_or(0);
                    let epoch = *epochs.get(&k)?;
                    Some((k, state, epoch))
                })
                .collect()
        };
        let mut answer = Ok(());
        for (key, state, epoch) in records {
            match replicated::write_state(shard, key.clone(), Some(state), epoch).await {
                Ok(()) => {}
                Err(ResponseError::FencedStateEpoch) => {
                    // An admin change since this copy was loaded: drop it; the next fetch
                    // loads the changed state (Kafka's fenced share partition).
                    tracing::info!(
                        group = key.group,
                        partition = key.partition,
                        "share partition fenced by a newer state epoch; reloaded at the next fetch"
                    );
                    self.forget(&key);
                    answer = answer.and(Err(ResponseError::FencedStateEpoch));
                }
                Err(e) => {
                    tracing::debug!(error = ?e, "writing a share state to its coordinator failed");
                    answer = answer.and(Err(e));
                }
            }
        }
        answer
    }

    /// Writes every share partition changed without a request waiting for it.
    pub async fn write_dirty(&self) {
        let keys = std::mem::take(&mut *self.dirty.borrow_mut());
        if let Err(e) = self.write(keys.clone()).await {
            tracing::warn!(error = ?e, "writing share state failed; retried on the next tick");
            self.dirty.borrow_mut().extend(keys);
        }
    }

    async fn maybe_compact(&self) {
        let Some(log) = self.log() else { return };
        let live = || self.partitions.borrow().len();
        let snapshot = || {
            self.partitions
                .borrow()
                .iter()
                .map(|(k, p)| (k.clone(), Some(p.state())))
                .collect()
        };
        if let Err(e) = log.compact_if_due(live, snapshot).await {
            tracing::warn!(error = %e, "compacting the share-state log failed");
        }
    }

    /// The timers: member sessions, record locks; then the deferred writes and compaction.
    pub async fn tick(
        &self,
        now_ms: i64,
        topics: &BTreeMap<String, crate::coordinator::metadata::TopicMeta>,
    ) {
        let gone = self.groups.borrow_mut().expire(now_ms, topics);
        for (group, member) in gone {
            self.member_left(&group, &member);
        }
        let done: Vec<(String, String)> = self
            .leaving
            .borrow()
            .iter()
            .filter(|(_, &deadline)| now_ms >= deadline)
            .map(|(key, _)| key.clone())
            .collect();
        for (group, member) in done {
            self.member_left(&group, &member);
        }
        {
            let mut partitions = self.partitions.borrow_mut();
            let mut dirty = self.dirty.borrow_mut();
            for (key, p) in partitions.iter_mut() {
                if p.expire_locks(now_ms) {
                    dirty.insert(key.clone());
                }
            }
        }
        self.write_dirty().await;
        if self.cluster_started.get() {
            self.drop_emptied_groups();
        }
        self.maybe_compact().await;
    }

    /// A cluster's tick: the share partitions of groups without a share session on this node
    /// leave memory once written and without acquired records (see `emptied`).
    fn drop_emptied_groups(&self) {
        let groups: Vec<String> = self.emptied.borrow().iter().cloned().collect();
        for group in groups {
            let in_use = self.sessions.borrow().keys().any(|(g, _)| *g == group);
            let keys: Vec<ShareKey> = {
                let partitions = self.partitions.borrow();
                let dirty = self.dirty.borrow();
                partitions
                    .iter()
                    .filter(|(k, p)| {
                        k.group == group && !dirty.contains(*k) && p.counts().acquired == 0
                    })
                    .map(|(k, _)| k.clone())
                    .collect()
            };
            if in_use {
                self.emptied.borrow_mut().remove(&group);
                continue;
            }
            for key in &keys {
                self.forget(key);
            }
            let left = self.partitions.borrow().keys().any(|k| k.group == group);
            if !left {
                self.emptied.borrow_mut().remove(&group);
            }
        }
    }

    /// A member left its group (or its session ended): its share session goes and the records
    /// it holds are released.
    pub fn member_left(&self, group: &str, member: &str) {
        let key = (group.to_string(), member.to_string());
        self.leaving.borrow_mut().remove(&key);
        if self.sessions.borrow_mut().remove(&key).is_some() && self.cluster_started.get() {
            self.emptied.borrow_mut().insert(group.to_string());
        }
        self.release_member(group, member);
    }

    /// A member sent its leave heartbeat at `now_ms`. With a share session open, the session
    /// and the records it holds stay for [`LEAVE_GRACE_MS`] (see `leaving`), so the final
    /// acknowledgements a closing client sends beside the leave still count (librdkafka's
    /// 0178); without one it is [`ShareCoordinator::member_left`] at once.
    pub fn member_leaving(&self, group: &str, member: &str, now_ms: i64) {
        let key = (group.to_string(), member.to_string());
        if self.sessions.borrow().contains_key(&key) {
            self.leaving
                .borrow_mut()
                .insert(key, now_ms + LEAVE_GRACE_MS);
        } else {
            self.member_left(group, member);
        }
    }

    fn release_member(&self, group: &str, member: &str) {
        let mut partitions = self.partitions.borrow_mut();
        let mut dirty = self.dirty.borrow_mut();
        for (key, p) in partitions.iter_mut() {
            if key.group == group && p.release_member(member) {
                dirty.insert(key.clone());
            }
        }
    }

    /// How many records `member` of `group` holds acquired, over all share partitions (what
    /// bounds an HTTP share stream: `crate::http::share`).
    pub fn member_acquired(&self, now_ms: i64, group: &str, member: &str) -> usize {
        self.partitions
            .borrow()
            .iter()
            .filter(|(k, _)| k.group == group)
            .map(|(_, p)| p.acquired_by(now_ms, member))
            .sum()
    }

    /// Checks (and moves on) the share session of a ShareFetch (`fetch`) or ShareAcknowledge;
    /// `added` and `forgotten` change a fetch session's partitions.
    pub fn check_session(
        &self,
        group: &str,
        member: &str,
        epoch: i32,
        fetch: bool,
        added: &[(Uuid, i32)],
        forgotten: &[(Uuid, i32)],
    ) -> SessionCheck {
        let key = (group.to_string(), member.to_string());
        let mut sessions = self.sessions.borrow_mut();
        match epoch {
            SESSION_OPEN_EPOCH => {
                if !fetch {
                    return SessionCheck::Refused(ResponseError::InvalidShareSessionEpoch);
                }
                if !sessions.contains_key(&key) && sessions.len() >= self.sessions_max {
                    return SessionCheck::Refused(ResponseError::ShareSessionLimitReached);
                }
                let partitions: BTreeSet<(Uuid, i32)> = added.iter().copied().collect();
                let list = partitions.iter().copied().collect();
                sessions.insert(
                    key,
                    ShareSession {
                        next_epoch: 1,
                        partitions,
                    },
                );
                SessionCheck::Ok(list)
            }
            SESSION_CLOSE_EPOCH => {
                if sessions.remove(&key).is_none() {
                    return SessionCheck::Refused(ResponseError::ShareSessionNotFound);
                }
                if self.cluster_started.get() {
                    self.emptied.borrow_mut().insert(key.0);
                }
                SessionCheck::Ok(Vec::new())
            }
            _ => {
                let Some(session) = sessions.get_mut(&key) else {
                    return SessionCheck::Refused(ResponseError::ShareSessionNotFound);
                };
                if session.next_epoch != epoch {
                    return SessionCheck::Refused(ResponseError::InvalidShareSessionEpoch);
                }
                session.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
                if fetch {
                    session.partitions.extend(added.iter().copied());
                    for f in forgotten {
                        session.partitions.remove(f);
                    }
                }
                SessionCheck::Ok(session.partitions.iter().copied().collect())
            }
        }
    }

    /// Applies acknowledgements of `member` to the share partitions (all batches of a partition
    /// or none of them on an error) and writes the changed ones durably before returning.
    /// Returns each partition's error.
    pub async fn acknowledge(
        &self,
        now_ms: i64,
        group: &str,
        member: &str,
        acks: Vec<((Uuid, i32), Vec<AckBatch>)>,
    ) -> Vec<((Uuid, i32), Option<ResponseError>)> {
        let mut answers = Vec::with_capacity(acks.len());
        let mut changed = BTreeSet::new();
        {
            let mut partitions = self.partitions.borrow_mut();
            for ((topic_id, partition), batches) in acks {
                let key = ShareKey {
                    group: group.to_string(),
                    topic_id,
                    partition,
                };
                let error = match partitions.get_mut(&key) {
                    // In a cluster a share partition not here is led elsewhere (or moved).
                    None if self.cluster_started.get() && !self.leads(topic_id, partition) => {
                        Some(ResponseError::NotLeaderOrFollower)
                    }
                    None => Some(ResponseError::InvalidRecordState),
                    Some(p) => {
                        let mut error = None;
                        for (first, last, types) in &batches {
                            if let Err(e) = p.acknowledge(now_ms, member, *first, *last, types) {
                                error = Some(crate::error::share_ack_code(e));
                                break;
                            }
                            changed.insert(key.clone());
                        }
                        error
                    }
                };
                answers.push(((topic_id, partition), error));
            }
        }
        if let Err(code) = self.write(changed).await {
            tracing::warn!(error = ?code, "writing share state failed");
            for (_, error) in answers.iter_mut() {
                error.get_or_insert(code);
            }
        }
        answers
    }

    /// Whether this node leads topic partition (`topic_id`, `partition`) (a cluster).
    fn leads(&self, topic_id: Uuid, partition: i32) -> bool {
        let Some(shard) = self.cluster_shard() else {
            return true;
        };
        let metadata = shard.metadata();
        metadata
            .topic_by_id(topic_id)
            .and_then(|(_, m)| m.assignment.get(partition as usize))
            .is_some_and(|a| a.leader == shard.config.node_id)
    }

    /// Closing a session: the member's acquired records go back (after its acknowledgements).
    pub fn session_closed(&self, group: &str, member: &str) {
        self.leaving
            .borrow_mut()
            .remove(&(group.to_string(), member.to_string()));
        self.release_member(group, member);
    }

    /// Deletes the share state of a group (DeleteGroups of an empty share group).
    pub async fn delete_group(&self, group: &str) -> Result<(), ResponseError> {
        let sink = self.admin_sink()?;
        let Ok(_permit) = self.write_lock.acquire_permit(1).await else {
            return Err(ResponseError::CoordinatorNotAvailable);
        };
        self.groups.borrow_mut().delete(group)?;
        let records: Vec<ShareLogRecord> = {
            let mut partitions = self.partitions.borrow_mut();
            let mut dirty = self.dirty.borrow_mut();
            let keys: Vec<ShareKey> = partitions
                .keys()
                .filter(|k| k.group == group)
                .cloned()
                .collect();
            keys.into_iter()
                .map(|k| {
                    partitions.remove(&k);
                    dirty.remove(&k);
                    (k, None)
                })
                .collect()
        };
        self.append_admin(sink, records).await
    }

    /// Where an admin change of share state goes: the node-local log, or in a cluster the
    /// share coordinators (COORDINATOR_NOT_AVAILABLE before either is there).
    fn admin_sink(&self) -> Result<AdminSink, ResponseError> {
        if let Some(shard) = self.cluster_shard() {
            return Ok(AdminSink::Cluster(shard));
        }
        self.log()
            .map(AdminSink::Local)
            .ok_or(ResponseError::CoordinatorNotAvailable)
    }

    /// Writes an admin change's `records` durably (in a cluster each to its share
    /// coordinator, not fenced by a leader epoch: [`replicated::ADMIN_LEADER_EPOCH`]).
    async fn append_admin(
        &self,
        sink: AdminSink,
        records: Vec<ShareLogRecord>,
    ) -> Result<(), ResponseError> {
        match sink {
            AdminSink::Local(log) => log
                .append(records, super::now_ms(), |_| {})
                .await
                .map_err(|e| crate::error::storage_code(&e)),
            AdminSink::Cluster(shard) => {
                for (key, state) in records {
                    replicated::write_state(&shard, key, state, replicated::ADMIN_LEADER_EPOCH)
                        .await?;
                }
                Ok(())
            }
        }
    }

    /// AlterShareGroupOffsets / DeleteShareGroupOffsets on an empty share group: each share
    /// partition starts afresh at the given offset (`Some`, nothing in flight) or loses its
    /// state (`None`: the next fetch starts it by `share_auto_offset_reset`). Written durably
    /// before returning. GROUP_ID_NOT_FOUND for an unknown group, NON_EMPTY_GROUP while it has
    /// members.
    pub async fn reset(
        &self,
        group: &str,
        changes: Vec<(ShareKey, Option<i64>)>,
    ) -> Result<(), ResponseError> {
        let sink = self.admin_sink()?;
        let Ok(_permit) = self.write_lock.acquire_permit(1).await else {
            return Err(ResponseError::CoordinatorNotAvailable);
        };
        match self.groups.borrow().group(group) {
            None => return Err(ResponseError::GroupIdNotFound),
            Some(g) if !g.members.is_empty() => return Err(ResponseError::NonEmptyGroup),
            Some(_) => {}
        }
        let records: Vec<ShareLogRecord> = {
            let mut partitions = self.partitions.borrow_mut();
            let mut dirty = self.dirty.borrow_mut();
            changes
                .into_iter()
                .map(|(key, start)| {
                    dirty.remove(&key);
                    match start {
                        Some(offset) => {
                            let p = SharePartition::new(self.limits, offset.max(0));
                            let state = p.state();
                            partitions.insert(key.clone(), p);
                            (key, Some(state))
                        }
                        None => {
                            partitions.remove(&key);
                            (key, None)
                        }
                    }
                })
                .collect()
        };
        self.append_admin(sink, records).await
    }

    /// In-flight counts of a group's share partitions: (key, start, end, acquired, available).
    pub fn describe_partitions(&self, group: &str) -> Vec<(ShareKey, i64, i64, usize, usize)> {
        let partitions = self.partitions.borrow();
        let mut out: Vec<_> = partitions
            .iter()
            .filter(|(k, _)| k.group == group)
            .map(|(k, p)| {
                let c = p.counts();
                (
                    k.clone(),
                    p.start_offset(),
                    p.end_offset(),
                    c.acquired,
                    c.available,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// One partition's part of a ShareFetch answer.
#[derive(Debug, Default)]
pub struct FetchedPartition {
    pub error: Option<ResponseError>,
    pub batches: Vec<Bytes>,
    pub acquired: Vec<AcquiredRange>,
}

/// What a ShareFetch asks of the coordinator shard once its session and acknowledgements are
/// done: records of these partitions.
pub struct FetchAsk {
    pub group: String,
    pub member: String,
    pub partitions: Vec<(Uuid, i32)>,
    pub max_wait_ms: i64,
    pub max_records: usize,
    pub max_bytes: usize,
}

/// Acquires records for a ShareFetch on the coordinator shard `c`, waiting up to
/// `max_wait_ms` for some. Answers every asked partition.
pub async fn fetch_records(
    c: &Rc<Shard>,
    ask: FetchAsk,
) -> BTreeMap<(Uuid, i32), FetchedPartition> {
    assert_eq!(c.id, COORDINATOR_SHARD);
    let deadline = Instant::now() + Duration::from_millis(ask.max_wait_ms.max(0) as u64);
    let member: Rc<str> = Rc::from(ask.member.as_str());
    loop {
        let mut out = BTreeMap::new();
        let mut records_left = ask.max_records.max(1);
        let mut bytes_left = ask.max_bytes;
        let mut got_any = false;
        for &(topic_id, partition) in &ask.partitions {
            let fetched = if records_left == 0 || bytes_left == 0 {
                FetchedPartition::default()
            } else {
                fetch_partition(
                    c,
                    &ask.group,
                    &member,
                    topic_id,
                    partition,
                    records_left,
                    bytes_left,
                )
                .await
            };
            let n: i64 = fetched
                .acquired
                .iter()
                .map(|r| r.last_offset - r.first_offset + 1)
                .sum();
            records_left = records_left.saturating_sub(n as usize);
            bytes_left = bytes_left.saturating_sub(fetched.batches.iter().map(|b| b.len()).sum());
            got_any |= n > 0;
            out.insert((topic_id, partition), fetched);
        }
        let now = Instant::now();
        if got_any || now >= deadline || c.stopping.get() || ask.partitions.is_empty() {
            return out;
        }
        let wait = (deadline - now).min(Duration::from_millis(SHARE_FETCH_POLL_MS_MAX));
        futures_lite::future::or(crate::rt::sleep(wait), c.stop.wait()).await;
    }
}

/// One partition of a ShareFetch: starts its share partition if new, reads from where it can
/// acquire, acquires, and returns the batches holding the acquired records.
async fn fetch_partition(
    c: &Rc<Shard>,
    group: &str,
    member: &Rc<str>,
    topic_id: Uuid,
    partition: i32,
    max_records: usize,
    max_bytes: usize,
) -> FetchedPartition {
    let error = |e: ResponseError| FetchedPartition {
        error: Some(e),
        ..FetchedPartition::default()
    };
    let metadata = c.metadata();
    let Some((topic, meta)) = metadata.topic_by_id(topic_id) else {
        return error(ResponseError::UnknownTopicId);
    };
    if partition < 0 || partition >= meta.partitions {
        return error(ResponseError::UnknownTopicOrPartition);
    }
    let mut leader_epoch = 0;
    if let Some(a) = meta.assignment.get(partition as usize) {
        if a.leader != c.config.node_id {
            return error(ResponseError::NotLeaderOrFollower);
        }
        leader_epoch = a.leader_epoch;
    }
    let topic = topic.to_string();
    let key = ShareKey {
        group: group.to_string(),
        topic_id,
        partition,
    };
    let shares = &c.shares;
    let cluster = shares.cluster_started.get();
    if cluster
        && shares
            .leader_epochs
            .borrow()
            .get(&key)
            .is_some_and(|&e| e != leader_epoch)
    {
        shares.forget(&key);
    }
    if !shares.partitions.borrow().contains_key(&key) {
        // A cluster: the state the share coordinator holds (written by this partition's
        // previous leaders), if any; until it answers, nothing is handed out.
        let stored = if cluster {
            match replicated::read_state(c, &key, leader_epoch).await {
                Ok(stored) => stored,
                Err(e) => {
                    tracing::debug!(error = ?e, group, partition, "reading a share state failed; retried at the next look");
                    return FetchedPartition::default();
                }
            }
        } else {
            None
        };
        let earliest = crate::coordinator::group_config::share_starts_at_earliest(
            metadata.group_configs.get(group),
            shares.start_at_earliest,
        );
        let t = topic.clone();
        let offsets = c
            .invoke_on(c.owner(&topic, partition), move |s| async move {
                s.partition(&t, partition)
                    .map(|p| (p.log.log_start_offset(), p.log.high_watermark()))
            })
            .await;
        let Ok(Some((log_start, hw))) = offsets else {
            return error(ResponseError::NotLeaderOrFollower);
        };
        let start = if earliest { log_start } else { hw };
        shares
            .partitions
            .borrow_mut()
            .entry(key.clone())
            .or_insert_with(|| match &stored {
                Some(state) => SharePartition::restore(shares.limits, state),
                None => SharePartition::new(shares.limits, start),
            });
        if cluster {
            shares
                .leader_epochs
                .borrow_mut()
                .insert(key.clone(), leader_epoch);
            let state_epoch = stored.as_ref().map_or(0, |s| s.state_epoch);
            shares
                .state_epochs
                .borrow_mut()
                .insert(key.clone(), state_epoch);
        }
        shares.dirty.borrow_mut().insert(key.clone());
        // The group exists while it has share state (as after a restart).
        shares.groups.borrow_mut().ensure(group);
    }
    let now = super::now_ms();
    let from = shares
        .partitions
        .borrow_mut()
        .get_mut(&key)
        .and_then(|p| p.next_read_offset(now));
    let Some(from) = from else {
        return FetchedPartition::default();
    };
    let t = topic.clone();
    let budget = max_bytes.min(SHARE_READ_BYTES_MAX);
    // read_committed (the group's `share.isolation.level`): below the last stable offset
    // only, with the aborted transactions overlapping the read (Kafka's share fetch reads
    // with `FetchIsolation.TXN_COMMITTED`).
    let committed =
        crate::coordinator::group_config::share_read_committed(metadata.group_configs.get(group));
    let read = c
        .invoke_on(c.owner(&topic, partition), move |s| async move {
            let p = s.partition(&t, partition)?;
            let log_start = p.log.log_start_offset();
            if !committed {
                return Some((
                    p.log
                        .read(from, budget, true)
                        .await
                        .map(|d| (d, Vec::new())),
                    log_start,
                ));
            }
            let lso = p.log.last_stable_offset();
            let read = match p.log.read_upto(from, budget, true, lso).await {
                Ok(data) => {
                    let end = data
                        .batches
                        .last()
                        .and_then(|b| batch::header(b))
                        .map_or(from, |h| h.last_offset() + 1);
                    match p.log.aborted_transactions(from, end).await {
                        Ok(aborted) => Ok((data, aborted)),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            Some((read, log_start))
        })
        .await;
    let (data, aborted) = match read {
        Ok(Some((Ok(read), _))) => read,
        Ok(Some((Err(StorageError::OffsetOutOfRange { .. }), log_start))) => {
            // The log start moved past the share partition (retention, DeleteRecords): those
            // records are gone for every reader; start there.
            if let Some(p) = shares.partitions.borrow_mut().get_mut(&key) {
                p.reset_to(log_start);
            }
            shares.dirty.borrow_mut().insert(key);
            return FetchedPartition::default();
        }
        Ok(Some((Err(e), _))) => return error(crate::error::storage_code(&e)),
        Ok(None) | Err(_) => return error(ResponseError::NotLeaderOrFollower),
    };
    // Aborted transactions' batches are skipped as control batches are (Kafka archives them).
    let aborted_flags = if committed {
        crate::storage::txn_index::aborted_batches(&data.batches, &aborted)
    } else {
        vec![false; data.batches.len()]
    };
    let spans: Vec<(BatchSpan, Bytes)> = data
        .batches
        .into_iter()
        .zip(aborted_flags)
        .filter_map(|(b, aborted)| {
            let h = batch::header(&b)?;
            let span = BatchSpan {
                base_offset: h.base_offset.get(),
                last_offset: h.last_offset(),
                skipped: h.is_control() || aborted,
            };
            Some((span, b))
        })
        .collect();
    let only_spans: Vec<BatchSpan> = spans.iter().map(|(s, _)| *s).collect();
    let acquired = match shares.partitions.borrow_mut().get_mut(&key) {
        Some(p) => {
            let lock_ms = shares.lock_duration_ms(&metadata, group);
            p.acquire_locked_for(super::now_ms(), member, &only_spans, max_records, lock_ms)
        }
        None => Vec::new(),
    };
    // The batches holding an acquired offset go out whole; the client keeps the acquired ones.
    let batches = spans
        .into_iter()
        .filter(|(s, _)| {
            acquired
                .iter()
                .any(|r| r.first_offset <= s.last_offset && s.base_offset <= r.last_offset)
        })
        .map(|(_, b)| b)
        .collect();
    FetchedPartition {
        error: None,
        batches,
        acquired,
    }
}

/// Coordinator shard: the share timers and deferred writes every [`SHARE_TICK_INTERVAL_MS`]
/// until the shard stops.
pub async fn share_tick_loop(shard: Rc<Shard>) {
    assert_eq!(shard.id, COORDINATOR_SHARD);
    let interval = Duration::from_millis(SHARE_TICK_INTERVAL_MS);
    while !shard.stopping.get() {
        futures_lite::future::or(crate::rt::sleep(interval), shard.stop.wait()).await;
        let metadata = shard.metadata();
        shard.shares.tick(super::now_ms(), &metadata.topics).await;
    }
}

/// Coordinator shard: loads the share state (at startup, before the listener opens); a
/// cluster node starts its share coordinator instead (`replicated`).
pub async fn load(shard: &Rc<Shard>) {
    assert_eq!(shard.id, COORDINATOR_SHARD);
    if crate::cluster::parse_voters(&shard.config.controller_quorum_voters)
        .is_ok_and(|voters| !voters.is_empty())
    {
        shard.shares.start_cluster(shard);
        return;
    }
    if let Err(e) = shard
        .shares
        .load(&shard.config.data_dir, shard.cache.clone())
        .await
    {
        tracing::error!(error = %e, "loading share-group state failed; share APIs answer COORDINATOR_NOT_AVAILABLE");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Share-state records survive a trip through a record batch, tombstones included.
    #[test]
    fn codec_round_trip() {
        let key = ShareKey {
            group: "g".into(),
            topic_id: Uuid::from_u128(3),
            partition: 2,
        };
        let state = ShareState {
            start_offset: 4,
            end_offset: 9,
            in_flight: vec![(4, 6, 2), (8, 8, 1)],
            state_epoch: 0,
        };
        let records = vec![(key.clone(), Some(state)), (key, None)];
        let bytes = ShareStateCodec::encode_batch(&records, 0).unwrap();
        let (back, next) = ShareStateCodec::decode_batches(bytes).unwrap();
        assert_eq!(back, records);
        assert_eq!(next, 2);
        assert!(ShareStateCodec::decode_batches(Bytes::from_static(b"garbage!")).is_err());
    }
}
