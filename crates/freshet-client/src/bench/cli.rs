//! The `freshet bench` subcommand: flags, and what it prints and writes.
//!
//! `freshet bench` alone runs the default [`Workload`] (under a minute) against localhost:9092
//! and prints the percentile table; flags or `--workload FILE` change it. Results go to `--out`
//! (default `./freshet-bench-out`): summary.json, latency.hlog, latency.svg, throughput.svg.
//! `freshet bench sweep` runs the capacity sweep ([`super::sweep`]) and writes sweep.json and
//! sweep.svg. The exit status is 2 when a run's counts do not match or it saw errors.

use std::path::PathBuf;
use std::process::ExitCode;

use super::report;
use super::run::run;
use super::sweep::{self, SloMetric, SweepOptions};
use super::workload::{parse_seconds, KeyDistribution, Workload};

/// `freshet bench [FLAGS]` or `freshet bench sweep [FLAGS]`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// `sweep`: capacity planning.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// The workload.
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Directory for summary.json, latency.hlog and the SVG charts.
    #[arg(long, default_value = "freshet-bench-out")]
    pub out: PathBuf,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// Subcommands of `freshet bench`.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Raise the rate until a latency objective fails; report the highest sustainable rate per
    /// partition count (and shard count).
    Sweep(SweepArgs),
}

/// Flags of `freshet bench sweep`.
#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// The workload of each step (its --rate is the sweep's business).
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Partition counts to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub partition_counts: Vec<i32>,
    /// Shard counts to try, comma-separated: the sweep starts `freshet start --shards N` on
    /// 127.0.0.1 for each. Without it the broker at --bootstrap is measured as it is.
    #[arg(long, value_delimiter = ',')]
    pub shard_counts: Vec<usize>,
    /// Data directory root of the brokers the sweep starts.
    #[arg(long, default_value = "freshet-bench-sweep-data")]
    pub data_dir: PathBuf,
    /// First target rate, msg/s.
    #[arg(long, default_value_t = 5000.0)]
    pub start_rate: f64,
    /// Rate multiplier per step.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// Most steps per configuration.
    #[arg(long, default_value_t = 12)]
    pub steps: usize,
    /// The objective: p99 latency at most this many ms.
    #[arg(long, default_value_t = 10.0)]
    pub slo_p99_ms: f64,
    /// The latency the objective applies to.
    #[arg(long, value_enum, default_value_t = SloMetric::Publish)]
    pub slo_metric: SloMetric,
    /// Directory for sweep.json and sweep.svg.
    #[arg(long, default_value = "freshet-bench-out")]
    pub out: PathBuf,
}

/// Workload flags; each overrides the file (`--workload`), which overrides the defaults.
#[derive(clap::Args, Debug, Default)]
pub struct WorkloadArgs {
    /// Workload file (TOML, or JSON if it ends in .json), keys as the flags with underscores.
    #[arg(long)]
    pub workload: Option<PathBuf>,
    /// Broker to bootstrap from (also `-b`/`--brokers`, as in the admin commands; before or
    /// after `bench`) [default: localhost:9092].
    // The id is the admin commands' (`brokers`) so that `freshet -b HOST bench` reaches it.
    #[arg(
        id = "brokers",
        short = 'b',
        long = "bootstrap",
        visible_alias = "brokers",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: Option<String>,
    /// Use this existing (or new) topic instead of fresh ones; it is not deleted.
    #[arg(long)]
    pub topic: Option<String>,
    /// Topics [default: 1].
    #[arg(long)]
    pub topics: Option<usize>,
    /// Partitions per topic [default: 4].
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Replication factor of created topics [default: -1, the broker's].
    #[arg(long, allow_hyphen_values = true)]
    pub replication_factor: Option<i16>,
    /// Producers per topic (each a thread with its own connections) [default: 1; at --rate 0
    /// or rates of 50 MB/s and more, one per CPU up to the partitions and 4].
    #[arg(long)]
    pub producers: Option<usize>,
    /// Consumers per topic [default: 1].
    #[arg(long)]
    pub consumers: Option<usize>,
    /// Message value size in bytes [default: 1024].
    #[arg(long)]
    pub message_size: Option<usize>,
    /// Keys: none (sticky partitioning), round-robin or random (murmur2) [default: none].
    #[arg(long, value_enum)]
    pub keys: Option<KeyDistribution>,
    /// Total target rate in msg/s; 0 = as fast as possible [default: 10000].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured duration, e.g. 30s, 2m [default: 20s].
    #[arg(long)]
    pub duration: Option<String>,
    /// Warm-up before measuring, e.g. 5s [default: 5s].
    #[arg(long)]
    pub warmup: Option<String>,
    /// Send exactly this many messages in total instead of running for a duration.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Produce acks: all (-1), 1 or 0 [default: all].
    #[arg(long, allow_hyphen_values = true)]
    pub acks: Option<String>,
    /// Compression: none, gzip, snappy, lz4, zstd [default: none].
    #[arg(long)]
    pub compression: Option<String>,
    /// Linger per partition batch, e.g. 1ms, 5ms [default: 1ms].
    #[arg(long)]
    pub linger: Option<String>,
    /// Batch size in bytes [default: 131072].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Unanswered Produce requests per connection [default: 5].
    #[arg(long)]
    pub inflight: Option<usize>,
    /// Produce this many MB first, then consume it all (consume throughput of stored data).
    #[arg(long)]
    pub backlog_mb: Option<f64>,
    /// Fetch max wait in ms [default: 100].
    #[arg(long)]
    pub fetch_max_wait_ms: Option<i32>,
    /// Fetch bytes per partition per response [default: 8 MiB].
    #[arg(long)]
    pub fetch_partition_max_bytes: Option<i32>,
    /// Socket buffer size in bytes [default: the system's].
    #[arg(long)]
    pub socket_buffer: Option<usize>,
    /// Longest wait for consumers to catch up after producing ends, e.g. 60s [default: 60s].
    #[arg(long)]
    pub drain_timeout: Option<String>,
    /// Keep the created topics.
    #[arg(long)]
    pub keep_topics: bool,
    /// The broker's metrics endpoint (Freshet's admin listener), read before and after the run
    /// for broker CPU per GB and the produce stages; `off` to skip
    /// [default: http://127.0.0.1:9644/metrics, what `freshet start` opens].
    #[arg(long, value_name = "URL")]
    pub broker_metrics: Option<String>,
}

impl WorkloadArgs {
    /// The workload: defaults, then the file, then the flags.
    pub fn to_workload(&self) -> Result<Workload, String> {
        let mut w = match &self.workload {
            Some(path) => Workload::from_file(path)?,
            None => Workload::default(),
        };
        macro_rules! set {
            ($field:ident, $flag:ident) => {
                if let Some(v) = self.$flag.clone() {
                    w.$field = v;
                }
            };
        }
        set!(bootstrap, bootstrap);
        set!(topics, topics);
        set!(partitions, partitions);
        set!(replication_factor, replication_factor);
        set!(producers, producers);
        set!(consumers, consumers);
        set!(message_bytes, message_size);
        set!(key_distribution, keys);
        set!(rate, rate);
        set!(messages, messages);
        set!(compression, compression);
        set!(batch_bytes, batch_size);
        set!(inflight, inflight);
        set!(backlog_mb, backlog_mb);
        set!(fetch_max_wait_ms, fetch_max_wait_ms);
        set!(fetch_partition_max_bytes, fetch_partition_max_bytes);
        set!(socket_buffer_bytes, socket_buffer);
        set!(broker_metrics, broker_metrics);
        if self.topic.is_some() {
            w.topic = self.topic.clone();
        }
        if let Some(d) = &self.duration {
            w.duration_s = parse_seconds(d)?;
        }
        if let Some(d) = &self.warmup {
            w.warmup_s = parse_seconds(d)?;
        }
        if let Some(d) = &self.drain_timeout {
            w.drain_timeout_s = parse_seconds(d)?;
        }
        if let Some(d) = &self.linger {
            w.linger_ms = parse_seconds(d)? * 1000.0;
        }
        if let Some(a) = &self.acks {
            w.acks = match a.as_str() {
                "all" | "-1" => -1,
                "1" => 1,
                "0" => 0,
                other => return Err(format!("--acks {other}: use all, 1 or 0")),
            };
        }
        if self.keep_topics {
            w.delete_topics = false;
        }
        if self.producers.is_none() && self.workload.is_none() {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            w.producers = auto_producers(&w, cpus);
        }
        if (self.messages.is_some() || self.backlog_mb.is_some()) && self.warmup.is_none() {
            // A counted run measures every message.
            w.warmup_s = 0.0;
        }
        w.validate()?;
        Ok(w)
    }
}

/// Offered load a single producer thread is not trusted to offer (issue 16: one producer
/// reached 71k msg/s of 1 KiB on a 2-core machine), bytes/s.
pub const ONE_PRODUCER_BYTES_PER_S_MAX: f64 = 50e6;
/// Most producers per topic chosen without `--producers`.
pub const AUTO_PRODUCERS_MAX: usize = 4;

/// Producers per topic when `--producers` is not given: 1, or at max rate (`--rate 0`) and
/// high rates one per CPU, at most one per partition and [`AUTO_PRODUCERS_MAX`], so that the
/// client is not what limits the offered load.
pub fn auto_producers(w: &Workload, cpus: usize) -> usize {
    let offered = w.rate * w.message_bytes as f64;
    if w.rate > 0.0 && offered < ONE_PRODUCER_BYTES_PER_S_MAX {
        return 1;
    }
    let partitions = usize::try_from(w.partitions).unwrap_or(1).max(1);
    cpus.min(partitions).clamp(1, AUTO_PRODUCERS_MAX)
}

/// Runs `freshet bench`.
pub fn main(args: BenchArgs) -> ExitCode {
    match args.command {
        Some(BenchCommand::Sweep(sweep_args)) => run_sweep(sweep_args),
        None => run_once(&args),
    }
}

fn run_once(args: &BenchArgs) -> ExitCode {
    let workload = match args.workload.to_workload() {
        Ok(w) => w,
        Err(e) => return fail(&e),
    };
    let result = match run(&workload, !args.quiet) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    print!("{}", report::table(&result.summary));
    match report::write_outputs(&args.out, &result) {
        Ok(files) => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            println!("wrote {}", names.join(", "));
        }
        Err(e) => return fail(&e),
    }
    if result.summary.counts_match && result.summary.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn run_sweep(args: SweepArgs) -> ExitCode {
    let base = match args.workload.to_workload() {
        Ok(w) => w,
        Err(e) => return fail(&e),
    };
    let options = SweepOptions {
        base,
        partition_counts: args.partition_counts,
        shard_counts: args.shard_counts,
        data_dir: args.data_dir,
        start_rate: args.start_rate,
        factor: args.factor,
        steps_max: args.steps,
        slo_p99_ms: args.slo_p99_ms,
        metric: args.slo_metric,
    };
    let report = match sweep::sweep(&options) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    print!("{}", sweep::table(&report));
    let write = || -> Result<(), String> {
        std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
        let json = serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(args.out.join("sweep.json"), json).map_err(|e| e.to_string())?;
        std::fs::write(args.out.join("sweep.svg"), sweep::chart(&report))
            .map_err(|e| e.to_string())?;
        println!(
            "wrote {}, {}",
            args.out.join("sweep.json").display(),
            args.out.join("sweep.svg").display()
        );
        Ok(())
    };
    match write() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("freshet bench: {message}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_or_unlimited_rates_get_a_producer_per_cpu_within_bounds() {
        let mut w = Workload::default(); // 10,000 msg/s of 1 KiB: 10 MB/s
        assert_eq!(auto_producers(&w, 8), 1);
        w.rate = 0.0;
        assert_eq!(auto_producers(&w, 2), 2);
        assert_eq!(auto_producers(&w, 16), 4); // 4 partitions, and AUTO_PRODUCERS_MAX
        w.partitions = 1;
        assert_eq!(auto_producers(&w, 16), 1);
        w.partitions = 100;
        w.rate = 100_000.0; // 100 MB/s
        assert_eq!(auto_producers(&w, 3), 3);
        assert_eq!(auto_producers(&w, 64), AUTO_PRODUCERS_MAX);
        assert_eq!(auto_producers(&w, 0), 1);
    }

    #[test]
    fn an_explicit_producer_count_wins() {
        let args = WorkloadArgs {
            rate: Some(0.0),
            producers: Some(1),
            ..WorkloadArgs::default()
        };
        assert_eq!(args.to_workload().unwrap().producers, 1);
        let auto = WorkloadArgs {
            rate: Some(0.0),
            ..WorkloadArgs::default()
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(auto.to_workload().unwrap().producers, cpus.clamp(1, 4));
    }
}
