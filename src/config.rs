//! Broker settings: command-line flags, an optional TOML file, and embedded defaults.
//!
//! Every limit the broker enforces is a named field here, with its unit in the name
//! (`request_bytes_max`, `inflight_requests_per_connection_max`). Precedence: embedded
//! defaults, then the TOML file, then flags given on the command line.
//!
//! Topic-level configs (Kafka's `retention.ms`, `segment.bytes`, ...) live in
//! [`crate::coordinator::topic_config`]; the broker-wide defaults for them are here
//! (`log_retention_ms` ...), named after Kafka's `log.*` broker settings.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use serde::Deserialize;

/// The admin listener's default address (Redpanda's admin API port).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9644";

// Kafka's defaults for the group and transaction coordinator settings, named after Kafka's
// settings; the only place they are written (the coordinator's own `Default`s read them).
/// Kafka's `group.initial.rebalance.delay.ms` default.
pub const GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT: i64 = 3_000;
/// Kafka's `group.max.size` default (`Integer.MAX_VALUE`: unlimited).
pub const GROUP_MAX_SIZE_DEFAULT: i32 = i32::MAX;
/// Kafka's `group.min.session.timeout.ms` default.
pub const GROUP_MIN_SESSION_TIMEOUT_MS_DEFAULT: i32 = 6_000;
/// Kafka's `group.max.session.timeout.ms` default.
pub const GROUP_MAX_SESSION_TIMEOUT_MS_DEFAULT: i32 = 1_800_000;
/// Kafka's `group.consumer.session.timeout.ms` default.
pub const GROUP_CONSUMER_SESSION_TIMEOUT_MS_DEFAULT: i32 = 45_000;
/// Kafka's `group.consumer.heartbeat.interval.ms` default.
pub const GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS_DEFAULT: i32 = 5_000;
/// Kafka's `offsets.retention.minutes` default (7 days).
pub const OFFSETS_RETENTION_MINUTES_DEFAULT: i64 = 10_080;
/// Kafka's `offsets.retention.check.interval.ms` default.
pub const OFFSETS_RETENTION_CHECK_INTERVAL_MS_DEFAULT: i64 = 600_000;
/// Kafka's `transactional.id.expiration.ms` default: seven days.
pub const TRANSACTIONAL_ID_EXPIRATION_MS_DEFAULT: i64 = 604_800_000;
/// Kafka's `transaction.remove.expired.transaction.cleanup.interval.ms` default: one hour.
pub const TRANSACTIONAL_ID_EXPIRATION_CHECK_INTERVAL_MS_DEFAULT: i64 = 3_600_000;
/// The most partitions an internal coordinators' topic may have: a topic's limit
/// (`coordinator::metadata::PARTITIONS_PER_TOPIC_MAX`, not imported: config depends on nothing).
pub const INTERNAL_TOPIC_PARTITIONS_MAX: i32 = 100_000;
/// Kafka's `offsets.topic.num.partitions` default.
pub const OFFSETS_TOPIC_NUM_PARTITIONS_DEFAULT: i32 = 50;
/// Kafka's `offsets.topic.replication.factor` default.
pub const OFFSETS_TOPIC_REPLICATION_FACTOR_DEFAULT: i16 = 3;
/// Kafka's `transaction.state.log.num.partitions` default.
pub const TRANSACTION_STATE_LOG_NUM_PARTITIONS_DEFAULT: i32 = 50;
/// Kafka's `transaction.state.log.replication.factor` default.
pub const TRANSACTION_STATE_LOG_REPLICATION_FACTOR_DEFAULT: i16 = 3;
/// Kafka's `transaction.state.log.min.isr` default.
pub const TRANSACTION_STATE_LOG_MIN_ISR_DEFAULT: i16 = 2;
/// Kafka's `share.coordinator.state.topic.num.partitions` default.
pub const SHARE_COORDINATOR_STATE_TOPIC_NUM_PARTITIONS_DEFAULT: i32 = 50;
/// Kafka's `share.coordinator.state.topic.replication.factor` default.
pub const SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR_DEFAULT: i16 = 3;
/// Kafka's `share.coordinator.state.topic.min.isr` default.
pub const SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR_DEFAULT: i16 = 2;

/// Settings for `freshet start`. Field names match the TOML keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address the Kafka listener binds (host:port). Kafka's `listeners`.
    pub listen: String,
    /// Address of the admin HTTP listener (`/metrics`, `/health`, `/ready`), host:port.
    /// Empty or `off`: no admin listener. If the default address is taken (another broker on
    /// the same host) the broker starts without one and logs a warning; any other address
    /// that cannot be bound stops the start.
    pub admin_listen: String,
    /// Address clients are told to connect to (host:port). Kafka's `advertised.listeners`.
    /// Empty: same as `listen`.
    pub advertise: String,
    /// Directory holding partition logs and cluster metadata.
    pub data_dir: PathBuf,
    /// Number of shards (pinned executor threads). 0: one per online CPU (of `shard_cpus`).
    pub shards: usize,
    /// CPUs the shards may run on (empty: all online CPUs). Leave the others to interrupts
    /// (`freshet tune apply` moves IRQs off these).
    pub shard_cpus: Vec<usize>,
    /// The disk profile written by `freshet tune disk`. Empty: `<data_dir>/disk-profile.toml`.
    pub disk_profile: PathBuf,
    /// Kafka `node.id` of this broker.
    pub node_id: i32,
    /// Address the controller listener binds (host:port): the metadata quorum's Raft messages
    /// and the brokers' calls to the active controller. Kafka's `listeners` entry named by
    /// `controller.listener.names`. Empty: this node's address in `controller_quorum_voters`,
    /// if it is a voter; a broker-only node needs none.
    pub controller_listen: String,
    /// The metadata quorum's voters, Kafka's `controller.quorum.voters`:
    /// `"1@127.0.0.1:19193,2@127.0.0.1:19194,3@127.0.0.1:19195"` (node id @ controller
    /// address). A node whose `node_id` is listed runs as broker and controller (KRaft's
    /// combined mode), any other as broker only. Empty: a single node that is its own quorum
    /// (no controller listener).
    pub controller_quorum_voters: String,
    /// Kafka `controller.listener.names`: the name of the controller listener (the one on
    /// `controller_listen`), whose security protocol `listener_security_protocol_map` gives
    /// (`["CONTROLLER"]` with `"CONTROLLER:SSL"`), or a protocol name itself (`["SSL"]`).
    /// PLAINTEXT (the default, also when empty) or SSL: mutual TLS with the `ssl_*` files,
    /// a client certificate always required, and the peer's principal a super user or
    /// allowed CLUSTER_ACTION on the cluster (`cluster::transport`, module doc "Security").
    /// Only the first name is used; it must not be one of `listeners` (the controller
    /// listener binds `controller_listen`).
    pub controller_listener_names: Vec<String>,
    /// Kafka `broker.rack`: the rack (or zone) of this broker; placement spreads a
    /// partition's replicas over racks. Empty: no rack.
    pub broker_rack: String,
    /// Kafka `broker.session.timeout.ms`: a broker whose heartbeats stop for this long is
    /// fenced (its partitions are not given to clients) until it heartbeats again.
    pub broker_session_timeout_ms: u64,
    /// Kafka `broker.heartbeat.interval.ms`: how often a broker heartbeats to the active
    /// controller.
    pub broker_heartbeat_interval_ms: u64,
    /// Kafka `controller.quorum.election.timeout.ms`: a voter that hears from no leader for
    /// this long (randomized up to twice as long) starts an election.
    pub controller_quorum_election_timeout_ms: u64,
    /// Kafka `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// Kafka `num.partitions`: partitions of an auto-created topic.
    pub default_partitions: i32,
    /// Kafka `socket.request.max.bytes`: the largest request frame accepted.
    pub request_bytes_max: usize,
    /// Connections accepted per shard; more are closed at once. Kafka's `max.connections`
    /// split over shards.
    pub connections_per_shard_max: usize,
    /// Kafka `max.connections.per.ip`: Kafka-listener connections one IP address may hold
    /// open (all shards together); more are closed as they are accepted.
    pub max_connections_per_ip: u32,
    /// Kafka `max.connections.per.ip.overrides`: `address:count` pairs, comma-separated,
    /// for addresses with a limit of their own.
    pub max_connections_per_ip_overrides: String,
    /// Kafka `max.connection.creation.rate` (KIP-612): new connections per second the broker
    /// accepts on its listeners together (the inter-broker listener excepted when there are
    /// several); over it the acceptor waits before serving the next one
    /// (`security::conn_rate`). Default 2147483647: no limit. A listener's own limit is
    /// `listener_name.<listener>.max_connection_creation_rate`.
    pub max_connection_creation_rate: u32,
    /// Requests read from one connection but not yet answered; reading pauses at the limit.
    pub inflight_requests_per_connection_max: usize,
    /// Bytes of requests read on one shard and not yet answered; reading pauses at the limit.
    /// Requests over 64 KiB share 3/4 of it (reserved when their size arrives), so the rest
    /// always serves small requests.
    pub inflight_request_bytes_per_shard_max: usize,
    /// Depth of each bounded cross-shard queue; senders wait when it is full.
    pub shard_queue_depth: usize,
    /// A connection with no request for this long is closed. Kafka's `connections.max.idle.ms`.
    pub connections_max_idle_ms: u64,
    /// A request must arrive whole within this long of its first byte, or the connection is
    /// closed (a client trickling a request must not hold the shard's request memory); time
    /// spent waiting for the shard's request budget does not count.
    pub request_read_timeout_ms: u64,
    /// Per-shard memory for the partition tail cache, in bytes.
    pub tail_cache_bytes_per_shard: usize,
    /// The most partitions this broker holds (all topics; Kafka has no exact equivalent).
    /// CreateTopics, CreatePartitions and auto-creation that would pass it are refused whole
    /// with POLICY_VIOLATION before anything is created. 0: derived at start from
    /// RLIMIT_NOFILE and memory (see `runtime::derive_partitions_max`).
    pub max_partitions_per_broker: usize,
    /// Segment files each shard keeps open at most (an LRU pool: idle partitions hold no
    /// descriptor; see `storage::io`). 0: derived at start from RLIMIT_NOFILE.
    pub open_segment_files_per_shard_max: usize,
    /// glommio io_memory per shard, in bytes (counted against RLIMIT_MEMLOCK).
    pub io_memory_bytes: usize,
    /// io_uring ring depth per shard (counted against RLIMIT_MEMLOCK).
    pub ring_depth: usize,
    /// How long an idle shard spins before parking, in microseconds. Spinning cuts cross-shard
    /// latency (GLOMMIO.md pitfall 6) at the price of CPU: every wake-up of a lightly loaded
    /// shard is followed by a whole spin, so at 20 MB/s (thousands of wake-ups a second) 200 us
    /// cost a third of the broker's CPU (docs/PERFORMANCE.md, "Where the CPU goes").
    pub spin_before_park_us: u64,
    /// How often each shard applies retention, in milliseconds.
    /// Kafka's `log.retention.check.interval.ms`.
    pub retention_check_interval_ms: u64,
    /// Kafka `log.cleaner.enable`: run the log cleaner (compaction) on every shard.
    pub log_cleaner_enable: bool,
    /// How long each shard's cleaner sleeps when no log needs cleaning, in milliseconds.
    /// Kafka's `log.cleaner.backoff.ms`.
    pub log_cleaner_backoff_ms: u64,
    /// Memory of each shard's cleaner offset map (key hash -> offset), in bytes. Kafka's
    /// `log.cleaner.dedupe.buffer.size`, per shard instead of per broker.
    pub log_cleaner_dedupe_buffer_bytes_per_shard: usize,
    /// Broker default for topic `retention.ms` (Kafka `log.retention.ms`).
    pub log_retention_ms: i64,
    /// Broker default for topic `retention.bytes` (Kafka `log.retention.bytes`).
    pub log_retention_bytes: i64,
    /// Broker default for topic `segment.bytes` (Kafka `log.segment.bytes`).
    pub log_segment_bytes: i64,
    /// Broker default for topic `segment.ms` (Kafka `log.roll.ms`).
    pub log_segment_ms: i64,
    /// Broker default for topic `max.message.bytes` (Kafka `message.max.bytes`).
    pub message_max_bytes: i64,
    /// The cluster id reported in Metadata and DescribeCluster. Empty: generated once and kept
    /// in the data directory.
    pub cluster_id: String,
    /// Kafka `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty
    /// consumer group waits for more members, in milliseconds.
    pub group_initial_rebalance_delay_ms: i64,
    /// Kafka `group.max.size`: members per classic consumer group; a join beyond it is refused
    /// with GROUP_MAX_SIZE_REACHED. Unlimited by default (2147483647), as Kafka.
    pub group_max_size: i32,
    /// Kafka `group.min.session.timeout.ms`: a classic-group member asking for a shorter
    /// session gets INVALID_SESSION_TIMEOUT, in milliseconds.
    pub group_min_session_timeout_ms: i32,
    /// Kafka `group.max.session.timeout.ms`: a classic-group member asking for a longer session
    /// gets INVALID_SESSION_TIMEOUT, in milliseconds.
    pub group_max_session_timeout_ms: i32,
    /// Kafka `group.consumer.session.timeout.ms`: a KIP-848 consumer-group member that does
    /// not heartbeat for this long is removed, in milliseconds.
    pub group_consumer_session_timeout_ms: i32,
    /// Kafka `group.consumer.heartbeat.interval.ms`: the heartbeat interval given to KIP-848
    /// consumer-group members, in milliseconds.
    pub group_consumer_heartbeat_interval_ms: i32,
    /// Kafka `offsets.retention.minutes`: committed offsets of a group that has been empty
    /// this long (or, without group management, not committed for this long) are deleted.
    pub offsets_retention_minutes: i64,
    /// Kafka `offsets.retention.check.interval.ms`: how often expired offsets are looked for.
    pub offsets_retention_check_interval_ms: i64,
    /// Kafka `transactional.id.expiration.ms`: a transactional id with no transaction open
    /// whose state has not changed for this long is removed.
    pub transactional_id_expiration_ms: i64,
    /// Kafka `transaction.remove.expired.transaction.cleanup.interval.ms`: how often expired
    /// transactional ids are looked for (and the transaction log compacted if due).
    pub transactional_id_expiration_check_interval_ms: i64,
    /// Kafka `offsets.topic.num.partitions`: partitions of `__consumer_offsets`, whose leaders
    /// are the group coordinators of a cluster (a group's is partition
    /// `abs(hashCode(group)) % this`). Unused on a single node. Must not change once a
    /// cluster created the topic.
    pub offsets_topic_num_partitions: i32,
    /// Kafka `transaction.state.log.num.partitions`: the same for `__transaction_state` and
    /// the transaction coordinators.
    pub transaction_state_log_num_partitions: i32,
    /// Kafka `listeners`: `["PLAINTEXT://127.0.0.1:9092", "SASL_SSL://0.0.0.0:9093"]`, each
    /// `NAME://host:port`, the name a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT,
    /// SASL_SSL) or a name mapped to one by `listener_security_protocol_map`. Empty: one
    /// PLAINTEXT listener on `listen`.
    pub listeners: Vec<String>,
    /// Kafka `advertised.listeners`: `NAME://host:port` per listener name, the address
    /// Metadata gives clients that came in on that listener. A listener not named here
    /// advertises its own address (`advertise` for the first one, when set).
    pub advertised_listeners: Vec<String>,
    /// Kafka `listener.security.protocol.map`: `["INTERNAL:SASL_SSL", ...]` for listeners
    /// whose name is not a security protocol.
    pub listener_security_protocol_map: Vec<String>,
    /// Kafka `sasl.enabled.mechanisms`: what SASL listeners offer (PLAIN, SCRAM-SHA-256,
    /// SCRAM-SHA-512).
    pub sasl_enabled_mechanisms: Vec<String>,
    /// Kafka `ssl.keystore.location`, as a PEM file: the certificate chain TLS listeners
    /// present (re-read when the file changes).
    pub ssl_certificate_file: PathBuf,
    /// The PEM private key of `ssl_certificate_file` (PKCS#8, PKCS#1 or SEC1).
    pub ssl_key_file: PathBuf,
    /// Kafka `ssl.truststore.location`, as a PEM file: the CAs client certificates must chain
    /// to (needed when `ssl_client_auth` is not `none`).
    pub ssl_ca_file: PathBuf,
    /// Kafka `ssl.client.auth`: `none`, `requested` or `required`.
    pub ssl_client_auth: String,
    /// Kafka `connection.failed.authentication.delay.ms`: a failed authentication is answered
    /// (and its connection closed) this long after it failed, to slow password guessing.
    pub connection_failed_authentication_delay_ms: u64,
    /// Kafka `replica.lag.time.max.ms`: an in-sync follower that has not caught up with the
    /// leader's log end for this long leaves the ISR, in milliseconds.
    pub replica_lag_time_max_ms: u64,
    /// Kafka `replica.fetch.max.bytes`: bytes a follower's Fetch asks per partition.
    pub replica_fetch_max_bytes: usize,
    /// Kafka `replica.fetch.response.max.bytes`: bytes a follower's Fetch asks in all (its
    /// response is refused above this plus one partition's worth of framing).
    pub replica_fetch_response_max_bytes: usize,
    /// Kafka `replica.fetch.wait.max.ms`: how long a follower's Fetch waits at the leader for
    /// data, in milliseconds.
    pub replica_fetch_wait_max_ms: u64,
    /// Kafka `replica.fetch.backoff.ms`: the longest a follower waits before it reconnects to
    /// a leader after an error (it starts at a tenth of it and doubles), in milliseconds.
    pub replica_fetch_backoff_ms: u64,
    /// Kafka `auto.leader.rebalance.enable`: the active controller moves leadership back to
    /// each partition's preferred (first) replica when a broker's share of partitions led
    /// elsewhere passes `leader_imbalance_per_broker_percentage`.
    pub auto_leader_rebalance_enable: bool,
    /// Kafka `leader.imbalance.check.interval.seconds`: how often the active controller looks
    /// for leader imbalance.
    pub leader_imbalance_check_interval_seconds: u64,
    /// Kafka `leader.imbalance.per.broker.percentage`: the share of a broker's preferred
    /// partitions that may be led by others before leadership is moved back.
    pub leader_imbalance_per_broker_percentage: u32,
    /// Kafka `unclean.leader.election.interval.ms`: how often the active controller gives a
    /// leaderless partition of a topic with `unclean.leader.election.enable` a live
    /// out-of-sync replica as leader.
    pub unclean_leader_election_interval_ms: u64,
    /// Check every request against the ACLs of the metadata (`security::authorizer`; Kafka's
    /// `authorizer.class.name` set to the StandardAuthorizer). Off (the default): everyone may
    /// do everything, as before. In TOML `authorizer = "on"` or `"off"` (or a boolean).
    #[serde(deserialize_with = "on_off")]
    pub authorizer: bool,
    /// Kafka `super.users`: principals allowed everything, `;`-separated
    /// (`"User:admin;User:ops"`).
    pub super_users: String,
    /// Kafka `allow.everyone.if.no.acl.found`: with the authorizer on, a resource that has no
    /// ACL at all is open to everyone (default false: denied).
    pub allow_everyone_if_no_acl_found: bool,
    /// Bytes of Produce requests read on one shard and not yet answered (most of them waiting
    /// for the disk); a producing connection stops being read at the limit, other requests
    /// never wait for it (they have `inflight_request_bytes_per_shard_max`). A slow disk thus
    /// holds back the producers, not everyone.
    pub produce_inflight_bytes_per_shard_max: usize,
    /// Address of the HTTP listener (produce and push streams, `crate::http`): host:port, or
    /// a port alone for loopback (`127.0.0.1:PORT`). Empty or `off` (the default): none.
    pub http_listen: String,
    /// HTTP connections served per shard; one more is answered 503 and closed.
    pub http_connections_per_shard_max: usize,
    /// The largest HTTP request body accepted (a produce request's JSON).
    pub http_request_bytes_max: usize,
    /// Kafka `offsets.topic.replication.factor`: replicas of each `__consumer_offsets`
    /// partition when a cluster creates the topic, at most the live brokers then (the group
    /// coordinators' state lives in those partitions and fails over with them). Unused on a
    /// single node.
    pub offsets_topic_replication_factor: i16,
    /// Kafka `offsets.commit.timeout.ms`: how long a group coordinator of a cluster waits for
    /// the in-sync replicas of its `__consumer_offsets` partition to have a write (an offset
    /// commit, a group's state) before it answers COORDINATOR_NOT_AVAILABLE (retriable).
    pub offsets_commit_timeout_ms: u64,
    /// Kafka `max.incremental.fetch.session.cache.slots`: fetch sessions (KIP-227) kept per
    /// broker (split over the shards); 0: none.
    pub max_incremental_fetch_session_cache_slots: usize,
    /// Partitions cached in fetch sessions per broker, all sessions together (about 120 bytes
    /// each; Freshet's own bound, Kafka has none): a session that would pass it is not created.
    pub fetch_session_cache_partitions_max: usize,
    /// How long a fetch session stays unused before a new one may evict it, and how old it must
    /// be before a larger one may (Kafka's fixed 120 s), in milliseconds.
    pub fetch_session_eviction_ms: u64,
    /// Kafka `group.share.session.timeout.ms`: a share-group member that does not heartbeat
    /// for this long is removed (and its acquired records released), in milliseconds.
    pub group_share_session_timeout_ms: i32,
    /// Kafka `group.share.heartbeat.interval.ms`: the heartbeat interval given to share-group
    /// members, in milliseconds.
    pub group_share_heartbeat_interval_ms: i32,
    /// Kafka `group.share.record.lock.duration.ms`: how long an acquired record stays locked
    /// to its member before it is delivered again, in milliseconds.
    pub group_share_record_lock_duration_ms: i64,
    /// Kafka `group.share.min.record.lock.duration.ms` and `group.share.max.record.lock.duration.ms`:
    /// the bounds of a group's `share.record.lock.duration.ms` (GROUP config).
    pub group_share_min_record_lock_duration_ms: i64,
    pub group_share_max_record_lock_duration_ms: i64,
    /// Kafka `group.share.min.session.timeout.ms` / `group.share.max.session.timeout.ms`: the
    /// bounds of a group's `share.session.timeout.ms`.
    pub group_share_min_session_timeout_ms: i32,
    pub group_share_max_session_timeout_ms: i32,
    /// Kafka `group.share.min.heartbeat.interval.ms` / `group.share.max.heartbeat.interval.ms`:
    /// the bounds of a group's `share.heartbeat.interval.ms`.
    pub group_share_min_heartbeat_interval_ms: i32,
    pub group_share_max_heartbeat_interval_ms: i32,
    /// Kafka `group.share.delivery.count.limit`: deliveries of a record before a release or a
    /// lock timeout archives it.
    pub group_share_delivery_count_limit: i16,
    /// Kafka `group.share.partition.max.record.locks`: the most in-flight records (end offset
    /// minus start offset) of a share partition; bounds its memory.
    pub group_share_partition_max_record_locks: usize,
    /// Kafka `group.share.max.share.sessions`: share sessions (ShareFetch) on this broker.
    pub group_share_max_share_sessions: usize,
    /// The default of Kafka's share-group config `share.auto.offset.reset`: where a share
    /// partition starts, `latest` (the log end when first fetched) or `earliest`.
    pub share_auto_offset_reset: String,
    /// Kafka `connections.max.reauth.ms` (KIP-368): a SASL session lasts this long (the
    /// lifetime SaslAuthenticate v1+ answers); a connection that sends anything but a
    /// re-authentication after it is closed. 0 (the default): sessions never expire.
    pub connections_max_reauth_ms: u64,
    /// Kafka `sasl.oauthbearer.jwks.endpoint.url`, as a `file:///...` URL (no HTTP client):
    /// OAUTHBEARER tokens must be signed by a key of this JWKS file (re-read when it
    /// changes). Empty: no signed-token validation.
    pub sasl_oauthbearer_jwks_endpoint_url: String,
    /// Kafka `sasl.oauthbearer.expected.audience`: a signed token's `aud` must hold one of
    /// these (empty: not checked).
    pub sasl_oauthbearer_expected_audience: Vec<String>,
    /// Kafka `sasl.oauthbearer.expected.issuer`: a signed token's `iss` must be this (empty:
    /// not checked).
    pub sasl_oauthbearer_expected_issuer: String,
    /// Kafka `sasl.oauthbearer.sub.claim.name`: the claim naming a signed token's principal.
    pub sasl_oauthbearer_sub_claim_name: String,
    /// Kafka `sasl.oauthbearer.scope.claim.name`: the claim of a signed token's scope.
    pub sasl_oauthbearer_scope_claim_name: String,
    /// Kafka `sasl.oauthbearer.clock.skew.seconds`: the clock difference allowed when a
    /// signed token's `exp`, `iat` and `nbf` are checked.
    pub sasl_oauthbearer_clock_skew_seconds: i64,
    /// Accept unsecured OAUTHBEARER tokens (`alg` "none"), as Kafka's default
    /// `OAuthBearerUnsecuredValidatorCallbackHandler` does: for tests and development only
    /// (anyone can claim any principal). Exclusive with `sasl_oauthbearer_jwks_endpoint_url`.
    pub sasl_oauthbearer_unsecured_validator_enabled: bool,
    /// Kafka's `unsecuredValidatorPrincipalClaimName`.
    pub sasl_oauthbearer_unsecured_validator_principal_claim_name: String,
    /// Kafka's `unsecuredValidatorScopeClaimName`.
    pub sasl_oauthbearer_unsecured_validator_scope_claim_name: String,
    /// Kafka's `unsecuredValidatorRequiredScope`: scopes an unsecured token must hold.
    pub sasl_oauthbearer_unsecured_validator_required_scope: Vec<String>,
    /// Kafka's `unsecuredValidatorAllowableClockSkewMs`.
    pub sasl_oauthbearer_unsecured_validator_allowable_clock_skew_ms: i64,
    /// Kafka `transaction.state.log.replication.factor`: replicas of each
    /// `__transaction_state` partition when a cluster creates the topic, at most the live
    /// brokers then (the transaction coordinators' state lives in those partitions and fails
    /// over with them). Unused on a single node.
    pub transaction_state_log_replication_factor: i16,
    /// Kafka `transaction.state.log.min.isr`: the `min.insync.replicas` of
    /// `__transaction_state` (at most its replicas); a transaction coordinator's write with
    /// fewer in-sync replicas is answered COORDINATOR_NOT_AVAILABLE (retriable).
    pub transaction_state_log_min_isr: i16,
    /// Kafka `replica.selector.class` (KIP-392, fetch from follower): empty (Kafka's default:
    /// consumers fetch from leaders only) or [`RACK_AWARE_REPLICA_SELECTOR`], with which a
    /// leader names an in-sync follower in the consumer's `client.rack` as its preferred read
    /// replica.
    pub replica_selector_class: String,
    /// Kafka `inter.broker.listener.name`: the listener brokers connect to each other on
    /// (replica fetches, transaction markers and verifications), authenticating as this
    /// broker (SASL with its `listener_name` credentials, a client certificate on TLS).
    /// Empty: the listener named by `security_inter_broker_protocol`, or, when that is empty
    /// too, the first listener. Exclusive with `security_inter_broker_protocol`, as in Kafka.
    pub inter_broker_listener_name: String,
    /// Kafka `security.inter.broker.protocol`: the inter-broker listener is the one with this
    /// name (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL). Empty: see
    /// `inter_broker_listener_name`.
    pub security_inter_broker_protocol: String,
    /// Kafka `sasl.mechanism.inter.broker.protocol`: the mechanism a broker authenticates
    /// with on a SASL inter-broker listener (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    pub sasl_mechanism_inter_broker_protocol: String,
    /// Kafka's `listener.name.<listener>.*` settings, written as TOML dotted keys
    /// `listener_name.<listener>.*` (listener in lower case): the listener's
    /// `max_connection_creation_rate`, and per mechanism
    /// `listener_name.<listener>.<mechanism>.sasl_jaas_config` (Kafka
    /// `listener.name.<listener>.<mechanism>.sasl.jaas.config`): the `username` and `password`
    /// a broker authenticates to the other brokers with on that listener. Its principal must be
    /// in `super_users` (or hold CLUSTER_ACTION on the cluster) when the authorizer is on.
    pub listener_name: BTreeMap<String, ListenerConfig>,
    /// Authentication on the HTTP listener (`crate::http::auth`), Confluent REST Proxy's
    /// `authentication.method`: `NONE` (the default: no authentication; with the authorizer on
    /// every HTTP request is then refused 403), `BASIC` (user and password checked against
    /// the stored SCRAM credentials) or `BEARER` (an OAUTHBEARER token, validated as the
    /// `sasl_oauthbearer_*` settings say).
    pub http_authentication_method: String,
    /// REST Proxy's `authentication.realm`: the realm named in `WWW-Authenticate` on the HTTP
    /// and admin listeners.
    pub http_authentication_realm: String,
    /// Authentication on the admin listener (`/metrics`, the console and `/api/*`; never
    /// `/health` and `/ready`): `NONE` (the default), `BASIC` or `BEARER`, as
    /// `http_authentication_method`.
    pub admin_authentication_method: String,
    /// HTTPS on the HTTP listener (REST Proxy's `listeners=https://`), with the certificate and
    /// key of `ssl_certificate_file` / `ssl_key_file` (reloaded when they change, as the Kafka
    /// TLS listeners'). Default false: plain HTTP.
    pub http_ssl_enabled: bool,
    /// REST Proxy's `ssl.client.authentication` on the HTTPS listener: `NONE` (the default),
    /// `REQUESTED` or `REQUIRED` (client certificates chained to `ssl_ca_file`). A client
    /// certificate's principal (`User:` + its subject, as the Kafka listeners map it) is the
    /// request's principal, before any `Authorization` header.
    pub http_ssl_client_authentication: String,
    /// Kafka `share.coordinator.state.topic.num.partitions`: partitions of
    /// `__share_group_state`, whose leaders are the share coordinators of a cluster (the
    /// state of share partition (group, topic id, partition) lives in partition
    /// `abs(hashCode("group:topicId:partition")) % this`). Unused on a single node.
    pub share_coordinator_state_topic_num_partitions: i32,
    /// Kafka `share.coordinator.state.topic.replication.factor`: replicas of each
    /// `__share_group_state` partition when a cluster creates the topic (at most the live
    /// brokers then). Unused on a single node.
    pub share_coordinator_state_topic_replication_factor: i16,
    /// Kafka `share.coordinator.state.topic.min.isr`: the `min.insync.replicas` of
    /// `__share_group_state`.
    pub share_coordinator_state_topic_min_isr: i16,
}

/// Per-listener settings (`listener_name.<listener>.*`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ListenerConfig {
    /// Kafka `listener.name.<listener>.max.connection.creation.rate` (KIP-612): this
    /// listener's own limit of new connections per second (default: none).
    #[serde(default)]
    pub max_connection_creation_rate: Option<u32>,
    /// Per-mechanism settings, by mechanism name in lower case (`scram-sha-512`, `plain`).
    #[serde(flatten)]
    pub mechanisms: BTreeMap<String, ListenerMechanismConfig>,
}

/// Per-listener, per-mechanism settings (`listener_name.<listener>.<mechanism>.*`).
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerMechanismConfig {
    /// A JAAS line: `org.apache.kafka.common.security.scram.ScramLoginModule required
    /// username="broker" password="...";`.
    pub sasl_jaas_config: String,
}

impl std::fmt::Debug for ListenerMechanismConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListenerMechanismConfig { sasl_jaas_config: [hidden] }")
    }
}

/// Kafka's rack-aware replica selector, the one `replica_selector_class` accepts.
pub const RACK_AWARE_REPLICA_SELECTOR: &str =
    "org.apache.kafka.common.replica.RackAwareReplicaSelector";

/// Reads `"on"`/`"off"` (or a boolean) as a boolean.
fn on_off<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OnOff {
        Bool(bool),
        Text(String),
    }
    match OnOff::deserialize(d)? {
        OnOff::Bool(b) => Ok(b),
        OnOff::Text(t) if t == "on" => Ok(true),
        OnOff::Text(t) if t == "off" => Ok(false),
        OnOff::Text(t) => Err(serde::de::Error::custom(format!(
            "expected \"on\" or \"off\", got {t:?}"
        ))),
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: "localhost:9092".to_string(),
            admin_listen: DEFAULT_ADMIN_LISTEN.to_string(),
            advertise: String::new(),
            data_dir: PathBuf::from("./freshet-data"),
            shards: 0,
            shard_cpus: Vec::new(),
            disk_profile: PathBuf::new(),
            node_id: 0,
            controller_listen: String::new(),
            controller_quorum_voters: String::new(),
            broker_rack: String::new(),
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 2_000,
            controller_quorum_election_timeout_ms: 1_000,
            auto_create_topics: true,
            default_partitions: 1,
            request_bytes_max: 104_857_600,
            connections_per_shard_max: 10_000,
            max_connections_per_ip: i32::MAX as u32,
            max_connections_per_ip_overrides: String::new(),
            max_connection_creation_rate: crate::security::conn_rate::UNLIMITED,
            inflight_requests_per_connection_max: 64,
            inflight_request_bytes_per_shard_max: 256 * 1024 * 1024,
            shard_queue_depth: 1024,
            connections_max_idle_ms: 600_000,
            request_read_timeout_ms: 30_000,
            tail_cache_bytes_per_shard: 128 * 1024 * 1024,
            max_partitions_per_broker: 0,
            open_segment_files_per_shard_max: 0,
            io_memory_bytes: 1024 * 1024,
            ring_depth: 1024,
            spin_before_park_us: 50,
            retention_check_interval_ms: 300_000,
            log_cleaner_enable: true,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_dedupe_buffer_bytes_per_shard: 32 * 1024 * 1024,
            log_retention_ms: 604_800_000,
            log_retention_bytes: -1,
            log_segment_bytes: 1_073_741_824,
            log_segment_ms: 604_800_000,
            message_max_bytes: 1_048_588,
            cluster_id: String::new(),
            group_initial_rebalance_delay_ms: GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT,
            group_max_size: GROUP_MAX_SIZE_DEFAULT,
            group_min_session_timeout_ms: GROUP_MIN_SESSION_TIMEOUT_MS_DEFAULT,
            group_max_session_timeout_ms: GROUP_MAX_SESSION_TIMEOUT_MS_DEFAULT,
            group_consumer_session_timeout_ms: GROUP_CONSUMER_SESSION_TIMEOUT_MS_DEFAULT,
            group_consumer_heartbeat_interval_ms: GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS_DEFAULT,
            offsets_retention_minutes: OFFSETS_RETENTION_MINUTES_DEFAULT,
            offsets_retention_check_interval_ms: OFFSETS_RETENTION_CHECK_INTERVAL_MS_DEFAULT,
            transactional_id_expiration_ms: TRANSACTIONAL_ID_EXPIRATION_MS_DEFAULT,
            transactional_id_expiration_check_interval_ms:
                TRANSACTIONAL_ID_EXPIRATION_CHECK_INTERVAL_MS_DEFAULT,
            offsets_topic_num_partitions: OFFSETS_TOPIC_NUM_PARTITIONS_DEFAULT,
            transaction_state_log_num_partitions: TRANSACTION_STATE_LOG_NUM_PARTITIONS_DEFAULT,
            listeners: Vec::new(),
            advertised_listeners: Vec::new(),
            listener_security_protocol_map: Vec::new(),
            controller_listener_names: Vec::new(),
            sasl_enabled_mechanisms: vec![
                "PLAIN".into(),
                "SCRAM-SHA-256".into(),
                "SCRAM-SHA-512".into(),
            ],
            ssl_certificate_file: PathBuf::new(),
            ssl_key_file: PathBuf::new(),
            ssl_ca_file: PathBuf::new(),
            ssl_client_auth: "none".into(),
            connection_failed_authentication_delay_ms: 100,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_bytes: 1 << 20,
            replica_fetch_response_max_bytes: 10 << 20,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_backoff_ms: 1_000,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            leader_imbalance_per_broker_percentage: 10,
            unclean_leader_election_interval_ms: 300_000,
            authorizer: false,
            super_users: String::new(),
            allow_everyone_if_no_acl_found: false,
            produce_inflight_bytes_per_shard_max: 192 * 1024 * 1024,
            http_listen: String::new(),
            http_connections_per_shard_max: 64,
            http_request_bytes_max: 2 * 1024 * 1024,
            offsets_topic_replication_factor: OFFSETS_TOPIC_REPLICATION_FACTOR_DEFAULT,
            offsets_commit_timeout_ms: 5_000,
            max_incremental_fetch_session_cache_slots: 1_000,
            fetch_session_cache_partitions_max: 1_000_000,
            fetch_session_eviction_ms: 120_000,
            group_share_session_timeout_ms: 45_000,
            group_share_heartbeat_interval_ms: 5_000,
            group_share_record_lock_duration_ms: 30_000,
            group_share_min_record_lock_duration_ms: 15_000,
            group_share_max_record_lock_duration_ms: 60_000,
            group_share_min_session_timeout_ms: 45_000,
            group_share_max_session_timeout_ms: 60_000,
            group_share_min_heartbeat_interval_ms: 5_000,
            group_share_max_heartbeat_interval_ms: 15_000,
            group_share_delivery_count_limit: 5,
            group_share_partition_max_record_locks: 2_000,
            group_share_max_share_sessions: 2_000,
            share_auto_offset_reset: "latest".into(),
            connections_max_reauth_ms: 0,
            sasl_oauthbearer_jwks_endpoint_url: String::new(),
            sasl_oauthbearer_expected_audience: Vec::new(),
            sasl_oauthbearer_expected_issuer: String::new(),
            sasl_oauthbearer_sub_claim_name: "sub".into(),
            sasl_oauthbearer_scope_claim_name: "scope".into(),
            sasl_oauthbearer_clock_skew_seconds: 30,
            sasl_oauthbearer_unsecured_validator_enabled: false,
            sasl_oauthbearer_unsecured_validator_principal_claim_name: "sub".into(),
            sasl_oauthbearer_unsecured_validator_scope_claim_name: "scope".into(),
            sasl_oauthbearer_unsecured_validator_required_scope: Vec::new(),
            sasl_oauthbearer_unsecured_validator_allowable_clock_skew_ms: 0,
            transaction_state_log_replication_factor:
                TRANSACTION_STATE_LOG_REPLICATION_FACTOR_DEFAULT,
            transaction_state_log_min_isr: TRANSACTION_STATE_LOG_MIN_ISR_DEFAULT,
            replica_selector_class: String::new(),
            inter_broker_listener_name: String::new(),
            security_inter_broker_protocol: String::new(),
            sasl_mechanism_inter_broker_protocol: "PLAIN".into(),
            listener_name: BTreeMap::new(),
            http_authentication_method: "NONE".into(),
            http_authentication_realm: "Freshet".into(),
            admin_authentication_method: "NONE".into(),
            http_ssl_enabled: false,
            http_ssl_client_authentication: "NONE".into(),
            share_coordinator_state_topic_num_partitions:
                SHARE_COORDINATOR_STATE_TOPIC_NUM_PARTITIONS_DEFAULT,
            share_coordinator_state_topic_replication_factor:
                SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR_DEFAULT,
            share_coordinator_state_topic_min_isr: SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR_DEFAULT,
        }
    }
}

/// A configuration that cannot be used; the message says which setting and why.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl BrokerConfig {
    /// Reads a TOML file over the embedded defaults.
    pub fn from_toml_file(path: &std::path::Path) -> Result<BrokerConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// The number of shards to run: the configured count, or one per online CPU.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else if !self.shard_cpus.is_empty() {
            self.shard_cpus.len()
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The socket address to bind, resolved (prefers IPv4 for `localhost`).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        resolve(&self.listen)
    }

    /// The admin listener's address, or `None` when it is disabled.
    pub fn admin_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.admin_listen.trim() {
            "" | "off" | "none" => Ok(None),
            text => resolve(text).map(Some),
        }
    }

    /// The HTTP listener's address (a port alone means loopback), or `None` when it is off.
    pub fn http_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let text = self.http_listen.trim();
        match text {
            "" | "off" | "none" => Ok(None),
            _ => match text.trim_start_matches(':').parse::<u16>() {
                Ok(port) => Ok(Some(SocketAddr::from(([127, 0, 0, 1], port)))),
                Err(_) => resolve(text).map(Some),
            },
        }
    }

    /// Host and port that Metadata and FindCoordinator answers give to clients (of the
    /// first listener; [`Self::advertised_host_port_of`] for the one a client came in on).
    pub fn advertised_host_port(&self) -> Result<(String, i32), ConfigError> {
        match self.listeners.first() {
            None => self.advertised_host_port_of(""),
            Some(_) => {
                let first = self.listener_specs()?.remove(0);
                self.advertised_host_port_of(&first.name)
            }
        }
    }

    /// The advertised host and port of listener `name` (`""`: the first listener).
    pub fn advertised_host_port_of(&self, name: &str) -> Result<(String, i32), ConfigError> {
        if !self.listeners.is_empty() {
            let specs = self.listener_specs()?;
            let spec = specs.iter().find(|l| l.name == name).unwrap_or(&specs[0]);
            let advertised = advertised_listener_addr(&self.advertised_listeners, &spec.name)?;
            let text = match advertised {
                Some(text) => text,
                None if spec.name == specs[0].name && !self.advertise.is_empty() => {
                    self.advertise.clone()
                }
                None => spec.addr.clone(),
            };
            return host_port(&text);
        }
        let text = if self.advertise.is_empty() {
            &self.listen
        } else {
            &self.advertise
        };
        host_port(text)
    }

    /// The Kafka listeners to bind: `listeners`, or one PLAINTEXT listener on `listen`.
    pub fn listener_specs(&self) -> Result<Vec<ListenerSpec>, ConfigError> {
        if self.listeners.is_empty() {
            return Ok(vec![ListenerSpec {
                name: "PLAINTEXT".into(),
                protocol: SecurityProtocol::Plaintext,
                addr: self.listen.clone(),
            }]);
        }
        let mut specs: Vec<ListenerSpec> = Vec::with_capacity(self.listeners.len());
        for text in &self.listeners {
            let (name, addr) = text
                .split_once("://")
                .ok_or_else(|| ConfigError(format!("listener '{text}' is not NAME://host:port")))?;
            let name = name.trim().to_ascii_uppercase();
            let mapped = self.listener_security_protocol_map.iter().find_map(|m| {
                let (n, p) = m.split_once(':')?;
                (n.trim().eq_ignore_ascii_case(&name)).then(|| p.trim().to_string())
            });
            let protocol =
                SecurityProtocol::parse(mapped.as_deref().unwrap_or(&name)).ok_or_else(|| {
                    ConfigError(format!(
                        "listener '{text}': {name} is no security protocol (PLAINTEXT, SSL, \
                         SASL_PLAINTEXT, SASL_SSL) and not in listener_security_protocol_map"
                    ))
                })?;
            if specs.iter().any(|l| l.name == name) {
                return Err(ConfigError(format!("listener name {name} given twice")));
            }
            specs.push(ListenerSpec {
                name,
                protocol,
                addr: addr.trim().to_string(),
            });
        }
        Ok(specs)
    }

    /// Checks values that would otherwise fail later in a less clear way.
    // Long: mostly one table (the settings that must be positive, one line each), then two
    // cross-checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if !self.replica_selector_class.is_empty()
            && self.replica_selector_class != RACK_AWARE_REPLICA_SELECTOR
        {
            return Err(ConfigError(format!(
                "replica_selector_class must be empty or {RACK_AWARE_REPLICA_SELECTOR}, got {}",
                self.replica_selector_class
            )));
        }
        self.validate_security()?;
        self.admin_addr()?;
        self.http_addr()?;
        self.advertised_host_port()?;
        crate::security::ip_limit::IpLimits::parse(
            self.max_connections_per_ip,
            &self.max_connections_per_ip_overrides,
        )
        .map_err(|e| ConfigError(format!("max_connections_per_ip_overrides: {e}")))?;
        if self.max_connection_creation_rate == 0 {
            return Err(ConfigError(
                "Invalid max_connection_creation_rate 0 (at least 1)".into(),
            ));
        }
        for (listener, settings) in &self.listener_name {
            if settings.max_connection_creation_rate == Some(0) {
                return Err(ConfigError(format!(
                    "Invalid listener_name.{listener}.max_connection_creation_rate 0 (at least 1)"
                )));
            }
        }
        let positive = [
            ("default_partitions", self.default_partitions as i64),
            ("request_bytes_max", self.request_bytes_max as i64),
            (
                "connections_per_shard_max",
                self.connections_per_shard_max as i64,
            ),
            (
                "inflight_requests_per_connection_max",
                self.inflight_requests_per_connection_max as i64,
            ),
            (
                "inflight_request_bytes_per_shard_max",
                self.inflight_request_bytes_per_shard_max as i64,
            ),
            ("shard_queue_depth", self.shard_queue_depth as i64),
            (
                "connections_max_idle_ms",
                self.connections_max_idle_ms as i64,
            ),
            (
                "request_read_timeout_ms",
                self.request_read_timeout_ms as i64,
            ),
            ("io_memory_bytes", self.io_memory_bytes as i64),
            ("ring_depth", self.ring_depth as i64),
            ("log_segment_bytes", self.log_segment_bytes),
            ("message_max_bytes", self.message_max_bytes),
            ("group_max_size", i64::from(self.group_max_size)),
            (
                "group_min_session_timeout_ms",
                i64::from(self.group_min_session_timeout_ms),
            ),
            (
                "group_max_session_timeout_ms",
                i64::from(self.group_max_session_timeout_ms),
            ),
            (
                "group_consumer_session_timeout_ms",
                i64::from(self.group_consumer_session_timeout_ms),
            ),
            (
                "group_consumer_heartbeat_interval_ms",
                i64::from(self.group_consumer_heartbeat_interval_ms),
            ),
            ("offsets_retention_minutes", self.offsets_retention_minutes),
            (
                "offsets_retention_check_interval_ms",
                self.offsets_retention_check_interval_ms,
            ),
            (
                "transactional_id_expiration_ms",
                self.transactional_id_expiration_ms,
            ),
            (
                "transactional_id_expiration_check_interval_ms",
                self.transactional_id_expiration_check_interval_ms,
            ),
            (
                "offsets_topic_num_partitions",
                i64::from(self.offsets_topic_num_partitions),
            ),
            (
                "transaction_state_log_num_partitions",
                i64::from(self.transaction_state_log_num_partitions),
            ),
            (
                "leader_imbalance_check_interval_seconds",
                i64::try_from(self.leader_imbalance_check_interval_seconds).unwrap_or(i64::MAX),
            ),
            (
                "unclean_leader_election_interval_ms",
                i64::try_from(self.unclean_leader_election_interval_ms).unwrap_or(i64::MAX),
            ),
            (
                "produce_inflight_bytes_per_shard_max",
                self.produce_inflight_bytes_per_shard_max as i64,
            ),
            (
                "http_connections_per_shard_max",
                self.http_connections_per_shard_max as i64,
            ),
            ("http_request_bytes_max", self.http_request_bytes_max as i64),
            (
                "offsets_topic_replication_factor",
                i64::from(self.offsets_topic_replication_factor),
            ),
            (
                "offsets_commit_timeout_ms",
                i64::try_from(self.offsets_commit_timeout_ms).unwrap_or(i64::MAX),
            ),
            (
                "group_share_session_timeout_ms",
                i64::from(self.group_share_session_timeout_ms),
            ),
            (
                "group_share_heartbeat_interval_ms",
                i64::from(self.group_share_heartbeat_interval_ms),
            ),
            (
                "group_share_record_lock_duration_ms",
                self.group_share_record_lock_duration_ms,
            ),
            (
                "group_share_min_record_lock_duration_ms",
                self.group_share_min_record_lock_duration_ms,
            ),
            (
                "group_share_min_session_timeout_ms",
                i64::from(self.group_share_min_session_timeout_ms),
            ),
            (
                "group_share_min_heartbeat_interval_ms",
                i64::from(self.group_share_min_heartbeat_interval_ms),
            ),
            (
                "group_share_delivery_count_limit",
                i64::from(self.group_share_delivery_count_limit),
            ),
            (
                "group_share_partition_max_record_locks",
                self.group_share_partition_max_record_locks as i64,
            ),
            (
                "group_share_max_share_sessions",
                self.group_share_max_share_sessions as i64,
            ),
            (
                "transaction_state_log_replication_factor",
                i64::from(self.transaction_state_log_replication_factor),
            ),
            (
                "transaction_state_log_min_isr",
                i64::from(self.transaction_state_log_min_isr),
            ),
            (
                "share_coordinator_state_topic_num_partitions",
                i64::from(self.share_coordinator_state_topic_num_partitions),
            ),
            (
                "share_coordinator_state_topic_replication_factor",
                i64::from(self.share_coordinator_state_topic_replication_factor),
            ),
            (
                "share_coordinator_state_topic_min_isr",
                i64::from(self.share_coordinator_state_topic_min_isr),
            ),
        ];
        for (name, value) in positive {
            if value <= 0 {
                return Err(ConfigError(format!("{name} must be positive, got {value}")));
            }
        }
        for (name, value) in [
            (
                "offsets_topic_num_partitions",
                self.offsets_topic_num_partitions,
            ),
            (
                "transaction_state_log_num_partitions",
                self.transaction_state_log_num_partitions,
            ),
            (
                "share_coordinator_state_topic_num_partitions",
                self.share_coordinator_state_topic_num_partitions,
            ),
        ] {
            if value > INTERNAL_TOPIC_PARTITIONS_MAX {
                return Err(ConfigError(format!(
                    "{name} must be at most {INTERNAL_TOPIC_PARTITIONS_MAX}, got {value}"
                )));
            }
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return Err(ConfigError(
                "group_min_session_timeout_ms must not exceed group_max_session_timeout_ms".into(),
            ));
        }
        if self.leader_imbalance_per_broker_percentage > 100 {
            return Err(ConfigError(format!(
                "leader_imbalance_per_broker_percentage must be at most 100, got {}",
                self.leader_imbalance_per_broker_percentage
            )));
        }
        if !["earliest", "latest"].contains(&self.share_auto_offset_reset.as_str()) {
            return Err(ConfigError(format!(
                "share_auto_offset_reset must be earliest or latest, got {}",
                self.share_auto_offset_reset
            )));
        }
        // Kafka's checks of the share-group bounds (`GroupCoordinatorConfig`, `ShareGroupConfig`):
        // each default within its min and max.
        let bounds = [
            (
                "group_share_record_lock_duration_ms",
                self.group_share_min_record_lock_duration_ms,
                self.group_share_record_lock_duration_ms,
                self.group_share_max_record_lock_duration_ms,
            ),
            (
                "group_share_session_timeout_ms",
                i64::from(self.group_share_min_session_timeout_ms),
                i64::from(self.group_share_session_timeout_ms),
                i64::from(self.group_share_max_session_timeout_ms),
            ),
            (
                "group_share_heartbeat_interval_ms",
                i64::from(self.group_share_min_heartbeat_interval_ms),
                i64::from(self.group_share_heartbeat_interval_ms),
                i64::from(self.group_share_max_heartbeat_interval_ms),
            ),
        ];
        for (name, min, value, max) in bounds {
            let (min_name, max_name) = (
                name.replacen("group_share_", "group_share_min_", 1),
                name.replacen("group_share_", "group_share_max_", 1),
            );
            if !(min <= value && value <= max) {
                return Err(ConfigError(format!(
                    "{name} ({value}) must be between {min_name} ({min}) and {max_name} ({max})"
                )));
            }
        }
        if self.group_share_partition_max_record_locks > 100_000 {
            return Err(ConfigError(
                "group_share_partition_max_record_locks must be at most 100000".into(),
            ));
        }
        if self.request_bytes_max > i32::MAX as usize {
            return Err(ConfigError("request_bytes_max must fit in an i32".into()));
        }
        Ok(())
    }
}

/// A listener's security protocol (Kafka's `SecurityProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// From Kafka's name (case-insensitive).
    pub fn parse(text: &str) -> Option<SecurityProtocol> {
        Some(match text.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    /// Does the listener speak TLS?
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Must its clients authenticate with SASL?
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// How a broker connects to the other brokers ([`BrokerConfig::inter_broker`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterBrokerSettings {
    /// The listener's name: other brokers are called at their advertised address on it.
    pub listener: String,
    pub protocol: SecurityProtocol,
    /// The mechanism and credentials on a SASL listener.
    pub sasl: Option<crate::security::sasl::client::ClientCredentials>,
}

/// One Kafka listener: its name, security protocol and bind address (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub addr: String,
}

impl ListenerSpec {
    /// The bind address, resolved.
    pub fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        resolve(&self.addr)
    }
}

/// The SASL mechanisms Freshet serves.
pub const SASL_MECHANISMS_SERVED: [&str; 4] =
    ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

impl BrokerConfig {
    /// The listener, TLS and SASL settings: listeners parse and resolve, TLS listeners have a
    /// certificate and key, client authentication has a CA, mechanisms are served ones.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let specs = self.listener_specs()?;
        for spec in &specs {
            spec.socket_addr()?;
            self.advertised_host_port_of(&spec.name)?;
        }
        for text in &self.advertised_listeners {
            let (name, _) = text.split_once("://").ok_or_else(|| {
                ConfigError(format!(
                    "advertised listener '{text}' is not NAME://host:port"
                ))
            })?;
            if !specs
                .iter()
                .any(|l| l.name.eq_ignore_ascii_case(name.trim()))
            {
                return Err(ConfigError(format!(
                    "advertised listener '{text}' names no listener"
                )));
            }
        }
        if specs.iter().any(|l| l.protocol.tls()) {
            if self.ssl_certificate_file.as_os_str().is_empty()
                || self.ssl_key_file.as_os_str().is_empty()
            {
                return Err(ConfigError(
                    "an SSL or SASL_SSL listener needs ssl_certificate_file and ssl_key_file"
                        .into(),
                ));
            }
            match self.ssl_client_auth.as_str() {
                "none" => {}
                "requested" | "required" if !self.ssl_ca_file.as_os_str().is_empty() => {}
                "requested" | "required" => {
                    return Err(ConfigError(
                        "ssl_client_auth requested/required needs ssl_ca_file".into(),
                    ))
                }
                other => {
                    return Err(ConfigError(format!(
                        "ssl_client_auth must be none, requested or required, got '{other}'"
                    )))
                }
            }
        }
        for mechanism in &self.sasl_enabled_mechanisms {
            if !SASL_MECHANISMS_SERVED.contains(&mechanism.as_str()) {
                return Err(ConfigError(format!(
                    "sasl_enabled_mechanisms: {mechanism} is not served (only {})",
                    SASL_MECHANISMS_SERVED.join(", ")
                )));
            }
        }
        if specs.iter().any(|l| l.protocol.sasl()) && self.sasl_enabled_mechanisms.is_empty() {
            return Err(ConfigError(
                "a SASL listener needs at least one of sasl_enabled_mechanisms".into(),
            ));
        }
        if specs.iter().any(|l| l.protocol.sasl()) {
            self.oauth_mode()?;
        }
        // Only a node of a cluster calls other brokers: a single node's listeners need no
        // inter-broker credentials (its settings stay valid as before).
        if self.in_cluster() {
            self.inter_broker()?;
        }
        self.controller_protocol()?;
        Ok(())
    }

    /// The security protocol of the controller listener (and of this node's links to the
    /// other nodes' controller listeners): `controller_listener_names`' first name, mapped by
    /// `listener_security_protocol_map` or itself a protocol; PLAINTEXT when none is named.
    /// Only PLAINTEXT and SSL are served (no SASL on the controller transport); SSL needs
    /// `ssl_certificate_file`, `ssl_key_file` and `ssl_ca_file`.
    pub fn controller_protocol(&self) -> Result<SecurityProtocol, ConfigError> {
        let Some(name) = self
            .controller_listener_names
            .iter()
            .map(|n| n.trim())
            .find(|n| !n.is_empty())
        else {
            return Ok(SecurityProtocol::Plaintext);
        };
        if self
            .listener_specs()?
            .iter()
            .any(|l| l.name.eq_ignore_ascii_case(name))
        {
            return Err(ConfigError(format!(
                "controller_listener_names: {name} is also one of listeners; the controller \
                 listener binds controller_listen (or this node's address in \
                 controller_quorum_voters), not a Kafka listener"
            )));
        }
        let mapped = self.listener_security_protocol_map.iter().find_map(|m| {
            let (n, p) = m.split_once(':')?;
            (n.trim().eq_ignore_ascii_case(name)).then(|| p.trim().to_string())
        });
        let protocol =
            SecurityProtocol::parse(mapped.as_deref().unwrap_or(name)).ok_or_else(|| {
                ConfigError(format!(
                "controller_listener_names: {name} is no security protocol (PLAINTEXT, SSL) and \
                 not in listener_security_protocol_map"
            ))
            })?;
        match protocol {
            SecurityProtocol::Plaintext => {}
            SecurityProtocol::Ssl => {
                if self.ssl_certificate_file.as_os_str().is_empty()
                    || self.ssl_key_file.as_os_str().is_empty()
                    || self.ssl_ca_file.as_os_str().is_empty()
                {
                    return Err(ConfigError(format!(
                        "the controller listener {name} is SSL: set ssl_certificate_file, \
                         ssl_key_file (this node's certificate, presented both ways) and \
                         ssl_ca_file (the CA the other nodes' certificates are verified against)"
                    )));
                }
            }
            other => {
                return Err(ConfigError(format!(
                    "the controller listener {name} is {other:?}: only PLAINTEXT and SSL are \
                     served on the controller listener (no SASL)"
                )))
            }
        }
        Ok(protocol)
    }

    /// Is this node part of a quorum of several nodes (`controller_quorum_voters` set)?
    pub fn in_cluster(&self) -> bool {
        !self.controller_quorum_voters.trim().is_empty()
    }

    /// The connection-creation rate limits (KIP-612) the acceptor of listener `name` applies:
    /// `max_connection_creation_rate`, the listener's own
    /// `listener_name.<name>.max_connection_creation_rate`, and whether it is the protected
    /// inter-broker listener (several listeners, this one inter-broker: the broker-wide limit
    /// does not apply to it, as Kafka's `ConnectionQuotas.protectedListener`).
    pub fn accept_limits(&self, name: &str) -> crate::security::conn_rate::AcceptLimits {
        let listeners = self.listener_specs().map_or(1, |specs| specs.len());
        let protected = listeners > 1
            && self
                .inter_broker()
                .is_ok_and(|ib| ib.listener.eq_ignore_ascii_case(name));
        let own = self
            .listener_name
            .iter()
            .find(|(l, _)| l.eq_ignore_ascii_case(name))
            .and_then(|(_, c)| c.max_connection_creation_rate)
            .unwrap_or(crate::security::conn_rate::UNLIMITED);
        crate::security::conn_rate::AcceptLimits::new(
            name,
            self.max_connection_creation_rate,
            own,
            protected,
        )
    }

    /// How this broker connects to the other brokers (module `cluster::inter_broker`): the
    /// listener (Kafka's `inter.broker.listener.name`, or the one named by
    /// `security.inter.broker.protocol`, else the first), its security protocol, and on a
    /// SASL listener the mechanism and credentials from `listener_name`.
    pub fn inter_broker(&self) -> Result<InterBrokerSettings, ConfigError> {
        let specs = self.listener_specs()?;
        let by_name = self.inter_broker_listener_name.trim();
        let by_protocol = self.security_inter_broker_protocol.trim();
        let name = match (by_name.is_empty(), by_protocol.is_empty()) {
            (false, false) => {
                return Err(ConfigError(
                    "Only one of inter_broker_listener_name and security_inter_broker_protocol should be set.".into(),
                ))
            }
            (false, true) => by_name,
            (true, false) => {
                if SecurityProtocol::parse(by_protocol).is_none() {
                    return Err(ConfigError(format!(
                        "security_inter_broker_protocol: {by_protocol} is no security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)"
                    )));
                }
                by_protocol
            }
            (true, true) => specs[0].name.as_str(),
        };
        let spec = specs
            .iter()
            .find(|l| l.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                ConfigError(format!(
                    "the inter-broker listener {name} is not one of listeners"
                ))
            })?;
        let sasl = if spec.protocol.sasl() {
            let mechanism = self.sasl_mechanism_inter_broker_protocol.trim();
            let served = crate::security::sasl::client::CLIENT_MECHANISMS;
            if !served.contains(&mechanism) {
                return Err(ConfigError(format!(
                    "sasl_mechanism_inter_broker_protocol: {mechanism} (a broker authenticates with {})",
                    served.join(", ")
                )));
            }
            if !self.sasl_enabled_mechanisms.iter().any(|m| m == mechanism) {
                return Err(ConfigError(format!(
                    "sasl_mechanism_inter_broker_protocol {mechanism} is not in sasl_enabled_mechanisms"
                )));
            }
            let (listener, lower) = (
                spec.name.to_ascii_lowercase(),
                mechanism.to_ascii_lowercase(),
            );
            let key = format!("listener_name.{listener}.{lower}.sasl_jaas_config");
            let jaas = self
                .listener_name
                .iter()
                .find(|(l, _)| l.eq_ignore_ascii_case(&listener))
                .and_then(|(_, m)| {
                    m.mechanisms
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(&lower))
                })
                .map(|(_, c)| c.sasl_jaas_config.as_str())
                .filter(|j| !j.trim().is_empty())
                .ok_or_else(|| {
                    ConfigError(format!(
                        "the inter-broker listener {} is {:?}: set {key} (the broker's username and password)",
                        spec.name, spec.protocol
                    ))
                })?;
            let (username, password) = crate::security::sasl::client::jaas_credentials(jaas)
                .map_err(|e| ConfigError(format!("{key}: {e}")))?;
            Some(crate::security::sasl::client::ClientCredentials {
                mechanism: mechanism.to_string(),
                username,
                password,
            })
        } else {
            None
        };
        if spec.protocol.tls() && self.ssl_ca_file.as_os_str().is_empty() {
            return Err(ConfigError(format!(
                "the inter-broker listener {} uses TLS: set ssl_ca_file (the CA the brokers' certificates are verified against)",
                spec.name
            )));
        }
        Ok(InterBrokerSettings {
            listener: spec.name.clone(),
            protocol: spec.protocol,
            sasl,
        })
    }

    /// How OAUTHBEARER tokens are validated: `None` when OAUTHBEARER is not enabled; an error
    /// when it is enabled without exactly one of a JWKS file and the unsecured validator.
    pub fn oauth_mode(&self) -> Result<Option<crate::security::oauth::OAuthMode>, ConfigError> {
        use crate::security::oauth::{jwks_file_of_url, OAuthMode};
        if !self
            .sasl_enabled_mechanisms
            .iter()
            .any(|m| m == "OAUTHBEARER")
        {
            return Ok(None);
        }
        let url = self.sasl_oauthbearer_jwks_endpoint_url.trim();
        match (url.is_empty(), self.sasl_oauthbearer_unsecured_validator_enabled) {
            (true, false) => Err(ConfigError(
                "sasl_enabled_mechanisms has OAUTHBEARER: set sasl_oauthbearer_jwks_endpoint_url (signed tokens) or sasl_oauthbearer_unsecured_validator_enabled = true (unsecured tokens, for tests)".into(),
            )),
            (false, true) => Err(ConfigError(
                "sasl_oauthbearer_jwks_endpoint_url and sasl_oauthbearer_unsecured_validator_enabled exclude each other".into(),
            )),
            (true, true) => Ok(Some(OAuthMode::Unsecured {
                principal_claim: self
                    .sasl_oauthbearer_unsecured_validator_principal_claim_name
                    .clone(),
                scope_claim: self.sasl_oauthbearer_unsecured_validator_scope_claim_name.clone(),
                required_scope: self.sasl_oauthbearer_unsecured_validator_required_scope.clone(),
                clock_skew_ms: self
                    .sasl_oauthbearer_unsecured_validator_allowable_clock_skew_ms
                    .max(0),
            })),
            (false, false) => Ok(Some(OAuthMode::Signed {
                jwks_file: jwks_file_of_url(url).map_err(ConfigError)?,
                expected_audience: self.sasl_oauthbearer_expected_audience.clone(),
                expected_issuer: Some(self.sasl_oauthbearer_expected_issuer.trim())
                    .filter(|s| !s.is_empty())
                    .map(String::from),
                sub_claim: self.sasl_oauthbearer_sub_claim_name.clone(),
                scope_claim: self.sasl_oauthbearer_scope_claim_name.clone(),
                clock_skew_s: self.sasl_oauthbearer_clock_skew_seconds.max(0),
            })),
        }
    }
}

/// The `host:port` that `advertised` gives listener `name`, if it names it.
fn advertised_listener_addr(
    advertised: &[String],
    name: &str,
) -> Result<Option<String>, ConfigError> {
    for text in advertised {
        let (n, addr) = text.split_once("://").ok_or_else(|| {
            ConfigError(format!(
                "advertised listener '{text}' is not NAME://host:port"
            ))
        })?;
        if n.trim().eq_ignore_ascii_case(name) {
            return Ok(Some(addr.trim().to_string()));
        }
    }
    Ok(None)
}

/// `host:port` as advertised: a wildcard or empty host becomes `localhost`.
fn host_port(text: &str) -> Result<(String, i32), ConfigError> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| ConfigError(format!("advertise '{text}' is not host:port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| ConfigError(format!("advertise '{text}' has a bad port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() || host == "0.0.0.0" {
        "localhost"
    } else {
        host
    };
    Ok((host.to_string(), i32::from(port)))
}

/// Resolves `host:port` to one socket address (IPv4 preferred, as for `localhost`).
pub fn resolve(text: &str) -> Result<SocketAddr, ConfigError> {
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| ConfigError(format!("cannot resolve listen address '{text}': {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| ConfigError(format!("listen address '{text}' resolves to nothing")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_listen_on_localhost_9092() {
        let config = BrokerConfig::default();
        config.validate().unwrap();
        assert_eq!(config.listen_addr().unwrap().port(), 9092);
        assert_eq!(config.admin_addr().unwrap().unwrap().port(), 9644);
        let off = BrokerConfig {
            admin_listen: "off".into(),
            ..BrokerConfig::default()
        };
        assert_eq!(off.admin_addr().unwrap(), None);
        assert_eq!(
            config.advertised_host_port().unwrap(),
            ("localhost".to_string(), 9092)
        );
    }

    /// Kafka's checks of the share-group settings: each default within its min and max.
    #[test]
    fn share_group_defaults_must_lie_within_their_bounds() {
        let low_lock = BrokerConfig {
            group_share_record_lock_duration_ms: 3_000,
            ..BrokerConfig::default()
        };
        let e = low_lock.validate().unwrap_err().0;
        assert!(
            e.contains("group_share_min_record_lock_duration_ms (15000)"),
            "{e}"
        );
        let lowered = BrokerConfig {
            group_share_min_record_lock_duration_ms: 1_000,
            ..low_lock
        };
        lowered.validate().unwrap();
        let long_session = BrokerConfig {
            group_share_session_timeout_ms: 70_000,
            ..BrokerConfig::default()
        };
        assert!(long_session.validate().is_err());
    }

    /// KIP-392: no selector by default; Kafka's rack-aware one is the only other accepted.
    #[test]
    fn replica_selector_class_is_empty_or_the_rack_aware_selector() {
        assert_eq!(BrokerConfig::default().replica_selector_class, "");
        let with = |class: &str| BrokerConfig {
            replica_selector_class: class.into(),
            ..BrokerConfig::default()
        };
        with(RACK_AWARE_REPLICA_SELECTOR).validate().unwrap();
        let err = with("org.example.MySelector").validate().unwrap_err();
        assert!(err.0.contains("replica_selector_class"), "{}", err.0);
        let parsed: BrokerConfig = toml::from_str(&format!(
            "replica_selector_class = \"{RACK_AWARE_REPLICA_SELECTOR}\""
        ))
        .unwrap();
        assert_eq!(parsed.replica_selector_class, RACK_AWARE_REPLICA_SELECTOR);
    }

    /// Kafka's internal-topic partition counts: 50 each by default, positive, bounded.
    #[test]
    fn coordinator_topic_partition_counts_default_to_kafkas_and_are_bounded() {
        let config = BrokerConfig::default();
        assert_eq!(config.offsets_topic_num_partitions, 50);
        assert_eq!(config.transaction_state_log_num_partitions, 50);
        for bad in [0, -1, INTERNAL_TOPIC_PARTITIONS_MAX + 1] {
            let c = BrokerConfig {
                offsets_topic_num_partitions: bad,
                ..BrokerConfig::default()
            };
            assert!(c.validate().is_err(), "{bad}");
            let c = BrokerConfig {
                transaction_state_log_num_partitions: bad,
                ..BrokerConfig::default()
            };
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    /// Kafka's group settings: `group.max.size` unlimited by default; the session bounds must
    /// be ordered.
    #[test]
    fn group_settings_default_as_kafka_and_are_checked() {
        let config = BrokerConfig::default();
        assert_eq!(config.group_max_size, i32::MAX);
        assert_eq!(
            (
                config.group_min_session_timeout_ms,
                config.group_max_session_timeout_ms
            ),
            (6_000, 1_800_000)
        );
        let config: BrokerConfig =
            toml::from_str("group_max_size = 5\ngroup_min_session_timeout_ms = 5000\n").unwrap();
        config.validate().unwrap();
        assert_eq!(config.group_max_size, 5);
        let bad = BrokerConfig {
            group_min_session_timeout_ms: 10_000,
            group_max_session_timeout_ms: 9_000,
            ..BrokerConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = BrokerConfig {
            group_max_size: 0,
            ..BrokerConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let config: BrokerConfig =
            toml::from_str("listen = \"127.0.0.1:19092\"\nshards = 2\n").unwrap();
        assert_eq!(config.shards, 2);
        assert_eq!(config.listen_addr().unwrap().port(), 19092);
        assert!(toml::from_str::<BrokerConfig>("no_such_key = 1").is_err());
    }

    /// `controller_listener_names`: PLAINTEXT by default; the name's protocol from the map
    /// or the name itself; SSL needs the three `ssl_*` files; SASL is not served; the name
    /// cannot also be a Kafka listener.
    #[test]
    fn the_controller_listener_protocol_is_checked() {
        let plain = BrokerConfig::default();
        assert_eq!(
            plain.controller_protocol().unwrap(),
            SecurityProtocol::Plaintext
        );
        let ssl: BrokerConfig = toml::from_str(
            "controller_listener_names = [\"CONTROLLER\"]\n\
             listener_security_protocol_map = [\"CONTROLLER:SSL\"]\n\
             ssl_certificate_file = \"c.pem\"\nssl_key_file = \"k.pem\"\nssl_ca_file = \"ca.pem\"\n",
        )
        .unwrap();
        ssl.validate().unwrap();
        assert_eq!(ssl.controller_protocol().unwrap(), SecurityProtocol::Ssl);
        let bare = BrokerConfig {
            controller_listener_names: vec!["SSL".into()],
            listener_security_protocol_map: Vec::new(),
            ..ssl.clone()
        };
        assert_eq!(bare.controller_protocol().unwrap(), SecurityProtocol::Ssl);
        let no_ca = BrokerConfig {
            ssl_ca_file: PathBuf::new(),
            ..ssl.clone()
        };
        assert!(no_ca.validate().unwrap_err().0.contains("ssl_ca_file"));
        let sasl = BrokerConfig {
            listener_security_protocol_map: vec!["CONTROLLER:SASL_SSL".into()],
            ..ssl.clone()
        };
        assert!(sasl
            .validate()
            .unwrap_err()
            .0
            .contains("only PLAINTEXT and SSL"));
        let unmapped = BrokerConfig {
            listener_security_protocol_map: Vec::new(),
            ..ssl.clone()
        };
        assert!(unmapped.validate().is_err());
        let also_kafka = BrokerConfig {
            listeners: vec!["CONTROLLER://127.0.0.1:19093".into()],
            ..ssl
        };
        assert!(also_kafka
            .validate()
            .unwrap_err()
            .0
            .contains("also one of listeners"));
    }

    /// Kafka's listener syntax: each listener's protocol from its name or the map, its
    /// advertised address from `advertised_listeners` (or its own), TLS needs a certificate.
    #[test]
    fn listeners_parse_as_kafkas_and_are_checked() {
        let config: BrokerConfig = toml::from_str(
            "listeners = [\"PLAINTEXT://127.0.0.1:19092\", \"SASL_SSL://0.0.0.0:19093\", \"INTERNAL://127.0.0.1:19094\"]\n\
             advertised_listeners = [\"SASL_SSL://broker.example:9093\"]\n\
             listener_security_protocol_map = [\"INTERNAL:SSL\"]\n\
             ssl_certificate_file = \"c.pem\"\nssl_key_file = \"k.pem\"\n",
        )
        .unwrap();
        config.validate().unwrap();
        let specs = config.listener_specs().unwrap();
        let protocols: Vec<_> = specs
            .iter()
            .map(|l| (l.name.as_str(), l.protocol))
            .collect();
        assert_eq!(
            protocols,
            [
                ("PLAINTEXT", SecurityProtocol::Plaintext),
                ("SASL_SSL", SecurityProtocol::SaslSsl),
                ("INTERNAL", SecurityProtocol::Ssl)
            ]
        );
        assert_eq!(
            config.advertised_host_port_of("SASL_SSL").unwrap(),
            ("broker.example".to_string(), 9093)
        );
        assert_eq!(
            config.advertised_host_port_of("INTERNAL").unwrap(),
            ("127.0.0.1".to_string(), 19094)
        );
        assert_eq!(
            config.advertised_host_port().unwrap(),
            ("127.0.0.1".to_string(), 19092)
        );
        let no_cert = BrokerConfig {
            ssl_certificate_file: PathBuf::new(),
            ..config.clone()
        };
        assert!(no_cert.validate().is_err());
        let bad_auth = BrokerConfig {
            ssl_client_auth: "required".into(),
            ..config.clone()
        };
        assert!(bad_auth.validate().is_err(), "required without a CA");
        let unknown = BrokerConfig {
            listeners: vec!["FOO://127.0.0.1:1".into()],
            ..BrokerConfig::default()
        };
        assert!(unknown.validate().is_err());
        let mechanism = BrokerConfig {
            sasl_enabled_mechanisms: vec!["GSSAPI".into()],
            ..BrokerConfig::default()
        };
        assert!(mechanism.validate().is_err());
        // The default stays one PLAINTEXT listener on localhost:9092.
        let default = BrokerConfig::default().listener_specs().unwrap();
        assert_eq!(default.len(), 1);
        assert_eq!(default[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(default[0].addr, "localhost:9092");
    }
    #[test]
    fn authorizer_is_off_by_default_and_reads_on_off() {
        let d = BrokerConfig::default();
        assert!(!d.authorizer && !d.allow_everyone_if_no_acl_found && d.super_users.is_empty());
        let on: BrokerConfig =
            toml::from_str("authorizer = \"on\"\nsuper_users = \"User:admin;User:ops\"\n").unwrap();
        assert!(on.authorizer);
        assert_eq!(on.super_users, "User:admin;User:ops");
        assert!(
            toml::from_str::<BrokerConfig>("authorizer = true")
                .unwrap()
                .authorizer
        );
        assert!(
            !toml::from_str::<BrokerConfig>("authorizer = \"off\"")
                .unwrap()
                .authorizer
        );
        assert!(toml::from_str::<BrokerConfig>("authorizer = \"maybe\"").is_err());
    }

    /// The HTTP listener is off by default; a port alone is loopback.
    #[test]
    fn http_listen_is_off_by_default_and_a_port_means_loopback() {
        assert_eq!(BrokerConfig::default().http_addr().unwrap(), None);
        let c: BrokerConfig = toml::from_str("http_listen = \"8082\"").unwrap();
        assert_eq!(
            c.http_addr().unwrap(),
            Some("127.0.0.1:8082".parse().unwrap())
        );
        let c: BrokerConfig = toml::from_str("http_listen = \"0.0.0.0:8083\"").unwrap();
        assert_eq!(
            c.http_addr().unwrap(),
            Some("0.0.0.0:8083".parse().unwrap())
        );
        let bad = BrokerConfig {
            http_listen: "nonsense".into(),
            ..BrokerConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
