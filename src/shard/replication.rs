//! Replication on a shard: the role of each hosted partition, the follower fetchers, the
//! leader's bookkeeping of its followers (high watermark, ISR changes) and the acks=all wait.
//!
//! # Roles
//! A broker opens every partition it is a replica of (`routing::hosts`). On each metadata
//! install the shard gives each one its role from the assignment ([`Role`]): `Leader` with its
//! followers' state (`replica::leader::LeaderState`), or `Follower` of a broker at an epoch.
//! Client requests reach only leaders ([`Shard::partition`]); a follower's partition is
//! answered NOT_LEADER_OR_FOLLOWER as a partition this broker does not host.
//!
//! # Follower fetchers
//! One task per (leader broker, shard) ([`FetcherSet`]), alive while this shard follows a
//! partition of that leader. It keeps one connection to the leader's Kafka listener (its
//! registration's host:port) and sends one Fetch for all those partitions at a time (Kafka's
//! `AbstractFetcherThread`): each at its log end, which is durable (the next Fetch goes out
//! only after the previous answer's appends are fdatasync'd), `replica_id` = this broker,
//! `current_leader_epoch` = the epoch it follows. Each answer's batches are appended unchanged
//! (`PartitionLog::append_replicated`, the partitions' appends concurrently), then the
//! follower's high watermark becomes `min(leader's high watermark, own durable end)`. A
//! failed connect or request is retried after a backoff (a tenth of `replica_fetch_backoff_ms`,
//! doubling up to it); a role change interrupts a request in flight (the connection is dropped
//! and made again).
//!
//! # Leader
//! A follower's Fetch at offset `o` (api::fetch) records `o` as its durable end
//! ([`Shard::record_follower_fetch`]); the high watermark is `min(durable end, fetch offsets of
//! the maximal ISR)`; a leader alone in its ISR follows its durable end (the single-replica
//! rule, so a topic of replication factor 1 behaves as before replication). Produce with
//! acks=-1 is refused with NOT_ENOUGH_REPLICAS when the ISR is smaller than
//! `min.insync.replicas`, and answered once the high watermark passes its last offset
//! ([`Shard::await_replicated`]; NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below it
//! meanwhile).
//!
//! Divergence: each Fetch names the epoch of the follower's last batch (`last_fetched_epoch`);
//! a leader whose log differs from there answers `diverging_epoch`, and the follower truncates
//! its divergent suffix (`PartitionLog::truncate_to`) before it fetches again.
//!
//! Out of range (OFFSET_OUT_OF_RANGE from the leader, [`handle_out_of_range`]): a follower
//! whose log ends below the leader's log start starts its log again there (Kafka's
//! `truncateFullyAndStartAt`: a new replica of a partition whose start was deleted never
//! stalls); one whose log ends past the leader's with no epoch to tell truncates to the
//! leader's high watermark.
//!
//! ISR expansion waits for a follower to reach both the high watermark and the start of the
//! leader's current epoch (Kafka's `isFollowerInSync`), so a follower that has none of this
//! epoch's batches yet never joins.
//!
//! Known gaps: a leader's high watermark after a restart starts from what its ISR fetches
//! (Kafka keeps a checkpoint of it).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{now_ms, routing, Notify, Partition, Shard, COORDINATOR_SHARD};
use crate::coordinator::metadata::{ClusterMetadata, MetadataCommand};
use crate::replica::client::{whole_batches, LeaderConnection};
use crate::replica::follower::{self, OutOfRange};
use crate::replica::partition as rules;
pub use crate::replica::Role;

/// How long a leader waits before it proposes an ISR change again after one was refused.
pub const ISR_RETRY_MS: i64 = 1_000;
/// How long a follower waits for its leader's listener to accept a connection.
const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// How long a Fetch may take beyond `replica_fetch_wait_max_ms` before the follower gives up
/// on the connection (a paused or partitioned leader).
const FETCH_SLACK_MS: u64 = 5_000;

impl Partition {
    /// Whether this broker leads the partition (client requests may use it).
    pub fn is_leader(&self) -> bool {
        self.role.borrow().is_leader()
    }

    /// The leader this broker follows the partition from, with its epoch.
    pub fn following(&self) -> Option<(i32, i32)> {
        self.role.borrow().following()
    }

    /// The ISR size as this leader knows it (0 when not leading).
    pub fn isr_len(&self) -> usize {
        self.role.borrow().isr_len()
    }

    /// A leader's high watermark from its followers' offsets (see the module docs); wakes
    /// the waiters if the high watermark readers see moved. It never moves back while this
    /// broker leads (an ISR that grows keeps what readers saw), except for a partition just
    /// opened (`fresh`): it starts from what its ISR has or from the high watermark its
    /// recovery checkpoint recorded (Kafka's `replication-offset-checkpoint`), whichever is
    /// higher, not from its own durable end.
    pub fn refresh_high_watermark(&self) {
        self.refresh_high_watermark_from(false);
    }

    fn refresh_high_watermark_from(&self, fresh: bool) {
        let changed = rules::refresh_high_watermark(&self.role.borrow(), &self.log, fresh);
        if changed {
            self.hw_changed.notify_all();
        }
    }
}

/// The follower fetcher tasks of one shard, by leader broker id, each with the signal that
/// interrupts it when roles change. Owned by the shard; a task removes itself when it has
/// nothing left to fetch.
#[derive(Default)]
pub struct FetcherSet {
    running: RefCell<BTreeMap<i32, ()>>,
    /// The ISR check loop of this shard runs (started with the first partition it leads).
    isr_loop: std::cell::Cell<bool>,
    /// Notified on every role change (and at shutdown), so that fetchers look again.
    pub changed: Notify,
}

impl Shard {
    /// A partition hosted here (leader or follower), if open.
    pub fn replica(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(&(topic, partition) as &dyn super::TopicPartitionRef)
            .cloned()
    }

    /// Gives every open partition its role in `next` and starts the fetchers it needs
    /// (called by reconcile after opening).
    pub(super) fn apply_roles(self: &Rc<Self>, next: &ClusterMetadata) {
        let node = self.config.node_id;
        let now = now_ms();
        let mut leaders: Vec<i32> = Vec::new();
        let mut followed_changed = false;
        for partition in self.partitions() {
            let Some(topic) = next.topics.get(&partition.topic) else {
                continue;
            };
            if partition.index >= topic.partitions {
                continue;
            }
            let a = routing::assignment_of(topic, partition.index, node);
            let followed_before = partition.following();
            // The role every partition gets when opened, before its first metadata.
            let fresh = followed_before == Some((-1, -1));
            let followed = {
                let mut role = partition.role.borrow_mut();
                rules::assign_role(&mut role, &partition.log, node, &a, now)
            };
            if let Some(leader) = followed {
                if !leaders.contains(&leader) {
                    leaders.push(leader);
                }
            }
            followed_changed |= partition.following() != followed_before;
            partition.refresh_high_watermark_from(fresh);
            // acks=all waiters look at the role and ISR again.
            partition.hw_changed.notify_all();
        }
        if !self.fetchers.isr_loop.get() && !self.stopping.get() {
            self.fetchers.isr_loop.set(true);
            crate::rt::spawn_local(self.clone().isr_loop()).detach();
        }
        if followed_changed {
            // Fetchers with a request in flight drop it and ask again for the new set.
            self.fetchers.changed.notify_all();
        }
        for leader in leaders {
            self.ensure_fetcher(leader);
        }
    }

    /// Whether broker `replica` is one of the followers of `partition` as this broker leads
    /// it (Kafka's `Partition.getReplica`: not this broker, not a broker outside the
    /// assignment, nothing while this broker follows).
    pub fn is_follower_of(&self, partition: &Partition, replica: i32) -> bool {
        match &*partition.role.borrow() {
            Role::Leader(s) => s.followers.contains_key(&replica),
            Role::Follower { .. } => false,
        }
    }

    /// A follower's Fetch of `partition` (led here) at `offset`: its durable end, as the
    /// high watermark and the ISR see it, with the log start offset it reports (`log_start`,
    /// for the low watermark DeleteRecords waits for).
    /// An offset past the durable end (a follower with a divergent suffix, answered
    /// OFFSET_OUT_OF_RANGE) is not recorded: it is not data this leader has.
    pub fn record_follower_fetch(
        &self,
        partition: &Partition,
        replica: i32,
        offset: i64,
        log_start: i64,
    ) {
        let recorded = rules::record_follower_fetch(
            &mut partition.role.borrow_mut(),
            &partition.log,
            replica,
            (offset, log_start),
            now_ms(),
        );
        if recorded.offset {
            partition.refresh_high_watermark();
        }
        if recorded.log_start {
            // DeleteRecords waiters look at the low watermark again.
            partition.hw_changed.notify_all();
        }
    }

    /// Proposes the ISR change `partition` needs now, if any (Kafka's `maybeShrinkIsr` /
    /// `maybeExpandIsr`): through `Shard::change_metadata` (AlterPartition with the partition
    /// epoch this leader knows), one in flight per partition; a refused one is not proposed
    /// again for [`ISR_RETRY_MS`]. The new ISR takes effect when the metadata is installed.
    pub fn maybe_change_isr(self: &Rc<Self>, partition: &Rc<Partition>) {
        let lag = i64::try_from(self.config.replica_lag_time_max_ms).unwrap_or(i64::MAX);
        let command: Option<MetadataCommand> = rules::propose_isr_change(
            &mut partition.role.borrow_mut(),
            &partition.log,
            (&partition.topic, partition.index),
            self.config.node_id,
            now_ms(),
            lag,
        );
        let Some(command) = command else {
            return;
        };
        tracing::info!(topic = %partition.topic, partition = partition.index, ?command, "proposing an ISR change");
        let shard = self.clone();
        let partition = partition.clone();
        crate::rt::spawn_local(async move {
            let answer = shard
                .invoke_on(COORDINATOR_SHARD, move |c| async move {
                    c.change_metadata(vec![command], false).await
                })
                .await;
            let refused = match answer {
                Ok(results) => results.into_iter().find_map(Result::err),
                Err(e) => Some(crate::coordinator::metadata::MetadataError {
                    code: ResponseError::NotController,
                    message: e.to_string(),
                }),
            };
            // Accepted: the install normally ended it already (new partition epoch); if not
            // (the forward's wait ran out), or the outcome is not known, it stays pending and
            // is sent again; only a final refusal ends it here.
            let final_refusal = refused
                .as_ref()
                .is_some_and(|e| rules::isr_refusal_is_final(e.code));
            rules::isr_change_answered(
                &mut partition.role.borrow_mut(),
                final_refusal,
                now_ms() + ISR_RETRY_MS,
            );
            if let Some(e) = &refused {
                if partition.is_leader() {
                    tracing::info!(topic = %partition.topic, partition = partition.index, code = ?e.code, message = %e.message, final_refusal, "ISR change refused");
                }
            }
            partition.refresh_high_watermark();
        })
        .detach();
    }

    /// Every `replica_lag_time_max_ms / 2` (Kafka's `isr-expiration` task), the ISR check of
    /// every partition this shard leads with followers, until the shard stops.
    async fn isr_loop(self: Rc<Self>) {
        let interval = Duration::from_millis((self.config.replica_lag_time_max_ms / 2).max(10));
        while !self.stopping.get() {
            futures_lite::future::or(crate::rt::sleep(interval), self.stop.wait()).await;
            for partition in self.partitions() {
                let replicated = match &*partition.role.borrow() {
                    Role::Leader(s) => s.replicas.len() > 1,
                    Role::Follower { .. } => false,
                };
                if replicated {
                    self.maybe_change_isr(&partition);
                }
            }
            crate::rt::yield_if_needed().await;
        }
    }

    /// acks=all, before appending: NOT_ENOUGH_REPLICAS when the ISR is smaller than the
    /// topic's `min.insync.replicas` (Kafka's `Partition.appendRecordsToLeader`).
    pub fn enough_replicas(&self, partition: &Partition) -> Result<(), ResponseError> {
        let min = self.min_insync(partition);
        if (partition.isr_len() as i32) < min {
            return Err(ResponseError::NotEnoughReplicas);
        }
        Ok(())
    }

    fn min_insync(&self, partition: &Partition) -> i32 {
        self.metadata().min_insync_replicas(&partition.topic)
    }

    /// acks=all, after the durable local append: resolves once the high watermark passes
    /// `last_offset` (Kafka's `checkEnoughReplicasReachOffset`), with
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR is then below `min.insync.replicas`,
    /// NOT_LEADER_OR_FOLLOWER if this broker stopped leading. Cancel-safe (dropping it leaves
    /// nothing behind).
    pub async fn await_replicated(
        &self,
        partition: &Partition,
        last_offset: i64,
    ) -> Result<(), ResponseError> {
        loop {
            let wait = partition.hw_changed.wait();
            if self.stopping.get() {
                return Err(crate::error::not_leader_code());
            }
            let outcome = rules::acks_all_outcome(
                &partition.role.borrow(),
                partition.log.high_watermark(),
                last_offset,
                self.min_insync(partition),
            );
            if let Some(outcome) = outcome {
                return outcome;
            }
            futures_lite::future::or(wait, self.stop.wait()).await;
        }
    }

    /// DeleteRecords after the leader moved its own log start to `target`: resolves once the
    /// partition's low watermark (the smallest log start over the leader and the replicas on
    /// unfenced brokers, as the followers report it in their Fetches) reaches `target`, with
    /// that low watermark; NOT_LEADER_OR_FOLLOWER if this broker stopped leading (Kafka's
    /// `DelayedDeleteRecords`). Woken by `hw_changed`, which a follower's new log start, a
    /// metadata install (fencing) and a role change notify. Cancel-safe: the caller bounds it
    /// by the request's `timeout_ms`.
    pub async fn await_low_watermark(
        &self,
        partition: &Partition,
        target: i64,
    ) -> Result<i64, ResponseError> {
        loop {
            let wait = partition.hw_changed.wait();
            if self.stopping.get() {
                return Err(crate::error::not_leader_code());
            }
            let metadata = self.metadata();
            let alive = |id: i32| metadata.brokers.get(&id).is_some_and(|b| !b.fenced);
            let outcome = rules::delete_records_outcome(
                &partition.role.borrow(),
                &partition.log,
                target,
                alive,
            );
            if let Some(outcome) = outcome {
                return outcome;
            }
            futures_lite::future::or(wait, self.stop.wait()).await;
        }
    }

    /// The low watermark of `partition` as this leader knows it now (-1 when not leading).
    pub fn low_watermark(&self, partition: &Partition) -> i64 {
        let metadata = self.metadata();
        match &*partition.role.borrow() {
            Role::Leader(s) => s.low_watermark(partition.log.log_start_offset(), |id| {
                metadata.brokers.get(&id).is_some_and(|b| !b.fenced)
            }),
            Role::Follower { .. } => -1,
        }
    }

    /// Starts the fetcher of partitions led by `leader` unless it runs.
    fn ensure_fetcher(self: &Rc<Self>, leader: i32) {
        if leader == self.config.node_id || self.stopping.get() {
            return;
        }
        if crate::rt::sim::is_active() {
            // The simulator has no network yet (`rt::net` panics there): followers under it
            // stay where they are.
            return;
        }
        if self
            .fetchers
            .running
            .borrow_mut()
            .insert(leader, ())
            .is_some()
        {
            return;
        }
        tracing::info!(shard = self.id, leader, "starting the follower fetcher");
        crate::rt::spawn_local(self.clone().fetcher_loop(leader)).detach();
    }

    /// The partitions this shard follows from `leader`, with the epoch it follows.
    fn followed_from(&self, leader: i32) -> Vec<(Rc<Partition>, i32)> {
        let mut out: Vec<(Rc<Partition>, i32)> = self
            .partitions()
            .into_iter()
            .filter_map(|p| match p.following() {
                Some((l, epoch)) if l == leader => Some((p, epoch)),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| (&a.0.topic, a.0.index).cmp(&(&b.0.topic, b.0.index)));
        out
    }

    /// The fetcher of partitions led by `leader` (see the module docs). Runs until this
    /// shard follows nothing from it or stops.
    async fn fetcher_loop(self: Rc<Self>, leader: i32) {
        let backoff_max = Duration::from_millis(self.config.replica_fetch_backoff_ms.max(10));
        let backoff_min = backoff_max / 10;
        let mut backoff = backoff_min;
        let mut connection: Option<LeaderConnection> = None;
        loop {
            let changed = self.fetchers.changed.wait();
            let followed = self.followed_from(leader);
            if followed.is_empty() || self.stopping.get() {
                break;
            }
            let failed = match self.fetch_once(leader, &followed, &mut connection).await {
                Step::Fetched { errors: 0 } => false,
                Step::Fetched { .. } | Step::Failed => true,
                Step::Interrupted => false,
            };
            if failed {
                let pause = crate::rt::sleep(backoff);
                futures_lite::future::or(pause, changed).await;
                backoff = (backoff * 2).min(backoff_max);
            } else {
                backoff = backoff_min;
            }
        }
        self.fetchers.running.borrow_mut().remove(&leader);
        tracing::info!(shard = self.id, leader, "follower fetcher stopped");
    }

    /// One Fetch round with `leader` for `followed`: connect if needed, send, append the
    /// answer. A failed or interrupted request drops the connection.
    async fn fetch_once(
        &self,
        leader: i32,
        followed: &[(Rc<Partition>, i32)],
        connection: &mut Option<LeaderConnection>,
    ) -> Step {
        if connection.as_ref().is_some_and(LeaderConnection::expired) {
            *connection = None;
        }
        if connection.is_none() {
            let Some((addr, host)) = self.leader_addr(leader).await else {
                return Step::Failed;
            };
            let timeout = Duration::from_millis(CONNECT_TIMEOUT_MS);
            match LeaderConnection::connect(addr, &host, timeout).await {
                Ok(c) => *connection = Some(c),
                Err(e) => {
                    tracing::debug!(leader, error = %e, "follower cannot connect to its leader");
                    return Step::Failed;
                }
            }
        }
        let Some(conn) = connection.as_mut() else {
            return Step::Failed;
        };
        let request = self.fetch_request(followed);
        // A leader answers at most max_bytes plus the first batch whole (Kafka's rule), and a
        // batch is at most its max.message.bytes: the response is refused beyond that.
        let response_max = self
            .config
            .replica_fetch_response_max_bytes
            .saturating_add(usize::try_from(self.config.message_max_bytes).unwrap_or(0))
            .saturating_add(self.config.replica_fetch_max_bytes);
        let deadline =
            Duration::from_millis(self.config.replica_fetch_wait_max_ms + FETCH_SLACK_MS);
        let outcome: RefCell<Option<Result<FetchResponse, String>>> = RefCell::new(None);
        let request_done = async {
            let r = conn.fetch(&request, response_max).await;
            *outcome.borrow_mut() = Some(r.map_err(|e| e.to_string()));
        };
        let interrupted = async {
            futures_lite::future::or(
                self.fetchers.changed.wait(),
                futures_lite::future::or(crate::rt::sleep(deadline), self.stop.wait()),
            )
            .await;
        };
        futures_lite::future::or(request_done, interrupted).await;
        let Some(result) = outcome.into_inner() else {
            *connection = None;
            return Step::Interrupted;
        };
        match result {
            Ok(response) => Step::Fetched {
                errors: self.apply_response(leader, followed, response).await,
            },
            Err(e) => {
                tracing::debug!(leader, error = %e, "follower fetch failed");
                *connection = None;
                Step::Failed
            }
        }
    }

    /// The leader's address on the inter-broker listener from its registration, and its
    /// advertised host (none while it is unknown or fenced). A host name is resolved off
    /// the shard.
    async fn leader_addr(&self, leader: i32) -> Option<(SocketAddr, String)> {
        let metadata = self.metadata();
        let b = metadata.brokers.get(&leader).filter(|b| !b.fenced)?;
        let listener = crate::cluster::inter_broker::current();
        let (host, port) = b.endpoint_on(&listener.listener);
        let (host, port) = (host.to_string(), u16::try_from(port).ok()?);
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Some((SocketAddr::new(ip, port), host));
        }
        let text = format!("{host}:{port}");
        let addr = crate::rt::spawn_blocking(move || crate::config::resolve(&text).ok()).await?;
        Some((addr, host))
    }

    /// The Fetch for `followed`: each partition at its (durable) log end.
    fn fetch_request(&self, followed: &[(Rc<Partition>, i32)]) -> FetchRequest {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (p, epoch) in followed {
            let mut fp = FetchPartition::default();
            fp.partition = p.index;
            fp.current_leader_epoch = *epoch;
            let position = follower::fetch_position(&p.log);
            fp.fetch_offset = position.fetch_offset;
            // The leader answers a divergence from its log with `diverging_epoch`.
            fp.last_fetched_epoch = position.last_fetched_epoch;
            fp.log_start_offset = position.log_start_offset;
            fp.partition_max_bytes =
                i32::try_from(self.config.replica_fetch_max_bytes).unwrap_or(i32::MAX);
            match topics.last_mut() {
                Some(t) if t.topic.0.as_str() == p.topic => t.partitions.push(fp),
                _ => {
                    let mut t = FetchTopic::default();
                    t.topic = TopicName(StrBytes::from_string(p.topic.clone()));
                    t.partitions.push(fp);
                    topics.push(t);
                }
            }
        }
        let mut request = FetchRequest::default();
        request.replica_id = BrokerId(self.config.node_id);
        request.max_wait_ms = i32::try_from(self.config.replica_fetch_wait_max_ms).unwrap_or(500);
        request.min_bytes = 1;
        request.max_bytes =
            i32::try_from(self.config.replica_fetch_response_max_bytes).unwrap_or(i32::MAX);
        request.isolation_level = 0;
        request.session_id = 0;
        request.session_epoch = -1;
        request.topics = topics;
        request
    }

    /// Appends each partition's batches (all partitions at once), then moves each follower's
    /// high watermark. Returns how many partitions answered with an error.
    async fn apply_response(
        &self,
        leader: i32,
        followed: &[(Rc<Partition>, i32)],
        response: FetchResponse,
    ) -> usize {
        let mut by_key: HashMap<(String, i32), Rc<Partition>> = followed
            .iter()
            .map(|(p, _)| ((p.topic.clone(), p.index), p.clone()))
            .collect();
        let mut errors = 0;
        let mut appends: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = bool>>>> =
            Vec::new();
        if response.error_code != 0 {
            tracing::debug!(leader, code = response.error_code, "follower fetch refused");
            return followed.len().max(1);
        }
        for topic in response.responses {
            let name = topic.topic.0.to_string();
            for pd in topic.partitions {
                let Some(partition) = by_key.remove(&(name.clone(), pd.partition_index)) else {
                    continue;
                };
                if pd.error_code == ResponseError::OffsetOutOfRange.code() {
                    let leader_offsets = (pd.log_start_offset, pd.high_watermark);
                    if !handle_out_of_range(&partition, leader, leader_offsets).await {
                        errors += 1;
                    }
                    continue;
                }
                if pd.error_code != 0 {
                    errors += 1;
                    let error = ResponseError::try_from_code(pd.error_code);
                    tracing::debug!(topic = %name, partition = pd.partition_index, leader, ?error, "leader answered a follower fetch with an error");
                    continue;
                }
                if pd.diverging_epoch.epoch >= 0 {
                    let diverging = (pd.diverging_epoch.epoch, pd.diverging_epoch.end_offset);
                    if !truncate_diverged(&partition, leader, diverging).await {
                        errors += 1;
                    }
                    continue;
                }
                let records = pd.records.as_ref().map(whole_batches).unwrap_or_default();
                let leader_offsets = (pd.high_watermark, pd.log_start_offset);
                appends.push(Box::pin(append_and_advance(
                    partition,
                    records,
                    leader_offsets,
                )));
            }
        }
        for ok in crate::rt::join_all(appends).await {
            if !ok {
                errors += 1;
            }
        }
        errors
    }
}

/// A follower's append of its leader's `records` (if any), its high watermark and log start
/// after it (`replica::follower::append_and_advance`). False if the append failed.
async fn append_and_advance(
    partition: Rc<Partition>,
    records: Bytes,
    leader_offsets: (i64, i64),
) -> bool {
    let p = partition.clone();
    let following = move || p.following().is_some();
    let advanced =
        follower::append_and_advance(&partition.log, records, leader_offsets, now_ms(), following)
            .await;
    if let Some(e) = &advanced.append_error {
        tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "appending the leader's batches failed");
    }
    if advanced.hw_changed {
        partition.hw_changed.notify_all();
    }
    if let Some(e) = &advanced.log_start_error {
        tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "moving the log start to the leader's failed");
    }
    advanced.append_error.is_none()
}

/// A follower whose log diverged from its leader's (the leader answered `diverging` = (epoch,
/// end offset of that epoch there)) drops its divergent suffix
/// (`replica::follower::truncate_diverged`). False if the truncation failed.
async fn truncate_diverged(partition: &Partition, leader: i32, diverging: (i32, i64)) -> bool {
    let log = &partition.log;
    if partition.following().is_none() {
        return true;
    }
    let (epoch, leader_end) = diverging;
    let target = follower::divergence_target(log, diverging);
    tracing::info!(topic = %partition.topic, partition = partition.index, leader, epoch, leader_end, target, log_end = log.log_end_offset(), "the follower's log diverged from its leader's: truncating");
    match follower::truncate_diverged(log, diverging).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "truncating a divergent suffix failed");
            false
        }
    }
}

/// A follower answered OFFSET_OUT_OF_RANGE by its leader, with the leader's log start and
/// high watermark from that answer (`replica::follower::handle_out_of_range`: start again at
/// the leader's log start, or truncate to its high watermark). Returns true when the log was
/// moved (the next fetch goes on at once); false otherwise (the fetcher backs off and asks
/// again).
async fn handle_out_of_range(
    partition: &Partition,
    leader: i32,
    leader_offsets: (i64, i64),
) -> bool {
    let log = &partition.log;
    if partition.following().is_none() {
        return true;
    }
    let log_end = log.log_end_offset();
    let (leader_log_start, leader_hw) = leader_offsets;
    match follower::handle_out_of_range(log, leader_offsets, now_ms()).await {
        Ok(OutOfRange::StartedAt(_)) => {
            tracing::info!(topic = %partition.topic, partition = partition.index, leader, log_end, leader_log_start, "the follower's log ended below its leader's log start: started it again there");
            partition.hw_changed.notify_all();
            true
        }
        Ok(OutOfRange::TruncatedTo(target)) => {
            tracing::info!(topic = %partition.topic, partition = partition.index, leader, log_end, leader_hw, target, "the follower's log ended past its leader's: truncated");
            true
        }
        Ok(OutOfRange::Unexplained) => {
            tracing::warn!(topic = %partition.topic, partition = partition.index, leader, log_end, leader_log_start, leader_hw, "the leader answered OFFSET_OUT_OF_RANGE for an offset within its range");
            false
        }
        Err(e) => {
            tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "moving the follower's log out of range failed");
            false
        }
    }
}

/// How one Fetch round went.
enum Step {
    /// Answered; `errors` partitions had an error.
    Fetched { errors: usize },
    /// No connection, or the request failed: back off.
    Failed,
    /// Roles changed or the shard stops: look again at once.
    Interrupted,
}
