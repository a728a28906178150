//! End-to-end broker benchmark: the real `freshet` binary driven by a real client (librdkafka
//! through the `rdkafka` crate), next to the machine's own limits measured in the same run.
//!
//! `cargo bench --bench broker` (release build) prints:
//! - the disk limit: `dd if=/dev/zero of=F bs=1M count=N oflag=direct conv=fdatasync` in the
//!   broker's data directory, and the loopback limit: `iperf3` on 127.0.0.1 (skipped, with a
//!   note, when iperf3 is not installed);
//! - produce throughput with acks=all, 1 KiB messages, and consume throughput of the same data
//!   (which is still in the broker's tail cache), with their ratios to the limits;
//! - broker RSS idle and after the run;
//! - with `FRESHET_BENCH_PARTITIONS_10K=1`: RSS with 100 topics x 100 partitions each written to,
//!   and the restart time of that data directory.
//!
//! Sizes are environment variables so a quick run stays quick: `FRESHET_BENCH_MB` (default 256),
//! `FRESHET_BENCH_PARTITIONS` (default 4), `FRESHET_BENCH_SHARDS` (default 2); a broker TOML
//! file with `FRESHET_BENCH_CONFIG`; an idempotent producer with `FRESHET_BENCH_IDEMPOTENCE=1`;
//! librdkafka's in-flight request limit with `FRESHET_BENCH_MAX_INFLIGHT` (idempotence caps it
//! at 5); only the produce phase (no limits, consume or raw load: for paired comparisons such as
//! idempotent against plain) with `FRESHET_BENCH_PRODUCE_ONLY=1`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const MESSAGE_BYTES: usize = 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A broker process started for the benchmark; killed on drop.
struct Broker {
    child: Child,
    addr: String,
    startup: Duration,
}

impl Broker {
    fn start(data_dir: &std::path::Path, port: u16, shards: usize) -> Broker {
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_freshet"))
            .args([
                "start",
                "--listen",
                &addr,
                "--shards",
                &shards.to_string(),
                "--log",
                "warn",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(
                std::env::var("FRESHET_BENCH_CONFIG")
                    .ok()
                    .filter(|path| !path.is_empty())
                    .map(|path| vec!["--config".to_string(), path])
                    .unwrap_or_default(),
            )
            .stderr(Stdio::piped())
            .spawn()
            .expect("start freshet");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("freshet ready") => break,
                Some(Ok(_)) => continue,
                _ => panic!("broker exited before it was ready"),
            }
        }
        let startup = started.elapsed();
        // Keep draining stderr so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Broker {
            child,
            addr,
            startup,
        }
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    fn stop(mut self) {
        // SAFETY: kill() on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `dd ... oflag=direct conv=fdatasync` in `dir`: MB/s (decimal, as dd reports).
fn disk_limit_mb_s(dir: &std::path::Path, mib: usize) -> Option<f64> {
    let file = dir.join("dd-probe.tmp");
    let started = Instant::now();
    let status = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args([
            "bs=1M",
            &format!("count={mib}"),
            "oflag=direct",
            "conv=fdatasync",
        ])
        .stderr(Stdio::null())
        .status()
        .ok()?;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    status
        .success()
        .then(|| (mib * 1024 * 1024) as f64 / elapsed / 1e6)
}

/// `iperf3` over loopback for 5 s: MB/s received.
fn loopback_limit_mb_s() -> Option<f64> {
    let port = free_port().to_string();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-p", &port, "-t", "5", "-J"])
        .output()
        .ok();
    let _ = server.kill();
    let _ = server.wait();
    let json: serde_json::Value = serde_json::from_slice(&out?.stdout).ok()?;
    let bits = json["end"]["sum_received"]["bits_per_second"].as_f64()?;
    Some(bits / 8.0 / 1e6)
}

struct Counting {
    delivered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn create_topic(addr: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = rt
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .expect("create topics");
    for r in results {
        if let Err((name, e)) = r {
            panic!("create {name}: {e}");
        }
    }
}

/// Produces `count` messages round-robin over `partitions`; returns seconds taken.
fn produce(addr: &str, topic: &str, partitions: i32, count: u64) -> f64 {
    let delivered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut config = ClientConfig::new();
    if let Ok(n) = std::env::var("FRESHET_BENCH_MAX_INFLIGHT") {
        config.set("max.in.flight.requests.per.connection", n);
    }
    let producer: BaseProducer<Counting> = config
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set(
            "enable.idempotence",
            if std::env::var("FRESHET_BENCH_IDEMPOTENCE").is_ok_and(|v| v == "1") {
                "true"
            } else {
                "false"
            },
        )
        .create_with_context(Counting {
            delivered: delivered.clone(),
            failed: failed.clone(),
        })
        .expect("producer");
    let payload = vec![b'x'; MESSAGE_BYTES];
    let started = Instant::now();
    for i in 0..count {
        let partition = (i % partitions as u64) as i32;
        loop {
            let record = BaseRecord::<(), [u8]>::to(topic)
                .partition(partition)
                .payload(&payload[..]);
            match producer.send(record) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "deliveries failed");
    assert_eq!(
        delivered.load(Ordering::Relaxed),
        count,
        "not all delivered"
    );
    seconds
}

/// Consumes `count` messages from the start of every partition; returns seconds taken.
fn consume(addr: &str, topic: &str, partitions: i32, count: u64) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        // librdkafka needs a group.id even for assign(); nothing is committed.
        .set("group.id", "freshet-bench-assign-only")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("queued.max.messages.kbytes", "1048576")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let started = Instant::now();
    let mut seen = 0u64;
    let deadline = started + Duration::from_secs(300);
    while seen < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                assert_eq!(message.payload().map_or(0, <[u8]>::len), MESSAGE_BYTES);
                seen += 1;
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    assert_eq!(seen, count, "consumed fewer messages than produced");
    started.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let mb = env_usize("FRESHET_BENCH_MB", 256);
    let partitions = env_usize("FRESHET_BENCH_PARTITIONS", 4) as i32;
    let shards = env_usize("FRESHET_BENCH_SHARDS", 2);
    let root = std::env::current_dir()
        .expect("cwd")
        .join("target/bench-broker");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench dir");

    let produce_only = std::env::var("FRESHET_BENCH_PRODUCE_ONLY").is_ok_and(|v| v == "1");
    println!("== machine limits (same run)");
    let (disk, loopback) = if produce_only {
        (None, None)
    } else {
        (disk_limit_mb_s(&root, 1024), loopback_limit_mb_s())
    };
    match disk {
        Some(v) => println!("disk  dd bs=1M count=1024 oflag=direct conv=fdatasync: {v:.0} MB/s"),
        None => println!("disk  dd failed"),
    }
    match loopback {
        Some(v) => println!("loopback iperf3 -t 5: {v:.0} MB/s"),
        None => println!("loopback: iperf3 not available"),
    }

    let data = root.join("data");
    let broker = Broker::start(&data, free_port(), shards);
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "== broker: {shards} shard(s), startup {} ms, idle RSS {:.1} MiB",
        broker.startup.as_millis(),
        broker.rss_mib()
    );

    let topic = "bench";
    create_topic(&broker.addr, topic, partitions);
    let count = (mb * 1024 * 1024 / MESSAGE_BYTES) as u64;
    let bytes = (count as usize * MESSAGE_BYTES) as f64;
    let produce_s = produce(&broker.addr, topic, partitions, count);
    let produce_mb_s = bytes / produce_s / 1e6;
    if produce_only {
        println!(
            "produce acks=all: {produce_mb_s:.0} MB/s ({:.0} msg/s), {count} messages of \
             {MESSAGE_BYTES} B over {partitions} partition(s)",
            count as f64 / produce_s
        );
        broker.stop();
        return;
    }
    let consume_s = consume(&broker.addr, topic, partitions, count);
    let consume_mb_s = bytes / consume_s / 1e6;
    println!("== {count} messages of {MESSAGE_BYTES} B over {partitions} partition(s)");
    let ratio = |v: f64, limit: Option<f64>| {
        limit.map_or("n/a".to_string(), |l| format!("{:.0}%", 100.0 * v / l))
    };
    println!(
        "produce acks=all: {produce_mb_s:.0} MB/s ({:.0} msg/s), {} of the disk limit",
        count as f64 / produce_s,
        ratio(produce_mb_s, disk)
    );
    println!(
        "consume (from cache): {consume_mb_s:.0} MB/s ({:.0} msg/s), {} of the loopback limit",
        count as f64 / consume_s,
        ratio(consume_mb_s, loopback)
    );
    raw_load(&broker, partitions, disk, loopback);
    println!("broker RSS after the run: {:.1} MiB", broker.rss_mib());
    broker.stop();

    if std::env::var("FRESHET_BENCH_PARTITIONS_10K").is_ok_and(|v| v == "1") {
        many_partitions(&root, shards);
    }
}

/// 100 topics x 100 partitions, one message each; RSS and restart time.
fn many_partitions(root: &std::path::Path, shards: usize) {
    let data = root.join("data-10k");
    let port = free_port();
    let broker = Broker::start(&data, port, shards);
    let started = Instant::now();
    for t in 0..100 {
        create_topic(&broker.addr, &format!("t{t:03}"), 100);
    }
    let create_s = started.elapsed().as_secs_f64();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("acks", "all")
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    for t in 0..100 {
        let topic = format!("t{t:03}");
        for p in 0..100 {
            loop {
                match producer.send(
                    BaseRecord::<(), [u8]>::to(&topic)
                        .partition(p)
                        .payload(&b"hello"[..]),
                ) {
                    Ok(()) => break,
                    Err(_) => {
                        producer.poll(Duration::from_millis(1));
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    println!(
        "== 10,000 partitions: created in {create_s:.1} s; RSS {:.1} MiB",
        broker.rss_mib()
    );
    broker.stop();
    let broker = Broker::start(&data, port, shards);
    println!(
        "restart with 10,000 partitions: ready in {} ms, RSS {:.1} MiB",
        broker.startup.as_millis(),
        broker.rss_mib()
    );
    broker.stop();
}

/// Raw Kafka-protocol load: pre-encoded ~1 MB batches (1,000 records of 1 KiB) sent as
/// Produce v9 requests (acks=all), pipelined `RAW_INFLIGHT` deep on one connection per
/// partition, then read back with Fetch v12 from offset 0. This takes the client's per-message
/// work out of the measurement (librdkafka spends more CPU than the broker on these 2 cores),
/// so it shows what the broker itself sustains.
mod raw {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use bytes::{Buf, Bytes, BytesMut};
    use freshet_protocol::batch::{encode_batch, Compression, NewRecord};
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader,
        ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    const RAW_INFLIGHT: usize = 8;
    const PRODUCE_VERSION: i16 = 9;
    const FETCH_VERSION: i16 = 12;

    pub fn batch(records: usize, value_bytes: usize) -> Bytes {
        let value = Bytes::from(vec![b'r'; value_bytes]);
        let records: Vec<NewRecord> = (0..records)
            .map(|_| (None, Some(value.clone()), 0))
            .collect();
        encode_batch(&records, Compression::None).expect("encode batch")
    }

    fn frame<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("freshet-bench")));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, key.request_header_version(version))
            .expect("header");
        body.encode(&mut buf, version).expect("body");
        let len = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        buf.to_vec()
    }

    fn read_frame(stream: &mut TcpStream) -> Bytes {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).expect("read size");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).expect("read body");
        Bytes::from(body)
    }

    /// Produces for `duration` on partition `partition`; returns bytes acknowledged.
    pub fn produce(
        addr: &str,
        topic: &str,
        partition: i32,
        batch: Bytes,
        duration: Duration,
    ) -> u64 {
        let mut writer = TcpStream::connect(addr).expect("connect");
        writer.set_nodelay(true).expect("nodelay");
        let mut reader = writer.try_clone().expect("clone");
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch.clone()))])]);
        let deadline = Instant::now() + duration;
        let (mut sent, mut acked, mut bytes) = (0usize, 0usize, 0u64);
        loop {
            while sent - acked < RAW_INFLIGHT && Instant::now() < deadline {
                let f = frame(ApiKey::Produce, PRODUCE_VERSION, sent as i32, &request);
                writer.write_all(&f).expect("send produce");
                sent += 1;
            }
            if acked == sent {
                break;
            }
            let mut response = read_frame(&mut reader);
            ResponseHeader::decode(
                &mut response,
                ApiKey::Produce.response_header_version(PRODUCE_VERSION),
            )
            .expect("header");
            let body =
                ProduceResponse::decode(&mut response, PRODUCE_VERSION).expect("produce response");
            let error = body.responses[0].partition_responses[0].error_code;
            let message = &body.responses[0].partition_responses[0].error_message;
            assert_eq!(error, 0, "produce error {error}: {message:?}");
            acked += 1;
            bytes += batch.len() as u64;
        }
        bytes
    }

    /// Fetches partition `partition` from `start_offset` until `end_offset`; returns record bytes.
    pub fn fetch(
        addr: &str,
        topic: &str,
        partition: i32,
        start_offset: i64,
        end_offset: i64,
    ) -> u64 {
        let mut stream = TcpStream::connect(addr).expect("connect");
        let (mut offset, mut bytes, mut correlation) = (start_offset, 0u64, 0i32);
        while offset < end_offset {
            let request = FetchRequest::default()
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(64 << 20)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(16 << 20)])]);
            stream
                .write_all(&frame(ApiKey::Fetch, FETCH_VERSION, correlation, &request))
                .expect("send fetch");
            correlation += 1;
            let mut response = read_frame(&mut stream);
            ResponseHeader::decode(
                &mut response,
                ApiKey::Fetch.response_header_version(FETCH_VERSION),
            )
            .expect("header");
            let body = FetchResponse::decode(&mut response, FETCH_VERSION).expect("fetch response");
            let part = &body.responses[0].partitions[0];
            assert_eq!(part.error_code, 0, "fetch error");
            let mut records = part.records.clone().unwrap_or_default();
            bytes += records.len() as u64;
            // Walk the batch headers: baseOffset (8), batchLength (4), ... lastOffsetDelta at 23.
            while records.len() >= 61 {
                let base = (&records[0..8]).get_i64();
                let length = (&records[8..12]).get_i32() as usize;
                let last_delta = (&records[23..27]).get_i32() as i64;
                offset = base + last_delta + 1;
                records.advance((12 + length).min(records.len()));
            }
        }
        bytes
    }
}

/// Runs the raw-protocol load against a broker with a `partitions`-partition topic `raw`.
fn raw_load(broker: &Broker, partitions: i32, disk: Option<f64>, loopback: Option<f64>) {
    let seconds = env_usize("FRESHET_BENCH_RAW_SECONDS", 5) as u64;
    // Read back only the newest batches of each partition, which fit in the tail cache
    // (128 MiB per shard by default).
    let tail_batches = env_usize("FRESHET_BENCH_RAW_TAIL_BATCHES", 40) as i64;
    create_topic(&broker.addr, "raw", partitions);
    // 1,000 records keep the batch under the default max.message.bytes (1048588).
    let batch = raw::batch(1000, MESSAGE_BYTES);
    let records_per_batch = 1000i64;
    let started = Instant::now();
    let produced: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..partitions)
            .map(|p| {
                let (addr, batch) = (broker.addr.clone(), batch.clone());
                s.spawn(move || raw::produce(&addr, "raw", p, batch, Duration::from_secs(seconds)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("producer"))
            .collect()
    });
    let produce_s = started.elapsed().as_secs_f64();
    let total: u64 = produced.iter().sum();
    let produce_mb_s = total as f64 / produce_s / 1e6;
    let started = Instant::now();
    let fetched: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = produced
            .iter()
            .enumerate()
            .map(|(p, bytes)| {
                let addr = broker.addr.clone();
                let batches = (*bytes / batch.len() as u64) as i64;
                let start = (batches - tail_batches).max(0) * records_per_batch;
                let end = batches * records_per_batch;
                s.spawn(move || raw::fetch(&addr, "raw", p as i32, start, end))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("fetcher"))
            .sum()
    });
    let fetch_mb_s = fetched as f64 / started.elapsed().as_secs_f64() / 1e6;
    let ratio = |v: f64, limit: Option<f64>| {
        limit.map_or("n/a".to_string(), |l| format!("{:.0}%", 100.0 * v / l))
    };
    println!("== raw protocol: ~1 MB batches of 1,000 records of 1 KiB, {partitions} connection(s), 8 requests in flight each");
    println!(
        "produce acks=all: {produce_mb_s:.0} MB/s, {} of the disk limit",
        ratio(produce_mb_s, disk)
    );
    println!(
        "fetch of the newest data (tail cache): {fetch_mb_s:.0} MB/s ({} MB), {} of the loopback limit",
        fetched / 1_000_000,
        ratio(fetch_mb_s, loopback)
    );
}
