//! Push streams as a member of a share group (KIP-932): `?share_group=G` on a stream path.
//!
//! `GET /v3/clusters/{c}/topics/{t}/records/stream?share_group=G` (SSE, or a WebSocket when
//! the request asks to upgrade) joins share group G as a member subscribed to topic `t`
//! (the group coordinator's `ShareGroupHeartbeat` state machine: the member is listed by
//! ShareGroupDescribe beside Kafka clients and counts in the assignment) and pushes records
//! of the partitions assigned to it; `.../partitions/{p}/records/stream?share_group=G` fetches
//! partition `p` only. The records are acquired exactly as a ShareFetch acquires them
//! (`shard::shares::fetch_records`: the same share partitions, locks of
//! `group_share_record_lock_duration_ms`, delivery counts), so HTTP streams and Kafka share
//! consumers of one group share the records. The stream heartbeats for its member while it
//! is open; the position is the group's, so `offset`, `Last-Event-ID` and `group` are not
//! used (nor `isolation`: a share group reads uncommitted, Kafka's default
//! `group.share.isolation.level`).
//!
//! The stream first sends its member: SSE `event: member` (`{"share_group","member_id",
//! "acknowledge"}`), or that JSON as the first WebSocket text frame. Each record is then an
//! event (`id: <partition>:<offset>`) or frame with the JSON of the plain streams plus its
//! `delivery_count`. Acknowledgement by position:
//! `POST /v3/clusters/{c}/share-groups/{G}/acknowledgements` with
//! `{"member_id":..,"acknowledgements":[{"topic_name":..,"partition_id":..,"offset":N |
//! "first_offset":A,"last_offset":B,"type":"ACCEPT"|"RELEASE"|"REJECT"}]}`, or the same JSON
//! (without the member) as a WebSocket text message; the answer (a 200 body, or a text frame
//! `{"results":[..]}`) gives each partition's `error_code` (0, or Kafka's code:
//! INVALID_RECORD_STATE for records this member does not hold). Acknowledgements are applied
//! as ShareAcknowledge applies them (a partition's all or nothing) and written to the
//! share-state log before the answer. Records not acknowledged within the lock come back
//! (to any member); closing the stream leaves the group, which releases what it holds (as a
//! Kafka share session's end does); a stream whose member is gone (its session expired while
//! the client did not read) ends with an error event.
//!
//! Bounds: a stream holds at most `?max_records=N` (default and most
//! [`SHARE_STREAM_RECORDS_MAX`]) records acquired and not yet acknowledged; at that count it
//! acquires nothing more until acknowledgements or lock timeouts bring it down, so a client
//! that stops reading holds at most that many records (and their locks) and one fetch of at
//! most `STREAM_READ_BYTES_MAX` (or one larger batch) in memory. Every share partition stays
//! bounded by `group_share_partition_max_record_locks`. An acknowledgement request names at
//! most [`SHARE_ACKS_PER_REQUEST_MAX`] ranges.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use super::produce::HttpError;
use super::stream::{self, Framing, STREAM_KEEPALIVE, STREAM_READ_BYTES_MAX};
use super::websocket::{self, Reply};
use super::wire::{error_body, json_response, Head};
use super::HttpStream as TcpStream;
use crate::coordinator::share_group::{HeartbeatRequest, HeartbeatResponse, JOIN_EPOCH};
use crate::coordinator::share_partition::{ACK_ACCEPT, ACK_REJECT, ACK_RELEASE};
use crate::shard::shares::{fetch_records, AckBatch, FetchAsk, FetchedPartition};
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};

/// The most records a share stream holds acquired and unacknowledged (as the default
/// `max.poll.records` of Kafka's consumers).
pub const SHARE_STREAM_RECORDS_MAX: usize = 500;
/// Ranges one acknowledgement request may name.
pub const SHARE_ACKS_PER_REQUEST_MAX: usize = 1000;
/// A parked share stream looks again this often (released and timed-out records become
/// available without an append; appends wake it at once).
pub const SHARE_STREAM_POLL: Duration = Duration::from_millis(250);
/// The member's client id in the group.
const CLIENT_ID: &str = "freshet-http";

/// The stream's membership and what it fetches.
struct Member {
    group: String,
    id: String,
    epoch: i32,
    topic: String,
    topic_id: Uuid,
    /// The partition of a partition stream; `None`: the member's assignment.
    only: Option<i32>,
    assigned: Vec<i32>,
    heartbeat_every: Duration,
    next_heartbeat: Instant,
    records_max: usize,
    host: String,
}

impl Member {
    fn partitions(&self) -> Vec<i32> {
        match self.only {
            Some(p) => vec![p],
            None => self.assigned.clone(),
        }
    }

    /// Takes a heartbeat answer: the epoch, the interval, a new assignment.
    fn update(&mut self, r: &HeartbeatResponse) {
        self.epoch = r.member_epoch;
        let every = u64::try_from(r.heartbeat_interval_ms.max(100)).unwrap_or(100);
        self.heartbeat_every = Duration::from_millis(every);
        self.next_heartbeat = Instant::now() + self.heartbeat_every;
        if let Some(a) = &r.assignment {
            let mine = a.get(&self.topic_id);
            self.assigned = mine.map_or(Vec::new(), |s| s.iter().copied().collect());
        }
    }

    fn request(&self, epoch: i32) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: self.group.clone(),
            member_id: self.id.clone(),
            member_epoch: epoch,
            rack_id: None,
            subscribed_topic_names: (epoch == JOIN_EPOCH).then(|| vec![self.topic.clone()]),
            client_id: CLIENT_ID.to_string(),
            client_host: self.host.clone(),
        }
    }
}

/// One ShareGroupHeartbeat of the member on the coordinator shard.
async fn heartbeat(shard: &Rc<Shard>, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.clone();
    let answer = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            crate::api::share_group_heartbeat::heartbeat(&c, req)
        })
        .await;
    answer.unwrap_or_else(|_| HeartbeatResponse {
        error: Some(crate::error::coordinator_gone_code()),
        error_message: Some(format!("the coordinator of {group} is stopping")),
        member_id: None,
        member_epoch: 0,
        heartbeat_interval_ms: 0,
        assignment: None,
    })
}

/// Serves a share-group stream of the request's `share_group` (see the module doc) until the
/// client goes, the member is gone or the shard stops; then the member leaves (its acquired
/// records go back).
pub async fn serve(
    shard: &Rc<Shard>,
    stream: &mut TcpStream,
    head: &Head,
    cluster: &str,
    topic: &str,
    partition: Option<i32>,
    mut framing: Framing,
) -> std::io::Result<()> {
    let group = head.param("share_group").unwrap_or_default();
    let opening = match stream::opening(head, &framing) {
        Ok(opening) => opening,
        Err(answer) => return stream::write_within(stream, &answer).await,
    };
    let host = stream
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let mut member = match join(shard, head, cluster, topic, partition, group, host).await {
        Ok(member) => member,
        Err((status, code, message)) => {
            let body = error_body(code, &message);
            return stream::write_within(stream, &json_response(status, &body)).await;
        }
    };
    let result = run(shard, stream, &opening, &mut member, &mut framing).await;
    // Leaving releases what the member holds; a member already gone (expired) is released
    // here all the same.
    let r = heartbeat(
        shard,
        member.request(crate::coordinator::share_group::LEAVE_EPOCH),
    )
    .await;
    if r.error.is_some() {
        let (g, m) = (member.group.clone(), member.id.clone());
        let _ = shard
            .invoke_on(COORDINATOR_SHARD, move |c| async move {
                c.shares.member_left(&g, &m)
            })
            .await;
    }
    result
}

/// Checks the request and joins the group: the member, or the error answer.
async fn join(
    shard: &Rc<Shard>,
    head: &Head,
    cluster: &str,
    topic: &str,
    partition: Option<i32>,
    group: &str,
    host: String,
) -> Result<Member, HttpError> {
    let metadata = shard.metadata();
    if cluster != metadata.cluster_id {
        return Err((404, 404, format!("Cluster {cluster} cannot be found.")));
    }
    let Some(meta) = metadata.topics.get(topic) else {
        return Err((404, 40403, format!("Topic {topic} cannot be found.")));
    };
    if partition.is_some_and(|p| !(0..meta.partitions).contains(&p)) {
        let message = format!("Partition {partition:?} of topic {topic} cannot be found.");
        return Err((404, 40402, message));
    }
    if stream::read_committed(head) == Ok(true) {
        let message = "a share group reads uncommitted records (group.share.isolation.level)";
        return Err((400, 400, message.to_string()));
    }
    super::group::check_group(shard, group)?;
    let records_max = match head.param("max_records") {
        None => SHARE_STREAM_RECORDS_MAX,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=SHARE_STREAM_RECORDS_MAX).contains(n))
            .ok_or_else(|| {
                let message = format!("max_records must be 1 to {SHARE_STREAM_RECORDS_MAX}");
                (400, 400, message)
            })?,
    };
    let mut member = Member {
        group: group.to_string(),
        id: Uuid::new_v4().to_string(),
        epoch: JOIN_EPOCH,
        topic: topic.to_string(),
        topic_id: meta.id,
        only: partition,
        assigned: Vec::new(),
        heartbeat_every: Duration::from_secs(1),
        next_heartbeat: Instant::now(),
        records_max,
        host,
    };
    let r = heartbeat(shard, member.request(JOIN_EPOCH)).await;
    if let Some(e) = r.error {
        let status = match e {
            kafka_protocol::error::ResponseError::CoordinatorLoadInProgress
            | kafka_protocol::error::ResponseError::CoordinatorNotAvailable => 503,
            _ => 409,
        };
        let message = r.error_message.unwrap_or_else(|| format!("{e:?}"));
        return Err((
            status,
            u32::from(status),
            format!("joining {group}: {message}"),
        ));
    }
    member.update(&r);
    Ok(member)
}

/// The stream's loop: heartbeat when due, acquire and push while the member holds fewer than
/// its bound, else park until an append, the poll interval or the client's input.
async fn run(
    shard: &Rc<Shard>,
    stream: &mut TcpStream,
    opening: &[u8],
    member: &mut Member,
    framing: &mut Framing,
) -> std::io::Result<()> {
    let mut first = opening.to_vec();
    first.extend(member_event(framing, member, shard));
    stream::write_within(stream, &first).await?;
    let mut last_write = Instant::now();
    while !shard.stopping.get() {
        if Instant::now() >= member.next_heartbeat {
            let r = heartbeat(shard, member.request(member.epoch)).await;
            if let Some(e) = r.error {
                let message = format!("the share-group member is gone ({e:?})");
                return stream::write_within(stream, &framing.error(&message)).await;
            }
            member.update(&r);
        }
        match acquire_and_push(shard, stream, framing, member).await? {
            Pushed::Records => {
                last_write = Instant::now();
                continue;
            }
            Pushed::Ended => return Ok(()),
            Pushed::Nothing => {}
        }
        let woke =
            futures_lite::future::or(async { Some(framing.client_input(stream).await) }, async {
                futures_lite::future::or(wait_for_append(shard, member), async {
                    crate::rt::sleep(SHARE_STREAM_POLL).await;
                })
                .await;
                None
            })
            .await;
        let answer = match woke {
            None if last_write.elapsed() >= STREAM_KEEPALIVE => framing.keepalive(),
            None => continue,
            Some(None) => return Ok(()),
            Some(Some(Reply::Close(close))) => return stream::write_within(stream, &close).await,
            Some(Some(Reply::Send(pongs))) => pongs,
            Some(Some(Reply::Text(text))) => {
                let body = match serde_json::from_slice::<Value>(&text) {
                    Ok(v) => acknowledge(shard, &member.group, &member.id, &v).await,
                    Err(e) => Err((400, 400, format!("bad JSON: {e}"))),
                };
                let body = body.unwrap_or_else(|(_, code, message)| error_body(code, &message));
                let mut out = Vec::new();
                websocket::encode_frame(websocket::OP_TEXT, body.as_bytes(), &mut out);
                out
            }
        };
        stream::write_within(stream, &answer).await?;
        last_write = Instant::now();
    }
    Ok(())
}

/// The first event or frame: who the stream is in the group and where to acknowledge.
fn member_event(framing: &Framing, member: &Member, shard: &Shard) -> Vec<u8> {
    let cluster = shard.metadata().cluster_id.clone();
    let json = serde_json::json!({
        "share_group": member.group,
        "member_id": member.id,
        "acknowledge": format!("/v3/clusters/{cluster}/share-groups/{}/acknowledgements", member.group),
    });
    match framing {
        Framing::Sse => format!("event: member\ndata: {json}\n\n").into_bytes(),
        Framing::WebSocket(_) => {
            let mut out = Vec::new();
            websocket::encode_frame(websocket::OP_TEXT, json.to_string().as_bytes(), &mut out);
            out
        }
    }
}

/// Resolves on the next append to one of the member's partitions (or a partition going,
/// the shard stopping, the keepalive interval).
async fn wait_for_append(shard: &Rc<Shard>, member: &Member) {
    let partitions = member.partitions();
    if partitions.is_empty() {
        return std::future::pending().await;
    }
    // No position is past i64::MAX: each owner parks on its partitions' next append.
    let positions: Vec<(i32, i64)> = partitions.iter().map(|&p| (p, i64::MAX)).collect();
    let owners: Vec<usize> = partitions
        .iter()
        .map(|&p| shard.owner(&member.topic, p))
        .collect();
    stream::wait_for_any(shard, &member.topic, &positions, &owners, false).await;
}

/// What a look for records did.
enum Pushed {
    Records,
    Nothing,
    /// The stream ended with an error event.
    Ended,
}

/// Acquires records for the member (at most what its bound leaves room for) and pushes
/// them, with their delivery counts.
async fn acquire_and_push(
    shard: &Rc<Shard>,
    stream: &mut TcpStream,
    framing: &Framing,
    member: &Member,
) -> std::io::Result<Pushed> {
    let partitions = member.partitions();
    if partitions.is_empty() {
        return Ok(Pushed::Nothing);
    }
    let ask = FetchAsk {
        group: member.group.clone(),
        member: member.id.clone(),
        partitions: partitions.iter().map(|&p| (member.topic_id, p)).collect(),
        max_wait_ms: 0,
        max_records: 0,
        max_bytes: STREAM_READ_BYTES_MAX,
    };
    let records_max = member.records_max;
    let fetched = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            let held = c.shares.member_acquired(now_ms(), &ask.group, &ask.member);
            let room = records_max.saturating_sub(held);
            if room == 0 || !c.shares.is_loaded() {
                return BTreeMap::new();
            }
            fetch_records(
                &c,
                FetchAsk {
                    max_records: room,
                    ..ask
                },
            )
            .await
        })
        .await
        .unwrap_or_default();
    let mut out = Vec::with_capacity(stream::STREAM_WRITE_CHUNK_BYTES);
    let mut pushed = false;
    for ((_, partition), f) in fetched {
        if let Some(e) = f.error {
            out.extend(framing.error(&format!("partition {partition}: {e:?}")));
            stream::write_within(stream, &out).await?;
            return Ok(Pushed::Ended);
        }
        pushed |= !f.acquired.is_empty();
        render(framing, &member.topic, partition, f, &mut out);
        if out.len() >= stream::STREAM_WRITE_CHUNK_BYTES {
            stream::write_within(stream, &out).await?;
            out.clear();
        }
    }
    if !out.is_empty() {
        stream::write_within(stream, &out).await?;
    }
    Ok(if pushed {
        Pushed::Records
    } else {
        Pushed::Nothing
    })
}

/// Appends the acquired records of one partition's fetch, each with its delivery count.
fn render(framing: &Framing, topic: &str, partition: i32, f: FetchedPartition, out: &mut Vec<u8>) {
    for batch in f.batches {
        let (records, _) = stream::decode_batch(batch, topic, partition);
        for r in records.iter().filter(|r| !r.control) {
            let Some(range) = f
                .acquired
                .iter()
                .find(|a| (a.first_offset..=a.last_offset).contains(&r.offset))
            else {
                continue;
            };
            let mut json = stream::record_json(r, topic, partition);
            json["delivery_count"] = Value::from(range.delivery_count);
            match framing {
                Framing::Sse => {
                    out.extend_from_slice(
                        format!("id: {partition}:{}\ndata: {json}\n\n", r.offset).as_bytes(),
                    );
                }
                Framing::WebSocket(_) => {
                    let text = json.to_string();
                    websocket::encode_frame(websocket::OP_TEXT, text.as_bytes(), out);
                }
            }
        }
    }
}

/// One acknowledged range of a request.
#[derive(Debug, PartialEq, Eq)]
pub struct Ack {
    pub topic: String,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
    pub kind: i8,
}

/// Parses the `acknowledgements` of a request body; the message of a 400 when malformed.
pub fn parse_acks(v: &Value) -> Result<Vec<Ack>, String> {
    let list = v
        .get("acknowledgements")
        .and_then(Value::as_array)
        .ok_or("the body needs an \"acknowledgements\" array")?;
    if list.len() > SHARE_ACKS_PER_REQUEST_MAX {
        return Err(format!(
            "at most {SHARE_ACKS_PER_REQUEST_MAX} acknowledgements per request"
        ));
    }
    list.iter()
        .map(|a| {
            let topic = a.get("topic_name").and_then(Value::as_str);
            let partition = a
                .get("partition_id")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok());
            let offset = |k: &str| a.get(k).and_then(Value::as_i64);
            let (first, last) = match (offset("offset"), offset("first_offset")) {
                (Some(o), None) => (Some(o), Some(o)),
                (None, Some(f)) => (Some(f), offset("last_offset")),
                _ => (None, None),
            };
            let kind = match a.get("type").and_then(Value::as_str) {
                Some(t) if t.eq_ignore_ascii_case("ACCEPT") => Some(ACK_ACCEPT),
                Some(t) if t.eq_ignore_ascii_case("RELEASE") => Some(ACK_RELEASE),
                Some(t) if t.eq_ignore_ascii_case("REJECT") => Some(ACK_REJECT),
                _ => None,
            };
            match (topic, partition, first, last, kind) {
                (Some(topic), Some(partition), Some(first), Some(last), Some(kind))
                    if 0 <= first && first <= last =>
                {
                    Ok(Ack {
                        topic: topic.to_string(),
                        partition,
                        first,
                        last,
                        kind,
                    })
                }
                _ => Err(format!(
                    "each acknowledgement needs topic_name, partition_id, offset (or first_offset <= last_offset) and a type ACCEPT, RELEASE or REJECT: {a}"
                )),
            }
        })
        .collect()
}

/// Applies `v`'s acknowledgements for `member` of `group`: the answer body (each partition's
/// error code), or the error answer.
async fn acknowledge(
    shard: &Rc<Shard>,
    group: &str,
    member: &str,
    v: &Value,
) -> Result<String, HttpError> {
    let acks = parse_acks(v).map_err(|m| (400, 400, m))?;
    let metadata = shard.metadata();
    let mut by_partition: Vec<((Uuid, i32), Vec<AckBatch>)> = Vec::new();
    let mut names: BTreeMap<Uuid, String> = BTreeMap::new();
    for a in acks {
        let Some(meta) = metadata.topics.get(&a.topic) else {
            return Err((404, 40403, format!("Topic {} cannot be found.", a.topic)));
        };
        names.insert(meta.id, a.topic.clone());
        let key = (meta.id, a.partition);
        let batch = (a.first, a.last, vec![a.kind]);
        match by_partition.iter_mut().find(|(k, _)| *k == key) {
            Some((_, batches)) => batches.push(batch),
            None => by_partition.push((key, vec![batch])),
        }
    }
    let (g, m) = (group.to_string(), member.to_string());
    let answers = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            if !c.shares.is_loaded() {
                return None;
            }
            Some(c.shares.acknowledge(now_ms(), &g, &m, by_partition).await)
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            (
                503,
                503,
                "the share coordinator is not available".to_string(),
            )
        })?;
    let results: Vec<Value> = answers
        .into_iter()
        .map(|((topic_id, partition), error)| {
            serde_json::json!({
                "topic_name": names.get(&topic_id),
                "partition_id": partition,
                "error_code": crate::error::code(error),
                "error": error.map(|e| format!("{e:?}")),
            })
        })
        .collect();
    Ok(serde_json::json!({ "member_id": member, "results": results }).to_string())
}

/// `POST .../share-groups/{group}/acknowledgements`: the status and JSON body to answer with.
pub async fn acknowledge_handler(
    shard: &Rc<Shard>,
    cluster: &str,
    group: &str,
    body: &[u8],
) -> (u16, String) {
    let checked = (|| {
        if cluster != shard.metadata().cluster_id {
            return Err((404, 404, format!("Cluster {cluster} cannot be found.")));
        }
        super::group::check_group(shard, group)?;
        let v: Value =
            serde_json::from_slice(body).map_err(|e| (400, 400, format!("bad JSON body: {e}")))?;
        let member = v
            .get("member_id")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or((
                400,
                400,
                "the body needs the stream's member_id".to_string(),
            ))?
            .to_string();
        Ok((v, member))
    })();
    let answer = match checked {
        Ok((v, member)) => acknowledge(shard, group, &member, &v).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(body) => (200, body),
        Err((status, code, message)) => (status, error_body(code, &message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_parse_by_offset_or_range_and_refuse_the_rest() {
        let v: Value = serde_json::from_str(
            r#"{"acknowledgements":[
                {"topic_name":"t","partition_id":0,"offset":5,"type":"ACCEPT"},
                {"topic_name":"t","partition_id":1,"first_offset":6,"last_offset":9,"type":"release"},
                {"topic_name":"u","partition_id":0,"offset":0,"type":"REJECT"}]}"#,
        )
        .unwrap();
        let acks = parse_acks(&v).unwrap();
        assert_eq!(
            acks[1],
            Ack {
                topic: "t".into(),
                partition: 1,
                first: 6,
                last: 9,
                kind: ACK_RELEASE
            }
        );
        assert_eq!(
            (acks[0].first, acks[0].last, acks[0].kind),
            (5, 5, ACK_ACCEPT)
        );
        assert_eq!(acks[2].kind, ACK_REJECT);
        for bad in [
            r#"{}"#,
            r#"{"acknowledgements":[{"topic_name":"t","partition_id":0,"offset":5,"type":"GAP"}]}"#,
            r#"{"acknowledgements":[{"topic_name":"t","partition_id":0,"offset":-1,"type":"ACCEPT"}]}"#,
            r#"{"acknowledgements":[{"topic_name":"t","partition_id":0,"first_offset":9,"last_offset":8,"type":"ACCEPT"}]}"#,
            r#"{"acknowledgements":[{"topic_name":"t","partition_id":0,"offset":1,"first_offset":1,"last_offset":2,"type":"ACCEPT"}]}"#,
            r#"{"acknowledgements":[{"partition_id":0,"offset":1,"type":"ACCEPT"}]}"#,
            r#"{"acknowledgements":[{"topic_name":"t","partition_id":4294967296,"offset":1,"type":"ACCEPT"}]}"#,
        ] {
            assert!(
                parse_acks(&serde_json::from_str(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
        let many: Vec<Value> = (0..=SHARE_ACKS_PER_REQUEST_MAX)
            .map(|o| serde_json::json!({"topic_name":"t","partition_id":0,"offset":o,"type":"ACCEPT"}))
            .collect();
        assert!(parse_acks(&serde_json::json!({ "acknowledgements": many })).is_err());
    }
}
