//! `POST /v3/clusters/{cluster_id}/topics/{topic}/records`: produce one record, Confluent REST
//! Proxy v3 shape.
//!
//! The body is `{"partition_id":..,"headers":[{"name":..,"value":<base64>}],"key":{"type":..,
//! "data":..},"value":{..}}`; `type` is `BINARY` (base64 data), `STRING` or `JSON` (the data's
//! JSON text is the bytes). No `partition_id`: Kafka's default partitioner (murmur2 of the
//! key), or round robin for a record without a key. The record becomes one uncompressed
//! magic-v2 batch appended on the owner shard as a Produce with acks=all is
//! (`Shard::enough_replicas`, [`crate::shard::Partition::append`], `Shard::await_replicated`):
//! the 200 is sent only once the record is durable on every in-sync replica. The answer is the REST proxy's: `cluster_id, topic_name, partition_id,
//! offset, timestamp, key/value type and size`.
//!
//! Several records in one body (concatenated JSON, the REST proxy's streaming format) are
//! produced in turn and answered with one delivery report per record ([`handle_batch`]).

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde_json::Value;

use super::wire::{base64_decode, error_body, rfc3339_ms};
use crate::shard::{routing, Shard};
use freshet_protocol::murmur2::murmur2;

/// A record ready to append: partition (if chosen), key, value, headers, and the type names
/// and sizes the answer reports.
#[derive(Debug, PartialEq)]
pub struct NewRecord {
    pub partition: Option<i32>,
    pub key: Option<(String, Bytes)>,
    pub value: Option<(String, Bytes)>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// An HTTP error: status, REST proxy error code, message.
pub type HttpError = (u16, u32, String);

fn bad(message: impl Into<String>) -> HttpError {
    (400, 400, message.into())
}

/// Reads the request body (see the module docs).
pub fn parse_body(body: &[u8]) -> Result<NewRecord, HttpError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("bad JSON body: {e}")))?;
    parse_record(&v)
}

/// Reads one record's JSON object.
fn parse_record(v: &Value) -> Result<NewRecord, HttpError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("the body must be a JSON object"))?;
    let partition = match obj.get("partition_id") {
        None | Some(Value::Null) => None,
        Some(p) => Some(
            p.as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| bad("partition_id must be an integer"))?,
        ),
    };
    let mut headers = Vec::new();
    if let Some(list) = obj.get("headers").filter(|h| !h.is_null()) {
        for h in list
            .as_array()
            .ok_or_else(|| bad("headers must be an array"))?
        {
            let name = h
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a header needs a string name"))?;
            let value = match h.get("value") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(Bytes::from(
                    base64_decode(s).ok_or_else(|| bad("a header value must be base64"))?,
                )),
                Some(_) => return Err(bad("a header value must be base64")),
            };
            headers.push((name.to_string(), value));
        }
    }
    Ok(NewRecord {
        partition,
        key: data(obj.get("key"), "key")?,
        value: data(obj.get("value"), "value")?,
        headers,
    })
}

/// One of `key`/`value`: its type and bytes, or `None` (null).
fn data(v: Option<&Value>, what: &str) -> Result<Option<(String, Bytes)>, HttpError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("JSON")
        .to_ascii_uppercase();
    let data = match v.get("data") {
        None | Some(Value::Null) => return Ok(None),
        Some(d) => d,
    };
    let bytes = match (kind.as_str(), data) {
        ("BINARY", Value::String(s)) => {
            base64_decode(s).ok_or_else(|| bad(format!("{what}.data is not base64")))?
        }
        ("STRING", Value::String(s)) => s.as_bytes().to_vec(),
        ("JSON", d) => d.to_string().into_bytes(),
        ("BINARY" | "STRING", _) => return Err(bad(format!("{what}.data must be a string"))),
        (other, _) => {
            return Err((
                422,
                42207,
                format!("{what}.type {other} is not supported (BINARY, STRING or JSON)"),
            ))
        }
    };
    Ok(Some((kind, Bytes::from(bytes))))
}

/// Encodes the record as one magic-v2 batch stamped `timestamp_ms`.
pub fn encode(record: &NewRecord, timestamp_ms: i64) -> Result<Bytes, String> {
    let headers: IndexMap<StrBytes, Option<Bytes>> = record
        .headers
        .iter()
        .map(|(n, v)| (StrBytes::from_string(n.clone()), v.clone()))
        .collect();
    let r = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: timestamp_ms,
        key: record.key.as_ref().map(|(_, b)| b.clone()),
        value: record.value.as_ref().map(|(_, b)| b.clone()),
        headers,
    };
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, std::iter::once(&r), &options)
        .map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

thread_local! {
    /// Round robin for records without a key or partition.
    static NEXT_PARTITION: Cell<u32> = const { Cell::new(0) };
}

/// Checks the cluster id and topic, picks the partition: `(partition)` or the error answer.
pub fn place(
    shard: &Shard,
    cluster: &str,
    topic: &str,
    record: &NewRecord,
) -> Result<i32, HttpError> {
    let metadata = shard.metadata();
    if cluster != metadata.cluster_id {
        return Err((404, 404, format!("Cluster {cluster} cannot be found.")));
    }
    let Some(meta) = metadata.topics.get(topic).filter(|m| !m.internal) else {
        return Err((404, 40403, format!("Topic {topic} cannot be found.")));
    };
    let partitions = meta.partitions.max(1);
    let partition = match (record.partition, &record.key) {
        (Some(p), _) => p,
        (None, Some((_, key))) => (murmur2(key) & 0x7fff_ffff) % partitions,
        (None, None) => NEXT_PARTITION.with(|n| {
            let v = n.get();
            n.set(v.wrapping_add(1));
            (v % partitions as u32) as i32
        }),
    };
    match routing::route(&metadata, shard.config.node_id, topic, partition) {
        routing::Route::Unknown => Err((
            404,
            40402,
            format!("Partition {partition} of topic {topic} cannot be found."),
        )),
        r => match r.error() {
            Some(e) => Err((421, 421, format!("this broker cannot take it: {e:?}"))),
            None => Ok(partition),
        },
    }
}

/// Produces `body` to `topic`; the status and JSON body to answer with. A body of several
/// records (concatenated JSON) is answered as [`handle_batch`] says.
pub async fn handle(shard: &Rc<Shard>, cluster: &str, topic: &str, body: &[u8]) -> (u16, String) {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let several = values.next().is_some_and(|first| first.is_ok()) && values.next().is_some();
    if several {
        let count = serde_json::Deserializer::from_slice(body)
            .into_iter::<serde::de::IgnoredAny>()
            .take(PRODUCE_RECORDS_PER_REQUEST_MAX + 1)
            .count();
        if count > PRODUCE_RECORDS_PER_REQUEST_MAX {
            let message = format!(
                "more than {PRODUCE_RECORDS_PER_REQUEST_MAX} records in one request; none was produced"
            );
            return (413, error_body(413, &message));
        }
        return (200, handle_batch(shard, cluster, topic, body).await);
    }
    match parse_body(body) {
        Ok(record) => match produce(shard, cluster, topic, record).await {
            Ok(answer) => (200, answer),
            Err((status, code, message)) => (status, error_body(code, &message)),
        },
        Err((status, code, message)) => (status, error_body(code, &message)),
    }
}

/// Records in one request body at most (a body with more is refused whole, 413).
pub const PRODUCE_RECORDS_PER_REQUEST_MAX: usize = 1000;

/// Several records in one body, as the REST proxy's streaming mode sends them (concatenated
/// JSON objects; here in one body with its Content-Length, not chunked): each is produced in
/// turn, as a single record is, and answered by its own delivery report, in the same order,
/// one JSON object per line, each with its own `error_code` (200 when produced). Past a body
/// that is not JSON the rest cannot be read: its report is the last. At most
/// [`PRODUCE_RECORDS_PER_REQUEST_MAX`] records ([`handle`] refuses a body with more, 413,
/// before producing any). One record is parsed at a time, so the request holds its body, one record and the reports
/// (about 200 bytes each).
pub async fn handle_batch(shard: &Rc<Shard>, cluster: &str, topic: &str, body: &[u8]) -> String {
    let mut out = String::new();
    let values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    for v in values.take(PRODUCE_RECORDS_PER_REQUEST_MAX) {
        let answer = match v {
            Err(e) => Err(bad(format!("bad JSON body: {e}"))),
            Ok(v) => match parse_record(&v) {
                Ok(record) => produce(shard, cluster, topic, record).await,
                Err(e) => Err(e),
            },
        };
        let stop = matches!(answer, Err((_, _, ref m)) if m.starts_with("bad JSON body"));
        match answer {
            Ok(report) => out.push_str(&report),
            Err((_, code, message)) => out.push_str(&error_body(code, &message)),
        }
        out.push('\n');
        if stop {
            break;
        }
    }
    out
}

async fn produce(
    shard: &Rc<Shard>,
    cluster: &str,
    topic: &str,
    record: NewRecord,
) -> Result<String, HttpError> {
    let partition = place(shard, cluster, topic, &record)?;
    let timestamp = crate::shard::now_ms();
    let batch = encode(&record, timestamp).map_err(|e| (500, 500, e))?;
    let owner = shard.owner(topic, partition);
    let name = topic.to_string();
    let appended = shard
        .invoke_on(owner, move |owner| async move {
            match owner.partition(&name, partition) {
                None => Err((
                    404,
                    40402,
                    format!("Partition {partition} of topic {name} is not here."),
                )),
                Some(p) => append_replicated(&owner, &p, batch).await,
            }
        })
        .await
        .map_err(|_| (503, 503, "the partition's shard is stopping".to_string()))??;
    let size = |d: &Option<(String, Bytes)>| {
        d.as_ref().map_or(
            Value::Null,
            |(t, b)| serde_json::json!({ "type": t, "size": b.len() }),
        )
    };
    let ts = if appended.log_append_time_ms >= 0 {
        appended.log_append_time_ms
    } else {
        timestamp
    };
    Ok(serde_json::json!({
        "error_code": 200,
        "cluster_id": cluster,
        "topic_name": topic,
        "partition_id": partition,
        "offset": appended.base_offset,
        "timestamp": rfc3339_ms(ts),
        "key": size(&record.key),
        "value": size(&record.value),
    })
    .to_string())
}

/// acks=all on the owner, as Produce does it: refused below `min.insync.replicas`, appended
/// durably, answered once the high watermark passes it (every in-sync replica has it), within
/// [`PRODUCE_REPLICATION_TIMEOUT`] (the append itself stays, as Produce's does).
async fn append_replicated(
    owner: &Rc<Shard>,
    p: &Rc<crate::shard::Partition>,
    batch: Bytes,
) -> Result<crate::storage::AppendInfo, HttpError> {
    let refused = |code: kafka_protocol::error::ResponseError, message: String| {
        (append_status(code), u32::from(append_status(code)), message)
    };
    owner
        .enough_replicas(p)
        .map_err(|code| refused(code, format!("{code:?}")))?;
    let info = p.append(batch).await.map_err(|e| {
        let code = crate::error::storage_code(&e);
        refused(code, format!("{code:?}: {e}"))
    })?;
    match crate::rt::timeout(
        PRODUCE_REPLICATION_TIMEOUT,
        owner.await_replicated(p, info.last_offset),
    )
    .await
    {
        Some(Ok(())) => Ok(info),
        Some(Err(code)) => Err(refused(code, format!("{code:?}"))),
        None => Err((
            408,
            408,
            "the record is durable here but was not replicated in time".to_string(),
        )),
    }
}

/// How long a produce waits for its record to reach every in-sync replica.
pub const PRODUCE_REPLICATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The HTTP status of a refused append: the client's fault (too large: 413; invalid: 422;
/// a compacted topic needs a key), or the broker's (500), or not here (421).
fn append_status(code: kafka_protocol::error::ResponseError) -> u16 {
    use kafka_protocol::error::ResponseError as E;
    match code {
        E::MessageTooLarge | E::RecordListTooLarge => 413,
        E::InvalidRecord | E::CorruptMessage | E::InvalidTimestamp => 422,
        E::NotLeaderOrFollower | E::UnknownTopicOrPartition => 421,
        E::NotEnoughReplicas | E::NotEnoughReplicasAfterAppend => 503,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_every_type_and_refuse_garbage() {
        let r = parse_body(
            br#"{"partition_id":1,"headers":[{"name":"h","value":"AQI="}],"key":{"type":"BINARY","data":"AAE="},"value":{"type":"JSON","data":{"a":[1,2]}}}"#,
        )
        .unwrap();
        assert_eq!(r.partition, Some(1));
        assert_eq!(r.key, Some(("BINARY".into(), Bytes::from_static(&[0, 1]))));
        assert_eq!(
            r.value,
            Some(("JSON".into(), Bytes::from_static(br#"{"a":[1,2]}"#)))
        );
        assert_eq!(
            r.headers,
            vec![("h".to_string(), Some(Bytes::from_static(&[1, 2])))]
        );
        let r = parse_body(br#"{"value":{"type":"STRING","data":"hi"}}"#).unwrap();
        assert_eq!((r.partition, r.key), (None, None));
        assert_eq!(r.value, Some(("STRING".into(), Bytes::from_static(b"hi"))));
        for bad in [
            &b"not json"[..],
            b"[1]",
            br#"{"partition_id":"x"}"#,
            br#"{"key":{"type":"BINARY","data":"!!"}}"#,
            br#"{"key":{"type":"STRING","data":5}}"#,
            br#"{"headers":[{"value":"AA=="}]}"#,
        ] {
            assert_eq!(parse_body(bad).unwrap_err().0, 400, "{bad:?}");
        }
        assert_eq!(
            parse_body(br#"{"value":{"type":"AVRO","data":1}}"#)
                .unwrap_err()
                .0,
            422
        );
    }

    #[test]
    fn records_encode_as_a_valid_batch() {
        let r = parse_body(br#"{"key":{"type":"STRING","data":"k"},"value":{"data":7}}"#).unwrap();
        let b = encode(&r, 1234).unwrap();
        let h = freshet_protocol::batch::validate(&b).unwrap();
        assert_eq!((h.records_count(), h.max_timestamp()), (1, 1234));
    }
}
