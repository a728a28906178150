//! The group coordinator's runtime on the coordinator shard (shard 0): runs the pure state
//! machines of `coordinator::group` and `coordinator::offsets` and does their I/O.
//!
//! [`GroupCoordinator`] lives inside every [`super::Shard`] but is used on shard 0 only
//! (created with the shard, loaded by [`GroupCoordinator::load`] at startup, closed at
//! shutdown); other shards reach it with `invoke_on(COORDINATOR_SHARD, ...)`.
//!
//! - Delayed answers: a JoinGroup or SyncGroup gets a request id and a one-shot channel kept in
//!   `replies`; the request waits on the channel, and whichever call produces the
//!   `Effect::Reply` for that id (a later join, a leader's sync, a tick) completes it.
//! - Timers: [`GroupCoordinator::tick`] expires sessions and ends rebalances. A timer task on
//!   shard 0 does nothing else: it sleeps until [`GroupCoordinator::next_deadline_ms`] (at most
//!   [`GROUP_TICK_INTERVAL_MS`]), so a session ends on time whatever persistence or compaction
//!   is doing; DescribeGroups and DeleteGroups also bring their group's timers up to date
//!   first. The periodic work with I/O (writing changed groups, expiring offsets, compaction)
//!   runs in a separate loop every [`GROUP_TICK_INTERVAL_MS`].
//! - Durability (single node): committed offsets are appended to the internal log
//!   `<data_dir>/internal/__consumer_offsets-0/` (an [`InternalLog`] over a partition log, so
//!   group-committed and fdatasync'd like any partition) and applied to the table only once the append is durable,
//!   so a commit is acknowledged only when it survives a crash. [`GroupCoordinator::load`]
//!   replays the log. [`GroupCoordinator::maybe_compact`] (at load and on ticks) rewrites the
//!   live offsets and group snapshots once superseded records dominate, and moves the log
//!   start past the rest. The directory cannot collide with a topic's (topic directories sit
//!   directly in the data directory).
//! - Durability in a cluster: the same records go to the replicated `__consumer_offsets`
//!   partitions this node leads instead, loaded when it becomes their leader and unloaded when
//!   it stops (`replicated`).
//! - Group metadata: classic and KIP-848 groups whose durable state changed are written to the
//!   same log as snapshots by [`GroupCoordinator::persist_groups`] (before SyncGroup,
//!   LeaveGroup, ConsumerGroupHeartbeat and DeleteGroups answer; changes by timeouts from the
//!   tick; at shutdown), and rebuilt by `load`. Followers' SyncGroup answers go out with the
//!   leader's, before the write.
//! - KIP-848 consumer groups (`coordinator::consumer_group`) share the group id namespace with
//!   classic groups: an empty group of one kind gives its id to the other, a group with
//!   members keeps it.

//!
//! The parts, by seam: `offsets_log` (the internal offsets log: load, durable writes, group
//! snapshots, compaction), `membership` (the delayed-reply plumbing and the membership APIs:
//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ConsumerGroupHeartbeat), `timers` (the tick
//! and offset expiry), `offsets_api` (OffsetCommit, OffsetFetch, OffsetDelete, deleted
//! topics), `describe` (ListGroups, DescribeGroups, ConsumerGroupDescribe, DeleteGroups).

mod describe;
mod membership;
mod offsets_api;
pub mod offsets_log;
pub mod replicated;
#[cfg(test)]
mod tests;
mod timers;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use crate::coordinator::consumer_group::{ConsumerGroupConfig, ConsumerGroups};
use crate::coordinator::group::{GroupConfig, Groups, RequestId, Response};
use crate::coordinator::offsets::Offsets;
use crate::storage::internal_log::InternalLog;

pub use describe::{
    ConsumerGroupDescription, ConsumerMemberDescription, GroupDescription, ListedGroup,
    MemberDescription,
};
pub use offsets_api::{Committer, FetchedOffsets};
pub use offsets_log::{offsets_log_dir, OffsetsCodec, OFFSETS_LOG_LIMITS, OFFSETS_LOG_NAME};

/// How often the coordinator shard ticks the group state machine, in milliseconds.
pub const GROUP_TICK_INTERVAL_MS: u64 = 250;

/// Where a group coordinator's records go: the node-local offsets log (a single node), or the
/// replicated `__consumer_offsets` partitions this node leads (a cluster, `replicated`).
#[derive(Clone)]
enum OffsetsStore {
    Local(Rc<InternalLog<OffsetsCodec>>),
    Replicated(Rc<replicated::ReplicatedOffsets>),
}

/// The coordinator shard's group state; see the module doc.
pub struct GroupCoordinator {
    pub groups: RefCell<Groups>,
    /// KIP-848 consumer groups. A group id is a classic group or a consumer group, never both.
    pub consumer: RefCell<ConsumerGroups>,
    pub offsets: RefCell<Offsets>,
    /// Where the durable state lives; `None` until loaded.
    log: RefCell<Option<OffsetsStore>>,
    replies: RefCell<HashMap<RequestId, flume::Sender<Response>>>,
    next_request_id: Cell<RequestId>,
    /// When expired offsets were last looked for.
    last_expiry_check_ms: Cell<i64>,
    /// Serializes group snapshot writes, so a later write always holds a later state.
    persist_lock: crate::rt::sync::Semaphore,
    /// Offsets held for transactions coordinated on other nodes, until their markers
    /// (`shard::txns`); durable in the offsets log.
    pub pending: RefCell<crate::coordinator::offsets::PendingTxnOffsets>,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig, consumer_config: ConsumerGroupConfig) -> GroupCoordinator {
        let salt = uuid::Uuid::new_v4();
        let consumer_salt = salt.as_u64_pair().1;
        let salt = salt.simple().to_string();
        GroupCoordinator {
            groups: RefCell::new(Groups::new(config, salt[..8].to_string())),
            consumer: RefCell::new(ConsumerGroups::new(consumer_config, consumer_salt)),
            offsets: RefCell::new(Offsets::default()),
            log: RefCell::new(None),
            replies: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(1),
            last_expiry_check_ms: Cell::new(0),
            persist_lock: crate::rt::sync::Semaphore::new(1),
            pending: RefCell::new(crate::coordinator::offsets::PendingTxnOffsets::new()),
        }
    }

    /// True once the offsets table is loaded (and commits can be written).
    pub fn is_loaded(&self) -> bool {
        self.log.borrow().is_some()
    }

    /// The node-local offsets log (tests of a single node's coordinator).
    #[cfg(test)]
    fn local_log(&self) -> Rc<InternalLog<OffsetsCodec>> {
        match self.log.borrow().clone() {
            Some(OffsetsStore::Local(log)) => log,
            _ => panic!("no node-local offsets log"),
        }
    }

    /// Flushes and closes the offsets log (shutdown), after writing the groups that changed.
    pub async fn close(&self) {
        self.persist_groups().await;
        let log = self.log.borrow_mut().take();
        if let Some(OffsetsStore::Local(log)) = log {
            if let Err(e) = log.close().await {
                tracing::error!(error = %e, "closing the offsets log failed");
            }
        }
    }
}
