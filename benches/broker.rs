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
//! `FRESHET_BENCH_PARTITIONS` (default 4), `FRESHET_BENCH_SHARDS` (default 2).

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
    let producer: BaseProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("enable.idempotence", "false")
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

    println!("== machine limits (same run)");
    let disk = disk_limit_mb_s(&root, 1024);
    let loopback = loopback_limit_mb_s();
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
