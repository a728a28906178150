//! The cluster: several nodes under one Raft metadata quorum (Kafka's KRaft).
//!
//! - Roles: a node listed in `controller_quorum_voters` is a voter of the metadata quorum and a
//!   broker (KRaft's combined mode); any other node is a broker only. With no voters
//!   configured, a node is a single-node cluster that is its own one-voter quorum.
//! - The metadata log is replicated by TiKV's `raft` crate (raft-rs), driven on the
//!   coordinator shard; its entries are the cluster metadata records
//!   (`coordinator::metadata::MetadataRecord`), applied on every node to the same pure state
//!   machine.
//! - Node ids: Kafka node ids start at 0, raft-rs ids at 1 (0 is its "no node"): the raft id of
//!   node `n` is `n + 1` ([`raft_id`], [`node_id_of`]).
//!
//! This module holds the quorum's configuration and the calls nodes make to the active
//! controller ([`ControllerRequest`] / [`ControllerResponse`]).

pub mod broker_client;
pub mod inter_broker;
pub mod liveness;
pub mod node;
pub mod raft_log;
pub mod transport;

use std::sync::atomic::{AtomicI32, Ordering};

use serde::{Deserialize, Serialize};

use crate::config::{BrokerConfig, ConfigError};

/// The most voters a quorum may have (Kafka's quorums are 3 or 5 in practice).
pub const VOTERS_MAX: usize = 9;

/// One voter of the metadata quorum: its Kafka node id and controller address (host:port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voter {
    pub node_id: i32,
    pub addr: String,
}

/// The raft-rs id of Kafka node `node_id` (raft-rs reserves 0).
pub fn raft_id(node_id: i32) -> u64 {
    assert!(node_id >= 0, "node ids are not negative");
    node_id as u64 + 1
}

/// The Kafka node id of raft-rs id `id`.
pub fn node_id_of(id: u64) -> i32 {
    assert!(id >= 1, "raft id 0 is no node");
    (id - 1) as i32
}

/// A cluster id shaped like Kafka's (`Uuid.randomUuid` in URL-safe base64 without padding,
/// 22 characters) from 16 random bytes.
pub fn cluster_id_of(bytes: [u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::with_capacity(22);
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

/// Parses Kafka's `controller.quorum.voters`: `id@host:port` entries separated by commas.
/// Ids must be distinct and not negative; at most [`VOTERS_MAX`] voters.
pub fn parse_voters(text: &str) -> Result<Vec<Voter>, ConfigError> {
    let mut voters: Vec<Voter> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || {
            ConfigError(format!(
                "controller_quorum_voters: '{entry}' is not id@host:port"
            ))
        };
        let (id, addr) = entry.split_once('@').ok_or_else(bad)?;
        let node_id: i32 = id.trim().parse().map_err(|_| bad())?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        if node_id < 0 || host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        if voters.iter().any(|v| v.node_id == node_id) {
            return Err(ConfigError(format!(
                "controller_quorum_voters: node id {node_id} is listed twice"
            )));
        }
        voters.push(Voter {
            node_id,
            addr: addr.trim().to_string(),
        });
    }
    if voters.len() > VOTERS_MAX {
        return Err(ConfigError(format!(
            "controller_quorum_voters: {} voters, at most {VOTERS_MAX}",
            voters.len()
        )));
    }
    Ok(voters)
}

/// How this node takes part in the quorum, from its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    /// This node's Kafka node id.
    pub node_id: i32,
    /// The voters; a single node without configured voters is its own one voter (with no
    /// controller address).
    pub voters: Vec<Voter>,
    /// Whether no voters were configured: a single node, no controller listener.
    pub single_node: bool,
    /// The address the controller listener binds, for a voter of a configured quorum.
    pub controller_listen: Option<String>,
}

impl QuorumConfig {
    /// The quorum configuration of `config` (checks the voter list and this node's place).
    pub fn from_broker_config(config: &BrokerConfig) -> Result<QuorumConfig, ConfigError> {
        let voters = parse_voters(&config.controller_quorum_voters)?;
        if voters.is_empty() {
            return Ok(QuorumConfig {
                node_id: config.node_id,
                voters: vec![Voter {
                    node_id: config.node_id,
                    addr: String::new(),
                }],
                single_node: true,
                controller_listen: None,
            });
        }
        let own = voters.iter().find(|v| v.node_id == config.node_id);
        let controller_listen = match (own, config.controller_listen.trim()) {
            (Some(v), "") => Some(v.addr.clone()),
            (_, "") => None,
            (_, listen) => Some(listen.to_string()),
        };
        Ok(QuorumConfig {
            node_id: config.node_id,
            voters,
            single_node: false,
            controller_listen,
        })
    }

    /// Whether this node is a voter (broker and controller), not a broker only.
    pub fn is_voter(&self) -> bool {
        self.voters.iter().any(|v| v.node_id == self.node_id)
    }

    /// The controller address of voter `node_id`.
    pub fn voter_addr(&self, node_id: i32) -> Option<&str> {
        self.voters
            .iter()
            .find(|v| v.node_id == node_id)
            .map(|v| v.addr.as_str())
    }
}

/// What a replica of the metadata log has, as DescribeQuorum (API 55) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub node_id: i32,
    /// The last log index known to be on that replica (the leader's match index; a
    /// follower's own last index for itself).
    pub log_end_offset: i64,
    /// When the leader last heard from it (wall clock ms), -1 if unknown.
    pub last_fetch_timestamp_ms: i64,
    /// When it was last caught up with the leader (wall clock ms), -1 if unknown.
    pub last_caught_up_timestamp_ms: i64,
}

/// The metadata quorum as one node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumStatus {
    /// The node that leads the current term, if known (Kafka's active controller).
    pub leader_id: Option<i32>,
    /// The current Raft term (Kafka's leader epoch of the metadata log).
    pub term: u64,
    /// The commit index (Kafka's high watermark of the metadata log).
    pub commit_index: u64,
    /// The last index applied to this node's metadata.
    pub applied_index: u64,
    /// The voters; the leader knows every voter's progress, a follower only its own.
    pub voters: Vec<ReplicaStatus>,
    /// Brokers that follow the metadata without voting.
    pub observers: Vec<ReplicaStatus>,
}

/// A broker's heartbeat to the active controller (Kafka's BrokerRegistration and
/// BrokerHeartbeat in one): who it is and how clients reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHeartbeat {
    pub node_id: i32,
    /// A new random id per process start: a restarted broker is told apart from the old one.
    pub incarnation_id: uuid::Uuid,
    /// The Kafka listener clients are told to use (host, port).
    pub host: String,
    pub port: i32,
    /// Kafka `broker.rack`, if set.
    pub rack: Option<String>,
    /// The broker is shutting down (Kafka's controlled shutdown): fence it now.
    pub shutting_down: bool,
    /// Every listener's advertised address (`host`/`port` is the first one's).
    #[serde(default)]
    pub listeners: Vec<crate::coordinator::metadata::ListenerEndpoint>,
}

/// An error of a forwarded metadata change, as Kafka's error code and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedError {
    pub code: i16,
    pub message: String,
}

/// A call from a node to the active controller over the controller listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// Metadata changes forwarded to the active controller (Kafka's forwarding of admin
    /// requests), applied in order as `Shard::change_metadata` applies them.
    Change {
        commands: Vec<crate::coordinator::metadata::MetadataCommand>,
        validate_only: bool,
    },
    /// A broker's registration and heartbeat.
    Heartbeat(BrokerHeartbeat),
    /// A broker-only node asks for the metadata when it is newer than `version`.
    FetchMetadata { version: u64 },
    /// The quorum as the called node sees it.
    DescribeQuorum,
    /// A broker reserves a block of producer ids (Kafka's AllocateProducerIds); answered with
    /// the block this call's own metadata record reserved.
    AllocateProducerIds,
    /// DeleteAcls forwarded to the active controller: each filter's matches are found and
    /// removed there in one metadata change (`Shard::delete_acls_matching`).
    DeleteAcls {
        filters: Vec<crate::security::acl::AclBindingFilter>,
    },
}

/// The active controller's answer to a [`ControllerRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerResponse {
    /// One result per forwarded command.
    Changed {
        results: Vec<Result<(), ForwardedError>>,
        /// The metadata version after the change on the controller: the forwarding node
        /// answers once it has applied that version too (read-your-writes for its client).
        #[serde(default)]
        version: u64,
    },
    /// The called node is not the active controller; `leader` is the one it knows of.
    NotController {
        leader: Option<i32>,
    },
    /// A heartbeat was taken; `fenced` tells the broker whether clients are sent to it.
    HeartbeatAck {
        fenced: bool,
    },
    /// The metadata, or `None` when the caller's version is current.
    Metadata {
        metadata: Option<Box<crate::coordinator::metadata::ClusterMetadata>>,
    },
    Quorum(QuorumStatus),
    /// The call failed (e.g. the metadata log could not be written).
    Failed {
        message: String,
    },
    /// The producer ids `start..end`, reserved durably for the caller alone.
    ProducerIds {
        start: i64,
        end: i64,
    },
    /// A forwarded call's metadata error (e.g. producer ids exhausted).
    Refused(ForwardedError),
    /// The answer to [`ControllerRequest::DeleteAcls`]: per filter, the bindings it removed.
    AclsDeleted {
        results: Vec<Result<Vec<crate::security::acl::AclBinding>, ForwardedError>>,
        /// The metadata version after the change (as [`ControllerResponse::Changed`]).
        version: u64,
    },
}

/// The active controller as this process last heard of it (-1: none known), for answers
/// any shard gives (Metadata's and DescribeCluster's `controller_id`). Set by the quorum
/// node on the coordinator shard when leadership changes.
static ACTIVE_CONTROLLER: AtomicI32 = AtomicI32::new(-1);

/// The node id of the active controller, if one is known.
pub fn active_controller() -> Option<i32> {
    let id = ACTIVE_CONTROLLER.load(Ordering::Relaxed);
    (id >= 0).then_some(id)
}

/// Records the active controller (`None`: no leader known, e.g. during an election).
pub fn set_active_controller(node_id: Option<i32>) {
    ACTIVE_CONTROLLER.store(node_id.unwrap_or(-1), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_as_kafka_writes_them() {
        let v = parse_voters("1@127.0.0.1:19193, 2@localhost:19194,3@[::1]:19195").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].node_id, 2);
        assert_eq!(v[1].addr, "localhost:19194");
        assert_eq!(v[2].addr, "[::1]:19195");
        assert!(parse_voters("").unwrap().is_empty());
        for bad in [
            "1",
            "x@h:1",
            "1@h",
            "1@h:99999",
            "-1@h:1",
            "1@h:1,1@h:2",
            "1@:5",
        ] {
            assert!(parse_voters(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn roles_follow_the_voter_list() {
        let mut config = BrokerConfig::default();
        let q = QuorumConfig::from_broker_config(&config).unwrap();
        assert!(q.single_node && q.is_voter() && q.controller_listen.is_none());
        config.controller_quorum_voters = "1@127.0.0.1:19193,2@127.0.0.1:19194".into();
        config.node_id = 2;
        let q = QuorumConfig::from_broker_config(&config).unwrap();
        assert!(!q.single_node && q.is_voter());
        assert_eq!(q.controller_listen.as_deref(), Some("127.0.0.1:19194"));
        config.node_id = 7;
        let q = QuorumConfig::from_broker_config(&config).unwrap();
        assert!(!q.is_voter() && q.controller_listen.is_none());
        assert_eq!(raft_id(0), 1);
        assert_eq!(node_id_of(raft_id(41)), 41);
    }
}
