//! `freshet tune check` / `freshet tune apply`: the host settings Freshet depends on.
//!
//! [`checks`] reads the current value of every setting (from `/sys`, `/proc` and the process
//! limits) and compares it with what Freshet wants; each [`Check`] carries the file writes
//! that would fix it. `check` prints them; `apply` performs them and reports each write (most
//! need root; a failed write is reported, never fatal, and makes the exit status 1). The
//! settings and the reasons are listed in `tuning/README.md`; keep the two in step.
//!
//! All paths are under a root directory (`/` in production), so tests run against a fake
//! `/sys` and `/proc` tree. Runtime values only: `apply` does not make sysctls persistent
//! (it prints the `/etc/sysctl.d` line to add), except the locked-memory limit, which only
//! exists as configuration (`/etc/security/limits.d/99-freshet.conf`).

use std::path::{Path, PathBuf};

use super::{format_cpu_list, parse_cpu_list};
use crate::config::BrokerConfig;

/// What `check` and `apply` look at.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Root of the file system (`/`; a fake tree in tests).
    pub root: PathBuf,
    /// The broker's settings (shards, io memory, ring depth, data directory, shard CPUs).
    pub config: BrokerConfig,
    /// Charge locked memory as for this user id (the broker's user); root is not charged.
    pub uid: u32,
    /// The locked-memory limit the broker's user has, in bytes (`None`: unlimited).
    pub memlock_bytes: Option<u64>,
}

/// One file write that fixes a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// File to write (under the root).
    pub path: PathBuf,
    /// Value written.
    pub value: String,
}

/// One setting: what the host has, what Freshet wants, why, and how to get there.
#[derive(Debug, Clone)]
pub struct Check {
    /// Setting name (a sysctl name, or a short description).
    pub name: String,
    /// Current value.
    pub have: String,
    /// Wanted value.
    pub want: String,
    /// True if nothing needs to change.
    pub ok: bool,
    /// Why Freshet wants it.
    pub why: &'static str,
    /// Writes that make it so (empty if ok, or if it cannot be fixed by a write).
    pub fixes: Vec<Fix>,
    /// What the operator should know besides (e.g. irqbalance would undo the change).
    pub note: Option<String>,
}

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel.trim_start_matches('/')))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The selected word of a kernel choice file (`always [madvise] never` -> `madvise`).
fn selected(choices: &str) -> Option<String> {
    let start = choices.find('[')?;
    let end = choices[start..].find(']')? + start;
    Some(choices[start + 1..end].to_string())
}

fn check(
    name: impl Into<String>,
    have: String,
    want: String,
    ok: bool,
    why: &'static str,
) -> Check {
    Check {
        name: name.into(),
        have,
        want,
        ok,
        why,
        fixes: Vec::new(),
        note: None,
    }
}

/// Every check, in report order.
pub fn checks(opts: &HostOptions) -> Vec<Check> {
    let mut out = vec![governor(opts), irq_affinity(opts), memlock(opts)];
    out.extend(transparent_huge_pages(opts));
    out.extend(sysctls(opts));
    out.push(io_scheduler(opts));
    out
}

fn cpu_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("sys/devices/system/cpu"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with("cpu") && n[3..].parse::<usize>().is_ok()
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

fn governor(opts: &HostOptions) -> Check {
    const WHY: &str = "a CPU that drops its clock between bursts adds its ramp-up time to the \
                       next request; shards spin-then-park, so ondemand/powersave governors see \
                       them as idle";
    let mut have = Vec::new();
    let mut fixes = Vec::new();
    let mut unavailable = false;
    for dir in cpu_dirs(&opts.root) {
        let gov = dir.join("cpufreq/scaling_governor");
        let Ok(v) = std::fs::read_to_string(&gov) else {
            continue;
        };
        let v = v.trim().to_string();
        let available = std::fs::read_to_string(dir.join("cpufreq/scaling_available_governors"))
            .map(|a| a.split_whitespace().any(|g| g == "performance"))
            .unwrap_or(true);
        if v != "performance" {
            if available {
                fixes.push(Fix {
                    path: gov,
                    value: "performance".into(),
                });
            } else {
                unavailable = true;
            }
        }
        if !have.contains(&v) {
            have.push(v);
        }
    }
    if have.is_empty() {
        let mut c = check(
            "cpu frequency governor",
            "n/a (no cpufreq: a VM or a fixed clock)".into(),
            "performance".into(),
            true,
            WHY,
        );
        c.note = Some("nothing to set here".into());
        return c;
    }
    let mut c = check(
        "cpu frequency governor",
        have.join(","),
        "performance".into(),
        fixes.is_empty(),
        WHY,
    );
    c.fixes = fixes;
    if unavailable {
        c.note = Some(
            "some CPUs offer no performance governor (set it in the BIOS or the hypervisor)".into(),
        );
    }
    c
}

/// CPUs the shards run on: `shard_cpus` from the config, or every online CPU.
pub fn shard_cpus(opts: &HostOptions, online: &[usize]) -> Vec<usize> {
    if opts.config.shard_cpus.is_empty() {
        online.to_vec()
    } else {
        opts.config
            .shard_cpus
            .iter()
            .copied()
            .filter(|c| online.contains(c))
            .collect()
    }
}

fn irq_affinity(opts: &HostOptions) -> Check {
    const WHY: &str = "a network or disk interrupt handled on a shard's core preempts that \
                       shard (its requests wait); interrupts belong on the cores the shards do \
                       not use";
    let online = read(&opts.root, "sys/devices/system/cpu/online")
        .and_then(|s| parse_cpu_list(&s).ok())
        .unwrap_or_default();
    let shards = shard_cpus(opts, &online);
    let spare: Vec<usize> = online
        .iter()
        .copied()
        .filter(|c| !shards.contains(c))
        .collect();
    let want = if spare.is_empty() {
        "IRQs off shard CPUs (no spare CPU)".to_string()
    } else {
        format!("IRQs on CPUs {}", format_cpu_list(&spare))
    };
    if spare.is_empty() {
        let mut c = check(
            "irq affinity",
            format!("shards on every CPU ({})", format_cpu_list(&online)),
            want,
            true,
            WHY,
        );
        c.note = Some(
            "set shard_cpus to a subset of the CPUs to keep interrupts off the shards (worth it \
             from about 8 cores)"
                .into(),
        );
        return c;
    }
    let (on_shards, total, fixes) = irqs_on_shards(opts, &shards, &spare);
    let mut c = check(
        "irq affinity",
        format!(
            "{on_shards} of {total} IRQs may run on shard CPUs {}",
            format_cpu_list(&shards)
        ),
        want,
        fixes.is_empty(),
        WHY,
    );
    c.fixes = fixes;
    if irqbalance_running(&opts.root) {
        c.note = Some(format!(
            "irqbalance is running and will move IRQs back: stop it, or set \
             IRQBALANCE_BANNED_CPULIST={}",
            format_cpu_list(&shards)
        ));
    } else if !c.ok {
        c.note =
            Some("some IRQs cannot be moved (the kernel refuses the write); that is fine".into());
    }
    c
}

/// Of the IRQs under /proc/irq: how many may run on a shard CPU, how many there are, and the
/// writes that move the former to the `spare` CPUs.
fn irqs_on_shards(
    opts: &HostOptions,
    shards: &[usize],
    spare: &[usize],
) -> (usize, usize, Vec<Fix>) {
    let mut on_shards = 0usize;
    let mut total = 0usize;
    let mut fixes = Vec::new();
    let irq_dir = opts.root.join("proc/irq");
    let mut irqs: Vec<(u32, PathBuf)> = std::fs::read_dir(&irq_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n: u32 = e.file_name().to_string_lossy().parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    irqs.sort();
    for (_, dir) in irqs {
        let f = dir.join("smp_affinity_list");
        let Ok(v) = std::fs::read_to_string(&f) else {
            continue;
        };
        let Ok(cpus) = parse_cpu_list(&v) else {
            continue;
        };
        total += 1;
        if cpus.iter().any(|c| shards.contains(c)) {
            on_shards += 1;
            fixes.push(Fix {
                path: f,
                value: format_cpu_list(spare),
            });
        }
    }
    (on_shards, total, fixes)
}

fn irqbalance_running(root: &Path) -> bool {
    std::fs::read_dir(root.join("proc"))
        .map(|rd| {
            rd.filter_map(|e| e.ok()).any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    && std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "irqbalance")
            })
        })
        .unwrap_or(false)
}

fn memlock(opts: &HostOptions) -> Check {
    const WHY: &str = "glommio locks its io_uring rings and I/O buffers in memory; below the \
                       limit the broker refuses to start";
    let shards = opts.config.shard_count();
    let need =
        crate::rt::memlock_needed(opts.config.io_memory_bytes, opts.config.ring_depth, shards);
    let want = format!(">= {} KiB ({shards} shards)", need.div_ceil(1024));
    if opts.uid == 0 {
        return check(
            "locked memory (ulimit -l)",
            "root: not charged".into(),
            want,
            true,
            WHY,
        );
    }
    let have = match opts.memlock_bytes {
        None => "unlimited".to_string(),
        Some(b) => format!("{} KiB", b / 1024),
    };
    let ok = opts.memlock_bytes.is_none_or(|b| b >= need);
    let mut c = check("locked memory (ulimit -l)", have, want, ok, WHY);
    if !ok {
        // Twice the need, so a few more shards or a larger io_memory still fit.
        let kib = (need * 2).div_ceil(1024);
        c.fixes.push(Fix {
            path: opts.root.join("etc/security/limits.d/99-freshet.conf"),
            value: format!("# written by freshet tune apply\n* - memlock {kib}\n"),
        });
        c.note = Some(format!(
            "takes effect at the next login; under systemd set LimitMEMLOCK={}K in the unit",
            kib
        ));
    }
    c
}

fn transparent_huge_pages(opts: &HostOptions) -> Vec<Check> {
    const WHY_ENABLED: &str = "with THP always, page faults may compact memory synchronously \
                               and khugepaged rewrites the heap in the background: latency \
                               spikes on the shards; madvise keeps THP for those who ask";
    const WHY_DEFRAG: &str = "defrag=always makes an allocating shard stall on memory \
                              compaction";
    let mut out = Vec::new();
    for (file, name, why) in [
        (
            "sys/kernel/mm/transparent_hugepage/enabled",
            "transparent hugepages",
            WHY_ENABLED,
        ),
        (
            "sys/kernel/mm/transparent_hugepage/defrag",
            "transparent hugepage defrag",
            WHY_DEFRAG,
        ),
    ] {
        let Some(v) = read(&opts.root, file) else {
            out.push(check(
                name,
                "n/a".into(),
                "madvise or never".into(),
                true,
                why,
            ));
            continue;
        };
        let sel = selected(&v).unwrap_or(v);
        let ok = sel != "always";
        let mut c = check(name, sel, "madvise or never".into(), ok, why);
        if !ok {
            c.fixes.push(Fix {
                path: opts.root.join(file),
                value: "madvise".into(),
            });
        }
        out.push(c);
    }
    out
}

/// How a sysctl's value is judged.
enum Want {
    AtLeast(u64),
    AtMost(u64),
    Equal(u64),
    /// The last of three numbers (`tcp_rmem`: min default max) at least this.
    MaxOfThreeAtLeast(u64),
}

const SYSCTLS: &[(&str, Want, &str)] = &[
    (
        "net.core.somaxconn",
        Want::AtLeast(4096),
        "the accept queue: a burst of client connections (a consumer group restarting) \
         beyond it is dropped and retried after a second",
    ),
    (
        "net.ipv4.tcp_max_syn_backlog",
        Want::AtLeast(4096),
        "half-open connections queued during such a burst",
    ),
    (
        "net.core.netdev_max_backlog",
        Want::AtLeast(4096),
        "packets queued per CPU when the NIC delivers faster than the kernel processes",
    ),
    (
        "net.core.rmem_max",
        Want::AtLeast(16 << 20),
        "lets TCP autotuning grow receive buffers for large produce requests on fast links",
    ),
    (
        "net.core.wmem_max",
        Want::AtLeast(16 << 20),
        "lets TCP autotuning grow send buffers for large fetch responses",
    ),
    (
        "net.ipv4.tcp_rmem",
        Want::MaxOfThreeAtLeast(16 << 20),
        "per-socket receive buffer ceiling used by autotuning",
    ),
    (
        "net.ipv4.tcp_wmem",
        Want::MaxOfThreeAtLeast(16 << 20),
        "per-socket send buffer ceiling used by autotuning",
    ),
    (
        "net.ipv4.tcp_slow_start_after_idle",
        Want::Equal(0),
        "a long-poll fetch connection idles between bursts; restarting slow start after each \
         idle period throttles the next response",
    ),
    (
        "vm.swappiness",
        Want::AtMost(1),
        "a swapped-out page of a shard stalls every partition that shard owns",
    ),
    (
        "fs.nr_open",
        Want::AtLeast(1_048_576),
        "the ceiling of a process's open-files limit: every partition keeps its segment files \
         open and every connection is a descriptor",
    ),
];

fn sysctls(opts: &HostOptions) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, want, why) in SYSCTLS {
        let rel = format!("proc/sys/{}", name.replace('.', "/"));
        let path = opts.root.join(&rel);
        let Some(have) = read(&opts.root, &rel) else {
            out.push(check(*name, "n/a".into(), "-".into(), true, why));
            continue;
        };
        let nums: Vec<u64> = have
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let (ok, want_text, fix) = match *want {
            Want::AtLeast(w) => {
                let ok = nums.first().is_some_and(|&v| v >= w);
                (ok, format!(">= {w}"), w.to_string())
            }
            Want::AtMost(w) => {
                let ok = nums.first().is_some_and(|&v| v <= w);
                (ok, format!("<= {w}"), w.to_string())
            }
            Want::Equal(w) => {
                let ok = nums.first() == Some(&w);
                (ok, w.to_string(), w.to_string())
            }
            Want::MaxOfThreeAtLeast(w) => {
                let ok = nums.len() == 3 && nums[2] >= w;
                let fix = if nums.len() == 3 {
                    format!("{} {} {w}", nums[0], nums[1])
                } else {
                    format!("4096 131072 {w}")
                };
                (ok, format!("max >= {w}"), fix)
            }
        };
        let mut c = check(*name, have.replace('\t', " "), want_text, ok, why);
        if !ok {
            c.fixes.push(Fix {
                path,
                value: fix.clone(),
            });
            c.note = Some(format!(
                "to keep it across reboots: echo '{name} = {fix}' >> /etc/sysctl.d/99-freshet.conf"
            ));
        }
        out.push(c);
    }
    out
}

/// The sysfs block directory (`.../queue` parent) of the disk holding `dir`.
fn block_dir_of(root: &Path, dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut probe = Some(dir);
    let meta = loop {
        let p = probe?;
        if let Ok(m) = std::fs::metadata(p) {
            break m;
        }
        probe = p.parent();
    };
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let link = root.join(format!("sys/dev/block/{major}:{minor}"));
    let real = std::fs::canonicalize(&link).unwrap_or(link);
    if real.join("queue").is_dir() {
        return Some(real);
    }
    // A partition: the queue belongs to the whole disk.
    let parent = real.parent()?;
    parent.join("queue").is_dir().then(|| parent.to_path_buf())
}

fn io_scheduler(opts: &HostOptions) -> Check {
    const WHY: &str = "NVMe and virtio disks schedule internally: a kernel scheduler only adds \
                       CPU and latency to each O_DIRECT write (Freshet writes each partition \
                       sequentially and orders its own I/O); a rotating disk still wants \
                       mq-deadline";
    let name = "data disk I/O scheduler";
    let Some(block) = block_dir_of(&opts.root, &opts.config.data_dir) else {
        let mut c = check(
            name,
            "n/a (no block device found for the data directory)".into(),
            "none".into(),
            true,
            WHY,
        );
        c.note = Some("a RAM or network file system, or a device-mapper stack".into());
        return c;
    };
    let sched_path = block.join("queue/scheduler");
    let Ok(choices) = std::fs::read_to_string(&sched_path) else {
        return check(name, "n/a".into(), "none".into(), true, WHY);
    };
    let have = selected(&choices).unwrap_or_else(|| choices.trim().to_string());
    let rotational =
        std::fs::read_to_string(block.join("queue/rotational")).is_ok_and(|r| r.trim() == "1");
    let want = if rotational { "mq-deadline" } else { "none" };
    let available = choices
        .split_whitespace()
        .any(|w| w.trim_matches(|c| c == '[' || c == ']') == want);
    let disk = block
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut c = check(
        format!("{name} ({disk})"),
        have.clone(),
        want.into(),
        have == want || !available,
        WHY,
    );
    if have != want && available {
        c.fixes.push(Fix {
            path: sched_path,
            value: want.into(),
        });
    }
    c
}

/// Perform every fix of `checks`; returns each write with its outcome.
pub fn apply(checks: &[Check]) -> Vec<(Fix, Result<(), String>)> {
    let mut out = Vec::new();
    for c in checks {
        for f in &c.fixes {
            let result = (|| {
                if let Some(parent) = f.path.parent().filter(|p| !p.exists()) {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&f.path, &f.value)
            })()
            .map_err(|e| e.to_string());
            out.push((f.clone(), result));
        }
    }
    out
}

/// The report `check` prints: one line per setting, then the writes `apply` would make.
pub fn report(checks: &[Check]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{:<6} {:<38} {:<40} WANT", "", "SETTING", "HAVE");
    for c in checks {
        let _ = writeln!(
            s,
            "{:<6} {:<38} {:<40} {}",
            if c.ok { "ok" } else { "CHANGE" },
            c.name,
            c.have,
            c.want
        );
        if !c.ok {
            let _ = writeln!(s, "       why: {}", c.why);
        }
        if let Some(n) = &c.note {
            let _ = writeln!(s, "       note: {n}");
        }
    }
    let fixes: Vec<&Fix> = checks.iter().flat_map(|c| &c.fixes).collect();
    if fixes.is_empty() {
        let _ = writeln!(s, "\nnothing to change");
    } else {
        let _ = writeln!(s, "\n`freshet tune apply` would write:");
        for f in fixes {
            let _ = writeln!(s, "  {} <- {:?}", f.path.display(), f.value);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, v: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, v).expect("write");
    }

    /// A fake host: 4 CPUs on ondemand, IRQs everywhere, THP always, small sysctls, the data
    /// disk on mq-deadline; the broker's shards on CPUs 1-3.
    fn fake_host(root: &Path, data_dir: &Path) -> HostOptions {
        put(root, "sys/devices/system/cpu/online", "0-3\n");
        for cpu in 0..4 {
            put(
                root,
                &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
                "ondemand\n",
            );
            put(
                root,
                &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_available_governors"),
                "performance powersave ondemand\n",
            );
        }
        put(root, "proc/irq/24/smp_affinity_list", "0-3\n");
        put(root, "proc/irq/25/smp_affinity_list", "0\n");
        put(root, "proc/irq/26/smp_affinity_list", "2\n");
        put(
            root,
            "sys/kernel/mm/transparent_hugepage/enabled",
            "[always] madvise never\n",
        );
        put(
            root,
            "sys/kernel/mm/transparent_hugepage/defrag",
            "always defer [madvise] never\n",
        );
        put(root, "proc/sys/net/core/somaxconn", "128\n");
        put(
            root,
            "proc/sys/net/ipv4/tcp_rmem",
            "4096\t131072\t6291456\n",
        );
        put(root, "proc/sys/vm/swappiness", "60\n");
        put(root, "proc/sys/net/ipv4/tcp_slow_start_after_idle", "0\n");
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(data_dir).expect("stat").dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        put(
            root,
            "sys/block/vda/queue/scheduler",
            "[mq-deadline] kyber none\n",
        );
        put(root, "sys/block/vda/queue/rotational", "0\n");
        std::fs::create_dir_all(root.join("sys/dev/block")).expect("mkdir");
        std::os::unix::fs::symlink(
            root.join("sys/block/vda"),
            root.join(format!("sys/dev/block/{major}:{minor}")),
        )
        .expect("symlink");
        let config = BrokerConfig {
            data_dir: data_dir.to_path_buf(),
            shards: 3,
            shard_cpus: vec![1, 2, 3],
            ..BrokerConfig::default()
        };
        HostOptions {
            root: root.to_path_buf(),
            config,
            uid: 1000,
            memlock_bytes: Some(64 << 10),
        }
    }

    #[test]
    fn check_reports_then_apply_fixes_a_fake_host() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("root");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).expect("mkdir");
        let opts = fake_host(&root, &data);
        let before = checks(&opts);
        let by_name = |cs: &[Check], n: &str| -> Check {
            cs.iter()
                .find(|c| c.name.starts_with(n))
                .cloned()
                .unwrap_or_else(|| panic!("{n}"))
        };
        assert!(!by_name(&before, "cpu frequency governor").ok);
        let irq = by_name(&before, "irq affinity");
        assert!(!irq.ok);
        assert_eq!(
            irq.fixes.len(),
            2,
            "IRQ 24 (0-3) and 26 (2) touch shard CPUs; 25 does not"
        );
        assert!(irq.fixes.iter().all(|f| f.value == "0"));
        assert!(!by_name(&before, "locked memory").ok);
        assert!(!by_name(&before, "transparent hugepages").ok);
        assert!(by_name(&before, "transparent hugepage defrag").ok);
        assert!(!by_name(&before, "net.core.somaxconn").ok);
        let rmem = by_name(&before, "net.ipv4.tcp_rmem");
        assert_eq!(rmem.fixes[0].value, "4096 131072 16777216");
        assert!(by_name(&before, "net.ipv4.tcp_slow_start_after_idle").ok);
        assert!(!by_name(&before, "vm.swappiness").ok);
        let sched = by_name(&before, "data disk I/O scheduler");
        assert_eq!((sched.have.as_str(), sched.ok), ("mq-deadline", false));
        let text = report(&before);
        assert!(text.contains("would write"), "{text}");

        // `check` changed nothing; `apply` writes every fix.
        assert_eq!(
            std::fs::read_to_string(root.join("proc/sys/vm/swappiness")).expect("read"),
            "60\n"
        );
        let results = apply(&before);
        assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
        // The fake kernel files now hold plain values; make the choice files look like the
        // kernel's again before checking.
        put(
            &root,
            "sys/kernel/mm/transparent_hugepage/enabled",
            "always [madvise] never\n",
        );
        put(
            &root,
            "sys/block/vda/queue/scheduler",
            "mq-deadline kyber [none]\n",
        );
        let after = checks(&HostOptions {
            memlock_bytes: Some(1 << 30),
            ..opts
        });
        let still: Vec<&str> = after
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect();
        assert!(still.is_empty(), "still to change after apply: {still:?}");
        assert!(root.join("etc/security/limits.d/99-freshet.conf").exists());
    }

    #[test]
    fn shards_on_every_cpu_leave_irqs_alone() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("root");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).expect("mkdir");
        let mut opts = fake_host(&root, &data);
        opts.config.shard_cpus.clear();
        let irq = checks(&opts)
            .into_iter()
            .find(|c| c.name == "irq affinity")
            .expect("irq check");
        assert!(irq.ok && irq.fixes.is_empty());
    }
}
