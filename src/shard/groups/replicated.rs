//! The group coordinator's durable state in a cluster: the replicated partitions of
//! `__consumer_offsets` (Kafka's `GroupMetadataManager` over its internal topic).
//!
//! On a single node the coordinator keeps its records in the node-local offsets log
//! (`offsets_log`). In a cluster the records of a group go to partition
//! `abs(hashCode(group)) % N` of `__consumer_offsets`, a compacted topic with
//! `offsets_topic_replication_factor` replicas that the shards open and the follower fetchers
//! replicate like any partition (`shard::replication`); the same records, in the same codec
//! ([`OffsetsCodec`]), only elsewhere:
//! - **Writes** ([`GroupCoordinator::append_replicated`]): the records of one append are split
//!   by partition; each part is one append on the partition's owning shard as its leader,
//!   answered once the high watermark passes it (acks=all: refused with NOT_ENOUGH_REPLICAS
//!   below `min.insync.replicas`, at most `offsets_commit_timeout_ms`), and only then applied
//!   to the tables. Errors are Kafka's (`error::replicated_offsets_code`). One write at a time
//!   per partition, so the tables apply the records in log order.
//! - **Load** (becoming leader of p, seen at a metadata install on the coordinator shard,
//!   [`GroupCoordinator::on_metadata`]): a task waits until the owning shard leads p, replays
//!   p from its log start to its log end (the new leader's log is the truth: what the old
//!   leader acknowledged is below its high watermark, so in every in-sync replica's log) into
//!   tables of its own, then installs them. Meanwhile the groups of p answer
//!   COORDINATOR_LOAD_IN_PROGRESS (`internal_partitions::LoadedPartitions`, seen by every
//!   shard through the router, asked by `Shard::not_coordinator`).
//! - **Unload** (losing the leadership of p, or a new leader epoch: another broker may have
//!   led p in between): p's groups, committed and held offsets are forgotten without a write,
//!   parked JoinGroup/SyncGroup requests of their members are dropped (answered
//!   COORDINATOR_NOT_AVAILABLE: the client looks the coordinator up again), and a load in
//!   flight for p is abandoned.
//! - **Compaction**: the partitions are compact topics (`cleanup.policy=compact`), kept
//!   bounded on every replica by the log cleaner; a held-offsets record of a producer holds all
//!   of that producer's offsets held in its partition, so the cleaner keeping only the last
//!   one per producer loses nothing.
//!
//! The pieces shared with the transaction coordinator (led partitions, replay, the acks=all
//! append) are in `shard::internal_partitions`.
//!
//! Bounds: a replay read is at most 1 MiB (`internal_log::REPLAY_READ_BYTES_MAX`); a load holds the live state of
//! one partition (what the tables hold once it is loaded); an append is at most
//! `max_message_bytes` per batch (`OFFSETS_LOG_LIMITS`).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::offsets_log::{OffsetsCodec, OFFSETS_LOG_LIMITS};
use super::{GroupCoordinator, OffsetsStore};
use crate::coordinator::coordinator_key::{partition_for, GROUP_TOPIC};
use crate::coordinator::metadata::ClusterMetadata;
use crate::coordinator::offsets::{
    GroupKind, LogRecord, OffsetKey, Offsets, PendingChange, PendingTxnOffsets,
};
use crate::shard::internal_partitions::{replay, LedPartitions};
use crate::shard::Shard;
use crate::storage::internal_log::encode_append;

/// The replicated store of a cluster's group coordinator; see the module doc.
pub struct ReplicatedOffsets {
    led: LedPartitions,
    commit_timeout: Duration,
}

/// What a load rebuilt from one partition, installed at once when it is done.
#[derive(Default)]
struct Staged {
    offsets: Offsets,
    pending: PendingTxnOffsets,
    snapshots: BTreeMap<(GroupKind, String), Option<Bytes>>,
    records: usize,
}

impl Staged {
    fn apply(&mut self, record: LogRecord) {
        self.records += 1;
        match record {
            LogRecord::Offset(change) => self.offsets.apply(change),
            LogRecord::Group((kind, group, snapshot)) => {
                self.snapshots.insert((kind, group), snapshot);
            }
            LogRecord::Pending(producer_id, change) => self.pending.apply(producer_id, change),
        }
    }
}

/// The group id a record belongs to (held offsets: each key's own).
fn record_group(record: &LogRecord) -> Option<&str> {
    match record {
        LogRecord::Offset((key, _)) => Some(&key.group),
        LogRecord::Group((_, group, _)) => Some(group),
        LogRecord::Pending(..) => None,
    }
}

impl GroupCoordinator {
    /// Makes this coordinator keep its state in the replicated `__consumer_offsets`
    /// partitions (a cluster), then loads the partitions `shard`'s metadata says it leads.
    pub fn start_replicated(&self, shard: &Rc<Shard>) {
        let store = ReplicatedOffsets {
            led: LedPartitions::new(shard, GROUP_TOPIC, shard.router.loaded_offsets_partitions()),
            commit_timeout: Duration::from_millis(shard.config.offsets_commit_timeout_ms),
        };
        *self.log.borrow_mut() = Some(OffsetsStore::Replicated(Rc::new(store)));
        self.on_metadata(&shard.metadata());
    }

    fn replicated(&self) -> Option<Rc<ReplicatedOffsets>> {
        match &*self.log.borrow() {
            Some(OffsetsStore::Replicated(store)) => Some(store.clone()),
            _ => None,
        }
    }

    /// The coordinator shard installed `metadata`: loads the `__consumer_offsets` partitions
    /// this node now leads and unloads those it stopped leading (or leads at a new epoch,
    /// which are loaded again). Nothing on a single node.
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

    /// Forgets partition `p`'s groups and offsets (see the module doc).
    fn unload_partition(&self, store: &ReplicatedOffsets, p: i32) {
        let n = store.led.partitions();
        let in_p = |group: &str| n <= 0 || partition_for(group, n) == p;
        let parked = self.groups.borrow_mut().unload(in_p);
        for id in parked {
            // Dropping the sender answers the parked request (the coordinator is gone).
            self.replies.borrow_mut().remove(&id);
        }
        self.consumer.borrow_mut().unload(in_p);
        self.offsets.borrow_mut().unload(in_p);
        self.pending.borrow_mut().unload(in_p);
        tracing::info!(
            partition = p,
            "unloaded the groups of a __consumer_offsets partition"
        );
    }

    /// Installs what a load of partition `p` rebuilt.
    fn install_loaded(&self, store: &ReplicatedOffsets, p: i32, staged: Staged) {
        let Staged {
            offsets,
            pending,
            snapshots,
            records,
        } = staged;
        let groups = offsets.group_ids().len();
        {
            let mut table = self.offsets.borrow_mut();
            for change in offsets.all_changes() {
                table.apply(change);
            }
        }
        {
            let mut held = self.pending.borrow_mut();
            for record in pending.records() {
                if let LogRecord::Pending(producer_id, change) = record {
                    held.apply(producer_id, change);
                }
            }
        }
        self.restore_groups(snapshots);
        store.led.mark_loaded(p);
        tracing::info!(
            partition = p,
            records,
            groups,
            "loaded the groups of a __consumer_offsets partition"
        );
    }

    /// Splits `records` by `__consumer_offsets` partition (of `n`). A held-offsets record
    /// becomes one per partition holding all the producer's offsets held there (module doc).
    fn split_by_partition(&self, records: Vec<LogRecord>, n: i32) -> BTreeMap<i32, Vec<LogRecord>> {
        let mut out: BTreeMap<i32, Vec<LogRecord>> = BTreeMap::new();
        for record in records {
            if let Some(group) = record_group(&record) {
                out.entry(partition_for(group, n)).or_default().push(record);
                continue;
            }
            let LogRecord::Pending(producer_id, change) = record else {
                continue;
            };
            match change {
                PendingChange::Hold(offsets) => {
                    let mut parts: BTreeMap<i32, BTreeMap<OffsetKey, _>> = BTreeMap::new();
                    for (k, v) in offsets {
                        parts
                            .entry(partition_for(&k.group, n))
                            .or_default()
                            .insert(k, v);
                    }
                    for (p, new) in parts {
                        let mut all: BTreeMap<OffsetKey, _> = self
                            .pending
                            .borrow()
                            .for_marker(producer_id, |g| partition_for(g, n) == p)
                            .into_iter()
                            .collect();
                        all.extend(new);
                        let hold = PendingChange::Hold(all.into_iter().collect());
                        out.entry(p)
                            .or_default()
                            .push(LogRecord::Pending(producer_id, hold));
                    }
                }
                PendingChange::Release(keys) => {
                    let mut parts: BTreeMap<i32, Vec<OffsetKey>> = BTreeMap::new();
                    for k in keys {
                        parts.entry(partition_for(&k.group, n)).or_default().push(k);
                    }
                    for (p, keys) in parts {
                        out.entry(p).or_default().push(LogRecord::Pending(
                            producer_id,
                            PendingChange::Release(keys),
                        ));
                    }
                }
            }
        }
        out
    }

    /// Appends `records` to their `__consumer_offsets` partitions (module doc) and applies
    /// each partition's part once its in-sync replicas have it. The first error is answered;
    /// the other partitions' parts are still written.
    pub(super) async fn append_replicated(
        &self,
        store: Rc<ReplicatedOffsets>,
        records: Vec<LogRecord>,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        let n = store.led.partitions();
        if n <= 0 {
            return Err(crate::error::not_coordinator_code());
        }
        let mut answer = Ok(());
        for (p, part) in self.split_by_partition(records, n) {
            if let Err(e) = self.append_partition(&store, p, part, now_ms).await {
                answer = answer.and(Err(e));
            }
        }
        answer
    }

    async fn append_partition(
        &self,
        store: &ReplicatedOffsets,
        p: i32,
        records: Vec<LogRecord>,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        let (lock, epoch) = store.led.writable(p)?;
        let Ok(_permit) = lock.acquire_permit(1).await else {
            return Err(crate::error::not_coordinator_code());
        };
        let payload = match encode_append::<OffsetsCodec>(&OFFSETS_LOG_LIMITS, &records, now_ms) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::error!(error = %e, "encoding an offsets batch failed");
                return Err(crate::error::offsets_log_code(&e));
            }
        };
        let shard = store
            .led
            .shard()
            .ok_or(crate::error::coordinator_gone_code())?;
        let owner = shard.owner(GROUP_TOPIC, p);
        let timeout = store.commit_timeout;
        let written = shard
            .invoke_on(owner, move |s| async move {
                s.append_internal_partition(GROUP_TOPIC, p, payload, timeout)
                    .await
            })
            .await
            .unwrap_or(Err(crate::error::coordinator_gone_code()));
        if let Err(e) = written {
            tracing::warn!(partition = p, error = ?e, "writing to __consumer_offsets failed");
            return Err(crate::error::replicated_offsets_code(e));
        }
        // Unloaded meanwhile: the next leader replays the records; nothing to apply here.
        if !store.led.still(p, epoch, true) {
            return Err(crate::error::not_coordinator_code());
        }
        self.apply_durable(records);
        Ok(())
    }
}

/// The load of partition `p` at leader epoch `epoch` (module doc); abandoned as soon as this
/// node no longer leads `p` at that epoch.
async fn load_partition(shard: Rc<Shard>, store: Rc<ReplicatedOffsets>, p: i32, epoch: i32) {
    let mut staged = Staged::default();
    let still = || store.led.still(p, epoch, false);
    let done = replay::<OffsetsCodec>(&shard, GROUP_TOPIC, p, still, |r| staged.apply(r)).await;
    if done {
        shard.groups.install_loaded(&store, p, staged);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::coordinator::coordinator_key::CoordinatorKind;
    use crate::coordinator::offsets::CommittedOffset;
    use crate::shard::internal_partitions::test_support;
    use crate::storage::io::sim::{install, SimDisk};

    fn metadata(version: u64, leader: i32) -> Arc<ClusterMetadata> {
        test_support::metadata(GROUP_TOPIC, version, leader)
    }

    fn commit(offset: i64) -> (OffsetKey, Option<CommittedOffset>) {
        let key = OffsetKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
        };
        let value = CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 1,
        };
        (key, Some(value))
    }

    async fn loaded(shard: &Rc<Shard>) {
        test_support::loaded(shard, CoordinatorKind::Group, "g").await
    }

    /// The transitions of a cluster's group coordinator: not the leader (NOT_COORDINATOR,
    /// writes refused), leader (COORDINATOR_LOAD_IN_PROGRESS until the partition is
    /// replayed, then commits are written to the partition and applied), leadership lost (the
    /// group's offsets forgotten, NOT_COORDINATOR), leader again at a new epoch (the
    /// partition replayed again: the commit is back).
    #[test]
    fn groups_load_on_leadership_and_unload_when_it_moves() {
        crate::rt::sim::run(21, async {
            let disk = SimDisk::new(21);
            let _installed = install(&disk);
            let (shard, _inboxes) = test_support::shard(metadata(1, 1)).await;
            shard.groups.start_replicated(&shard);
            let not_coordinator = Some(ResponseError::NotCoordinator);
            assert_eq!(
                shard.not_coordinator(CoordinatorKind::Group, "g"),
                not_coordinator
            );
            let refused = shard.groups.write_offsets(vec![commit(3)], 1).await;
            assert_eq!(refused, Err(ResponseError::NotCoordinator));

            shard.install_metadata(metadata(2, 0)).await;
            assert_eq!(
                shard.not_coordinator(CoordinatorKind::Group, "g"),
                Some(ResponseError::CoordinatorLoadInProgress),
                "led, not loaded yet"
            );
            loaded(&shard).await;
            shard
                .groups
                .write_offsets(vec![commit(5)], 1)
                .await
                .expect("commit");
            assert_eq!(
                shard
                    .groups
                    .offsets
                    .borrow()
                    .get("g", "t", 0)
                    .unwrap()
                    .offset,
                5
            );
            let p = shard.partition(GROUP_TOPIC, 0).expect("led");
            assert_eq!(p.log.high_watermark(), 1, "one record, replicated");

            shard.install_metadata(metadata(3, 1)).await;
            assert!(shard.groups.offsets.borrow().get("g", "t", 0).is_none());
            assert_eq!(
                shard.not_coordinator(CoordinatorKind::Group, "g"),
                not_coordinator
            );
            let refused = shard.groups.write_offsets(vec![commit(6)], 1).await;
            assert_eq!(refused, Err(ResponseError::NotCoordinator));

            shard.install_metadata(metadata(4, 0)).await;
            loaded(&shard).await;
            assert_eq!(
                shard
                    .groups
                    .offsets
                    .borrow()
                    .get("g", "t", 0)
                    .unwrap()
                    .offset,
                5,
                "replayed from the partition"
            );
            shard.close_partitions().await;
        });
    }
}
