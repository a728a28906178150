//! The metadata quorum on this node (coordinator shard only): the Raft node of a voter, the
//! controller listener, broker heartbeats, and the active controller's duties.
//!
//! - **Voters** (a node listed in `controller_quorum_voters`, or a single node, its own one
//!   voter) run a [`QuorumNode`] on the coordinator shard. Its applied metadata is published
//!   to every shard by one publisher task, in version order ([`Controller::await_published`]
//!   lets a change wait until its own version is everywhere).
//! - **Broker-only** nodes have no Raft node: they poll the active controller for newer
//!   metadata (`FetchMetadata`) and forward every change.
//! - **Changes** (`Shard::change_metadata`): on the active controller they are decided against
//!   its applied metadata and proposed as one Raft entry, answered once committed, applied and
//!   published here; elsewhere they are forwarded to it (`ControllerRequest::Change`, Kafka's
//!   forwarding) and a node that cannot reach one answers NOT_CONTROLLER (retriable).
//! - **Brokers**: every node heartbeats to the active controller every
//!   `broker_heartbeat_interval_ms`; the active controller registers, fences (silent for
//!   `broker_session_timeout_ms`, or shutting down) and unfences brokers through the log
//!   (`cluster::liveness`). On SIGTERM a node tells the controller it is shutting down
//!   (Kafka's controlled shutdown: it is fenced, and the leadership of its partitions moves to
//!   other in-sync replicas in the same change) and waits, still serving, until its installed
//!   metadata shows it leads nothing (at most [`CONTROLLED_SHUTDOWN_WAIT`]) before its
//!   listener closes ([`Shard::controlled_shutdown`], called by the signal handler first).
//! - **Leader balancing**: the active controller moves leadership back to preferred replicas
//!   every `leader_imbalance_check_interval_seconds` when a broker's share of partitions led
//!   elsewhere passes `leader_imbalance_per_broker_percentage` (Kafka's
//!   `auto.leader.rebalance.enable`); and every `unclean_leader_election_interval_ms` it gives
//!   leaderless partitions of topics with `unclean.leader.election.enable` a live replica.
//!
//! Bounds: one call per heartbeat interval per node; forwarded changes wait at most
//! [`FORWARD_TIMEOUT`]; the transport's own bounds (frames, queues) are in `cluster::transport`.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use crate::cluster::liveness::{registration_of, BrokerSessions};
use crate::cluster::node::{NodeSettings, ProposeError, QuorumNode};
use crate::cluster::raft_log::{raft_log_dir, RaftLog};
use crate::cluster::transport::{CallHandler, ControllerTransport, TransportLimits};
use crate::cluster::{
    node_id_of, BrokerHeartbeat, ControllerRequest, ControllerResponse, ForwardedError,
    QuorumConfig, QuorumStatus,
};
use crate::coordinator::metadata::ListenerEndpoint;
use crate::coordinator::metadata::{
    ClusterMetadata, Election, MetadataCommand, MetadataError, MetadataRecord,
    PRODUCER_ID_BLOCK_SIZE,
};
use crate::rt::Task;
use crate::shard::{Notify, Shard};

/// How long a forwarded change may take before NOT_CONTROLLER is answered.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new active controller waits to apply its term's first entry before it answers
/// NOT_CONTROLLER to a change.
pub const LEADER_READY_WAIT: Duration = Duration::from_secs(3);
/// How often the active controller looks for brokers whose session expired.
const SESSION_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How often a broker-only node asks for newer metadata.
const METADATA_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long the controller listener's bind waits out a killed process's socket.
const CONTROLLER_BIND_WAIT: Duration = Duration::from_secs(5);
/// How often a broker heartbeats while it is not registered and unfenced.
const REGISTRATION_RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// How long the controlled shutdown's last heartbeat may take.
const SHUTDOWN_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a controlled shutdown waits, at most, for the metadata to show that this broker
/// leads no partition any more (it keeps serving meanwhile).
pub const CONTROLLED_SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// How often the controlled shutdown looks at the installed metadata (and repeats its
/// heartbeat, in case the active controller changed).
const CONTROLLED_SHUTDOWN_POLL: Duration = Duration::from_millis(50);
/// How long a broker that handed its leaderships over keeps answering before its listener
/// closes: clients' requests in flight to it get NOT_LEADER_OR_FOLLOWER naming the new leader
/// (KIP-951), and move there at once, instead of a closed connection.
pub const CONTROLLED_SHUTDOWN_LINGER: Duration = Duration::from_millis(250);
/// The most preferred-leader elections one round of automatic leader balancing proposes
/// (Kafka's `maxElectionsPerImbalance` is 1000); the rest wait for the next round.
pub const LEADER_BALANCE_ELECTIONS_MAX: usize = 1000;

/// The quorum on this node; lives on the coordinator shard.
pub struct Controller {
    quorum: QuorumConfig,
    node: Option<Rc<QuorumNode>>,
    pub(super) transport: Option<Rc<ControllerTransport>>,
    incarnation_id: uuid::Uuid,
    /// The active controller's broker sessions; `Some` only while this node leads.
    sessions: RefCell<Option<BrokerSessions>>,
    /// The newest metadata applied here and not yet published (set by the apply hook).
    pending: RefCell<Option<Arc<ClusterMetadata>>>,
    applied_notify: Notify,
    /// The version every shard has installed.
    published_version: Cell<u64>,
    published_notify: Notify,
    /// The last active controller heard of (a broker-only node's hint).
    leader_hint: Cell<Option<i32>>,
    /// Set once a controlled shutdown began: every later heartbeat says so, so that the
    /// heartbeat loop does not unfence the broker again while it drains.
    shutting_down: Cell<bool>,
    tasks: RefCell<Vec<Task<()>>>,
}

impl Controller {
    /// Whether this node is the active controller, ready to decide changes.
    pub fn is_active(&self) -> bool {
        self.node
            .as_ref()
            .is_some_and(|n| n.leader() == Some(self.quorum.node_id))
    }

    /// The active controller this node knows of.
    pub fn leader(&self) -> Option<i32> {
        match &self.node {
            Some(node) => node.leader(),
            None => self.leader_hint.get(),
        }
    }

    /// Whether this process's broker is registered (under this start's incarnation) and
    /// unfenced in `metadata`.
    pub fn is_registered_in(&self, metadata: &ClusterMetadata) -> bool {
        metadata
            .brokers
            .get(&self.quorum.node_id)
            .is_some_and(|b| b.incarnation_id == self.incarnation_id && !b.fenced)
    }

    /// The quorum as this node sees it (DescribeQuorum).
    pub fn status(&self) -> QuorumStatus {
        match &self.node {
            Some(node) => node.status(),
            None => QuorumStatus {
                leader_id: self.leader_hint.get(),
                ..QuorumStatus::default()
            },
        }
    }

    /// The metadata the Raft node applied (a voter), or what this node installed.
    fn applied(&self, shard: &Shard) -> Arc<ClusterMetadata> {
        match &self.node {
            Some(node) => node.applied(),
            None => shard.metadata(),
        }
    }

    /// Waits until every shard has installed metadata of at least `version`.
    pub async fn await_published(&self, version: u64) {
        self.published_notify
            .until(|| self.published_version.get() >= version)
            .await;
    }

    fn heartbeat(&self, shard: &Shard, shutting_down: bool) -> Option<BrokerHeartbeat> {
        let shutting_down = shutting_down || self.shutting_down.get();
        own_heartbeat(&shard.config, self.incarnation_id, shutting_down).ok()
    }

    /// The active controller's broker sessions, started (every broker given a full session)
    /// on first use after this node became the active controller.
    fn sessions<T>(
        &self,
        shard: &Shard,
        applied: &ClusterMetadata,
        f: impl FnOnce(&mut BrokerSessions) -> T,
    ) -> T {
        let mut sessions = self.sessions.borrow_mut();
        let sessions = sessions.get_or_insert_with(|| {
            BrokerSessions::new(shard.config.broker_session_timeout_ms, now_ms(), applied)
        });
        f(sessions)
    }
}

/// This broker's heartbeat: its node id, this start's incarnation, its advertised listener and
/// rack.
fn own_heartbeat(
    config: &crate::config::BrokerConfig,
    incarnation_id: uuid::Uuid,
    shutting_down: bool,
) -> Result<BrokerHeartbeat, crate::config::ConfigError> {
    let (host, port) = config.advertised_host_port()?;
    let rack = config.broker_rack.trim();
    let mut listeners = Vec::new();
    for spec in config.listener_specs()? {
        let (host, port) = config.advertised_host_port_of(&spec.name)?;
        listeners.push(ListenerEndpoint {
            name: spec.name,
            host,
            port,
        });
    }
    Ok(BrokerHeartbeat {
        node_id: config.node_id,
        incarnation_id,
        host,
        port,
        rack: (!rack.is_empty()).then(|| rack.to_string()),
        shutting_down,
        listeners,
    })
}

/// The controller transport's TLS settings when the controller listener is SSL
/// (`controller_listener_names`): the listener requires a client certificate from
/// `ssl_ca_file`, outbound links present this node's certificate and verify the peer's, and
/// either side's principal must be a super user or allowed CLUSTER_ACTION on the cluster by
/// the ACLs of the metadata as this node knows them (Kafka's check of the controller APIs).
/// `None` for PLAINTEXT.
fn controller_security(
    config: &crate::config::BrokerConfig,
    shard: Weak<Shard>,
) -> Result<Option<crate::cluster::transport::TransportSecurity>, String> {
    use crate::config::SecurityProtocol;
    use crate::security::tls::{ClientAuth, Reloading, ReloadingClient, TlsFiles};
    match config.controller_protocol().map_err(|e| e.to_string())? {
        SecurityProtocol::Ssl => {}
        _ => return Ok(None),
    }
    let files = TlsFiles {
        certificate: config.ssl_certificate_file.clone(),
        key: config.ssl_key_file.clone(),
        ca: config.ssl_ca_file.clone(),
        client_auth: ClientAuth::Required,
    };
    let server = Reloading::new(files.clone()).map_err(|e| format!("controller listener: {e}"))?;
    let client = ReloadingClient::new(files).map_err(|e| format!("controller listener: {e}"))?;
    let admit: crate::cluster::transport::Admit = Rc::new(move |principal, host| {
        let Some(shard) = shard.upgrade() else {
            return Err("the node is stopping".into());
        };
        let authorizer = crate::security::authorizer::Authorizer {
            enabled: shard.config.authorizer,
            super_users: &shard.config.super_users,
            allow_everyone_if_no_acl_found: shard.config.allow_everyone_if_no_acl_found,
        };
        let caller = crate::security::authorizer::Caller { principal, host };
        let metadata = shard.metadata();
        if authorizer.authorize(
            &metadata.acls,
            caller,
            crate::security::acl::AclOperation::ClusterAction,
            crate::security::acl::ResourceType::Cluster,
            crate::security::acl::CLUSTER_NAME,
        ) {
            Ok(())
        } else {
            Err("neither a super user nor allowed CLUSTER_ACTION on the cluster".into())
        }
    });
    tracing::info!(
        authorizer = config.authorizer,
        "controller listener: SSL with client certificates required"
    );
    if !config.authorizer {
        tracing::warn!("controller listener: SSL with the authorizer off: every certificate signed by ssl_ca_file is accepted (turn the authorizer on, the nodes' principals in super_users, to admit only the nodes)");
    }
    Ok(Some(crate::cluster::transport::TransportSecurity {
        server,
        client,
        admit,
        handshake_timeout: crate::cluster::transport::HANDSHAKE_TIMEOUT_DEFAULT,
    }))
}

impl Shard {
    /// The quorum of this node (coordinator shard, once started).
    pub fn controller(&self) -> Option<Rc<Controller>> {
        self.controller.borrow().clone()
    }

    /// Starts the quorum on the coordinator shard: the Raft node (voters), the controller
    /// listener, the publisher, the heartbeat loop and the controller's session checks.
    /// `initial` is the metadata the startup load gave every shard.
    pub async fn start_controller(
        self: &Rc<Self>,
        quorum: QuorumConfig,
        initial: Arc<ClusterMetadata>,
    ) -> Result<(), String> {
        assert_eq!(self.id, super::COORDINATOR_SHARD);
        let weak = Rc::downgrade(self);
        let transport = if quorum.single_node {
            None
        } else {
            let security = controller_security(&self.config, weak.clone())?;
            Some(ControllerTransport::with_security(
                quorum.node_id,
                quorum.voters.clone(),
                TransportLimits::default(),
                security,
            ))
        };
        let controller_cell: Rc<RefCell<Weak<Controller>>> = Rc::new(RefCell::new(Weak::new()));
        let node = if quorum.is_voter() {
            let voters: Vec<i32> = quorum.voters.iter().map(|v| v.node_id).collect();
            let seed = initial.clone();
            let log = RaftLog::open(
                &raft_log_dir(&self.config.data_dir),
                self.cache.clone(),
                &voters,
                move || (*seed).clone(),
            )
            .await
            .map_err(|e| format!("opening the metadata quorum's log: {e}"))?;
            let outbox: Rc<dyn Fn(raft::prelude::Message)> = match &transport {
                Some(t) => {
                    let t = t.clone();
                    Rc::new(move |m| t.send_raft(m))
                }
                None => Rc::new(|_| ()),
            };
            let cell = controller_cell.clone();
            let on_applied: Rc<dyn Fn(Arc<ClusterMetadata>)> = Rc::new(move |m| {
                if let Some(c) = cell.borrow().upgrade() {
                    *c.pending.borrow_mut() = Some(m);
                    c.applied_notify.notify_all();
                }
            });
            let settings = NodeSettings {
                node_id: quorum.node_id,
                voters,
                election_timeout_ms: self.config.controller_quorum_election_timeout_ms,
                tick_ms: crate::cluster::node::TICK_MS,
                cluster_id: self.config.cluster_id.clone(),
            };
            let node = QuorumNode::start(settings, log, outbox, on_applied)
                .await
                .map_err(|e| format!("starting the metadata quorum: {e}"))?;
            Some(node)
        } else {
            None
        };
        let controller = Rc::new(Controller {
            quorum: quorum.clone(),
            node: node.clone(),
            transport: transport.clone(),
            incarnation_id: uuid::Uuid::new_v4(),
            sessions: RefCell::new(None),
            pending: RefCell::new(None),
            applied_notify: Notify::default(),
            published_version: Cell::new(initial.version),
            published_notify: Notify::default(),
            leader_hint: Cell::new(None),
            shutting_down: Cell::new(false),
            tasks: RefCell::new(Vec::new()),
        });
        *controller_cell.borrow_mut() = Rc::downgrade(&controller);
        *self.controller.borrow_mut() = Some(controller.clone());
        if let (Some(t), Some(listen)) = (&transport, &quorum.controller_listen) {
            let addr = crate::config::resolve(listen).map_err(|e| e.to_string())?;
            let node_for_raft = node.clone();
            let on_raft: Rc<dyn Fn(raft::prelude::Message)> = Rc::new(move |m| {
                if let Some(n) = &node_for_raft {
                    n.step(m);
                }
            });
            let shard = weak.clone();
            let on_call: CallHandler = Rc::new(move |request| {
                let shard = shard.clone();
                Box::pin(async move {
                    match shard.upgrade() {
                        Some(shard) => shard.answer_controller_call(request).await,
                        None => ControllerResponse::Failed {
                            message: "stopping".into(),
                        },
                    }
                })
            });
            // A node restarted after kill -9 may find its old socket still held for a moment.
            t.serve_waiting(addr, on_raft, on_call, CONTROLLER_BIND_WAIT)
                .await
                .map_err(|e| format!("controller listener {listen}: {e}"))?;
        }
        let mut tasks = vec![crate::rt::spawn_local(self.clone().publisher_loop())];
        tasks.push(crate::rt::spawn_local(self.clone().heartbeat_loop()));
        if node.is_some() {
            tasks.push(crate::rt::spawn_local(self.clone().session_loop()));
            tasks.push(crate::rt::spawn_local(self.clone().leader_balance_loop()));
            tasks.push(crate::rt::spawn_local(self.clone().unclean_election_loop()));
        } else {
            tasks.push(crate::rt::spawn_local(self.clone().metadata_poll_loop()));
        }
        *controller.tasks.borrow_mut() = tasks;
        Ok(())
    }

    /// Kafka's controlled shutdown, while this broker still serves: tells the active
    /// controller it is shutting down (it is fenced, which moves the leadership of its
    /// partitions to other in-sync replicas in the same metadata change), then waits until the
    /// metadata installed here shows it leads no partition, at most
    /// [`CONTROLLED_SHUTDOWN_WAIT`], repeating the heartbeat meanwhile, and then
    /// [`CONTROLLED_SHUTDOWN_LINGER`] more. Clients asking it then get NOT_LEADER_OR_FOLLOWER
    /// and move to the new leaders before it closes its listener. A single node has nobody to
    /// hand its partitions to: nothing to do. Returns whether the broker leads nothing (always
    /// true for a single node).
    pub async fn controlled_shutdown(self: &Rc<Self>) -> bool {
        let Some(controller) = self.controller() else {
            return true;
        };
        if controller.quorum.single_node {
            return true;
        }
        let first = !controller.shutting_down.replace(true);
        let node_id = self.config.node_id;
        let led_some = !leads_nothing(&self.metadata(), node_id);
        let deadline = crate::rt::now() + CONTROLLED_SHUTDOWN_WAIT;
        let mut next_heartbeat = crate::rt::now();
        loop {
            let metadata = self.metadata();
            let fenced = metadata.brokers.get(&node_id).is_none_or(|b| b.fenced);
            if fenced && leads_nothing(&metadata, node_id) {
                if first && led_some {
                    tracing::info!(
                        version = metadata.version,
                        "controlled shutdown: this broker leads no partition any more"
                    );
                    crate::rt::sleep(CONTROLLED_SHUTDOWN_LINGER).await;
                }
                return true;
            }
            if crate::rt::now() >= deadline {
                tracing::warn!(
                    wait_ms = CONTROLLED_SHUTDOWN_WAIT.as_millis() as u64,
                    "controlled shutdown: still leading partitions (or not fenced) when the \
                     wait ran out; stopping anyway"
                );
                return false;
            }
            if crate::rt::now() >= next_heartbeat {
                if let Some(hb) = controller.heartbeat(self, true) {
                    let send = self.send_heartbeat(&controller, hb);
                    let timeout = async {
                        crate::rt::sleep(SHUTDOWN_HEARTBEAT_TIMEOUT).await;
                    };
                    futures_lite::future::or(send, timeout).await;
                }
                next_heartbeat = crate::rt::now()
                    + Duration::from_millis(
                        self.config.broker_heartbeat_interval_ms.clamp(50, 1000),
                    );
            }
            crate::rt::sleep(CONTROLLED_SHUTDOWN_POLL).await;
        }
    }

    /// Stops the quorum: the controlled shutdown if it has not run yet (bounded), then the
    /// loops, the Raft node and the listener.
    pub async fn stop_controller(self: &Rc<Self>) {
        let Some(controller) = self.controller() else {
            return;
        };
        if !controller.shutting_down.get() {
            self.controlled_shutdown().await;
        }
        for task in controller.tasks.borrow_mut().drain(..) {
            drop(task);
        }
        if let Some(node) = &controller.node {
            node.stop().await;
        }
        if let Some(t) = &controller.transport {
            t.stop().await;
        }
        *self.controller.borrow_mut() = None;
    }

    /// Decides and commits a change on the active controller: records decided against the
    /// applied metadata, one Raft entry, answered once applied and published here. `None`
    /// when this node is not (or no longer) the active controller.
    pub(super) async fn propose_change(
        self: &Rc<Self>,
        records: Vec<MetadataRecord>,
    ) -> Result<(), MetadataError> {
        let controller = self.controller().ok_or_else(not_controller)?;
        let node = controller.node.clone().ok_or_else(not_controller)?;
        let applied = node.propose(records).await.map_err(|e| match e {
            ProposeError::NotLeader { .. } | ProposeError::Stopped => not_controller(),
            ProposeError::Overloaded => MetadataError {
                code: ResponseError::ThrottlingQuotaExceeded,
                message: "too many metadata changes are waiting; retry".into(),
            },
            ProposeError::Storage(why) => {
                tracing::error!(error = %why, "writing the metadata log failed");
                MetadataError {
                    code: ResponseError::KafkaStorageError,
                    message: format!("the metadata log could not be written: {why}"),
                }
            }
        })?;
        controller.await_published(applied.version).await;
        Ok(())
    }

    /// The metadata to decide changes against on the active controller, once it is ready
    /// (it has applied everything before its term); `None` when this node does not lead.
    pub(super) async fn leader_metadata(&self) -> Option<Arc<ClusterMetadata>> {
        let controller = self.controller()?;
        let node = controller.node.clone()?;
        let deadline = crate::rt::now() + LEADER_READY_WAIT;
        loop {
            if node.leader() != Some(controller.quorum.node_id) {
                return None;
            }
            if node.ready_to_propose() {
                return Some(node.applied());
            }
            if crate::rt::now() >= deadline {
                return None;
            }
            crate::rt::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Reserves a block of producer ids durably and returns it, `start..end`: on the active
    /// controller by a metadata record decided under the metadata lock, elsewhere by asking
    /// the active controller (Kafka's AllocateProducerIds). The block is the one this call's
    /// own record reserved, never inferred from the local metadata afterwards: that may lag
    /// (a broker that cannot write its log) or already hold another broker's newer block.
    pub(super) async fn reserve_producer_ids(self: &Rc<Self>) -> Result<(i64, i64), MetadataError> {
        let Ok(permit) = self.metadata_lock.acquire_permit(1).await else {
            return Err(super::storage_unavailable());
        };
        let leading = match self.controller() {
            Some(c) if !c.is_active() => None,
            _ => self.leader_metadata().await,
        };
        let Some(base) = leading else {
            drop(permit);
            return self.forward_producer_id_reservation().await;
        };
        let record = base.record_for(&MetadataCommand::AllocateProducerIdBlock)?;
        let MetadataRecord::ProducerIdBlockAllocated { next: end } = record else {
            unreachable!("AllocateProducerIdBlock makes a ProducerIdBlockAllocated record");
        };
        let start = end - PRODUCER_ID_BLOCK_SIZE;
        assert!(
            start >= base.producer_id_block_next,
            "a new block starts at or after every block reserved before"
        );
        self.propose_change(vec![record]).await?;
        Ok((start, end))
    }

    /// Asks the active controller for a block of producer ids (this node does not lead).
    async fn forward_producer_id_reservation(&self) -> Result<(i64, i64), MetadataError> {
        let answer = self
            .call_active_controller(
                ControllerRequest::AllocateProducerIds,
                "producer id reservation",
            )
            .await?;
        match answer {
            ControllerResponse::ProducerIds { start, end }
                if 0 <= start && start < end && end - start <= PRODUCER_ID_BLOCK_SIZE =>
            {
                Ok((start, end))
            }
            ControllerResponse::Refused(e) => Err(from_forwarded(e)),
            other => {
                tracing::warn!(answer = ?other, "producer id reservation: unexpected answer");
                Err(not_controller())
            }
        }
    }

    /// Forwards changes to the active controller (this node does not lead).
    pub(super) async fn forward_change(
        &self,
        commands: Vec<MetadataCommand>,
        validate_only: bool,
    ) -> Vec<Result<(), MetadataError>> {
        let count = commands.len();
        let fail = |e: MetadataError| (0..count).map(|_| Err(e.clone())).collect();
        let request = ControllerRequest::Change {
            commands,
            validate_only,
        };
        match self
            .call_active_controller(request, "metadata change")
            .await
        {
            Ok(ControllerResponse::Changed { results, version }) if results.len() == count => {
                // The client may ask this node next: wait (bounded) until it has the change.
                self.await_published_bounded(version).await;
                results
                    .into_iter()
                    .map(|r| r.map_err(from_forwarded))
                    .collect()
            }
            Ok(other) => {
                tracing::warn!(answer = ?other, "forwarded metadata change: unexpected answer");
                fail(not_controller())
            }
            Err(e) => fail(e),
        }
    }

    /// Sends `request` to the active controller over the controller transport (this node
    /// does not lead); NOT_CONTROLLER when there is no quorum here or none answered within
    /// [`FORWARD_TIMEOUT`] (logged, naming `what`).
    pub(super) async fn call_active_controller(
        &self,
        request: ControllerRequest,
        what: &str,
    ) -> Result<ControllerResponse, MetadataError> {
        let controller = self.controller().ok_or_else(not_controller)?;
        let transport = controller.transport.clone().ok_or_else(not_controller)?;
        transport
            .call_controller(request, controller.leader(), FORWARD_TIMEOUT)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "forwarding a {what} failed");
                not_controller()
            })
    }

    /// Waits until this node published metadata `version` (a change the active controller
    /// made for this node's client), at most [`FORWARD_TIMEOUT`].
    pub(super) async fn await_published_bounded(&self, version: u64) {
        let Some(controller) = self.controller() else {
            return;
        };
        let published = controller.await_published(version);
        let timeout = async {
            crate::rt::sleep(FORWARD_TIMEOUT).await;
        };
        futures_lite::future::or(published, timeout).await;
    }

    /// Answers a call that arrived on the controller listener.
    async fn answer_controller_call(
        self: &Rc<Self>,
        request: ControllerRequest,
    ) -> ControllerResponse {
        let Some(controller) = self.controller() else {
            return ControllerResponse::Failed {
                message: "the quorum is not running".into(),
            };
        };
        let not_leader = || ControllerResponse::NotController {
            leader: controller.leader(),
        };
        match request {
            ControllerRequest::Change {
                commands,
                validate_only,
            } => {
                if !controller.is_active() {
                    return not_leader();
                }
                let results = self.change_metadata(commands, validate_only).await;
                ControllerResponse::Changed {
                    version: controller.applied(self).version,
                    results: results
                        .into_iter()
                        .map(|r| r.map_err(|e| to_forwarded(&e)))
                        .collect(),
                }
            }
            ControllerRequest::Heartbeat(hb) => {
                if !controller.is_active() {
                    return not_leader();
                }
                match self.take_heartbeat(&controller, &hb).await {
                    Ok(fenced) => ControllerResponse::HeartbeatAck { fenced },
                    Err(e) => ControllerResponse::Failed { message: e.message },
                }
            }
            ControllerRequest::FetchMetadata { version } => {
                let applied = controller.applied(self);
                ControllerResponse::Metadata {
                    metadata: (applied.version > version && !applied.cluster_id.is_empty())
                        .then(|| Box::new((*applied).clone())),
                }
            }
            ControllerRequest::DescribeQuorum => ControllerResponse::Quorum(controller.status()),
            ControllerRequest::AllocateProducerIds => {
                if !controller.is_active() {
                    return not_leader();
                }
                match self.reserve_producer_ids().await {
                    Ok((start, end)) => ControllerResponse::ProducerIds { start, end },
                    Err(e) => ControllerResponse::Refused(to_forwarded(&e)),
                }
            }
            ControllerRequest::DeleteAcls { filters } => {
                if !controller.is_active() {
                    return not_leader();
                }
                let results = self.delete_acls_matching(filters).await;
                ControllerResponse::AclsDeleted {
                    version: controller.applied(self).version,
                    results: results
                        .into_iter()
                        .map(|r| r.map_err(|e| to_forwarded(&e)))
                        .collect(),
                }
            }
        }
    }

    /// The active controller takes a broker's heartbeat: registers, unfences or fences it as
    /// its session tracker decides. Returns whether the broker is fenced now.
    async fn take_heartbeat(
        self: &Rc<Self>,
        controller: &Controller,
        hb: &BrokerHeartbeat,
    ) -> Result<bool, MetadataError> {
        let applied = controller.applied(self);
        let command =
            controller.sessions(self, &applied, |s| s.on_heartbeat(hb, now_ms(), &applied));
        if let Some(command) = command {
            for r in self.change_metadata(vec![command], false).await {
                r?;
            }
        }
        let now = controller.applied(self);
        Ok(now.brokers.get(&hb.node_id).is_none_or(|b| b.fenced))
    }

    /// Sends this node's heartbeat to the active controller (itself, when it leads).
    async fn send_heartbeat(self: &Rc<Self>, controller: &Rc<Controller>, hb: BrokerHeartbeat) {
        if controller.is_active() {
            if let Err(e) = self.take_heartbeat(controller, &hb).await {
                tracing::debug!(error = %e.message, "own heartbeat not taken");
            }
            return;
        }
        let Some(transport) = controller.transport.clone() else {
            return;
        };
        let deadline = Duration::from_millis(self.config.broker_heartbeat_interval_ms.max(100));
        match transport
            .call_controller(
                ControllerRequest::Heartbeat(hb),
                controller.leader(),
                deadline,
            )
            .await
        {
            Ok(ControllerResponse::HeartbeatAck { fenced }) => {
                tracing::trace!(fenced, "heartbeat taken");
            }
            Ok(ControllerResponse::NotController { leader }) => controller.leader_hint.set(leader),
            Ok(other) => tracing::debug!(answer = ?other, "heartbeat: unexpected answer"),
            Err(e) => tracing::debug!(error = %e, "heartbeat not delivered"),
        }
    }

    /// Publishes applied metadata to every shard, newest first, one publication at a time.
    async fn publisher_loop(self: Rc<Self>) {
        let Some(controller) = self.controller() else {
            return;
        };
        loop {
            controller
                .applied_notify
                .until(|| controller.pending.borrow().is_some())
                .await;
            let Some(next) = controller.pending.borrow_mut().take() else {
                continue;
            };
            if next.version <= controller.published_version.get() && next.version != 0 {
                continue;
            }
            let version = next.version;
            self.publish_metadata((*next).clone()).await;
            controller.published_version.set(version);
            controller.published_notify.notify_all();
        }
    }

    /// Heartbeats to the active controller every `broker_heartbeat_interval_ms`; every
    /// [`REGISTRATION_RETRY_INTERVAL`] while this start is not registered and unfenced yet.
    async fn heartbeat_loop(self: Rc<Self>) {
        let interval = Duration::from_millis(self.config.broker_heartbeat_interval_ms.max(50));
        while !self.stopping.get() {
            let mut wait = interval;
            if let Some(controller) = self.controller() {
                if let Some(hb) = controller.heartbeat(&self, false) {
                    self.send_heartbeat(&controller, hb).await;
                }
                if !controller.is_registered_in(&self.metadata()) {
                    wait = wait.min(REGISTRATION_RETRY_INTERVAL);
                }
            }
            crate::rt::sleep(wait).await;
        }
    }

    /// On the active controller: fences brokers whose session expired; forgets the sessions
    /// when leadership moves away (a new controller starts them afresh).
    async fn session_loop(self: Rc<Self>) {
        while !self.stopping.get() {
            crate::rt::sleep(SESSION_CHECK_INTERVAL).await;
            let Some(controller) = self.controller() else {
                return;
            };
            let leader = controller.leader();
            if leader != crate::cluster::active_controller() {
                let term = controller.status().term;
                match leader {
                    Some(leader) => tracing::info!(leader, term, "active controller"),
                    None => tracing::info!(term, "no active controller known"),
                }
                crate::cluster::set_active_controller(leader);
            }
            if !controller.is_active() {
                controller.sessions.borrow_mut().take();
                continue;
            }
            let applied = controller.applied(&self);
            let commands = controller.sessions(&self, &applied, |s| s.expired(now_ms(), &applied));
            if !commands.is_empty() {
                for r in self.change_metadata(commands, false).await {
                    if let Err(e) = r {
                        tracing::warn!(error = %e.message, "fencing a broker failed");
                    }
                }
            }
        }
    }

    /// On the active controller, every `leader_imbalance_check_interval_seconds` (when
    /// `auto_leader_rebalance_enable`): elects the preferred leader of the partitions
    /// `ClusterMetadata::preferred_elections_due` picks (Kafka's automatic leader balancing),
    /// at most [`LEADER_BALANCE_ELECTIONS_MAX`] per round, in one metadata change.
    async fn leader_balance_loop(self: Rc<Self>) {
        if !self.config.auto_leader_rebalance_enable {
            return;
        }
        let interval =
            Duration::from_secs(self.config.leader_imbalance_check_interval_seconds.max(1));
        let percentage = self.config.leader_imbalance_per_broker_percentage;
        while !self.stopping.get() {
            crate::rt::sleep(interval).await;
            let Some(controller) = self.controller() else {
                return;
            };
            if !controller.is_active() || controller.shutting_down.get() {
                continue;
            }
            let due = controller
                .applied(&self)
                .preferred_elections_due(percentage, LEADER_BALANCE_ELECTIONS_MAX);
            self.elect(due, Election::Preferred).await;
        }
    }

    /// On the active controller, every `unclean_leader_election_interval_ms`: an unclean
    /// election for each leaderless partition of a topic that allows it
    /// (`ClusterMetadata::unclean_elections_due`, at most [`LEADER_BALANCE_ELECTIONS_MAX`]
    /// per round), as Kafka's `maybeElectUncleanLeaders`.
    async fn unclean_election_loop(self: Rc<Self>) {
        let interval =
            Duration::from_millis(self.config.unclean_leader_election_interval_ms.max(10));
        while !self.stopping.get() {
            crate::rt::sleep(interval).await;
            let Some(controller) = self.controller() else {
                return;
            };
            if !controller.is_active() || controller.shutting_down.get() {
                continue;
            }
            let due = controller
                .applied(&self)
                .unclean_elections_due(LEADER_BALANCE_ELECTIONS_MAX);
            self.elect(due, Election::Unclean).await;
        }
    }

    /// The controller's own elections of `election` kind for `due` partitions, in one
    /// metadata change; logged (unclean ones as a warning: records may be lost).
    async fn elect(self: &Rc<Self>, due: Vec<(String, i32)>, election: Election) {
        if due.is_empty() {
            return;
        }
        let commands: Vec<MetadataCommand> = due
            .into_iter()
            .map(|(topic, partition)| MetadataCommand::ElectLeader {
                topic,
                partition,
                election,
            })
            .collect();
        let asked = commands.len();
        let results = self.change_metadata(commands, false).await;
        let elected = results.iter().filter(|r| r.is_ok()).count();
        match election {
            Election::Preferred => tracing::info!(asked, elected, "automatic leader balancing"),
            Election::Unclean => {
                tracing::warn!(
                    asked,
                    elected,
                    "unclean leader elections of leaderless partitions"
                )
            }
        }
    }

    /// A broker-only node: polls the active controller for newer metadata.
    async fn metadata_poll_loop(self: Rc<Self>) {
        while !self.stopping.get() {
            let Some(controller) = self.controller() else {
                return;
            };
            let Some(transport) = controller.transport.clone() else {
                return;
            };
            let version = self.metadata().version;
            match transport
                .call_controller(
                    ControllerRequest::FetchMetadata { version },
                    controller.leader(),
                    Duration::from_secs(2),
                )
                .await
            {
                Ok(ControllerResponse::Metadata {
                    metadata: Some(metadata),
                }) => {
                    *controller.pending.borrow_mut() = Some(Arc::new(*metadata));
                    controller.applied_notify.notify_all();
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "metadata poll failed"),
            }
            // The active controller as the quorum says (Metadata's controller id here).
            if let Ok(ControllerResponse::Quorum(status)) = transport
                .call_controller(
                    ControllerRequest::DescribeQuorum,
                    controller.leader(),
                    Duration::from_secs(2),
                )
                .await
            {
                controller.leader_hint.set(status.leader_id);
                if status.leader_id != crate::cluster::active_controller() {
                    crate::cluster::set_active_controller(status.leader_id);
                }
            }
            crate::rt::sleep(METADATA_POLL_INTERVAL).await;
        }
    }
}

/// Whether broker `node_id` leads no partition in `metadata`.
pub fn leads_nothing(metadata: &ClusterMetadata, node_id: i32) -> bool {
    !metadata
        .topics
        .values()
        .flat_map(|t| t.assignment.iter())
        .any(|a| a.leader == node_id)
}

/// Wall-clock milliseconds for the broker sessions (never negative).
fn now_ms() -> u64 {
    u64::try_from(super::now_ms()).unwrap_or(0)
}

pub(super) fn not_controller() -> MetadataError {
    MetadataError {
        code: ResponseError::NotController,
        message: "This node is not the active controller and none could be reached.".into(),
    }
}

fn to_forwarded(e: &MetadataError) -> ForwardedError {
    ForwardedError {
        code: e.code.code(),
        message: e.message.clone(),
    }
}

pub(super) fn from_forwarded(e: ForwardedError) -> MetadataError {
    MetadataError {
        code: ResponseError::try_from_code(e.code).unwrap_or(ResponseError::UnknownServerError),
        message: e.message,
    }
}

/// Bytes of the executor's I/O memory for the startup load of the quorum's log.
const STARTUP_IO_MEMORY_BYTES: usize = 1 << 20;
/// Bytes of tail cache for the startup load.
const STARTUP_TAIL_CACHE_BYTES: usize = 1 << 20;

/// Loads the metadata every shard starts with, from the quorum's log (main thread, before the
/// shards start, on a short-lived executor of its own).
///
/// An empty log is bootstrapped first: a single voter starts from this node's metadata
/// (the legacy metadata log or `cluster-metadata.json`, migrated as before, else `fresh()`),
/// with this node registered and every topic assigned to it, so an old single-node data
/// directory starts unchanged; several voters start empty (the first leader writes the
/// cluster's first metadata). A data directory with a single node's topics cannot join a
/// quorum of several voters (not supported yet): that is refused.
pub fn load_at_startup(
    config: &crate::config::BrokerConfig,
    quorum: &QuorumConfig,
    fresh: impl FnOnce() -> ClusterMetadata + Send,
) -> std::io::Result<ClusterMetadata> {
    let data_dir = &config.data_dir;
    let journal = raft_log_dir(data_dir);
    let voters: Vec<i32> = if quorum.is_voter() {
        quorum.voters.iter().map(|v| v.node_id).collect()
    } else {
        // A broker-only node keeps no log: it starts empty and polls the controller.
        return Ok(ClusterMetadata::default());
    };
    // A single voter's metadata before the quorum (read every start: cheap, and the journal
    // takes it only when it is empty; a preallocated segment file cannot say that).
    let seed = if voters.len() == 1 {
        let legacy = super::metadata_log::load_at_startup(data_dir, fresh)?;
        let heartbeat = own_heartbeat(config, uuid::Uuid::new_v4(), false)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Some(legacy.adopt_single_node(registration_of(&heartbeat)))
    } else {
        if !has_records(&journal)
            && (has_records(&super::metadata_log::metadata_log_dir(data_dir))
                || crate::coordinator::store::metadata_path(data_dir).exists())
        {
            return Err(std::io::Error::other(format!(
                "{} holds the metadata of a single-node cluster; it cannot join a quorum of \
                 {} voters (not supported yet): start it without controller_quorum_voters, \
                 or give this node an empty data directory",
                data_dir.display(),
                voters.len()
            )));
        }
        None
    };
    on_journal_thread(data_dir, "quorum-load", |cache| async move {
        let log = RaftLog::open(&journal, cache, &voters, move || seed.unwrap_or_default())
            .await
            .map_err(journal_error)?;
        let (_, metadata) = log.applied_at_open();
        let mut in_log: Vec<i32> = log.voters().into_iter().map(node_id_of).collect();
        log.close().await.map_err(journal_error)?;
        let mut configured = voters.clone();
        in_log.sort_unstable();
        configured.sort_unstable();
        if in_log != configured {
            return Err(std::io::Error::other(format!(
                "the metadata quorum's log has voters {in_log:?} but this node is configured \
                 with {configured:?}: changing the voters is not supported yet"
            )));
        }
        Ok(metadata)
    })
}

/// The metadata a stopped node's data directory holds (its copy of the quorum's log, as far
/// as it is committed there), read without changing it: `None` for a node that never started
/// (no journal). For `freshet user list/delete`; the caller holds the directory's lock.
pub fn read_stored_metadata(
    data_dir: &std::path::Path,
) -> std::io::Result<Option<ClusterMetadata>> {
    let journal = raft_log_dir(data_dir);
    if !journal.exists() {
        return Ok(None);
    }
    on_journal_thread(data_dir, "metadata-read", |cache| async move {
        RaftLog::read_applied(&journal, cache)
            .await
            .map_err(journal_error)
    })
}

/// Runs `body` with a fresh tail cache on a short-lived executor of its own, on a thread
/// named `freshet-{name}`, once `data_dir`'s disk is primed: how the quorum's journal is read
/// before the shards start or while the node is stopped.
fn on_journal_thread<T, F>(
    data_dir: &std::path::Path,
    name: &str,
    body: impl FnOnce(std::rc::Rc<crate::storage::TailCache>) -> F + Send,
) -> std::io::Result<T>
where
    T: Send,
    F: std::future::Future<Output = std::io::Result<T>>,
{
    crate::rt::run_on_own_thread(name, STARTUP_IO_MEMORY_BYTES, 64, || async {
        crate::storage::prime_disk(data_dir)
            .await
            .map_err(journal_error)?;
        body(crate::storage::TailCache::new(STARTUP_TAIL_CACHE_BYTES)).await
    })
}

fn journal_error(e: crate::storage::StorageError) -> std::io::Error {
    std::io::Error::other(format!("metadata quorum log: {e}"))
}

/// Whether an internal log's directory may hold records: a segment file that is not empty
/// (a preallocated one counts: this errs on the side of "there is data").
fn has_records(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.path().extension().is_some_and(|x| x == "log")
                && e.metadata().is_ok_and(|m| m.len() > 0)
        })
    })
}
