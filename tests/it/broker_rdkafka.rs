//! Broker-core scenarios (issue 3) driven by librdkafka through the `rdkafka` crate.
//!
//! Every scenario starts its own real `freshet` broker and runs twice: with 1 shard and with 2
//! shards (`<scenario>::one_shard`, `<scenario>::two_shards`). Consumers are assigned to
//! partitions with explicit offsets and never subscribe or commit (group consumers are tested with
//! the Python clients in tests/python).

use crate::common;
use common::runtime;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{RawConn, TestBroker};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage, Timestamp};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Timeout for one client operation (metadata, admin call, list offsets).
const OP_TIMEOUT: Duration = Duration::from_secs(30);

shard_scenarios! {
    keyed_produce_to_many_partitions_keeps_per_partition_order => 120;
    produce_with_acks_0_1_and_all_stores_everything_in_order => 90;
    every_compression_codec_round_trips => 120;
    headers_round_trip_in_order => 60;
    null_and_empty_keys_and_values_round_trip_distinctly => 60;
    one_megabyte_message_round_trips_with_raised_limits => 90;
    message_larger_than_max_message_bytes_gets_message_too_large => 90;
    topic_with_200_partitions_serves_every_partition => 180;
    topics_can_be_created_described_and_deleted => 120;
    create_partitions_adds_usable_partitions => 90;
    producing_to_unknown_topic_auto_creates_it_with_default_partitions => 60;
    unknown_topic_is_not_created_when_auto_create_is_off => 60;
    topic_configs_round_trip_through_describe_alter_and_incremental_alter => 90;
    broker_configs_are_described_with_kafka_names => 60;
    clean_restart_keeps_topics_configs_and_data => 120;
    kill_9_keeps_every_acknowledged_message => 180;
    assigned_consumer_reads_from_explicit_offsets => 90;
    fetch_from_offset_out_of_range_gets_offset_out_of_range => 60;
    consumer_waiting_at_end_is_woken_by_new_messages => 60;
    list_offsets_earliest_latest_and_by_timestamp => 90;
    log_append_time_topic_stamps_broker_time => 60;
    delete_records_moves_log_start_offset_durably => 120;
    retention_deletes_old_segments_by_size_and_by_time => 120;
    small_segment_bytes_is_refused_or_rolls_segments_without_crashing => 90;
    three_group_consumers_split_partitions_and_lose_no_message => 120;
}

// ---------------------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------------------

fn client_config(broker: &TestBroker, extra: &[(&str, &str)]) -> ClientConfig {
    common::client_config_with(
        broker,
        &[&[("reconnect.backoff.max.ms", "500")], extra].concat(),
    )
}

/// A producer with acks=all (librdkafka's default), short linger, and bounded delivery time.
fn producer(broker: &TestBroker, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = client_config(broker, &[]);
    config
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("create producer")
}

/// A consumer whose partitions are assigned explicitly; it never subscribes or commits, so the
/// group.id (librdkafka refuses assign() without one) never reaches a group coordinator.
/// CRCs are verified.
fn consumer(broker: &TestBroker, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut config = client_config(broker, &[]);
    config
        .set("group.id", "assign-only-never-joins")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("check.crcs", "true")
        .set("fetch.wait.max.ms", "100");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("create consumer")
}

fn admin(broker: &TestBroker) -> AdminClient<DefaultClientContext> {
    client_config(broker, &[])
        .create()
        .expect("create admin client")
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(OP_TIMEOUT))
        .operation_timeout(Some(OP_TIMEOUT))
}

fn create_topic(broker: &TestBroker, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    common::create_topic_via_admin(&client_config(broker, &[]), &topic, &admin_options());
}

/// Partition count of `topic` as the broker's metadata reports it, or the topic's error.
fn partition_count(broker: &TestBroker, topic: &str) -> Result<usize, RDKafkaErrorCode> {
    let c = consumer(broker, &[]);
    let metadata = c
        .fetch_metadata(Some(topic), OP_TIMEOUT)
        .expect("Metadata request");
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("topic in metadata reply");
    match t.error() {
        Some(err) => Err(err.into()),
        None => Ok(t.partitions().len()),
    }
}

/// Names of all topics in a Metadata reply for all topics.
fn topic_names(broker: &TestBroker) -> HashSet<String> {
    let c = consumer(broker, &[]);
    let metadata = c
        .fetch_metadata(None, OP_TIMEOUT)
        .expect("Metadata request");
    metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .collect()
}

/// Waits for every delivery; returns (partition, offset) or the error of each, in send order.
fn await_deliveries(futures: Vec<DeliveryFuture>) -> Vec<Result<Delivery, KafkaError>> {
    runtime().block_on(async {
        let mut out = Vec::with_capacity(futures.len());
        for f in futures {
            let result = tokio::time::timeout(Duration::from_secs(60), f)
                .await
                .expect("delivery report within 60 s")
                .expect("delivery future not cancelled");
            out.push(result.map_err(|(err, _msg)| err));
        }
        out
    })
}

fn await_all_ok(futures: Vec<DeliveryFuture>) -> Vec<Delivery> {
    await_deliveries(futures)
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("message #{i} not acknowledged: {e}")))
        .collect()
}

/// Sends one record and waits for its acknowledgement.
fn send_one(
    producer: &FutureProducer,
    record: FutureRecord<'_, [u8], [u8]>,
) -> Result<Delivery, KafkaError> {
    let f = producer
        .send_result(record)
        .map_err(|(e, _)| e)
        .expect("enqueue message");
    await_deliveries(vec![f]).pop().unwrap()
}

fn assign(consumer: &BaseConsumer, parts: &[(&str, i32, Offset)]) {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in parts {
        tpl.add_partition_offset(topic, *partition, *offset)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
}

/// Polls until exactly `n` messages arrived; any consumer error fails the test.
fn consume(consumer: &BaseConsumer, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "consumed only {} of {n} messages within {timeout:?}",
            out.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => panic!("consumer error after {} of {n} messages: {e}", out.len()),
        }
    }
    out
}

/// Polls for `wait` and fails if any message or error arrives.
fn assert_nothing_more(consumer: &BaseConsumer, wait: Duration) {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(r) = consumer.poll(Duration::from_millis(100)) {
            match r {
                Ok(m) => panic!(
                    "unexpected extra message {}[{}]@{}",
                    m.topic(),
                    m.partition(),
                    m.offset()
                ),
                Err(e) => panic!("unexpected consumer error: {e}"),
            }
        }
    }
}

fn watermarks(broker: &TestBroker, topic: &str, partition: i32) -> (i64, i64) {
    consumer(broker, &[])
        .fetch_watermarks(topic, partition, OP_TIMEOUT)
        .expect("ListOffsets")
}

/// Deterministic incompressible bytes (xorshift64*).
fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn error_code(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

fn describe_topic_configs(
    broker: &TestBroker,
    topic: &str,
) -> BTreeMap<String, (Option<String>, bool, ConfigSource)> {
    let results = runtime()
        .block_on(
            admin(broker).describe_configs([&ResourceSpecifier::Topic(topic)], &admin_options()),
        )
        .expect("DescribeConfigs request");
    let resource = results
        .into_iter()
        .next()
        .unwrap()
        .expect("DescribeConfigs topic result");
    resource
        .entries
        .into_iter()
        .map(|e| (e.name, (e.value, e.is_default, e.source)))
        .collect()
}

fn config_value(
    configs: &BTreeMap<String, (Option<String>, bool, ConfigSource)>,
    name: &str,
) -> String {
    configs
        .get(name)
        .unwrap_or_else(|| panic!("config {name} not described; got {:?}", configs.keys()))
        .0
        .clone()
        .unwrap_or_else(|| panic!("config {name} has no value"))
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

// Keyed messages spread over 8 partitions; each key stays in one partition and keeps its order.
fn keyed_produce_to_many_partitions_keeps_per_partition_order(shards: usize) {
    let broker = TestBroker::start(shards);
    let topic = "keyed";
    let partitions = 8;
    create_topic(&broker, topic, partitions, &[]);
    let p = producer(&broker, &[]);
    let (keys, per_key) = (40, 50);
    let mut futures = Vec::new();
    let mut sent = Vec::new();
    for seq in 0..per_key {
        for k in 0..keys {
            let key = format!("key-{k}");
            let value = format!("{key}:{seq}");
            let record = FutureRecord::to(topic)
                .key(key.as_bytes())
                .payload(value.as_bytes());
            futures.push(p.send_result(record).map_err(|(e, _)| e).expect("enqueue"));
            sent.push((key, value));
        }
    }
    let deliveries = await_all_ok(futures);

    // The broker's acknowledged offsets are dense per partition: 0..count.
    let mut offsets_by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for d in &deliveries {
        offsets_by_partition
            .entry(d.partition)
            .or_default()
            .push(d.offset);
    }
    assert!(
        offsets_by_partition.len() >= 4,
        "40 keys landed in only {:?}",
        offsets_by_partition.keys()
    );
    for (partition, offsets) in &mut offsets_by_partition {
        offsets.sort();
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(
            *offsets, expected,
            "acked offsets of partition {partition} are not 0..n"
        );
    }

    let c = consumer(&broker, &[]);
    let assignment: Vec<_> = (0..partitions)
        .map(|i| (topic, i, Offset::Beginning))
        .collect();
    assign(&c, &assignment);
    let messages = consume(&c, sent.len(), Duration::from_secs(60));
    assert_nothing_more(&c, Duration::from_millis(500));

    let acked: HashMap<(i32, i64), &(String, String)> = deliveries
        .iter()
        .zip(&sent)
        .map(|(d, s)| ((d.partition, d.offset), s))
        .collect();
    let mut partition_of_key: HashMap<String, i32> = HashMap::new();
    let mut last_seq_of_key: HashMap<String, i64> = HashMap::new();
    let mut last_offset: HashMap<i32, i64> = HashMap::new();
    for m in &messages {
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
        let (sent_key, sent_value) = acked[&(m.partition(), m.offset())];
        assert_eq!(
            (&key, &value),
            (sent_key, sent_value),
            "message at {}@{}",
            m.partition(),
            m.offset()
        );
        let p0 = *partition_of_key.entry(key.clone()).or_insert(m.partition());
        assert_eq!(p0, m.partition(), "key {key} appears in two partitions");
        let seq: i64 = value.rsplit(':').next().unwrap().parse().unwrap();
        let prev = last_seq_of_key.insert(key.clone(), seq).unwrap_or(-1);
        assert_eq!(seq, prev + 1, "key {key}: sequence {seq} after {prev}");
        let prev_offset = last_offset.insert(m.partition(), m.offset()).unwrap_or(-1);
        assert_eq!(
            m.offset(),
            prev_offset + 1,
            "partition {} offsets not consecutive",
            m.partition()
        );
    }
}

// acks=0 (no response at all), acks=1 and acks=all each store every message, in order; an
// answer to an acks=0 request would break the client's pipelining, so this also checks silence.
fn produce_with_acks_0_1_and_all_stores_everything_in_order(shards: usize) {
    let broker = TestBroker::start(shards);
    let topic = "acks";
    create_topic(&broker, topic, 1, &[]);
    let mut expected = Vec::new();
    for acks in ["0", "1", "all"] {
        let p = producer(&broker, &[("acks", acks), ("linger.ms", "1")]);
        let mut futures = Vec::new();
        for i in 0..300 {
            let v = format!("acks={acks} #{i}");
            futures.push(
                p.send_result(FutureRecord::<[u8], [u8]>::to(topic).payload(v.as_bytes()))
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
            expected.push(v);
        }
        let deliveries = await_all_ok(futures);
        // acks=0 messages count as delivered once sent: wait until the broker has them all
        // before the next producer (another connection) writes.
        let deadline = Instant::now() + Duration::from_secs(20);
        while watermarks(&broker, topic, 0).1 < expected.len() as i64 {
            assert!(
                Instant::now() < deadline,
                "acks={acks}: high watermark {:?}, sent {}",
                watermarks(&broker, topic, 0),
                expected.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if acks != "0" {
            // With acks=0 librdkafka reports no offsets; otherwise they continue densely.
            let first = expected.len() as i64 - 300;
            let offsets: Vec<i64> = deliveries.iter().map(|d| d.offset).collect();
            assert_eq!(
                offsets,
                (first..first + 300).collect::<Vec<_>>(),
                "acks={acks} offsets"
            );
        }
    }
    assert_eq!(watermarks(&broker, topic, 0), (0, 900));
    let c = consumer(&broker, &[]);
    assign(&c, &[(topic, 0, Offset::Beginning)]);
    let got: Vec<String> = consume(&c, 900, Duration::from_secs(60))
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(got, expected);
}

// Batches compressed with each codec are stored and served so the consumer decodes them exactly.
fn every_compression_codec_round_trips(shards: usize) {
    let broker = TestBroker::start(shards);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create_topic(&broker, &topic, 2, &[]);
        let p = producer(&broker, &[("compression.type", codec), ("linger.ms", "20")]);
        let n = 600;
        let mut futures = Vec::new();
        let values: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                // Half repetitive text (compresses), half random (does not).
                let mut v = format!("{codec} message {i} ").repeat(20).into_bytes();
                v.extend(pseudo_random_bytes(200, i as u64 + 7));
                v
            })
            .collect();
        for (i, v) in values.iter().enumerate() {
            let key = format!("k{i}");
            let record = FutureRecord::to(&topic)
                .key(key.as_bytes())
                .payload(v.as_slice())
                .partition((i % 2) as i32);
            futures.push(p.send_result(record).map_err(|(e, _)| e).expect("enqueue"));
        }
        let deliveries = await_all_ok(futures);
        let c = consumer(&broker, &[]);
        assign(
            &c,
            &[
                (&topic, 0, Offset::Beginning),
                (&topic, 1, Offset::Beginning),
            ],
        );
        let messages = consume(&c, n, Duration::from_secs(60));
        let by_pos: HashMap<(i32, i64), usize> = deliveries
            .iter()
            .enumerate()
            .map(|(i, d)| ((d.partition, d.offset), i))
            .collect();
        for m in &messages {
            let i = by_pos[&(m.partition(), m.offset())];
            assert_eq!(
                m.key(),
                Some(format!("k{i}").as_bytes()),
                "codec {codec}: key of message {i}"
            );
            assert!(
                m.payload() == Some(values[i].as_slice()),
                "codec {codec}: payload of message {i} differs"
            );
        }
        assert_nothing_more(&c, Duration::from_millis(300));
    }
}

// Record headers come back with the same keys, values (including null and empty), and order.
fn headers_round_trip_in_order(shards: usize) {
    let broker = TestBroker::start(shards);
    let topic = "headers";
    create_topic(&broker, topic, 1, &[]);
    let p = producer(&broker, &[]);
    let big = pseudo_random_bytes(10_000, 3);
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "trace-id",
            value: Some("abc-123"),
        })
        .insert(Header {
            key: "dup",
            value: Some("first"),
        })
        .insert(Header {
            key: "dup",
            value: Some("second"),
        })
        .insert(Header {
            key: "null-value",
            value: None::<&[u8]>,
        })
        .insert(Header {
            key: "empty-value",
            value: Some(""),
        })
        .insert(Header {
            key: "binary",
            value: Some(&big[..]),
        })
        .insert(Header {
            key: "ünïcode-kéy",
            value: Some("värde"),
        });
    let expected: Vec<(String, Option<Vec<u8>>)> = (0..headers.count())
        .map(|i| {
            let h = headers.get(i);
            (h.key.to_string(), h.value.map(|v| v.to_vec()))
        })
        .collect();
    let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
        .key(&b"k"[..])
        .payload(&b"with headers"[..])
        .headers(headers);
    send_one(&p, record).expect("produce with headers");
    let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(&b"no headers"[..]);
    send_one(&p, record).expect("produce without headers");

    let c = consumer(&broker, &[]);
    assign(&c, &[(topic, 0, Offset::Beginning)]);
    let messages = consume(&c, 2, Duration::from_secs(30));
    let got: Vec<(String, Option<Vec<u8>>)> = messages[0]
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(got, expected);
    assert_eq!(
        messages[1].headers().map(|h| h.count()).unwrap_or(0),
        0,
        "second message has no headers"
    );
}

// A null key or value is not the same as an empty one, and each comes back as it was sent.
fn null_and_empty_keys_and_values_round_trip_distinctly(shards: usize) {
    let broker = TestBroker::start(shards);
    let topic = "nulls";
    create_topic(&broker, topic, 1, &[]);
    let p = producer(&broker, &[]);
    type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
    let cases: Vec<KeyValue> = vec![
        (None, Some(b"value, no key")),
        (Some(b"key, no value"), None),
        (None, None),
        (Some(b""), Some(b"")),
        (Some(b""), None),
        (None, Some(b"")),
        (Some(b"k"), Some(b"v")),
    ];
    let mut futures = Vec::new();
    for (key, value) in &cases {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(k) = key {
            record = record.key(*k);
        }
        if let Some(v) = value {
            record = record.payload(*v);
        }
        futures.push(p.send_result(record).map_err(|(e, _)| e).expect("enqueue"));
    }
    await_all_ok(futures);
    let c = consumer(&broker, &[]);
    assign(&c, &[(topic, 0, Offset::Beginning)]);
    let messages = consume(&c, cases.len(), Duration::from_secs(30));
    for (i, ((key, value), m)) in cases.iter().zip(&messages).enumerate() {
        assert_eq!(m.offset(), i as i64);
        assert_eq!(m.key(), *key, "key of case {i}");
        assert_eq!(m.payload(), *value, "value of case {i}");
    }
}

// A 1 MiB value goes through when the topic's max.message.bytes and the producer's limit allow
// it; the consumer gets it with default fetch sizes (the first batch is returned even if larger).
fn one_megabyte_message_round_trips_with_raised_limits(shards: usize) {
    let broker = TestBroker::start(shards);
    let topic = "big";
    create_topic(&broker, topic, 1, &[("max.message.bytes", "2097152")]);
    let p = producer(&broker, &[("message.max.bytes", "3000000")]);
    let value = pseudo_random_bytes(1024 * 1024, 42);
    let small = b"after the big one".to_vec();
    let d = send_one(
        &p,
        FutureRecord::to(topic).key(&b"big"[..]).payload(&value[..]),
    )
    .expect("produce 1 MiB");
    assert_eq!((d.partition, d.offset), (0, 0));
    send_one(&p, FutureRecord::to(topic).payload(&small[..])).expect("produce small after big");

    // Both fetch limits are below the batch size (librdkafka needs fetch.max.bytes >= its
    // message.max.bytes, 1000000 by default).
    let c = consumer(
        &broker,
        &[
            ("max.partition.fetch.bytes", "65536"),
            ("fetch.max.bytes", "1000000"),
        ],
    );
    assign(&c, &[(topic, 0, Offset::Beginning)]);
    let messages = consume(&c, 2, Duration::from_secs(30));
    assert_eq!(messages[0].payload().map(|p| p.len()), Some(value.len()));
    assert!(
        messages[0].payload() == Some(&value[..]),
        "1 MiB payload differs"
    );
    assert_eq!(messages[1].payload(), Some(&small[..]));
}

// A batch larger than the topic's max.message.bytes is rejected with MESSAGE_TOO_LARGE and not
// stored; smaller messages to the same topic are still accepted.
fn message_larger_than_max_message_bytes_gets_message_too_large(shards: usize) {
    let broker = TestBroker::start(shards);
    // The producer's own limit is raised so that the broker, not librdkafka, does the rejecting.
    let p = producer(
        &broker,
        &[("message.max.bytes", "10000000"), ("retries", "0")],
    );

    // Topic with Kafka's default limit (1048588 bytes): a 2 MiB message is too large.
    create_topic(&broker, "default-limit", 1, &[]);
    let big = pseudo_random_bytes(2 * 1024 * 1024, 1);
    let err = send_one(&p, FutureRecord::to("default-limit").payload(&big[..]))
        .expect_err("2 MiB must be rejected");
    assert_eq!(
        error_code(&err),
        Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "got {err}"
    );

    // Topic with an explicit small limit.
    create_topic(&broker, "small-limit", 1, &[("max.message.bytes", "10240")]);
    let medium = pseudo_random_bytes(20 * 1024, 2);
    let err = send_one(&p, FutureRecord::to("small-limit").payload(&medium[..]))
        .expect_err("20 KiB must be rejected");
    assert_eq!(
        error_code(&err),
        Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "got {err}"
    );
    let fits = pseudo_random_bytes(5 * 1024, 3);
    let d = send_one(&p, FutureRecord::to("small-limit").payload(&fits[..])).expect("5 KiB fits");
    assert_eq!(
        d.offset, 0,
        "the rejected message must not have taken an offset"
    );
    let d =
        send_one(&p, FutureRecord::to("default-limit").payload(&b"small"[..])).expect("small fits");
    assert_eq!(
        d.offset, 0,
        "the rejected message must not have taken an offset"
    );
    assert_eq!(watermarks(&broker, "small-limit", 0), (0, 1));
}

// A 200-partition topic is listed with 200 led partitions and each one stores and serves data.
fn topic_with_200_partitions_serves_every_partition(shards: usize) {
    let broker = TestBroker::start(shards);
    let topic = "wide";
    create_topic(&broker, topic, 200, &[]);
    let c = consumer(&broker, &[]);
    let metadata = c.fetch_metadata(Some(topic), OP_TIMEOUT).expect("metadata");
    let t = &metadata.topics()[0];
    assert_eq!(t.partitions().len(), 200);
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort();
    assert_eq!(ids, (0..200).collect::<Vec<_>>());
    for part in t.partitions() {
        assert!(
            part.error().is_none(),
            "partition {} error {:?}",
            part.id(),
            part.error()
        );
        assert_eq!(part.leader(), 0, "partition {} leader", part.id());
    }

    let p = producer(&broker, &[]);
    let mut futures = Vec::new();
    for round in 0..3 {
        for partition in 0..200 {
            let value = format!("p{partition}-r{round}");
            let record = FutureRecord::<[u8], [u8]>::to(topic)
                .payload(value.as_bytes())
                .partition(partition);
            futures.push(p.send_result(record).map_err(|(e, _)| e).expect("enqueue"));
        }
    }
    let deliveries = await_all_ok(futures);
    for (i, d) in deliveries.iter().enumerate() {
        assert_eq!(
            (d.partition, d.offset),
            ((i % 200) as i32, (i / 200) as i64)
        );
    }
    let assignment: Vec<_> = (0..200).map(|i| (topic, i, Offset::Beginning)).collect();
    assign(&c, &assignment);
    let messages = consume(&c, 600, Duration::from_secs(90));
    for m in &messages {
        let expected = format!("p{}-r{}", m.partition(), m.offset());
        assert_eq!(m.payload(), Some(expected.as_bytes()));
    }
    for partition in [0, 99, 199] {
        assert_eq!(watermarks(&broker, topic, partition), (0, 3));
    }
}

// CreateTopics, Metadata and DeleteTopics behave like Kafka's, errors included.
fn topics_can_be_created_described_and_deleted(shards: usize) {
    let broker = TestBroker::start(shards);
    let a = admin(&broker);
    let rt = runtime();
    let t1 = NewTopic::new("alpha", 3, TopicReplication::Fixed(1));
    let t2 = NewTopic::new("beta", 1, TopicReplication::Fixed(1));
    let t3 =
        NewTopic::new("gamma", 12, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let results = rt
        .block_on(a.create_topics([&t1, &t2, &t3], &admin_options()))
        .unwrap();
    assert_eq!(
        results,
        vec![Ok("alpha".into()), Ok("beta".into()), Ok("gamma".into())]
    );
    assert_eq!(partition_count(&broker, "alpha"), Ok(3));
    assert_eq!(partition_count(&broker, "beta"), Ok(1));
    assert_eq!(partition_count(&broker, "gamma"), Ok(12));
    let names = topic_names(&broker);
    for t in ["alpha", "beta", "gamma"] {
        assert!(names.contains(t), "{t} missing from {names:?}");
    }

    // Creating an existing topic fails with TOPIC_ALREADY_EXISTS.
    let again = NewTopic::new("alpha", 5, TopicReplication::Fixed(1));
    let results = rt
        .block_on(a.create_topics([&again], &admin_options()))
        .unwrap();
    assert_eq!(
        results,
        vec![Err(("alpha".into(), RDKafkaErrorCode::TopicAlreadyExists))]
    );
    assert_eq!(partition_count(&broker, "alpha"), Ok(3));

    // validate_only checks but creates nothing.
    let dry = NewTopic::new("dry-run", 4, TopicReplication::Fixed(1));
    let results = rt
        .block_on(a.create_topics([&dry], &admin_options().validate_only(true)))
        .unwrap();
    assert_eq!(results, vec![Ok("dry-run".into())]);
    assert!(
        !topic_names(&broker).contains("dry-run"),
        "validate_only created the topic"
    );

    // Replication factor 3 cannot be satisfied by one broker.
    let rf3 = NewTopic::new("rf3", 1, TopicReplication::Fixed(3));
    let results = rt
        .block_on(a.create_topics([&rf3], &admin_options()))
        .unwrap();
    assert_eq!(
        results,
        vec![Err((
            "rf3".into(),
            RDKafkaErrorCode::InvalidReplicationFactor
        ))]
    );

    // Write into beta, delete it, and it is gone from metadata.
    let p = producer(&broker, &[]);
    send_one(&p, FutureRecord::to("beta").payload(&b"soon deleted"[..])).expect("produce to beta");
    let results = rt
        .block_on(a.delete_topics(&["beta"], &admin_options()))
        .unwrap();
    assert_eq!(results, vec![Ok("beta".into())]);
    let names = topic_names(&broker);
    assert!(
        !names.contains("beta"),
        "beta still listed after delete: {names:?}"
    );
    assert!(names.contains("alpha") && names.contains("gamma"));

    // Deleting an unknown topic fails with UNKNOWN_TOPIC_OR_PARTITION.
    let results = rt
        .block_on(a.delete_topics(&["no-such-topic"], &admin_options()))
        .unwrap();
    assert_eq!(
        results,
        vec![Err((
            "no-such-topic".into(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))]
    );

    // A recreated topic of the same name starts empty with its new partition count.
    let beta2 = NewTopic::new("beta", 2, TopicReplication::Fixed(1));
    let results = rt
        .block_on(a.create_topics([&beta2], &admin_options()))
        .unwrap();
    assert_eq!(results, vec![Ok("beta".into())]);
    assert_eq!(partition_count(&broker, "beta"), Ok(2));
    assert_eq!(
        watermarks(&broker, "beta", 0),
        (0, 0),
        "recreated topic must be empty"
    );
}

// CreatePartitions grows a topic and the new partitions take writes; shrinking is refused.
fn create_partitions_adds_usable_partitions(shards: usize) {
    let broker = TestBroker::start(shards);
    create_topic(&broker, "growing", 2, &[]);
    let a = admin(&broker);
    let rt = runtime();
    let results = rt
        .block_on(a.create_partitions([&NewPartitions::new("growing", 5)], &admin_options()))
        .unwrap();
    assert_eq!(results, vec![Ok("growing".into())]);
    assert_eq!(partition_count(&broker, "growing"), Ok(5));
    let p = producer(&broker, &[]);
    let d = send_one(
        &p,
        FutureRecord::to("growing")
            .payload(&b"to p4"[..])
            .partition(4),
    )
    .expect("produce to new partition");
    assert_eq!((d.partition, d.offset), (4, 0));
    let results = rt
        .block_on(a.create_partitions([&NewPartitions::new("growing", 3)], &admin_options()))
        .unwrap();
    assert_eq!(
        results,
        vec![Err(("growing".into(), RDKafkaErrorCode::InvalidPartitions))]
    );
}

// With auto-creation on (the default), producing to an unknown topic creates it with
// --default-partitions partitions.
fn producing_to_unknown_topic_auto_creates_it_with_default_partitions(shards: usize) {
    let broker = TestBroker::start_with(shards, &["--default-partitions", "3"]);
    let p = producer(&broker, &[]);
    let d = send_one(
        &p,
        FutureRecord::to("born-on-produce")
            .key(&b"k"[..])
            .payload(&b"v"[..]),
    )
    .expect("produce to a new topic");
    assert_eq!(d.offset, 0);
    assert_eq!(partition_count(&broker, "born-on-produce"), Ok(3));
    let c = consumer(&broker, &[]);
    assign(&c, &[("born-on-produce", d.partition, Offset::Beginning)]);
    let m = consume(&c, 1, Duration::from_secs(30));
    assert_eq!(m[0].payload(), Some(&b"v"[..]));
}

// With --auto-create-topics false, metadata for an unknown topic says UNKNOWN_TOPIC_OR_PARTITION
// and producing to it fails without creating it.
fn unknown_topic_is_not_created_when_auto_create_is_off(shards: usize) {
    let broker = TestBroker::start_with(shards, &["--auto-create-topics", "false"]);
    let p = producer(&broker, &[("message.timeout.ms", "5000")]);
    let err = send_one(&p, FutureRecord::to("not-there").payload(&b"v"[..]))
        .expect_err("must not be delivered");
    let code = error_code(&err);
    assert!(
        matches!(
            code,
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::MessageTimedOut
            )
        ),
        "unexpected error {err}"
    );
    assert_eq!(
        partition_count(&broker, "not-there"),
        Err(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
    assert!(!topic_names(&broker).contains("not-there"));
}

// Topic configs: create-time values, Kafka defaults, AlterConfigs (replaces the whole set),
// IncrementalAlterConfigs (SET and DELETE one key), and an unknown key rejected.
fn topic_configs_round_trip_through_describe_alter_and_incremental_alter(shards: usize) {
    let broker = TestBroker::start(shards);
    let topic = "configured";
    create_topic(
        &broker,
        topic,
        1,
        &[("retention.ms", "3600000"), ("cleanup.policy", "delete")],
    );

    let configs = describe_topic_configs(&broker, topic);
    assert_eq!(config_value(&configs, "retention.ms"), "3600000");
    assert!(
        !configs["retention.ms"].1,
        "retention.ms was set at creation, not default"
    );
    assert_eq!(configs["retention.ms"].2, ConfigSource::DynamicTopic);
    // Kafka's defaults for what was not set.
    assert_eq!(config_value(&configs, "retention.bytes"), "-1");
    assert_eq!(config_value(&configs, "segment.bytes"), "1073741824");
    assert_eq!(config_value(&configs, "max.message.bytes"), "1048588");
    assert_eq!(
        config_value(&configs, "message.timestamp.type"),
        "CreateTime"
    );
    assert!(
        configs["segment.bytes"].1,
        "segment.bytes should be reported as default"
    );

    // AlterConfigs replaces all dynamic topic configs: retention.ms falls back to its default.
    let a = admin(&broker);
    let rt = runtime();
    let alter = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("retention.bytes", "1000000");
    let results = rt
        .block_on(a.alter_configs([&alter], &admin_options()))
        .unwrap();
    assert!(results[0].is_ok(), "AlterConfigs: {:?}", results[0]);
    let configs = describe_topic_configs(&broker, topic);
    assert_eq!(config_value(&configs, "retention.bytes"), "1000000");
    assert_eq!(
        config_value(&configs, "retention.ms"),
        "604800000",
        "AlterConfigs must replace, not merge"
    );
    assert!(configs["retention.ms"].1);

    // An unknown config name is refused (INVALID_CONFIG) and changes nothing. rdkafka 0.38's
    // AlterConfigs result drops per-resource errors (always Ok), so this goes over the raw
    // protocol.
    {
        use kafka_protocol::messages::alter_configs_request as ac;
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        let request =
            kafka_protocol::messages::AlterConfigsRequest::default().with_resources(vec![
                ac::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_string(topic.to_string()))
                    .with_configs(vec![ac::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("no.such.config"))
                        .with_value(Some(StrBytes::from_static_str("1")))]),
            ]);
        let id = conn.send(2, &request).unwrap();
        let response = conn
            .receive::<kafka_protocol::messages::AlterConfigsRequest>(2, id)
            .unwrap();
        assert_eq!(
            response.responses[0].error_code,
            RDKafkaErrorCode::InvalidConfig as i16,
            "unknown config name accepted: {:?}",
            response.responses[0].error_message
        );
    }
    assert_eq!(
        config_value(&describe_topic_configs(&broker, topic), "retention.bytes"),
        "1000000"
    );

    // IncrementalAlterConfigs over the raw protocol (rdkafka 0.38 has no binding for it):
    // SET segment.bytes, DELETE retention.bytes, leaving the rest alone.
    let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("configured"))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("segment.bytes"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("16777216"))),
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.bytes"))
                    .with_config_operation(1),
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("max.message.bytes"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("500000"))),
            ]),
    ]);
    for version in [0, 1] {
        let response = conn
            .request(version, &request)
            .expect("IncrementalAlterConfigs");
        assert_eq!(response.responses.len(), 1);
        assert_eq!(
            response.responses[0].error_code, 0,
            "v{version}: {:?}",
            response.responses[0].error_message
        );
    }
    let configs = describe_topic_configs(&broker, topic);
    assert_eq!(config_value(&configs, "segment.bytes"), "16777216");
    assert_eq!(config_value(&configs, "max.message.bytes"), "500000");
    assert_eq!(config_value(&configs, "retention.bytes"), "-1");
    assert!(
        configs["retention.bytes"].1,
        "deleted key is back to default"
    );

    // And the new limit is enforced on produce.
    let p = producer(
        &broker,
        &[("message.max.bytes", "2000000"), ("retries", "0")],
    );
    let v = pseudo_random_bytes(600_000, 9);
    let err =
        send_one(&p, FutureRecord::to(topic).payload(&v[..])).expect_err("over the altered limit");
    assert_eq!(
        error_code(&err),
        Some(RDKafkaErrorCode::MessageSizeTooLarge)
    );
}

// DescribeConfigs on the broker lists its settings under Kafka's names and values.
fn broker_configs_are_described_with_kafka_names(shards: usize) {
    let broker = TestBroker::start_with(
        shards,
        &["--default-partitions", "4", "--auto-create-topics", "true"],
    );
    let results = runtime()
        .block_on(
            admin(&broker).describe_configs([&ResourceSpecifier::Broker(0)], &admin_options()),
        )
        .expect("DescribeConfigs");
    let resource = results
        .into_iter()
        .next()
        .unwrap()
        .expect("broker 0 config result");
    let entries: HashMap<String, Option<String>> = resource
        .entries
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    assert_eq!(
        entries.get("num.partitions"),
        Some(&Some("4".to_string())),
        "got {:?}",
        entries.keys()
    );
    assert_eq!(
        entries.get("auto.create.topics.enable"),
        Some(&Some("true".to_string()))
    );
    assert!(entries
        .get("log.retention.hours")
        .or(entries.get("log.retention.ms"))
        .is_some());
}

// SIGTERM shuts the broker down cleanly; after a restart topics, configs and data are there and
// new writes continue at the right offsets.
fn clean_restart_keeps_topics_configs_and_data(shards: usize) {
    let mut broker = TestBroker::start(shards);
    create_topic(&broker, "kept", 3, &[("retention.ms", "7200000")]);
    create_topic(&broker, "kept-too", 1, &[]);
    let mut sent: Vec<(i32, i64, String)> = Vec::new();
    {
        let p = producer(&broker, &[]);
        let futures: Vec<_> = (0..300)
            .map(|i| {
                let v = format!("before-{i}");
                p.send_result(
                    FutureRecord::<[u8], [u8]>::to("kept")
                        .payload(v.as_bytes())
                        .partition(i % 3),
                )
                .map_err(|(e, _)| e)
                .expect("enqueue")
            })
            .collect();
        for (i, d) in await_all_ok(futures).into_iter().enumerate() {
            sent.push((d.partition, d.offset, format!("before-{i}")));
        }
    }
    broker.restart();

    assert_eq!(partition_count(&broker, "kept"), Ok(3));
    assert_eq!(partition_count(&broker, "kept-too"), Ok(1));
    assert_eq!(
        config_value(&describe_topic_configs(&broker, "kept"), "retention.ms"),
        "7200000"
    );
    for partition in 0..3 {
        assert_eq!(watermarks(&broker, "kept", partition), (0, 100));
    }
    let c = consumer(&broker, &[]);
    assign(
        &c,
        &[
            ("kept", 0, Offset::Beginning),
            ("kept", 1, Offset::Beginning),
            ("kept", 2, Offset::Beginning),
        ],
    );
    let messages = consume(&c, 300, Duration::from_secs(60));
    let got: HashSet<(i32, i64, String)> = messages
        .iter()
        .map(|m| {
            (
                m.partition(),
                m.offset(),
                String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(got, sent.into_iter().collect::<HashSet<_>>());

    let p = producer(&broker, &[]);
    let d = send_one(
        &p,
        FutureRecord::to("kept").payload(&b"after"[..]).partition(1),
    )
    .expect("produce after restart");
    assert_eq!((d.partition, d.offset), (1, 100));
    // A second restart right away also works (nothing left half-open by the first).
    broker.restart();
    assert_eq!(watermarks(&broker, "kept", 1), (0, 101));
}

// Messages acknowledged with acks=all survive kill -9 of the broker mid-stream: after restart
// each one is at its acknowledged offset, and the log has no holes and no corrupt batches.
fn kill_9_keeps_every_acknowledged_message(shards: usize) {
    let mut broker = TestBroker::start(shards);
    let topic = "durable";
    create_topic(&broker, topic, 2, &[]);
    let p = producer(
        &broker,
        &[("message.timeout.ms", "20000"), ("linger.ms", "2")],
    );
    let enqueue = |range: std::ops::Range<usize>| -> (Vec<String>, Vec<DeliveryFuture>) {
        range
            .map(|i| {
                let v = format!("durable-{i}-{}", "x".repeat(100));
                let record = FutureRecord::<[u8], [u8]>::to(topic)
                    .payload(v.as_bytes())
                    .partition((i % 2) as i32);
                let f = p.send_result(record).map_err(|(e, _)| e).expect("enqueue");
                (v, f)
            })
            .unzip()
    };
    let mut acked: HashMap<(i32, i64), String> = HashMap::new();
    let mut record_ack = |d: &Delivery, v: &String| {
        let previous = acked.insert((d.partition, d.offset), v.clone());
        assert!(
            previous.is_none(),
            "two messages acked at {}@{}",
            d.partition,
            d.offset
        );
    };

    // Phase 1: all acknowledged before the kill.
    let (values, futures) = enqueue(0..5_000);
    for (v, d) in values.iter().zip(await_all_ok(futures)) {
        record_ack(&d, v);
    }
    // Phase 2: kill -9 while many produce requests are in flight; whatever the client gets
    // acknowledged (before the kill, or by retrying against the restarted broker) must be kept.
    let produced = broker.requests_handled("Produce");
    let (values, futures) = enqueue(5_000..20_000);
    crate::common::wait_until(
        Duration::from_secs(20),
        "the broker to answer the first produce requests of phase 2",
        || broker.requests_handled("Produce") > produced,
    );
    broker.kill9();
    // The dead broker's listening socket can accept for a few ms after SIGKILL (its io_uring is
    // torn down asynchronously); restarting into that window is covered by broker_process.rs.
    broker.wait_port_closed();
    broker.start_again();
    let mut acked_in_phase_2 = 0;
    for (v, r) in values.iter().zip(await_deliveries(futures)) {
        if let Ok(d) = r {
            record_ack(&d, v);
            acked_in_phase_2 += 1;
        }
    }
    eprintln!("acked: 5000 before the kill, {acked_in_phase_2} of 15000 in flight during it");

    let mut highs = [0i64; 2];
    for partition in 0..2 {
        let (low, high) = watermarks(&broker, topic, partition);
        assert_eq!(low, 0);
        let max_acked = acked
            .keys()
            .filter(|k| k.0 == partition)
            .map(|k| k.1)
            .max()
            .unwrap();
        assert!(
            high > max_acked,
            "partition {partition}: high watermark {high} but offset {max_acked} was acked"
        );
        highs[partition as usize] = high;
    }
    let c = consumer(&broker, &[]);
    assign(
        &c,
        &[(topic, 0, Offset::Beginning), (topic, 1, Offset::Beginning)],
    );
    let messages = consume(&c, (highs[0] + highs[1]) as usize, Duration::from_secs(90));
    let mut next = [0i64; 2];
    for m in &messages {
        let part = m.partition() as usize;
        assert_eq!(m.offset(), next[part], "hole in partition {part}");
        next[part] += 1;
        let payload = std::str::from_utf8(m.payload().expect("value")).expect("utf8 value");
        assert!(
            payload.starts_with("durable-"),
            "foreign bytes at {part}@{}",
            m.offset()
        );
        if let Some(v) = acked.get(&(m.partition(), m.offset())) {
            assert_eq!(payload, v, "acked message at {part}@{} differs", m.offset());
        }
    }
}

// A consumer assigned at an explicit offset, at the beginning, at the end, or N from the end
// starts exactly there.
fn assigned_consumer_reads_from_explicit_offsets(shards: usize) {
    let broker = TestBroker::start(shards);
    let topic = "positions";
    create_topic(&broker, topic, 1, &[]);
    let p = producer(&broker, &[]);
    let futures: Vec<_> = (0..100)
        .map(|i| {
            let v = format!("m{i}");
            p.send_result(FutureRecord::<[u8], [u8]>::to(topic).payload(v.as_bytes()))
                .map_err(|(e, _)| e)
                .expect("enqueue")
        })
        .collect();
    await_all_ok(futures);

    for (offset, first) in [
        (Offset::Offset(40), 40),
        (Offset::Beginning, 0),
        (Offset::OffsetTail(5), 95),
        (Offset::Offset(99), 99),
    ] {
        let c = consumer(&broker, &[]);
        assign(&c, &[(topic, 0, offset)]);
        let count = (100 - first) as usize;
        let messages = consume(&c, count, Duration::from_secs(30));
        assert_eq!(messages[0].offset(), first, "start for {offset:?}");
        assert_eq!(messages[0].payload(), Some(format!("m{first}").as_bytes()));
        assert_eq!(messages.last().unwrap().offset(), 99);
        assert_nothing_more(&c, Duration::from_millis(300));
    }

    // Offset::End: nothing old, only what is produced after the assignment.
    let c = consumer(&broker, &[]);
    assign(&c, &[(topic, 0, Offset::End)]);
    assert_nothing_more(&c, Duration::from_millis(1000));
    send_one(&p, FutureRecord::to(topic).payload(&b"new"[..])).unwrap();
    let m = consume(&c, 1, Duration::from_secs(30));
    assert_eq!((m[0].offset(), m[0].payload()), (100, Some(&b"new"[..])));
}

// Fetching past the end gets OFFSET_OUT_OF_RANGE: an error with auto.offset.reset=error, a
// reset to the earliest offset with auto.offset.reset=earliest.
fn fetch_from_offset_out_of_range_gets_offset_out_of_range(shards: usize) {
    let broker = TestBroker::start(shards);
    let topic = "ranges";
    create_topic(&broker, topic, 1, &[]);
    let p = producer(&broker, &[]);
    let futures: Vec<_> = (0..10)
        .map(|i| {
            let v = format!("m{i}");
            p.send_result(FutureRecord::<[u8], [u8]>::to(topic).payload(v.as_bytes()))
                .map_err(|(e, _)| e)
                .expect("enqueue")
        })
        .collect();
    await_all_ok(futures);

    let c = consumer(&broker, &[("auto.offset.reset", "error")]);
    assign(&c, &[(topic, 0, Offset::Offset(1000))]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        assert!(
            Instant::now() < deadline,
            "no out-of-range error within 30 s"
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Err(e)) => break e,
            Some(Ok(m)) => panic!("got a message at {} from offset 1000", m.offset()),
            None => {}
        }
    };
    // librdkafka turns the broker's OFFSET_OUT_OF_RANGE into AutoOffsetReset when the reset
    // policy is "error"; without that broker error it would just keep fetching.
    assert_eq!(
        error_code(&err),
        Some(RDKafkaErrorCode::AutoOffsetReset),
        "got {err}"
    );

    let c = consumer(&broker, &[("auto.offset.reset", "earliest")]);
    assign(&c, &[(topic, 0, Offset::Offset(1000))]);
    let m = consume(&c, 10, Duration::from_secs(30));
    assert_eq!(m[0].offset(), 0);
}

// A consumer waiting at the end (long-poll fetch) gets a new message promptly, not after its
// max wait times out.
fn consumer_waiting_at_end_is_woken_by_new_messages(shards: usize) {
    let broker = TestBroker::start(shards);
    let topic = "wake";
    create_topic(&broker, topic, 1, &[]);
    // fetch.wait.max.ms 5000: without wake-up on append, delivery would take up to 5 s.
    let c = consumer(
        &broker,
        &[("fetch.wait.max.ms", "5000"), ("fetch.min.bytes", "1")],
    );
    assign(&c, &[(topic, 0, Offset::Beginning)]);
    assert_nothing_more(&c, Duration::from_millis(1500));
    let p = producer(&broker, &[("linger.ms", "0")]);
    let mut latencies = Vec::new();
    for i in 0..5 {
        let v = format!("wake-{i}");
        let start = Instant::now();
        send_one(&p, FutureRecord::to(topic).payload(v.as_bytes())).unwrap();
        let m = consume(&c, 1, Duration::from_secs(30));
        latencies.push(start.elapsed());
        assert_eq!(m[0].payload(), Some(v.as_bytes()));
        // Not synchronization: give the consumer time to send its next fetch, which then waits
        // at the end, the situation under test. (A parked fetch has no observable sign; if it
        // arrived late the latency measured would only be lower.)
        std::thread::sleep(Duration::from_millis(300));
    }
    latencies.sort();
    assert!(
        latencies[2] < Duration::from_millis(2000),
        "median produce-to-consume latency {:?} (all {latencies:?}): long-poll fetch not woken by appends",
        latencies[2]
    );
}

// ListOffsets: earliest, latest, by timestamp (first offset with timestamp >= T), past the
// newest timestamp (-1), and the max-timestamp query (-3, raw protocol).
fn list_offsets_earliest_latest_and_by_timestamp(shards: usize) {
    let broker = TestBroker::start(shards);
    let topic = "times";
    create_topic(&broker, topic, 1, &[]);
    let p = producer(&broker, &[]);
    let base = now_ms() - 60_000;
    // Offsets 0..10 with timestamps base, base+1000, ...; offset 10 goes back in time.
    let mut futures = Vec::new();
    for i in 0..10i64 {
        let v = format!("t{i}");
        futures.push(
            p.send_result(
                FutureRecord::<[u8], [u8]>::to(topic)
                    .payload(v.as_bytes())
                    .timestamp(base + i * 1000),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue"),
        );
    }
    futures.push(
        p.send_result(
            FutureRecord::<[u8], [u8]>::to(topic)
                .payload(&b"late"[..])
                .timestamp(base + 2500),
        )
        .map_err(|(e, _)| e)
        .expect("enqueue"),
    );
    await_all_ok(futures);

    assert_eq!(watermarks(&broker, topic, 0), (0, 11));
    let c = consumer(&broker, &[]);
    for (ts, expected) in [
        (base, Offset::Offset(0)),
        (base + 3500, Offset::Offset(4)),
        (base + 9000, Offset::Offset(9)),
        (base - 100_000, Offset::Offset(0)),
        (base + 20_000, Offset::End),
    ] {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(ts))
            .unwrap();
        let got = c
            .offsets_for_times(tpl, OP_TIMEOUT)
            .expect("ListOffsets by timestamp");
        let elem = got.find_partition(topic, 0).unwrap();
        assert!(elem.error().is_ok(), "error {:?}", elem.error());
        assert_eq!(
            elem.offset(),
            expected,
            "offset for timestamp base+{}",
            ts - base
        );
    }

    // Consumed messages carry the producer's timestamps.
    assign(&c, &[(topic, 0, Offset::Beginning)]);
    let m = consume(&c, 11, Duration::from_secs(30));
    assert_eq!(m[3].timestamp(), Timestamp::CreateTime(base + 3000));
    assert_eq!(m[10].timestamp(), Timestamp::CreateTime(base + 2500));

    // MAX_TIMESTAMP (-3, ListOffsets v7+): the offset of the record with the largest timestamp.
    let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("times")))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-3)])]);
    let response = conn.request(7, &request).expect("ListOffsets v7");
    let part = &response.topics[0].partitions[0];
    assert_eq!(part.error_code, 0);
    assert_eq!((part.offset, part.timestamp), (9, base + 9000));
}

// A topic with message.timestamp.type=LogAppendTime stamps the broker's clock on every record.
fn log_append_time_topic_stamps_broker_time(shards: usize) {
    let broker = TestBroker::start(shards);
    let topic = "append-time";
    create_topic(
        &broker,
        topic,
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    );
    let p = producer(&broker, &[]);
    let before = now_ms();
    let old = before - 3_600_000;
    send_one(
        &p,
        FutureRecord::to(topic).payload(&b"a"[..]).timestamp(old),
    )
    .unwrap();
    send_one(
        &p,
        FutureRecord::to(topic).payload(&b"b"[..]).timestamp(old),
    )
    .unwrap();
    let after = now_ms();
    let c = consumer(&broker, &[]);
    assign(&c, &[(topic, 0, Offset::Beginning)]);
    for m in consume(&c, 2, Duration::from_secs(30)) {
        match m.timestamp() {
            Timestamp::LogAppendTime(t) => assert!(
                (before - 1000..=after + 1000).contains(&t),
                "append time {t} not in [{before}, {after}]"
            ),
            other => panic!("expected LogAppendTime, got {other:?}"),
        }
    }
}

// DeleteRecords moves the log start offset: watermarks, fetches from the old range, and
// the beginning all follow it, and it survives a restart.
fn delete_records_moves_log_start_offset_durably(shards: usize) {
    let mut broker = TestBroker::start(shards);
    let topic = "trimmed";
    create_topic(&broker, topic, 2, &[]);
    let p = producer(&broker, &[]);
    let futures: Vec<_> = (0..200)
        .map(|i| {
            let v = format!("m{}", i / 2);
            p.send_result(
                FutureRecord::<[u8], [u8]>::to(topic)
                    .payload(v.as_bytes())
                    .partition(i % 2),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue")
        })
        .collect();
    await_all_ok(futures);
    drop(p);

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(60))
        .unwrap();
    tpl.add_partition_offset(topic, 1, Offset::End).unwrap();
    let result = runtime()
        .block_on(admin(&broker).delete_records(&tpl, &admin_options()))
        .expect("DeleteRecords");
    let p0 = result.find_partition(topic, 0).unwrap();
    assert!(p0.error().is_ok(), "{:?}", p0.error());
    assert_eq!(
        p0.offset(),
        Offset::Offset(60),
        "new low watermark of partition 0"
    );
    let p1 = result.find_partition(topic, 1).unwrap();
    assert!(p1.error().is_ok(), "{:?}", p1.error());
    assert_eq!(
        p1.offset(),
        Offset::Offset(100),
        "new low watermark of partition 1"
    );

    // Deleting beyond the high watermark is refused with OFFSET_OUT_OF_RANGE.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(500))
        .unwrap();
    let result = runtime()
        .block_on(admin(&broker).delete_records(&tpl, &admin_options()))
        .expect("DeleteRecords");
    let err = result
        .find_partition(topic, 0)
        .unwrap()
        .error()
        .expect_err("delete past the end");
    assert_eq!(
        error_code(&err),
        Some(RDKafkaErrorCode::OffsetOutOfRange),
        "got {err}"
    );

    for round in ["before restart", "after restart"] {
        assert_eq!(watermarks(&broker, topic, 0), (60, 100), "{round}");
        assert_eq!(watermarks(&broker, topic, 1), (100, 100), "{round}");
        let c = consumer(&broker, &[]);
        assign(&c, &[(topic, 0, Offset::Beginning)]);
        let m = consume(&c, 40, Duration::from_secs(30));
        assert_eq!(
            (m[0].offset(), m[0].payload()),
            (60, Some(&b"m60"[..])),
            "{round}"
        );
        // A fetch below the log start offset is out of range.
        let c = consumer(&broker, &[("auto.offset.reset", "error")]);
        assign(&c, &[(topic, 0, Offset::Offset(10))]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "{round}: no error fetching a deleted offset"
            );
            match c.poll(Duration::from_millis(200)) {
                Some(Err(_)) => break,
                Some(Ok(m)) => panic!("{round}: served deleted offset {}", m.offset()),
                None => {}
            }
        }
        if round == "before restart" {
            broker.restart();
        }
    }
}

// Retention (checked every second here, via the config file) deletes whole old segments: by
// retention.bytes, and by retention.ms using the records' timestamps. The log start offset
// moves to a segment boundary and consumers from the beginning start there.
fn retention_deletes_old_segments_by_size_and_by_time(shards: usize) {
    let (_dir, config) = common::config_file("retention_check_interval_ms = 1000\n");
    let broker = TestBroker::start_with(shards, &["--config", config.to_str().unwrap()]);
    let segment = 1_048_576i64;
    create_topic(
        &broker,
        "by-size",
        1,
        &[("segment.bytes", "1048576"), ("retention.bytes", "2097152")],
    );
    create_topic(
        &broker,
        "by-time",
        1,
        &[("segment.bytes", "1048576"), ("retention.ms", "5000")],
    );
    let p = producer(&broker, &[("linger.ms", "5")]);
    let value = pseudo_random_bytes(1000, 77);
    let old = now_ms() - 3_600_000;
    let mut futures = Vec::new();
    for _ in 0..6000 {
        futures.push(
            p.send_result(FutureRecord::<[u8], [u8]>::to("by-size").payload(&value[..]))
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
        futures.push(
            p.send_result(
                FutureRecord::<[u8], [u8]>::to("by-time")
                    .payload(&value[..])
                    .timestamp(old),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue"),
        );
    }
    await_all_ok(futures);

    // Wait for the end state, not for the first deletion: a retention pass that ran while the
    // records were still being produced deletes only the segments sealed by then.
    let (size_marks, time_marks) = crate::common::wait_for(
        Duration::from_secs(30),
        "retention to leave at most retention.bytes + one segment of by-size and only the \
         active segment of by-time",
        || {
            let (s, t) = (
                watermarks(&broker, "by-size", 0),
                watermarks(&broker, "by-time", 0),
            );
            let size_done = s.0 > 0 && (s.1 - s.0) * 1000 < 2_097_152 + segment;
            let time_done = t.0 > 0 && (t.1 - t.0) * 1000 < segment;
            if size_done && time_done {
                Ok((s, t))
            } else {
                Err(format!("by-size {s:?}, by-time {t:?}"))
            }
        },
    );
    assert_eq!(size_marks.1, 6000);
    assert_eq!(time_marks.1, 6000);
    // A record takes 1000 to ~1100 bytes on disk (value plus record and batch overhead). What
    // is left is less than retention.bytes + one segment, and more than retention.bytes - one.
    let kept = size_marks.1 - size_marks.0;
    assert!(
        kept * 1000 < 2_097_152 + segment,
        "by-size kept {kept} records ({size_marks:?})"
    );
    assert!(
        kept * 1100 > 2_097_152 - segment,
        "by-size deleted too much: kept {kept} records"
    );
    // All closed segments of by-time are an hour old: only the active segment may remain.
    assert!(
        (time_marks.1 - time_marks.0) * 1000 < segment,
        "by-time kept {time_marks:?}"
    );

    for (topic, (low, _)) in [("by-size", size_marks), ("by-time", time_marks)] {
        let c = consumer(&broker, &[]);
        assign(&c, &[(topic, 0, Offset::Beginning)]);
        let m = consume(&c, 1, Duration::from_secs(30));
        assert!(
            m[0].offset() >= low,
            "{topic}: consumer from the beginning got offset {} below log start {low}",
            m[0].offset()
        );
        assert_eq!(m[0].payload(), Some(&value[..]));
    }
}

// A small segment.bytes is either refused at creation (INVALID_CONFIG) or works: the log rolls
// many segments, every message is served, and the broker survives a restart. It never crashes.
fn small_segment_bytes_is_refused_or_rolls_segments_without_crashing(shards: usize) {
    let mut broker = TestBroker::start(shards);
    let topic =
        NewTopic::new("tiny-segments", 1, TopicReplication::Fixed(1)).set("segment.bytes", "16384");
    let results = runtime()
        .block_on(admin(&broker).create_topics([&topic], &admin_options()))
        .expect("CreateTopics");
    if let Err((_, code)) = &results[0] {
        assert_eq!(
            *code,
            RDKafkaErrorCode::InvalidConfig,
            "unexpected CreateTopics error"
        );
        assert!(broker.is_running());
        return;
    }
    // Small producer batches: a segment rolls between batches, never inside one (as in Kafka,
    // a batch larger than segment.bytes fills a segment alone), so 500 messages in one big
    // batch would rightly make a single segment.
    let p = producer(&broker, &[("linger.ms", "0"), ("batch.size", "4096")]);
    let value = pseudo_random_bytes(1000, 5);
    let futures: Vec<_> = (0..500)
        .map(|_| {
            p.send_result(FutureRecord::<[u8], [u8]>::to("tiny-segments").payload(&value[..]))
                .map_err(|(e, _)| e)
                .expect("enqueue")
        })
        .collect();
    let acked = await_deliveries(futures)
        .into_iter()
        .filter(|r| r.is_ok())
        .count();
    assert!(
        broker.is_running(),
        "broker died writing to a topic with segment.bytes=16384\n{}",
        broker.log_tail()
    );
    assert_eq!(acked, 500);
    let segments = std::fs::read_dir(broker.data_dir().join("tiny-segments-0"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .map(|e| e.path().extension() == Some("log".as_ref()))
                    .unwrap_or(false)
            })
            .count()
        })
        .unwrap_or(0);
    assert!(
        segments >= 10,
        "500 KB in 16 KiB segments made only {segments} segment files"
    );
    broker.restart();
    let c = consumer(&broker, &[]);
    assign(&c, &[("tiny-segments", 0, Offset::Beginning)]);
    let m = consume(&c, 500, Duration::from_secs(60));
    assert!(m.iter().all(|m| m.payload() == Some(&value[..])));
}

// Three librdkafka consumers subscribed with one group.id (classic protocol) end up with
// disjoint assignments that together cover every partition, and between them read every
// message (at least once: nothing is committed, so a rebalance may re-deliver).
fn three_group_consumers_split_partitions_and_lose_no_message(shards: usize) {
    use rdkafka::consumer::Consumer;
    use std::collections::{BTreeSet, HashMap};
    use std::sync::{Arc, Barrier, Mutex};
    let broker = TestBroker::start(shards);
    let topic = "grouped";
    create_topic(&broker, topic, 6, &[]);
    let p = producer(&broker, &[]);
    let futures: Vec<_> = (0..600)
        .map(|i| {
            let payload = format!("m{i}");
            p.send_result(
                FutureRecord::<[u8], [u8]>::to(topic)
                    .partition(i % 6)
                    .payload(payload.as_bytes()),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue")
        })
        .collect();
    assert!(await_deliveries(futures).iter().all(|r| r.is_ok()));

    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let assignments: Arc<Mutex<Vec<BTreeSet<i32>>>> =
        Arc::new(Mutex::new(vec![BTreeSet::new(); 3]));
    let done = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|n| {
            let (seen, assignments, done) = (seen.clone(), assignments.clone(), done.clone());
            let mut config = client_config(&broker, &[]);
            config
                .set("group.id", "three-of-us")
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .set("session.timeout.ms", "10000")
                .set("fetch.wait.max.ms", "100");
            std::thread::spawn(move || {
                let c: BaseConsumer = config.create().expect("group consumer");
                c.subscribe(&[topic]).expect("subscribe");
                let deadline = Instant::now() + Duration::from_secs(60);
                // Poll until all 600 messages are in and every member holds partitions.
                loop {
                    if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                        let value = String::from_utf8_lossy(m.payload().unwrap_or(b"")).to_string();
                        *seen.lock().unwrap().entry(value).or_default() += 1;
                    }
                    let mine: BTreeSet<i32> = c
                        .assignment()
                        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
                        .unwrap_or_default();
                    assignments.lock().unwrap()[n] = mine;
                    let all_in = seen.lock().unwrap().len() == 600;
                    let all_assigned = assignments.lock().unwrap().iter().all(|a| !a.is_empty());
                    if (all_in && all_assigned) || Instant::now() > deadline {
                        break;
                    }
                }
                // Stay in the group until every member is done, so no late rebalance moves
                // partitions (and re-delivers uncommitted messages) while others still count.
                done.wait();
                c.unsubscribe();
            })
        })
        .collect();
    for t in threads {
        t.join().expect("consumer thread");
    }
    let assignments = assignments.lock().unwrap().clone();
    let mut union = BTreeSet::new();
    for (n, a) in assignments.iter().enumerate() {
        assert!(
            !a.is_empty(),
            "consumer {n} got no partitions: {assignments:?}"
        );
        for p in a {
            assert!(
                union.insert(*p),
                "partition {p} assigned twice: {assignments:?}"
            );
        }
    }
    assert_eq!(union, (0..6).collect::<BTreeSet<i32>>(), "{assignments:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 600, "messages missing");
    assert!(
        seen.values().all(|&count| count == 1),
        "a message was read twice"
    );
}
