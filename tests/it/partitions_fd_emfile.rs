//! A segment file that must be reopened while the process is out of descriptors (issue 12
//! item 2c: EMFILE caused elsewhere, e.g. by connections) is reopened after the shard's file
//! pool closes idle files, instead of failing the read. It lowers RLIMIT_NOFILE and uses up every
//! descriptor, so it runs in a child process (this test executable run again with `--ignored`):
//! the other tests of the `it` binary run in parallel threads and must not see EMFILE.

use crate::common::set_nofile_soft as set_nofile;
use crate::storage_common as common;

use common::*;
use freshet::storage::io;
use freshet::storage::LogConfig;

/// Set in the child process that runs [`emfile_child_entry`].
const CHILD_ENV: &str = "FRESHET_EMFILE_CHILD";

#[test]
fn a_segment_reopens_when_the_process_is_out_of_descriptors() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let exe = std::env::current_exe().expect("exe");
    let out = std::process::Command::new(exe)
        .args([
            "partitions_fd_emfile::emfile_child_entry",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("EMFILE-OK"),
        "child failed:\n{stdout}\n{stderr}"
    );
}

#[test]
#[ignore = "child process of `a_segment_reopens_when_the_process_is_out_of_descriptors`, which runs it with --ignored"]
fn emfile_child_entry() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    const LOGS: usize = 41;
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().to_path_buf();
    run(async move {
        io::set_open_files_max(LOGS - 1);
        let mut logs = Vec::new();
        let mut sent = Vec::new();
        for i in 0..LOGS {
            let log = open(&root.join(format!("t-{i}")), LogConfig::default(), 0).await;
            let b = batch(3, 200, 1_000);
            log.append(b.clone(), 5_000).await.expect("append");
            sent.push(b);
            logs.push(log);
        }
        // Log 0 is the least recently used: the pool closed its file for log 40's.
        assert_eq!(io::open_files(), LOGS - 1);
        // The pool is under its limit now, so only EMFILE can make it give files back.
        io::set_open_files_max(10_000);
        // Use up every descriptor the process may have, as connections would.
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let original = set_nofile(highest + 8);
        let mut fillers = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            fillers.push(f);
        }
        let got = read_all(&logs[0], 0).await;
        drop(fillers);
        set_nofile(original);
        assert_eq!(got.len(), 1);
        assert_eq!(payload(&got[0]), payload(&sent[0]));
        assert!(
            io::open_files() < LOGS - 1,
            "idle files were closed to make room"
        );
        for log in &logs {
            log.close().await.expect("close");
        }
    });
    println!("EMFILE-OK");
}
