//! A topic's partitions merged into one push stream, and several records in one produce body
//! (issue 17): rdkafka's records of every partition arrive, each partition in order, over SSE
//! and WebSocket; a reconnect with the topic-wide `Last-Event-ID` resumes without gap or
//! duplicate; the partition cap and bad positions are refused; a body of concatenated JSON
//! records is produced in order with one delivery report each, and one over the record cap is
//! refused whole.

use crate::common;
use crate::http_console::{create_topics, produce, producer, start, Http};

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// An SSE client of a topic-wide stream: (id, record) per event.
struct Sse {
    reader: BufReader<TcpStream>,
}

impl Sse {
    fn open(h: &Http, topic: &str, query: &str, last_id: Option<&str>) -> Result<Sse, String> {
        let s = TcpStream::connect(&h.http).expect("connect http");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut w = s.try_clone().unwrap();
        let last = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        write!(
            w,
            "GET /v3/clusters/{}/topics/{topic}/records/stream{query} HTTP/1.1\r\nHost: x\r\n{last}\r\n",
            h.cluster
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        if !status.starts_with("HTTP/1.1 200") {
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            return Err(format!("{status}{rest}"));
        }
        Ok(Sse { reader })
    }

    fn next(&mut self) -> (String, Value) {
        let (mut id, mut data) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            assert!(
                self.reader.read_line(&mut line).expect("read event") > 0,
                "ended"
            );
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if !data.is_empty() {
                    return (id, serde_json::from_str(&data).expect("event JSON"));
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = v.to_string();
            }
        }
    }
}

/// POSTs a body to the produce path: (status, body).
fn post(h: &Http, topic: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(&h.http).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let text = format!(
        "POST /v3/clusters/{}/topics/{topic}/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        h.cluster,
        body.len()
    );
    s.write_all(text.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string(),
    )
}

/// Checks that `got` holds each partition's records in offset order, each once.
fn in_order_per_partition(got: &[(String, Value)]) -> BTreeSet<(i64, i64)> {
    let mut last = std::collections::BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (_, r) in got {
        let (p, o) = (
            r["partition"].as_i64().unwrap(),
            r["offset"].as_i64().unwrap(),
        );
        if let Some(prev) = last.insert(p, o) {
            assert!(o > prev, "partition {p}: offset {o} after {prev}");
        }
        assert!(seen.insert((p, o)), "({p}, {o}) twice");
        assert_eq!(r["value"]["data"], format!("p{p}-{o}"));
    }
    seen
}

#[test]
fn a_topic_stream_merges_every_partition_and_resumes_from_its_event_id() {
    common::within(Duration::from_secs(120), || {
        let h = start(2, "");
        create_topics(&h.broker, &["merged".to_string()], 3);
        let p = producer(&h.broker);
        for part in 0..3 {
            let values: Vec<String> = (0..10).map(|o| format!("p{part}-{o}")).collect();
            produce(&p, "merged", part, &values);
        }
        let mut sse = Sse::open(&h, "merged", "?offset=earliest", None).unwrap();
        let first: Vec<(String, Value)> = (0..15).map(|_| sse.next()).collect();
        drop(sse);
        let seen = in_order_per_partition(&first);
        // The id is every partition's next offset after the event.
        let (id, last) = first.last().unwrap().clone();
        let positions: Vec<i64> = id.split(',').map(|o| o.parse().unwrap()).collect();
        assert_eq!(positions.len(), 3, "{id}");
        let lp = last["partition"].as_u64().unwrap() as usize;
        assert_eq!(positions[lp], last["offset"].as_i64().unwrap() + 1);
        // Resumed: exactly the 15 not seen, each partition in order.
        let mut sse = Sse::open(&h, "merged", "", Some(&id)).unwrap();
        let rest: Vec<(String, Value)> = (0..15).map(|_| sse.next()).collect();
        let rest_seen = in_order_per_partition(&rest);
        assert!(seen.is_disjoint(&rest_seen));
        assert_eq!(seen.len() + rest_seen.len(), 30);
        // Caught up, a record on any partition wakes it.
        produce(&p, "merged", 2, &["p2-10".to_string()]);
        let (id, r) = sse.next();
        assert_eq!(
            (r["partition"].as_i64(), r["offset"].as_i64()),
            (Some(2), Some(10))
        );
        assert_eq!(id, "10,10,11");
        // The same over a WebSocket, resumed by the query.
        let mut s = TcpStream::connect(&h.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "GET /v3/clusters/{}/topics/merged/records/stream?last_event_id=9%2C10%2C11 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            h.cluster
        )
        .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") || !got.ends_with(b"}") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        assert!(text.contains(r#""offset":9,"partition":0"#), "{text}");
    });
}

#[test]
fn topic_streams_refuse_bad_positions_and_too_many_partitions() {
    common::within(Duration::from_secs(120), || {
        let h = start(1, "");
        create_topics(&h.broker, &["three".to_string()], 3);
        create_topics(&h.broker, &["wide".to_string()], 65);
        let refused = |topic: &str, query: &str, last: Option<&str>| {
            Sse::open(&h, topic, query, last).err().unwrap_or_default()
        };
        assert!(refused("wide", "", None).starts_with("HTTP/1.1 422"));
        assert!(refused("three", "?offset=5", None).starts_with("HTTP/1.1 400"));
        assert!(refused("three", "", Some("0,0,0,0")).starts_with("HTTP/1.1 400"));
        assert!(refused("three", "", Some("0:4")).starts_with("HTTP/1.1 400"));
        assert!(refused("three", "", Some("0,7,0")).starts_with("HTTP/1.1 416"));
        assert!(refused("none", "", None).starts_with("HTTP/1.1 404"));
        // A shorter id (partitions added since) starts the others at their log start.
        produce(&producer(&h.broker), "three", 2, &["p2-0".to_string()]);
        let mut sse = Sse::open(&h, "three", "", Some("0")).unwrap();
        assert_eq!(sse.next().1["value"]["data"], "p2-0");
    });
}

#[test]
fn several_records_in_one_body_get_a_delivery_report_each_in_order() {
    common::within(Duration::from_secs(120), || {
        let h = start(2, "");
        create_topics(&h.broker, &["batch".to_string()], 2);
        let body = concat!(
            r#"{"partition_id":0,"value":{"type":"STRING","data":"p0-0"}}"#,
            "\n",
            r#"{"partition_id":1,"value":{"type":"BINARY","data":"cDEtMA=="}}"#,
            r#"{"partition_id":0,"value":{"type":"AVRO","data":"x"}}"#,
            "  ",
            r#"{"partition_id":0,"value":{"type":"STRING","data":"p0-1"}}"#,
        );
        let (status, answer) = post(&h, "batch", body);
        assert_eq!(status, 200, "{answer}");
        let reports: Vec<Value> = answer
            .lines()
            .map(|l| serde_json::from_str(l).expect("report JSON"))
            .collect();
        let codes: Vec<i64> = reports
            .iter()
            .map(|r| r["error_code"].as_i64().unwrap())
            .collect();
        assert_eq!(codes, [200, 200, 42207, 200], "{answer}");
        assert_eq!(
            (
                reports[0]["partition_id"].as_i64(),
                reports[0]["offset"].as_i64()
            ),
            (Some(0), Some(0))
        );
        assert_eq!(
            (
                reports[1]["partition_id"].as_i64(),
                reports[1]["offset"].as_i64()
            ),
            (Some(1), Some(0))
        );
        assert_eq!(
            (
                reports[3]["partition_id"].as_i64(),
                reports[3]["offset"].as_i64()
            ),
            (Some(0), Some(1))
        );
        let mut sse = Sse::open(&h, "batch", "?offset=earliest", None).unwrap();
        let got: Vec<(String, Value)> = (0..3).map(|_| sse.next()).collect();
        assert_eq!(in_order_per_partition(&got).len(), 3);
        // Broken JSON mid-body: reported last; what came before it is produced.
        let (status, answer) = post(
            &h,
            "batch",
            r#"{"partition_id":1,"value":{"type":"STRING","data":"p1-1"}} {"partition_id": oops"#,
        );
        assert_eq!(status, 200, "{answer}");
        let codes: Vec<i64> = answer
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["error_code"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(codes, [200, 400], "{answer}");
        // Over the cap: refused whole, nothing produced.
        let one = r#"{"partition_id":1,"value":{"type":"STRING","data":"x"}}"#;
        let (status, answer) = post(&h, "batch", &one.repeat(1001));
        assert_eq!(status, 413, "{answer}");
        produce(&producer(&h.broker), "batch", 1, &["p1-2".to_string()]);
        let (_, next) = Sse::open(&h, "batch", "", Some("2,2")).unwrap().next();
        assert_eq!(
            next["value"]["data"], "p1-2",
            "the 413 body produced nothing"
        );
    });
}

/// Clients that stop reading a WebSocket stream or a topic-wide stream hold back their stream
/// at the socket, not in the broker: RSS stays within the bound `http_push` states for SSE.
#[test]
fn websocket_and_topic_clients_that_stop_reading_leave_the_broker_rss_bounded() {
    common::within(Duration::from_secs(240), || {
        let h = start(1, "tail_cache_bytes_per_shard = 4194304\n");
        create_topics(&h.broker, &["slow".to_string()], 2);
        // Four WebSocket streams of partition 0 that never read past the handshake, and four
        // topic-wide SSE streams that stop after their head.
        let ws: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut s = TcpStream::connect(&h.http).unwrap();
                write!(
                    s,
                    "GET /v3/clusters/{}/topics/slow/partitions/0/records/stream?offset=earliest HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                    h.cluster
                )
                .unwrap();
                s
            })
            .collect();
        let sse: Vec<Sse> = (0..4)
            .map(|_| Sse::open(&h, "slow", "?offset=earliest", None).unwrap())
            .collect();
        let p = producer(&h.broker);
        let value = vec![b'v'; 64 * 1024];
        let send = |n: usize, p: &rdkafka::producer::BaseProducer| {
            use rdkafka::producer::{BaseRecord, Producer};
            for i in 0..n {
                let record = BaseRecord::<str, [u8]>::to("slow")
                    .partition((i % 2) as i32)
                    .payload(&value);
                let mut record = Some(record);
                while let Some(r) = record.take() {
                    if let Err((_, r)) = p.send(r) {
                        p.poll(Duration::from_millis(10));
                        record = Some(r);
                    }
                }
                p.poll(Duration::ZERO);
            }
            p.flush(Duration::from_secs(60)).unwrap();
        };
        send(64, &p);
        std::thread::sleep(Duration::from_millis(500));
        let before = h.broker.rss_bytes();
        // 64 MiB more (32 MiB per partition): buffered, it would be 4 x 32 + 4 x 64 MiB.
        send(1024, &p);
        std::thread::sleep(Duration::from_secs(1));
        let grew = h.broker.rss_bytes().saturating_sub(before);
        eprintln!("RSS grew {grew} bytes with 4 stalled WebSocket and 4 topic-wide streams");
        assert!(
            grew < 192 * 1024 * 1024,
            "RSS grew {grew} bytes while 8 clients did not read"
        );
        // Held back, not dropped: a topic-wide stream resumes, each partition in order.
        let mut sse = sse;
        let mut first = sse.remove(0);
        let mut next = [0i64; 2];
        for _ in 0..100 {
            let (_, r) = first.next();
            let part = r["partition"].as_u64().unwrap() as usize;
            assert_eq!(r["offset"].as_i64().unwrap(), next[part]);
            next[part] += 1;
        }
        drop(ws);
    });
}
