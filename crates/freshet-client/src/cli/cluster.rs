//! `freshet cluster info` and `freshet cluster quorum`.
//!
//! - `info`: cluster id, controller and brokers (DescribeCluster, or Metadata on brokers
//!   without it; fenced state from DescribeCluster v2), then the metadata quorum in short:
//!   leader, epoch, high watermark and each voter's lag (DescribeQuorum). A quorum that cannot
//!   be described (no leader elected, or a broker without DescribeQuorum) is reported as
//!   unavailable without failing the command: the brokers are still worth seeing.
//! - `quorum`: what `kafka-metadata-quorum describe --status` and `--replication` print, as two
//!   tables (or one JSON document).
//!
//! Only the quorum's leader answers DescribeQuorum ([`quorum_from_leader`] finds it: the
//! bootstrap broker first, then the controller DescribeCluster names, then every broker).
//! Lag is the leader's log end offset minus the replica's.

use serde_json::{json, Value};

use super::{print_json, print_table, CliError, ConnArgs, Format, OutputArgs, Result, Session};
use crate::cluster::{self, ClusterDescription, QuorumDescription, QuorumReplica};

/// NOT_LEADER_OR_FOLLOWER: asked a node that does not lead the quorum.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

/// `freshet cluster ...`.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
    /// Where to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// How to print.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Subcommands of `freshet cluster`.
#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Cluster id, controller, brokers (fenced or not, rack) and the metadata quorum (leader,
    /// epoch, voters' lag).
    #[command(after_help = super::EXIT_CODES_HELP)]
    Info,
    /// The metadata quorum, like `kafka-metadata-quorum describe --status --replication`.
    #[command(after_help = super::EXIT_CODES_HELP)]
    Quorum,
}

/// Runs `freshet cluster ...`.
pub fn run(args: ClusterArgs) -> Result<()> {
    let mut session = Session::connect(&args.conn)?;
    match args.command {
        ClusterCommand::Info => {
            let c = cluster::describe_cluster(session.bootstrap())?;
            let quorum = quorum_from_leader(&mut session, &c);
            match args.output.format {
                Format::Json => print_json(&info_json(&c, &quorum)),
                Format::Table => print_info(&c, &quorum),
            }
            Ok(())
        }
        ClusterCommand::Quorum => {
            let c = cluster::describe_cluster(session.bootstrap())?;
            let q = quorum_from_leader(&mut session, &c)?;
            match args.output.format {
                Format::Json => print_json(&quorum_json(&c, &q)),
                Format::Table => print_quorum(&c, &q),
            }
            Ok(())
        }
    }
}

/// The quorum as its leader describes it: asks the bootstrap broker, then (when that one
/// does not lead) the controller `c` names, then every other broker of `c`.
pub fn quorum_from_leader(
    session: &mut Session,
    c: &ClusterDescription,
) -> Result<QuorumDescription> {
    let first = match cluster::describe_quorum(session.bootstrap()) {
        Ok(q) => return Ok(q),
        Err(e) => CliError::from(e),
    };
    if !matches!(first, CliError::Kafka { code, .. } if code == NOT_LEADER_OR_FOLLOWER) {
        return Err(first);
    }
    let mut order: Vec<&cluster::BrokerDescription> = c.brokers.iter().collect();
    // The controller first (stable sort: the others keep their id order).
    order.sort_by_key(|b| b.node_id != c.controller_id);
    let mut last = first;
    for broker in order {
        let addr = format!("{}:{}", broker.host, broker.port);
        let answer = session
            .to_addr(&addr)
            .and_then(|conn| cluster::describe_quorum(conn).map_err(CliError::from));
        match answer {
            Ok(q) => return Ok(q),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// "Leader", "Follower" or "Observer", as `kafka-metadata-quorum --replication` says.
fn status_of(q: &QuorumDescription, r: &QuorumReplica, voter: bool) -> &'static str {
    match (r.node_id == q.leader_id, voter) {
        (true, _) => "Leader",
        (false, true) => "Follower",
        (false, false) => "Observer",
    }
}

fn or_dash(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Kafka's MaxFollowerLagTimeMs: the leader's last caught-up time minus the oldest voter's.
fn max_follower_lag_time_ms(q: &QuorumDescription) -> Option<i64> {
    let leader = q.voters.iter().find(|v| v.node_id == q.leader_id)?;
    let oldest = q
        .voters
        .iter()
        .map(|v| v.last_caught_up_timestamp_ms)
        .min()?;
    (leader.last_caught_up_timestamp_ms >= 0 && oldest >= 0)
        .then(|| (leader.last_caught_up_timestamp_ms - oldest).max(0))
}

fn endpoints_of(q: &QuorumDescription, node_id: i32) -> Vec<String> {
    q.endpoints
        .iter()
        .find(|(id, _)| *id == node_id)
        .map(|(_, e)| e.clone())
        .unwrap_or_default()
}

fn replica_json(q: &QuorumDescription, r: &QuorumReplica, voter: bool) -> Value {
    json!({
        "node_id": r.node_id,
        "log_end_offset": r.log_end_offset,
        "lag": q.lag(r),
        "last_fetch_timestamp_ms": r.last_fetch_timestamp_ms,
        "last_caught_up_timestamp_ms": r.last_caught_up_timestamp_ms,
        "status": status_of(q, r, voter),
        "endpoints": endpoints_of(q, r.node_id),
    })
}

fn quorum_json(c: &ClusterDescription, q: &QuorumDescription) -> Value {
    json!({
        "cluster_id": c.cluster_id,
        "leader_id": q.leader_id,
        "leader_epoch": q.leader_epoch,
        "high_watermark": q.high_watermark,
        "max_follower_lag": q.max_voter_lag(),
        "max_follower_lag_time_ms": max_follower_lag_time_ms(q),
        "voters": q.voters.iter().map(|v| replica_json(q, v, true)).collect::<Vec<_>>(),
        "observers": q.observers.iter().map(|o| replica_json(q, o, false)).collect::<Vec<_>>(),
    })
}

fn info_json(c: &ClusterDescription, quorum: &Result<QuorumDescription>) -> Value {
    let (quorum, quorum_error) = match quorum {
        Ok(q) => (quorum_json(c, q), Value::Null),
        Err(e) => (Value::Null, Value::String(e.to_string())),
    };
    json!({
        "cluster_id": c.cluster_id,
        "controller_id": c.controller_id,
        "brokers": c.brokers.iter().map(|b| json!({
            "node_id": b.node_id,
            "host": b.host,
            "port": b.port,
            "rack": b.rack,
            "fenced": b.fenced,
        })).collect::<Vec<_>>(),
        "quorum": quorum,
        "quorum_error": quorum_error,
    })
}

fn print_info(c: &ClusterDescription, quorum: &Result<QuorumDescription>) {
    print_table(
        &["CLUSTER-ID", "CONTROLLER"],
        &[vec![
            c.cluster_id.clone().unwrap_or_else(|| "-".to_string()),
            c.controller_id.to_string(),
        ]],
    );
    super::blank_line();
    print_table(
        &["ID", "HOST", "PORT", "RACK", "STATE"],
        &c.brokers
            .iter()
            .map(|b| {
                let id = if b.node_id == c.controller_id {
                    format!("{}*", b.node_id)
                } else {
                    b.node_id.to_string()
                };
                vec![
                    id,
                    b.host.clone(),
                    b.port.to_string(),
                    b.rack.clone().unwrap_or_else(|| "-".to_string()),
                    if b.fenced { "fenced" } else { "unfenced" }.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    super::blank_line();
    match quorum {
        Ok(q) => {
            print_table(
                &["QUORUM-LEADER", "EPOCH", "HIGH-WATERMARK", "VOTERS"],
                &[vec![
                    q.leader_id.to_string(),
                    q.leader_epoch.to_string(),
                    q.high_watermark.to_string(),
                    q.voters.len().to_string(),
                ]],
            );
            super::blank_line();
            print_table(
                &["VOTER", "LOG-END", "LAG", "STATUS"],
                &q.voters
                    .iter()
                    .map(|v| {
                        vec![
                            v.node_id.to_string(),
                            v.log_end_offset.to_string(),
                            or_dash(q.lag(v)),
                            status_of(q, v, true).to_string(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
        }
        Err(e) => super::print_out(&format!("QUORUM: unavailable ({e})\n")),
    }
}

fn print_quorum(c: &ClusterDescription, q: &QuorumDescription) {
    let voters: Vec<String> = q
        .voters
        .iter()
        .map(|v| {
            let endpoints = endpoints_of(q, v.node_id);
            if endpoints.is_empty() {
                v.node_id.to_string()
            } else {
                format!("{} ({})", v.node_id, endpoints.join(", "))
            }
        })
        .collect();
    let observers: Vec<String> = q.observers.iter().map(|o| o.node_id.to_string()).collect();
    let rows = vec![
        (
            "ClusterId",
            c.cluster_id.clone().unwrap_or_else(|| "-".into()),
        ),
        ("LeaderId", q.leader_id.to_string()),
        ("LeaderEpoch", q.leader_epoch.to_string()),
        ("HighWatermark", q.high_watermark.to_string()),
        ("MaxFollowerLag", or_dash(q.max_voter_lag())),
        ("MaxFollowerLagTimeMs", or_dash(max_follower_lag_time_ms(q))),
        ("CurrentVoters", format!("[{}]", voters.join(", "))),
        ("CurrentObservers", format!("[{}]", observers.join(", "))),
    ];
    print_table(
        &["STATUS", "VALUE"],
        &rows
            .into_iter()
            .map(|(k, v)| vec![k.to_string(), v])
            .collect::<Vec<_>>(),
    );
    super::blank_line();
    let replicas = q
        .voters
        .iter()
        .map(|v| (v, true))
        .chain(q.observers.iter().map(|o| (o, false)));
    print_table(
        &[
            "NODE-ID",
            "LOG-END-OFFSET",
            "LAG",
            "LAST-FETCH-TIMESTAMP",
            "LAST-CAUGHT-UP-TIMESTAMP",
            "STATUS",
        ],
        &replicas
            .map(|(r, voter)| {
                vec![
                    r.node_id.to_string(),
                    r.log_end_offset.to_string(),
                    or_dash(q.lag(r)),
                    r.last_fetch_timestamp_ms.to_string(),
                    r.last_caught_up_timestamp_ms.to_string(),
                    status_of(q, r, voter).to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(node_id: i32, log_end_offset: i64, caught_up: i64) -> QuorumReplica {
        QuorumReplica {
            node_id,
            log_end_offset,
            last_fetch_timestamp_ms: caught_up,
            last_caught_up_timestamp_ms: caught_up,
        }
    }

    /// Lag is the leader's log end minus the replica's; unknown ends give no lag.
    #[test]
    fn lag_is_measured_from_the_leader() {
        let q = QuorumDescription {
            leader_id: 2,
            leader_epoch: 3,
            high_watermark: 10,
            voters: vec![replica(1, 7, 500), replica(2, 10, 900), replica(3, -1, -1)],
            observers: vec![replica(4, 10, 900)],
            endpoints: Vec::new(),
        };
        assert_eq!(q.lag(&q.voters[0]), Some(3));
        assert_eq!(q.lag(&q.voters[1]), Some(0));
        assert_eq!(q.lag(&q.voters[2]), None);
        assert_eq!(q.max_voter_lag(), None);
        assert_eq!(status_of(&q, &q.voters[1], true), "Leader");
        assert_eq!(status_of(&q, &q.observers[0], false), "Observer");
        assert_eq!(max_follower_lag_time_ms(&q), None);
        let mut known = q.clone();
        known.voters.pop();
        assert_eq!(known.max_voter_lag(), Some(3));
        assert_eq!(max_follower_lag_time_ms(&known), Some(400));
    }
}
