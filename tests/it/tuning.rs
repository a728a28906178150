//! `freshet tune` (issue 6) through the real binary: the disk probe writes a profile that the
//! broker reads at its next start (and says so), `check` reports without changing anything,
//! and `apply` changes the settings of a fake `/proc` tree.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{broker_bin, TestBroker};
use freshet::tuning::disk::{DiskProfile, PROFILE_FILE_NAME, SCRATCH_FILE_NAME};

/// The text without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A short probe writes a plausible profile and leaves no scratch file; the broker started on
/// that data directory logs that it uses the profile, with the sizes derived from it.
#[test]
fn disk_probe_profile_is_used_by_the_broker() {
    common::within(Duration::from_secs(120), || {
        let mut broker = TestBroker::start(1);
        let log = broker.log_tail();
        assert!(log.contains("no disk profile"), "{log}");
        broker.stop();
        let data_dir = broker.data_dir().to_path_buf();
        let out = Command::new(broker_bin())
            .args(["tune", "disk", "--quick", "--data-dir"])
            .arg(&data_dir)
            .output()
            .expect("run freshet tune disk");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("MB/s"), "{stdout}");
        assert!(!data_dir.join(SCRATCH_FILE_NAME).exists());
        let profile = DiskProfile::load(&data_dir.join(PROFILE_FILE_NAME))
            .expect("readable profile")
            .expect("profile written");
        assert!(profile.write_bytes_per_sec > 1_000_000, "{profile:?}");
        assert!(profile.read_bytes_per_sec > 1_000_000, "{profile:?}");
        assert!(
            profile.fdatasync_p50_us > 0 && profile.fdatasync_p99_us >= profile.fdatasync_p50_us
        );
        assert!(freshet::tuning::disk::WRITE_SIZES.contains(&(profile.best_write_bytes as usize)));
        for size in freshet::tuning::disk::WRITE_SIZES {
            assert!(
                profile
                    .points
                    .iter()
                    .any(|p| p.write_bytes == *size as u64 && p.bytes_per_sec > 0),
                "no measurement of {size}-byte writes"
            );
        }

        broker.start_again();
        let sizes = profile.io_sizes();
        let log = strip_ansi(&broker.log_tail());
        let line = log
            .lines()
            .find(|l| l.contains("using disk profile"))
            .unwrap_or_else(|| panic!("the broker did not report the profile:\n{log}"));
        for want in [
            format!("write_bytes_max={}", sizes.write_bytes_max),
            format!("flush_bytes_max={}", sizes.flush_bytes_max),
            format!("preallocate_step_bytes={}", sizes.preallocate_step_bytes),
        ] {
            assert!(line.contains(&want), "{want} missing from: {line}");
        }
    })
}

/// `check` on the real host prints the table and changes nothing; `apply` against a fake
/// `/proc` tree writes the wanted values there and then reports them as fine.
#[test]
fn check_reports_and_apply_writes_a_fake_proc_tree() {
    let out = Command::new(broker_bin())
        .args(["tune", "check"])
        .output()
        .expect("run freshet tune check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for setting in [
        "cpu frequency governor",
        "irq affinity",
        "vm.swappiness",
        "transparent hugepages",
    ] {
        assert!(stdout.contains(setting), "{setting} missing:\n{stdout}");
    }

    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let swappiness = root.join("proc/sys/vm/swappiness");
    std::fs::create_dir_all(swappiness.parent().expect("parent")).expect("mkdir");
    std::fs::write(&swappiness, "60\n").expect("write");
    let somaxconn = root.join("proc/sys/net/core/somaxconn");
    std::fs::create_dir_all(somaxconn.parent().expect("parent")).expect("mkdir");
    std::fs::write(&somaxconn, "8192\n").expect("write");

    let check = Command::new(broker_bin())
        .args(["tune", "check", "--root"])
        .arg(root)
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("CHANGE vm.swappiness"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&swappiness).expect("read"),
        "60\n",
        "check changes nothing"
    );

    let apply = Command::new(broker_bin())
        .args(["tune", "apply", "--root"])
        .arg(root)
        .output()
        .expect("apply");
    let text = String::from_utf8_lossy(&apply.stdout);
    assert!(apply.status.success(), "{text}");
    assert_eq!(std::fs::read_to_string(&swappiness).expect("read"), "1");
    assert_eq!(
        std::fs::read_to_string(&somaxconn).expect("read"),
        "8192\n",
        "already fine: untouched"
    );
    assert!(text.contains("ok     vm.swappiness"), "{text}");
}
