//! The shard's pool of open segment files (issue 12 item 2b), on real files: with a limit of 4
//! descriptors, 40 partition logs with several segments each append, read back from disk and
//! reopen; no more than 4 segment files are open whenever the logs are idle, and every byte
//! written is read back.

use crate::storage_common as common;

use common::*;
use freshet::storage::io;
use freshet::storage::LogConfig;

#[test]
fn forty_logs_work_through_a_pool_of_four_descriptors() {
    const LOGS: usize = 40;
    const POOL: usize = 4;
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().to_path_buf();
    run(async move {
        io::set_open_files_max(POOL);
        let config = LogConfig {
            segment_bytes: 16 << 10,
            index_interval_bytes: 1024,
            ..LogConfig::default()
        };
        let mut logs = Vec::new();
        for i in 0..LOGS {
            logs.push(open(&root.join(format!("t-{i}")), config.clone(), 0).await);
        }
        assert!(
            io::open_files() <= POOL,
            "{} files open after opening",
            io::open_files()
        );
        // Appends to every log in turn: each needs its file back from the pool.
        let mut sent = vec![Vec::new(); LOGS];
        for round in 0..6 {
            for (i, log) in logs.iter().enumerate() {
                let b = batch(5, 1000, 1_000 + round);
                log.append(b.clone(), 5_000).await.expect("append");
                sent[i].push(b);
            }
            assert!(
                io::open_files() <= POOL,
                "{} files open while idle",
                io::open_files()
            );
        }
        for log in &logs {
            assert!(log.segment_count() > 1, "16 KiB segments must have rolled");
        }
        // Read everything back from disk (no tail cache), across all segments.
        for (i, log) in logs.iter().enumerate() {
            let got = read_all(log, 0).await;
            assert_eq!(got.len(), sent[i].len(), "log {i}");
            for (g, s) in got.iter().zip(&sent[i]) {
                assert_eq!(payload(g), payload(s), "log {i}");
            }
        }
        assert!(io::open_files() <= POOL);
        for log in &logs {
            log.close().await.expect("close");
        }
        drop(logs);
        assert_eq!(io::open_files(), 0, "closed logs hold no descriptor");
        // Reopen (recovery through the pool) and read again.
        for i in [0, LOGS / 2, LOGS - 1] {
            let log = open(&root.join(format!("t-{i}")), config.clone(), 0).await;
            let got = read_all(&log, 0).await;
            assert_eq!(got.len(), sent[i].len());
            log.close().await.expect("close");
        }
    });
}
