//! Bounded stress (issue 7): 500 connections to the real broker produce small batches and
//! fetch them back for a fixed time (`FRESHET_STRESS_SECONDS`, default 30). The broker's
//! resident memory, sampled every second, must stay under [`RSS_BOUND_BYTES`]; every produce
//! must be acknowledged; afterwards each partition's high watermark equals the records that
//! were acknowledged for it (nothing acknowledged lost, nothing extra), and the admin
//! endpoint counted the connections and the records.
//!
//! Clients: [`WORKERS`] threads, each driving its share of the connections with blocking
//! sockets: it sends one request on every connection, then reads every answer (so all
//! connections have a request in flight at once), alternating produce and fetch rounds.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{metric_sum, RawConn, TestBroker};
use freshet_protocol::batch::{encode_batch, Compression, NewRecord};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreateTopicsRequest, FetchRequest, ListOffsetsRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const CONNECTIONS: usize = 500;
const WORKERS: usize = 10;
const PARTITIONS: i32 = 8;
const RECORDS_PER_BATCH: usize = 4;
const VALUE_BYTES: usize = 200;
const TOPIC: &str = "stress";
/// The broker runs with a 16 MiB tail cache per shard (2 shards); its RSS must stay below this.
const RSS_BOUND_BYTES: u64 = 256 << 20;

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

fn produce_request(partition: i32, batch: &Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch.clone()))])])
}

fn fetch_request(partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(64 * 1024)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name())
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(32 * 1024)])])
}

/// What one worker did: records acknowledged per partition, fetches that returned data.
struct Tally {
    acked: Vec<u64>,
    fetched_with_data: u64,
    produces: u64,
}

fn worker(
    addr: std::net::SocketAddr,
    first_conn: usize,
    conns: usize,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut conns: Vec<(RawConn, i32, i64)> = (first_conn..first_conn + conns)
        .map(|i| {
            let conn = RawConn::connect(addr).expect("connect");
            (conn, (i % PARTITIONS as usize) as i32, 0)
        })
        .collect();
    let records: Vec<NewRecord> = (0..RECORDS_PER_BATCH)
        .map(|i| {
            (
                None,
                Some(Bytes::from(vec![b'a' + i as u8; VALUE_BYTES])),
                0,
            )
        })
        .collect();
    let batch = encode_batch(&records, Compression::None).expect("batch");
    let mut tally = Tally {
        acked: vec![0; PARTITIONS as usize],
        fetched_with_data: 0,
        produces: 0,
    };
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if round.is_multiple_of(2) {
            let ids: Vec<i32> = conns
                .iter_mut()
                .map(|(c, p, _)| c.send(9, &produce_request(*p, &batch)).expect("send"))
                .collect();
            for ((c, p, last), id) in conns.iter_mut().zip(ids) {
                let r = c.receive::<ProduceRequest>(9, id).expect("produce answer");
                let part = &r.responses[0].partition_responses[0];
                assert_eq!(part.error_code, 0, "produce to partition {p} failed");
                *last = part.base_offset;
                tally.acked[*p as usize] += RECORDS_PER_BATCH as u64;
                tally.produces += 1;
            }
        } else {
            let ids: Vec<i32> = conns
                .iter_mut()
                .map(|(c, p, last)| c.send(12, &fetch_request(*p, *last)).expect("send"))
                .collect();
            for ((c, p, _), id) in conns.iter_mut().zip(ids) {
                let r = c.receive::<FetchRequest>(12, id).expect("fetch answer");
                let part = &r.responses[0].partitions[0];
                assert_eq!(part.error_code, 0, "fetch from partition {p} failed");
                if part.records.as_ref().is_some_and(|b| !b.is_empty()) {
                    tally.fetched_with_data += 1;
                }
            }
        }
        round += 1;
    }
    tally
}

fn high_watermarks(broker: &TestBroker) -> Vec<i64> {
    let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name())
            .with_partitions(
                (0..PARTITIONS)
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(-1)
                    })
                    .collect(),
            )]);
    let response = conn.request(5, &request).expect("ListOffsets");
    let mut out = vec![-1; PARTITIONS as usize];
    for p in &response.topics[0].partitions {
        assert_eq!(p.error_code, 0);
        out[p.partition_index as usize] = p.offset;
    }
    out
}

#[test]
fn five_hundred_connections_produce_and_fetch_with_bounded_memory_and_no_loss() {
    let seconds: u64 = std::env::var("FRESHET_STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    common::within(Duration::from_secs(seconds + 60), move || {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("broker.toml");
        std::fs::write(&config, "tail_cache_bytes_per_shard = 16777216\n").unwrap();
        let broker =
            TestBroker::start_with(2, &["--config", config.to_str().unwrap(), "--log", "warn"]);
        let mut admin = RawConn::connect(broker.socket_addr()).unwrap();
        let create = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![
                kafka_protocol::messages::create_topics_request::CreatableTopic::default()
                    .with_name(topic_name())
                    .with_num_partitions(PARTITIONS)
                    .with_replication_factor(1),
            ]);
        let created = admin.request(7, &create).expect("CreateTopics");
        assert_eq!(created.topics[0].error_code, 0);
        let rss_start = broker.rss_bytes();

        let stop = Arc::new(AtomicBool::new(false));
        let addr = broker.socket_addr();
        let per_worker = CONNECTIONS / WORKERS;
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let stop = stop.clone();
                std::thread::spawn(move || worker(addr, w * per_worker, per_worker, stop))
            })
            .collect();
        let started = Instant::now();
        let mut rss_max = 0;
        let mut rss_samples_mib = Vec::new();
        let mut connections_seen = 0.0f64;
        while started.elapsed() < Duration::from_secs(seconds) {
            // Pacing, not synchronization: one RSS and metrics sample per second of load.
            std::thread::sleep(Duration::from_secs(1));
            let rss = broker.rss_bytes();
            rss_samples_mib.push(rss >> 20);
            rss_max = rss_max.max(rss);
            assert!(
                rss_max < RSS_BOUND_BYTES,
                "broker RSS {} MiB exceeds the bound of {} MiB",
                rss_max >> 20,
                RSS_BOUND_BYTES >> 20
            );
            if let Ok((200, text)) = broker.admin_get("/metrics") {
                connections_seen = connections_seen.max(metric_sum(&text, "freshet_connections"));
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut acked = vec![0u64; PARTITIONS as usize];
        let (mut produces, mut fetched) = (0, 0);
        for w in workers {
            let tally = w.join().expect("worker");
            for (a, t) in acked.iter_mut().zip(&tally.acked) {
                *a += t;
            }
            produces += tally.produces;
            fetched += tally.fetched_with_data;
        }
        let hw = high_watermarks(&broker);
        for p in 0..PARTITIONS as usize {
            assert_eq!(
                hw[p] as u64, acked[p],
                "partition {p}: high watermark vs acknowledged"
            );
        }
        let total: u64 = acked.iter().sum();
        let (_, text) = broker.admin_get("/metrics").expect("metrics");
        assert_eq!(
            metric_sum(&text, "freshet_partition_records_in_total") as u64,
            total
        );
        assert!(connections_seen >= CONNECTIONS as f64, "{connections_seen}");
        assert!(fetched > 0);
        eprintln!(
            "stress: {CONNECTIONS} connections for {seconds}s: {produces} produces \
             ({:.0}/s, {total} records), {fetched} fetches with data; broker RSS {} MiB at \
             start, {} MiB max (bound {} MiB); per second: {rss_samples_mib:?}",
            produces as f64 / seconds as f64,
            rss_start >> 20,
            rss_max >> 20,
            RSS_BOUND_BYTES >> 20
        );
    });
}
