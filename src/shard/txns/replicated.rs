//! The transaction coordinator's durable state in a cluster: the replicated partitions of
//! `__transaction_state` (Kafka's `TransactionStateManager` over its internal topic).
//!
//! On a single node the coordinator keeps its records in the node-local transaction log
//! (`internal/__transaction_state-0`). In a cluster the records of a transactional id go to
//! partition `abs(hashCode(id)) % N` of `__transaction_state`, a compacted topic with
//! `transaction_state_log_replication_factor` replicas and `transaction_state_log_min_isr` as
//! its `min.insync.replicas`, that the shards open and the follower fetchers replicate like any
//! partition; the same records ([`TxnCodec`]), only elsewhere. The led partitions, the replay
//! and the acks=all append are shared with the group coordinator
//! (`shard::internal_partitions`).
//! - **Writes** ([`TxnCoordinator::persist_replicated`]): the records of one write are split
//!   by partition; each part is one append on the partition's owning shard as its leader,
//!   answered once the high watermark passes it (refused with NOT_ENOUGH_REPLICAS below
//!   `min.insync.replicas`; at most the transaction's timeout, as Kafka), one write at a time
//!   per partition (the last record of an id in the log is its latest state). Errors are
//!   Kafka's (`error::replicated_txn_log_code`); a partition that moved meanwhile is
//!   NOT_COORDINATOR. The state machine decides before the write (as on a single node); a
//!   failed write leaves the id marked unpersisted, or its plan pending, as there.
//! - **Load** (becoming leader of p, seen at a metadata install on the coordinator shard,
//!   [`TxnCoordinator::on_metadata`]): a task waits until the owning shard leads p, replays p
//!   from its log start to its log end into a state machine of its own, then
//!   ([`Transactions::recover_moved`]) leaves Prepare* transactions to the tick, which writes
//!   their markers again with this coordinator's epoch and completes them (Kafka's
//!   `TransactionMarkerChannelManager` on load); Ongoing transactions stay open and time out
//!   as usual, except those holding groups (their TxnOffsetCommit offsets were in the old
//!   coordinator's memory only), which are aborted with a bumped epoch. Meanwhile the ids of p
//!   answer COORDINATOR_LOAD_IN_PROGRESS (`Shard::not_coordinator`, through the router's
//!   `LoadedPartitions`).
//! - **Unload** (losing the leadership of p, or a new leader epoch): p's ids are forgotten
//!   without a write (their next coordinator replays them); their requests get
//!   NOT_COORDINATOR, and a plan running for one of them stops: its marker rounds at once
//!   (`write_markers`, woken by the unload), otherwise at its next write.
//! - **Compaction**: the partitions are compact topics, kept bounded on every replica by the
//!   log cleaner (the latest record per id; expired ids' tombstones); the node-local log's own
//!   compaction is not used.
//!
//! Not done: a cluster that created `__transaction_state` before this store existed (one
//! replica, state in each node's `internal/__transaction_state-0`) now opens those partitions
//! empty; the node-local records are not migrated, so a transaction open across that upgrade
//! is never completed by a coordinator (no markers: its partitions' last stable offset stays
//! behind it). The state machine decides
//! before the write (Kafka keeps a pending state until the append completes); since every
//! record holds the id's whole state, the log's last record of an id is always a state the
//! coordinator was in, and nothing is answered before its record is replicated.
//!
//! Bounds: a replay read is at most 1 MiB (`internal_log::REPLAY_READ_BYTES_MAX`); a load
//! holds the live state of one partition (what the state machine holds once it is loaded);
//! an append is at most `max_message_bytes` per batch ([`TXN_LOG_LIMITS`]).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use super::{now_ms, TxnCodec, TxnCoordinator, TxnLogRecord, TxnStore, TXN_LOG_LIMITS};
use crate::coordinator::coordinator_key::{partition_for, TRANSACTION_TOPIC};
use crate::coordinator::metadata::ClusterMetadata;
use crate::coordinator::txn::Transactions;
use crate::shard::internal_partitions::{replay, LedPartitions};
use crate::shard::Shard;
use crate::storage::internal_log::encode_append;

/// The replicated store of a cluster's transaction coordinator; see the module doc. Owned by
/// the coordinator shard's [`TxnCoordinator`] from `start_replicated` to shutdown.
pub struct ReplicatedTxns {
    led: LedPartitions,
}

impl TxnCoordinator {
    /// Makes this coordinator keep its state in the replicated `__transaction_state`
    /// partitions (a cluster), then loads the partitions `shard`'s metadata says it leads.
    pub fn start_replicated(&self, shard: &Rc<Shard>) {
        let store = ReplicatedTxns {
            led: LedPartitions::new(
                shard,
                TRANSACTION_TOPIC,
                shard.router.loaded_txn_partitions(),
            ),
        };
        *self.store.borrow_mut() = Some(TxnStore::Replicated(Rc::new(store)));
        self.on_metadata(&shard.metadata());
    }

    fn replicated(&self) -> Option<Rc<ReplicatedTxns>> {
        match &*self.store.borrow() {
            Some(TxnStore::Replicated(store)) => Some(store.clone()),
            _ => None,
        }
    }

    /// The coordinator shard installed `metadata`: loads the `__transaction_state`
    /// partitions this node now leads and unloads those it stopped leading (or leads at a
    /// new epoch, which are loaded again). Nothing on a single node.
    pub fn on_metadata(&self, metadata: &ClusterMetadata) {
        let Some(store) = self.replicated() else {
            return;
        };
        store.led.on_metadata(
            metadata,
            |p| self.unload_partition(&store, p),
            |shard, p, epoch| load_partition(shard, store.clone(), p, epoch),
        );
    }

    /// The `__transaction_state` partition of `transactional_id` and the leader epoch this
    /// node leads it at; `None` on a single node (nothing moves) or when not led.
    pub(super) fn txn_partition_led(&self, transactional_id: &str) -> Option<(i32, i32)> {
        let store = self.replicated()?;
        let n = store.led.partitions();
        if n <= 0 {
            return None;
        }
        let p = partition_for(transactional_id, n);
        Some((p, store.led.epoch_of(p)?))
    }

    /// Does this node still lead partition `p` of `__transaction_state` at `epoch`?
    pub(super) fn still_leads(&self, p: i32, epoch: i32) -> bool {
        self.replicated()
            .is_some_and(|store| store.led.still(p, epoch, false))
    }

    /// Forgets partition `p`'s transactional ids (module doc) and stops the marker rounds
    /// running for them ([`super::write_markers`]).
    fn unload_partition(&self, store: &ReplicatedTxns, p: i32) {
        let n = store.led.partitions();
        let count = self
            .state
            .borrow_mut()
            .unload_where(|id| n <= 0 || partition_for(id, n) == p);
        tracing::info!(
            partition = p,
            transactional_ids = count,
            "unloaded the transactional ids of a __transaction_state partition"
        );
        self.unloaded.notify_all();
    }

    /// Installs what a load of partition `p` rebuilt (module doc); the tick runs the plans.
    fn install_loaded(&self, store: &ReplicatedTxns, p: i32, mut loaded: Transactions) {
        // The tick runs the plans (`pending_plans`).
        let to_finish = loaded.recover_moved(now_ms()).len();
        let ids = loaded.iter().count();
        self.state.borrow_mut().absorb(loaded);
        store.led.mark_loaded(p);
        tracing::info!(
            partition = p,
            transactional_ids = ids,
            to_finish,
            "loaded the transactional ids of a __transaction_state partition"
        );
    }

    /// Appends `records` to their `__transaction_state` partitions (module doc), each part
    /// waiting at most `timeout` for the in-sync replicas. The first error is answered; the
    /// other partitions' parts are still written.
    pub(super) async fn persist_replicated(
        &self,
        store: &ReplicatedTxns,
        records: Vec<TxnLogRecord>,
        timeout: Duration,
    ) -> Result<(), ResponseError> {
        let n = store.led.partitions();
        if n <= 0 {
            return Err(crate::error::not_coordinator_code());
        }
        let mut parts: BTreeMap<i32, Vec<TxnLogRecord>> = BTreeMap::new();
        for record in records {
            parts
                .entry(partition_for(&record.0, n))
                .or_default()
                .push(record);
        }
        let mut answer = Ok(());
        for (p, part) in parts {
            if let Err(e) = self.append_partition(store, p, part, timeout).await {
                answer = answer.and(Err(e));
            }
        }
        answer
    }

    async fn append_partition(
        &self,
        store: &ReplicatedTxns,
        p: i32,
        records: Vec<TxnLogRecord>,
        timeout: Duration,
    ) -> Result<(), ResponseError> {
        let (lock, epoch) = match store.led.writable(p) {
            Ok(writable) => writable,
            Err(e) => {
                if store.led.epoch_of(p).is_none() {
                    // Decided here for a partition this node does not lead (a request that
                    // raced a move): the id's coordinator is elsewhere, forget it here.
                    let ids: Vec<&str> = records.iter().map(|(id, _)| id.as_str()).collect();
                    self.state.borrow_mut().unload_where(|id| ids.contains(&id));
                }
                return Err(e);
            }
        };
        let Ok(_permit) = lock.acquire_permit(1).await else {
            return Err(crate::error::not_coordinator_code());
        };
        let payload =
            encode_append::<TxnCodec>(&TXN_LOG_LIMITS, &records, now_ms()).map_err(|e| {
                tracing::error!(error = %e, "encoding a transaction state batch failed");
                ResponseError::UnknownServerError
            })?;
        let shard = store
            .led
            .shard()
            .ok_or(crate::error::coordinator_gone_code())?;
        let owner = shard.owner(TRANSACTION_TOPIC, p);
        let written = shard
            .invoke_on(owner, move |s| async move {
                s.append_internal_partition(TRANSACTION_TOPIC, p, payload, timeout)
                    .await
            })
            .await
            .unwrap_or(Err(crate::error::coordinator_gone_code()));
        if let Err(e) = written {
            tracing::warn!(partition = p, error = ?e, "writing to __transaction_state failed");
            return Err(crate::error::replicated_txn_log_code(e));
        }
        // Moved meanwhile: the next coordinator replays the record; the client asks it.
        if !store.led.still(p, epoch, true) {
            return Err(crate::error::not_coordinator_code());
        }
        Ok(())
    }
}

/// The load of partition `p` at leader epoch `epoch` (module doc); abandoned as soon as this
/// node no longer leads `p` at that epoch.
async fn load_partition(shard: Rc<Shard>, store: Rc<ReplicatedTxns>, p: i32, epoch: i32) {
    let mut loaded = Transactions::new();
    let still = || store.led.still(p, epoch, false);
    let done = replay::<TxnCodec>(&shard, TRANSACTION_TOPIC, p, still, |record| match record {
        (_, Some(r)) => loaded.load(r),
        (id, None) => loaded.unload(&id),
    })
    .await;
    if done {
        shard.txns.install_loaded(&store, p, loaded);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::coordinator::coordinator_key::CoordinatorKind;
    use crate::coordinator::txn::{TxnRecord, TxnState};
    use crate::shard::internal_partitions::test_support;
    use crate::storage::io::sim::{install, SimDisk};

    fn metadata(version: u64, leader: i32) -> Arc<ClusterMetadata> {
        test_support::metadata(TRANSACTION_TOPIC, version, leader)
    }

    fn record(state: TxnState) -> TxnRecord {
        TxnRecord {
            transactional_id: "tx".into(),
            producer_id: 4000,
            epoch: 2,
            timeout_ms: 60_000,
            state,
            partitions: vec![("t".into(), 0)],
            groups: Vec::new(),
            start_ms: now_ms(),
            offsets: Vec::new(),
            last_update_ms: now_ms(),
        }
    }

    async fn loaded(shard: &Rc<Shard>) {
        test_support::loaded(shard, CoordinatorKind::Transaction, "tx").await
    }

    /// The transitions of a cluster's transaction coordinator: not the leader
    /// (NOT_COORDINATOR, writes refused), leader (COORDINATOR_LOAD_IN_PROGRESS until the
    /// partition is replayed, then records are written to the partition), leadership lost
    /// (the id forgotten, NOT_COORDINATOR), leader again at a new epoch (the partition
    /// replayed again: the transaction is back in PrepareCommit, its plan pending, so the
    /// tick writes its markers again).
    #[test]
    fn transactional_ids_load_on_leadership_and_unload_when_it_moves() {
        crate::rt::sim::run(22, async {
            let disk = SimDisk::new(22);
            let _installed = install(&disk);
            let (shard, _inboxes) = test_support::shard(metadata(1, 1)).await;
            shard.txns.start_replicated(&shard);
            let not_coordinator = Some(ResponseError::NotCoordinator);
            assert_eq!(
                shard.not_coordinator(CoordinatorKind::Transaction, "tx"),
                not_coordinator
            );
            let refused = shard.txns.persist(&record(TxnState::Ongoing)).await;
            assert_eq!(refused, Err(ResponseError::NotCoordinator));

            shard.install_metadata(metadata(2, 0)).await;
            assert_eq!(
                shard.not_coordinator(CoordinatorKind::Transaction, "tx"),
                Some(ResponseError::CoordinatorLoadInProgress),
                "led, not loaded yet"
            );
            loaded(&shard).await;
            for state in [TxnState::Ongoing, TxnState::PrepareCommit] {
                shard.txns.state.borrow_mut().load(record(state));
                shard.txns.persist(&record(state)).await.expect("written");
            }
            let p = shard.partition(TRANSACTION_TOPIC, 0).expect("led");
            assert_eq!(p.log.high_watermark(), 2, "two records, replicated");

            shard.install_metadata(metadata(3, 1)).await;
            assert!(shard.txns.state.borrow().get("tx").is_none(), "unloaded");
            assert_eq!(
                shard.not_coordinator(CoordinatorKind::Transaction, "tx"),
                not_coordinator
            );
            let refused = shard.txns.persist(&record(TxnState::Ongoing)).await;
            assert_eq!(refused, Err(ResponseError::NotCoordinator));

            shard.install_metadata(metadata(4, 0)).await;
            loaded(&shard).await;
            let state = shard.txns.state.borrow().get("tx").map(|m| m.state);
            assert_eq!(state, Some(TxnState::PrepareCommit), "replayed");
            let pending = shard.txns.state.borrow().pending_plans();
            assert_eq!(pending.len(), 1, "its markers are written again");
            assert!(pending[0].commit);
            shard.close_partitions().await;
        });
    }
}
