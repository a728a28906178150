//! Crash safety of the partition log.
//!
//! - `acked_batches_survive_kill_9`: a child process (this test binary re-executed with
//!   `FRESHET_CRASH_CHILD` set) appends with durable acks from several concurrent tasks and
//!   prints every acknowledged range; the parent SIGKILLs it at random moments, many times,
//!   reopens the log and checks that every acknowledged batch is there, intact (same CRC, same
//!   offsets), and that everything served is whole, valid and contiguous.
//! - `recovery_truncates_to_last_good_batch`: corrupts or truncates the active segment at
//!   random byte positions and checks that recovery keeps exactly the batches before the
//!   damage.
//! - `damaged_index_is_rebuilt`: garbage or missing index files of sealed segments are
//!   detected and rebuilt; lookups still work.

use crate::storage_common as common;

use common::*;
use freshet::storage::{LogConfig, PartitionLog, TailCache};
use freshet_protocol::batch;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "FRESHET_CRASH_CHILD";
const ROUNDS: usize = 20;
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(30);

/// xorshift64*: deterministic, dependency-free randomness for test inputs.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A fresh seed each run (printed, so a failure can be replayed), or FRESHET_TEST_SEED.
fn seed() -> u64 {
    let seed = std::env::var("FRESHET_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            t ^ (u64::from(std::process::id()) << 32)
        });
    eprintln!("seed {seed} (replay with FRESHET_TEST_SEED={seed})");
    seed
}

fn crash_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// The child: append forever (until killed), printing `ACK base last crc` per durable append.
#[test]
#[ignore = "child process of `acked_batches_survive_kill_9`, which runs it with --ignored"]
fn crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Run by hand (--include-ignored) without the parent: nothing to do.
    };
    let dir = PathBuf::from(dir);
    run(async move {
        let log = Rc::new(
            PartitionLog::open(&dir, crash_config(), TailCache::new(4 << 20))
                .await
                .expect("child open"),
        );
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..6u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut rng = Rng::new(seed() ^ ((t + 1) * 0x9E37_79B9));
                while started.elapsed() < CHILD_LIFETIME_MAX {
                    let n = 1 + rng.below(20) as usize;
                    let big = rng.below(10) == 0;
                    let v = 50 + rng.below(if big { 60_000 } else { 2_000 }) as usize;
                    let b = batch(n, v, rng.below(1 << 40) as i64);
                    let crc = batch::header(&b).expect("h").crc();
                    let info = log.append(b, 1).await.expect("child append");
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ACK {} {} {}", info.base_offset, info.last_offset, crc);
                    let _ = out.flush();
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

fn parse_acks(stdout: &[u8]) -> Vec<(i64, i64, u32)> {
    let mut acks = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { continue };
        let mut it = line.split_whitespace();
        if it.next() != Some("ACK") {
            continue;
        }
        let (Some(a), Some(b), Some(c)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if let (Ok(a), Ok(b), Ok(c)) = (a.parse(), b.parse(), c.parse()) {
            acks.push((a, b, c));
        }
    }
    acks
}

/// Reopen the log and check every acknowledged batch and everything served.
async fn verify(dir: &Path, acks: &[(i64, i64, u32)], clean_close: bool) -> i64 {
    let log = PartitionLog::open(dir, crash_config(), TailCache::new(0))
        .await
        .expect("reopen after kill");
    let hw = log.high_watermark();
    assert_eq!(hw, log.log_end_offset());
    let all = read_all(&log, 0).await;
    let mut next = 0i64;
    let mut by_base = std::collections::HashMap::new();
    for b in &all {
        let h = batch::validate(b).expect("no torn batch is ever served");
        assert_eq!(h.base_offset(), next, "offsets are contiguous");
        next = h.last_offset() + 1;
        by_base.insert(h.base_offset(), (h.last_offset(), h.crc()));
    }
    assert_eq!(next, hw);
    for &(base, last, crc) in acks {
        assert!(
            last < hw,
            "acked batch {base}..={last} lost: high watermark {hw}"
        );
        assert_eq!(
            by_base.get(&base),
            Some(&(last, crc)),
            "acked batch at {base} differs"
        );
    }
    if clean_close {
        log.close().await.expect("close");
    }
    hw
}

#[test]
fn acked_batches_survive_kill_9() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("crash-0");
    let exe = std::env::current_exe().expect("current exe");
    let mut rng = Rng::new(seed());
    let mut acks: Vec<(i64, i64, u32)> = Vec::new();
    let started = Instant::now();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "storage_crash::crash_child_entry",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut r = stdout;
            let _ = std::io::Read::read_to_end(&mut r, &mut buf);
            buf
        });
        // Not synchronization: the child is killed at a random moment of its appends.
        std::thread::sleep(Duration::from_millis(100 + rng.below(500)));
        child.kill().expect("SIGKILL child");
        let status = child.wait().expect("wait child");
        assert!(!status.success(), "child must have been killed");
        let out = reader.join().expect("reader");
        let new_acks = parse_acks(&out);
        acks.extend(new_acks.iter().copied());
        let d = dir.clone();
        let a = acks.clone();
        let hw = run(async move { verify(&d, &a, round % 2 == 0).await });
        eprintln!(
            "round {round}: {} new acks, {} total, high watermark {hw}",
            new_acks.len(),
            acks.len()
        );
    }
    assert!(!acks.is_empty(), "the child never acknowledged anything");
    assert!(started.elapsed() < Duration::from_secs(120));
}

/// Positions of the batches in a segment file: `(start, end)`.
fn batch_spans(data: &[u8]) -> Vec<(usize, usize)> {
    batch::batches(data)
        .map_while(Result::ok)
        .map(|(p, b)| (p, p + b.len()))
        .collect()
}

#[test]
fn recovery_truncates_to_last_good_batch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let master = tmp.path().join("master-0");
    let m = master.clone();
    // Build a log of ~150 batches and leave it without a clean close (as after a crash).
    run(async move {
        let log = open(&m, LogConfig::default(), 1 << 20).await;
        let mut rng = Rng::new(7);
        for i in 0..150 {
            let n = 1 + rng.below(10) as usize;
            log.append(batch(n, 20 + rng.below(900) as usize, i), 1)
                .await
                .expect("append");
        }
        drop(log);
    });
    let seg_name = format!("{:020}.log", 0);
    let original = std::fs::read(master.join(&seg_name)).expect("read segment");
    let spans = batch_spans(&original);
    assert_eq!(spans.len(), 150);
    let logical_end = spans.last().expect("spans").1;
    let mut rng = Rng::new(seed());
    for trial in 0..40 {
        let dir = tmp.path().join(format!("trial-{trial}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for e in std::fs::read_dir(&master).expect("ls") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), dir.join(e.file_name())).expect("copy");
        }
        let p = rng.below(logical_end as u64) as usize;
        let mode = trial % 3;
        let mut data = original.clone();
        match mode {
            0 => data.truncate(p),                          // torn tail
            1 => data[p..].iter_mut().for_each(|b| *b = 0), // zero padding / unwritten blocks
            _ => data[p] ^= 1 << rng.below(8),              // bit flip
        }
        std::fs::write(dir.join(&seg_name), &data).expect("write damaged");
        // Which batches must survive.
        let k = spans
            .iter()
            .position(|&(s, e)| p >= s && p < e)
            .expect("p in a batch");
        let in_epoch_field = mode == 2 && (12..16).contains(&(p - spans[k].0));
        // Zeroing from p on leaves batch k intact when its bytes from p on were zero already
        // (a record's trailing header count is a zero byte): then k survives too.
        let zeroed_nothing_of_k = mode == 1 && original[p..spans[k].1].iter().all(|&b| b == 0);
        let keep = if in_epoch_field {
            spans.len()
        } else if zeroed_nothing_of_k {
            k + 1
        } else {
            k
        };
        let mut expected_hw = 0i64;
        for &(s, e) in &spans[..keep] {
            let h = batch::header(&original[s..e]).expect("h");
            assert!(h.base_offset() == expected_hw);
            expected_hw = h.last_offset() + 1;
        }
        let d = dir.clone();
        let (orig, sp) = (original.clone(), spans.clone());
        run(async move {
            let (original, spans) = (orig, sp);
            let log = open(&d, LogConfig::default(), 0).await;
            assert_eq!(
                log.high_watermark(),
                expected_hw,
                "trial {trial} mode {mode} at byte {p}"
            );
            let all = read_all(&log, 0).await;
            assert_eq!(all.len(), keep);
            for (got, &(s, e)) in all.iter().zip(&spans) {
                assert_eq!(&got[..], &original[s..e]);
            }
            // The log keeps working after recovery.
            let info = log.append(batch(2, 10, 1), 1).await.expect("append");
            assert_eq!(info.base_offset, expected_hw);
            log.close().await.expect("close");
        });
        let len = std::fs::metadata(dir.join(&seg_name)).expect("stat").len() as usize;
        assert!(len >= spans[..keep].last().map_or(0, |s| s.1));
    }
}

#[test]
fn damaged_index_is_rebuilt() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("idx-0");
    let cfg = LogConfig {
        segment_bytes: 20_000,
        index_interval_bytes: 512,
        ..LogConfig::default()
    };
    let c = cfg.clone();
    let d = dir.clone();
    run(async move {
        let log = open(&d, c, 1 << 20).await;
        for i in 0..60 {
            log.append(batch(3, 500, 1_000 * i), 1)
                .await
                .expect("append");
        }
        log.close().await.expect("close");
    });
    // Garbage in one index, a missing time index, a truncated offset index.
    std::fs::write(dir.join(format!("{:020}.index", 0)), vec![0xab; 40]).expect("w");
    let seg2 = std::fs::read_dir(&dir)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".timeindex") && !n.starts_with("00000000000000000000"))
        .min()
        .expect("a second segment");
    std::fs::remove_file(dir.join(&seg2)).expect("rm");
    let d = dir.clone();
    run(async move {
        let log = open(&d, cfg, 0).await;
        assert_eq!(log.high_watermark(), 180);
        for o in [0, 1, 50, 99, 179] {
            let data = log.read(o, 1, true).await.expect("read");
            let h = batch::header(&data.batches[0]).expect("h");
            assert!(h.base_offset() <= o && o <= h.last_offset());
        }
        assert_eq!(
            log.offset_for_timestamp(30_500).await.expect("ts"),
            Some((93, 31_000))
        );
        log.close().await.expect("close");
    });
    let idx = std::fs::read(dir.join(format!("{:020}.index", 0))).expect("index rebuilt");
    assert!(!idx.is_empty() && idx.len().is_multiple_of(8));
    assert!(dir.join(&seg2).exists(), "time index rebuilt");
}
