//! `GET /v3/clusters/{cluster_id}/topics/{topic}/partitions/{p}/records/stream`: a partition's
//! records pushed as Server-Sent Events, or over a WebSocket when the request asks to upgrade
//! ([`super::websocket`]: the same JSON records, one per text frame; pings for keepalives; the
//! resume position `?last_event_id=p:o` or `?offset=N` in the query).
//!
//! `GET /v3/clusters/{cluster_id}/topics/{topic}/records/stream` merges every partition of the
//! topic (at most [`TOPIC_STREAM_PARTITIONS_MAX`], all led by this broker) into one stream:
//! the partitions are read in turn, each in offset order; a caught-up stream parks on all of
//! them at once (one call per owner shard, cancelled together). Its event id is the next
//! offset of every partition in partition order (`12,0,7`), so a reconnect with it resumes
//! every partition without gap or duplicate; the start is `?offset=earliest|latest`.
//!
//! Each record is one event: `id: <partition>:<offset>` and `data: <json>` (topic, partition,
//! offset, timestamp, key, value, headers; key and value as `{"type":"STRING"|"BINARY",
//! "data":..}`, STRING when the bytes are UTF-8, BINARY base64 otherwise; header values
//! base64). The start: the offset after `Last-Event-ID` when the client sends one (an
//! EventSource reconnecting), else with `?group=G` the group's committed offset (when it has
//! one inside the log: [`super::group`]), else `?offset=N|earliest|latest` (default
//! `latest`); an offset outside `[log start, high watermark]` is answered 416 before the
//! stream starts.
//!
//! The loop reads at most [`STREAM_READ_BYTES_MAX`] (or one larger batch) on the owner shard
//! through `PartitionLog::read` (never past the high watermark), renders it and writes it in
//! pieces of [`STREAM_WRITE_CHUNK_BYTES`] before reading again: a client that stops reading
//! stops the stream at the socket, and the connection holds one read, its decoded records
//! (which share the read's bytes when uncompressed) and one piece of events, never more. When it is caught up it parks on
//! the partition's `hw_changed` (as a long-poll Fetch does) and is woken by the next append; a
//! comment line every [`STREAM_KEEPALIVE`] keeps proxies from timing it out, and a client
//! that closes while the stream is parked ends it at once. A write that makes no
//! progress for [`STREAM_WRITE_STALL_MAX`] ends the connection, so a client that never reads
//! again gives its slot back.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::records::{Record, RecordBatchDecoder};
use serde_json::Value;

use super::websocket::{self, Reply};
use super::wire::{base64_encode, error_body, json_response, parse_event_id, Head};
use super::HttpStream as TcpStream;
use crate::shard::{routing, Shard};
use crate::storage::StorageError;

/// Partitions a topic-wide stream serves at most (its event ids list a position for each).
pub const TOPIC_STREAM_PARTITIONS_MAX: usize = 64;
/// Bytes of record batches read per step of a stream (at least one whole batch).
pub const STREAM_READ_BYTES_MAX: usize = 64 * 1024;
/// A stream writes its events in pieces of about this size.
pub const STREAM_WRITE_CHUNK_BYTES: usize = 64 * 1024;
/// A caught-up stream sends a comment this often (and so notices a closed client).
pub const STREAM_KEEPALIVE: Duration = Duration::from_secs(15);
/// A write to a stream that makes no progress for this long ends the stream.
pub const STREAM_WRITE_STALL_MAX: Duration = Duration::from_secs(60);

/// How a stream's records go on the wire.
pub enum Framing {
    /// Server-Sent Events.
    Sse,
    /// WebSocket text frames (after the handshake); holds the client's bytes not yet taken as
    /// whole frames (at most one frame of `WS_CLIENT_FRAME_BYTES_MAX` and a read).
    WebSocket(Vec<u8>),
}

/// What ended a wait of a caught-up stream.
enum Woke {
    /// The partition has new data (true) or the keepalive interval passed (false).
    Data(bool),
    /// The client sent something to answer, or (`None`) closed.
    Client(Option<Reply>),
}

impl Framing {
    /// The framing a stream request asks for.
    pub fn of(head: &Head) -> Framing {
        if websocket::wants_upgrade(head) {
            Framing::WebSocket(Vec::new())
        } else {
            Framing::Sse
        }
    }

    /// Appends one record.
    fn record(&self, r: &Record, topic: &str, partition: i32, id: &str, out: &mut Vec<u8>) {
        match self {
            Framing::Sse => render_record(r, topic, partition, id, out),
            Framing::WebSocket(_) => {
                let json =
                    serde_json::to_vec(&record_json(r, topic, partition)).unwrap_or_default();
                websocket::encode_frame(websocket::OP_TEXT, &json, out);
            }
        }
    }

    /// What keeps an idle stream alive (and notices a closed client).
    pub(super) fn keepalive(&self) -> Vec<u8> {
        match self {
            Framing::Sse => b": keepalive\n\n".to_vec(),
            Framing::WebSocket(_) => {
                let mut out = Vec::new();
                websocket::encode_frame(websocket::OP_PING, b"", &mut out);
                out
            }
        }
    }

    /// The last thing a stream sends when it cannot go on.
    pub(super) fn error(&self, message: &str) -> Vec<u8> {
        let body = error_body(500, message);
        match self {
            Framing::Sse => format!("event: error\ndata: {body}\n\n").into_bytes(),
            Framing::WebSocket(_) => {
                let mut out = Vec::new();
                websocket::encode_frame(websocket::OP_TEXT, body.as_bytes(), &mut out);
                out.extend(websocket::close_frame(
                    websocket::CLOSE_INTERNAL_ERROR,
                    "stream ended",
                ));
                out
            }
        }
    }

    /// Waits for the client's next input: `None` when it closes; a WebSocket's frames are
    /// taken as they arrive and answered by the caller.
    pub(super) async fn client_input(&mut self, stream: &mut TcpStream) -> Option<Reply> {
        let Framing::WebSocket(buf) = self else {
            client_closed(stream).await;
            return None;
        };
        let mut chunk = [0u8; 512];
        loop {
            if let Some(reply) = websocket::take_frames(buf) {
                return Some(reply);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Why a read on the owner gave nothing.
enum ReadError {
    Gone,
    OutOfRange,
    Other(String),
}

/// Serves one stream request on `stream` until the client goes, a partition goes, or the
/// shard stops: one partition's (`Some(partition)`), or the whole topic's.
pub async fn serve(
    shard: &Rc<Shard>,
    stream: &mut TcpStream,
    head: &Head,
    cluster: &str,
    topic: &str,
    partition: Option<i32>,
    mut framing: Framing,
) -> std::io::Result<()> {
    // About 100 lines: the stream's one loop (open, read the partitions in turn, push,
    // park) reads best whole; each step is a function below.
    let opening = match opening(head, &framing) {
        Ok(opening) => opening,
        Err(answer) => return write_within(stream, &answer).await,
    };
    let committed = match read_committed(head) {
        Ok(committed) => committed,
        Err(message) => {
            let body = error_body(400, &message);
            return write_within(stream, &json_response(400, &body)).await;
        }
    };
    let start = match partition {
        Some(p) => start_offset(shard, head, cluster, topic, p, committed)
            .await
            .map(|o| vec![(p, o)]),
        None => topic_start(shard, head, cluster, topic, committed).await,
    };
    let mut positions = match start {
        Ok(positions) => positions,
        Err((status, code, message)) => {
            let body = error_body(code, &message);
            return write_within(stream, &json_response(status, &body)).await;
        }
    };
    let owners: Vec<usize> = positions
        .iter()
        .map(|(p, _)| shard.owner(topic, *p))
        .collect();
    write_within(stream, &opening).await?;
    // Partitions are read in turn from the one after the last that had records, so a busy
    // partition does not starve the others of a topic-wide stream.
    let mut turn = 0;
    while !shard.stopping.get() {
        let mut pushed = false;
        for k in 0..positions.len() {
            let i = (turn + k) % positions.len();
            let (p, next) = positions[i];
            let (batches, after) =
                match read_batches(shard, owners[i], topic, p, next, committed).await {
                    Ok(read) => read,
                    Err(message) => return write_within(stream, &framing.error(&message)).await,
                };
            if batches.is_empty() {
                if after > next {
                    // Only an aborted transaction's batches: past them, nothing to send.
                    positions[i].1 = after;
                    (turn, pushed) = (i + 1, true);
                    break;
                }
                continue;
            }
            if !push_batches(
                stream,
                &framing,
                topic,
                &mut positions,
                i,
                partition,
                batches,
            )
            .await?
            {
                return Ok(());
            }
            positions[i].1 = positions[i].1.max(after);
            (turn, pushed) = (i + 1, true);
            break;
        }
        if pushed {
            continue;
        }
        let waited = futures_lite::future::or(
            async {
                let woke = wait_for_any(shard, topic, &positions, &owners, committed).await;
                Woke::Data(woke)
            },
            async { Woke::Client(framing.client_input(stream).await) },
        )
        .await;
        match waited {
            Woke::Client(None) => return Ok(()),
            Woke::Client(Some(Reply::Close(close))) => return write_within(stream, &close).await,
            Woke::Client(Some(Reply::Send(pongs))) => write_within(stream, &pongs).await?,
            // A plain stream has nothing to receive.
            Woke::Client(Some(Reply::Text(_))) => {}
            Woke::Data(false) => write_within(stream, &framing.keepalive()).await?,
            Woke::Data(true) => {}
        }
    }
    Ok(())
}

/// `?isolation=read_committed|read_uncommitted` (default read_uncommitted): true for
/// read_committed; the message of a 400 for anything else.
pub(super) fn read_committed(head: &Head) -> Result<bool, String> {
    match head.param("isolation") {
        None | Some("read_uncommitted") => Ok(false),
        Some("read_committed") => Ok(true),
        Some(other) => Err(format!(
            "bad isolation {other:?} (read_committed or read_uncommitted)"
        )),
    }
}

/// The answer that opens a stream (SSE's 200, a WebSocket's 101), or the refusal to send.
pub(super) fn opening(head: &Head, framing: &Framing) -> Result<Vec<u8>, Vec<u8>> {
    match framing {
        Framing::Sse => Ok(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\nretry: 1000\n\n".to_vec()),
        Framing::WebSocket(_) => websocket::handshake(head).map_err(|(status, message)| {
            let mut answer = json_response(status, &error_body(u32::from(status), &message));
            if status == 426 {
                // RFC 6455 4.4: name the version this server speaks.
                let line_end = answer.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
                answer.splice(line_end..line_end, *b"Sec-WebSocket-Version: 13\r\n");
            }
            answer
        }),
    }
}

/// Reads at most [`STREAM_READ_BYTES_MAX`] (or one larger batch) of a partition from `next`
/// on its owner, and the offset after what was read; the message to end the stream with when
/// it cannot. `committed` (read_committed): only below the last stable offset, aborted
/// transactions' batches left out ([`super::committed`]).
async fn read_batches(
    shard: &Rc<Shard>,
    owner: usize,
    topic: &str,
    partition: i32,
    next: i64,
    committed: bool,
) -> Result<(Vec<Bytes>, i64), String> {
    let name = topic.to_string();
    let read = shard
        .invoke_on(owner, move |o| async move {
            let Some(p) = o.partition(&name, partition) else {
                return Err(ReadError::Gone);
            };
            let end = if committed {
                p.log.last_stable_offset()
            } else {
                i64::MAX
            };
            let batches = match p
                .log
                .read_upto(next, STREAM_READ_BYTES_MAX, true, end)
                .await
            {
                Ok(data) => data.batches,
                Err(StorageError::OffsetOutOfRange { .. }) => return Err(ReadError::OutOfRange),
                Err(e) => return Err(ReadError::Other(e.to_string())),
            };
            let after = batches
                .last()
                .and_then(|b| freshet_protocol::batch::header(b))
                .map_or(next, |h| h.last_offset() + 1);
            if !committed || batches.is_empty() {
                return Ok((batches, after));
            }
            match p.log.aborted_transactions(next, after).await {
                Ok(aborted) => Ok((super::committed::visible_batches(batches, &aborted), after)),
                Err(e) => Err(ReadError::Other(e.to_string())),
            }
        })
        .await
        .unwrap_or(Err(ReadError::Gone));
    read.map_err(|e| match e {
        ReadError::Gone => format!("partition {partition} is no longer here"),
        ReadError::OutOfRange => {
            format!(
                "offset {next} of partition {partition} is out of range (deleted by retention?)"
            )
        }
        ReadError::Other(m) => m,
    })
}

/// Renders the records of partition `positions[i]` in `batches` and writes them, a piece at a
/// time: the connection holds the read batches, at most [`STREAM_WRITE_CHUNK_BYTES`] of
/// events (or one larger event) and nothing else. Moves the position on; false when the
/// stream had to end (a read that does not move it on would be read again forever).
async fn push_batches(
    stream: &mut TcpStream,
    framing: &Framing,
    topic: &str,
    positions: &mut [(i32, i64)],
    i: usize,
    one_partition: Option<i32>,
    batches: Vec<Bytes>,
) -> std::io::Result<bool> {
    let (partition, before) = positions[i];
    let mut out = Vec::with_capacity(STREAM_WRITE_CHUNK_BYTES);
    for batch in batches {
        let (records, after) = decode_batch(batch, topic, partition);
        let from = positions[i].1;
        for r in records.iter().filter(|r| !r.control && r.offset >= from) {
            let id = match one_partition {
                Some(p) => format!("{p}:{}", r.offset),
                None => {
                    positions[i].1 = r.offset + 1;
                    topic_event_id(positions)
                }
            };
            framing.record(r, topic, partition, &id, &mut out);
            if out.len() >= STREAM_WRITE_CHUNK_BYTES {
                write_within(stream, &out).await?;
                out.clear();
                out.shrink_to(STREAM_WRITE_CHUNK_BYTES);
            }
        }
        positions[i].1 = positions[i].1.max(after);
    }
    if positions[i].1 == before {
        let message =
            format!("the batch at offset {before} of partition {partition} cannot be read");
        out.extend(framing.error(&message));
        write_within(stream, &out).await?;
        return Ok(false);
    }
    write_within(stream, &out).await?;
    Ok(true)
}

/// The records of `batch` and the offset after it (a batch that does not decode is logged
/// and skipped; one without a header gives nothing and offset 0).
pub(super) fn decode_batch(batch: Bytes, topic: &str, partition: i32) -> (Vec<Record>, i64) {
    let Some(last) = freshet_protocol::batch::header(&batch).map(|h| h.last_offset()) else {
        return (Vec::new(), 0);
    };
    let mut buf = batch;
    match RecordBatchDecoder::decode(&mut buf) {
        Ok(set) => (set.records, last + 1),
        Err(e) => {
            tracing::warn!(topic, partition, error = %e, "a stored batch does not decode; skipped on the push stream");
            (Vec::new(), last + 1)
        }
    }
}

/// One record as JSON (the data of its event or frame).
pub(super) fn record_json(r: &Record, topic: &str, partition: i32) -> Value {
    let data = |d: &Option<Bytes>| match d {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => serde_json::json!({ "type": "STRING", "data": s }),
            Err(_) => serde_json::json!({ "type": "BINARY", "data": base64_encode(b) }),
        },
    };
    let headers: Vec<Value> = r
        .headers
        .iter()
        .map(|(n, v)| serde_json::json!({ "name": n.as_str(), "value": v.as_ref().map(|v| base64_encode(v)) }))
        .collect();
    serde_json::json!({
        "topic": topic,
        "partition": partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": data(&r.key),
        "value": data(&r.value),
        "headers": headers,
    })
}

/// Appends one record's event to `out`.
fn render_record(r: &Record, topic: &str, partition: i32, id: &str, out: &mut Vec<u8>) {
    let json = record_json(r, topic, partition);
    out.extend_from_slice(format!("id: {id}\ndata: ").as_bytes());
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &json);
    out.extend_from_slice(b"\n\n");
}

/// Appends the events of `batch`'s records at or past `from`; the offset after the batch.
#[cfg(test)]
fn render_batch(batch: Bytes, topic: &str, partition: i32, from: i64, out: &mut Vec<u8>) -> i64 {
    let (records, after) = decode_batch(batch, topic, partition);
    for r in records.iter().filter(|r| !r.control && r.offset >= from) {
        render_record(
            r,
            topic,
            partition,
            &format!("{partition}:{}", r.offset),
            out,
        );
    }
    after.max(from)
}

/// A partition's log start, high watermark and last stable offset on its owner here, or the
/// error answer (404 unknown, 421 not led here, 503 not open).
async fn bounds(
    shard: &Rc<Shard>,
    metadata: &crate::coordinator::metadata::ClusterMetadata,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64, i64), super::produce::HttpError> {
    let route = routing::route(metadata, shard.config.node_id, topic, partition);
    if route == routing::Route::Unknown {
        return Err((
            404,
            40402,
            format!("Partition {partition} of topic {topic} cannot be found."),
        ));
    }
    if let Some(e) = route.error() {
        return Err((421, 421, format!("this broker cannot serve it: {e:?}")));
    }
    let name = topic.to_string();
    shard
        .invoke_on(shard.owner(topic, partition), move |o| async move {
            o.partition(&name, partition).map(|p| {
                let log = &p.log;
                let hw = log.high_watermark();
                (log.log_start_offset(), hw, log.last_stable_offset().min(hw))
            })
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| (503, 503, "the partition is not open here".to_string()))
}

/// The client's last event id: `Last-Event-ID`, or the query's `last_event_id` (a browser's
/// WebSocket cannot send headers; `:` may come escaped). `None` when absent or empty.
fn last_event_id(head: &Head) -> Option<String> {
    head.header("last-event-id")
        .map(str::to_string)
        .or_else(|| {
            head.param("last_event_id").map(|v| {
                v.replace("%3A", ":")
                    .replace("%3a", ":")
                    .replace("%2C", ",")
                    .replace("%2c", ",")
            })
        })
        .filter(|v| !v.is_empty())
}

/// Where the stream starts (see the module docs), or the error answer.
async fn start_offset(
    shard: &Rc<Shard>,
    head: &Head,
    cluster: &str,
    topic: &str,
    partition: i32,
    read_committed: bool,
) -> Result<i64, super::produce::HttpError> {
    let metadata = shard.metadata();
    if cluster != metadata.cluster_id {
        return Err((404, 404, format!("Cluster {cluster} cannot be found.")));
    }
    if !metadata.topics.contains_key(topic) {
        return Err((404, 40403, format!("Topic {topic} cannot be found.")));
    }
    let (start, hw, lso) = bounds(shard, &metadata, topic, partition).await?;
    let bounds = (start, hw);
    let committed = match head.param("group") {
        Some(group) => super::group::committed(shard, group, topic, partition)
            .await?
            .filter(|o| (bounds.0..=bounds.1).contains(o)),
        None => None,
    };
    let last_id = last_event_id(head);
    let asked = match last_id.as_deref() {
        Some(id) => parse_event_id(id, partition)
            .map(|o| o + 1)
            .ok_or_else(|| (400, 400, format!("bad Last-Event-ID {id:?}")))?,
        None if committed.is_some() => committed.unwrap_or_default(),
        None => match head.param("offset").unwrap_or("latest") {
            "latest" if read_committed => lso,
            "latest" => bounds.1,
            "earliest" => bounds.0,
            n => n
                .parse()
                .map_err(|_| (400, 400, format!("bad offset {n:?}")))?,
        },
    };
    if asked < bounds.0 || asked > bounds.1 {
        return Err((
            416,
            416,
            format!(
                "offset {asked} is out of range [{}, {}]",
                bounds.0, bounds.1
            ),
        ));
    }
    Ok(asked)
}

/// Parks until the high watermark (read_committed: the last stable offset) of one of the
/// partitions passes its position (true), or
/// the keepalive interval passes, a partition goes or the shard stops (false). One call per
/// owner shard, each parked on its partitions' `hw_changed`; when one answers, dropping the
/// cancel channel ends the others at once (a parked call must not outlive its stream).
pub(super) async fn wait_for_any(
    shard: &Rc<Shard>,
    topic: &str,
    positions: &[(i32, i64)],
    owners: &[usize],
    committed: bool,
) -> bool {
    let (_cancel, cancelled) = flume::bounded::<()>(1);
    let mut by_owner: Vec<(usize, Vec<(i32, i64)>)> = Vec::new();
    for (&owner, &position) in owners.iter().zip(positions) {
        match by_owner.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, list)) => list.push(position),
            None => by_owner.push((owner, vec![position])),
        }
    }
    let mut calls: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = bool>>>> = by_owner
        .into_iter()
        .map(|(owner, list)| {
            let (name, cancelled) = (topic.to_string(), cancelled.clone());
            let call = shard.invoke_on(owner, move |o| {
                wait_on_owner(o, name, list, cancelled, committed)
            });
            Box::pin(async move { call.await.unwrap_or(false) }) as _
        })
        .collect();
    first_of(&mut calls).await
}

/// The first answer of `futures`.
async fn first_of(
    futures: &mut [std::pin::Pin<Box<dyn std::future::Future<Output = bool> + '_>>],
) -> bool {
    futures_lite::future::poll_fn(|cx| {
        for f in futures.iter_mut() {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// [`wait_for_any`] on one owner shard, for its partitions.
async fn wait_on_owner(
    o: Rc<Shard>,
    topic: String,
    list: Vec<(i32, i64)>,
    cancelled: flume::Receiver<()>,
    committed: bool,
) -> bool {
    // What a stream can read up to: the high watermark, or (read_committed) the last stable
    // offset, which moves with the high watermark when a transaction ends.
    let end = |p: &crate::shard::Partition| {
        if committed {
            p.log.last_stable_offset()
        } else {
            p.log.high_watermark()
        }
    };
    let mut parts = Vec::with_capacity(list.len());
    for (partition, next) in list {
        let Some(p) = o.partition(&topic, partition) else {
            return false;
        };
        if end(&p) > next {
            return true;
        }
        parts.push((p, next));
    }
    let woken = {
        let mut waits: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = bool> + '_>>> = parts
            .iter()
            .map(|(p, _)| {
                Box::pin(async move {
                    p.hw_changed.wait().await;
                    true
                }) as _
            })
            .collect();
        waits.push(Box::pin(async {
            o.stop.wait().await;
            false
        }));
        waits.push(Box::pin(async {
            // Sent nothing: it answers when the stream's side drops its sender.
            let _ = cancelled.recv_async().await;
            false
        }));
        waits.push(Box::pin(async {
            crate::rt::sleep(STREAM_KEEPALIVE).await;
            false
        }));
        first_of(&mut waits).await
    };
    woken && parts.iter().any(|(p, next)| end(p) > *next)
}

/// A topic-wide stream's event id: the next offset of every partition, in partition order
/// (`"12,0,7"`).
fn topic_event_id(positions: &[(i32, i64)]) -> String {
    let mut id = String::with_capacity(positions.len() * 4);
    for (k, (_, next)) in positions.iter().enumerate() {
        if k > 0 {
            id.push(',');
        }
        id.push_str(&next.to_string());
    }
    id
}

/// Parses a topic-wide event id of a topic of `partitions` partitions: the next offset of
/// each (partitions it does not list, added since, start at their log start: `None`).
fn parse_topic_event_id(id: &str, partitions: usize) -> Option<Vec<Option<i64>>> {
    let listed: Vec<i64> = id
        .split(',')
        .map(|o| o.trim().parse::<i64>().ok().filter(|o| *o >= 0))
        .collect::<Option<_>>()?;
    (listed.len() <= partitions).then(|| (0..partitions).map(|p| listed.get(p).copied()).collect())
}

/// Where a topic-wide stream starts: every partition at the position the event id names
/// (`Last-Event-ID`, or `?last_event_id=` for a WebSocket), else at `?offset=earliest|latest`
/// (default latest); or the error answer. Every partition must be led here, at most
/// [`TOPIC_STREAM_PARTITIONS_MAX`] of them.
async fn topic_start(
    shard: &Rc<Shard>,
    head: &Head,
    cluster: &str,
    topic: &str,
    committed: bool,
) -> Result<Vec<(i32, i64)>, super::produce::HttpError> {
    let metadata = shard.metadata();
    if cluster != metadata.cluster_id {
        return Err((404, 404, format!("Cluster {cluster} cannot be found.")));
    }
    let Some(meta) = metadata.topics.get(topic) else {
        return Err((404, 40403, format!("Topic {topic} cannot be found.")));
    };
    let count = usize::try_from(meta.partitions).unwrap_or(0);
    if count > TOPIC_STREAM_PARTITIONS_MAX {
        let message = format!(
            "a topic-wide stream serves at most {TOPIC_STREAM_PARTITIONS_MAX} partitions; stream the partitions one by one"
        );
        return Err((422, 422, message));
    }
    let resume = match last_event_id(head) {
        Some(id) => Some(
            parse_topic_event_id(&id, count)
                .ok_or_else(|| (400, 400, format!("bad Last-Event-ID {id:?}")))?,
        ),
        None => None,
    };
    let latest = match head.param("offset").unwrap_or("latest") {
        "latest" => true,
        "earliest" => false,
        other => {
            let message =
                format!("bad offset {other:?} (a topic-wide stream takes earliest or latest)");
            return Err((400, 400, message));
        }
    };
    let mut positions = Vec::with_capacity(count);
    for p in 0..count as i32 {
        let (start, end, lso) = bounds(shard, &metadata, topic, p).await?;
        let at = match resume.as_ref().map(|r| r[p as usize]) {
            Some(Some(next)) if (start..=end).contains(&next) => next,
            Some(Some(next)) => {
                let message =
                    format!("offset {next} of partition {p} is out of range [{start}, {end}]");
                return Err((416, 416, message));
            }
            Some(None) => start,
            None if latest && committed => lso,
            None if latest => end,
            None => start,
        };
        positions.push((p, at));
    }
    Ok(positions)
}

/// Resolves when the client closes its side (or the connection fails). A stream client has
/// nothing to send: whatever it does send is read into a small buffer and dropped.
async fn client_closed(stream: &mut TcpStream) {
    let mut sink = [0u8; 512];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            return;
        }
    }
}

/// Writes `bytes`, failing if the client takes none of them for [`STREAM_WRITE_STALL_MAX`].
pub(super) async fn write_within(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let wrote = futures_lite::future::or(async { Some(stream.write(rest).await) }, async {
            crate::rt::sleep(STREAM_WRITE_STALL_MAX).await;
            None
        })
        .await;
        match wrote {
            None => return Err(std::io::Error::other("the client stopped reading")),
            Some(Ok(0)) => return Err(std::io::Error::other("the client closed")),
            Some(Ok(n)) => rest = &rest[n..],
            Some(Err(e)) => return Err(e),
        }
    }
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_event_ids_list_every_partitions_next_offset() {
        assert_eq!(topic_event_id(&[(0, 12), (1, 0), (2, 7)]), "12,0,7");
        assert_eq!(
            parse_topic_event_id("12,0,7", 3),
            Some(vec![Some(12), Some(0), Some(7)])
        );
        // Partitions added since the id was given start at their log start.
        assert_eq!(parse_topic_event_id("12", 2), Some(vec![Some(12), None]));
        assert_eq!(parse_topic_event_id("1,2,3", 2), None);
        assert_eq!(parse_topic_event_id("1,-2", 2), None);
        assert_eq!(parse_topic_event_id("0:5", 2), None);
        assert_eq!(parse_topic_event_id("", 2), None);
    }

    #[test]
    fn batches_render_as_events_from_the_asked_offset() {
        let records: Vec<freshet_protocol::batch::NewRecord> = vec![
            (None, Some(Bytes::from_static(b"a")), 1),
            (
                Some(Bytes::from_static(&[0xff])),
                Some(Bytes::from_static(b"b")),
                2,
            ),
        ];
        let mut b = freshet_protocol::batch::encode_batch(
            &records,
            freshet_protocol::batch::Compression::None,
        )
        .unwrap()
        .to_vec();
        freshet_protocol::batch::set_base_offset(&mut b, 10);
        let mut out = Vec::new();
        let next = render_batch(Bytes::from(b), "t", 0, 11, &mut out);
        assert_eq!(next, 12);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("id: 0:11\ndata: {"), "{text}");
        assert!(
            text.contains(r#""key":{"data":"/w==","type":"BINARY"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""value":{"data":"b","type":"STRING"}"#),
            "{text}"
        );
        assert_eq!(text.matches("id: ").count(), 1);
        // Garbage is skipped, not a panic.
        assert_eq!(
            render_batch(Bytes::from_static(b"xx"), "t", 0, 5, &mut Vec::new()),
            5
        );
    }
}
