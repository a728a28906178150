//! Exactly-once scenarios (issue 5): idempotent producers (and, as they arrive, transactions)
//! against the real `freshet` binary, driven over raw Kafka protocol (exact control of producer
//! ids and sequences) and by librdkafka through the `rdkafka` crate.

use crate::common;
use common::runtime;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::proxy::CutProxy;
use common::{free_port, within, RawConn, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = ResponseError::OutOfOrderSequenceNumber.code();
const INVALID_PRODUCER_EPOCH: i16 = ResponseError::InvalidProducerEpoch.code();
const INVALID_RECORD: i16 = ResponseError::InvalidRecord.code();

fn create_topic_raw(conn: &mut RawConn, name: &str, partitions: i32) {
    let code = common::create_topic_raw(conn, name, partitions, &[]);
    assert_eq!(code, 0, "create {name}");
}

fn init_producer_id(conn: &mut RawConn) -> (i64, i16) {
    let response = conn
        .request(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
        )
        .expect("InitProducerId");
    assert_eq!(response.error_code, 0);
    (response.producer_id.0, response.producer_epoch)
}

/// One idempotent batch of `count` records starting at sequence `seq`.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, count: usize, tag: &str) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq.wrapping_add(i as i32),
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(format!("{tag}-{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode batch");
    buf.freeze()
}

/// Produce one record set to `topic`/0; returns (error code, base offset).
fn produce_raw(conn: &mut RawConn, topic: &str, records: Bytes) -> (i16, i64) {
    produce_raw_v(conn, 9, topic, records)
}

/// [`produce_raw`] with Produce `version` (3-12: topics by name).
fn produce_raw_v(conn: &mut RawConn, version: i16, topic: &str, records: Bytes) -> (i16, i64) {
    let p = common::produce_records(conn, version, topic, 0, records);
    (p.error_code, p.base_offset)
}

/// Offsets are checked against the rules Kafka 4 applies: duplicates get the original offsets
/// and are not written again, gaps are OUT_OF_ORDER_SEQUENCE_NUMBER, an older epoch is
/// INVALID_PRODUCER_EPOCH, a new epoch starts at sequence 0.
#[test]
fn idempotent_sequences_are_checked_as_kafka_does() {
    within(Duration::from_secs(60), || {
        let broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic_raw(&mut conn, "idem", 1);
        let (pid, epoch) = init_producer_id(&mut conn);
        assert_eq!(epoch, 0);
        assert_eq!(
            produce_raw(&mut conn, "idem", idempotent_batch(pid, 0, 0, 3, "a")),
            (0, 0)
        );
        assert_eq!(
            produce_raw(&mut conn, "idem", idempotent_batch(pid, 0, 3, 2, "b")),
            (0, 3)
        );
        // A retry of either batch gets its original offsets.
        assert_eq!(
            produce_raw(&mut conn, "idem", idempotent_batch(pid, 0, 0, 3, "a")),
            (0, 0)
        );
        assert_eq!(
            produce_raw(&mut conn, "idem", idempotent_batch(pid, 0, 3, 2, "b")),
            (0, 3)
        );
        // A gap, and a stale sequence matching no batch.
        assert_eq!(
            produce_raw(&mut conn, "idem", idempotent_batch(pid, 0, 7, 1, "c")).0,
            OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert_eq!(
            produce_raw(&mut conn, "idem", idempotent_batch(pid, 0, 1, 1, "c")).0,
            OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        // Nothing was written by the refused or duplicate batches.
        assert_eq!(
            produce_raw(&mut conn, "idem", idempotent_batch(pid, 0, 5, 1, "d")),
            (0, 5)
        );
        // A new epoch must start at 0; then the old epoch is fenced.
        assert_eq!(
            produce_raw(&mut conn, "idem", idempotent_batch(pid, 1, 6, 1, "e")).0,
            OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert_eq!(
            produce_raw(&mut conn, "idem", idempotent_batch(pid, 1, 0, 1, "e")),
            (0, 6)
        );
        assert_eq!(
            produce_raw(&mut conn, "idem", idempotent_batch(pid, 0, 6, 1, "f")).0,
            INVALID_PRODUCER_EPOCH
        );
        // Two idempotent batches in one record set are refused (one batch per partition).
        let mut two = BytesMut::new();
        two.extend_from_slice(&idempotent_batch(pid, 1, 1, 1, "g"));
        two.extend_from_slice(&idempotent_batch(pid, 1, 2, 1, "h"));
        assert_eq!(
            produce_raw(&mut conn, "idem", two.freeze()).0,
            INVALID_RECORD
        );
        // An unknown producer id may start at any sequence (Kafka 4).
        let (other, _) = init_producer_id(&mut conn);
        assert_eq!(
            produce_raw(&mut conn, "idem", idempotent_batch(other, 0, 40, 1, "i")),
            (0, 7)
        );
    })
}

/// Producer state outlives the broker: after a clean restart (snapshot at close) and after a
/// kill -9 (rebuilt by replaying the log), a retried batch is still recognised as a duplicate
/// and the sequence still continues.
#[test]
fn producer_state_survives_clean_restart_and_kill_9() {
    within(Duration::from_secs(90), || {
        let mut broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic_raw(&mut conn, "durable-idem", 1);
        let (pid, _) = init_producer_id(&mut conn);
        for i in 0..4 {
            let batch = idempotent_batch(pid, 0, i * 2, 2, "x");
            assert_eq!(
                produce_raw(&mut conn, "durable-idem", batch),
                (0, i64::from(i) * 2)
            );
        }
        drop(conn);
        broker.restart();
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        assert_eq!(
            produce_raw(
                &mut conn,
                "durable-idem",
                idempotent_batch(pid, 0, 6, 2, "x")
            ),
            (0, 6),
            "duplicate after a clean restart"
        );
        assert_eq!(
            produce_raw(
                &mut conn,
                "durable-idem",
                idempotent_batch(pid, 0, 9, 1, "y")
            )
            .0,
            OUT_OF_ORDER_SEQUENCE_NUMBER,
            "sequence checked after a clean restart"
        );
        assert_eq!(
            produce_raw(
                &mut conn,
                "durable-idem",
                idempotent_batch(pid, 0, 8, 2, "z")
            ),
            (0, 8)
        );
        drop(conn);
        broker.kill9();
        broker.start_again();
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        assert_eq!(
            produce_raw(
                &mut conn,
                "durable-idem",
                idempotent_batch(pid, 0, 8, 2, "z")
            ),
            (0, 8),
            "duplicate after kill -9"
        );
        assert_eq!(
            produce_raw(
                &mut conn,
                "durable-idem",
                idempotent_batch(pid, 0, 4, 2, "x")
            ),
            (0, 4),
            "an older cached batch after kill -9"
        );
        assert_eq!(
            produce_raw(
                &mut conn,
                "durable-idem",
                idempotent_batch(pid, 0, 10, 1, "w")
            ),
            (0, 10)
        );
    })
}

fn client_config(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "200");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config
}

/// Reads every message of `topic` partitions `0..partitions` up to their high watermark as
/// (partition, value), with `isolation.level` as given.
fn read_all(bootstrap: &str, topic: &str, partitions: i32, isolation: &str) -> Vec<(i32, String)> {
    let consumer: BaseConsumer = client_config(
        bootstrap,
        &[
            ("group.id", "exactly-once-reader"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "error"),
            ("isolation.level", isolation),
            ("enable.partition.eof", "true"),
            ("fetch.wait.max.ms", "100"),
        ],
    )
    .create()
    .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut eof = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while eof.len() < partitions as usize {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => out.push((
                m.partition(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
        }
    }
    out
}

/// An idempotent librdkafka producer whose connections are cut mid-flight (the broker got the
/// request, the client never saw the answer, so it retries) still delivers every message
/// exactly once and in order per partition.
#[test]
fn idempotent_producer_with_cut_connections_delivers_exactly_once() {
    within(Duration::from_secs(150), || {
        let proxy_port = free_port();
        let broker =
            TestBroker::start_with(2, &["--advertise", &format!("127.0.0.1:{proxy_port}")]);
        let proxy = CutProxy::start(proxy_port, broker.socket_addr(), 6 << 10);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic_raw(&mut conn, "cut", 3);
        let producer: FutureProducer = client_config(
            &proxy.addr(),
            &[
                ("enable.idempotence", "true"),
                ("linger.ms", "2"),
                ("batch.num.messages", "50"),
                ("message.timeout.ms", "120000"),
                ("request.timeout.ms", "5000"),
            ],
        )
        .create()
        .expect("producer");
        // Metadata and producer id first, without cuts.
        let rt = runtime();
        rt.block_on(
            producer.send(
                FutureRecord::<str, str>::to("cut")
                    .partition(0)
                    .payload("warmup"),
                Duration::from_secs(30),
            ),
        )
        .expect("warm-up message");
        proxy.set_cutting(true);
        const N: usize = 3000;
        let mut futures = Vec::with_capacity(N);
        for i in 0..N {
            let value = format!("m-{i:05}");
            let key = format!("k{}", i % 3);
            let f = producer
                .send_result(
                    FutureRecord::to("cut")
                        .partition((i % 3) as i32)
                        .key(&key)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .expect("enqueue");
            futures.push(f);
        }
        rt.block_on(async {
            for (i, f) in futures.into_iter().enumerate() {
                let r = tokio::time::timeout(Duration::from_secs(120), f)
                    .await
                    .expect("delivery within 120 s")
                    .expect("not cancelled");
                if let Err((e, _)) = r {
                    panic!("message {i} failed: {e}");
                }
            }
        });
        proxy.set_cutting(false);
        let cuts = proxy.cuts();
        assert!(cuts >= 3, "the proxy cut only {cuts} connections");
        let got = read_all(&broker.addr(), "cut", 3, "read_uncommitted");
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut last_per_partition: HashMap<i32, String> = HashMap::new();
        for (p, v) in &got {
            if v == "warmup" {
                continue;
            }
            *seen.entry(v.clone()).or_default() += 1;
            if let Some(prev) = last_per_partition.get(p) {
                assert!(prev < v, "partition {p}: {v} after {prev}");
            }
            last_per_partition.insert(*p, v.clone());
        }
        let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            dups.is_empty(),
            "duplicated after {cuts} cuts: {} e.g. {:?}",
            dups.len(),
            dups.iter().take(3).collect::<Vec<_>>()
        );
        assert_eq!(
            seen.len(),
            N,
            "every message exactly once after {cuts} cuts"
        );
        let dup_batches = broker.log().matches("duplicate batch").count();
        eprintln!("{N} messages exactly once through {cuts} cut connections ({dup_batches} duplicate batches logged)");
    })
}

// ---- transactions ----

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const TXN_OP_TIMEOUT: Duration = Duration::from_secs(30);

fn txn_producer(bootstrap: &str, transactional_id: &str, extra: &[(&str, &str)]) -> BaseProducer {
    let mut config = client_config(
        bootstrap,
        &[
            ("transactional.id", transactional_id),
            ("linger.ms", "2"),
            ("message.timeout.ms", "30000"),
        ],
    );
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let p: BaseProducer = config.create().expect("transactional producer");
    p.init_transactions(TXN_OP_TIMEOUT)
        .expect("init_transactions");
    p
}

/// Sends `values` round-robin over `partitions` and waits until all are delivered.
fn send_all(p: &BaseProducer, topic: &str, partitions: i32, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        let record = BaseRecord::<str, str>::to(topic)
            .partition(i as i32 % partitions)
            .payload(v);
        p.send(record).map_err(|(e, _)| e).expect("enqueue");
    }
    p.flush(TXN_OP_TIMEOUT).expect("flush");
}

fn values(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag}-{i:03}")).collect()
}

fn sorted_values(got: Vec<(i32, String)>) -> Vec<String> {
    let mut v: Vec<String> = got.into_iter().map(|(_, v)| v).collect();
    v.sort();
    v
}

fn expect_sorted(parts: &[&[String]]) -> Vec<String> {
    let mut v: Vec<String> = parts.iter().flat_map(|p| p.iter().cloned()).collect();
    v.sort();
    v
}

/// Committed transactions are visible to read_committed consumers and aborted ones are not;
/// read_uncommitted consumers see both; an open transaction holds read_committed readers at
/// its first offset (the LSO) until it commits.
#[test]
fn committed_transactions_are_visible_and_aborted_ones_are_not() {
    within(Duration::from_secs(120), || {
        let broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic_raw(&mut conn, "txn", 2);
        let p = txn_producer(&broker.addr(), "txn-visibility", &[]);
        let (c1, a1, c2, open) = (
            values("c1", 10),
            values("a1", 10),
            values("c2", 10),
            values("open", 6),
        );
        p.begin_transaction().unwrap();
        send_all(&p, "txn", 2, &c1);
        p.commit_transaction(TXN_OP_TIMEOUT).expect("commit 1");
        p.begin_transaction().unwrap();
        send_all(&p, "txn", 2, &a1);
        p.abort_transaction(TXN_OP_TIMEOUT).expect("abort");
        p.begin_transaction().unwrap();
        send_all(&p, "txn", 2, &c2);
        p.commit_transaction(TXN_OP_TIMEOUT).expect("commit 2");
        p.begin_transaction().unwrap();
        send_all(&p, "txn", 2, &open);

        let committed = sorted_values(read_all(&broker.addr(), "txn", 2, "read_committed"));
        assert_eq!(committed, expect_sorted(&[&c1, &c2]));
        let uncommitted = sorted_values(read_all(&broker.addr(), "txn", 2, "read_uncommitted"));
        assert_eq!(uncommitted, expect_sorted(&[&c1, &a1, &c2, &open]));

        p.commit_transaction(TXN_OP_TIMEOUT).expect("commit 3");
        let committed = sorted_values(read_all(&broker.addr(), "txn", 2, "read_committed"));
        assert_eq!(committed, expect_sorted(&[&c1, &c2, &open]));
    })
}

/// A second producer with the same transactional.id fences the first: the first's open
/// transaction is aborted and its commit fails.
#[test]
fn second_producer_with_same_transactional_id_fences_the_first() {
    within(Duration::from_secs(120), || {
        let broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic_raw(&mut conn, "fence", 1);
        let zombie = txn_producer(&broker.addr(), "txn-fence", &[]);
        zombie.begin_transaction().unwrap();
        let lost = values("zombie", 5);
        send_all(&zombie, "fence", 1, &lost);

        let fresh = txn_producer(&broker.addr(), "txn-fence", &[]);
        let err = zombie
            .commit_transaction(TXN_OP_TIMEOUT)
            .expect_err("the fenced producer cannot commit");
        eprintln!("zombie commit failed as expected: {err}");
        fresh.begin_transaction().unwrap();
        let kept = values("fresh", 5);
        send_all(&fresh, "fence", 1, &kept);
        fresh.commit_transaction(TXN_OP_TIMEOUT).expect("commit");
        let committed = sorted_values(read_all(&broker.addr(), "fence", 1, "read_committed"));
        assert_eq!(committed, kept);
    })
}

/// send_offsets_to_transaction commits consumer offsets with the transaction: not before the
/// commit, never for an abort.
#[test]
fn offsets_sent_to_a_transaction_commit_with_it() {
    use rdkafka::consumer::CommitMode;
    within(Duration::from_secs(120), || {
        let broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic_raw(&mut conn, "eo-in", 2);
        create_topic_raw(&mut conn, "eo-out", 1);
        let group = "eo-group";
        let consumer: BaseConsumer = client_config(
            &broker.addr(),
            &[("group.id", group), ("enable.auto.commit", "false")],
        )
        .create()
        .expect("consumer");
        // A read_uncommitted consumer fetches offsets without require_stable (KIP-447).
        let unstable_reader: BaseConsumer = client_config(
            &broker.addr(),
            &[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_uncommitted"),
            ],
        )
        .create()
        .expect("consumer");
        let fetch_committed = |c: &BaseConsumer, timeout: Duration| {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition("eo-in", 0);
            tpl.add_partition("eo-in", 1);
            c.committed_offsets(tpl, timeout).map(|got| {
                got.elements()
                    .iter()
                    .map(|e| e.offset())
                    .collect::<Vec<Offset>>()
            })
        };
        let committed =
            |c: &BaseConsumer| fetch_committed(c, TXN_OP_TIMEOUT).expect("committed offsets");
        // A plain commit first, so the group exists with known offsets.
        let mut start = TopicPartitionList::new();
        start
            .add_partition_offset("eo-in", 0, Offset::Offset(1))
            .unwrap();
        start
            .add_partition_offset("eo-in", 1, Offset::Offset(1))
            .unwrap();
        consumer
            .commit(&start, CommitMode::Sync)
            .expect("plain commit");
        let cgm = consumer.group_metadata().expect("group metadata");

        let p = txn_producer(&broker.addr(), "txn-offsets", &[]);
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("eo-in", 0, Offset::Offset(10))
            .unwrap();
        offsets
            .add_partition_offset("eo-in", 1, Offset::Offset(20))
            .unwrap();

        // Aborted: the offsets are not committed.
        p.begin_transaction().unwrap();
        send_all(&p, "eo-out", 1, &values("aborted", 3));
        p.send_offsets_to_transaction(&offsets, &cgm, TXN_OP_TIMEOUT)
            .expect("send offsets");
        p.abort_transaction(TXN_OP_TIMEOUT).expect("abort");
        assert_eq!(
            committed(&consumer),
            vec![Offset::Offset(1), Offset::Offset(1)]
        );

        // Committed: they are, together with the output.
        p.begin_transaction().unwrap();
        let out = values("out", 3);
        send_all(&p, "eo-out", 1, &out);
        p.send_offsets_to_transaction(&offsets, &cgm, TXN_OP_TIMEOUT)
            .expect("send offsets");
        assert_eq!(
            committed(&unstable_reader),
            vec![Offset::Offset(1), Offset::Offset(1)],
            "not before the commit"
        );
        // A read_committed consumer (require_stable) is told to wait: UNSTABLE_OFFSET_COMMIT,
        // which librdkafka retries until its timeout.
        assert!(
            fetch_committed(&consumer, Duration::from_secs(2)).is_err(),
            "a stable offset fetch must wait for the transaction"
        );
        p.commit_transaction(TXN_OP_TIMEOUT).expect("commit");
        assert_eq!(
            committed(&consumer),
            vec![Offset::Offset(10), Offset::Offset(20)]
        );
        let got = sorted_values(read_all(&broker.addr(), "eo-out", 1, "read_committed"));
        assert_eq!(got, out);
    })
}

/// kill -9 in the middle of a transaction: after the restart the transaction is aborted, not
/// half visible, and read_committed readers are not stuck behind it; the committed one before
/// it stays visible.
#[test]
fn kill_9_mid_transaction_aborts_it() {
    within(Duration::from_secs(120), || {
        let mut broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic_raw(&mut conn, "crash", 2);
        drop(conn);
        let p = txn_producer(&broker.addr(), "txn-crash", &[]);
        let before = values("before", 8);
        p.begin_transaction().unwrap();
        send_all(&p, "crash", 2, &before);
        p.commit_transaction(TXN_OP_TIMEOUT).expect("commit");
        p.begin_transaction().unwrap();
        let torn = values("torn", 8);
        send_all(&p, "crash", 2, &torn);
        drop(p);
        broker.kill9();
        broker.start_again();
        // The recovered coordinator aborts the open transaction on its first ticks.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let committed = sorted_values(read_all(&broker.addr(), "crash", 2, "read_committed"));
            let all = sorted_values(read_all(&broker.addr(), "crash", 2, "read_uncommitted"));
            assert_eq!(
                all,
                expect_sorted(&[&before, &torn]),
                "acknowledged data kept"
            );
            if committed == before {
                break;
            }
            assert!(
                committed.len() <= before.len(),
                "the torn transaction became visible: {committed:?}"
            );
            assert!(
                Instant::now() < deadline,
                "read_committed stuck: {committed:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The transactional id is usable again.
        let p = txn_producer(&broker.addr(), "txn-crash", &[]);
        p.begin_transaction().unwrap();
        let after = values("after", 4);
        send_all(&p, "crash", 2, &after);
        p.commit_transaction(TXN_OP_TIMEOUT)
            .expect("commit after restart");
        let committed = sorted_values(read_all(&broker.addr(), "crash", 2, "read_committed"));
        assert_eq!(committed, expect_sorted(&[&before, &after]));
    })
}

const INVALID_TXN_STATE: i16 = ResponseError::InvalidTxnState.code();
const TRANSACTION_ABORTABLE: i16 = ResponseError::TransactionAbortable.code();

fn transactional_batch(pid: i64, epoch: i16, seq: i32, count: usize) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(format!("t-{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode batch");
    buf.freeze()
}

/// (high watermark, last stable offset, aborted transactions) of `topic`/0 for a
/// read_committed fetch from offset 0.
fn fetch_committed_state(conn: &mut RawConn, topic: &str) -> (i64, i64, Vec<(i64, i64)>) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::FetchRequest;
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let response = conn.request(11, &request).expect("Fetch");
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let aborted = p
        .aborted_transactions
        .iter()
        .flatten()
        .map(|a| (a.producer_id.0, a.first_offset))
        .collect();
    (p.high_watermark, p.last_stable_offset, aborted)
}

/// Over raw protocol: a transactional batch to a partition outside the producer's transaction
/// is refused (INVALID_TXN_STATE), so no stray write can hold the LSO; inside it, the LSO stays
/// at the transaction's first offset until EndTxn, and an aborted transaction is listed to
/// read_committed fetches.
#[test]
fn transactional_writes_are_verified_and_bound_the_stable_offset() {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, EndTxnRequest, ProducerId, TransactionalId,
    };
    within(Duration::from_secs(60), || {
        let broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic_raw(&mut conn, "verify", 1);
        let tid = TransactionalId(StrBytes::from_static_str("raw-txn"));
        let init = conn
            .request(
                4,
                &InitProducerIdRequest::default()
                    .with_transactional_id(Some(tid.clone()))
                    .with_transaction_timeout_ms(60_000),
            )
            .expect("InitProducerId");
        assert_eq!(init.error_code, 0);
        let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
        assert_eq!(
            produce_raw(&mut conn, "verify", transactional_batch(pid, epoch, 0, 2)).0,
            INVALID_TXN_STATE,
            "not added to the transaction"
        );
        assert_eq!(
            produce_raw_v(
                &mut conn,
                11,
                "verify",
                transactional_batch(pid, epoch, 0, 2)
            )
            .0,
            TRANSACTION_ABORTABLE,
            "Produce v11+ is told the transaction can be aborted"
        );
        let add = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(tid.clone())
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("verify")))
                .with_partitions(vec![0])]);
        let added = conn.request(3, &add).expect("AddPartitionsToTxn");
        assert_eq!(
            added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
            0
        );
        assert_eq!(
            produce_raw(&mut conn, "verify", transactional_batch(pid, epoch, 0, 2)),
            (0, 0)
        );
        assert_eq!(
            produce_raw(&mut conn, "verify", transactional_batch(pid, epoch, 2, 2)),
            (0, 2)
        );
        assert_eq!(fetch_committed_state(&mut conn, "verify"), (4, 0, vec![]));
        assert_eq!(
            latest_offset(&mut conn, "verify", 1),
            0,
            "read_committed latest = LSO"
        );
        assert_eq!(
            latest_offset(&mut conn, "verify", 0),
            4,
            "read_uncommitted latest = HW"
        );
        // The admin APIs see the open transaction.
        {
            use kafka_protocol::messages::describe_producers_request::TopicRequest;
            use kafka_protocol::messages::{
                DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest,
            };
            let described = conn
                .request(
                    0,
                    &DescribeTransactionsRequest::default().with_transactional_ids(vec![
                        tid.clone(),
                        TransactionalId(StrBytes::from_static_str("nope")),
                    ]),
                )
                .expect("DescribeTransactions");
            let t = &described.transaction_states[0];
            assert_eq!(t.error_code, 0);
            assert_eq!(t.transaction_state.as_str(), "Ongoing");
            assert_eq!((t.producer_id.0, t.producer_epoch), (pid, epoch));
            assert_eq!(t.topics.len(), 1);
            assert_eq!(t.topics[0].partitions, vec![0]);
            assert_eq!(
                described.transaction_states[1].error_code,
                ResponseError::TransactionalIdNotFound.code()
            );
            let listed = conn
                .request(
                    1,
                    &ListTransactionsRequest::default()
                        .with_state_filters(vec![
                            StrBytes::from_static_str("Ongoing"),
                            StrBytes::from_static_str("Bogus"),
                        ])
                        .with_duration_filter(-1),
                )
                .expect("ListTransactions");
            assert_eq!(listed.transaction_states.len(), 1);
            assert_eq!(listed.transaction_states[0].transactional_id, tid);
            assert_eq!(
                listed.unknown_state_filters,
                vec![StrBytes::from_static_str("Bogus")]
            );
            let producers = conn
                .request(
                    0,
                    &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                        .with_name(TopicName(StrBytes::from_static_str("verify")))
                        .with_partition_indexes(vec![0, 9])]),
                )
                .expect("DescribeProducers");
            let parts = &producers.topics[0].partitions;
            assert_eq!(parts[0].error_code, 0);
            let p = &parts[0].active_producers[0];
            assert_eq!(
                (p.producer_id.0, p.last_sequence, p.current_txn_start_offset),
                (pid, 3, 0)
            );
            assert_eq!(
                parts[1].error_code,
                ResponseError::UnknownTopicOrPartition.code(),
                "unknown partition"
            );
        }
        let end = EndTxnRequest::default()
            .with_transactional_id(tid.clone())
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(false);
        assert_eq!(conn.request(3, &end).expect("EndTxn").error_code, 0);
        // The abort marker is offset 4; the LSO is the high watermark again.
        assert_eq!(
            fetch_committed_state(&mut conn, "verify"),
            (5, 5, vec![(pid, 0)])
        );
        // A late write of the finished transaction is refused.
        assert_eq!(
            produce_raw(&mut conn, "verify", transactional_batch(pid, epoch, 4, 1)).0,
            INVALID_TXN_STATE
        );
        assert_eq!(
            fetch_committed_state(&mut conn, "verify"),
            (5, 5, vec![(pid, 0)])
        );
        // Retrying the abort succeeds; switching to commit is a state error.
        assert_eq!(conn.request(3, &end).expect("EndTxn").error_code, 0);
        let commit = end.clone().with_committed(true);
        assert_eq!(
            conn.request(3, &commit).expect("EndTxn").error_code,
            INVALID_TXN_STATE
        );
    })
}

/// A transaction left open past `transaction.timeout.ms` is aborted by the coordinator: its
/// records never become visible, read_committed readers move past it, and the producer is
/// fenced from committing it.
#[test]
fn a_transaction_past_its_timeout_is_aborted() {
    within(Duration::from_secs(120), || {
        let broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic_raw(&mut conn, "timeout", 2);
        let p = txn_producer(
            &broker.addr(),
            "txn-timeout",
            &[
                ("transaction.timeout.ms", "2000"),
                ("socket.timeout.ms", "2000"),
                ("message.timeout.ms", "2000"),
            ],
        );
        p.begin_transaction().unwrap();
        let stale = values("stale", 6);
        send_all(&p, "timeout", 2, &stale);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Wait until the abort markers are in: read_committed reaches the end with nothing.
            let uncommitted = read_all(&broker.addr(), "timeout", 2, "read_uncommitted");
            assert_eq!(uncommitted.len(), stale.len());
            let committed = read_all(&broker.addr(), "timeout", 2, "read_committed");
            assert!(
                committed.is_empty(),
                "aborted records visible: {committed:?}"
            );
            let lso_moved = {
                let c: BaseConsumer = client_config(&broker.addr(), &[("group.id", "lso-probe")])
                    .create()
                    .unwrap();
                (0..2).all(|part| {
                    let (_, high) = c
                        .fetch_watermarks("timeout", part, Duration::from_secs(10))
                        .unwrap();
                    high > 3
                })
            };
            if lso_moved {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the transaction was never aborted"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            p.commit_transaction(TXN_OP_TIMEOUT).is_err(),
            "the timed-out transaction cannot commit"
        );
    })
}

/// An idempotent librdkafka producer keeps producing across a clean broker restart: every
/// message exactly once (requests in flight at the restart are retried and deduplicated from
/// the producer state the broker rebuilt).
#[test]
fn idempotent_producer_survives_a_broker_restart_exactly_once() {
    within(Duration::from_secs(150), || {
        let mut broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic_raw(&mut conn, "restart-idem", 2);
        drop(conn);
        let producer: FutureProducer = client_config(
            &broker.addr(),
            &[
                ("enable.idempotence", "true"),
                ("linger.ms", "2"),
                ("message.timeout.ms", "120000"),
            ],
        )
        .create()
        .expect("producer");
        const N: usize = 4000;
        let mut futures = Vec::with_capacity(N);
        for i in 0..N {
            let value = format!("r-{i:05}");
            futures.push(
                producer
                    .send_result(
                        FutureRecord::<str, str>::to("restart-idem")
                            .partition((i % 2) as i32)
                            .payload(&value),
                    )
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
            if i == N / 2 {
                broker.restart();
            }
        }
        let rt = runtime();
        rt.block_on(async {
            for (i, f) in futures.into_iter().enumerate() {
                let r = tokio::time::timeout(Duration::from_secs(120), f)
                    .await
                    .expect("delivery within 120 s")
                    .expect("not cancelled");
                if let Err((e, _)) = r {
                    panic!("message {i} failed: {e}");
                }
            }
        });
        let got = read_all(&broker.addr(), "restart-idem", 2, "read_uncommitted");
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (_, v) in &got {
            *seen.entry(v.as_str()).or_default() += 1;
        }
        assert!(
            seen.values().all(|n| *n == 1),
            "duplicates after the restart"
        );
        assert_eq!(seen.len(), N);
    })
}

/// ListOffsets "latest" of `topic`/0 at the given isolation level.
fn latest_offset(conn: &mut RawConn, topic: &str, isolation_level: i8) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::ListOffsetsRequest;
    let request = ListOffsetsRequest::default()
        .with_isolation_level(isolation_level)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let response = conn.request(5, &request).expect("ListOffsets");
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

/// The transaction log is compacted at startup once superseded records dominate it, and the
/// state survives: after a restart the same producer id and epoch keep working.
#[test]
fn transaction_log_is_compacted_at_startup_and_state_survives() {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, DescribeTransactionsRequest, EndTxnRequest, ProducerId,
        TransactionalId,
    };
    within(Duration::from_secs(120), || {
        let mut broker = TestBroker::start(1);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic_raw(&mut conn, "compact", 1);
        let tid = TransactionalId(StrBytes::from_static_str("compact-txn"));
        let init = conn
            .request(
                4,
                &InitProducerIdRequest::default()
                    .with_transactional_id(Some(tid.clone()))
                    .with_transaction_timeout_ms(60_000),
            )
            .expect("InitProducerId");
        let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
        let add = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(tid.clone())
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("compact")))
                .with_partitions(vec![0])]);
        let end = EndTxnRequest::default()
            .with_transactional_id(tid.clone())
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(true);
        let round = |conn: &mut RawConn| {
            let added = conn.request(3, &add).expect("AddPartitionsToTxn");
            assert_eq!(
                added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
                0
            );
            assert_eq!(conn.request(3, &end).expect("EndTxn").error_code, 0);
        };
        // Three records per transaction (Ongoing, PrepareCommit, CompleteCommit).
        for _ in 0..340 {
            round(&mut conn);
        }
        drop(conn);
        broker.restart();
        assert!(
            broker.log().contains("transaction log compacted"),
            "no compaction at startup\n{}",
            broker.log_tail()
        );
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        let described = conn
            .request(
                0,
                &DescribeTransactionsRequest::default().with_transactional_ids(vec![tid.clone()]),
            )
            .expect("DescribeTransactions");
        let t = &described.transaction_states[0];
        assert_eq!(t.transaction_state.as_str(), "CompleteCommit");
        assert_eq!((t.producer_id.0, t.producer_epoch), (pid, epoch));
        round(&mut conn);
        drop(conn);
        // And once more from the compacted log.
        broker.restart();
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        round(&mut conn);
    })
}

/// kill -9 while EndTxn(commit) is in flight, at several delays: after the restart the
/// transaction is either committed on every partition or aborted on every partition, never half
/// visible, and the coordinator reports the matching final state.
#[test]
fn kill_9_during_commit_completes_or_aborts_on_every_partition() {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, DescribeTransactionsRequest, EndTxnRequest, ProducerId,
        TransactionalId,
    };
    const PARTITIONS: i32 = 8;
    within(Duration::from_secs(150), || {
        let mut broker = TestBroker::start(2);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        let mut outcomes = Vec::new();
        for (round, delay_ms) in [0u64, 1, 3, 6, 12].into_iter().enumerate() {
            let topic = format!("kill-commit-{round}");
            create_topic_raw(&mut conn, &topic, PARTITIONS);
            let tid = TransactionalId(StrBytes::from_string(format!("kill-commit-{round}")));
            let init = conn
                .request(
                    4,
                    &InitProducerIdRequest::default()
                        .with_transactional_id(Some(tid.clone()))
                        .with_transaction_timeout_ms(60_000),
                )
                .expect("InitProducerId");
            let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
            let add = AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(tid.clone())
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions((0..PARTITIONS).collect())]);
            conn.request(3, &add).expect("AddPartitionsToTxn");
            for p in 0..PARTITIONS {
                let request = ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(30_000)
                    .with_transactional_id(Some(tid.clone()))
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(transactional_batch(pid, epoch, 0, 3)))])]);
                let response: ProduceResponse = conn.request(9, &request).expect("Produce");
                assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
            }
            let end = EndTxnRequest::default()
                .with_transactional_id(tid.clone())
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_committed(true);
            conn.send(3, &end).expect("send EndTxn");
            // Not synchronization: the kill lands this long into the commit, the variable
            // under test.
            std::thread::sleep(Duration::from_millis(delay_ms));
            broker.kill9();
            broker.start_again();
            conn = RawConn::connect(broker.socket_addr()).unwrap();
            // Wait for the recovered coordinator to settle the transaction.
            let deadline = Instant::now() + Duration::from_secs(20);
            let state = loop {
                let d = conn
                    .request(
                        0,
                        &DescribeTransactionsRequest::default()
                            .with_transactional_ids(vec![tid.clone()]),
                    )
                    .expect("DescribeTransactions");
                let state = d.transaction_states[0].transaction_state.to_string();
                if state == "CompleteCommit" || state == "CompleteAbort" {
                    break state;
                }
                assert!(Instant::now() < deadline, "round {round}: stuck in {state}");
                std::thread::sleep(Duration::from_millis(100));
            };
            let visible = read_all(&broker.addr(), &topic, PARTITIONS, "read_committed").len();
            let all = read_all(&broker.addr(), &topic, PARTITIONS, "read_uncommitted").len();
            assert_eq!(
                all,
                3 * PARTITIONS as usize,
                "round {round}: acknowledged data kept"
            );
            let expected = if state == "CompleteCommit" { all } else { 0 };
            assert_eq!(
                visible, expected,
                "round {round} (kill after {delay_ms} ms): {state} but {visible} of {all} visible"
            );
            outcomes.push(state);
        }
        eprintln!("outcomes by kill delay: {outcomes:?}");
    })
}

/// (error code, state) of `id` from DescribeTransactions.
fn describe_txn(conn: &mut RawConn, id: &str) -> (i16, String) {
    use kafka_protocol::messages::{DescribeTransactionsRequest, TransactionalId};
    let described = conn
        .request(
            0,
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(
                StrBytes::from_string(id.to_string()),
            )]),
        )
        .expect("DescribeTransactions");
    let t = &described.transaction_states[0];
    (t.error_code, t.transaction_state.to_string())
}

/// With a tiny `transactional_id_expiration_ms` (config file), a transactional id whose
/// transaction completed is removed once idle that long, durably (still gone after a
/// restart), while one with an open transaction stays; the id can then be used afresh.
#[test]
fn idle_transactional_ids_expire() {
    const TRANSACTIONAL_ID_NOT_FOUND: i16 = ResponseError::TransactionalIdNotFound.code();
    within(Duration::from_secs(120), || {
        let (_dir, config) = common::config_file("transactional_id_expiration_ms = 2000\ntransactional_id_expiration_check_interval_ms = 1000\n");
        let mut broker = TestBroker::start_with(2, &["--config", config.to_str().unwrap()]);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_topic_raw(&mut conn, "exp", 1);
        let done = txn_producer(&broker.addr(), "txn-exp", &[]);
        done.begin_transaction().unwrap();
        send_all(&done, "exp", 1, &values("committed", 2));
        done.commit_transaction(TXN_OP_TIMEOUT).unwrap();
        drop(done);
        let open = txn_producer(
            &broker.addr(),
            "txn-open",
            &[("transaction.timeout.ms", "60000")],
        );
        open.begin_transaction().unwrap();
        send_all(&open, "exp", 1, &values("open", 1));
        assert_eq!(
            describe_txn(&mut conn, "txn-exp"),
            (0, "CompleteCommit".into())
        );
        common::wait_until(Duration::from_secs(20), "txn-exp to expire", || {
            describe_txn(&mut conn, "txn-exp").0 == TRANSACTIONAL_ID_NOT_FOUND
        });
        assert_eq!(
            describe_txn(&mut conn, "txn-open"),
            (0, "Ongoing".into()),
            "an open transaction's id does not expire"
        );
        drop(open);
        broker.restart();
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        assert_eq!(
            describe_txn(&mut conn, "txn-exp").0,
            TRANSACTIONAL_ID_NOT_FOUND,
            "the expiry is durable"
        );
        // The id starts over.
        let again = txn_producer(&broker.addr(), "txn-exp", &[]);
        again.begin_transaction().unwrap();
        send_all(&again, "exp", 1, &values("again", 1));
        again.commit_transaction(TXN_OP_TIMEOUT).unwrap();
        assert_eq!(
            describe_txn(&mut conn, "txn-exp"),
            (0, "CompleteCommit".into())
        );
    })
}

/// The transaction log is compacted while the broker runs (at an expiration check), not only
/// at start: 1,200 state changes of one id collapse to its live record, and the state read
/// back after a restart is the latest one.
#[test]
fn transaction_log_is_compacted_while_running() {
    within(Duration::from_secs(120), || {
        let (_dir, config) =
            common::config_file("transactional_id_expiration_check_interval_ms = 500\n");
        let mut broker = TestBroker::start_with(2, &["--config", config.to_str().unwrap()]);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        let init = |conn: &mut RawConn| {
            let r = conn
                .request(
                    4,
                    &InitProducerIdRequest::default()
                        .with_transactional_id(Some(kafka_protocol::messages::TransactionalId(
                            StrBytes::from_static_str("txn-compact"),
                        )))
                        .with_transaction_timeout_ms(60_000),
                )
                .expect("InitProducerId");
            assert_eq!(r.error_code, 0);
            (r.producer_id.0, r.producer_epoch)
        };
        let (pid, _) = init(&mut conn);
        // Every InitProducerId bumps the epoch: one record each.
        let mut last = (pid, 0);
        for _ in 0..1_200 {
            last = init(&mut conn);
        }
        assert_eq!(last.0, pid);
        common::wait_until(
            Duration::from_secs(20),
            "the transaction log to be compacted while running",
            || broker.log().contains("transaction log compacted"),
        );
        broker.restart();
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        assert_eq!(init(&mut conn), (pid, last.1 + 1), "latest state survived");
        // The broker's log lines carry colour codes: drop them.
        let mut log = String::new();
        let mut in_escape = false;
        for c in broker.log().chars() {
            match c {
                '\u{1b}' => in_escape = true,
                'm' if in_escape => in_escape = false,
                _ if in_escape => {}
                _ => log.push(c),
            }
        }
        let loaded = log
            .lines()
            .rfind(|l| l.contains("transaction state loaded"))
            .expect("load logged");
        let records: usize = loaded
            .split("records=")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("records field in {loaded:?}"));
        assert!(
            records < 1_000,
            "the restart read a compacted log: {loaded}"
        );
    })
}
