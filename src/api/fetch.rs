//! Fetch: read record batches, long-polling until `min_bytes` arrive or `max_wait_ms` passes.
//!
//! The connection's shard groups the requested partitions by owning shard and sends each
//! owner one read job; owners answer with `Bytes` of whole batches (clones of the tail cache,
//! or one copy from disk). The response is framed by hand (`protocol::fetch`) and the batch
//! bytes go to the socket as they are: records are never decoded or re-encoded here.
//!
//! Size rules, as Kafka's `ReplicaManager.readFromLog` applies them: each partition returns at
//! most `partition_max_bytes`, the whole response at most `max_bytes`, except that the first
//! batch of the first partition with data is returned even when larger, so a consumer can
//! always make progress. Each owner reads its partitions in request order within what is left
//! of `max_bytes` (a partition with nothing left is answered unread), so one fetch holds at
//! most shards x (`max_bytes` + one batch) of record data, however many partitions it names;
//! the assembly then applies the rule across owners.
//!
//! Long poll: when less than `min_bytes` is available, the request parks on the owners'
//! high-watermark signals (woken by appends) until a wanted partition grows past the end seen
//! at the last read, or the wait runs out, then reads again. Data that is there but too little
//! does not wake it: Kafka's `DelayedFetch` likewise re-checks only when a partition changes,
//! so a waiting fetch costs no CPU between appends.
//!
//! Fetch sessions (KIP-227, `api::fetch_session` over the per-shard caches of
//! `shard::fetch_sessions`): a full fetch (epoch 0) may create one; an incremental fetch names
//! only changed partitions, is read for every partition of its session (the body is rebuilt
//! from it), and its answer omits the partitions with nothing new. Followers fetch
//! sessionless (epoch -1), as before. READ_UNCOMMITTED reads stop at the
//! high watermark; READ_COMMITTED reads stop at the last stable offset (the first offset of the
//! oldest open transaction) and carry the aborted transactions overlapping the returned range,
//! so the client drops their records; long polls wait for the LSO to move.
//!
//! A follower's fetch (a `replica_id` >= 0, Kafka's inter-broker Fetch) is served by the
//! leader like a consumer's, but reads up to the durable end instead of the high watermark, and
//! its fetch offset is recorded as that follower's durable end (`shard::replication`), which
//! moves the high watermark. As Kafka's `KafkaApis.handleFetchRequest`, a follower's fetch
//! needs CLUSTER_ACTION on the cluster (else every partition is TOPIC_AUTHORIZATION_FAILED;
//! topic READ is not asked), and as `Partition.followerReplicaOrThrow` a replica id that is not
//! one of the partition's followers gets UNKNOWN_LEADER_EPOCH when it names a current leader
//! epoch, else NOT_LEADER_OR_FOLLOWER, and moves nothing.
//! Leader epochs (Kafka's `Partition.fetchRecords`): a `current_leader_epoch` (v9+) older than
//! the partition's gets FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH; a fetcher that
//! names the epoch of its last fetched batch (`last_fetched_epoch`, v12+) whose fetch offset
//! lies past the end of that epoch here gets `diverging_epoch` (that epoch's end) and no records,
//! at once (it must truncate first); an epoch whose end is unknown here gets
//! OFFSET_OUT_OF_RANGE.
//!
//! A partition that another broker leads gets NOT_LEADER_OR_FOLLOWER (`shard::routing`), and
//! from v12 its leader in `current_leader`, from v16 that leader's endpoint in
//! `node_endpoints` (KIP-951), so the client goes there without a Metadata round trip.
//!
//! Fetch from follower (KIP-392), as Kafka's `ReplicaManager.readFromLog`: a consumer's fetch
//! of v11+ (it carries client metadata) may be served by any replica: a follower reads up to
//! its own high watermark (learnt from its leader; OFFSET_OUT_OF_RANGE past its log, and the
//! consumer goes back to the leader). With `replica_selector_class` set (Kafka's
//! `RackAwareReplicaSelector`) a leader asked by a consumer that names a `rack_id` answers
//! `preferred_read_replica` instead of records when an in-sync follower in that rack has the
//! fetch offset (`replica::leader::LeaderState::preferred_read_replica`); the consumer then
//! fetches there. Older consumers and brokers' fetches are served by leaders only.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::FetchRequest;

use super::{authz, decode, fetch_session, first_of, join_all, Outcome};
use crate::error::{shard_gone_code, storage_code};
use crate::protocol::fetch::{
    encode_fetch_response, AbortedTransaction, FetchPartition, FetchResponseParts, FetchTopic,
    NodeEndpoint,
};
use crate::protocol::header::ParsedRequest;
use crate::shard::fetch_sessions::INVALID_SESSION_ID;
use crate::shard::{routing, Partition, Shard, ShardId};
use crate::storage::StorageError;
use freshet_protocol::batch;

/// The longest a fetch may park, whatever the client asks (bounds parked work per shard).
const MAX_WAIT_MS_CAP: i32 = 30_000;

/// A local future, boxed.
type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// A topic of the response: name, id, and (partition, metadata error, current leader when
/// another broker leads it) in request order.
type TopicLayout = (
    String,
    uuid::Uuid,
    Vec<(i32, Option<ResponseError>, Option<(i32, i32)>)>,
);

/// One partition to read. Cheap to clone (it goes to its owner's shard on every read and
/// long-poll wait): the topic name and rack are shared.
#[derive(Clone)]
struct Want {
    /// Position in the request (response order).
    slot: usize,
    topic: Arc<str>,
    partition: i32,
    /// The shard that owns the partition (`Shard::owner`), worked out once per request.
    owner: ShardId,
    offset: i64,
    max_bytes: usize,
    /// READ_COMMITTED: stop at the last stable offset and list aborted transactions.
    read_committed: bool,
    /// The readable end seen at the last read: a long poll waits for the partition to grow
    /// past it (data below it was already counted against `min_bytes`).
    seen_end: i64,
    /// A follower's fetch: the broker id it fetches for (reads go to the durable end, and the
    /// offset is recorded as that follower's durable end).
    replica: Option<i32>,
    /// The log start offset a follower reports (v5+; -1: not sent), for DeleteRecords' low
    /// watermark.
    log_start_offset: i64,
    /// The leader epoch the fetcher believes (v9+; -1: not checked).
    current_leader_epoch: i32,
    /// The epoch of the fetcher's last fetched batch (v12+; -1: none).
    last_fetched_epoch: i32,
    /// A consumer's read (v11+) of a partition this broker follows (KIP-392): served from
    /// the local replica up to its high watermark.
    from_follower: bool,
    /// The consumer's `rack_id` (v11+, non-empty) when a replica selector is configured: a
    /// leader may answer with a preferred read replica instead of records.
    client_rack: Option<Arc<str>>,
}

impl Want {
    /// The offset reads stop at for this fetch: the LSO or the high watermark (a follower's:
    /// the durable end).
    fn readable_end(&self, log: &crate::storage::PartitionLog) -> i64 {
        if self.replica.is_some() {
            log.durable_end()
        } else if self.read_committed {
            log.last_stable_offset()
        } else {
            log.high_watermark()
        }
    }

    /// A long poll waits until the readable end passes this offset.
    fn wait_past(&self) -> i64 {
        self.seen_end.max(self.offset)
    }
}

/// What one partition read gave.
struct Got {
    error: Option<ResponseError>,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    aborted: Option<Vec<AbortedTransaction>>,
    batches: Vec<Bytes>,
    /// The readable end (high watermark or LSO) when the read started; -1 when unknown.
    seen_end: i64,
    /// Where the fetcher's log diverges from this one (answered without records).
    diverging_epoch: Option<(i32, i64)>,
    /// The follower the consumer should fetch from instead (KIP-392; answered without records).
    preferred_read_replica: Option<i32>,
}

impl Got {
    fn error(error: ResponseError) -> Got {
        Got {
            error: Some(error),
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted: None,
            batches: Vec::new(),
            seen_end: -1,
            diverging_epoch: None,
            preferred_read_replica: None,
        }
    }

    /// The partition's offsets with `error` (or none) and no records.
    fn offsets_only(log: &crate::storage::PartitionLog, error: Option<ResponseError>) -> Got {
        Got {
            error,
            high_watermark: log.high_watermark(),
            last_stable_offset: log.last_stable_offset(),
            log_start_offset: log.log_start_offset(),
            aborted: None,
            batches: Vec::new(),
            seen_end: -1,
            diverging_epoch: None,
            preferred_read_replica: None,
        }
    }

    fn bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let mut body: FetchRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let version = request.api_version;
    let follower = body.replica_id.0 >= 0 || body.replica_state.replica_id.0 >= 0;
    let context = match fetch_session::open(shard, version, &mut body).await {
        Ok(context) => context,
        Err(error) => {
            let out = FetchResponseParts {
                throttle_time_ms: 0,
                error_code: error.code(),
                session_id: 0,
                topics: Vec::new(),
                node_endpoints: Vec::new(),
            };
            return frame(&request, &out);
        }
    };

    let max_bytes = if body.max_bytes <= 0 {
        usize::MAX
    } else {
        body.max_bytes as usize
    };
    // Response layout: topics in request order, partitions in request order.
    let (layout, mut wants, slot) = plan_reads(shard, &body, version, max_bytes, &request);
    let node_endpoints = if version >= 16 {
        leader_endpoints(shard, &layout, &request.listener)
    } else {
        Vec::new()
    };
    let results = read_until_ready(shard, &body, &mut wants, slot, max_bytes).await;
    let topics = assemble(&request, layout, results, max_bytes);
    let out = FetchResponseParts {
        throttle_time_ms: 0,
        error_code: 0,
        session_id: 0,
        topics,
        node_endpoints,
    };
    answer_in_session(shard, &request, context, follower, out).await
}

/// Frames a fetch's answer within its session (`fetch_session`), under the client's fetch quota
/// (a follower's is not throttled).
async fn answer_in_session(
    shard: &Rc<Shard>,
    request: &ParsedRequest,
    context: fetch_session::Context,
    follower: bool,
    mut out: FetchResponseParts,
) -> Outcome {
    let version = request.api_version;
    // With quotas, an incremental session remembers what it sent only once the answer is not
    // throttled (Kafka's `getThrottledResponse` leaves the session as it was).
    let quotas = !follower && !shard.metadata().client_quotas.is_empty();
    let mut commit = None;
    let mut created = INVALID_SESSION_ID;
    match context {
        fetch_session::Context::Sessionless => {}
        fetch_session::Context::Full(partitions) => {
            created = fetch_session::create(shard, partitions, version, follower, &out.topics);
            out.session_id = created;
        }
        fetch_session::Context::Incremental { id, epoch, keys } => {
            let pairs = fetch_session::answers(keys, &out.topics);
            if quotas {
                commit = Some((id, epoch, pairs.clone()));
            }
            out.session_id = id;
            let filtered =
                fetch_session::finish(shard, id, epoch, pairs, &mut out.topics, !quotas).await;
            if let Err(error) = filtered {
                out.error_code = error.code();
                out.topics.clear();
            }
        }
    }
    if follower {
        return frame(request, &out);
    }
    let outcome = super::throttle::throttle_fetch(shard, request, &mut out, |out| {
        if out.throttle_time_ms > 0 && created != INVALID_SESSION_ID {
            // A throttled full fetch creates no session (Kafka's throttled answer names none).
            let mut none = out.clone();
            none.session_id = INVALID_SESSION_ID;
            return frame(request, &none);
        }
        frame(request, out)
    });
    let throttled = matches!(outcome, Outcome::Throttled { .. });
    if throttled && created != INVALID_SESSION_ID {
        fetch_session::close_local(shard, created);
    }
    if let (Some((id, epoch, pairs)), false) = (commit, throttled) {
        let _ = fetch_session::finish(shard, id, epoch, pairs, &mut Vec::new(), true).await;
    }
    outcome
}

/// The response's layout (the request's topics and partitions, each with the error it gets
/// without a read) and the partitions to read, one slot each. Returns the number of slots too.
fn plan_reads(
    shard: &Shard,
    body: &FetchRequest,
    version: i16,
    max_bytes: usize,
    request: &ParsedRequest,
) -> (Vec<TopicLayout>, Vec<Want>, usize) {
    let metadata = shard.metadata();
    let node_id = shard.config.node_id;
    // A broker's fetch (Kafka's inter-broker Fetch): `replica_state.replica_id` from v15,
    // `replica_id` before; consumers send -1.
    let replica_id = if version >= 15 {
        body.replica_state.replica_id.0
    } else {
        body.replica_id.0
    };
    let replica = (replica_id >= 0).then_some(replica_id);
    let follower_allowed =
        replica.is_some() && authz::cluster_allowed(shard, request, authz::Op::ClusterAction);
    // KIP-392: a consumer's fetch with client metadata (v11+) may read from a follower; with a
    // replica selector its rack picks the preferred read replica.
    let follower_reads = replica.is_none() && version >= 11;
    let client_rack = (follower_reads
        && !shard.config.replica_selector_class.is_empty()
        && !body.rack_id.is_empty())
    .then(|| Arc::from(&*body.rack_id));
    let mut layout: Vec<TopicLayout> = Vec::new();
    let mut wants: Vec<Want> = Vec::new();
    let mut slot = 0;
    for topic in &body.topics {
        let resolved = if version >= 13 {
            metadata
                .topic_by_id(topic.topic_id)
                .map(|(n, t)| (n.to_string(), t))
        } else {
            let name: &str = &topic.topic.0;
            metadata.topics.get(name).map(|t| (name.to_string(), t))
        };
        let display_name = resolved
            .as_ref()
            .map_or_else(|| topic.topic.0.to_string(), |(n, _)| n.clone());
        // Kafka: a follower needs CLUSTER_ACTION on the cluster (every partition refused
        // without it, known or not); a consumer READ on the topic, checked before its
        // existence (by name).
        let denied = if replica.is_some() {
            !follower_allowed
        } else {
            (version < 13 || resolved.is_some())
                && !authz::allowed(
                    shard,
                    request,
                    authz::Op::Read,
                    authz::Res::Topic,
                    &display_name,
                )
        };
        let shared_name: Arc<str> = Arc::from(display_name.as_str());
        let mut parts = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let route = match &resolved {
                None => routing::Route::Unknown,
                Some((_, meta)) => routing::route_in(meta, node_id, p.partition),
            };
            let from_follower = follower_reads
                && matches!(route, routing::Route::Remote { .. })
                && routing::hosts(&metadata, node_id, &display_name, p.partition);
            let error = match &resolved {
                _ if denied && replica.is_some() => Some(ResponseError::TopicAuthorizationFailed),
                None if version >= 13 => Some(ResponseError::UnknownTopicId),
                _ if denied => Some(ResponseError::TopicAuthorizationFailed),
                _ if from_follower => None,
                _ => route.error(),
            };
            if error.is_none() {
                wants.push(Want {
                    slot,
                    topic: shared_name.clone(),
                    partition: p.partition,
                    owner: shard.owner(&display_name, p.partition),
                    offset: p.fetch_offset,
                    // No partition may return more than the whole response may hold
                    // (beyond the first batch, which the read returns anyway).
                    max_bytes: (p.partition_max_bytes.max(0) as usize).min(max_bytes),
                    read_committed: body.isolation_level == 1 && replica.is_none(),
                    seen_end: p.fetch_offset,
                    replica,
                    log_start_offset: p.log_start_offset,
                    current_leader_epoch: p.current_leader_epoch,
                    last_fetched_epoch: p.last_fetched_epoch,
                    from_follower,
                    client_rack: client_rack.clone(),
                });
            }
            let current_leader = if from_follower {
                None
            } else {
                route.current_leader()
            };
            parts.push((p.partition, error, current_leader));
            slot += 1;
        }
        layout.push((display_name, topic.topic_id, parts));
    }
    (layout, wants, slot)
}

/// Reads `wants` until min_bytes are available, a partition has an error, max_wait_ms has
/// passed or the broker stops; between reads it waits for a partition to grow.
async fn read_until_ready(
    shard: &Rc<Shard>,
    body: &FetchRequest,
    wants: &mut [Want],
    slot: usize,
    max_bytes: usize,
) -> Vec<Option<Got>> {
    let max_wait = Duration::from_millis(body.max_wait_ms.clamp(0, MAX_WAIT_MS_CAP) as u64);
    let deadline = Instant::now() + max_wait;
    let min_bytes = body.min_bytes.max(0) as usize;
    let mut results = read_all(shard, wants, slot, max_bytes).await;
    loop {
        let available: usize = results.iter().flatten().map(Got::bytes).sum();
        // A diverging fetcher is answered at once, as an error is (Kafka's DelayedFetch).
        let any_error = results
            .iter()
            .flatten()
            .any(|g| g.error.is_some() || g.diverging_epoch.is_some());
        if available >= min_bytes
            || any_error
            || wants.is_empty()
            || Instant::now() >= deadline
            || shard.stopping.get()
        {
            break;
        }
        // Wait for growth past what this read saw, not merely for data past the offset.
        for want in wants.iter_mut() {
            if let Some(got) = &results[want.slot] {
                want.seen_end = want.seen_end.max(got.seen_end);
            }
        }
        wait_for_data(shard, wants, deadline).await;
        // Woken before the deadline: read at once (the read says whether anything grew; a
        // check first would cost one more round trip to every owner). At the deadline, read
        // again only when something grew meanwhile.
        let over = Instant::now() >= deadline || shard.stopping.get();
        if over && !has_new_data(shard, wants).await {
            break;
        }
        // Grown (or gone: the read reports it), or a spurious wake-up before the deadline:
        // read again; a partition that has not grown makes the next wait park again.
        results = read_all(shard, wants, slot, max_bytes).await;
    }
    results
}

/// The response's topics in request order from the reads' `results`, applying max_bytes and
/// the first-batch rule; counts fetched bytes and partition errors.
fn assemble(
    request: &ParsedRequest,
    layout: Vec<TopicLayout>,
    results: Vec<Option<Got>>,
    max_bytes: usize,
) -> Vec<FetchTopic> {
    // Assemble in request order, applying max_bytes and the first-batch rule.
    let mut remaining = max_bytes;
    let mut first_with_data = true;
    let mut topics = Vec::with_capacity(layout.len());
    let mut results = results.into_iter();
    for (name, topic_id, parts) in layout {
        let mut partitions = Vec::with_capacity(parts.len());
        for (partition, error, current_leader) in parts {
            let got = results
                .next()
                .expect("one slot per partition")
                .unwrap_or_else(|| Got::error(error.unwrap_or(ResponseError::UnknownServerError)));
            let mut batches = got.batches;
            let size: usize = batches.iter().map(Bytes::len).sum();
            if size > 0 {
                if size > remaining {
                    let first = batches[0].clone();
                    batches = trim_to(batches, remaining);
                    if batches.is_empty() && first_with_data {
                        // Progress is always possible: the first batch goes out whole.
                        batches.push(first);
                    }
                }
                remaining = remaining.saturating_sub(batches.iter().map(Bytes::len).sum::<usize>());
                first_with_data = false;
            }
            if let Some(error) = got.error {
                crate::metrics::record_partition_error(request.api_key, error.code());
            } else if !batches.is_empty() {
                let bytes: usize = batches.iter().map(Bytes::len).sum();
                let count: u64 = batches
                    .iter()
                    .map(|b| super::produce::count_batches(b).0)
                    .sum();
                crate::metrics::record_fetched(&name, partition, bytes as u64, count);
            }
            partitions.push(FetchPartition {
                partition_index: partition,
                error_code: crate::error::code(got.error),
                high_watermark: got.high_watermark,
                last_stable_offset: got.last_stable_offset,
                log_start_offset: got.log_start_offset,
                aborted_transactions: got.aborted,
                records: batches,
                current_leader,
                diverging_epoch: got.diverging_epoch,
                preferred_read_replica: got.preferred_read_replica,
            });
        }
        topics.push(FetchTopic {
            name: super::str_bytes(name),
            topic_id,
            partitions,
        });
    }
    topics
}

/// The endpoints of the leaders named in the layout's `current_leader`s (live brokers only),
/// each once: Fetch v16+'s `node_endpoints`.
fn leader_endpoints(shard: &Shard, layout: &[TopicLayout], listener: &str) -> Vec<NodeEndpoint> {
    let metadata = shard.metadata();
    let local = routing::local_endpoint_on(&shard.config, listener);
    let leaders: std::collections::BTreeSet<i32> = layout
        .iter()
        .flat_map(|(_, _, parts)| parts.iter().filter_map(|(_, _, l)| l.map(|l| l.0)))
        .collect();
    leaders
        .into_iter()
        .filter_map(|id| routing::live_endpoint(&metadata, &local, id))
        .map(|b| NodeEndpoint {
            node_id: b.node_id,
            host: super::str_bytes(b.host),
            port: b.port,
            rack: b.rack.map(super::str_bytes),
        })
        .collect()
}

fn frame(request: &ParsedRequest, out: &FetchResponseParts) -> Outcome {
    match encode_fetch_response(request.api_version, request.correlation_id, out) {
        Ok(pieces) => Outcome::Respond(pieces),
        Err(e) => Outcome::Close(format!("cannot encode fetch response: {e}")),
    }
}

/// Keeps whole batches from the front while they fit in `budget` bytes.
fn trim_to(batches: Vec<Bytes>, budget: usize) -> Vec<Bytes> {
    let mut used = 0;
    batches
        .into_iter()
        .take_while(|b| {
            used += b.len();
            used <= budget
        })
        .collect()
}

fn by_owner(wants: &[Want]) -> BTreeMap<ShardId, Vec<Want>> {
    let mut groups: BTreeMap<ShardId, Vec<Want>> = BTreeMap::new();
    for want in wants {
        groups.entry(want.owner).or_default().push(want.clone());
    }
    groups
}

/// Reads every wanted partition on its owner; the answer has one entry per request slot
/// (None for slots that were not read because of a metadata error). Each owner reads at most
/// `max_bytes` (plus one batch) in all, so one fetch holds at most shards x (`max_bytes` +
/// one batch) of record data, however many partitions it names.
async fn read_all(
    shard: &Rc<Shard>,
    wants: &[Want],
    slots: usize,
    max_bytes: usize,
) -> Vec<Option<Got>> {
    let mut jobs: Vec<LocalFuture<Vec<(usize, Got)>>> = Vec::new();
    for (owner, group) in by_owner(wants) {
        let shard = shard.clone();
        jobs.push(Box::pin(async move {
            let slots: Vec<usize> = group.iter().map(|w| w.slot).collect();
            match shard
                .invoke_on(owner, move |owner| read_on_owner(owner, group, max_bytes))
                .await
            {
                Ok(got) => got,
                Err(e) => slots
                    .into_iter()
                    .map(|s| (s, Got::error(shard_gone_code(&e))))
                    .collect(),
            }
        }));
    }
    let mut results: Vec<Option<Got>> = (0..slots).map(|_| None).collect();
    for group in join_all(jobs).await {
        for (slot, got) in group {
            results[slot] = Some(got);
        }
    }
    results
}

/// Reads `wants` in request order on their owner, as Kafka's `ReplicaManager.readFromLog`
/// does: each partition up to its own limit and what is left of `max_bytes`, the first one
/// with data at least one whole batch. A partition with no budget left is answered with its
/// offsets, unread.
async fn read_on_owner(shard: Rc<Shard>, wants: Vec<Want>, max_bytes: usize) -> Vec<(usize, Got)> {
    let mut out = Vec::with_capacity(wants.len());
    let mut budget = max_bytes;
    let mut nothing_yet = true;
    for want in wants {
        let found = lookup(&shard, &want);
        let refused = found.as_ref().and_then(|p| check_epochs(&p.log, &want));
        if let Some(got) = refused {
            out.push((want.slot, got));
            continue;
        }
        let got = match found {
            None => Got::error(routing::absent_partition_code(
                &shard.metadata(),
                shard.config.node_id,
                &want.topic,
                want.partition,
            )),
            Some(partition) => {
                if let Some(replica) = want.replica {
                    // Kafka's `Partition.followerReplicaOrThrow`: a broker that is not one of
                    // the partition's followers is refused, unread, and moves nothing.
                    if !shard.is_follower_of(&partition, replica) {
                        let error = if want.current_leader_epoch >= 0 {
                            ResponseError::UnknownLeaderEpoch
                        } else {
                            ResponseError::NotLeaderOrFollower
                        };
                        out.push((want.slot, Got::error(error)));
                        continue;
                    }
                    shard.record_follower_fetch(
                        &partition,
                        replica,
                        want.offset,
                        want.log_start_offset,
                    );
                    shard.maybe_change_isr(&partition);
                }
                if let Some(preferred) = preferred_replica(&shard, &partition, &want) {
                    // Kafka skips the read: offsets only, and where to fetch instead.
                    let got = Got {
                        preferred_read_replica: Some(preferred),
                        ..Got::offsets_only(&partition.log, None)
                    };
                    out.push((want.slot, got));
                    continue;
                }
                let seen_end = want.readable_end(&partition.log);
                let limit = want.max_bytes.min(budget);
                let log = &partition.log;
                let in_range =
                    want.offset >= log.log_start_offset() && want.offset <= log.durable_end();
                if limit == 0 && !nothing_yet && in_range {
                    out.push((
                        want.slot,
                        Got {
                            error: None,
                            high_watermark: log.high_watermark(),
                            last_stable_offset: log.last_stable_offset(),
                            log_start_offset: log.log_start_offset(),
                            aborted: want.read_committed.then(Vec::new),
                            batches: Vec::new(),
                            seen_end,
                            diverging_epoch: None,
                            preferred_read_replica: None,
                        },
                    ));
                    continue;
                }
                let got = read_partition(&partition, &want, limit, nothing_yet, seen_end).await;
                let size: usize = got.batches.iter().map(Bytes::len).sum();
                budget = budget.saturating_sub(size);
                nothing_yet &= size == 0;
                got
            }
        };
        out.push((want.slot, got));
    }
    out
}

/// The partition `want` reads on its owner: one led here, or for a consumer's read from a
/// follower (KIP-392) one hosted here in any role.
fn lookup(shard: &Shard, want: &Want) -> Option<Rc<Partition>> {
    if want.from_follower {
        shard.replica(&want.topic, want.partition)
    } else {
        shard.partition(&want.topic, want.partition)
    }
}

/// The follower a consumer in `want.client_rack` should fetch `partition` from, when this
/// broker leads it (`LeaderState::preferred_read_replica`; brokers' racks from their
/// registrations, fenced ones having none).
fn preferred_replica(shard: &Shard, partition: &Partition, want: &Want) -> Option<i32> {
    let rack = want.client_rack.as_deref()?;
    let role = partition.role.borrow();
    let crate::shard::replication::Role::Leader(state) = &*role else {
        return None;
    };
    let metadata = shard.metadata();
    let node_id = shard.config.node_id;
    let rack_of = |id: i32| {
        if id == node_id {
            Some(shard.config.broker_rack.clone()).filter(|r| !r.is_empty())
        } else {
            metadata
                .brokers
                .get(&id)
                .filter(|b| !b.fenced)
                .and_then(|b| b.rack.clone())
        }
    };
    state.preferred_read_replica(rack, want.offset, crate::shard::now_ms(), rack_of)
}

/// One partition's read of a Fetch (`want` from its offset, at most `limit` bytes), with its
/// aborted transactions under read_committed.
async fn read_partition(
    partition: &Partition,
    want: &Want,
    limit: usize,
    nothing_yet: bool,
    seen_end: i64,
) -> Got {
    let read = match want.replica {
        Some(_) => {
            partition
                .log
                .read_for_replica(want.offset, limit, nothing_yet)
                .await
        }
        None => {
            partition
                .log
                .read_upto(want.offset, limit, nothing_yet, seen_end)
                .await
        }
    };
    match read {
        Ok(data) => {
            let lso = partition.log.last_stable_offset();
            let end = data
                .batches
                .last()
                .and_then(|b| batch::header(b))
                .map_or(want.offset, |h| h.last_offset() + 1);
            let aborted = if want.read_committed {
                aborted_transactions(partition, want, end).await.map(Some)
            } else {
                Ok(None)
            };
            match aborted {
                Ok(aborted) => Got {
                    error: None,
                    high_watermark: data.high_watermark,
                    last_stable_offset: lso,
                    log_start_offset: data.log_start_offset,
                    aborted,
                    batches: data.batches,
                    seen_end,
                    diverging_epoch: None,
                    preferred_read_replica: None,
                },
                Err(e) => {
                    tracing::warn!(topic = %want.topic, partition = want.partition, error = %e, "reading the transaction index failed");
                    Got::error(storage_code(&e))
                }
            }
        }
        Err(e @ StorageError::OffsetOutOfRange { .. }) => Got {
            error: Some(storage_code(&e)),
            high_watermark: partition.log.high_watermark(),
            last_stable_offset: partition.log.last_stable_offset(),
            log_start_offset: partition.log.log_start_offset(),
            aborted: None,
            batches: Vec::new(),
            seen_end,
            diverging_epoch: None,
            preferred_read_replica: None,
        },
        Err(e) => {
            tracing::warn!(topic = %want.topic, partition = want.partition, error = %e, "fetch read failed");
            Got::error(storage_code(&e))
        }
    }
}

/// Kafka's `Partition.checkCurrentLeaderEpoch` and, for a fetcher that names the epoch of its
/// last fetched batch (v12+), the divergence check of `Partition.readRecords`: `Some` answers
/// the partition without a read (an epoch error; OFFSET_OUT_OF_RANGE when that epoch's end is
/// unknown here or the offset is below the log start; else the diverging epoch, no records).
fn check_epochs(log: &crate::storage::PartitionLog, want: &Want) -> Option<Got> {
    use crate::replica::partition::{fetch_epoch_check, FetchCheck};
    match fetch_epoch_check(
        log,
        want.current_leader_epoch,
        want.last_fetched_epoch,
        want.offset,
    ) {
        FetchCheck::Read => None,
        FetchCheck::EpochError(error) => Some(Got::error(error)),
        FetchCheck::OutOfRange => Some(Got::offsets_only(
            log,
            Some(ResponseError::OffsetOutOfRange),
        )),
        FetchCheck::Diverging(epoch, end_offset) => Some(Got {
            diverging_epoch: Some((epoch, end_offset)),
            ..Got::offsets_only(log, None)
        }),
    }
}

/// The transactions aborted in `want`'s partition between its offset and `end`.
async fn aborted_transactions(
    partition: &Partition,
    want: &Want,
    end: i64,
) -> Result<Vec<AbortedTransaction>, StorageError> {
    partition
        .log
        .aborted_transactions(want.offset, end)
        .await
        .map(|v| {
            v.into_iter()
                .map(|(producer_id, first_offset)| AbortedTransaction {
                    producer_id,
                    first_offset,
                })
                .collect()
        })
}

/// Parks until some owner reports new data for a wanted partition, or the deadline.
async fn wait_for_data(shard: &Rc<Shard>, wants: &[Want], deadline: Instant) {
    let mut waits: Vec<LocalFuture<()>> = Vec::new();
    for (owner, group) in by_owner(wants) {
        let shard = shard.clone();
        waits.push(Box::pin(async move {
            let _ = shard
                .invoke_on(owner, move |owner| wait_on_owner(owner, group, deadline))
                .await;
        }));
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    waits.push(Box::pin(crate::rt::sleep(remaining)));
    first_of(waits).await;
}

/// On the owner: resolves when any wanted partition's readable end passes the end seen at the
/// last read (`seen_end`, at least the fetch offset), the partition goes away, the shard
/// stops, or the deadline passes. Data already counted does not resolve it: that was the busy
/// spin of a fetch with some data but less than `min_bytes`.
async fn wait_on_owner(shard: Rc<Shard>, wants: Vec<Want>, deadline: Instant) {
    let mut partitions = Vec::with_capacity(wants.len());
    for want in &wants {
        match lookup(&shard, want) {
            Some(p) if want.readable_end(&p.log) <= want.wait_past() => partitions.push(p),
            _ => return,
        }
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut waits: Vec<LocalFuture<()>> = Vec::new();
    for partition in &partitions {
        let partition = partition.clone();
        waits.push(Box::pin(async move { partition.hw_changed.wait().await }));
    }
    let stopping = shard.clone();
    waits.push(Box::pin(async move { stopping.stop.wait().await }));
    waits.push(Box::pin(crate::rt::sleep(remaining)));
    first_of(waits).await;
}

/// Whether any wanted partition has grown past the end seen at the last read (or is gone).
async fn has_new_data(shard: &Rc<Shard>, wants: &[Want]) -> bool {
    for (owner, group) in by_owner(wants) {
        let answer = shard
            .invoke_on(owner, move |owner| async move {
                group.iter().any(|w| {
                    lookup(&owner, w).is_none_or(|p| w.readable_end(&p.log) > w.wait_past())
                })
            })
            .await;
        if answer.unwrap_or(false) {
            return true;
        }
    }
    false
}
