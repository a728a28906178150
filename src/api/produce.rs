//! Produce: append record batches to partitions.
//!
//! The connection's shard decodes the request (record data stays a zero-copy slice of the
//! request frame), checks each target partition against the metadata, and sends each
//! partition's records to its owning shard, all partitions at once. The owner validates the
//! batches, assigns offsets and answers once the data is fdatasync'd (group commit in the
//! storage engine). acks=0 gets no response, as in Kafka; acks=1 is answered when durable on
//! the leader; acks=all (-1) when the high watermark passed the batch (on every in-sync
//! replica's disk; with one replica the same as acks=1), refused with NOT_ENOUGH_REPLICAS
//! before appending when the ISR is below `min.insync.replicas` (`shard::replication`). A
//! partition whose append is not durable (and, for acks=all, replicated) within the request's
//! `timeout_ms` is answered with REQUEST_TIMED_OUT (the append goes on: see
//! [`answer_within`]), so a slow disk never leaves a produce hanging.
//!
//! Idempotence (sequence and epoch checks, duplicates answered with their original offsets) is
//! done by the owner's log where offsets are assigned (`storage::producer_state`).
//!
//! Record-level refusals (`storage::records`: a keyless record on a compacted topic, an offset
//! delta that is not the record's index) fail the partition with INVALID_RECORD, Kafka's summary
//! as `error_message`, and from v8 list the records in `record_errors` (batch index, message),
//! so that a client fails only those records (librdkafka fails the others of the batch with
//! its own _INVALID_DIFFERENT_RECORD and may send them again).
//!
//! A partition that another broker leads gets NOT_LEADER_OR_FOLLOWER (`shard::routing`); from
//! v10 the answer names its leader (`current_leader`) and that leader's endpoint
//! (`node_endpoints`), as KIP-951 has Kafka do, so the client goes there at once.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, TopicName};

use super::{authz, decode, join_all, str_bytes, Outcome};
use crate::error::{shard_gone_code, storage_code};
use crate::protocol::header::ParsedRequest;
use crate::shard::{routing, Shard, COORDINATOR_SHARD};
use crate::storage::StorageError;

/// The result for one partition, as the response needs it.
struct PartitionResult {
    error: Option<ResponseError>,
    message: Option<String>,
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
    /// Records refused one by one (Produce v8+ `record_errors`): batch index, message.
    record_errors: Vec<freshet_protocol::records::RecordError>,
    /// The leader (id, epoch) when another broker leads the partition (v10+, KIP-951).
    current_leader: Option<(i32, i32)>,
}

impl PartitionResult {
    fn error(error: ResponseError, message: Option<String>) -> Self {
        PartitionResult {
            error: Some(error),
            message,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            record_errors: Vec::new(),
            current_leader: None,
        }
    }
}

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: ProduceRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let acks = body.acks;
    let throttle_ms = crate::quota::record_and_throttle_ms(
        &shard.metadata().client_quotas,
        crate::quota::QuotaType::Produce,
        &request.principal,
        request.client_id_or_empty(),
        request.body.len() as f64,
    );
    let (topics, work) = plan_appends(shard, &request, &body);
    let results = join_all(work).await;
    for result in &results {
        if let Some(error) = result.error {
            crate::metrics::record_partition_error(request.api_key, error.code());
        }
    }
    let quotas = shard.metadata();
    let request_ms = super::throttle::request_throttle_so_far(&quotas.client_quotas, &request);
    let throttle_ms = throttle_ms.max(request_ms);
    if acks == 0 {
        return super::throttle::throttled(Outcome::NoResponse, throttle_ms);
    }
    let mut response = produce_response(topics, results, request.api_version);
    if request.api_version >= 10 {
        response.node_endpoints = leader_endpoints(shard, &response, &request.listener);
    }
    response.throttle_time_ms = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    super::throttle::throttled(super::respond(&request, &response), throttle_ms)
}
/// One partition's append (or its error), to be awaited with the others.
type Append = Pin<Box<dyn Future<Output = PartitionResult>>>;

/// The response's layout (topic name, id and partition indexes, in request order) and one
/// future per partition: its append on the owner shard, or its error.
fn plan_appends(
    shard: &Rc<Shard>,
    request: &ParsedRequest,
    body: &ProduceRequest,
) -> (ProduceLayout, Vec<Append>) {
    let acks = body.acks;
    // acks=0 gets no answer to time out: its append keeps its place (and the backpressure).
    // The time the request waited for the shard's produce budget counts.
    let timeout = u64::try_from(body.timeout_ms)
        .ok()
        .filter(|ms| *ms > 0 && acks != 0)
        .map(|ms| {
            std::time::Duration::from_millis(ms)
                .saturating_sub(request.queued_for)
                .max(TIMEOUT_LEFT_MIN)
        });
    let metadata = shard.metadata();
    // Kafka (`KafkaApis.handleProduceRequest`): a request holding transactional batches needs
    // a transactional id with WRITE on it (else every partition is
    // TRANSACTIONAL_ID_AUTHORIZATION_FAILED); one without them is not checked on the id, even
    // when it names one. WRITE on each topic.
    let txn_denied = shard.config.authorizer
        && has_transactional_batches(body)
        && !body.transactional_id.as_ref().is_some_and(|id| {
            authz::allowed(
                shard,
                request,
                authz::Op::Write,
                authz::Res::TransactionalId,
                id,
            )
        });
    let mut topics = Vec::with_capacity(body.topic_data.len());
    let mut work: Vec<Pin<Box<dyn Future<Output = PartitionResult>>>> = Vec::new();
    for topic in &body.topic_data {
        // From v13 topics are named by id.
        let name = if request.api_version >= 13 {
            metadata
                .topic_by_id(topic.topic_id)
                .map(|(n, _)| n.to_string())
        } else {
            Some(topic.name.0.to_string())
        };
        let topic_denied = name.as_deref().is_some_and(|n| {
            !authz::allowed(shard, request, authz::Op::Write, authz::Res::Topic, n)
        });
        let partitions: Vec<i32> = topic.partition_data.iter().map(|p| p.index).collect();
        topics.push((topic.name.clone(), topic.topic_id, partitions));
        for data in &topic.partition_data {
            let route = name.as_deref().map_or(routing::Route::Unknown, |n| {
                routing::route(&metadata, shard.config.node_id, n, data.index)
            });
            let known = route != routing::Route::Unknown;
            let unknown_error = if request.api_version >= 13 && name.is_none() {
                ResponseError::UnknownTopicId
            } else {
                ResponseError::UnknownTopicOrPartition
            };
            if !(-1..=1).contains(&acks) {
                work.push(Box::pin(async {
                    PartitionResult::error(ResponseError::InvalidRequiredAcks, None)
                }));
            } else if txn_denied || topic_denied {
                let error = if txn_denied {
                    ResponseError::TransactionalIdAuthorizationFailed
                } else {
                    ResponseError::TopicAuthorizationFailed
                };
                work.push(Box::pin(async move { PartitionResult::error(error, None) }));
            } else if !known {
                work.push(Box::pin(async move {
                    PartitionResult::error(unknown_error, None)
                }));
            } else if name
                .as_deref()
                .is_some_and(crate::coordinator::coordinator_key::is_coordinator_topic)
            {
                // Kafka's `ReplicaManager.appendToLocalLog`: clients do not write the
                // coordinators' internal topics (a cluster's group coordinators keep their
                // state in `__consumer_offsets`).
                work.push(Box::pin(async {
                    PartitionResult::error(ResponseError::InvalidTopicException, None)
                }));
            } else if let Some(error) = route.error() {
                let mut result = PartitionResult::error(error, None);
                result.current_leader = route.current_leader();
                work.push(Box::pin(async move { result }));
            } else {
                let topic_name = name.clone().unwrap_or_default();
                let records = data.records.clone().unwrap_or_default();
                work.push(Box::pin(answer_within(
                    timeout,
                    append_on_owner(
                        shard.clone(),
                        (request.api_version, acks),
                        topic_name,
                        data.index,
                        records,
                        body.transactional_id.as_ref().map(|id| id.to_string()),
                    ),
                )));
            }
        }
    }
    (topics, work)
}

/// The least time a partition's append is given, however long the request waited for the
/// produce budget: a request that got its budget just in time still gets a chance.
const TIMEOUT_LEFT_MIN: std::time::Duration = std::time::Duration::from_millis(1);

/// `append` (the whole wait for one partition: its append on the owner and, with acks=all,
/// whatever else the answer waits for), answered with REQUEST_TIMED_OUT if it takes longer than
/// `timeout` (what is left of the request's `timeout_ms`), as Kafka answers a produce whose
/// replication does not complete in time. The append itself goes on: data that becomes durable
/// later stays (the client retries; idempotence deduplicates). No limit (`None`) for acks=0
/// and a `timeout_ms` of 0 or less: a durable answer can never be ready at once, and such
/// requests come from clients that do not mean a deadline.
async fn answer_within(
    timeout: Option<std::time::Duration>,
    append: impl Future<Output = PartitionResult>,
) -> PartitionResult {
    let Some(limit) = timeout else {
        return append.await;
    };
    crate::rt::timeout(limit, append).await.unwrap_or_else(|| {
        crate::metrics::record_produce_timeout();
        PartitionResult::error(ResponseError::RequestTimedOut, None)
    })
}

/// How long a Produce request may wait for room in its shard's produce budget before it is
/// answered REQUEST_TIMED_OUT unhandled (`server::connection`): its `timeout_ms`, as the wait
/// counts against it. `None` (wait as long as it takes): acks=0, `timeout_ms` <= 0, or a body
/// that does not decode (the handler closes the connection).
pub fn budget_wait_max(request: &ParsedRequest) -> Option<std::time::Duration> {
    let body: ProduceRequest = decode(request).ok()?;
    let ms = u64::try_from(body.timeout_ms).ok().filter(|ms| *ms > 0)?;
    (body.acks != 0).then(|| std::time::Duration::from_millis(ms))
}

/// The answer to a Produce request that timed out before it was handled (see
/// [`budget_wait_max`]): REQUEST_TIMED_OUT for every partition, nothing appended.
pub fn answer_timed_out(request: &ParsedRequest) -> Outcome {
    let body: ProduceRequest = match decode(request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut topics = Vec::with_capacity(body.topic_data.len());
    let mut results = Vec::new();
    for topic in &body.topic_data {
        let partitions: Vec<i32> = topic.partition_data.iter().map(|p| p.index).collect();
        for _ in &partitions {
            crate::metrics::record_produce_timeout();
            results.push(PartitionResult::error(ResponseError::RequestTimedOut, None));
        }
        topics.push((topic.name.clone(), topic.topic_id, partitions));
    }
    super::respond(
        request,
        &produce_response(topics, results, request.api_version),
    )
}

/// Per topic of a Produce request: its name, its id and its partitions' indexes.
type ProduceLayout = Vec<(TopicName, uuid::Uuid, Vec<i32>)>;

/// The Produce response from each partition's result, in request order.
fn produce_response(
    topics: ProduceLayout,
    results: Vec<PartitionResult>,
    api_version: i16,
) -> ProduceResponse {
    let mut results = results.into_iter();
    let mut response = ProduceResponse::default();
    for (name, topic_id, partitions) in topics {
        let mut topic = TopicProduceResponse::default();
        topic.name = name;
        topic.topic_id = topic_id;
        for index in partitions {
            let result = results.next().expect("one result per partition");
            let mut p = PartitionProduceResponse::default();
            p.index = index;
            p.error_code = crate::error::code(result.error);
            p.base_offset = result.base_offset;
            p.log_append_time_ms = result.log_append_time_ms;
            p.log_start_offset = result.log_start_offset;
            p.error_message = result.message.map(str_bytes);
            if let (Some((leader, epoch)), true) = (result.current_leader, api_version >= 10) {
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
            }
            // Kafka lists the records it refused from v8 (the client fails only those).
            if api_version >= 8 {
                p.record_errors = result
                    .record_errors
                    .iter()
                    .map(|e| {
                        let mut r = BatchIndexAndErrorMessage::default();
                        r.batch_index = e.batch_index;
                        r.batch_index_error_message = Some(str_bytes(e.message.to_string()));
                        r
                    })
                    .collect();
            }
            topic.partition_responses.push(p);
        }
        response.responses.push(topic);
    }
    response
}

/// The endpoints of the leaders named in the response's `current_leader`s (live brokers
/// only), each once: Produce v10+'s `node_endpoints`.
fn leader_endpoints(
    shard: &Shard,
    response: &ProduceResponse,
    listener: &str,
) -> Vec<NodeEndpoint> {
    let metadata = shard.metadata();
    let local = routing::local_endpoint_on(&shard.config, listener);
    let leaders: std::collections::BTreeSet<i32> = response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .map(|p| p.current_leader.leader_id.0)
        .filter(|id| *id >= 0)
        .collect();
    leaders
        .into_iter()
        .filter_map(|id| routing::live_endpoint(&metadata, &local, id))
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(str_bytes(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(str_bytes))
        })
        .collect()
}

/// One partition's append on its owner; `(version, acks)` of the request. acks=-1 is refused
/// with NOT_ENOUGH_REPLICAS below `min.insync.replicas` and answered once replicated
/// (`shard::replication`).
async fn append_on_owner(
    shard: Rc<Shard>,
    (version, acks): (i16, i16),
    topic: String,
    partition: i32,
    records: Bytes,
    transactional_id: Option<String>,
) -> PartitionResult {
    let owner = shard.owner(&topic, partition);
    let bytes = records.len() as u64;
    let (batches, record_count) = count_batches(&records);
    let metrics_topic = topic.clone();
    let answer = shard
        .invoke_on(owner, move |owner| async move {
            let Some(log) = owner.partition(&topic, partition) else {
                let metadata = owner.metadata();
                let node_id = owner.config.node_id;
                let code = routing::absent_partition_code(&metadata, node_id, &topic, partition);
                let mut result = PartitionResult::error(code, None);
                result.current_leader =
                    routing::route(&metadata, node_id, &topic, partition).current_leader();
                return result;
            };
            // Kafka answers clients that know it (Produce v11+) with TRANSACTION_ABORTABLE.
            let abortable = |e| match e {
                ResponseError::InvalidTxnState if version > 10 => {
                    ResponseError::TransactionAbortable
                }
                other => other,
            };
            if acks == -1 {
                if let Err(e) = owner.enough_replicas(&log) {
                    return PartitionResult::error(e, None);
                }
            }
            // A transactional batch waits for the ones before it on this partition; the
            // permit is kept through the append only when the coordinator was asked.
            let order = match is_transactional(&records) {
                true => log.txn_order.acquire_permit(1).await.ok(),
                false => None,
            };
            let verified =
                verify_transaction(&owner, &log, &topic, partition, &records, transactional_id);
            let guard = match verified.await {
                Ok(guard) => guard,
                Err(e) => return PartitionResult::error(abortable(e), None),
            };
            let appended = match guard {
                Some(guard) => log.append_verified(records, guard).await,
                None => {
                    drop(order);
                    log.append(records).await
                }
            };
            let appended = match appended {
                Ok(info) if acks == -1 => owner
                    .await_replicated(&log, info.last_offset)
                    .await
                    .map(|()| info)
                    .map_err(Err),
                other => other.map_err(Ok),
            };
            match appended {
                Ok(info) => PartitionResult {
                    error: None,
                    message: None,
                    base_offset: info.base_offset,
                    log_append_time_ms: info.log_append_time_ms,
                    log_start_offset: info.log_start_offset,
                    record_errors: Vec::new(),
                    current_leader: None,
                },
                Err(Err(code)) => PartitionResult::error(code, None),
                Err(Ok(e)) => {
                    tracing::debug!(%topic, partition, error = %e, "produce refused");
                    let code = abortable(storage_code(&e));
                    let (message, record_errors) = match e {
                        // Kafka's message is the summary alone; the records are listed.
                        StorageError::InvalidRecords { message, errors } => (message, errors),
                        e => (e.to_string(), Vec::new()),
                    };
                    let mut result = PartitionResult::error(code, Some(message));
                    result.record_errors = record_errors;
                    result
                }
            }
        })
        .await;
    if matches!(&answer, Ok(PartitionResult { error: None, .. })) {
        crate::metrics::record_produced(&metrics_topic, partition, bytes, batches, record_count);
    }
    answer.unwrap_or_else(|e| PartitionResult::error(shard_gone_code(&e), None))
}

/// Transactional batches may only go to partitions of their producer's open transaction
/// (Kafka's transaction partition verification, KIP-890 part 1): otherwise a late or stray
/// write would open a transaction no marker ever ends, and hold the last stable offset forever.
/// The first batch of a transaction on a partition asks the coordinator; later ones are known
/// from the partition's producer state. The coordinator of the request's transactional id is
/// asked wherever it is (`shard::txns::verify_partition`). Returns the guard to append with
/// after asking: the producer's marker count before the question (a marker meanwhile voids
/// the answer).
async fn verify_transaction(
    owner: &Rc<Shard>,
    partition: &crate::shard::Partition,
    topic: &str,
    index: i32,
    records: &Bytes,
    transactional_id: Option<String>,
) -> Result<Option<(i64, u32)>, ResponseError> {
    let Some(h) = freshet_protocol::batch::header(records) else {
        return Ok(None); // the log's validation answers
    };
    let facts = crate::storage::producer_state::BatchFacts::of(h);
    if !facts.transactional || facts.control || !facts.has_producer() {
        return Ok(None);
    }
    if partition.log.in_transaction(facts.producer_id, facts.epoch) {
        return Ok(None);
    }
    let guard = (
        facts.producer_id,
        partition.log.marker_count(facts.producer_id),
    );
    let tp = (topic.to_string(), index);
    let (pid, epoch) = (facts.producer_id, facts.epoch);
    let verified = owner
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            crate::shard::txns::verify_partition(&c, transactional_id, pid, epoch, tp).await
        })
        .await;
    verified
        .unwrap_or_else(|e| Err(shard_gone_code(&e)))
        .map(|()| Some(guard))
}

/// Whether any batch of any partition of `body` is transactional (Kafka's
/// `RequestUtils.hasTransactionalRecords`; a batch header cut short counts as not).
fn has_transactional_batches(body: &ProduceRequest) -> bool {
    body.topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .filter_map(|p| p.records.as_ref())
        .any(|records| {
            freshet_protocol::batch::batches(records)
                .map_while(Result::ok)
                .any(|(_, batch)| {
                    freshet_protocol::batch::header(batch).is_some_and(|h| {
                        crate::storage::producer_state::BatchFacts::of(h).transactional
                    })
                })
        })
}

/// Whether `records` starts with a transactional data batch (not a control batch).
fn is_transactional(records: &Bytes) -> bool {
    freshet_protocol::batch::header(records).is_some_and(|h| {
        let facts = crate::storage::producer_state::BatchFacts::of(h);
        facts.transactional && !facts.control
    })
}

/// Whole record batches framed back to back in `data`, and the records they hold (from
/// their headers; records are not decoded): what the metrics count for Produce and Fetch.
pub(crate) fn count_batches(data: &[u8]) -> (u64, u64) {
    let mut batches = 0;
    let mut records = 0;
    for (_, batch) in freshet_protocol::batch::batches(data).flatten() {
        batches += 1;
        if let Some(h) = freshet_protocol::batch::header(batch) {
            records += u64::try_from(h.records_count()).unwrap_or(0);
        }
    }
    (batches, records)
}
