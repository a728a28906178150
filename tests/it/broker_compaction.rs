//! Log compaction through a real client (issue 7): librdkafka (the `rdkafka` crate) produces
//! many values for a few keys plus a tombstone to a `cleanup.policy=compact` topic with small
//! segments; once the segments have rolled and the broker's cleaner has run, a consumer reading
//! from the beginning sees exactly the latest value of every key, at the offset it was written
//! at, and the tombstone disappears after `delete.retention.ms`. A restart serves the same.

use crate::common;
use common::client_config;
use common::runtime;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestBroker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

const OP_TIMEOUT: Duration = Duration::from_secs(30);
const TOPIC: &str = "compacted";
const KEYS: usize = 5;
const VALUES_PER_KEY: usize = 200;
const DELETE_RETENTION_MS: u64 = 6_000;

/// Offset, key and value (None for a tombstone) of every record from the beginning to the
/// high watermark, as a consumer sees them.
fn read_all(broker: &TestBroker) -> Vec<(i64, String, Option<String>)> {
    read_topic(broker, TOPIC)
}

fn read_topic(broker: &TestBroker, topic: &str) -> Vec<(i64, String, Option<String>)> {
    let consumer = common::assign_only_consumer(client_config(broker), "assign-only-never-joins");
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, OP_TIMEOUT)
        .expect("watermarks");
    if high == 0 {
        return Vec::new();
    }
    common::assign_from_beginning(&consumer, topic, 0);
    let mut out = Vec::new();
    let deadline = Instant::now() + OP_TIMEOUT;
    while out
        .last()
        .is_none_or(|r: &(i64, String, Option<String>)| r.0 < high - 1)
    {
        assert!(
            Instant::now() < deadline,
            "did not reach the high watermark {high}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => out.push((
                m.offset(),
                String::from_utf8_lossy(m.key().expect("keyed")).into_owned(),
                m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
            )),
            Some(Err(e)) => panic!("consumer error: {e}"),
        }
    }
    out
}

fn produce(producer: &FutureProducer, key: &str, value: Option<&str>) -> i64 {
    let mut record = FutureRecord::<str, str>::to(TOPIC).key(key).partition(0);
    if let Some(v) = value {
        record = record.payload(v);
    }
    let delivery = runtime()
        .block_on(producer.send(record, OP_TIMEOUT))
        .expect("delivered");
    delivery.offset
}

fn compacted_topic_serves_latest_value_per_key(shards: usize) {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = tmp.path().join("broker.toml");
    std::fs::write(&config, "log_cleaner_backoff_ms = 200\n").expect("write config");
    let mut broker = TestBroker::start_with(shards, &["--config", &config.display().to_string()]);
    let admin: AdminClient<DefaultClientContext> = client_config(&broker).create().expect("admin");
    let retention = DELETE_RETENTION_MS.to_string();
    let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "4096")
        .set("segment.ms", "1000")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("delete.retention.ms", &retention);
    let created = runtime()
        .block_on(admin.create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(OP_TIMEOUT)),
        ))
        .expect("CreateTopics");
    assert!(created[0].is_ok(), "{created:?}");

    // Many values for a few keys, in batches of all sizes (linger 5 ms, async sends), then a
    // tombstone for k2. Batches are compressed with lz4.
    let producer: FutureProducer = client_config(&broker)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let mut latest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    let rt = runtime();
    let mut pending = Vec::new();
    for v in 0..VALUES_PER_KEY {
        for k in 0..KEYS {
            let (key, value) = (format!("k{k}"), format!("k{k}-value-{v}"));
            let record = FutureRecord::to(TOPIC)
                .key(&key)
                .payload(&value)
                .partition(0);
            pending.push((
                key.clone(),
                value.clone(),
                producer.send_result(record).expect("queued"),
            ));
        }
    }
    for (key, value, f) in pending {
        let d = rt.block_on(f).expect("delivery").expect("delivered");
        latest.insert(key, (d.offset, Some(value)));
    }
    // Kafka refuses keyless records on a compacted topic (INVALID_RECORD).
    let keyless = FutureRecord::<str, str>::to(TOPIC)
        .payload("no key")
        .partition(0);
    match runtime().block_on(producer.send(keyless, OP_TIMEOUT)) {
        Err((e, _)) => assert_eq!(
            e.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::InvalidRecord),
            "{e}"
        ),
        Ok(d) => panic!("a keyless record was accepted at offset {}", d.offset),
    }
    let offset = produce(&producer, "k2", None);
    latest.insert("k2".into(), (offset, None));
    // Let segment.ms pass, then one more record rolls the segment: everything above is now in
    // sealed segments the cleaner may clean. (The sleep is the point: segment.ms is a time.)
    std::thread::sleep(Duration::from_millis(1_200));
    let filler_offset = produce(&producer, "filler", Some("last"));
    assert!(filler_offset > offset);

    let keyed = |recs: &[(i64, String, Option<String>)]| -> Vec<(i64, String, Option<String>)> {
        recs.iter().filter(|r| r.1 != "filler").cloned().collect()
    };
    let want_with_tombstone: Vec<_> = latest
        .iter()
        .map(|(k, (o, v))| (*o, k.clone(), v.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let want_without: Vec<_> = want_with_tombstone
        .iter()
        .filter(|r| r.2.is_some())
        .cloned()
        .collect();

    // The cleaner runs every 200 ms: first the old values go (the tombstone stays for
    // delete.retention.ms), then the tombstone goes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut saw_tombstone_phase = false;
    loop {
        let got = keyed(&read_all(&broker));
        if got == want_with_tombstone {
            saw_tombstone_phase = true;
        }
        if got == want_without {
            break;
        }
        assert!(
            got.len() <= KEYS * VALUES_PER_KEY + 1,
            "more records than produced: {}",
            got.len()
        );
        assert!(
            Instant::now() < deadline,
            "not compacted within 30 s; last read {} records: {:?}",
            got.len(),
            &got[..got.len().min(12)]
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        saw_tombstone_phase,
        "the tombstone was never served alone before delete.retention.ms passed"
    );
    assert!(broker.log_tail().contains("log cleaned"));

    // A restart serves the compacted log.
    broker.restart();
    assert_eq!(keyed(&read_all(&broker)), want_without);
}

#[test]
fn compacted_topic_serves_latest_value_per_key_one_shard() {
    common::within(Duration::from_secs(120), || {
        compacted_topic_serves_latest_value_per_key(1)
    })
}

#[test]
fn compacted_topic_serves_latest_value_per_key_two_shards() {
    common::within(Duration::from_secs(120), || {
        compacted_topic_serves_latest_value_per_key(2)
    })
}

/// kill -9 at arbitrary moments while the cleaner is busy (cleaning every 50 ms, small
/// segments rolling every 300 ms): after every restart the log still holds the latest value of
/// every key at its offset, and nothing else for a key that was cleaned.
fn kill_9_while_cleaning_loses_no_latest_value(shards: usize) {
    const T: &str = "compacted-kill";
    let tmp = tempfile::tempdir().expect("tmp");
    let config = tmp.path().join("broker.toml");
    std::fs::write(&config, "log_cleaner_backoff_ms = 50\n").expect("write config");
    let mut broker = TestBroker::start_with(shards, &["--config", &config.display().to_string()]);
    let admin: AdminClient<DefaultClientContext> = client_config(&broker).create().expect("admin");
    let topic = NewTopic::new(T, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "2048")
        .set("segment.ms", "300")
        .set("min.cleanable.dirty.ratio", "0.01");
    let created = runtime()
        .block_on(admin.create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(OP_TIMEOUT)),
        ))
        .expect("CreateTopics");
    assert!(created[0].is_ok(), "{created:?}");
    drop(admin);
    let mut latest: BTreeMap<String, (i64, String)> = BTreeMap::new();
    let rt = runtime();
    for round in 0..5u64 {
        let producer: FutureProducer = client_config(&broker)
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000")
            .create()
            .expect("producer");
        for burst in 0..4 {
            let mut pending = Vec::new();
            for i in 0..60 {
                let key = format!("k{}", (i * 7 + round as usize) % 12);
                let value = format!("r{round}-b{burst}-{i}");
                let record = FutureRecord::to(T).key(&key).payload(&value).partition(0);
                let f = producer.send_result(record).expect("queued");
                pending.push((key, value, f));
            }
            for (key, value, f) in pending {
                let d = rt.block_on(f).expect("delivery").expect("delivered");
                latest.insert(key, (d.offset, value));
            }
            // Pacing, not synchronization: bursts 150 ms apart, so segments also roll by
            // segment.ms (300 ms) while the cleaner works.
            std::thread::sleep(Duration::from_millis(150));
        }
        drop(producer);
        // Somewhere in the cleaner's work (it runs every 50 ms on fresh segments): the kill's
        // moment is the variable under test, not something to wait for.
        std::thread::sleep(Duration::from_millis(37 * (round + 1)));
        broker.kill9();
        broker.start_again();
        let got = read_topic(&broker, T);
        let mut replay: BTreeMap<String, (i64, String)> = BTreeMap::new();
        let mut last_offset = -1;
        for (o, k, v) in &got {
            assert!(*o > last_offset, "offsets go forward");
            last_offset = *o;
            replay.insert(k.clone(), (*o, v.clone().expect("no tombstones were sent")));
        }
        assert_eq!(
            replay, latest,
            "round {round}: the latest value of a key was lost"
        );
    }
    assert!(
        broker.log_tail().contains("log cleaned"),
        "the cleaner never ran: the test proved nothing"
    );
}

#[test]
fn kill_9_while_cleaning_loses_no_latest_value_one_shard() {
    common::within(Duration::from_secs(180), || {
        kill_9_while_cleaning_loses_no_latest_value(1)
    })
}
