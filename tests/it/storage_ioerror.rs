//! Disk errors are returned, not panics, and leave a consistent log: a child process (this
//! test binary re-executed with `FRESHET_IOERR_CHILD` set) lowers RLIMIT_FSIZE so that growing
//! the segment fails with EFBIG (as a full disk fails with ENOSPC), appends until an append
//! fails, checks that the failed data is neither served nor indexed and that the log end fell
//! back to the high watermark, raises the limit, appends again, closes and reopens.

use crate::storage_common as common;

use common::*;
use freshet::storage::{LogConfig, StorageError};
use freshet_protocol::batch;
use std::path::PathBuf;
use std::process::Command;

const CHILD_ENV: &str = "FRESHET_IOERR_CHILD";
const FSIZE_LIMIT_BYTES: u64 = 40 << 20;

fn set_fsize_limit(bytes: u64) {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscalls on this process; SIGXFSZ ignored so writes fail with EFBIG.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0, "setrlimit");
    }
}

#[test]
#[ignore = "child process of `disk_full_errors_are_returned_and_the_log_recovers`, which runs it with --ignored"]
fn ioerror_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    run(async move {
        let cfg = LogConfig::default();
        let log = open(&dir, cfg.clone(), 4 << 20).await;
        set_fsize_limit(FSIZE_LIMIT_BYTES);
        let one_mib = batch(1000, 1000, 1);
        let mut acked = 0i64;
        let err = loop {
            match log.append(one_mib.clone(), 1).await {
                Ok(info) => {
                    assert_eq!(info.base_offset, acked);
                    acked = info.last_offset + 1;
                    assert!(acked < 200_000, "the file size limit never bit");
                }
                Err(e) => break e,
            }
        };
        let StorageError::Io { op, source } = &err else {
            panic!("expected an I/O error, got {err:?}");
        };
        println!("IOERR op={op} error={source} acked={acked}");
        assert_eq!(log.high_watermark(), acked);
        assert_eq!(
            log.log_end_offset(),
            acked,
            "log end falls back to the high watermark"
        );
        let all = read_all(&log, 0).await;
        assert_eq!(all.len() as i64, acked / 1000);
        assert!(matches!(
            log.read(acked + 1, 100, true).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // Space comes back: the log carries on from the durable end.
        set_fsize_limit(u64::MAX >> 1);
        let info = log
            .append(one_mib.clone(), 1)
            .await
            .expect("append after error");
        assert_eq!(info.base_offset, acked);
        log.close().await.expect("close");
        let log = open(&dir, cfg, 0).await;
        assert_eq!(log.high_watermark(), acked + 1000);
        for b in read_all(&log, 0).await {
            batch::validate(&b).expect("valid");
        }
        log.close().await.expect("close");
        println!("IOERR-OK");
    });
}

#[test]
fn disk_full_errors_are_returned_and_the_log_recovers() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let exe = std::env::current_exe().expect("exe");
    let out = Command::new(exe)
        .args([
            "storage_ioerror::ioerror_child_entry",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, tmp.path().join("full-0"))
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("IOERR-OK"),
        "child failed:\n{stdout}\n{stderr}"
    );
    eprintln!(
        "{}",
        stdout
            .lines()
            .find(|l| l.contains("IOERR op"))
            .unwrap_or("")
    );
}
