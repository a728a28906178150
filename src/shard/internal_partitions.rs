//! What the coordinators of a cluster share about their replicated internal partitions
//! (`__consumer_offsets` for the group coordinator, `shard::groups::replicated`;
//! `__transaction_state` for the transaction coordinator, `shard::txns::replicated`): which
//! partitions this node leads and has loaded, the replay of a partition at load, and the
//! leader's acks=all append of a coordinator's records.
//!
//! The coordinator shard owns a [`LedPartitions`] per coordinator (created when the
//! coordinator starts in a cluster, dropped at shutdown): every metadata install compares the
//! partitions this node leads with it ([`LedPartitions::diff`]); a newly led partition is
//! replayed ([`replay`]) by a task that stops as soon as the node no longer leads it at the
//! same leader epoch; a write takes the partition's write lock (one at a time per partition,
//! so the records reach the log in the order the coordinator decided them) and appends with
//! [`Shard::append_internal_partition`] on the partition's owning shard. Every shard reads
//! the [`LoadedPartitions`] through its router, to answer COORDINATOR_LOAD_IN_PROGRESS for the
//! keys of a partition being loaded.
//!
//! Bounds: a replay read is at most [`REPLAY_READ_BYTES_MAX`] (at least one batch).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::{routing, Shard};
use crate::coordinator::metadata::ClusterMetadata;
use crate::storage::internal_log::{RecordCodec, REPLAY_READ_BYTES_MAX};
use crate::storage::StorageError;

/// How long a load waits between looks at the partition's owning shard, while that shard has
/// not opened the partition as its leader yet (or a read failed).
pub const LOAD_RETRY: Duration = Duration::from_millis(50);

/// The internal partitions whose keys this node's coordinator has loaded (every shard asks,
/// through its router; written by the coordinator shard only).
#[derive(Debug, Default)]
pub struct LoadedPartitions {
    loaded: Mutex<BTreeSet<i32>>,
}

impl LoadedPartitions {
    /// Whether the keys of `partition` are loaded here.
    pub fn is_loaded(&self, partition: i32) -> bool {
        self.loaded.lock().is_ok_and(|set| set.contains(&partition))
    }

    pub fn set(&self, partition: i32, loaded: bool) {
        if let Ok(mut set) = self.loaded.lock() {
            if loaded {
                set.insert(partition);
            } else {
                set.remove(&partition);
            }
        }
    }
}

/// An internal partition this node leads.
#[derive(Clone)]
struct Led {
    leader_epoch: i32,
    loaded: bool,
    /// One write at a time (the coordinator's state applies in log order).
    write_lock: Rc<crate::rt::sync::Semaphore>,
}

/// The partitions of one internal topic this node leads, on the coordinator shard (module
/// doc); owned by a coordinator's replicated store.
pub struct LedPartitions {
    shard: Weak<Shard>,
    node_id: i32,
    topic: &'static str,
    /// Partitions of the topic in the metadata (0 before the topic exists).
    partitions: Cell<i32>,
    led: RefCell<BTreeMap<i32, Led>>,
    /// Shared with every shard through the router.
    loaded: Arc<LoadedPartitions>,
}

/// What a metadata install changes: partitions to unload, then (partition, leader epoch) to
/// load.
type LeadershipChanges = (Vec<i32>, Vec<(i32, i32)>);

impl LedPartitions {
    /// The led partitions of `topic` on `shard` (the coordinator shard), published to the
    /// other shards through `loaded`.
    pub fn new(shard: &Rc<Shard>, topic: &'static str, loaded: Arc<LoadedPartitions>) -> Self {
        LedPartitions {
            shard: Rc::downgrade(shard),
            node_id: shard.config.node_id,
            topic,
            partitions: Cell::new(0),
            led: RefCell::new(BTreeMap::new()),
            loaded,
        }
    }

    /// The coordinator shard, while it runs.
    pub fn shard(&self) -> Option<Rc<Shard>> {
        self.shard.upgrade()
    }

    /// The topic's partitions in the last metadata installed (0: no topic).
    pub fn partitions(&self) -> i32 {
        self.partitions.get()
    }

    /// A metadata install on the coordinator shard: `unload` runs for each partition no
    /// longer led (or led at a new epoch; the keys are no longer loaded), then a task
    /// `load(shard, partition, leader epoch)` is spawned for each newly led one.
    pub fn on_metadata<F: Future<Output = ()> + 'static>(
        &self,
        metadata: &ClusterMetadata,
        mut unload: impl FnMut(i32),
        load: impl Fn(Rc<Shard>, i32, i32) -> F,
    ) {
        let Some(shard) = self.shard() else {
            return;
        };
        let topic = metadata.topics.get(self.topic);
        self.partitions.set(topic.map_or(0, |t| t.partitions));
        let (gone, new) = self.diff(metadata, self.topic, self.node_id);
        for p in gone {
            self.loaded.set(p, false);
            unload(p);
        }
        for (p, epoch) in new {
            tracing::info!(
                topic = self.topic,
                partition = p,
                leader_epoch = epoch,
                "loading the coordinator's state from an internal partition"
            );
            crate::rt::spawn_local(load(shard.clone(), p, epoch)).detach();
        }
    }

    pub fn still(&self, partition: i32, epoch: i32, loaded: bool) -> bool {
        self.led
            .borrow()
            .get(&partition)
            .is_some_and(|l| l.leader_epoch == epoch && (l.loaded || !loaded))
    }

    /// Compares the partitions of `topic` that `node_id` leads in `metadata` with the led
    /// ones and records the new state: a partition no longer led, or led at another epoch,
    /// is to be unloaded (the second also loaded again); a newly led one is to be loaded
    /// (recorded as not loaded yet).
    fn diff(&self, metadata: &ClusterMetadata, topic: &str, node_id: i32) -> LeadershipChanges {
        let mut now_led: BTreeMap<i32, i32> = BTreeMap::new();
        if let Some(topic) = metadata.topics.get(topic) {
            for p in 0..topic.partitions {
                let a = routing::assignment_of(topic, p, node_id);
                if a.leader == node_id {
                    now_led.insert(p, a.leader_epoch);
                }
            }
        }
        let mut led = self.led.borrow_mut();
        let unload: Vec<i32> = led
            .iter()
            .filter(|(p, l)| now_led.get(p) != Some(&l.leader_epoch))
            .map(|(p, _)| *p)
            .collect();
        for p in &unload {
            led.remove(p);
        }
        let mut load = Vec::new();
        for (p, epoch) in now_led {
            if led.contains_key(&p) {
                continue;
            }
            led.insert(
                p,
                Led {
                    leader_epoch: epoch,
                    loaded: false,
                    write_lock: Rc::new(crate::rt::sync::Semaphore::new(1)),
                },
            );
            load.push((p, epoch));
        }
        (unload, load)
    }

    /// Marks `partition` loaded (its load installed its state), here and for every shard.
    pub fn mark_loaded(&self, partition: i32) {
        if let Some(led) = self.led.borrow_mut().get_mut(&partition) {
            led.loaded = true;
        }
        self.loaded.set(partition, true);
    }

    /// The write lock and leader epoch of a loaded `partition`, else the coordinator's
    /// answer: COORDINATOR_LOAD_IN_PROGRESS while it loads, NOT_COORDINATOR when not led.
    pub fn writable(
        &self,
        partition: i32,
    ) -> Result<(Rc<crate::rt::sync::Semaphore>, i32), ResponseError> {
        match self.led.borrow().get(&partition) {
            Some(led) if led.loaded => Ok((led.write_lock.clone(), led.leader_epoch)),
            Some(_) => Err(ResponseError::CoordinatorLoadInProgress),
            None => Err(crate::error::not_coordinator_code()),
        }
    }

    /// The leader epoch `partition` is led at, if it is.
    pub fn epoch_of(&self, partition: i32) -> Option<i32> {
        self.led.borrow().get(&partition).map(|l| l.leader_epoch)
    }
}

/// Replays partition `p` of internal topic `topic` from its log start to its durable log end
/// on its owning shard (waiting until that shard leads it), decoding its batches with `C`
/// and giving each record to `apply`. Returns false when abandoned (`still` turned false,
/// the shard stops) or when a batch does not decode: the state is never rebuilt from part of
/// a log (the partition's keys stay unavailable, COORDINATOR_LOAD_IN_PROGRESS).
pub async fn replay<C: RecordCodec>(
    shard: &Rc<Shard>,
    topic: &'static str,
    p: i32,
    still: impl Fn() -> bool,
    mut apply: impl FnMut(C::Record),
) -> bool {
    let owner = shard.owner(topic, p);
    // Until the owning shard leads the partition: its log's (start, end).
    let (start, end) = loop {
        if !still() || shard.stopping.get() {
            return false;
        }
        let range = shard
            .invoke_on(owner, move |s| async move {
                s.internal_partition_range(topic, p)
            })
            .await;
        if let Ok(Some(range)) = range {
            break range;
        }
        crate::rt::sleep(LOAD_RETRY).await;
    };
    let mut offset = start;
    while offset < end {
        if !still() || shard.stopping.get() {
            return false;
        }
        let read = shard
            .invoke_on(owner, move |s| async move {
                s.read_internal_partition(topic, p, offset).await
            })
            .await;
        let batches = match read {
            Ok(Ok(batches)) if !batches.is_empty() => batches,
            other => {
                tracing::warn!(topic, partition = p, offset, result = ?other.map(|r| r.map(|b| b.len())), "reading an internal partition for a load failed; trying again");
                crate::rt::sleep(LOAD_RETRY).await;
                continue;
            }
        };
        for batch in batches {
            let Some(next) = freshet_protocol::batch::header(&batch).map(|h| h.last_offset() + 1)
            else {
                tracing::error!(
                    topic,
                    partition = p,
                    offset,
                    "an internal partition's batch without a header; the load stops"
                );
                return false;
            };
            match C::decode_batches(batch) {
                Ok((records, _)) => records.into_iter().for_each(&mut apply),
                Err(e) => {
                    tracing::error!(topic, partition = p, offset, error = %e, "an internal partition's batch does not decode; the load stops");
                    return false;
                }
            }
            offset = offset.max(next);
        }
        crate::rt::yield_if_needed().await;
    }
    still() && !shard.stopping.get()
}

impl Shard {
    /// The (log start, log end) of internal partition `topic`/`p` when this shard owns and
    /// leads it (the end is durable: what a load replays), else `None`.
    fn internal_partition_range(&self, topic: &str, p: i32) -> Option<(i64, i64)> {
        let partition = self.partition(topic, p)?;
        Some((
            partition.log.log_start_offset(),
            partition.log.durable_end(),
        ))
    }

    /// Whole batches of internal partition `topic`/`p` from `offset`, up to its durable end
    /// (at most [`REPLAY_READ_BYTES_MAX`], at least one batch).
    async fn read_internal_partition(
        &self,
        topic: &str,
        p: i32,
        offset: i64,
    ) -> Result<Vec<Bytes>, String> {
        let partition = self
            .replica(topic, p)
            .ok_or_else(|| "not open here".to_string())?;
        partition
            .log
            .read_for_replica(offset, REPLAY_READ_BYTES_MAX, true)
            .await
            .map(|data| data.batches)
            .map_err(|e: StorageError| e.to_string())
    }

    /// The leader's append of a coordinator's `payload` to internal partition `topic`/`p`,
    /// with acks=all: NOT_ENOUGH_REPLICAS below `min.insync.replicas`, answered once the high
    /// watermark passes it, REQUEST_TIMED_OUT after `timeout`. On the partition's owner.
    pub async fn append_internal_partition(
        &self,
        topic: &str,
        p: i32,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<(), ResponseError> {
        let partition = self
            .partition(topic, p)
            .ok_or(crate::error::not_leader_code())?;
        self.enough_replicas(&partition)?;
        let info = partition
            .append(payload)
            .await
            .map_err(|e| crate::error::storage_code(&e))?;
        crate::rt::timeout(timeout, self.await_replicated(&partition, info.last_offset))
            .await
            .unwrap_or(Err(ResponseError::RequestTimedOut))
    }
}

/// What the coordinators' simulated load/unload tests share.
#[cfg(test)]
pub mod test_support {
    use std::path::PathBuf;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::config::BrokerConfig;
    use crate::coordinator::coordinator_key::CoordinatorKind;
    use crate::coordinator::metadata::{
        BrokerRegistration, ClusterMetadata, PartitionAssignment, TopicMeta,
    };
    use crate::shard::{Router, Shard};

    /// Internal topic `topic` of one partition on replicas [0, 1], led by `leader` alone in
    /// its ISR at leader epoch `version`; brokers 0 and 1 registered.
    pub fn metadata(topic: &str, version: u64, leader: i32) -> Arc<ClusterMetadata> {
        let mut m = ClusterMetadata {
            cluster_id: "c".into(),
            version,
            ..Default::default()
        };
        for node_id in [0, 1] {
            m.brokers.insert(
                node_id,
                BrokerRegistration {
                    node_id,
                    incarnation_id: uuid::Uuid::from_u128(node_id as u128 + 1),
                    host: "127.0.0.1".into(),
                    port: 9000 + node_id,
                    rack: None,
                    fenced: false,
                    listeners: Vec::new(),
                },
            );
        }
        let meta = TopicMeta {
            id: uuid::Uuid::from_u128(5),
            partitions: 1,
            configs: [("cleanup.policy".to_string(), "compact".to_string())].into(),
            internal: true,
            assignment: vec![PartitionAssignment {
                replicas: vec![0, 1],
                leader,
                leader_epoch: version as i32,
                isr: vec![leader],
                partition_epoch: version as i32,
                reassignment: None,
            }],
        };
        m.topics.insert(topic.into(), meta);
        Arc::new(m)
    }

    /// Shard 0 of node 0 of a two-voter cluster on the installed simulated disk, with the
    /// partitions of `metadata` open; keep the inboxes while the shard is used.
    pub async fn shard(
        metadata: Arc<ClusterMetadata>,
    ) -> (Rc<Shard>, Vec<flume::Receiver<crate::shard::router::Job>>) {
        let config = Arc::new(BrokerConfig {
            data_dir: PathBuf::from("/data"),
            controller_quorum_voters: "0@127.0.0.1:9093,1@127.0.0.1:9094".into(),
            ..BrokerConfig::default()
        });
        crate::storage::io::create_dir_all(&config.data_dir)
            .await
            .expect("data dir");
        let (router, inboxes) = Router::new(1, 16);
        let shard = Shard::new(0, config, router, metadata);
        shard.open_partitions().await;
        (shard, inboxes)
    }

    /// Waits (virtual time) until `key` of `kind` is loaded here.
    pub async fn loaded(shard: &Rc<Shard>, kind: CoordinatorKind, key: &str) {
        for _ in 0..200 {
            if shard.not_coordinator(kind, key).is_none() {
                return;
            }
            crate::rt::sleep(Duration::from_millis(10)).await;
        }
        panic!("never loaded");
    }
}
