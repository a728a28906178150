//! The metadata quorum's node driver: one task that runs raft-rs's `RawNode` over the durable
//! [`RaftLog`], applies committed metadata records, and answers proposals.
//!
//! # The loop
//! One task per node ([`QuorumNode::start`]) loops on {a tick every `tick_ms`, messages from
//! the network ([`QuorumNode::step`]), proposals ([`QuorumNode::propose`])} and then handles
//! every Ready raft-rs has, in raft-rs's order:
//! 1. the leader's `messages` (appends, heartbeats) go to the outbox at once (raft thesis
//!    10.2.1: the leader writes to its disk in parallel with its followers);
//! 2. the snapshot, entries and hard state are persisted ([`RaftLog::persist`], fdatasync'd);
//! 3. a snapshot is applied (the metadata it holds replaces the applied metadata);
//! 4. committed entries are applied in order to the metadata (`ClusterMetadata::replay`, pure)
//!    and `on_applied` is called with each new metadata; waiting proposals are answered;
//! 5. the `persisted_messages` (votes, append acknowledgements) go to the outbox: never before
//!    what they acknowledge is durable;
//! 6. `advance`; the light ready's commit index is persisted (not for a sole voter: every
//!    durable entry of its journal is committed, see `raft_log`), its messages sent and its
//!    committed entries applied.
//!
//! Then the journal is compacted if due (a snapshot at the applied index). A snapshot sent to
//! a follower and not answered within an election timeout is reported failed to raft-rs, which
//! then sends another (the outbox cannot tell a lost message; raft-rs would wait for good).
//!
//! # Proposals
//! [`QuorumNode::propose`] resolves once the records are committed and applied on this node,
//! with the metadata after them. Only a leader that has applied an entry of its own term (its
//! no-op) and whose metadata is bootstrapped proposes ([`QuorumNode::ready_to_propose`]): a
//! change is always decided against current metadata. A proposal fails with
//! [`ProposeError::NotLeader`] when this node does not lead, when it loses leadership before
//! the entry is applied, or when another entry takes the entry's index; the caller answers
//! NOT_CONTROLLER and the client retries (the entry may still commit later under the next
//! leader: as in Kafka, a retried change can meet its own first attempt).
//! `entry.context` is the proposal id: node id (4 bytes BE), a random id of this process
//! start (8 bytes), a counter (8 bytes), so an entry left by an earlier start never answers a
//! proposal of this one.
//!
//! # Bootstrap
//! A leader whose applied metadata is empty (`ClusterMetadata::default()`: a new multi-voter
//! cluster, whose journal started from an empty snapshot) proposes the first record,
//! `Snapshot{metadata}` with [`NodeSettings::cluster_id`] (a new Kafka-shaped id if empty);
//! proposals wait until it is applied. Metadata with any content is never replaced.
//!
//! # Bounds
//! Incoming messages: at most [`INCOMING_MESSAGES_MAX`] queued holding at most
//! [`INCOMING_BYTES_MAX`] of entries and snapshots, more are dropped and counted (Raft
//! tolerates loss). Proposals: at most [`PROPOSALS_WAITING_MAX`] waiting (queued or in
//! the log), more are refused ([`ProposeError::Overloaded`]); one proposal's records at most
//! [`PROPOSAL_BYTES_MAX`]. Per Ready: raft-rs's `max_committed_size_per_ready`
//! ([`COMMITTED_BYTES_PER_READY_MAX`]); per append message `max_size_per_msg`
//! ([`MESSAGE_BYTES_MAX`]) and at most [`INFLIGHT_MESSAGES_MAX`] in flight per follower;
//! uncommitted entries at most [`UNCOMMITTED_BYTES_MAX`].
//!
//! # Crashes and failures
//! A journal write that fails stops the node (raft-rs cannot take a Ready back): every waiting
//! proposal gets [`ProposeError::Storage`], later ones [`ProposeError::Stopped`], and the node
//! no longer votes or leads; reopening the journal (a restart) recovers it. Election timeouts
//! are randomized from the simulation's seed under `rt::sim` (so a seed replays), else at
//! random.
//!
//! Peers are trusted: raft-rs may panic on a message that contradicts committed state (a
//! peer that is not Raft). Messages not addressed to this node and proposals from the network
//! are dropped, and a heartbeat's commit index is clamped to this node's log (a leader that
//! still counts entries a wiped node lost would otherwise make raft-rs panic). Conf changes
//! are not supported: the voters are fixed at bootstrap.
//!
//! Lives on the coordinator shard (shard 0), on `crate::rt` only (runs under `rt::sim`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use raft::prelude::{Entry, Message, MessageType, Snapshot};
use raft::{Config, ProgressState, RawNode, SnapshotStatus, StateRole};

use crate::cluster::raft_log::{apply_entry, encode_records, snapshot_metadata, RaftLog};
use crate::cluster::{node_id_of, raft_id, QuorumStatus, ReplicaStatus};
use crate::coordinator::metadata::{ClusterMetadata, MetadataRecord};
use crate::rt::Notify;
use crate::storage::StorageError;

/// Ticks per second at the design's default; `NodeSettings::tick_ms` sets it.
pub const TICK_MS: u64 = 100;
/// Messages from the network queued at most; more are dropped (and counted).
pub const INCOMING_MESSAGES_MAX: usize = 4096;
/// Bytes of entries and snapshots in the queued messages at most (a snapshot of the largest
/// metadata fits); more are dropped (and counted).
pub const INCOMING_BYTES_MAX: usize = 128 << 20;
/// Proposals waiting at most (queued, or appended and not yet applied).
pub const PROPOSALS_WAITING_MAX: usize = 1024;
/// The largest proposal (the JSON of its records).
pub const PROPOSAL_BYTES_MAX: usize =
    crate::coordinator::metadata::METADATA_BATCH_BYTES_MAX as usize;
/// Entries per append message (raft-rs's `max_size_per_msg`).
pub const MESSAGE_BYTES_MAX: u64 = 1 << 20;
/// Append messages in flight per follower (raft-rs's `max_inflight_msgs`).
pub const INFLIGHT_MESSAGES_MAX: usize = 256;
/// Committed entries handed out per Ready (raft-rs's `max_committed_size_per_ready`).
pub const COMMITTED_BYTES_PER_READY_MAX: u64 = 16 << 20;
/// Uncommitted entries a leader accepts (raft-rs's `max_uncommitted_size`).
pub const UNCOMMITTED_BYTES_MAX: u64 = 128 << 20;

/// How this node takes part in the quorum.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// This node's Kafka node id.
    pub node_id: i32,
    /// Every voter's Kafka node id (this node among them).
    pub voters: Vec<i32>,
    /// Kafka's `controller.quorum.election.timeout.ms`.
    pub election_timeout_ms: u64,
    /// The tick period ([`TICK_MS`]).
    pub tick_ms: u64,
    /// The cluster id a new cluster's first leader writes; empty: a new random one.
    pub cluster_id: String,
}

impl Default for NodeSettings {
    /// A single node 0 with Kafka's default election timeout and [`TICK_MS`].
    fn default() -> Self {
        NodeSettings {
            node_id: 0,
            voters: vec![0],
            election_timeout_ms: 1000,
            tick_ms: TICK_MS,
            cluster_id: String::new(),
        }
    }
}

/// Why a proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// This node does not lead (or lost leadership before the entry was applied); `leader` is
    /// the one it knows of. Kafka's NOT_CONTROLLER.
    NotLeader { leader: Option<i32> },
    /// The journal could not be written (the node stopped), or the proposal is too large.
    Storage(String),
    /// More than [`PROPOSALS_WAITING_MAX`] proposals are waiting, or the leader's uncommitted
    /// entries are at [`UNCOMMITTED_BYTES_MAX`]: retry later.
    Overloaded,
    /// The node is stopped.
    Stopped,
}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(l) } => {
                write!(f, "not the leader (node {l} is)")
            }
            ProposeError::NotLeader { leader: None } => write!(f, "not the leader (none known)"),
            ProposeError::Storage(e) => write!(f, "metadata log: {e}"),
            ProposeError::Overloaded => write!(f, "too many metadata changes waiting"),
            ProposeError::Stopped => write!(f, "the metadata quorum node is stopped"),
        }
    }
}

type Reply = flume::Sender<Result<Arc<ClusterMetadata>, ProposeError>>;

/// A proposal queued for the loop.
struct Proposal {
    records: Vec<MetadataRecord>,
    reply: Reply,
}

/// A proposal in the raft log, waiting to be applied.
struct Waiter {
    index: u64,
    reply: Reply,
}

/// What the node's handle and its loop share (one shard).
struct Shared {
    incoming: RefCell<VecDeque<Message>>,
    incoming_dropped: Cell<u64>,
    /// About the bytes of the queued messages ([`message_bytes`]).
    incoming_bytes: Cell<usize>,
    proposals: RefCell<VecDeque<Proposal>>,
    /// Proposals queued or in the log, not answered yet.
    waiting: Cell<usize>,
    wake: Rc<Notify>,
    stopping: Cell<bool>,
    /// The loop has ended (stopped, or a journal failure).
    stopped: Cell<bool>,
    failure: RefCell<Option<String>>,
    applied: RefCell<Arc<ClusterMetadata>>,
    status: RefCell<QuorumStatus>,
    ready_to_propose: Cell<bool>,
}

impl Shared {
    fn new(applied: Arc<ClusterMetadata>) -> Shared {
        Shared {
            incoming: RefCell::new(VecDeque::new()),
            incoming_dropped: Cell::new(0),
            incoming_bytes: Cell::new(0),
            proposals: RefCell::new(VecDeque::new()),
            waiting: Cell::new(0),
            wake: Notify::new(),
            stopping: Cell::new(false),
            stopped: Cell::new(false),
            failure: RefCell::new(None),
            applied: RefCell::new(applied),
            status: RefCell::new(QuorumStatus::default()),
            ready_to_propose: Cell::new(false),
        }
    }
}

/// raft-rs's settings for node `node_id` (module doc, "Bounds"): pre-vote and check-quorum on,
/// a heartbeat every tick.
fn raft_config(node_id: i32, election_tick: usize, applied_index: u64) -> Config {
    Config {
        id: raft_id(node_id),
        election_tick,
        heartbeat_tick: 1,
        applied: applied_index,
        max_size_per_msg: MESSAGE_BYTES_MAX,
        max_inflight_msgs: INFLIGHT_MESSAGES_MAX,
        check_quorum: true,
        pre_vote: true,
        max_committed_size_per_ready: COMMITTED_BYTES_PER_READY_MAX,
        max_uncommitted_size: UNCOMMITTED_BYTES_MAX,
        ..Config::default()
    }
}

/// One node of the metadata quorum (see the module doc). Created on the coordinator shard at
/// startup, stopped at shutdown ([`QuorumNode::stop`]).
pub struct QuorumNode {
    node_id: i32,
    shared: Rc<Shared>,
    task: RefCell<Option<crate::rt::JoinHandle<()>>>,
    log: RaftLog,
}

impl QuorumNode {
    /// Starts the node over `log` (opened: its applied metadata is what
    /// [`RaftLog::applied_at_open`] rebuilt). `outbox` sends a message to another node (real
    /// transport or simulated network; it must not block); `on_applied` is called, in order,
    /// with every new applied metadata.
    pub async fn start(
        settings: NodeSettings,
        log: RaftLog,
        outbox: Rc<dyn Fn(Message)>,
        on_applied: Rc<dyn Fn(Arc<ClusterMetadata>)>,
    ) -> Result<Rc<QuorumNode>, StorageError> {
        assert!(
            settings.voters.contains(&settings.node_id),
            "a voter runs the node"
        );
        assert!(settings.tick_ms > 0);
        let mut voters: Vec<u64> = settings.voters.iter().map(|v| raft_id(*v)).collect();
        voters.sort_unstable();
        let mut journal_voters = log.voters();
        journal_voters.sort_unstable();
        if journal_voters != voters {
            tracing::warn!(journal = ?journal_voters, configured = ?voters, "the metadata raft log's voters differ from the configured ones; the journal's stay (voter changes are not supported)");
        }
        let (applied_index, applied) = log.applied_at_open();
        let election_tick = (settings.election_timeout_ms / settings.tick_ms).max(2) as usize;
        let config = raft_config(settings.node_id, election_tick, applied_index);
        let logger = slog::Logger::root(TracingDrain, slog::o!("node" => settings.node_id));
        let raw = RawNode::new(&config, log.clone(), &logger)
            .map_err(|e| StorageError::CorruptMessage(format!("metadata raft log: {e}")))?;
        let applied = Arc::new(applied);
        let shared = Rc::new(Shared::new(applied.clone()));
        let applied_term = log_term(&raw, applied_index);
        let mut driver = Driver {
            raw,
            log: log.clone(),
            shared: shared.clone(),
            outbox,
            on_applied,
            waiters: BTreeMap::new(),
            applied_index,
            applied_term,
            applied,
            incarnation: random_u64(),
            next_proposal: 0,
            // No term yet: the first turn replaces raft-rs's own random timeout.
            seen: (u64::MAX, StateRole::Follower),
            election_tick,
            tick: Duration::from_millis(settings.tick_ms),
            cluster_id: settings.cluster_id.clone(),
            bootstrap_term: 0,
            node_id: settings.node_id,
            heard_ms: BTreeMap::new(),
            snapshots_sent: RefCell::new(BTreeMap::new()),
            known_leader: None,
        };
        driver.randomize_election_timeout();
        if settings.voters.len() == 1 {
            // A single voter needs no election timeout to lead.
            let _ = driver.raw.campaign();
        }
        driver.publish_status();
        let task = crate::rt::spawn_local(driver.run()).detach();
        Ok(Rc::new(QuorumNode {
            node_id: settings.node_id,
            shared,
            task: RefCell::new(Some(task)),
            log,
        }))
    }

    /// Hands a message from the network to the node; never blocks. It is dropped (and
    /// counted) beyond [`INCOMING_MESSAGES_MAX`] messages or [`INCOMING_BYTES_MAX`] bytes
    /// queued, when not addressed to this node, and when it is a proposal (proposals enter
    /// only through [`QuorumNode::propose`] on the leader: a forwarded one could commit
    /// behind its caller's back).
    pub fn step(&self, msg: Message) {
        let bytes = message_bytes(&msg);
        let shared = &self.shared;
        let mut incoming = shared.incoming.borrow_mut();
        if shared.stopped.get()
            || msg.to != raft_id(self.node_id)
            || msg.from == 0
            || msg.get_msg_type() == MessageType::MsgPropose
            || incoming.len() >= INCOMING_MESSAGES_MAX
            || shared.incoming_bytes.get() + bytes > INCOMING_BYTES_MAX
        {
            shared
                .incoming_dropped
                .set(shared.incoming_dropped.get() + 1);
            return;
        }
        shared
            .incoming_bytes
            .set(shared.incoming_bytes.get() + bytes);
        incoming.push_back(msg);
        drop(incoming);
        shared.wake.notify_all();
    }

    /// Proposes one change's records (applied atomically); resolves once they are applied on
    /// this node, with the metadata after them (module doc, "Proposals").
    pub async fn propose(
        &self,
        records: Vec<MetadataRecord>,
    ) -> Result<Arc<ClusterMetadata>, ProposeError> {
        if self.shared.stopped.get() || self.shared.stopping.get() {
            return Err(self.stopped_error());
        }
        if !self.shared.ready_to_propose.get() {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        if self.shared.waiting.get() >= PROPOSALS_WAITING_MAX {
            return Err(ProposeError::Overloaded);
        }
        let (reply, answer) = flume::bounded(1);
        self.shared.waiting.set(self.shared.waiting.get() + 1);
        let _waiting = WaitingGuard(&self.shared);
        self.shared
            .proposals
            .borrow_mut()
            .push_back(Proposal { records, reply });
        self.shared.wake.notify_all();
        match answer.recv_async().await {
            Ok(result) => result,
            Err(_) => Err(self.stopped_error()),
        }
    }

    /// Whether this node leads and has applied an entry of its term (and the cluster's first
    /// metadata): proposals are taken.
    pub fn ready_to_propose(&self) -> bool {
        self.shared.ready_to_propose.get()
    }

    /// The quorum as this node sees it (as of the loop's last turn).
    pub fn status(&self) -> QuorumStatus {
        self.shared.status.borrow().clone()
    }

    /// The metadata applied on this node.
    pub fn applied(&self) -> Arc<ClusterMetadata> {
        self.shared.applied.borrow().clone()
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<i32> {
        self.shared.status.borrow().leader_id
    }

    /// Messages dropped on arrival (queue full, not for this node, node stopped).
    pub fn incoming_dropped(&self) -> u64 {
        self.shared.incoming_dropped.get()
    }

    /// The node's journal (status, tests, the simulator's checks).
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// Why the node stopped by itself (a journal failure), if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.borrow().clone()
    }

    /// Stops the loop (waiting proposals get `Stopped`) and closes the journal.
    pub async fn stop(&self) {
        self.shared.stopping.set(true);
        self.shared.wake.notify_all();
        let task = self.task.borrow_mut().take();
        if let Some(task) = task {
            task.await;
            if let Err(e) = self.log.close().await {
                tracing::error!(error = %e, "closing the metadata raft log failed");
            }
        }
    }

    fn stopped_error(&self) -> ProposeError {
        match &*self.shared.failure.borrow() {
            Some(e) => ProposeError::Storage(e.clone()),
            None => ProposeError::Stopped,
        }
    }
}

/// Counts a proposal out of [`Shared::waiting`] however its future ends.
struct WaitingGuard<'a>(&'a Shared);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.waiting.set(self.0.waiting.get() - 1);
    }
}

/// The loop's state: owned by the node's task.
struct Driver {
    raw: RawNode<RaftLog>,
    log: RaftLog,
    shared: Rc<Shared>,
    outbox: Rc<dyn Fn(Message)>,
    on_applied: Rc<dyn Fn(Arc<ClusterMetadata>)>,
    /// Proposals in the raft log by counter.
    waiters: BTreeMap<u64, Waiter>,
    applied_index: u64,
    applied_term: u64,
    applied: Arc<ClusterMetadata>,
    /// This process start's random id, in every proposal id.
    incarnation: u64,
    next_proposal: u64,
    /// The (term, role) the election timeout was last randomized for.
    seen: (u64, StateRole),
    election_tick: usize,
    tick: Duration,
    cluster_id: String,
    /// The term in which this node proposed the bootstrap snapshot.
    bootstrap_term: u64,
    node_id: i32,
    /// When each peer was last heard from (unix ms), for the status.
    heard_ms: BTreeMap<u64, i64>,
    /// Followers sent a snapshot (raft id), with the ticks since ([`Driver::retry_lost_snapshots`]).
    snapshots_sent: RefCell<BTreeMap<u64, usize>>,
    /// The leader as last published (logged on change).
    known_leader: Option<i32>,
}

impl Driver {
    async fn run(mut self) {
        let mut next_tick = crate::rt::now() + self.tick;
        while !self.shared.stopping.get() {
            let wake = self.shared.wake.clone();
            // Registered before the queues are looked at: a wake-up in between is not lost.
            let wait = wake.wait();
            if self.idle() {
                let now = crate::rt::now();
                if next_tick > now {
                    futures_lite::future::or(wait, crate::rt::sleep(next_tick - now)).await;
                }
            } else {
                drop(wait);
            }
            if crate::rt::now() >= next_tick {
                self.raw.tick();
                self.randomize_election_timeout();
                self.retry_lost_snapshots();
                next_tick = crate::rt::now() + self.tick;
            }
            self.step_incoming();
            self.take_proposals();
            if let Err(e) = self.turn().await {
                self.fail(e);
                break;
            }
            crate::rt::yield_if_needed().await;
        }
        self.finish();
    }

    /// Nothing to do until the next tick or a wake-up.
    fn idle(&self) -> bool {
        self.shared.incoming.borrow().is_empty()
            && self.shared.proposals.borrow().is_empty()
            && !self.raw.has_ready()
    }

    /// Ready handling, bootstrap, compaction and status: what follows any input.
    async fn turn(&mut self) -> Result<(), StorageError> {
        while self.raw.has_ready() {
            self.handle_ready().await?;
        }
        self.randomize_election_timeout();
        self.fail_waiters_if_not_leader();
        self.propose_bootstrap();
        if self.raw.has_ready() {
            self.handle_ready().await?;
        }
        match self
            .log
            .compact_if_due(self.applied_index, &self.applied)
            .await
        {
            Ok(_) => {}
            // The journal is intact (the compaction was not applied in memory): try later.
            Err(e) => tracing::warn!(error = %e, "compacting the metadata raft log failed"),
        }
        self.publish_status();
        Ok(())
    }

    fn step_incoming(&mut self) {
        let messages: Vec<Message> = self.shared.incoming.borrow_mut().drain(..).collect();
        self.shared.incoming_bytes.set(0);
        let now_ms = crate::rt::unix_time_ms();
        for mut msg in messages {
            if self.raw.raft.prs().get(msg.from).is_some() {
                self.heard_ms.insert(msg.from, now_ms);
            }
            if msg.get_msg_type() == MessageType::MsgHeartbeat {
                // raft-rs panics on a heartbeat committing past this node's log: a leader that
                // still believes a wiped (or stale) node has its entries sends one. A lower
                // commit index is always safe: the appends carry it again.
                msg.commit = msg.commit.min(self.raw.raft.raft_log.last_index());
            }
            if let Err(e) = self.raw.step(msg) {
                tracing::debug!(error = %e, "metadata quorum: message not taken");
            }
            // After each call: two role changes between checks could hide a reset.
            self.randomize_election_timeout();
        }
    }

    fn take_proposals(&mut self) {
        let proposals: Vec<Proposal> = self.shared.proposals.borrow_mut().drain(..).collect();
        // Fresh: a message stepped just now may have ended this node's leadership.
        self.update_ready_to_propose();
        for proposal in proposals {
            if !self.shared.ready_to_propose.get() {
                let leader = self.leader();
                let _ = proposal.reply.send(Err(ProposeError::NotLeader { leader }));
                continue;
            }
            let data = match encode_records(&proposal.records) {
                Ok(data) if data.len() <= PROPOSAL_BYTES_MAX => data,
                Ok(data) => {
                    let e = format!(
                        "a change of {} bytes, at most {PROPOSAL_BYTES_MAX}",
                        data.len()
                    );
                    let _ = proposal.reply.send(Err(ProposeError::Storage(e)));
                    continue;
                }
                Err(e) => {
                    let _ = proposal.reply.send(Err(ProposeError::Storage(e)));
                    continue;
                }
            };
            let counter = self.next_proposal;
            self.next_proposal += 1;
            let before = self.raw.raft.raft_log.last_index();
            match self.raw.propose(self.proposal_id(counter), data) {
                Ok(()) if self.raw.raft.raft_log.last_index() == before + 1 => {
                    let index = before + 1;
                    let reply = proposal.reply;
                    self.waiters.insert(counter, Waiter { index, reply });
                }
                // A leader drops proposals past `max_uncommitted_size` (or while transferring).
                Ok(()) | Err(_) if self.raw.raft.state == StateRole::Leader => {
                    let _ = proposal.reply.send(Err(ProposeError::Overloaded));
                }
                Ok(()) | Err(_) => {
                    let leader = self.leader();
                    let _ = proposal.reply.send(Err(ProposeError::NotLeader { leader }));
                }
            }
        }
    }

    /// One Ready, in raft-rs's order (module doc, "The loop").
    async fn handle_ready(&mut self) -> Result<(), StorageError> {
        let mut ready = self.raw.ready();
        self.send(ready.take_messages());
        let snapshot = (!ready.snapshot().is_empty()).then(|| ready.snapshot().clone());
        let entries = ready.take_entries();
        let hard_state = ready.hs().cloned();
        self.log
            .persist(snapshot.clone(), entries, hard_state)
            .await?;
        if let Some(snapshot) = snapshot {
            self.apply_snapshot(&snapshot)?;
        }
        self.apply_entries(ready.take_committed_entries());
        self.send(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if light.commit_index().is_some() && self.raw.raft.prs().conf().voters().ids().len() > 1 {
            // The leader's commit index: durable so that a restart applies as far. (A sole
            // voter's durable entries are all committed: its journal says so at open.)
            let hs = self.raw.raft.hard_state();
            self.log.persist(None, Vec::new(), Some(hs)).await?;
        }
        self.send(light.take_messages());
        self.apply_entries(light.take_committed_entries());
        self.raw.advance_apply();
        Ok(())
    }

    fn send(&self, messages: Vec<Message>) {
        for msg in messages {
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshots_sent.borrow_mut().insert(msg.to, 0);
            }
            (self.outbox)(msg);
        }
    }

    /// A snapshot not acknowledged within an election timeout is reported failed: raft-rs then
    /// probes that follower and sends a new snapshot if it still needs one. raft-rs keeps a
    /// follower it sent a snapshot to in its Snapshot state, replicating nothing to it, until
    /// the follower's answer arrives or `report_snapshot` is called; the outbox cannot tell
    /// whether a message arrived, so a lost snapshot (or a lost answer) would stall that
    /// follower for good (found by `simulate_quorum`).
    fn retry_lost_snapshots(&mut self) {
        let mut sent = self.snapshots_sent.borrow_mut();
        if self.raw.raft.state != StateRole::Leader {
            sent.clear();
            return;
        }
        let timeout_ticks = self.election_tick;
        let raw = &mut self.raw;
        sent.retain(|&id, ticks| {
            let waiting = raw
                .raft
                .prs()
                .get(id)
                .is_some_and(|pr| pr.state == ProgressState::Snapshot);
            *ticks += 1;
            if waiting && *ticks >= timeout_ticks {
                raw.report_snapshot(id, SnapshotStatus::Failure);
                return false;
            }
            waiting
        });
    }

    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let metadata = snapshot_metadata(snapshot)?;
        let meta = snapshot.get_metadata();
        self.applied_index = meta.index;
        self.applied_term = meta.term;
        self.applied = Arc::new(metadata);
        *self.shared.applied.borrow_mut() = self.applied.clone();
        (self.on_applied)(self.applied.clone());
        // Every waiting proposal's index is covered by a snapshot from another leader.
        self.fail_waiters_up_to(meta.index);
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.applied_index + 1,
                "entries apply in order"
            );
            self.applied_index = entry.index;
            self.applied_term = entry.term;
            if let Some(next) = apply_entry(&self.applied, &entry) {
                self.applied = Arc::new(next);
                *self.shared.applied.borrow_mut() = self.applied.clone();
                (self.on_applied)(self.applied.clone());
            }
            if let Some(counter) = self.own_proposal(&entry.context) {
                if let Some(waiter) = self.waiters.remove(&counter) {
                    let _ = waiter.reply.send(Ok(self.applied.clone()));
                }
            }
            self.fail_waiters_up_to(entry.index);
        }
        self.update_ready_to_propose();
    }

    /// Waiters whose index is applied by now were not answered: another entry took it.
    fn fail_waiters_up_to(&mut self, index: u64) {
        let leader = self.leader();
        self.waiters.retain(|_, w| {
            if w.index > index {
                return true;
            }
            let _ = w.reply.send(Err(ProposeError::NotLeader { leader }));
            false
        });
    }

    /// A node that stepped down answers its waiting proposals NotLeader.
    fn fail_waiters_if_not_leader(&mut self) {
        if self.raw.raft.state != StateRole::Leader && !self.waiters.is_empty() {
            let leader = self.leader();
            for (_, w) in std::mem::take(&mut self.waiters) {
                let _ = w.reply.send(Err(ProposeError::NotLeader { leader }));
            }
        }
        self.update_ready_to_propose();
    }

    fn update_ready_to_propose(&self) {
        let ready = self.raw.raft.state == StateRole::Leader
            && self.applied_term == self.raw.raft.term
            && self.bootstrapped();
        self.shared.ready_to_propose.set(ready);
    }

    /// A new cluster's first leader writes its first metadata (module doc, "Bootstrap").
    fn propose_bootstrap(&mut self) {
        let term = self.raw.raft.term;
        if self.raw.raft.state != StateRole::Leader
            || self.applied_term != term
            || self.bootstrapped()
            || self.bootstrap_term == term
        {
            return;
        }
        self.bootstrap_term = term;
        let cluster_id = if self.cluster_id.is_empty() {
            new_cluster_id()
        } else {
            self.cluster_id.clone()
        };
        let metadata = ClusterMetadata {
            cluster_id,
            ..ClusterMetadata::default()
        };
        let records = [MetadataRecord::Snapshot { metadata }];
        let data = encode_records(&records).expect("empty metadata encodes");
        if let Err(e) = self.raw.propose(Vec::new(), data) {
            tracing::warn!(error = %e, "proposing the cluster's first metadata failed");
        }
    }

    /// Whether the applied metadata is a cluster's (not the empty metadata of a new
    /// multi-voter journal): metadata with content is never replaced by a bootstrap.
    fn bootstrapped(&self) -> bool {
        *self.applied != ClusterMetadata::default()
    }

    /// The proposal id of `counter` (module doc, "Proposals").
    fn proposal_id(&self, counter: u64) -> Vec<u8> {
        let mut id = Vec::with_capacity(20);
        id.extend_from_slice(&self.node_id.to_be_bytes());
        id.extend_from_slice(&self.incarnation.to_be_bytes());
        id.extend_from_slice(&counter.to_be_bytes());
        id
    }

    /// The counter of a proposal id made by this process start.
    fn own_proposal(&self, context: &[u8]) -> Option<u64> {
        if context.len() != 20
            || context[..4] != self.node_id.to_be_bytes()
            || context[4..12] != self.incarnation.to_be_bytes()
        {
            return None;
        }
        let counter: [u8; 8] = context[12..20].try_into().ok()?;
        Some(u64::from_be_bytes(counter))
    }

    fn leader(&self) -> Option<i32> {
        let id = self.raw.raft.leader_id;
        (id != 0).then(|| node_id_of(id))
    }

    /// Election timeouts from the simulation's seed (or at random) on every term or role
    /// change, instead of raft-rs's thread-local generator: a simulated run replays.
    fn randomize_election_timeout(&mut self) {
        let now = (self.raw.raft.term, self.raw.raft.state);
        if now == self.seen {
            return;
        }
        self.seen = now;
        let spread = random_u64() % self.election_tick as u64;
        self.raw
            .raft
            .set_randomized_election_timeout(self.election_tick + spread as usize);
    }

    fn publish_status(&mut self) {
        let leader = self.leader();
        if leader != self.known_leader {
            self.known_leader = leader;
            tracing::debug!(node = self.node_id, leader = ?leader, term = self.raw.raft.term, "metadata quorum leader");
        }
        let raft = &self.raw.raft;
        let now_ms = crate::rt::unix_time_ms();
        let last_index = raft.raft_log.last_index();
        let mut voters: Vec<ReplicaStatus> = raft
            .prs()
            .iter()
            .map(|(id, progress)| {
                let own = *id == raft.id;
                let leader = raft.state == StateRole::Leader;
                let log_end = match (own, leader) {
                    (true, _) => last_index,
                    (false, true) => progress.matched,
                    (false, false) => 0,
                };
                let heard = if own {
                    now_ms
                } else {
                    self.heard_ms.get(id).copied().unwrap_or(-1)
                };
                let caught_up = if own || (leader && progress.matched >= last_index) {
                    heard
                } else {
                    -1
                };
                ReplicaStatus {
                    node_id: node_id_of(*id),
                    log_end_offset: log_end as i64,
                    last_fetch_timestamp_ms: if own || leader { heard } else { -1 },
                    last_caught_up_timestamp_ms: caught_up,
                }
            })
            .collect();
        voters.sort_by_key(|v| v.node_id);
        *self.shared.status.borrow_mut() = QuorumStatus {
            leader_id: self.leader(),
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.applied_index,
            voters,
            observers: Vec::new(),
        };
    }

    fn fail(&mut self, e: StorageError) {
        tracing::error!(error = %e, "metadata raft log write failed; the quorum node stops");
        *self.shared.failure.borrow_mut() = Some(e.to_string());
    }

    /// The loop ended: answer everyone waiting, take no more input.
    fn finish(&mut self) {
        self.shared.stopped.set(true);
        self.shared.ready_to_propose.set(false);
        let error = match &*self.shared.failure.borrow() {
            Some(e) => ProposeError::Storage(e.clone()),
            None => ProposeError::Stopped,
        };
        for (_, w) in std::mem::take(&mut self.waiters) {
            let _ = w.reply.send(Err(error.clone()));
        }
        for p in self.shared.proposals.borrow_mut().drain(..) {
            let _ = p.reply.send(Err(error.clone()));
        }
        self.shared.incoming.borrow_mut().clear();
        self.shared.incoming_bytes.set(0);
        let mut status = self.shared.status.borrow_mut();
        status.leader_id = None;
    }
}

/// About the memory a message holds: its entries' and snapshot's data plus a fixed part.
fn message_bytes(msg: &Message) -> usize {
    let entries: usize = msg
        .entries
        .iter()
        .map(|e| e.data.len() + e.context.len() + 64)
        .sum();
    entries + msg.get_snapshot().data.len() + 128
}

/// The term of the entry at `index` as raft-rs sees it (0 if compacted away).
fn log_term(raw: &RawNode<RaftLog>, index: u64) -> u64 {
    raw.raft.raft_log.term(index).unwrap_or(0)
}

/// A random number: from the simulation's seed under `rt::sim`, else from the OS.
fn random_u64() -> u64 {
    if crate::rt::sim::is_active() {
        crate::rt::sim::random_u64()
    } else {
        uuid::Uuid::new_v4().as_u64_pair().0
    }
}

/// A cluster id shaped like Kafka's, from 16 random bytes (the simulation's seed under
/// `rt::sim`).
fn new_cluster_id() -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&random_u64().to_be_bytes());
    bytes[8..].copy_from_slice(&random_u64().to_be_bytes());
    crate::cluster::cluster_id_of(bytes)
}

/// raft-rs's log lines (it logs through `slog`) forwarded to `tracing` with their key-values:
/// errors and warnings as they are, the rest (elections, appends) at debug level.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        use slog::KV;
        let mut line = KvLine(record.msg().to_string());
        let _ = record.kv().serialize(record, &mut line);
        let _ = values.serialize(record, &mut line);
        let line = line.0;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{line}"),
            slog::Level::Warning => tracing::warn!(target: "raft", "{line}"),
            _ => tracing::debug!(target: "raft", "{line}"),
        }
        Ok(())
    }
}

/// A log line with `key=value` pairs appended.
struct KvLine(String);

impl slog::Serializer for KvLine {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}
