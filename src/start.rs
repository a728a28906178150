//! `freshet start`: its flags, and the process around one broker run: logging to stderr
//! through `tracing` (in colour only when stderr is a terminal), the settings (flags override
//! the optional TOML file, `--config`, which overrides the embedded defaults of `config.rs`),
//! and a few retries of a start that failed for a transient reason. The `freshet` binary
//! (`src/main.rs`) parses the command line and calls [`run`].
//!
//! `freshet start` alone runs a single-node broker on localhost:9092 with its data in
//! `./freshet-data`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::BrokerConfig;

/// The flags of `freshet start`.
#[derive(clap::Args)]
pub struct StartArgs {
    /// TOML file with broker settings: the keys of README's Configuration table (the flags
    /// below with underscores, e.g. `data_dir`); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on, host:port [default: localhost:9092].
    #[arg(long)]
    pub listen: Option<String>,
    /// Address advertised to clients, host:port [default: the listen address].
    #[arg(long)]
    pub advertise: Option<String>,
    /// Data directory [default: ./freshet-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (pinned threads) [default: one per CPU].
    #[arg(long)]
    pub shards: Option<usize>,
    /// Kafka node.id of this broker [default: 0].
    #[arg(long)]
    pub node_id: Option<i32>,
    /// Controller listener, host:port (Kafka's controller listener) [default: this node's
    /// address in --controller-quorum-voters].
    #[arg(long)]
    pub controller_listen: Option<String>,
    /// The metadata quorum's voters, as Kafka's controller.quorum.voters:
    /// "1@127.0.0.1:19193,2@127.0.0.1:19194,3@127.0.0.1:19195" [default: none: a single
    /// node that is its own quorum].
    #[arg(long)]
    pub controller_quorum_voters: Option<String>,
    /// Kafka's broker.rack: the rack or zone of this broker [default: none].
    #[arg(long)]
    pub broker_rack: Option<String>,
    /// Create topics on first use (Kafka's auto.create.topics.enable) [default: true].
    #[arg(long)]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics (Kafka's num.partitions) [default: 1].
    #[arg(long)]
    pub default_partitions: Option<i32>,
    /// Admin HTTP listener (/metrics, /health, /ready), host:port, or "off"
    /// [default: 127.0.0.1:9644].
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// Kafka's listeners, comma-separated NAME://host:port (PLAINTEXT, SSL, SASL_PLAINTEXT,
    /// SASL_SSL) [default: one PLAINTEXT listener on --listen].
    #[arg(long, value_delimiter = ',')]
    pub listeners: Option<Vec<String>>,
    /// Kafka's advertised.listeners, comma-separated NAME://host:port [default: each
    /// listener's own address].
    #[arg(long, value_delimiter = ',')]
    pub advertised_listeners: Option<Vec<String>>,
    /// Kafka's sasl.enabled.mechanisms, comma-separated [default: PLAIN,SCRAM-SHA-256,SCRAM-SHA-512].
    #[arg(long, value_delimiter = ',')]
    pub sasl_enabled_mechanisms: Option<Vec<String>>,
    /// PEM certificate chain of the TLS listeners.
    #[arg(long)]
    pub ssl_certificate_file: Option<PathBuf>,
    /// PEM private key of --ssl-certificate-file.
    #[arg(long)]
    pub ssl_key_file: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to.
    #[arg(long)]
    pub ssl_ca_file: Option<PathBuf>,
    /// Kafka's ssl.client.auth: none, requested or required [default: none].
    #[arg(long, value_parser = ["none", "requested", "required"])]
    pub ssl_client_auth: Option<String>,
    /// Log filter, as RUST_LOG (e.g. info, freshet=debug) [default: info].
    #[arg(long)]
    pub log: Option<String>,
    /// Log line format: "text" (human-readable) or "json" (one JSON object per line, for log
    /// collectors) [default: text].
    #[arg(long, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Check every request against the ACLs: "on" or "off" (Kafka's authorizer.class.name)
    /// [default: off].
    #[arg(long, value_parser = ["on", "off"])]
    pub authorizer: Option<String>,
    /// Principals allowed everything, ";"-separated, as Kafka's super.users
    /// ("User:admin;User:ops") [default: none].
    #[arg(long)]
    pub super_users: Option<String>,
    /// With the authorizer on, allow a resource that has no ACL at all (Kafka's
    /// allow.everyone.if.no.acl.found) [default: false].
    #[arg(long)]
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// HTTP listener for produce and push streams, host:port or a port alone (loopback), or
    /// "off" [default: off].
    #[arg(long)]
    pub http_listen: Option<String>,
    /// SASL session lifetime in ms, after which a client must re-authenticate (Kafka's
    /// connections.max.reauth.ms, KIP-368); 0: never [default: 0].
    #[arg(long)]
    pub connections_max_reauth_ms: Option<u64>,
}

/// Runs a broker until SIGINT/SIGTERM; the process exit code. The log queue is written out
/// before it returns (`logging::flush`).
pub fn run(args: StartArgs) -> ExitCode {
    let code = run_broker(args);
    crate::logging::flush();
    code
}

fn run_broker(args: StartArgs) -> ExitCode {
    let filter = args
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        // Through the log thread: a slow stderr (a saturated disk, a lagging collector) must
        // not block a shard (`logging`).
        .with_writer(crate::logging::QueuedStderr)
        // Colours only for a person at a terminal: a log file or a collector gets plain text
        // (and NO_COLOR, https://no-color.org, turns them off at a terminal too).
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        // Its report of a failed write is an eprintln!, which panics when stderr is a closed
        // pipe (a log collector that went away): lose the log line, keep the broker.
        .log_internal_errors(false);
    if args.log_format.as_deref() == Some("json") {
        logs.json().init();
    } else {
        logs.init();
    }
    let mut config = match &args.config {
        Some(path) => match BrokerConfig::from_toml_file(path) {
            Ok(config) => config,
            Err(e) => return fail(&e),
        },
        None => BrokerConfig::default(),
    };
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.admin_listen {
        config.admin_listen = v;
    }
    if let Some(v) = args.advertise {
        config.advertise = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.shards {
        config.shards = v;
    }
    if let Some(v) = args.node_id {
        config.node_id = v;
    }
    if let Some(v) = args.controller_listen {
        config.controller_listen = v;
    }
    if let Some(v) = args.controller_quorum_voters {
        config.controller_quorum_voters = v;
    }
    if let Some(v) = args.broker_rack {
        config.broker_rack = v;
    }
    if let Some(v) = args.auto_create_topics {
        config.auto_create_topics = v;
    }
    if let Some(v) = args.default_partitions {
        config.default_partitions = v;
    }
    if let Some(v) = args.listeners {
        config.listeners = v;
    }
    if let Some(v) = args.advertised_listeners {
        config.advertised_listeners = v;
    }
    if let Some(v) = args.sasl_enabled_mechanisms {
        config.sasl_enabled_mechanisms = v;
    }
    if let Some(v) = args.ssl_certificate_file {
        config.ssl_certificate_file = v;
    }
    if let Some(v) = args.ssl_key_file {
        config.ssl_key_file = v;
    }
    if let Some(v) = args.ssl_ca_file {
        config.ssl_ca_file = v;
    }
    if let Some(v) = args.ssl_client_auth {
        config.ssl_client_auth = v;
    }
    if let Some(v) = args.authorizer {
        config.authorizer = v == "on";
    }
    if let Some(v) = args.super_users {
        config.super_users = v;
    }
    if let Some(v) = args.allow_everyone_if_no_acl_found {
        config.allow_everyone_if_no_acl_found = v;
    }
    if let Some(v) = args.http_listen {
        config.http_listen = v;
    }
    if let Some(v) = args.connections_max_reauth_ms {
        config.connections_max_reauth_ms = v;
    }
    // A start that failed for want of ring memory right after a kill -9 of the previous broker
    // is retried a few times (the kernel frees the old rings asynchronously).
    let mut retries = 0;
    loop {
        match crate::runtime::run_broker(config.clone()) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(e) if e.is_transient() && retries < START_RETRIES_MAX => {
                retries += 1;
                tracing::warn!(error = %e, retry = retries, "start failed; retrying");
                std::thread::sleep(START_RETRY_DELAY * retries);
            }
            Err(e) => return fail(&e),
        }
    }
}

/// Starts retried after a transient failure ([`crate::runtime::StartError::is_transient`]).
const START_RETRIES_MAX: u32 = 5;
/// Delay before the first retry; the n-th waits n times this.
const START_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("freshet: {error}");
    ExitCode::FAILURE
}
