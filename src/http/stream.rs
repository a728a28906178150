//! `GET /v3/clusters/{cluster_id}/topics/{topic}/partitions/{p}/records/stream`: a partition's
//! records pushed as Server-Sent Events, or over a WebSocket when the request asks to upgrade
//! ([`super::websocket`]: the same JSON records, one per text frame; pings for keepalives; the
//! resume position `?last_event_id=p:o` or `?offset=N` in the query).
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
use crate::rt::net::TcpStream;
use crate::shard::{routing, Shard};
use crate::storage::StorageError;

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
    /// Appends one record.
    fn record(&self, r: &Record, topic: &str, partition: i32, out: &mut Vec<u8>) {
        match self {
            Framing::Sse => render_record(r, topic, partition, out),
            Framing::WebSocket(_) => {
                let json =
                    serde_json::to_vec(&record_json(r, topic, partition)).unwrap_or_default();
                websocket::encode_frame(websocket::OP_TEXT, &json, out);
            }
        }
    }

    /// What keeps an idle stream alive (and notices a closed client).
    fn keepalive(&self) -> Vec<u8> {
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
    fn error(&self, message: &str) -> Vec<u8> {
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
    async fn client_input(&mut self, stream: &mut TcpStream) -> Option<Reply> {
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

/// Serves one stream request on `stream` until the client goes, the partition goes, or the
/// shard stops.
pub async fn serve(
    shard: &Rc<Shard>,
    stream: &mut TcpStream,
    head: &Head,
    cluster: &str,
    topic: &str,
    partition: i32,
    mut framing: Framing,
) -> std::io::Result<()> {
    let opening = match &framing {
        Framing::Sse => b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\nretry: 1000\n\n".to_vec(),
        Framing::WebSocket(_) => match websocket::handshake(head) {
            Ok(answer) => answer,
            Err((status, message)) => {
                let mut answer = json_response(status, &error_body(u32::from(status), &message));
                if status == 426 {
                    // RFC 6455 4.4: name the version this server speaks.
                    let line_end = answer.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
                    answer.splice(line_end..line_end, *b"Sec-WebSocket-Version: 13\r\n");
                }
                return write_within(stream, &answer).await;
            }
        },
    };
    let start = match start_offset(shard, head, cluster, topic, partition).await {
        Ok(start) => start,
        Err((status, code, message)) => {
            let body = error_body(code, &message);
            return write_within(stream, &json_response(status, &body)).await;
        }
    };
    let owner = shard.owner(topic, partition);
    write_within(stream, &opening).await?;
    let mut next = start;
    while !shard.stopping.get() {
        let name = topic.to_string();
        let read = shard
            .invoke_on(owner, move |o| async move {
                let Some(p) = o.partition(&name, partition) else {
                    return Err(ReadError::Gone);
                };
                match p.log.read(next, STREAM_READ_BYTES_MAX, true).await {
                    Ok(data) => Ok(data.batches),
                    Err(StorageError::OffsetOutOfRange { .. }) => Err(ReadError::OutOfRange),
                    Err(e) => Err(ReadError::Other(e.to_string())),
                }
            })
            .await
            .unwrap_or(Err(ReadError::Gone));
        let batches = match read {
            Ok(b) => b,
            Err(e) => {
                let message = match e {
                    ReadError::Gone => "the partition is no longer here".to_string(),
                    ReadError::OutOfRange => {
                        format!("offset {next} is out of range (deleted by retention?)")
                    }
                    ReadError::Other(m) => m,
                };
                return write_within(stream, &framing.error(&message)).await;
            }
        };
        if batches.is_empty() {
            let waited = futures_lite::future::or(
                async { Woke::Data(wait_for_data(shard, owner, topic, partition, next).await) },
                async { Woke::Client(framing.client_input(stream).await) },
            )
            .await;
            match waited {
                Woke::Client(None) => return Ok(()),
                Woke::Client(Some(Reply::Close(close))) => {
                    return write_within(stream, &close).await
                }
                Woke::Client(Some(Reply::Send(pongs))) => write_within(stream, &pongs).await?,
                Woke::Data(false) => write_within(stream, &framing.keepalive()).await?,
                Woke::Data(true) => {}
            }
            continue;
        }
        // Rendered and written a piece at a time: the connection holds the read batches, at
        // most STREAM_WRITE_CHUNK_BYTES of events (or one larger event) and nothing else.
        let mut out = Vec::with_capacity(STREAM_WRITE_CHUNK_BYTES);
        let before = next;
        for batch in batches {
            let (records, after) = decode_batch(batch, topic, partition);
            for r in records.iter().filter(|r| !r.control && r.offset >= next) {
                framing.record(r, topic, partition, &mut out);
                if out.len() >= STREAM_WRITE_CHUNK_BYTES {
                    write_within(stream, &out).await?;
                    out.clear();
                    out.shrink_to(STREAM_WRITE_CHUNK_BYTES);
                }
            }
            next = next.max(after);
        }
        if next == before {
            // A read that does not move the stream on would be read again forever.
            let message = format!("the batch at offset {next} cannot be read");
            out.extend(framing.error(&message));
            return write_within(stream, &out).await;
        }
        write_within(stream, &out).await?;
    }
    Ok(())
}

/// The records of `batch` and the offset after it (a batch that does not decode is logged
/// and skipped; one without a header gives nothing and offset 0).
fn decode_batch(batch: Bytes, topic: &str, partition: i32) -> (Vec<Record>, i64) {
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
fn record_json(r: &Record, topic: &str, partition: i32) -> Value {
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
fn render_record(r: &Record, topic: &str, partition: i32, out: &mut Vec<u8>) {
    let json = record_json(r, topic, partition);
    out.extend_from_slice(format!("id: {partition}:{}\ndata: ", r.offset).as_bytes());
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &json);
    out.extend_from_slice(b"\n\n");
}

/// Appends the events of `batch`'s records at or past `from`; the offset after the batch.
#[cfg(test)]
fn render_batch(batch: Bytes, topic: &str, partition: i32, from: i64, out: &mut Vec<u8>) -> i64 {
    let (records, after) = decode_batch(batch, topic, partition);
    for r in records.iter().filter(|r| !r.control && r.offset >= from) {
        render_record(r, topic, partition, out);
    }
    after.max(from)
}

/// Where the stream starts (see the module docs), or the error answer.
async fn start_offset(
    shard: &Rc<Shard>,
    head: &Head,
    cluster: &str,
    topic: &str,
    partition: i32,
) -> Result<i64, super::produce::HttpError> {
    let metadata = shard.metadata();
    if cluster != metadata.cluster_id {
        return Err((404, 404, format!("Cluster {cluster} cannot be found.")));
    }
    if !metadata.topics.contains_key(topic) {
        return Err((404, 40403, format!("Topic {topic} cannot be found.")));
    }
    let route = routing::route(&metadata, shard.config.node_id, topic, partition);
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
    let bounds = shard
        .invoke_on(shard.owner(topic, partition), move |o| async move {
            o.partition(&name, partition)
                .map(|p| (p.log.log_start_offset(), p.log.high_watermark()))
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| (503, 503, "the partition is not open here".to_string()))?;
    let committed = match head.param("group") {
        Some(group) => super::group::committed(shard, group, topic, partition)
            .await?
            .filter(|o| (bounds.0..=bounds.1).contains(o)),
        None => None,
    };
    // A WebSocket client cannot send headers from a browser: it names its last record in
    // the query (`:` may come escaped).
    let last_id = head
        .header("last-event-id")
        .map(str::to_string)
        .or_else(|| {
            head.param("last_event_id")
                .map(|v| v.replace("%3A", ":").replace("%3a", ":"))
        });
    let asked = match last_id.as_deref().filter(|v| !v.is_empty()) {
        Some(id) => parse_event_id(id, partition)
            .map(|o| o + 1)
            .ok_or_else(|| (400, 400, format!("bad Last-Event-ID {id:?}")))?,
        None if committed.is_some() => committed.unwrap_or_default(),
        None => match head.param("offset").unwrap_or("latest") {
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

/// Parks on the owner until the partition's high watermark passes `offset` (true), or the
/// keepalive interval passes, the partition goes or the shard stops (false).
async fn wait_for_data(
    shard: &Rc<Shard>,
    owner: usize,
    topic: &str,
    partition: i32,
    offset: i64,
) -> bool {
    let name = topic.to_string();
    shard
        .invoke_on(owner, move |o| async move {
            let Some(p) = o.partition(&name, partition) else {
                return false;
            };
            if p.log.high_watermark() > offset {
                return true;
            }
            let woken = futures_lite::future::or(
                async {
                    p.hw_changed.wait().await;
                    true
                },
                futures_lite::future::or(
                    async {
                        o.stop.wait().await;
                        false
                    },
                    async {
                        crate::rt::sleep(STREAM_KEEPALIVE).await;
                        false
                    },
                ),
            )
            .await;
            woken && p.log.high_watermark() > offset
        })
        .await
        .unwrap_or(false)
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
async fn write_within(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
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
