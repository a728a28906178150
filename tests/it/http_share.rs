//! Push streams as members of a share group (issue 17): two SSE streams of one share group
//! on one partition each get records under the stream's bound; records accepted with a POST
//! never come back, released ones do (delivery count 2), and a closed stream's acquired
//! records go to the other member. A WebSocket member acknowledges with text messages; bad
//! acknowledgements get Kafka's codes and 400s.

use crate::http_console::{create_topics, produce, producer, start, Http};

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

const EXTRA: &str = "share_auto_offset_reset = \"earliest\"\n";

/// An SSE client of a share stream.
struct Member {
    reader: BufReader<TcpStream>,
    id: String,
}

impl Member {
    fn open(h: &Http, topic: &str, query: &str) -> Member {
        let s = TcpStream::connect(&h.http).expect("connect http");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut w = s.try_clone().unwrap();
        write!(
            w,
            "GET /v3/clusters/{}/topics/{topic}/records/stream{query} HTTP/1.1\r\nHost: x\r\n\r\n",
            h.cluster
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut m = Member {
            reader,
            id: String::new(),
        };
        let (event, first) = m.event().expect("the member event");
        assert_eq!(event, "member", "{first}");
        m.id = first["member_id"].as_str().expect("member id").to_string();
        m
    }

    /// The next event: (event name, data); `None` if none comes within the read timeout
    /// (keepalive comments do not count).
    fn event(&mut self) -> Option<(String, Value)> {
        let (mut name, mut data) = ("message".to_string(), String::new());
        let timeout = self.reader.get_ref().read_timeout().unwrap().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() >= deadline {
                return None;
            }
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => panic!("the stream ended"),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return None,
                Err(e) => panic!("read: {e}"),
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if !data.is_empty() {
                    return Some((name, serde_json::from_str(&data).expect("event JSON")));
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = v.to_string();
            }
        }
    }

    /// The next `n` records: (offset, value, delivery count).
    fn records(&mut self, n: usize) -> Vec<(i64, String, i64)> {
        (0..n)
            .map(|_| {
                let (name, r) = self.event().expect("a record within the timeout");
                assert_eq!(name, "message", "{r}");
                (
                    r["offset"].as_i64().unwrap(),
                    r["value"]["data"].as_str().unwrap().to_string(),
                    r["delivery_count"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    /// Asserts no record arrives for `wait`.
    fn quiet(&mut self, wait: Duration) {
        self.reader.get_ref().set_read_timeout(Some(wait)).unwrap();
        if let Some(e) = self.event() {
            panic!("unexpected event {e:?}");
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
    }
}

/// POSTs acknowledgements: (status, body).
fn ack(h: &Http, group: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut s = TcpStream::connect(&h.http).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v3/clusters/{}/share-groups/{group}/acknowledgements HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        h.cluster,
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).expect("answer JSON"))
}

/// Acknowledges `offsets` of partition 0 with `kind` for `member`; asserts they all succeed.
fn ack_all(h: &Http, member: &Member, offsets: &[i64], kind: &str) {
    let acks: Vec<Value> = offsets
        .iter()
        .map(|o| serde_json::json!({"topic_name": "sh", "partition_id": 0, "offset": o, "type": kind}))
        .collect();
    let (status, body) = ack(
        h,
        "g",
        &serde_json::json!({"member_id": member.id, "acknowledgements": acks}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["error_code"], 0, "{body}");
}

/// The member ids ShareGroupDescribe lists for `group`.
fn described_members(h: &Http, group: &str) -> BTreeSet<String> {
    use kafka_protocol::messages::{GroupId, ShareGroupDescribeRequest};
    let mut conn = crate::common::RawConn::connect(h.broker.socket_addr()).expect("connect");
    let described = conn
        .request(
            1,
            &ShareGroupDescribeRequest::default()
                .with_group_ids(vec![GroupId(group.to_string().into())]),
        )
        .expect("ShareGroupDescribe");
    described.groups[0]
        .members
        .iter()
        .map(|m| m.member_id.to_string())
        .collect()
}

fn offsets(records: &[(i64, String, i64)]) -> Vec<i64> {
    records.iter().map(|r| r.0).collect()
}

#[test]
fn share_streams_split_records_accepted_never_return_released_and_closed_ones_do() {
    let h = start(1, EXTRA);
    create_topics(&h.broker, &["sh".to_string()], 1);
    let query = "?share_group=g&max_records=10";
    let mut a = Member::open(&h, "sh", query);
    let mut b = Member::open(&h, "sh", query);
    assert_ne!(a.id, b.id);
    // Members of the group as Kafka share consumers are.
    assert_eq!(
        described_members(&h, "g"),
        [a.id.clone(), b.id.clone()].into_iter().collect()
    );
    let values: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
    produce(&producer(&h.broker), "sh", 0, &values);

    // Each member gets records, never more than its bound, never the other's.
    let a1 = a.records(10);
    let b1 = b.records(10);
    a.quiet(Duration::from_millis(800));
    b.quiet(Duration::from_millis(200));
    for (o, v, count) in a1.iter().chain(&b1) {
        assert_eq!((v.as_str(), *count), (format!("v{o}").as_str(), 1));
    }
    let seen: BTreeSet<i64> = offsets(&a1).into_iter().chain(offsets(&b1)).collect();
    assert_eq!(seen.len(), 20, "{a1:?} {b1:?}");

    // Accepted: A gets new records in their place.
    ack_all(&h, &a, &offsets(&a1), "ACCEPT");
    let a2 = a.records(10);
    assert!(
        a2.iter().all(|r| r.2 == 1 && !seen.contains(&r.0)),
        "{a2:?}"
    );
    // Released: they come back (A is full, so to B) with delivery count 2.
    ack_all(&h, &b, &offsets(&b1), "RELEASE");
    let b2 = b.records(10);
    assert_eq!(offsets(&b2), offsets(&b1));
    assert!(b2.iter().all(|r| r.2 == 2), "{b2:?}");
    ack_all(&h, &b, &offsets(&b2), "ACCEPT");
    let b3 = b.records(10);
    assert!(b3.iter().all(|r| r.2 == 1), "{b3:?}");

    // A closes holding a2: it leaves the group, and its records go to B (after B accepts
    // b3) with delivery count 2.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    while described_members(&h, "g").len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the closed stream's member stayed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ack_all(&h, &b, &offsets(&b3), "ACCEPT");
    let b4 = b.records(10);
    assert_eq!(offsets(&b4), offsets(&a2));
    assert!(b4.iter().all(|r| r.2 == 2), "{b4:?}");
    ack_all(&h, &b, &offsets(&b4), "ACCEPT");

    // Everything was accepted once; nothing comes again.
    let all: BTreeSet<i64> = [&a1, &b2, &b3, &b4]
        .iter()
        .flat_map(|r| offsets(r))
        .collect();
    assert_eq!(all, (0..40).collect());
    b.quiet(Duration::from_millis(1500));

    // An accepted record cannot be acknowledged again: INVALID_RECORD_STATE (121).
    let (status, body) = ack(
        &h,
        "g",
        &serde_json::json!({"member_id": b.id, "acknowledgements": [
            {"topic_name": "sh", "partition_id": 0, "offset": a1[0].0, "type": "ACCEPT"}]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["error_code"], 121, "{body}");
    // Malformed bodies and unknown topics are refused whole.
    let (status, _) = ack(&h, "g", &serde_json::json!({"acknowledgements": []}));
    assert_eq!(status, 400);
    let (status, _) = ack(
        &h,
        "g",
        &serde_json::json!({"member_id": b.id, "acknowledgements": [
            {"topic_name": "nope", "partition_id": 0, "offset": 0, "type": "ACCEPT"}]}),
    );
    assert_eq!(status, 404);
    let (status, _) = ack(
        &h,
        "g",
        &serde_json::json!({"member_id": b.id, "acknowledgements": [
            {"topic_name": "sh", "partition_id": 0, "offset": 0, "type": "MAYBE"}]}),
    );
    assert_eq!(status, 400);
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [9u8, 8, 7, 6];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The next text frame's JSON from a server (pings skipped), within 20 s.
fn text_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> Value {
    let mut chunk = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no text frame within 20 s");
        while buf.len() >= 2 {
            let (len, at) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                126 => break,
                127 => panic!("no frame that large here"),
                n => (n as usize, 2),
            };
            if buf.len() < at + len {
                break;
            }
            let opcode = buf[0] & 0x0f;
            let payload = buf[at..at + len].to_vec();
            buf.drain(..at + len);
            match opcode {
                0x1 => return serde_json::from_slice(&payload).expect("frame JSON"),
                0x9 => continue,
                op => panic!("opcode {op}: {:?}", String::from_utf8_lossy(&payload)),
            }
        }
        let n = s.read(&mut chunk).expect("read frame");
        assert!(n > 0, "the stream ended");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn a_websocket_member_acknowledges_with_messages() {
    let h = start(2, EXTRA);
    create_topics(&h.broker, &["ws".to_string()], 2);
    let values: Vec<String> = (0..6).map(|i| format!("w{i}")).collect();
    let p = producer(&h.broker);
    produce(&p, "ws", 0, &values);
    produce(&p, "ws", 1, &values);
    let mut s = TcpStream::connect(&h.http).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /v3/clusters/{}/topics/ws/records/stream?share_group=wg&max_records=12 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        h.cluster
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(buf.starts_with(b"HTTP/1.1 101 "));
    buf.drain(..end);
    let member = text_frame(&mut s, &mut buf);
    assert_eq!(member["share_group"], "wg");
    // The only member: both partitions are assigned to it, on two shards.
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 12 && Instant::now() < deadline {
        let r = text_frame(&mut s, &mut buf);
        assert_eq!(r["delivery_count"], 1, "{r}");
        got.insert((
            r["partition"].as_i64().unwrap(),
            r["offset"].as_i64().unwrap(),
        ));
    }
    assert_eq!(got.len(), 12);
    // Accept partition 0's, release partition 1's as one range each.
    let acks = serde_json::json!({"acknowledgements": [
        {"topic_name": "ws", "partition_id": 0, "first_offset": 0, "last_offset": 5, "type": "ACCEPT"},
        {"topic_name": "ws", "partition_id": 1, "first_offset": 0, "last_offset": 5, "type": "RELEASE"}]});
    s.write_all(&client_frame(0x1, acks.to_string().as_bytes()))
        .unwrap();
    let mut answer = text_frame(&mut s, &mut buf);
    let mut again = Vec::new();
    while answer.get("results").is_none() {
        // Released records may come back before the answer frame.
        again.push(answer);
        answer = text_frame(&mut s, &mut buf);
    }
    let codes: Vec<&Value> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["error_code"])
        .collect();
    assert_eq!(codes, [0, 0], "{answer}");
    while again.len() < 6 {
        again.push(text_frame(&mut s, &mut buf));
    }
    for r in &again {
        assert_eq!(
            (r["partition"].as_i64(), r["delivery_count"].as_i64()),
            (Some(1), Some(2)),
            "{r}"
        );
    }
    // A bad message is answered, the stream goes on.
    s.write_all(&client_frame(0x1, b"{not json")).unwrap();
    let answer = text_frame(&mut s, &mut buf);
    assert_eq!(answer["error_code"], 400, "{answer}");
}

/// Share streams whose clients stop reading hold their acquired records' locks and one read,
/// never the backlog: eight stalled SSE members (of eight groups, so each acquires on its
/// own) while 64 MiB are produced grow the RSS as the plain streams' test does, not by the
/// 8 x 32 MiB (500 records of 64 KiB each) they would hold if they buffered what they
/// acquired. A stalled member then reads its records in order: held back, not dropped.
#[test]
fn share_streams_whose_clients_stop_reading_leave_the_broker_rss_bounded() {
    crate::common::within(Duration::from_secs(240), || {
        let h = start(1, &format!("{EXTRA}tail_cache_bytes_per_shard = 4194304\n"));
        create_topics(&h.broker, &["slowsh".to_string()], 1);
        let mut members: Vec<Member> = (0..8)
            .map(|g| Member::open(&h, "slowsh", &format!("?share_group=slow{g}")))
            .collect();
        let p = producer(&h.broker);
        let value = vec![b'v'; 64 * 1024];
        let send = |n: usize, p: &rdkafka::producer::BaseProducer| {
            use rdkafka::producer::{BaseRecord, Producer};
            for _ in 0..n {
                let mut record = Some(BaseRecord::<str, [u8]>::to("slowsh").payload(&value));
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
        send(1024, &p);
        std::thread::sleep(Duration::from_secs(1));
        let grew = h.broker.rss_bytes().saturating_sub(before);
        eprintln!("RSS grew {grew} bytes with 8 stalled share streams");
        assert!(
            grew < 192 * 1024 * 1024,
            "RSS grew {grew} bytes while 8 share clients did not read"
        );
        let first = &mut members[0];
        let got = first.records(100);
        for (k, (offset, _, count)) in got.iter().enumerate() {
            assert_eq!((*offset, *count), (k as i64, 1));
        }
    });
}
