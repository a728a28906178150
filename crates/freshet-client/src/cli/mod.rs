//! The admin CLI, in the spirit of `rpk` and `kcat`: `freshet topic`, `freshet group`,
//! `freshet produce`, `freshet consume` and `freshet cluster`, talking the Kafka protocol to any
//! broker through [the client](crate).
//!
//! - [`topic`]: create, list, describe (partitions, leaders, offsets, configs), delete,
//!   alter-config.
//! - [`group`]: list, describe (members, committed offsets, lag), delete, seek (reset the
//!   committed offsets of an inactive group).
//! - [`produce`]: records from stdin lines (keys, headers, partitioning, compression, acks).
//! - [`consume`]: records to stdout (kcat-like `%` format or JSON lines).
//! - [`cluster`]: cluster id, controller, brokers.
//! - [`quota`]: client quotas (set, remove, list).
//! - [`acl`]: add, list, remove ACL bindings (CreateAcls, DescribeAcls, DeleteAcls).
//!
//! Common to all: `-b/--brokers/--bootstrap host:port[,host:port]` (env `FRESHET_BROKERS`,
//! default localhost:9092; before or after the subcommand, see `main.rs`) to bootstrap from;
//! Metadata says which broker leads each partition, and produce, fetch and ListOffsets go to
//! that leader ([`Session`] keeps one connection per broker). Tables by default, JSON with
//! `--format json`.
//!
//! Exit codes scripts can rely on ([`CliError::exit_code`]): 0 success; 1 the broker answered
//! with a Kafka error (its name, e.g. TOPIC_ALREADY_EXISTS, is printed on stderr); 2 usage
//! error (bad flags, from clap or from our own checks); 3 connection or I/O failure (no broker
//! reachable, timeout, malformed answer).

pub mod acl;
pub mod cluster;
pub mod consume;
pub mod group;
pub mod produce;
pub mod quota;
pub mod topic;

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use crate::admin::{self, ClusterMetadata};
use crate::{ClientError, ConnectOptions, Connection};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the broker answered with a Kafka error.
pub const EXIT_KAFKA: u8 = 1;
/// Exit code: usage error (clap uses 2 too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: connection or I/O failure.
pub const EXIT_IO: u8 = 3;

/// Partition errors that mean "ask Metadata who leads now": LEADER_NOT_AVAILABLE,
/// NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH.
pub const LEADER_MOVED: [i16; 4] = [5, 6, 74, 75];
/// Consecutive metadata refreshes before giving up on a partition without a stable leader.
pub const LEADER_REFRESHES_MAX: u32 = 10;
/// Pause before asking Metadata again.
pub const LEADER_REFRESH_BACKOFF: Duration = Duration::from_millis(300);

/// The exit codes, for `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes (admin commands):
  0  success
  1  the broker answered with a Kafka error (its name, e.g. TOPIC_ALREADY_EXISTS, on stderr)
  2  usage error (bad flags or values)
  3  connection or I/O failure (no broker reachable, timeout, malformed answer)";

/// The client-side subcommands of `freshet`: the load generator and the admin commands. The
/// binary (`src/main.rs` of the broker package) flattens them into its own command tree, next
/// to the broker's `start` and `tune`; [`Command::run`] runs one.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Load-test a Kafka-compatible broker: latency percentiles, throughput, plots.
    Bench(Box<crate::bench::cli::BenchArgs>),
    /// Topics: create, list, describe, delete, alter-config, elect-leaders, reassign.
    #[command(after_help = EXIT_CODES_HELP)]
    Topic(topic::TopicArgs),
    /// Consumer groups: list, describe (lag), delete, seek (reset offsets).
    #[command(after_help = EXIT_CODES_HELP)]
    Group(group::GroupArgs),
    /// Produce lines of stdin as records (keys, headers, compression, acks).
    #[command(after_help = EXIT_CODES_HELP)]
    Produce(produce::ProduceArgs),
    /// Consume records to stdout (kcat-like format or JSON lines).
    #[command(after_help = EXIT_CODES_HELP)]
    Consume(consume::ConsumeArgs),
    /// The cluster: id, controller, brokers.
    #[command(after_help = EXIT_CODES_HELP)]
    Cluster(cluster::ClusterArgs),
    /// Client quotas: set, remove, list (per user / client id, with defaults).
    #[command(after_help = EXIT_CODES_HELP)]
    Quota(quota::QuotaArgs),
    /// ACLs: add, list, remove (needs a broker with the authorizer on).
    #[command(after_help = EXIT_CODES_HELP)]
    Acl(acl::AclArgs),
}

impl Command {
    /// Runs the command to its end; the process exit code (see [`EXIT_CODES_HELP`]; `bench`
    /// has its own, see [`crate::bench::cli`]).
    pub fn run(self) -> ExitCode {
        match self {
            Command::Bench(args) => crate::bench::cli::main(*args),
            Command::Topic(args) => exit(topic::run(args)),
            Command::Group(args) => exit(group::run(args)),
            Command::Produce(args) => exit(produce::run(args)),
            Command::Consume(args) => exit(consume::run(args)),
            Command::Cluster(args) => exit(cluster::run(args)),
            Command::Quota(args) => exit(quota::run(args)),
            Command::Acl(args) => exit(acl::run(args)),
        }
    }
}

/// Where to connect.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// Broker(s) to bootstrap from: host:port[,host:port...] (also `--bootstrap`, as in
    /// `freshet bench`; before or after the subcommand).
    #[arg(
        short = 'b',
        long,
        visible_alias = "bootstrap",
        env = "FRESHET_BROKERS",
        default_value = "localhost:9092",
        global = true
    )]
    pub brokers: String,
    /// Limit on connecting and on each request, in milliseconds.
    #[arg(long, default_value_t = 30_000, global = true)]
    pub request_timeout_ms: u64,
}

/// How admin commands print their results.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Aligned text tables.
    #[default]
    Table,
    /// JSON (one document on stdout).
    Json,
}

/// Output flags of admin commands.
#[derive(clap::Args, Debug, Clone)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
}

/// What went wrong, sorted by exit code.
#[derive(Debug)]
pub enum CliError {
    /// The broker answered with a Kafka error code.
    Kafka {
        /// The Kafka error code.
        code: i16,
        /// What was asked, and the broker's message if any.
        context: String,
    },
    /// Bad flags or values.
    Usage(String),
    /// Connection, timeout, or malformed answer.
    Io(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Kafka { .. } => EXIT_KAFKA,
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Io(_) => EXIT_IO,
        }
    }

    /// A Kafka error `code` about `context`.
    pub fn kafka(code: i16, context: impl Into<String>) -> CliError {
        CliError::Kafka {
            code,
            context: context.into(),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Kafka { code, context } => {
                write!(f, "{}: {context} (Kafka error {code})", error_name(*code))
            }
            CliError::Usage(m) => write!(f, "usage: {m}"),
            CliError::Io(m) => write!(f, "connection: {m}"),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> CliError {
        match e {
            ClientError::Kafka { context, code } => CliError::Kafka { code, context },
            ClientError::Unsupported { .. } => CliError::Kafka {
                code: 35,
                context: e.to_string(),
            },
            ClientError::Io(_) | ClientError::Protocol(_) => CliError::Io(e.to_string()),
        }
    }
}

/// A `Result` with [`CliError`].
pub type Result<T> = std::result::Result<T, CliError>;

/// Runs a command; prints its error on stderr and turns it into the exit code.
pub fn exit(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("freshet: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Kafka's name for an error code, e.g. 36 -> TOPIC_ALREADY_EXISTS.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => upper_snake(&e.to_string()),
    }
}

/// `UnknownTopicOrPartition` -> `UNKNOWN_TOPIC_OR_PARTITION`.
fn upper_snake(camel: &str) -> String {
    let chars: Vec<char> = camel.chars().collect();
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Connections to the brokers of one cluster: the bootstrap connection, and one per broker
/// address reached later (partition leaders, group coordinators).
pub struct Session {
    options: ConnectOptions,
    bootstrap_addr: String,
    conns: HashMap<String, Connection>,
}

impl Session {
    /// Connects to the first reachable broker of `args.brokers`.
    pub fn connect(args: &ConnArgs) -> Result<Session> {
        let options = ConnectOptions {
            client_id: "freshet-cli".to_string(),
            io_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
            frame_bytes_max: 256 << 20,
            socket_buffer_bytes: 0,
        };
        let mut failures = Vec::new();
        for addr in args
            .brokers
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Connection::connect(addr, &options) {
                Ok(conn) => {
                    let mut conns = HashMap::new();
                    conns.insert(addr.to_string(), conn);
                    return Ok(Session {
                        options,
                        bootstrap_addr: addr.to_string(),
                        conns,
                    });
                }
                Err(ClientError::Kafka { context, code }) => {
                    return Err(CliError::Kafka { code, context })
                }
                Err(e) => failures.push(format!("{addr}: {e}")),
            }
        }
        if failures.is_empty() {
            return Err(CliError::Usage("--brokers names no broker".into()));
        }
        Err(CliError::Io(format!(
            "no broker reachable ({})",
            failures.join("; ")
        )))
    }

    /// The bootstrap connection.
    pub fn bootstrap(&mut self) -> &mut Connection {
        let addr = self.bootstrap_addr.clone();
        self.conns
            .get_mut(&addr)
            .expect("the bootstrap connection is kept")
    }

    /// A connection to `addr` (host:port), opened on first use.
    pub fn to_addr(&mut self, addr: &str) -> Result<&mut Connection> {
        if !self.conns.contains_key(addr) {
            let conn = Connection::connect(addr, &self.options)
                .map_err(|e| CliError::Io(format!("{addr}: {e}")))?;
            self.conns.insert(addr.to_string(), conn);
        }
        Ok(self.conns.get_mut(addr).expect("just inserted"))
    }

    /// A connection to broker `node_id` of `metadata`.
    pub fn to_node(&mut self, metadata: &ClusterMetadata, node_id: i32) -> Result<&mut Connection> {
        let addr = metadata.broker(node_id).map(|b| b.addr()).ok_or_else(|| {
            CliError::kafka(5, format!("broker {node_id} is not in the metadata"))
        })?;
        self.to_addr(&addr)
    }

    /// Metadata for `topics`; a topic's error (e.g. UNKNOWN_TOPIC_OR_PARTITION) fails the call.
    pub fn topics_metadata(&mut self, topics: &[&str]) -> Result<ClusterMetadata> {
        let metadata = admin::metadata(self.bootstrap(), Some(topics))?;
        for name in topics {
            match metadata.topic(name) {
                None => return Err(CliError::kafka(3, format!("topic {name}"))),
                Some(t) if t.error_code != 0 => {
                    return Err(CliError::kafka(t.error_code, format!("topic {name}")))
                }
                Some(_) => {}
            }
        }
        Ok(metadata)
    }

    /// The offsets for `timestamp` ([`admin::LATEST`], [`admin::EARLIEST`] or ms) of
    /// `partitions` of `topic`, each asked of its leader.
    pub fn offsets(
        &mut self,
        metadata: &ClusterMetadata,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, i64>> {
        let info = metadata
            .topic(topic)
            .ok_or_else(|| CliError::kafka(3, format!("topic {topic}")))?;
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in partitions {
            let leader = info
                .partitions
                .iter()
                .find(|i| i.partition == p)
                .map(|i| i.leader)
                .ok_or_else(|| CliError::kafka(3, format!("partition {topic}-{p}")))?;
            if leader < 0 {
                return Err(CliError::kafka(
                    5,
                    format!("partition {topic}-{p} has no leader"),
                ));
            }
            by_leader.entry(leader).or_default().push(p);
        }
        let mut out = BTreeMap::new();
        for (leader, parts) in by_leader {
            let conn = self.to_node(metadata, leader)?;
            let offsets = admin::list_offsets(conn, topic, &parts, timestamp)?;
            out.extend(parts.into_iter().zip(offsets));
        }
        Ok(out)
    }
}

/// Writes `text` to stdout. A closed stdout (e.g. `| head`) is not an error worth a panic:
/// the text is dropped.
pub fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Prints an empty line between tables.
pub fn blank_line() {
    print_out("\n");
}

/// Prints an aligned table: a header row, then `rows` (columns separated by two spaces).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print_out(&table(header, rows));
}

/// An aligned table as text.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &serde_json::Value) {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    print_out(&text);
}

/// Parses `key=value` (clap value parser).
pub fn parse_key_value(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// `[0, 1, 2]` as `0,1,2`.
pub fn join_ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(69), "GROUP_ID_NOT_FOUND");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(31000), "UNKNOWN_ERROR_CODE_31000");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "N"],
            &[
                vec!["a".into(), "10".into()],
                vec!["long-name".into(), "2".into()],
            ],
        );
        assert_eq!(t, "NAME       N\na          10\nlong-name  2\n");
    }

    #[test]
    fn key_values_parse() {
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }
}
