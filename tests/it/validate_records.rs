//! Record-level validation against the real broker (issue 12, items 1, 3 and 15), with raw
//! protocol where the point is hostile input and librdkafka (the `rdkafka` crate) as the
//! consumer that must still read the partition afterwards:
//! - malformed records inside a batch with a valid CRC-32C are refused with CORRUPT_MESSAGE and
//!   the partition is not poisoned;
//! - keyless records to a compacted topic fail the batch with INVALID_RECORD and are listed in
//!   Produce v8+ `record_errors`, as Kafka does (librdkafka test 0011);
//! - a zstd decompression bomb (10,240 records of 1 MiB of zeros, ~0.7 MB compressed, 10 GiB
//!   decompressed) to a compacted and to a plain topic is refused with RECORD_LIST_TOO_LARGE
//!   while the broker's RSS stays within the stated bound and other clients keep working.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{within, RawConn, TestBroker};
use freshet::protocol::varint::put_varlong;
use freshet_protocol::batch::{self, encode_batch, Compression, NewRecord};
use freshet_protocol::records::{zstd_bomb_batch, MISSING_KEY};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiVersionsRequest;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;

const CORRUPT_MESSAGE: i16 = ResponseError::CorruptMessage.code();
const RECORD_LIST_TOO_LARGE: i16 = ResponseError::RecordListTooLarge.code();
const INVALID_RECORD: i16 = ResponseError::InvalidRecord.code();

/// The memory bound stated in `storage::records`: one decompression holds at most the zstd
/// window (16 MiB) plus a 64 KiB chunk; the request itself is under 1 MiB. The test allows
/// the broker's RSS to grow by at most this much while it handles a bomb (allocator slack
/// included).
const BOMB_RSS_GROWTH_BYTES_MAX: u64 = 64 << 20;
/// Past this RSS the broker is killed at once (the broker without the fix heads for 10 GiB).
const RSS_KILL_BYTES: u64 = 1 << 30;

fn create_topic(conn: &mut RawConn, name: &str, configs: &[(&str, &str)]) {
    let code = common::create_topic_raw(conn, name, 1, configs);
    assert_eq!(code, 0, "create {name}");
}

/// Produces `records` to `topic`/0 with Produce `version`; returns the partition response.
fn produce(
    conn: &mut RawConn,
    version: i16,
    topic: &str,
    records: Bytes,
) -> kafka_protocol::messages::produce_response::PartitionProduceResponse {
    common::produce_records(conn, version, topic, 0, records)
}

fn good_batch(tag: &str, n: usize) -> Bytes {
    let records: Vec<NewRecord> = (0..n)
        .map(|i| {
            (
                Some(Bytes::from(format!("{tag}-k{i}"))),
                Some(Bytes::from(format!("{tag}-v{i}"))),
                1_700_000_000_000 + i as i64,
            )
        })
        .collect();
    encode_batch(&records, Compression::None).expect("encode")
}

fn varints(values: &[i64]) -> Vec<u8> {
    let mut v = Vec::new();
    for &x in values {
        put_varlong(&mut v, x);
    }
    v
}

/// A one-record uncompressed batch whose record is `len_prefix` then `body`, with a valid
/// CRC-32C over it.
fn batch_with_record(len_prefix: &[u8], body: &[u8]) -> Bytes {
    let mut b = good_batch("x", 1).to_vec();
    b.truncate(batch::HEADER_LEN);
    b.extend_from_slice(len_prefix);
    b.extend_from_slice(body);
    let total = b.len();
    let h = batch::header_mut(&mut b).expect("header");
    h.batch_length.set((total - batch::LOG_OVERHEAD) as i32);
    batch::fix_crc(&mut b);
    batch::validate(&b).expect("valid batch framing and CRC");
    Bytes::from(b)
}

/// A record body (after its length): attributes, timestamp delta, offset delta 0, then `rest`.
fn record_body(rest: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8, 0, 0];
    v.extend_from_slice(rest);
    v
}

fn with_len(body: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    (varints(&[body.len() as i64]), body)
}

/// The four malformed records (and a few more), each in a batch with a valid CRC.
fn malformed_batches() -> Vec<(&'static str, Bytes)> {
    // (what, (length prefix, record body))
    type Case = (&'static str, (Vec<u8>, Vec<u8>));
    let mut cases: Vec<Case> = Vec::new();
    let ok = record_body(&varints(&[-1, 2, 7, 7, 0]));
    let mut ten_byte = vec![0xffu8; 9];
    ten_byte.push(0x01);
    cases.push(("record length as a 10-byte varint", (ten_byte, ok.clone())));
    let mut key_2_31 = vec![0u8, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10]; // zigzag(2^31)
    key_2_31.extend_from_slice(&varints(&[-1, 0]));
    cases.push(("key length 2^31", with_len(key_2_31)));
    cases.push((
        "header count 2^30",
        with_len(record_body(&varints(&[-1, -1, 1 << 30]))),
    ));
    cases.push((
        "value length -2",
        with_len(record_body(&varints(&[-1, -2, 0]))),
    ));
    cases.push((
        "key past the record",
        with_len(record_body(&varints(&[1000, -1, 0]))),
    ));
    cases.push((
        "record length past the batch",
        (varints(&[500]), ok.clone()),
    ));
    cases
        .into_iter()
        .map(|(what, (len, body))| (what, batch_with_record(&len, &body)))
        .collect()
}

/// Every record of `topic`/0 from the beginning to the high watermark, as librdkafka reads it.
fn consume_all(broker: &TestBroker, topic: &str) -> Vec<(i64, String)> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.addr())
        .set("broker.address.family", "v4");
    let consumer = common::assign_only_consumer(config, "assign-only");
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(20))
        .expect("watermarks");
    common::assign_from_beginning(&consumer, topic, 0);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (out.len() as i64) < high {
        assert!(
            Instant::now() < deadline,
            "consumer stuck after {} of {high} records: {out:?}",
            out.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => out.push((
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(e)) => panic!("consumer error: {e}"),
        }
    }
    out
}

/// Malformed records inside a valid CRC are refused with CORRUPT_MESSAGE (each of the issue's
/// four and more); good batches around them are stored and a librdkafka consumer reads every
/// good record, in order, at consecutive offsets: the partition is not poisoned.
#[test]
fn malformed_records_with_a_valid_crc_are_refused_and_the_partition_stays_readable() {
    within(Duration::from_secs(120), || {
        let broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic(&mut conn, "records", &[]);
        let first = produce(&mut conn, 9, "records", good_batch("a", 3));
        assert_eq!((first.error_code, first.base_offset), (0, 0));
        for (what, b) in malformed_batches() {
            let p = produce(&mut conn, 9, "records", b);
            assert_eq!(p.error_code, CORRUPT_MESSAGE, "{what}: {p:?}");
            assert!(p.error_message.is_some(), "{what}: a message says why");
        }
        let last = produce(&mut conn, 9, "records", good_batch("b", 2));
        assert_eq!((last.error_code, last.base_offset), (0, 3));
        let read = consume_all(&broker, "records");
        let expected: Vec<(i64, String)> = ["a-v0", "a-v1", "a-v2", "b-v0", "b-v1"]
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64, v.to_string()))
            .collect();
        assert_eq!(read, expected);
    });
}

/// librdkafka test 0011's case: 100 records of which 10 are keyless, to a compacted topic.
/// Produce v8+ answers INVALID_RECORD with an error message and the 10 records listed by
/// batch index, each with Kafka's message; older versions get INVALID_RECORD alone.
#[test]
fn keyless_records_to_a_compacted_topic_are_listed_in_record_errors() {
    within(Duration::from_secs(60), || {
        let broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic(&mut conn, "compacted", &[("cleanup.policy", "compact")]);
        let keyless: Vec<i32> = (0..10).map(|i| i * 10 + 7).collect();
        for compression in [Compression::None, Compression::Zstd] {
            let records: Vec<NewRecord> = (0..100)
                .map(|i| {
                    let key = (!keyless.contains(&i)).then(|| Bytes::from(format!("k{i}")));
                    (key, Some(Bytes::from(format!("v{i}"))), 1_700_000_000_000)
                })
                .collect();
            let b = encode_batch(&records, compression).expect("encode");
            let p = produce(&mut conn, 9, "compacted", b.clone());
            assert_eq!(p.error_code, INVALID_RECORD, "{compression:?}");
            let message = p.error_message.as_deref().unwrap_or_default().to_string();
            assert!(message.contains("10 record errors"), "{message}");
            let listed: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
            assert_eq!(listed, keyless, "{compression:?}");
            for e in &p.record_errors {
                assert_eq!(e.batch_index_error_message.as_deref(), Some(MISSING_KEY));
            }
            let p = produce(&mut conn, 7, "compacted", b);
            assert_eq!(p.error_code, INVALID_RECORD);
            assert!(p.record_errors.is_empty());
        }
        // The same batch with every key is accepted.
        let p = produce(&mut conn, 9, "compacted", good_batch("k", 100));
        assert_eq!((p.error_code, p.base_offset), (0, 0));
    });
}

/// The same through librdkafka, as its test 0011 checks: 100 messages in one batch, every
/// tenth without a key, to a compacted topic. The 10 keyless ones fail with INVALID_RECORD
/// and, since the broker listed them, the other 90 fail with librdkafka's
/// _INVALID_DIFFERENT_RECORD (a broker without `record_errors` fails all 100 with
/// INVALID_RECORD); sent one per batch, the 90 keyed ones are delivered.
#[test]
fn librdkafka_fails_only_the_keyless_records_of_a_batch() {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    within(Duration::from_secs(120), || {
        let broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic(&mut conn, "compacted", &[("cleanup.policy", "compact")]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        for batch_size in ["1000000", "1"] {
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", broker.addr())
                .set("broker.address.family", "v4")
                .set("linger.ms", "200")
                .set("batch.size", batch_size)
                .set("message.timeout.ms", "30000")
                .create()
                .expect("producer");
            let deliveries: Vec<_> = (0..100)
                .map(|i| {
                    let payload = format!("message {i}");
                    let mut record = FutureRecord::<str, str>::to("compacted")
                        .partition(0)
                        .payload(&payload);
                    let key = format!("key {i}");
                    if i % 10 != 0 {
                        record = record.key(&key);
                    }
                    producer.send_result(record).expect("queued")
                })
                .collect();
            let (mut invalid, mut different, mut delivered) = (0, 0, 0);
            for d in deliveries {
                match rt.block_on(d).expect("delivery report") {
                    Ok(_) => delivered += 1,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord), _)) => {
                        invalid += 1
                    }
                    Err((
                        KafkaError::MessageProduction(RDKafkaErrorCode::InvalidDifferentRecord),
                        _,
                    )) => different += 1,
                    Err((e, _)) => panic!("unexpected delivery error {e}"),
                }
            }
            let want = if batch_size == "1" {
                (10, 0, 90)
            } else {
                (10, 90, 0)
            };
            assert_eq!(
                (invalid, different, delivered),
                want,
                "batch.size {batch_size}"
            );
        }
    });
}

/// Polls the broker's VmRSS every 10 ms, keeping the peak; kills the broker past
/// [`RSS_KILL_BYTES`] so that a broker without the bound cannot take the machine down.
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

fn vm_rss(pid: u32) -> Option<u64> {
    common::proc_status_bytes(pid, "VmRSS")
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Some(rss) = vm_rss(pid) else { return };
                p.fetch_max(rss, Ordering::Relaxed);
                if rss > RSS_KILL_BYTES {
                    eprintln!("broker RSS {rss} bytes, past {RSS_KILL_BYTES}: killing it");
                    // SAFETY: kill(2) on the broker child this test started.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssWatch {
            stop,
            peak,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("rss watcher");
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// The bomb (10,240 records of 1 MiB of zeros in one zstd batch, under 1 MiB on the
/// wire, 10 GiB decompressed) to a compacted topic and to a plain one: each is refused with
/// RECORD_LIST_TOO_LARGE, the broker's RSS grows by less than [`BOMB_RSS_GROWTH_BYTES_MAX`],
/// and another client's requests are answered meanwhile and afterwards.
#[test]
fn zstd_bomb_is_refused_within_the_memory_bound_while_others_keep_working() {
    within(Duration::from_secs(180), || {
        let broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic(&mut conn, "bomb-compact", &[("cleanup.policy", "compact")]);
        create_topic(&mut conn, "bomb-plain", &[]);
        create_topic(&mut conn, "innocent", &[]);
        let bomb = Bytes::from(zstd_bomb_batch(10_240, 1 << 20, None));
        assert!(bomb.len() < 1_000_000, "bomb of {} bytes", bomb.len());
        let p = produce(&mut conn, 9, "innocent", good_batch("before", 1));
        assert_eq!(p.error_code, 0);
        let baseline = vm_rss(broker.pid()).expect("broker RSS");

        // Another client: ApiVersions and a small produce in a loop, each answered quickly.
        let done = Arc::new(AtomicBool::new(false));
        let other = {
            let done = done.clone();
            let addr = broker.socket_addr();
            std::thread::spawn(move || {
                let mut c = RawConn::connect(addr).expect("other client");
                let mut slowest = Duration::ZERO;
                let mut n = 0;
                while !done.load(Ordering::Relaxed) || n < 5 {
                    let t = Instant::now();
                    c.request(3, &ApiVersionsRequest::default())
                        .expect("ApiVersions answered");
                    let p = produce(&mut c, 9, "innocent", good_batch("during", 1));
                    assert_eq!(p.error_code, 0);
                    slowest = slowest.max(t.elapsed());
                    n += 1;
                }
                (n, slowest)
            })
        };

        let watch = RssWatch::start(broker.pid());
        let started = Instant::now();
        for topic in ["bomb-compact", "bomb-plain"] {
            let t = Instant::now();
            eprintln!("{topic}: sending the bomb at {:?}", started.elapsed());
            let p = produce(&mut conn, 9, topic, bomb.clone());
            assert_eq!(p.error_code, RECORD_LIST_TOO_LARGE, "{topic}: {p:?}");
            eprintln!("{topic}: refused in {:?}", t.elapsed());
        }
        let peak = watch.finish();
        done.store(true, Ordering::Relaxed);
        let (n, slowest) = other.join().expect("other client");
        eprintln!(
            "broker RSS: baseline {} KiB, peak {} KiB; other client: {n} rounds, slowest {slowest:?}",
            baseline / 1024,
            peak / 1024
        );
        assert!(
            peak < baseline + BOMB_RSS_GROWTH_BYTES_MAX,
            "RSS grew from {baseline} to {peak} bytes"
        );
        assert!(
            slowest < Duration::from_secs(2),
            "other client waited {slowest:?}"
        );
        // Nothing of the bombs was stored; the innocent topic has every record.
        for topic in ["bomb-compact", "bomb-plain"] {
            let p = produce(&mut conn, 9, topic, good_batch("after", 1));
            assert_eq!((p.error_code, p.base_offset), (0, 0), "{topic}");
        }
        assert_eq!(consume_all(&broker, "innocent").len(), 1 + n);
    });
}
