//! Host preparation (`freshet tune ...`): what an operator runs before starting Freshet on a
//! Linux host, and the disk profile the broker reads at start.
//!
//! - [`host`]: `freshet tune check` / `freshet tune apply`: CPU frequency governor, IRQ
//!   affinity away from the shard cores, locked-memory limit, transparent huge pages, network
//!   and vm sysctls, the data disk's I/O scheduler. `check` prints what it would change;
//!   `apply` changes it (root needed for most) and reports each write. Every setting, its
//!   wanted value and the reason are in the table of [`host::checks`] and in
//!   `tuning/README.md`.
//! - [`disk`]: `freshet tune disk --data-dir D`: measures the data directory's O_DIRECT write
//!   bandwidth per I/O size and queue depth, read bandwidth and fdatasync latency (like
//!   Redpanda's `iotune`), and writes `D/disk-profile.toml`. The broker reads that file at
//!   start ([`disk::install_profile`]) and sizes its writes, flush rounds and preallocation
//!   steps from it ([`crate::storage::io_sizes`]).
//!
//! Nothing here runs on a shard: these are one-shot commands (the disk probe runs its own
//! glommio executor) and a start-up step.

pub mod disk;
pub mod host;

/// Parse a CPU list as the kernel writes it (`0-3,8,10-11`).
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.trim().is_empty()) {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let lo: usize = lo.parse().map_err(|_| format!("bad CPU list {s:?}"))?;
        let hi: usize = hi.parse().map_err(|_| format!("bad CPU list {s:?}"))?;
        if hi < lo || hi > 65_535 {
            return Err(format!("bad CPU range {part:?}"));
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Format CPUs as a kernel CPU list (`0-3,8`).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_round_trip() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Ok(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(parse_cpu_list(""), Ok(vec![]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
    }
}

/// `freshet tune ...` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TuneCommand {
    /// Print the host settings Freshet depends on and what `apply` would change. Changes nothing.
    Check(HostArgs),
    /// Change the settings `check` reports (most need root). Exit status 1 if a write failed.
    Apply(HostArgs),
    /// Measure the data disk (O_DIRECT write bandwidth per size and depth, fdatasync latency)
    /// and write `<data dir>/disk-profile.toml`, which the broker reads at start.
    Disk(DiskArgs),
}

/// Options of `check` and `apply`.
#[derive(clap::Args, Debug)]
pub struct HostArgs {
    /// The broker's TOML file (shards, shard_cpus, io_memory_bytes, ring_depth, data_dir).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Data directory [default: from the config, else ./freshet-data].
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// CPUs the shards will run on, as a kernel CPU list (e.g. 1-7) [default: shard_cpus].
    #[arg(long)]
    shard_cpus: Option<String>,
    /// Root of the file system to inspect (for tests).
    #[arg(long, default_value = "/", hide = true)]
    root: std::path::PathBuf,
}

/// Options of `disk`.
#[derive(clap::Args, Debug)]
pub struct DiskArgs {
    /// Directory to measure: the broker's data directory.
    #[arg(long)]
    data_dir: std::path::PathBuf,
    /// Short run (about a second) instead of the full one (tens of seconds).
    #[arg(long)]
    quick: bool,
    /// Where to write the profile [default: <data dir>/disk-profile.toml].
    #[arg(long)]
    output: Option<std::path::PathBuf>,
}

/// Run a `freshet tune` subcommand; returns the process exit status.
pub fn run(cmd: TuneCommand) -> std::process::ExitCode {
    use std::process::ExitCode;
    match cmd {
        TuneCommand::Check(args) => match host_options(&args) {
            Ok(opts) => {
                print!("{}", host::report(&host::checks(&opts)));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("freshet tune check: {e}");
                ExitCode::FAILURE
            }
        },
        TuneCommand::Apply(args) => apply(&args),
        TuneCommand::Disk(args) => disk_probe(args),
    }
}

/// `freshet tune apply`: writes the fixes `check` reports, then checks again.
fn apply(args: &HostArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let opts = match host_options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("freshet tune apply: {e}");
            return ExitCode::FAILURE;
        }
    };
    let checks = host::checks(&opts);
    let mut failed = 0;
    let results = host::apply(&checks);
    for (fix, result) in &results {
        match result {
            Ok(()) => println!("wrote   {} <- {:?}", fix.path.display(), fix.value),
            Err(e) => {
                failed += 1;
                println!("FAILED  {} <- {:?}: {e}", fix.path.display(), fix.value);
            }
        }
    }
    if results.is_empty() {
        println!("nothing to change");
    }
    println!();
    print!("{}", host::report(&host::checks(&opts)));
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `freshet tune disk`: measures the data disk and saves its profile.
fn disk_probe(args: DiskArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let opts = disk::ProbeOptions {
        data_dir: args.data_dir.clone(),
        quick: args.quick,
    };
    match disk::probe(&opts) {
        Ok(profile) => {
            let path = args
                .output
                .unwrap_or_else(|| args.data_dir.join(disk::PROFILE_FILE_NAME));
            if let Err(e) = profile.save(&path) {
                eprintln!("freshet tune disk: {e}");
                return ExitCode::FAILURE;
            }
            let sizes = profile.io_sizes();
            println!("{}", profile.summary());
            println!(
                "the broker will use: write_bytes_max={} flush_bytes_max={} preallocate_step_bytes={}",
                sizes.write_bytes_max, sizes.flush_bytes_max, sizes.preallocate_step_bytes
            );
            println!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("freshet tune disk: {e}");
            ExitCode::FAILURE
        }
    }
}

fn host_options(args: &HostArgs) -> Result<host::HostOptions, String> {
    let mut config = match &args.config {
        Some(p) => crate::config::BrokerConfig::from_toml_file(p).map_err(|e| e.to_string())?,
        None => crate::config::BrokerConfig::default(),
    };
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(c) = &args.shard_cpus {
        config.shard_cpus = parse_cpu_list(c)?;
    }
    let uid = crate::os::effective_uid();
    let memlock_bytes = crate::os::memlock_limit_bytes();
    Ok(host::HostOptions {
        root: args.root.clone(),
        config,
        uid,
        memlock_bytes,
    })
}
