//! Share groups in a cluster (KIP-932 as Kafka 4.2 runs them): the share coordinator, which
//! keeps the durable state of share partitions in the replicated partitions of
//! `__share_group_state`, and the share-partition leader's calls to it.
//!
//! - **Where things live.** Membership and assignment (ShareGroupHeartbeat/Describe) are the
//!   group coordinator's (the leader of the group's `__consumer_offsets` partition; others
//!   answer NOT_COORDINATOR). A share partition (group, topic, partition) — the in-flight
//!   records, their locks and delivery counts, the start offset — lives in memory on the
//!   **leader of the topic partition** (`shard::shares`, coordinator shard), which serves
//!   ShareFetch/ShareAcknowledge (NOT_LEADER_OR_FOLLOWER elsewhere). As in Kafka, the
//!   partition leader does not ask the group coordinator whether a member belongs to the
//!   group: the member id only keys the share session; records a member holds go back when
//!   their lock runs out or its session closes.
//! - **Durable state: the share coordinator** (Kafka's `ShareCoordinatorService`). The state
//!   of share partition K lives in partition `abs(hashCode("group:topicId:partition")) % N`
//!   of `__share_group_state` (topic id in Kafka's base64 form), a compacted internal topic
//!   created with `share_coordinator_state_topic_num_partitions`,
//!   `share_coordinator_state_topic_replication_factor` and
//!   `share_coordinator_state_topic_min_isr` (as `min.insync.replicas`). Its leader is K's
//!   share coordinator: it replays the partition when it becomes leader
//!   (`internal_partitions::replay`, COORDINATOR_LOAD_IN_PROGRESS meanwhile), serves
//!   ReadShareGroupState (84) and WriteShareGroupState (85) — Kafka's inter-broker APIs,
//!   CLUSTER_ACTION on the cluster — and answers a write once the record is on the in-sync
//!   replicas (`Shard::append_internal_partition`, NOT_ENOUGH_REPLICAS below the minimum).
//!   The record is the share partition's whole state (`ShareStateCodec`, the same record the
//!   single node's local log holds), so the last one of K wins on replay.
//! - **The share-partition leader** reads K's state from its coordinator the first time it
//!   serves K at a leader epoch (a new leader after a failover: accepted records are never
//!   handed out again; records that were acquired come back available with their delivery
//!   count, so the next delivery is counted higher), and writes K's state there before it
//!   answers an acknowledgement (and, within the tick, after lock timeouts and new starts).
//!   A write carries the leader epoch; the coordinator refuses one older than the newest it
//!   has seen for K (FENCED_LEADER_EPOCH), so a deposed leader cannot overwrite its
//!   successor. When it stops leading the topic partition (or leads it at a new epoch) the
//!   leader drops K from memory.
//! - State travels as Kafka's state batches: available runs with their delivery count
//!   (state 0), the rest of [start, end) acknowledged (state 2).
//!
//! Bounds: a replay read is at most 1 MiB; a coordinator holds one state per share
//! partition of the `__share_group_state` partitions it leads (each at most
//! `group_share_partition_max_record_locks` runs); a write or read waits at most
//! [`SHARE_STATE_CALL_TIMEOUT`].
//!
//! Admin changes (AlterShareGroupOffsets, DeleteShareGroupOffsets, DeleteGroups on the group
//! coordinator) are written to the share coordinators with [`ADMIN_LEADER_EPOCH`] (never
//! fenced).
//!
//! - **State epoch** (Kafka's): each stored state carries one; an admin change (Alter- /
//!   DeleteShareGroupOffsets) is stored with the stored epoch + 1, a leader's write carries the
//!   epoch of the state it loaded and is refused with FENCED_STATE_EPOCH when the stored one
//!   is newer; the leader then drops the share partition from memory and the next ShareFetch
//!   loads the admin change (as Kafka's `SharePartitionManager` drops a fenced share
//!   partition). Until that write, the leader may still hand out records from its old copy
//!   (as in Kafka).
//!
//! Not done: the epoch fence is in the coordinator's memory (a coordinator that just moved
//! takes the first writer's epoch); a removed state (DeleteGroups) keeps no epoch; DeleteGroups
//! removes the states of share partitions the group coordinator's node holds only; the
//! in-flight counts of describe see those only too.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    read_share_group_state_request, read_share_group_state_response,
    write_share_group_state_request, ReadShareGroupStateRequest, ReadShareGroupStateResponse,
    WriteShareGroupStateRequest, WriteShareGroupStateResponse,
};

use super::{ShareKey, ShareLogRecord, ShareStateCodec, SHARE_STATE_LOG_LIMITS};
use crate::coordinator::coordinator_key::{partition_for, CoordinatorKind, SHARE_STATE_TOPIC};
use crate::coordinator::metadata::ClusterMetadata;
use crate::coordinator::share_partition::ShareState;
use crate::shard::internal_partitions::{replay, LedPartitions, LoadedPartitions};
use crate::shard::{now_ms, Shard};
use crate::storage::internal_log::encode_append;

/// The longest a share-state read or write (the call to the coordinator and its replicated
/// append) may take.
pub const SHARE_STATE_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The leader epoch of a write that is not a share-partition leader's (an admin change by the
/// group coordinator: AlterShareGroupOffsets, DeleteShareGroupOffsets, DeleteGroups): never
/// fenced, and it fences no one.
pub const ADMIN_LEADER_EPOCH: i32 = -1;
/// Kafka's `RecordState`: AVAILABLE, ACKNOWLEDGED.
const STATE_AVAILABLE: i8 = 0;
const STATE_ACKNOWLEDGED: i8 = 2;

/// Kafka's `SharePartitionKey.asCoordinatorKey()`: `group:topicId:partition`, the topic id
/// as Kafka prints a `Uuid` (URL-safe base64 without padding).
pub fn coordinator_key(key: &ShareKey) -> String {
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.topic_id.as_bytes());
    format!("{}:{}:{}", key.group, id, key.partition)
}

/// A state as Kafka's state batches `(first, last, delivery state, delivery count)`.
pub fn to_batches(state: &ShareState) -> Vec<(i64, i64, i8, i16)> {
    let mut out = Vec::with_capacity(state.in_flight.len() * 2 + 1);
    let mut next = state.start_offset;
    for &(first, last, count) in &state.in_flight {
        if first > next {
            out.push((next, first - 1, STATE_ACKNOWLEDGED, 1));
        }
        out.push((first, last, STATE_AVAILABLE, count));
        next = last.saturating_add(1);
    }
    if state.end_offset > next {
        out.push((next, state.end_offset - 1, STATE_ACKNOWLEDGED, 1));
    }
    out
}

/// The state that `start` and Kafka's state `batches` describe (the inverse of
/// [`to_batches`]): batches in any state but AVAILABLE (or ACQUIRED, whose lock is gone) are
/// done; the end is past the last batch.
pub fn from_batches(start: i64, batches: &[(i64, i64, i8, i16)]) -> ShareState {
    let mut sorted: Vec<_> = batches
        .iter()
        .filter(|b| b.0 <= b.1 && b.1 >= start)
        .copied()
        .collect();
    sorted.sort_unstable();
    let end = sorted
        .iter()
        .map(|b| b.1.saturating_add(1))
        .max()
        .unwrap_or(start)
        .max(start);
    let in_flight = sorted
        .into_iter()
        .filter(|b| b.2 == STATE_AVAILABLE || b.2 == 1)
        .map(|(first, last, _, count)| (first.max(start), last, count))
        .collect();
    ShareState {
        start_offset: start,
        end_offset: end,
        in_flight,
        state_epoch: 0,
    }
}

/// The share coordinator's store on the coordinator shard (module doc).
pub struct ShareStateStore {
    led: LedPartitions,
    states: RefCell<HashMap<ShareKey, ShareState>>,
    /// The newest leader epoch a share-partition leader wrote each key with.
    epochs: RefCell<HashMap<ShareKey, i32>>,
}

impl ShareStateStore {
    /// The store of `shard` (the coordinator shard of a cluster node); loads what it leads.
    pub fn start(shard: &Rc<Shard>) -> Rc<ShareStateStore> {
        let store = Rc::new(ShareStateStore {
            led: LedPartitions::new(
                shard,
                SHARE_STATE_TOPIC,
                Arc::new(LoadedPartitions::default()),
            ),
            states: RefCell::new(HashMap::new()),
            epochs: RefCell::new(HashMap::new()),
        });
        store.on_metadata(&shard.metadata());
        store
    }

    /// A metadata install: loads the `__share_group_state` partitions this node now leads,
    /// forgets those it stopped leading.
    pub fn on_metadata(self: &Rc<Self>, metadata: &ClusterMetadata) {
        let n = metadata
            .topics
            .get(SHARE_STATE_TOPIC)
            .map_or(0, |t| t.partitions);
        self.led.on_metadata(
            metadata,
            |p| {
                let of_p = |k: &ShareKey| n <= 0 || partition_for(&coordinator_key(k), n) == p;
                self.states.borrow_mut().retain(|k, _| !of_p(k));
                self.epochs.borrow_mut().retain(|k, _| !of_p(k));
            },
            |shard, p, epoch| load_partition(shard, self.clone(), p, epoch),
        );
    }

    fn partition_of(&self, key: &ShareKey) -> Result<i32, ResponseError> {
        let n = self.led.partitions();
        if n <= 0 {
            return Err(crate::error::not_coordinator_code());
        }
        Ok(partition_for(&coordinator_key(key), n))
    }

    /// ReadShareGroupState of one key: its state (`None`: never written, or deleted).
    pub fn read(&self, key: &ShareKey) -> Result<Option<ShareState>, ResponseError> {
        let p = self.partition_of(key)?;
        self.led.writable(p)?;
        Ok(self.states.borrow().get(key).cloned())
    }

    /// WriteShareGroupState of one key by its share-partition leader at `leader_epoch`: the
    /// record on the in-sync replicas of its partition, then in memory.
    pub async fn write(
        &self,
        key: ShareKey,
        state: Option<ShareState>,
        leader_epoch: i32,
    ) -> Result<(), ResponseError> {
        let p = self.partition_of(&key)?;
        let (lock, _) = self.led.writable(p)?;
        let Ok(_permit) = lock.acquire_permit(1).await else {
            return Err(crate::error::not_coordinator_code());
        };
        if leader_epoch != ADMIN_LEADER_EPOCH
            && self
                .epochs
                .borrow()
                .get(&key)
                .is_some_and(|&e| e > leader_epoch)
        {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        // Kafka's state epoch: an admin change raises it; a leader's write must carry the
        // epoch of the state it loaded (FENCED_STATE_EPOCH when an admin change came since).
        let stored_epoch = self.states.borrow().get(&key).map(|s| s.state_epoch);
        let mut state = state;
        if let Some(s) = state.as_mut() {
            if leader_epoch == ADMIN_LEADER_EPOCH {
                s.state_epoch = stored_epoch.map_or(0, |e| e.saturating_add(1));
            } else if stored_epoch.is_some_and(|e| e > s.state_epoch) {
                return Err(ResponseError::FencedStateEpoch);
            }
        }
        let record: ShareLogRecord = (key.clone(), state.clone());
        let payload =
            encode_append::<ShareStateCodec>(&SHARE_STATE_LOG_LIMITS, &[record], now_ms())
                .map_err(|e| crate::error::storage_code(&e))?;
        let shard = self
            .led
            .shard()
            .ok_or(crate::error::coordinator_gone_code())?;
        let owner = shard.owner(SHARE_STATE_TOPIC, p);
        let written = shard
            .invoke_on(owner, move |s| async move {
                s.append_internal_partition(SHARE_STATE_TOPIC, p, payload, SHARE_STATE_CALL_TIMEOUT)
                    .await
            })
            .await
            .unwrap_or(Err(crate::error::coordinator_gone_code()));
        written?;
        if leader_epoch != ADMIN_LEADER_EPOCH {
            self.epochs.borrow_mut().insert(key.clone(), leader_epoch);
        }
        match state {
            Some(s) => self.states.borrow_mut().insert(key, s),
            None => self.states.borrow_mut().remove(&key),
        };
        Ok(())
    }
}

/// Replays partition `p` of `__share_group_state` into `store` (module doc).
async fn load_partition(shard: Rc<Shard>, store: Rc<ShareStateStore>, p: i32, epoch: i32) {
    let mut loaded: BTreeMap<ShareKey, Option<ShareState>> = BTreeMap::new();
    let still = || store.led.still(p, epoch, false);
    let done = replay::<ShareStateCodec>(&shard, SHARE_STATE_TOPIC, p, still, |(k, s)| {
        loaded.insert(k, s);
    })
    .await;
    if !done || !store.led.still(p, epoch, false) {
        return;
    }
    let count = loaded.len();
    {
        let mut states = store.states.borrow_mut();
        for (k, s) in loaded {
            match s {
                Some(s) => states.insert(k, s),
                None => states.remove(&k),
            };
        }
    }
    store.led.mark_loaded(p);
    tracing::info!(
        partition = p,
        share_partitions = count,
        "loaded the share states of a __share_group_state partition"
    );
}

/// The coordinator shard's store, in a cluster.
fn local_store(shard: &Shard) -> Option<Rc<ShareStateStore>> {
    shard.shares.store.borrow().clone()
}

/// The share coordinator of `key`: (node id, `host:port`), creating `__share_group_state`
/// first when the cluster has none.
async fn coordinator_of(shard: &Rc<Shard>, key: &ShareKey) -> Result<(i32, String), ResponseError> {
    if !shard.metadata().topics.contains_key(SHARE_STATE_TOPIC) {
        shard.prepare_coordinators(CoordinatorKind::Share).await;
    }
    let metadata = shard.metadata();
    let b = crate::coordinator::coordinator_key::locate(
        &metadata,
        CoordinatorKind::Share,
        &coordinator_key(key),
    )?;
    Ok((b.node_id, format!("{}:{}", b.host, b.port)))
}

/// The share-partition leader's read of `key`'s state from its share coordinator (this
/// node's store or a ReadShareGroupState call).
pub async fn read_state(
    shard: &Rc<Shard>,
    key: &ShareKey,
    leader_epoch: i32,
) -> Result<Option<ShareState>, ResponseError> {
    let (node, addr) = coordinator_of(shard, key).await?;
    if node == shard.config.node_id {
        let store = local_store(shard).ok_or(crate::error::not_coordinator_code())?;
        return store.read(key);
    }
    let request = ReadShareGroupStateRequest::default()
        .with_group_id(kafka_protocol::protocol::StrBytes::from_string(
            key.group.clone(),
        ))
        .with_topics(vec![
            read_share_group_state_request::ReadStateData::default()
                .with_topic_id(key.topic_id)
                .with_partitions(vec![
                    read_share_group_state_request::PartitionData::default()
                        .with_partition(key.partition)
                        .with_leader_epoch(leader_epoch),
                ]),
        ]);
    let answer = shard
        .shares
        .client
        .send(&addr, 0, &request, SHARE_STATE_CALL_TIMEOUT)
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, "ReadShareGroupState failed");
            crate::error::broker_unreachable_code()
        })?;
    let Some(p) = answer
        .results
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition == key.partition)
    else {
        return Err(ResponseError::UnknownServerError);
    };
    if let Some(e) = crate::error::answered_code(p.error_code) {
        return Err(e);
    }
    if p.start_offset < 0 {
        return Ok(None);
    }
    let batches: Vec<_> = p
        .state_batches
        .iter()
        .map(|b| {
            (
                b.first_offset,
                b.last_offset,
                b.delivery_state,
                b.delivery_count,
            )
        })
        .collect();
    let mut state = from_batches(p.start_offset, &batches);
    state.state_epoch = p.state_epoch.max(0);
    Ok(Some(state))
}

/// The share-partition leader's write of `key`'s state (`None`: removed) to its share
/// coordinator, answered once replicated.
pub async fn write_state(
    shard: &Rc<Shard>,
    key: ShareKey,
    state: Option<ShareState>,
    leader_epoch: i32,
) -> Result<(), ResponseError> {
    let (node, addr) = coordinator_of(shard, &key).await?;
    if node == shard.config.node_id {
        let store = local_store(shard).ok_or(crate::error::not_coordinator_code())?;
        return store.write(key, state, leader_epoch).await;
    }
    // A removal is a state starting at -1 (Kafka's uninitialized state).
    let (start, batches) = match &state {
        Some(s) => (s.start_offset, to_batches(s)),
        None => (-1, Vec::new()),
    };
    let request = WriteShareGroupStateRequest::default()
        .with_group_id(kafka_protocol::protocol::StrBytes::from_string(
            key.group.clone(),
        ))
        .with_topics(vec![
            write_share_group_state_request::WriteStateData::default()
                .with_topic_id(key.topic_id)
                .with_partitions(vec![
                    write_share_group_state_request::PartitionData::default()
                        .with_partition(key.partition)
                        .with_leader_epoch(leader_epoch)
                        .with_state_epoch(state.as_ref().map_or(0, |s| s.state_epoch))
                        .with_start_offset(start)
                        .with_state_batches(
                            batches
                                .into_iter()
                                .map(|(first, last, st, count)| {
                                    write_share_group_state_request::StateBatch::default()
                                        .with_first_offset(first)
                                        .with_last_offset(last)
                                        .with_delivery_state(st)
                                        .with_delivery_count(count)
                                })
                                .collect(),
                        ),
                ]),
        ]);
    let answer = shard
        .shares
        .client
        .send(&addr, 0, &request, SHARE_STATE_CALL_TIMEOUT)
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, "WriteShareGroupState failed");
            crate::error::broker_unreachable_code()
        })?;
    let code = answer
        .results
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition == key.partition)
        .map_or(ResponseError::UnknownServerError.code(), |p| p.error_code);
    crate::error::answered_code(code).map_or(Ok(()), Err)
}

/// ReadShareGroupState on the share coordinator (the API handler's part on the coordinator
/// shard): each asked partition's state or error.
pub fn serve_read(
    shard: &Shard,
    request: ReadShareGroupStateRequest,
) -> ReadShareGroupStateResponse {
    let store = local_store(shard);
    let group = request.group_id.to_string();
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let key = ShareKey {
                        group: group.clone(),
                        topic_id: t.topic_id,
                        partition: p.partition,
                    };
                    let read = store
                        .as_ref()
                        .ok_or(crate::error::not_coordinator_code())
                        .and_then(|s| s.read(&key));
                    let out = read_share_group_state_response::PartitionResult::default()
                        .with_partition(p.partition);
                    match read {
                        Err(e) => out.with_error_code(e.code()).with_start_offset(-1),
                        Ok(None) => out.with_start_offset(-1).with_state_epoch(-1),
                        Ok(Some(s)) => out
                            .with_start_offset(s.start_offset)
                            .with_state_epoch(s.state_epoch)
                            .with_state_batches(
                                to_batches(&s)
                                    .into_iter()
                                    .map(|(first, last, st, count)| {
                                        read_share_group_state_response::StateBatch::default()
                                            .with_first_offset(first)
                                            .with_last_offset(last)
                                            .with_delivery_state(st)
                                            .with_delivery_count(count)
                                    })
                                    .collect(),
                            ),
                    }
                })
                .collect();
            read_share_group_state_response::ReadStateResult::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    ReadShareGroupStateResponse::default().with_results(results)
}

/// WriteShareGroupState on the share coordinator (coordinator shard): each partition's
/// answer, written one after another.
pub async fn serve_write(
    shard: &Shard,
    request: WriteShareGroupStateRequest,
) -> WriteShareGroupStateResponse {
    use kafka_protocol::messages::write_share_group_state_response as w;
    let store = local_store(shard);
    let group = request.group_id.to_string();
    let mut results = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let key = ShareKey {
                group: group.clone(),
                topic_id: t.topic_id,
                partition: p.partition,
            };
            // A state a share partition could not hold (more runs than in-flight records
            // allowed) is refused before it is decoded.
            if p.state_batches.len() > shard.config.group_share_partition_max_record_locks {
                partitions.push(
                    w::PartitionResult::default()
                        .with_partition(p.partition)
                        .with_error_code(ResponseError::InvalidRequest.code()),
                );
                continue;
            }
            let state = (p.start_offset >= 0).then(|| {
                let batches: Vec<_> = p
                    .state_batches
                    .iter()
                    .map(|b| {
                        (
                            b.first_offset,
                            b.last_offset,
                            b.delivery_state,
                            b.delivery_count,
                        )
                    })
                    .collect();
                let mut state = from_batches(p.start_offset, &batches);
                state.state_epoch = p.state_epoch.max(0);
                state
            });
            let written = match &store {
                None => Err(crate::error::not_coordinator_code()),
                Some(s) => s.write(key, state, p.leader_epoch).await,
            };
            partitions.push(
                w::PartitionResult::default()
                    .with_partition(p.partition)
                    .with_error_code(written.err().map_or(0, |e| e.code())),
            );
        }
        results.push(
            w::WriteStateResult::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    WriteShareGroupStateResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state survives the trip through Kafka's state batches.
    #[test]
    fn batches_round_trip() {
        for state in [
            ShareState {
                start_offset: 4,
                end_offset: 12,
                in_flight: vec![(4, 6, 2), (8, 8, 1), (9, 10, 3)],
                state_epoch: 0,
            },
            ShareState {
                start_offset: 7,
                end_offset: 7,
                in_flight: vec![],
                state_epoch: 0,
            },
            ShareState {
                start_offset: 0,
                end_offset: 5,
                in_flight: vec![(0, 4, 1)],
                state_epoch: 0,
            },
        ] {
            let batches = to_batches(&state);
            assert_eq!(
                from_batches(state.start_offset, &batches),
                state,
                "{batches:?}"
            );
        }
        // Accepted records in the middle are an acknowledged batch, never handed out again.
        let batches = to_batches(&ShareState {
            start_offset: 0,
            end_offset: 10,
            in_flight: vec![(0, 1, 1), (5, 5, 2)],
            state_epoch: 0,
        });
        assert_eq!(
            batches,
            vec![(0, 1, 0, 1), (2, 4, 2, 1), (5, 5, 0, 2), (6, 9, 2, 1)]
        );
    }

    /// Batches from another broker's request never overflow: the end saturates.
    #[test]
    fn hostile_batches_do_not_overflow() {
        let state = from_batches(
            5,
            &[(i64::MAX - 1, i64::MAX, 0, 1), (9, 3, 0, 1), (0, 2, 0, 1)],
        );
        assert_eq!(state.end_offset, i64::MAX);
        assert_eq!(state.in_flight, vec![(i64::MAX - 1, i64::MAX, 1)]);
        let again = to_batches(&state);
        assert_eq!(again.last(), Some(&(i64::MAX - 1, i64::MAX, 0, 1)));
    }

    /// Kafka's coordinator key: the topic id as Kafka prints a Uuid.
    #[test]
    fn coordinator_key_is_kafkas() {
        let key = ShareKey {
            group: "g".into(),
            topic_id: uuid::Uuid::from_u128(0),
            partition: 3,
        };
        assert_eq!(coordinator_key(&key), "g:AAAAAAAAAAAAAAAAAAAAAA:3");
    }
}
