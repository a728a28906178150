//! A full disk (issue 7): the broker's data directory is a small ext4 file system (a loop
//! mount of a 64 MiB image; needs root), producers write until it is full. Every produce is
//! then answered with KAFKA_STORAGE_ERROR, nothing panics and the broker keeps serving; once
//! space is freed (a filler file is deleted) producing succeeds again; after a kill -9 and a
//! restart, every acknowledged record is there, in place, and nothing else. Issue 12 item 8:
//! freeing 9 MiB lets produces succeed at once (no 32 MiB preallocation step needed first), and
//! a broker starts on a 100% full disk, serves reads and refuses writes until space is freed.
//!
//! Without root (or loop devices) the test cannot run: it is reported as skipped
//! (`common::skip`: a `SKIPPED:` line that `tests/run-all.sh` counts), or fails when
//! `FRESHET_REQUIRE_ALL_TESTS=1` (CI). The storage-level equivalent (RLIMIT_FSIZE), which runs
//! everywhere, is `tests/it/storage_ioerror.rs`.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{RawConn, TestBroker};
use kafka_protocol::error::ResponseError;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

const IMAGE_BYTES: u64 = 64 << 20;
const FILLER_BYTES: usize = 12 << 20;
const TOPIC: &str = "fills-the-disk";
const RECORDS_PER_BATCH: usize = 64;
const VALUE_BYTES: usize = 4000;
const KAFKA_STORAGE_ERROR: i16 = ResponseError::KafkaStorageError.code();

/// A loop-mounted ext4 image; unmounted (lazily if busy) when dropped.
struct SmallDisk {
    mount: PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmallDisk {
    fn create() -> Result<SmallDisk, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let tmp = tempfile::Builder::new()
            .prefix("freshet-enospc-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let image = tmp.path().join("disk.img");
        let mount = tmp.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(IMAGE_BYTES))
            .map_err(|e| e.to_string())?;
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()])?;
        run(
            "mount",
            &[
                "-o",
                "loop",
                image.to_str().unwrap(),
                mount.to_str().unwrap(),
            ],
        )?;
        Ok(SmallDisk { mount, _tmp: tmp })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let m = self.mount.to_str().unwrap();
        if run("umount", &[m]).is_err() {
            let _ = run("umount", &["-l", m]);
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn value(seq: usize) -> Vec<u8> {
    let mut v = format!("record-{seq:08}-").into_bytes();
    v.resize(VALUE_BYTES, b'.');
    v
}

/// Produces records `first..first + RECORDS_PER_BATCH` as one batch; (error code, base offset).
fn produce(conn: &mut RawConn, first: usize) -> (i16, i64) {
    common::produce_values(conn, TOPIC, (first..first + RECORDS_PER_BATCH).map(value))
}

/// Reads the partition from offset 0 up to its end: offset -> value.
fn read_all(broker: &TestBroker, expected: usize) -> BTreeMap<i64, Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("broker.address.family", "v4")
        .set("group.id", "enospc-reader")
        .set("enable.auto.commit", "false")
        .set("check.crcs", "true")
        .create()
        .expect("consumer");
    common::assign_from_beginning(&consumer, TOPIC, 0);
    let out = common::poll_values(&consumer, expected, Duration::from_secs(60));
    // Nothing beyond what is expected.
    let (_, high) = consumer
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(20))
        .expect("watermarks");
    assert_eq!(high as usize, expected, "high watermark");
    out
}

fn check_acknowledged(data: &BTreeMap<i64, Vec<u8>>, acked: &[(i64, usize)]) {
    let mut offsets = 0;
    for &(base, first_seq) in acked {
        for i in 0..RECORDS_PER_BATCH {
            let offset = base + i as i64;
            let got = data
                .get(&offset)
                .unwrap_or_else(|| panic!("acknowledged offset {offset} missing"));
            assert!(
                got == &value(first_seq + i),
                "offset {offset} holds other bytes"
            );
            offsets += 1;
        }
    }
    assert_eq!(
        offsets,
        data.len(),
        "records nobody acknowledged were served"
    );
}

fn create_topic(broker: &TestBroker) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.addr())
        .set("broker.address.family", "v4");
    // Small segments, so that segments roll (and are sealed) while the disk fills.
    let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1)).set("segment.bytes", "8388608");
    common::create_topic_via_admin(&config, &topic, &AdminOptions::new());
}

/// CreateTopics of a 1-partition topic over a raw connection; the topic's error code.
fn create_topic_raw(conn: &mut RawConn, name: &'static str) -> i16 {
    common::create_topic_raw(conn, name, 1, &[])
}

fn filler(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    std::fs::write(&path, vec![0xabu8; FILLER_BYTES]).unwrap();
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    path
}

#[test]
fn full_disk_gives_kafka_storage_error_then_recovers_when_space_is_freed() {
    let disk = match SmallDisk::create() {
        Ok(disk) => disk,
        Err(why) => {
            common::skip(
                "enospc::full_disk_gives_kafka_storage_error_then_recovers_when_space_is_freed",
                &format!("cannot loop-mount a small file system: {why}"),
            );
            return;
        }
    };
    let data_dir = disk.mount.join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let filler = filler(&disk.mount);
    common::within(Duration::from_secs(150), move || {
        let mut broker = TestBroker::start_in(1, Some(data_dir), &[]);
        create_topic(&broker);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        let mut acked: Vec<(i64, usize)> = Vec::new();
        let mut seq = 0;
        // 1. Fill the disk: every answer is a success or KAFKA_STORAGE_ERROR.
        let mut refused = 0;
        for _ in 0..400 {
            let (code, base) = produce(&mut conn, seq);
            match code {
                0 => acked.push((base, seq)),
                KAFKA_STORAGE_ERROR => refused += 1,
                other => panic!("produce answered error {other}\n{}", broker.log_tail()),
            }
            seq += RECORDS_PER_BATCH;
            if refused >= 3 {
                break;
            }
        }
        assert!(refused >= 3, "the disk never filled up");
        assert!(!acked.is_empty());
        assert!(broker.is_running());
        // The operator can see why: the cause is logged, and the broker still reports healthy.
        assert!(
            broker.log().contains("No space left on device"),
            "{}",
            broker.log_tail()
        );
        assert_eq!(broker.admin_get("/health").unwrap().0, 200);
        let (_, metrics) = broker.admin_get("/metrics").unwrap();
        assert!(
            common::metric_value(
                &metrics,
                &format!(
                    "freshet_partition_errors_total{{api=\"Produce\",error_code=\"{KAFKA_STORAGE_ERROR}\"}}"
                )
            )
            .unwrap_or(0.0)
                >= 3.0,
            "{metrics}"
        );
        eprintln!(
            "full after {} acknowledged batches ({} MiB)",
            acked.len(),
            (acked.len() * RECORDS_PER_BATCH * VALUE_BYTES) >> 20
        );
        // Creating a topic on the full disk is answered (success or an error code), and
        // does not take the broker down.
        let created = create_topic_raw(&mut conn, "created-while-full");
        eprintln!("CreateTopics on the full disk answered error code {created}");
        assert!(
            broker.is_running(),
            "CreateTopics on a full disk: {created}"
        );
        // Everything acknowledged is readable while the disk is full.
        let total = acked.len() * RECORDS_PER_BATCH;
        check_acknowledged(&read_all(&broker, total), &acked);

        // 2. Free space: producing works again.
        std::fs::remove_file(&filler).unwrap();
        let mut after = 0;
        for _ in 0..10 {
            let (code, base) = produce(&mut conn, seq);
            assert!(
                code == 0 || code == KAFKA_STORAGE_ERROR,
                "produce answered error {code}"
            );
            if code == 0 {
                acked.push((base, seq));
                after += 1;
            }
            seq += RECORDS_PER_BATCH;
        }
        assert!(
            after >= 5,
            "only {after} of 10 produces succeeded after freeing 12 MiB"
        );
        let created = create_topic_raw(&mut conn, "created-after-freeing");
        assert_eq!(created, 0, "CreateTopics after freeing space");
        let total = acked.len() * RECORDS_PER_BATCH;
        check_acknowledged(&read_all(&broker, total), &acked);

        // 3. kill -9 and restart: every acknowledged record is there, and nothing else.
        drop(conn);
        broker.kill9();
        broker.start_again();
        check_acknowledged(&read_all(&broker, total), &acked);
        assert!(!broker.log().contains("panicked"), "{}", broker.log_tail());
    });
    drop(disk);
}

/// Creates the topic with Kafka's default `segment.bytes` (1 GiB), so that the active segment
/// preallocates in growing steps (up to 32 MiB at a time) while the disk fills.
fn create_big_segment_topic(conn: &mut RawConn) {
    let code = create_topic_raw(conn, TOPIC);
    assert_eq!(code, 0, "CreateTopics");
}

/// Produces until the disk is full (three KAFKA_STORAGE_ERROR answers); returns the
/// acknowledged batches and the next sequence number.
fn produce_until_full(
    broker: &TestBroker,
    conn: &mut RawConn,
    acked: &mut Vec<(i64, usize)>,
    mut seq: usize,
) -> usize {
    let mut refused = 0;
    for _ in 0..400 {
        let (code, base) = produce(conn, seq);
        match code {
            0 => acked.push((base, seq)),
            KAFKA_STORAGE_ERROR => refused += 1,
            other => panic!("produce answered error {other}\n{}", broker.log_tail()),
        }
        seq += RECORDS_PER_BATCH;
        if refused >= 3 {
            return seq;
        }
    }
    panic!("the disk never filled up");
}

/// Writes `dir/name` until the file system refuses (ENOSPC): the disk is 100% full.
fn fill_to_the_brim(dir: &Path, name: &str) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in [1usize << 20, 64 << 10, 4 << 10, 512] {
        let buf = vec![0xcdu8; chunk];
        while f.write_all(&buf).is_ok() && f.sync_all().is_ok() {}
    }
    let _ = f.sync_all();
    let stat = nix_statvfs(dir);
    eprintln!("disk full: {stat} bytes free");
    path
}

/// Bytes free on the file system holding `dir` (for root: f_bfree).
fn nix_statvfs(dir: &Path) -> u64 {
    let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid C string and `st` a properly sized out-parameter.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0);
        st.f_bfree as u64 * st.f_frsize as u64
    }
}

/// Issue 12 item 8: once a little space is free again (9 MiB), produces succeed at once; the
/// active segment must not insist on preallocating a full 32 MiB step first.
#[test]
fn writes_resume_when_a_few_mib_are_freed() {
    let disk = match SmallDisk::create() {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("SKIPPED writes_resume test: cannot loop-mount a small file system ({why})");
            return;
        }
    };
    let data_dir = disk.mount.join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let reserve = disk.mount.join("reserve");
    std::fs::write(&reserve, vec![0xabu8; 9 << 20]).unwrap();
    std::fs::File::open(&reserve).unwrap().sync_all().unwrap();
    common::within(Duration::from_secs(150), move || {
        let broker = TestBroker::start_in(1, Some(data_dir), &[]);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_big_segment_topic(&mut conn);
        let mut acked = Vec::new();
        let mut seq = produce_until_full(&broker, &mut conn, &mut acked, 0);
        let free_when_full = nix_statvfs(&disk.mount);
        std::fs::remove_file(&reserve).unwrap();
        let mut ok = 0;
        for _ in 0..10 {
            let (code, base) = produce(&mut conn, seq);
            assert!(
                code == 0 || code == KAFKA_STORAGE_ERROR,
                "produce answered error {code}"
            );
            if code == 0 {
                acked.push((base, seq));
                ok += 1;
            }
            seq += RECORDS_PER_BATCH;
        }
        eprintln!(
            "{ok} of 10 produces of {} KiB succeeded after freeing 9 MiB ({} KiB were free when \
             the disk was full)",
            RECORDS_PER_BATCH * VALUE_BYTES / 1024,
            free_when_full / 1024
        );
        assert_eq!(
            ok,
            10,
            "produces failed with 9 MiB free\n{}",
            broker.log_tail()
        );
        let total = acked.len() * RECORDS_PER_BATCH;
        check_acknowledged(&read_all(&broker, total), &acked);
        drop(conn);
        drop(broker);
        drop(disk);
    });
}

/// Issue 12 item 8: a broker stopped on a full disk starts again on a 100% full disk, serves
/// every acknowledged record, refuses produces with KAFKA_STORAGE_ERROR, and takes them again
/// once space is freed.
#[test]
fn starts_on_a_full_disk_and_serves_reads() {
    let disk = match SmallDisk::create() {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!(
                "SKIPPED full-disk start test: cannot loop-mount a small file system ({why})"
            );
            return;
        }
    };
    let data_dir = disk.mount.join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let reserve = disk.mount.join("reserve");
    std::fs::write(&reserve, vec![0xabu8; 9 << 20]).unwrap();
    std::fs::File::open(&reserve).unwrap().sync_all().unwrap();
    common::within(Duration::from_secs(150), move || {
        let mut broker = TestBroker::start_in(1, Some(data_dir), &[]);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        create_big_segment_topic(&mut conn);
        let mut acked = Vec::new();
        let mut seq = produce_until_full(&broker, &mut conn, &mut acked, 0);
        drop(conn);
        // A clean stop; writing its checkpoints may itself fail for want of space.
        let status = broker.stop();
        eprintln!("stopped on the full disk: {status}");
        // As on a first start, or with more shards than last time: no probe file to reuse.
        for entry in std::fs::read_dir(disk.mount.join("data")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if name.starts_with(".freshet-disk-probe") {
                std::fs::remove_file(&path).unwrap();
            }
        }
        let filler = fill_to_the_brim(&disk.mount, "filler");

        broker.start_again();
        let total = acked.len() * RECORDS_PER_BATCH;
        check_acknowledged(&read_all(&broker, total), &acked);
        let mut conn = RawConn::connect(broker.socket_addr()).unwrap();
        let (code, _) = produce(&mut conn, seq);
        assert_eq!(code, KAFKA_STORAGE_ERROR, "produce on a 100% full disk");
        seq += RECORDS_PER_BATCH;

        std::fs::remove_file(&filler).unwrap();
        std::fs::remove_file(&reserve).unwrap();
        let mut ok = 0;
        for _ in 0..5 {
            let (code, base) = produce(&mut conn, seq);
            if code == 0 {
                acked.push((base, seq));
                ok += 1;
            }
            seq += RECORDS_PER_BATCH;
        }
        eprintln!("{ok} of 5 produces succeeded after freeing space");
        assert_eq!(ok, 5, "produces failed after freeing 9+ MiB");
        let total = acked.len() * RECORDS_PER_BATCH;
        check_acknowledged(&read_all(&broker, total), &acked);
        assert!(!broker.log().contains("panicked"), "{}", broker.log_tail());
        drop(conn);
        drop(broker);
        drop(disk);
    });
}
