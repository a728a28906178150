//! Shards: one pinned glommio executor per core, each owning a disjoint set of partitions.
//!
//! A [`Shard`] is created on its own executor thread at startup and lives until that executor
//! stops. It owns:
//! - the [`Partition`]s that [`owner_of`] assigns to it among those this broker is a replica
//!   of ([`routing::hosts`]; their logs, files and tail cache, and each one's role, leader or
//!   follower: [`replication`]); no other thread ever touches them;
//! - a read-only snapshot of the cluster metadata, replaced whole when shard 0 publishes a
//!   change;
//! - on shard 0 only, the authority over metadata changes ([`Shard::change_metadata`]).
//!
//! Partitions are opened (recovered) and closed up to 64 at a time per shard. A metadata change
//! that would take the broker past `max_partitions_per_broker` is refused whole, before anything
//! is persisted or opened ([`Shard::change_metadata`]).
//!
//! Other shards reach a partition by sending a closure to its owner ([`Shard::invoke_on`]).
//! Invariant: `partitions` holds exactly the partitions of the current metadata placed on this
//! broker and owned by this shard that opened successfully; a partition that failed to open is
//! reported and answered with KAFKA_STORAGE_ERROR. A partition moved off this broker is
//! closed, its files kept; one placed here is opened. Client requests see only the partitions
//! this broker leads ([`Shard::partition`]). Of the coordinators' internal topics of a
//! cluster, `__consumer_offsets` and `__transaction_state` are opened and replicated like any
//! topic (the group and transaction coordinators' state, `groups::replicated`,
//! `txns::replicated`).

mod acl_delete;
pub mod controller;
pub mod coordinators;
pub mod fetch_sessions;
pub mod groups;
pub mod internal_partitions;
pub mod metadata_log;
pub mod replication;
pub mod router;
pub mod routing;
pub mod shares;
pub mod txns;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::rt::sync::Semaphore;

use crate::config::BrokerConfig;
use crate::coordinator::metadata::{ClusterMetadata, MetadataCommand, MetadataError};
use crate::coordinator::{broker_config, topic_config};
use crate::storage::{AppendInfo, LogConfig, PartitionLog, StorageError, TailCache};

pub use crate::rt::Notify;
pub use router::{owner_of, Job, Router, ShardGone, ShardId};

/// A topic-partition key.
pub type TopicPartition = (String, i32);

/// A topic-partition looked up by borrowed parts: a map keyed by [`TopicPartition`] answers
/// `get(&(topic, partition) as &dyn TopicPartitionRef)` without allocating a `String` (an idle
/// fetch looks up every partition it names, several times).
pub trait TopicPartitionRef {
    fn parts(&self) -> (&str, i32);
}

impl TopicPartitionRef for TopicPartition {
    fn parts(&self) -> (&str, i32) {
        (&self.0, self.1)
    }
}

impl TopicPartitionRef for (&str, i32) {
    fn parts(&self) -> (&str, i32) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn TopicPartitionRef + 'a> for TopicPartition {
    fn borrow(&self) -> &(dyn TopicPartitionRef + 'a) {
        self
    }
}

/// Hashes as `TopicPartition` does (a tuple hashes its fields in order; `String` as `str`),
/// as `Borrow` requires.
impl std::hash::Hash for dyn TopicPartitionRef + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (topic, partition) = self.parts();
        topic.hash(state);
        partition.hash(state);
    }
}

impl PartialEq for dyn TopicPartitionRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn TopicPartitionRef + '_ {}

/// The shard that runs the metadata state machine (Kafka's controller and coordinator roles).
pub const COORDINATOR_SHARD: ShardId = 0;
/// Partitions one shard opens (recovers) at once, at startup and when topics appear.
pub const PARTITIONS_OPENING_CONCURRENTLY_MAX: usize = 64;
/// Partitions one shard closes (flushes) at once at shutdown.
pub const PARTITIONS_CLOSING_CONCURRENTLY_MAX: usize = 64;

/// Partitions of deleted topics that one shard closes and removes at once, in the background.
/// One: their blocking file work goes to the shard's blocking thread, and with more at once a
/// burst of deletions queues ahead of other work there (a CreateTopics during a 100-topic
/// delete then waited 6 s with 16 at once, 0.3-0.5 s with one).
pub const PARTITION_DELETES_CONCURRENT_MAX: u64 = 1;
/// Partitions of the current metadata whose log failed to open (offline: damaged on disk, see
/// `storage::log`'s recovery), process-wide so that Metadata on any shard can show them
/// leaderless. Written by the owning shard's reconcile only.
static OFFLINE_PARTITIONS: std::sync::Mutex<std::collections::BTreeSet<TopicPartition>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Is this partition offline (in the metadata, but its log failed to open)?
pub fn is_offline(topic: &str, partition: i32) -> bool {
    OFFLINE_PARTITIONS
        .lock()
        .is_ok_and(|set| set.contains(&(topic.to_string(), partition)))
}

fn set_offline(topic: &str, partition: i32, offline: bool) {
    if let Ok(mut set) = OFFLINE_PARTITIONS.lock() {
        let key = (topic.to_string(), partition);
        if offline {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }
}

/// One partition on its owning shard: the log, the signal that wakes long-poll fetches, and
/// its role in replication (leader or follower, `replication`).
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: PartitionLog,
    /// Notified whenever the high watermark may have moved (and when the role or ISR changes).
    pub hw_changed: Notify,
    /// Set on every metadata install (`Shard::apply_roles`).
    pub role: RefCell<replication::Role>,
    /// Transactional batches of this partition take it in arrival order (FIFO) before they
    /// check whether their transaction is open here: one that must ask the coordinator first
    /// (KIP-890) keeps it until it is appended, so a producer's pipelined batches behind it
    /// cannot overtake it (they would be refused OUT_OF_ORDER_SEQUENCE_NUMBER).
    pub txn_order: Semaphore,
}

impl Partition {
    /// Appends and, once durable, wakes fetches waiting on this partition. The log validates
    /// every record (keys too, on compacted topics).
    pub async fn append(&self, records: bytes::Bytes) -> Result<AppendInfo, StorageError> {
        let result = self.log.append(records, now_ms()).await;
        self.hw_changed.notify_all();
        result
    }

    /// [`Partition::append`] of a transactional batch verified under `guard`
    /// ([`PartitionLog::append_verified`]).
    pub async fn append_verified(
        &self,
        records: bytes::Bytes,
        guard: (i64, u32),
    ) -> Result<AppendInfo, StorageError> {
        let result = self.log.append_verified(records, now_ms(), guard).await;
        self.hw_changed.notify_all();
        result
    }
}

/// Milliseconds since the Unix epoch (virtual under simulation: `rt::unix_time_ms`).
pub fn now_ms() -> i64 {
    crate::rt::unix_time_ms()
}

/// Per-shard state. Lives on one executor thread; see the module doc.
pub struct Shard {
    pub id: ShardId,
    pub config: Arc<BrokerConfig>,
    pub router: Router,
    metadata: RefCell<Arc<ClusterMetadata>>,
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
    cache: Rc<TailCache>,
    /// Serializes metadata changes (used on the coordinator shard only).
    metadata_lock: Semaphore,
    /// Serializes opening/deleting partitions, so a partition is never opened twice.
    reconcile_lock: Semaphore,
    /// Partitions of deleted topics whose files are still being closed and removed in the
    /// background, or whose leadership moved away and that are being closed, each with the
    /// signal fired when that is done. A partition of the same name is not opened before then
    /// (it would find the old files, or files still open).
    deleting: RefCell<HashMap<TopicPartition, Rc<Notify>>>,
    /// Bounds the background deletions running at once ([`PARTITION_DELETES_CONCURRENT_MAX`]).
    delete_slots: Rc<Semaphore>,
    /// Set once shutdown starts; [`Shard::stop`] fires at the same time.
    pub stopping: Cell<bool>,
    pub stop: Notify,
    /// Open client connections on this shard.
    pub connections: Cell<usize>,
    /// Bytes of requests in flight on this shard, in KiB units
    /// (`inflight_request_bytes_per_shard_max`).
    pub inflight_kib: Semaphore,
    /// The part of [`Shard::inflight_kib`] that large requests (over
    /// `server::connection::SMALL_REQUEST_BYTES_MAX`) may hold, in KiB units: three quarters of
    /// it, so that clients announcing large requests (and sending them slowly) always leave a
    /// quarter of the budget to small ones (ApiVersions, Metadata, heartbeats).
    pub large_request_kib: Semaphore,
    /// Coordinator shard only: the producer ids left in the reserved block, `[next, end)`.
    producer_ids: Cell<(i64, i64)>,
    /// Coordinator shard only: consumer groups and committed offsets.
    pub groups: groups::GroupCoordinator,
    /// Coordinator shard only: transactions.
    pub txns: txns::TxnCoordinator,
    /// Coordinator shard only: the cluster metadata log (appended by metadata changes).
    /// The metadata quorum on this node (coordinator shard, once started).
    controller: RefCell<Option<Rc<controller::Controller>>>,
    /// The follower fetchers of this shard (`replication`).
    fetchers: replication::FetcherSet,
    /// Bytes of Produce requests in flight on this shard, in KiB units
    /// (`produce_inflight_bytes_per_shard_max`): produces reserve here instead of
    /// [`Shard::inflight_kib`], so produces stuck behind a slow disk stop their own connections
    /// and never the requests that need no disk.
    pub produce_kib: Semaphore,
    /// The fetch sessions (KIP-227) whose ids fall in this shard's range (`fetch_sessions`).
    pub fetch_sessions: RefCell<fetch_sessions::FetchSessionCache>,
    /// Coordinator shard only: share groups and their share-partition state (`shares`).
    pub shares: shares::ShareCoordinator,
}

/// The KiB of a shard's request budget that large requests may hold together (3/4 of it).
pub fn large_request_kib_total(inflight_kib_total: u64) -> u64 {
    (inflight_kib_total - inflight_kib_total / 4).max(1)
}

/// The KiB of a shard's Produce budget (`produce_inflight_bytes_per_shard_max`).
pub fn produce_kib_total(config: &BrokerConfig) -> u64 {
    (config.produce_inflight_bytes_per_shard_max / 1024).max(1) as u64
}

impl Shard {
    /// Creates shard `id`'s state; partitions are opened by [`Shard::open_partitions`].
    pub fn new(
        id: ShardId,
        config: Arc<BrokerConfig>,
        router: Router,
        metadata: Arc<ClusterMetadata>,
    ) -> Rc<Shard> {
        assert!(id < router.shard_count());
        let inflight_kib = (config.inflight_request_bytes_per_shard_max / 1024).max(1) as u64;
        let shards = router.shard_count();
        Rc::new(Shard {
            id,
            cache: TailCache::new(config.tail_cache_bytes_per_shard),
            router,
            metadata: RefCell::new(metadata),
            partitions: RefCell::new(HashMap::new()),
            metadata_lock: Semaphore::new(1),
            reconcile_lock: Semaphore::new(1),
            deleting: RefCell::new(HashMap::new()),
            delete_slots: Rc::new(Semaphore::new(PARTITION_DELETES_CONCURRENT_MAX)),
            stopping: Cell::new(false),
            stop: Notify::default(),
            connections: Cell::new(0),
            inflight_kib: Semaphore::new(inflight_kib),
            large_request_kib: Semaphore::new(large_request_kib_total(inflight_kib)),
            producer_ids: Cell::new((0, 0)),
            config: config.clone(),
            groups: groups::GroupCoordinator::new(
                crate::coordinator::group::GroupConfig {
                    initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
                    offsets_retention_ms: config.offsets_retention_minutes.saturating_mul(60_000),
                    offsets_retention_check_interval_ms: config.offsets_retention_check_interval_ms,
                    // Validated positive.
                    group_max_size: usize::try_from(config.group_max_size).unwrap_or(1),
                    session_timeout_ms_min: config.group_min_session_timeout_ms,
                    session_timeout_ms_max: config.group_max_session_timeout_ms,
                },
                crate::coordinator::consumer_group::ConsumerGroupConfig {
                    session_timeout_ms: config.group_consumer_session_timeout_ms,
                    heartbeat_interval_ms: config.group_consumer_heartbeat_interval_ms,
                },
            ),
            txns: txns::TxnCoordinator::new(),
            controller: RefCell::new(None),
            fetchers: replication::FetcherSet::default(),
            produce_kib: Semaphore::new(produce_kib_total(&config)),
            fetch_sessions: RefCell::new(fetch_sessions::FetchSessionCache::new(
                fetch_sessions::CacheLimits::for_shard(
                    config.max_incremental_fetch_session_cache_slots,
                    config.fetch_session_cache_partitions_max,
                    config.fetch_session_eviction_ms,
                    id,
                    shards,
                ),
                id,
                shards,
            )),
            shares: shares::ShareCoordinator::new(&config),
        })
    }

    pub fn shard_count(&self) -> usize {
        self.router.shard_count()
    }

    /// Bytes of requests read on this shard and not yet answered (KiB granularity), Produce
    /// requests (their own budget) included.
    pub fn inflight_request_bytes(&self) -> u64 {
        let total_kib = (self.config.inflight_request_bytes_per_shard_max / 1024).max(1) as u64;
        let produce_kib =
            produce_kib_total(&self.config).saturating_sub(self.produce_kib.available());
        (total_kib.saturating_sub(self.inflight_kib.available()) + produce_kib) * 1024
    }

    /// The current metadata snapshot.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.metadata.borrow().clone()
    }

    /// The metadata quorum as this node sees it (DescribeQuorum, `freshet cluster quorum`).
    /// Coordinator shard only: the quorum runs there. The Raft node's status once the
    /// controller runs; before that, the single-node truth: this node is the one voter and
    /// leads term 1, and every metadata version is committed and applied.
    pub fn quorum_status(&self) -> crate::cluster::QuorumStatus {
        assert_eq!(
            self.id, COORDINATOR_SHARD,
            "the quorum runs on the coordinator shard"
        );
        if let Some(controller) = self.controller() {
            return controller.status();
        }
        let version = self.metadata().version;
        let now = now_ms();
        let me = crate::cluster::ReplicaStatus {
            node_id: self.config.node_id,
            log_end_offset: i64::try_from(version).unwrap_or(i64::MAX),
            last_fetch_timestamp_ms: now,
            last_caught_up_timestamp_ms: now,
        };
        crate::cluster::QuorumStatus {
            leader_id: Some(self.config.node_id),
            term: 1,
            commit_index: version,
            applied_index: version,
            voters: vec![me],
            observers: Vec::new(),
        }
    }

    /// The shard owning `topic`/`partition`.
    pub fn owner(&self, topic: &str, partition: i32) -> ShardId {
        owner_of(topic, partition, self.shard_count())
    }

    /// A partition this shard owns and this broker leads, if it is open: what client requests
    /// use (a follower's partition is [`Shard::replica`]).
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(&(topic, partition) as &dyn TopicPartitionRef)
            .filter(|p| p.is_leader())
            .cloned()
    }

    /// All partitions this shard owns (led and followed).
    pub fn partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// Runs `f` on shard `target`: directly when that is this shard, else through the router.
    pub async fn invoke_on<F, Fut, T>(
        self: &Rc<Self>,
        target: ShardId,
        f: F,
    ) -> Result<T, ShardGone>
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        if target == self.id {
            Ok(f(self.clone()).await)
        } else {
            self.router.invoke_on(target, f).await
        }
    }

    /// Runs `f` on every shard and collects the answers in shard order.
    pub async fn invoke_on_all<F, Fut, T>(self: &Rc<Self>, f: F) -> Vec<Result<T, ShardGone>>
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let calls = (0..self.shard_count()).map(|s| self.invoke_on(s, f.clone()));
        let mut answers = Vec::with_capacity(self.shard_count());
        for call in calls.collect::<Vec<_>>() {
            answers.push(call.await);
        }
        answers
    }

    /// Directory of a partition's log.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{partition}"))
    }

    /// A topic's storage settings: its overrides, over the dynamic broker log configs, over
    /// the broker's static settings.
    fn log_config(&self, metadata: &ClusterMetadata, topic: &str) -> LogConfig {
        let overrides = metadata
            .topics
            .get(topic)
            .map(|t| t.configs.clone())
            .unwrap_or_default();
        let configs = broker_config::with_topic_defaults(
            &overrides,
            &metadata.broker_configs,
            self.config.node_id,
        );
        topic_config::log_config(&configs, &self.config)
    }

    /// Opens every partition of the current metadata that this shard owns (startup).
    pub async fn open_partitions(self: &Rc<Self>) {
        let Ok(_permit) = self.reconcile_lock.acquire_permit(1).await else {
            return;
        };
        let metadata = self.metadata();
        self.reconcile(&ClusterMetadata::default(), &metadata).await;
    }

    /// Brings the open partitions in line with `next` (opening, deleting, reconfiguring), then
    /// makes `next` the current snapshot. Publications are applied one at a time, in version
    /// order; a stale or repeated one is ignored.
    pub async fn install_metadata(self: &Rc<Self>, next: Arc<ClusterMetadata>) {
        let Ok(_permit) = self.reconcile_lock.acquire_permit(1).await else {
            return;
        };
        let previous = self.metadata();
        if next.version <= previous.version {
            return;
        }
        self.reconcile(&previous, &next).await;
        if self.id == COORDINATOR_SHARD {
            self.groups.on_metadata(&next);
            self.txns.on_metadata(&next);
            self.shares.on_metadata(&next);
        }
        *self.metadata.borrow_mut() = next;
    }

    async fn reconcile(self: &Rc<Self>, previous: &ClusterMetadata, next: &ClusterMetadata) {
        self.delete_vanished(previous, next);
        self.close_moved_away(previous, next);
        // A change of the dynamic broker log configs reaches every topic (Kafka's
        // `DynamicLogConfig.reconfigure`); those with their own override keep it.
        let defaults_changed =
            broker_config::topic_defaults(&previous.broker_configs, self.config.node_id)
                != broker_config::topic_defaults(&next.broker_configs, self.config.node_id);
        self.remove_gone_offline(previous, next).await;
        // (topic, partition, config, leader epoch when led here)
        let mut to_open: Vec<(String, i32, LogConfig, Option<i32>)> = Vec::new();
        for (name, topic) in &next.topics {
            let config_changed = previous.topics.get(name).is_some_and(|old| {
                old.id == topic.id && (defaults_changed || old.configs != topic.configs)
            });
            let log_config = self.log_config(next, name);
            for p in 0..topic.partitions {
                if self.owner(name, p) != self.id || !self.hosts(next, name, p) {
                    continue;
                }
                match self.replica(name, p) {
                    Some(partition) => {
                        if config_changed {
                            partition.log.set_config(log_config.clone());
                        }
                    }
                    None => {
                        let a = routing::assignment_of(topic, p, self.config.node_id);
                        // Followers take their epochs from the leader's batches.
                        let leads = a.leader == self.config.node_id;
                        let epoch = leads.then_some(a.leader_epoch);
                        to_open.push((name.clone(), p, log_config.clone(), epoch));
                    }
                }
            }
        }
        self.open_logs(to_open).await;
        self.apply_roles(next);
    }

    /// Partitions of topics that vanished, or were re-created under a new id, are deleted.
    fn delete_vanished(self: &Rc<Self>, previous: &ClusterMetadata, next: &ClusterMetadata) {
        let doomed: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .keys()
            .filter(
                |(topic, _)| match (previous.topics.get(topic), next.topics.get(topic)) {
                    (_, None) => true,
                    (Some(old), Some(new)) => old.id != new.id,
                    (None, Some(_)) => false,
                },
            )
            .cloned()
            .collect();
        for key in doomed {
            let partition = self.partitions.borrow_mut().remove(&key);
            if let Some(partition) = partition {
                partition.hw_changed.notify_all();
                self.delete_in_background(key, partition);
            }
        }
    }

    /// Is this broker a replica of `topic`/`partition` in `metadata` (so this node opens it)?
    fn hosts(&self, metadata: &ClusterMetadata, topic: &str, partition: i32) -> bool {
        routing::hosts(metadata, self.config.node_id, topic, partition)
    }

    /// Partitions of which this broker is no longer a replica are closed in the background;
    /// their files stay, except when a reassignment took the replica away (`previous` listed
    /// this broker among the replicas of the same topic, `next` does not: Kafka's StopReplica
    /// with deletion), whose files are deleted. Until the close is done, the partition is not
    /// opened again (see [`Shard::await_deletion`]). Requests still waiting on it (acks=all)
    /// see it as no longer led here.
    fn close_moved_away(self: &Rc<Self>, previous: &ClusterMetadata, next: &ClusterMetadata) {
        let moved: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .keys()
            .filter(|(topic, p)| next.topics.contains_key(topic) && !self.hosts(next, topic, *p))
            .cloned()
            .collect();
        let node = self.config.node_id;
        for key in moved {
            let partition = self.partitions.borrow_mut().remove(&key);
            let Some(partition) = partition else {
                continue;
            };
            *partition.role.borrow_mut() = replication::Role::Follower {
                leader: -1,
                leader_epoch: -1,
            };
            let reassigned_away = match (previous.topics.get(&key.0), next.topics.get(&key.0)) {
                (Some(old), Some(new)) if old.id == new.id && !next.brokers.is_empty() => {
                    usize::try_from(key.1)
                        .ok()
                        .and_then(|i| old.assignment.get(i))
                        .is_some_and(|a| a.replicas.contains(&node))
                }
                _ => false,
            };
            if reassigned_away {
                tracing::info!(topic = %key.0, partition = key.1, "reassigned away from this broker; deleting the replica");
                partition.hw_changed.notify_all();
                self.fetchers.changed.notify_all();
                self.delete_in_background(key, partition);
                continue;
            }
            partition.hw_changed.notify_all();
            tracing::info!(topic = %key.0, partition = key.1, "no longer a replica here; closing the partition (files kept)");
            let done = Notify::new();
            if let Some(previous) = self.deleting.borrow_mut().insert(key.clone(), done.clone()) {
                previous.notify_all();
            }
            let shard = self.clone();
            crate::rt::spawn_local(async move {
                // Waits for the writes of requests still holding it.
                if let Err(e) = partition.log.close().await {
                    tracing::error!(topic = %key.0, partition = key.1, error = %e, "closing a partition that moved away failed");
                }
                drop(partition);
                let finished = shard.deleting.borrow_mut().remove(&key);
                if let Some(finished) = finished {
                    finished.notify_all();
                }
            })
            .detach();
        }
    }

    /// Offline partitions (never opened) of topics that vanished or were re-created: the
    /// operator deleted the topic, so its damaged files go too (a new topic of that name must
    /// not open them). Offline partitions no longer placed on this broker are no longer its
    /// to report; their files stay.
    async fn remove_gone_offline(&self, previous: &ClusterMetadata, next: &ClusterMetadata) {
        let moved: Vec<TopicPartition> = OFFLINE_PARTITIONS
            .lock()
            .map(|set| {
                set.iter()
                    .filter(|(topic, p)| {
                        self.owner(topic, *p) == self.id
                            && routing::route(next, self.config.node_id, topic, *p)
                                != routing::Route::Unknown
                            && !routing::hosts(next, self.config.node_id, topic, *p)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for (topic, p) in moved {
            set_offline(&topic, p, false);
        }
        let gone: Vec<TopicPartition> = OFFLINE_PARTITIONS
            .lock()
            .map(|set| {
                set.iter()
                    .filter(|(topic, p)| {
                        self.owner(topic, *p) == self.id
                            && match (previous.topics.get(topic), next.topics.get(topic)) {
                                (_, None) => true,
                                (Some(old), Some(new)) => old.id != new.id || *p >= new.partitions,
                                (None, Some(_)) => false,
                            }
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for (topic, p) in gone {
            set_offline(&topic, p, false);
            let dir = self.partition_dir(&topic, p);
            if let Err(e) = crate::rt::spawn_blocking(move || std::fs::remove_dir_all(dir)).await {
                tracing::error!(topic = %topic, partition = p, error = %e, "removing the files of a deleted offline partition failed");
            }
        }
    }

    /// Opens the logs of `partitions` (topic, index, config, leader epoch when led here;
    /// recovery included), at most
    /// [`PARTITIONS_OPENING_CONCURRENTLY_MAX`] at once, and adds them to this shard. Stops
    /// opening once the shard begins to stop (a SIGTERM during startup).
    async fn open_logs(self: &Rc<Self>, partitions: Vec<(String, i32, LogConfig, Option<i32>)>) {
        let running = Rc::new(Semaphore::new(PARTITIONS_OPENING_CONCURRENTLY_MAX as u64));
        let mut tasks = Vec::new();
        for (name, p, log_config, leader_epoch) in partitions {
            if self.stopping.get() {
                tracing::info!(
                    shard = self.id,
                    "stopping: not opening the remaining partitions"
                );
                break;
            }
            let Ok(permit) = running.clone().acquire_static_permit(1).await else {
                break;
            };
            let shard = self.clone();
            tasks.push(crate::rt::spawn_local(async move {
                shard.await_deletion(&name, p).await;
                let dir = shard.partition_dir(&name, p);
                match PartitionLog::open(&dir, log_config, shard.cache.clone()).await {
                    Ok(log) => {
                        // Before it is served: no batch may carry an older epoch.
                        if let Some(epoch) = leader_epoch {
                            log.start_leader_epoch(epoch);
                        }
                        set_offline(&name, p, false);
                        shard.partitions.borrow_mut().insert(
                            (name.clone(), p),
                            Rc::new(Partition {
                                topic: name,
                                index: p,
                                log,
                                hw_changed: Notify::default(),
                                txn_order: Semaphore::new(1),
                                role: RefCell::new(replication::Role::Follower {
                                    leader: -1,
                                    leader_epoch: -1,
                                }),
                            }),
                        );
                    }
                    Err(e) => {
                        set_offline(&name, p, true);
                        tracing::error!(topic = %name, partition = p, error = %e, "opening partition failed; partition offline");
                    }
                }
                drop(permit);
            }));
        }
        for task in tasks {
            task.await;
        }
    }

    /// Closes and removes a partition of a deleted topic without holding up the metadata
    /// change (as Kafka deletes logs asynchronously): the partition has already left the map,
    /// so no new request finds it; requests still holding it finish first. At most
    /// [`PARTITION_DELETES_CONCURRENT_MAX`] run at once per shard.
    fn delete_in_background(self: &Rc<Self>, key: TopicPartition, partition: Rc<Partition>) {
        let done = Notify::new();
        if let Some(previous) = self.deleting.borrow_mut().insert(key.clone(), done.clone()) {
            // Cannot happen (a partition is not reopened before its deletion ends); keep the
            // older waiters informed anyway.
            previous.notify_all();
        }
        let shard = self.clone();
        let dir = self.partition_dir(&key.0, key.1);
        crate::rt::spawn_local(async move {
            let _slot = shard.delete_slots.acquire_permit(1).await;
            let result = match Rc::try_unwrap(partition) {
                Ok(partition) => partition.log.delete().await,
                Err(partition) => {
                    // A request still holds it: close (which waits for its writes), drop our
                    // reference, and remove the directory.
                    if let Err(e) = partition.log.close().await {
                        tracing::warn!(topic = %key.0, partition = key.1, error = %e, "close before delete failed");
                    }
                    drop(partition);
                    crate::storage::io::remove_dir_all(&dir).await
                }
            };
            if let Err(e) = result {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "deleting partition failed");
            }
            let finished = shard.deleting.borrow_mut().remove(&key);
            if let Some(finished) = finished {
                finished.notify_all();
            }
        })
        .detach();
    }

    /// Waits until no background deletion of `topic`/`partition` is running.
    async fn await_deletion(&self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        loop {
            let pending = self.deleting.borrow().get(&key).cloned();
            match pending {
                Some(done) => done.wait().await,
                None => return,
            }
        }
    }

    /// Waits until every background deletion on this shard has finished (shutdown).
    pub async fn finish_deletions(&self) {
        loop {
            let pending = self.deleting.borrow().values().next().cloned();
            match pending {
                Some(done) => done.wait().await,
                None => return,
            }
        }
    }

    /// Applies metadata changes on the coordinator shard: validates each command, persists the
    /// result, publishes it to every shard (which open or delete partitions), and returns one
    /// result per command. Commands are applied in order; a refused one changes nothing.
    /// `validate_only` checks without applying.
    pub async fn change_metadata(
        self: &Rc<Self>,
        commands: Vec<MetadataCommand>,
        validate_only: bool,
    ) -> Vec<Result<(), MetadataError>> {
        assert_eq!(
            self.id, COORDINATOR_SHARD,
            "metadata changes run on the coordinator shard"
        );
        let Ok(_permit) = self.metadata_lock.acquire_permit(1).await else {
            return commands
                .iter()
                .map(|_| Err(storage_unavailable()))
                .collect();
        };
        // Not the active controller: the change is forwarded to it (Kafka's forwarding).
        if self.controller().is_some_and(|c| !c.is_active()) {
            drop(_permit);
            return self.forward_change(commands, validate_only).await;
        }
        // The active controller decides against what it has applied, once it applied all
        // that came before its term.
        let Some(base) = self.leader_metadata().await else {
            drop(_permit);
            return self.forward_change(commands, validate_only).await;
        };
        let mut current = (*base).clone();
        let mut results = Vec::with_capacity(commands.len());
        // The metadata log's records of the applied commands, in order.
        let mut records = Vec::with_capacity(commands.len());
        // What the request would make of the metadata, checked against the partition cap as a
        // whole before anything is persisted or created.
        let mut hypothetical = current.clone();
        for command in &commands {
            if validate_only {
                let checked = current.check(command);
                if checked.is_ok() {
                    if let Ok(next) = hypothetical.apply(command) {
                        hypothetical = next;
                    }
                }
                results.push(checked);
                continue;
            }
            match current.record_for(command) {
                Ok(record) => {
                    current.replay_in_place(&record);
                    records.push(record);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let after = if validate_only {
            &hypothetical
        } else {
            &current
        };
        if let Some(error) = self.partition_cap_error(&base, after) {
            // Nothing is applied: every command of a real request fails with it.
            return refuse_all(&commands, results, &error, validate_only);
        }
        if validate_only || current.version == base.version {
            return results;
        }
        // One Raft entry; answered once committed, applied and published on this node.
        if let Err(e) = self.propose_change(records).await {
            return results.into_iter().map(|r| r.and(Err(e.clone()))).collect();
        }
        results
    }

    /// The error for a metadata change from `previous` to `next` that would take a broker
    /// past max_partitions_per_broker in partitions placed on it (none if every broker stays
    /// within it, or shrinks). A single node counts all partitions; in a cluster each broker
    /// counts the replicas placed on it ([`routing::partitions_per_broker`]).
    fn partition_cap_error(
        &self,
        previous: &ClusterMetadata,
        next: &ClusterMetadata,
    ) -> Option<MetadataError> {
        let cap = self.config.max_partitions_per_broker;
        if let Some((after, before)) =
            routing::cap_exceeded(previous, next, self.config.node_id, cap as u64)
        {
            let error = MetadataError {
                code: kafka_protocol::error::ResponseError::PolicyViolation,
                message: format!(
                    "This request would bring the broker to {after} partitions (it has {before}); \
                     max_partitions_per_broker is {cap}."
                ),
            };
            tracing::warn!(
                before,
                after,
                cap,
                "refused a metadata change over the partition cap"
            );
            return Some(error);
        }
        None
    }

    /// Publishes new metadata to every shard (which open or delete partitions), then drops the
    /// committed offsets of deleted topics.
    async fn publish_metadata(self: &Rc<Self>, current: ClusterMetadata) {
        let previous = self.metadata();
        let deleted_topics: Vec<String> = previous
            .topics
            .iter()
            .filter(|(name, old)| current.topics.get(*name).is_none_or(|new| new.id != old.id))
            .map(|(name, _)| name.clone())
            .collect();
        let next = Arc::new(current);
        for answer in self
            .invoke_on_all(move |shard| async move { shard.install_metadata(next).await })
            .await
        {
            if let Err(e) = answer {
                tracing::error!(error = %e, "publishing metadata failed");
            }
        }
        if !deleted_topics.is_empty() {
            // Committed offsets of a deleted topic must not apply to a new topic of that name.
            if let Err(e) = self.groups.drop_topics(&deleted_topics, now_ms()).await {
                tracing::error!(error = ?e, "deleting committed offsets of deleted topics failed");
            }
        }
    }

    /// Hands out a producer id never given before (coordinator shard). Reserves a new block
    /// durably when the current one is used up.
    pub async fn allocate_producer_id(self: &Rc<Self>) -> Result<i64, MetadataError> {
        assert_eq!(
            self.id, COORDINATOR_SHARD,
            "producer ids come from the coordinator shard"
        );
        let (next, end) = self.producer_ids.get();
        if next < end {
            self.producer_ids.set((next + 1, end));
            return Ok(next);
        }
        let (start, end) = self.reserve_producer_ids().await?;
        // Another allocation on this shard may have reserved a block while this one waited:
        // keep whichever block has ids left, the newer one when both have.
        let (next, old_end) = self.producer_ids.get();
        if next < old_end && old_end > end {
            self.producer_ids.set((next + 1, old_end));
            return Ok(next);
        }
        assert!(start < end);
        self.producer_ids.set((start + 1, end));
        Ok(start)
    }

    /// Applies retention to every partition of this shard, forever, every
    /// `retention_check_interval_ms`, until the shard stops.
    pub async fn retention_loop(self: Rc<Self>) {
        let interval = Duration::from_millis(self.config.retention_check_interval_ms.max(1000));
        while !self.stopping.get() {
            let tick = crate::rt::sleep(interval);
            futures_lite::future::or(tick, self.stop.wait()).await;
            if self.stopping.get() {
                break;
            }
            for partition in self.partitions() {
                match partition.log.apply_retention(now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(topic = %partition.topic, partition = partition.index, segments = n, "retention deleted segments")
                    }
                    Err(e) => {
                        tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "retention failed")
                    }
                }
                partition.log.expire_producers(now_ms());
                crate::rt::yield_if_needed().await;
            }
        }
    }

    /// The log cleaner of this shard (see [`crate::storage::cleaner`]): every
    /// `log_cleaner_backoff_ms`, one cleaning round for each compacted partition that needs
    /// one, until the shard stops. Runs on a low-priority task queue (see `crate::runtime`).
    pub async fn cleaner_loop(self: Rc<Self>) {
        use crate::storage::cleaner::{LogCleanState, OffsetMap};
        let interval = Duration::from_millis(self.config.log_cleaner_backoff_ms.max(10));
        let mut map = OffsetMap::with_memory(self.config.log_cleaner_dedupe_buffer_bytes_per_shard);
        let mut states: HashMap<PathBuf, LogCleanState> = HashMap::new();
        while !self.stopping.get() {
            let tick = crate::rt::sleep(interval);
            futures_lite::future::or(tick, self.stop.wait()).await;
            if self.stopping.get() {
                break;
            }
            let partitions = self.partitions();
            forget_removed_logs(&mut states, partitions.iter().map(|p| p.log.dir()));
            for partition in partitions {
                if self.stopping.get() {
                    break;
                }
                let state = states.entry(partition.log.dir().to_path_buf()).or_default();
                match partition.log.clean(state, &mut map, now_ms(), false).await {
                    Ok(None) => {}
                    Ok(Some(r)) => {
                        tracing::info!(topic = %partition.topic, partition = partition.index, segments = r.segments_cleaned, into = r.segments_written, bytes_before = r.bytes_before, bytes_after = r.bytes_after, records_read = r.records_read, records_kept = r.records_kept, first_dirty = r.first_dirty, "log cleaned")
                    }
                    Err(e) => {
                        tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "log cleaning failed")
                    }
                }
                crate::rt::yield_if_needed().await;
            }
        }
    }

    /// Coordinator shard: loads committed offsets and
    /// transactions (at startup, before the listener opens).
    pub async fn load_group_coordinator(self: &Rc<Self>) {
        assert_eq!(self.id, COORDINATOR_SHARD);
        if crate::cluster::parse_voters(&self.config.controller_quorum_voters)
            .is_ok_and(|voters| !voters.is_empty())
        {
            // A cluster: the groups and transactional ids live in the replicated
            // `__consumer_offsets` and `__transaction_state` partitions.
            self.groups.start_replicated(self);
            self.txns.start_replicated(self);
            return;
        }
        if let Err(e) = self
            .groups
            .load(&self.config.data_dir, self.cache.clone())
            .await
        {
            tracing::error!(error = %e, "loading committed offsets failed; group APIs answer COORDINATOR_NOT_AVAILABLE");
        }
        if let Err(e) = self
            .txns
            .load(&self.config.data_dir, self.cache.clone())
            .await
        {
            tracing::error!(error = %e, "loading transaction state failed; transaction APIs answer COORDINATOR_NOT_AVAILABLE");
        }
    }

    /// Coordinator shard: starts the group timers ([`Shard::group_timer_loop`]) and runs the
    /// coordinators' periodic work with I/O every [`groups::GROUP_TICK_INTERVAL_MS`] until the
    /// shard stops: writing groups the timers changed, expiring offsets, transaction timeouts,
    /// compacting the offsets log.
    pub async fn group_tick_loop(self: Rc<Self>) {
        assert_eq!(self.id, COORDINATOR_SHARD);
        crate::rt::spawn_local(self.clone().group_timer_loop()).detach();
        let interval = Duration::from_millis(groups::GROUP_TICK_INTERVAL_MS);
        while !self.stopping.get() {
            let tick = crate::rt::sleep(interval);
            futures_lite::future::or(tick, self.stop.wait()).await;
            self.groups.persist_groups().await;
            self.groups.maybe_expire_offsets(now_ms()).await;
            txns::tick(&self);
            if let Err(e) = self.groups.maybe_compact().await {
                tracing::warn!(error = %e, "compacting the offsets log failed");
            }
        }
    }

    /// Coordinator shard: runs the group timers (sessions, rebalance delays and timeouts) at
    /// their deadlines, at the latest every [`groups::GROUP_TICK_INTERVAL_MS`]. It does no I/O,
    /// so a slow write or a compaction in [`Shard::group_tick_loop`] cannot make a session end
    /// late.
    async fn group_timer_loop(self: Rc<Self>) {
        let interval_ms = groups::GROUP_TICK_INTERVAL_MS as i64;
        while !self.stopping.get() {
            let now = now_ms();
            let next = self
                .groups
                .next_deadline_ms(now)
                .map_or(now + interval_ms, |d| d.min(now + interval_ms));
            // At least 1 ms: a deadline in the current millisecond is due on the next one.
            let wait = Duration::from_millis((next - now).max(1) as u64);
            futures_lite::future::or(crate::rt::sleep(wait), self.stop.wait()).await;
            self.groups.tick(now_ms());
        }
    }

    /// Flushes and closes every partition (clean shutdown), at most
    /// [`PARTITIONS_CLOSING_CONCURRENTLY_MAX`] at once: each close waits on a few fsyncs,
    /// which the disk overlaps.
    pub async fn close_partitions(&self) {
        self.finish_deletions().await;
        let partitions: Vec<_> = self
            .partitions
            .borrow_mut()
            .drain()
            .map(|(_, p)| p)
            .collect();
        let running = Rc::new(Semaphore::new(PARTITIONS_CLOSING_CONCURRENTLY_MAX as u64));
        let mut tasks = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let Ok(permit) = running.clone().acquire_static_permit(1).await else {
                break;
            };
            tasks.push(crate::rt::spawn_local(async move {
                if let Err(e) = partition.log.close().await {
                    tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "closing partition failed");
                }
                drop(permit);
            }));
        }
        for task in tasks {
            task.await;
        }
    }

    /// Starts shutdown on this shard: listeners stop accepting, idle connections close.
    pub fn begin_stop(&self) {
        self.stopping.set(true);
        self.stop.notify_all();
    }
}

fn storage_unavailable() -> MetadataError {
    MetadataError {
        code: kafka_protocol::error::ResponseError::KafkaStorageError,
        message: "The broker could not persist the metadata change".into(),
    }
}

/// Every command's result when a request is refused as a whole with `error`: a real request
/// fails every command; a validate_only one fails the commands that add partitions.
fn refuse_all(
    commands: &[MetadataCommand],
    results: Vec<Result<(), MetadataError>>,
    error: &MetadataError,
    validate_only: bool,
) -> Vec<Result<(), MetadataError>> {
    commands
        .iter()
        .zip(results)
        .map(|(command, result)| {
            let adds = matches!(
                command,
                MetadataCommand::CreateTopic { .. } | MetadataCommand::CreatePartitions { .. }
            );
            if adds || !validate_only {
                result.and(Err(error.clone()))
            } else {
                result
            }
        })
        .collect()
}

/// The next accepted connection, or `None` once the shard begins to stop.
pub(crate) async fn accept_or_stop(
    shard: &Shard,
    listener: &crate::rt::net::TcpListener,
) -> Option<crate::rt::net::Result<crate::rt::net::TcpStream>> {
    futures_lite::future::or(async { Some(listener.accept().await) }, async {
        shard.stop.until(|| shard.stopping.get()).await;
        None
    })
    .await
}

/// Drops the entries of `states` whose log directory is not among `live` (the partition was
/// deleted or moved away), in time linear in both: a set of the live directories, then one
/// lookup per entry. (Comparing every entry with every live directory was quadratic: with
/// 5,000 partitions on a shard, 25 million path comparisons in one step of the cleaner, a
/// reactor stall of seconds every `log_cleaner_backoff_ms`.)
fn forget_removed_logs<'a, V>(
    states: &mut HashMap<PathBuf, V>,
    live: impl Iterator<Item = &'a std::path::Path>,
) {
    let live: std::collections::HashSet<&std::path::Path> = live.collect();
    states.retain(|dir, _| live.contains(dir.as_path()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::metadata::{PartitionAssignment, TopicMeta};
    use crate::storage::io::sim::{install, SimDisk};

    /// A map keyed by owned (topic, partition) finds its entries by borrowed parts, and only
    /// those (the borrowed key hashes and compares as the owned one).
    #[test]
    fn topic_partition_lookup_by_borrowed_parts() {
        let mut map: HashMap<TopicPartition, u32> = HashMap::new();
        for (i, topic) in ["a", "ab", "orders", ""].iter().enumerate() {
            for p in 0..50 {
                map.insert((topic.to_string(), p), i as u32 * 100 + p as u32);
            }
        }
        for (i, topic) in ["a", "ab", "orders", ""].iter().enumerate() {
            for p in 0..50 {
                let key = (*topic, p);
                assert_eq!(
                    map.get(&key as &dyn TopicPartitionRef),
                    Some(&(i as u32 * 100 + p as u32))
                );
            }
        }
        assert_eq!(map.get(&("a", 50) as &dyn TopicPartitionRef), None);
        assert_eq!(map.get(&("abc", 0) as &dyn TopicPartitionRef), None);
        assert_eq!(map.get(&("b", 0) as &dyn TopicPartitionRef), None);
    }

    /// The cleaner forgets the state of logs that are gone and keeps every other, also at
    /// 20,000 logs (the old all-pairs comparison took minutes there in a debug build).
    #[test]
    fn forget_removed_logs_keeps_live_and_drops_removed() {
        let dir = |i: usize| PathBuf::from(format!("/data/t-{}/{}", i / 100, i % 100));
        let mut states: HashMap<PathBuf, usize> = (0..20_000).map(|i| (dir(i), i)).collect();
        let live: Vec<PathBuf> = (0..20_000).filter(|i| i % 3 != 0).map(dir).collect();
        forget_removed_logs(&mut states, live.iter().map(|p| p.as_path()));
        assert_eq!(states.len(), live.len());
        assert!(live.iter().all(|d| states.contains_key(d)));
        assert!(!states.contains_key(&dir(0)) && !states.contains_key(&dir(19_998)));
        assert_eq!(states[&dir(1)], 1);
        forget_removed_logs(&mut states, std::iter::empty());
        assert!(states.is_empty());
    }

    /// Topic "t" of 2 partitions led by `leaders[p]`, at metadata version `version`.
    fn metadata(version: u64, leaders: [i32; 2]) -> Arc<ClusterMetadata> {
        let mut m = ClusterMetadata {
            cluster_id: "c".into(),
            version,
            ..Default::default()
        };
        let topic = TopicMeta {
            id: uuid::Uuid::from_u128(7),
            partitions: 2,
            configs: Default::default(),
            internal: false,
            assignment: leaders
                .iter()
                .map(|&l| PartitionAssignment {
                    replicas: vec![l],
                    leader: l,
                    leader_epoch: version as i32,
                    isr: vec![l],
                    partition_epoch: 0,
                    reassignment: None,
                })
                .collect(),
        };
        m.topics.insert("t".into(), topic);
        Arc::new(m)
    }

    fn record() -> bytes::Bytes {
        freshet_protocol::batch::encode_batch(
            &[(None, Some(bytes::Bytes::from_static(b"v")), 1)],
            freshet_protocol::batch::Compression::None,
        )
        .expect("batch")
    }

    /// Topic "r" of one partition on replicas [0, 1] led by `leader` with `isr`.
    fn replicated(version: u64, leader: i32, isr: &[i32]) -> Arc<ClusterMetadata> {
        let mut m = ClusterMetadata {
            cluster_id: "c".into(),
            version,
            ..Default::default()
        };
        let topic = TopicMeta {
            id: uuid::Uuid::from_u128(9),
            partitions: 1,
            configs: Default::default(),
            internal: false,
            assignment: vec![PartitionAssignment {
                replicas: vec![0, 1],
                leader,
                leader_epoch: version as i32,
                isr: isr.to_vec(),
                partition_epoch: version as i32,
                reassignment: None,
            }],
        };
        m.topics.insert("r".into(), topic);
        Arc::new(m)
    }

    /// A follower's partition is open but hidden from client requests; once this broker
    /// leads it with a follower in its ISR, readers stop at the high watermark that follower's
    /// fetches move (the durable end when the leader is alone in its ISR).
    #[test]
    fn replicas_open_as_followers_and_lead_with_a_replicated_high_watermark() {
        crate::rt::sim::run(11, async {
            let disk = SimDisk::new(11);
            let _installed = install(&disk);
            let config = Arc::new(BrokerConfig {
                data_dir: PathBuf::from("/data"),
                ..BrokerConfig::default()
            });
            crate::storage::io::create_dir_all(&config.data_dir)
                .await
                .expect("data dir");
            let (router, _inboxes) = Router::new(1, 16);
            let shard = Shard::new(0, config, router, replicated(1, 1, &[0, 1]));
            shard.open_partitions().await;
            assert!(
                shard.partition("r", 0).is_none(),
                "followed: not for clients"
            );
            let p = shard.replica("r", 0).expect("hosted");
            assert_eq!(p.following(), Some((1, 1)));

            shard.install_metadata(replicated(2, 0, &[0])).await;
            let p = shard.partition("r", 0).expect("led here now");
            p.append(record()).await.expect("append");
            assert_eq!(
                p.log.high_watermark(),
                1,
                "alone in the ISR: the durable end"
            );

            shard.install_metadata(replicated(3, 0, &[0, 1])).await;
            p.append(record()).await.expect("append");
            assert_eq!(p.log.durable_end(), 2);
            assert_eq!(
                p.log.high_watermark(),
                1,
                "the follower has not fetched yet"
            );
            assert!(shard.enough_replicas(&p).is_ok());
            shard.record_follower_fetch(&p, 1, 2, 0);
            assert_eq!(p.log.high_watermark(), 2, "the follower fetched at 2");
            shard.await_replicated(&p, 1).await.expect("replicated");
            shard.close_partitions().await;
        });
    }

    /// Node 0 opens only the partition it leads; when leadership swaps, the partition that
    /// moved away is closed with its files kept and the one that moved here is opened; when
    /// it comes back, it is reopened with its records.
    #[test]
    fn partitions_follow_their_leadership() {
        crate::rt::sim::run(7, async {
            let disk = SimDisk::new(7);
            let _installed = install(&disk);
            let config = Arc::new(BrokerConfig {
                data_dir: PathBuf::from("/data"),
                ..BrokerConfig::default()
            });
            crate::storage::io::create_dir_all(&config.data_dir)
                .await
                .expect("data dir");
            let (router, _inboxes) = Router::new(1, 16);
            let shard = Shard::new(0, config, router, metadata(1, [0, 1]));
            shard.open_partitions().await;
            assert!(shard.partition("t", 0).is_some());
            assert!(shard.partition("t", 1).is_none(), "led by broker 1");
            let p0 = shard.partition("t", 0).unwrap();
            p0.append(record()).await.expect("append");
            drop(p0);

            shard.install_metadata(metadata(2, [1, 0])).await;
            assert!(shard.partition("t", 0).is_none(), "moved away: closed");
            assert!(shard.partition("t", 1).is_some(), "moved here: opened");
            shard.finish_deletions().await;
            let kept = crate::storage::io::list_dir(&shard.partition_dir("t", 0))
                .await
                .expect("its directory is kept");
            assert!(!kept.is_empty(), "its files are kept");

            shard.install_metadata(metadata(3, [0, 0])).await;
            let p0 = shard.partition("t", 0).expect("reopened");
            assert_eq!(p0.log.high_watermark(), 1, "with its record");
            assert!(shard.partition("t", 1).is_some());
            shard.close_partitions().await;
        });
    }
}
