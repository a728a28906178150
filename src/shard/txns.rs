//! The transaction coordinator's runtime on the coordinator shard (shard 0): runs the pure
//! state machine of `coordinator::txn` and does its I/O.
//!
//! [`TxnCoordinator`] lives inside every [`Shard`] but is used on shard 0 only (loaded at
//! startup by [`TxnCoordinator::load`], closed at shutdown); the transaction APIs reach it with
//! `invoke_on(COORDINATOR_SHARD, ...)`.
//!
//! - Durability: every state change is a record (key: transactional id, value: the JSON of a
//!   [`TxnRecord`]) appended to the internal log `<data_dir>/internal/__transaction_state-0/`
//!   (an [`InternalLog`] with the [`TxnCodec`]) before the request is answered; [`TxnCoordinator::load`] replays it (the last record of
//!   an id wins), as Kafka does with `__transaction_state`. In a cluster the same records go
//!   to the id's partition of the replicated `__transaction_state` topic instead, and the
//!   coordinator loads and unloads partitions as their leadership moves ([`replicated`]).
//! - Ending a transaction ([`run_plan`]): the Prepare record is made durable (the decision),
//!   then a marker is appended to every partition of the transaction on its owning shard, the
//!   offsets of a commit go to the group coordinator's offsets log, and the Complete record is
//!   written. EndTxn is answered after all of it (Kafka answers after the Prepare record and
//!   writes markers in the background; answering later is allowed and simpler). A plan that
//!   fails (a partition's disk) stays in Prepare and is retried by the tick; markers are safe
//!   to write twice.
//! - Markers across brokers ([`write_markers`], Kafka's `TransactionMarkerChannelManager`): a
//!   partition this node leads gets its marker on its owning shard; the partitions led by
//!   another broker go to that broker in one WriteTxnMarkers request per leader (through the
//!   coordinator shard's [`BrokerClient`]), stamped with the coordinator epoch (the leader
//!   epoch of the id's `__transaction_state` partition). Partitions answered with a retriable
//!   error (NOT_LEADER_OR_FOLLOWER, no answer) are routed again from the metadata and sent
//!   again, at most [`MARKER_ROUNDS_MAX`] rounds with a growing pause; after that the plan
//!   fails with CONCURRENT_TRANSACTIONS (the client retries its EndTxn) and the tick retries
//!   it. In a cluster the rounds stop at once (NOT_COORDINATOR, in-flight sends dropped) when
//!   this node stops leading the id's `__transaction_state` partition at the epoch they
//!   started with (Kafka's `removeMarkersForTxnTopicPartition`): the next coordinator sends
//!   them again with its epoch, and the data partitions fence the old epoch anyway. Gauge
//!   `freshet_txn_marker_rounds`, counter `freshet_txn_marker_rounds_abandoned_total`.
//!   A partition whose topic is gone from the metadata is
//!   skipped (nothing left to mark). The transaction completes only when every marker is in.
//! - Offsets of groups coordinated elsewhere (KIP-98's split of coordinators): TxnOffsetCommit
//!   goes to the group coordinator. When the transaction coordinator is on the same node the
//!   offsets are kept with the transaction as above (durable in its Prepare record); otherwise
//!   the group coordinator verifies the transaction with its coordinator and holds them,
//!   durably in its offsets log (`GroupCoordinator::hold_txn_offsets`); the transaction's end
//!   sends a marker for the group's `__consumer_offsets` partition to that partition's leader,
//!   which commits or drops them ([`complete_group_marker`]), as Kafka's group coordinator
//!   does on its marker.
//! - Verification (KIP-890 part 1, [`verify_partition`]): the leader of a partition asks the
//!   transaction coordinator whether a first transactional write belongs to an open
//!   transaction: the local state machine, or AddPartitionsToTxn v4 `verify_only` sent to the
//!   coordinator's node.
//! - Ticks ([`tick`], from the group tick loop): transactions past their timeout are aborted
//!   with a bumped epoch, and plans left in Prepare (failures, recovery) are run again.
//!
//! - Expiration ([`tick`], every `transactional_id_expiration_check_interval_ms`): ids idle for
//!   `transactional_id_expiration_ms` are removed from the state machine and a tombstone (a
//!   record with a null value) is appended for each; replay removes them again.
//! - Compaction: at load and at each expiration check, when superseded records dominate the
//!   log, the live records are rewritten at its end in one append and the log start moves past
//!   the rest (as the offsets log does), so the log stays within a constant factor of the live
//!   ids. The live records are taken with no await before their append is issued, so a change
//!   made later is appended after them.

mod replicated;

use crate::error::coordinator_gone_code;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::routing::{self, Route};
use super::{now_ms, Shard, COORDINATOR_SHARD};
use crate::cluster::broker_client::{BrokerClient, BrokerClientLimits};
use crate::coordinator::coordinator_key::{self, CoordinatorKind, GROUP_TOPIC};
use crate::coordinator::offsets::{CommittedOffset, OffsetKey};
use crate::coordinator::txn::{EndPlan, InitStep, Transactions, TxnRecord};
use crate::storage::internal_log::{internal_log_dir, InternalLog, InternalLogLimits, RecordCodec};
use crate::storage::{StorageError, TailCache};
use freshet_protocol::batch::{self, Compression};

/// Largest record batch of the transaction log.
const TXN_RECORD_BYTES_MAX: u32 = 8 << 20;
/// The log is compacted when it holds more than this many records...
const COMPACT_RECORDS_MIN: usize = 1_000;
/// ... and more than this many times the live transactional ids.
const COMPACT_RATIO: usize = 2;
/// Records per batch in a compaction rewrite.
const COMPACT_BATCH_RECORDS_MAX: usize = 100;
/// Coordinator epoch stamped into markers on a single node (no `__transaction_state` topic);
/// in a cluster it is the leader epoch of the id's `__transaction_state` partition.
pub const COORDINATOR_EPOCH: i32 = 0;
/// Rounds of marker sending per attempt to end a transaction (module doc).
pub const MARKER_ROUNDS_MAX: u32 = 8;
/// The pause after the first round with partitions left; doubled each round, up to 1 s.
const MARKER_RETRY_PAUSE_MS: u64 = 50;
/// How long one call to another broker (markers, a verification) may take.
pub const BROKER_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The WriteTxnMarkers version sent (Kafka 4.1 serves only v1).
const WRITE_TXN_MARKERS_VERSION: i16 = 1;
/// The AddPartitionsToTxn version a verification is sent at (v4: the brokers' batch form).
const VERIFY_VERSION: i16 = 4;

/// How long a cluster's coordinator waits for the replicas of its tombstones.
const TOMBSTONE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The transaction log's name under `<data_dir>/internal/`.
pub const TXN_LOG_NAME: &str = "__transaction_state";

/// The transaction log's limits and compaction policy.
pub const TXN_LOG_LIMITS: InternalLogLimits = InternalLogLimits {
    compact_records_min: COMPACT_RECORDS_MIN,
    compact_ratio: COMPACT_RATIO,
    batch_records_max: COMPACT_BATCH_RECORDS_MAX,
    // Half the largest batch, by the estimate of `TxnCodec::record_bytes`.
    batch_bytes_max: (TXN_RECORD_BYTES_MAX / 2) as usize,
    // A record lists every partition of its transaction: room for ~100k of them.
    max_message_bytes: TXN_RECORD_BYTES_MAX,
    segment_bytes: 16 * 1024 * 1024,
};

/// The internal transaction log's directory under the data directory.
pub fn txn_log_dir(data_dir: &Path) -> std::path::PathBuf {
    internal_log_dir(data_dir, TXN_LOG_NAME)
}

/// One record of the transaction log: a transactional id and its state, or `None` (a
/// tombstone: the id expired).
pub type TxnLogRecord = (String, Option<TxnRecord>);

/// The transaction log's records: key the transactional id, value the JSON of a
/// [`TxnRecord`] (null for a tombstone), as Kafka's `__transaction_state`.
pub struct TxnCodec;

impl RecordCodec for TxnCodec {
    type Record = TxnLogRecord;
    const NAME: &'static str = "transaction log";

    fn encode_batch(records: &[TxnLogRecord], now_ms: i64) -> Result<Bytes, String> {
        encode_records(records, now_ms)
    }

    fn decode_batches(bytes: Bytes) -> Result<(Vec<TxnLogRecord>, i64), String> {
        decode_batches(bytes)
    }

    fn record_bytes((id, record): &TxnLogRecord) -> usize {
        let lists = record.as_ref().map_or(0, |r| {
            let partitions: usize = r.partitions.iter().map(|(t, _)| t.len() + 32).sum();
            let groups: usize = r.groups.iter().map(|g| g.len() + 8).sum();
            let offsets: usize = r
                .offsets
                .iter()
                .map(|(k, v)| k.group.len() + k.topic.len() + v.metadata.len() + 128)
                .sum();
            partitions + groups + offsets
        });
        id.len() + lists + 256
    }
}

/// Where the transaction coordinator keeps its records: the node-local log of a single node,
/// or the replicated `__transaction_state` partitions of a cluster ([`replicated`]).
#[derive(Clone)]
enum TxnStore {
    Local(Rc<InternalLog<TxnCodec>>),
    Replicated(Rc<replicated::ReplicatedTxns>),
}

/// The coordinator shard's transaction state; see the module doc.
pub struct TxnCoordinator {
    pub state: RefCell<Transactions>,
    store: RefCell<Option<TxnStore>>,
    /// Transactional ids whose end plan is running now (not to be started twice).
    running: RefCell<HashSet<String>>,
    /// Wall clock of the last expiration check.
    last_expiry_check_ms: Cell<i64>,
    /// An expiration check (tombstones, compaction) is running.
    expiring: Cell<bool>,
    /// Calls to other brokers (markers, verifications), made from this shard.
    pub client: BrokerClient,
    /// Notified when a `__transaction_state` partition is unloaded: marker rounds of its ids
    /// stop ([`write_markers`]).
    unloaded: Rc<crate::rt::Notify>,
    /// [`write_markers`] calls running now (the `freshet_txn_marker_rounds` gauge).
    marker_rounds: Cell<u64>,
    /// [`write_markers`] calls abandoned because the coordinator lost the transaction's
    /// partition (the `freshet_txn_marker_rounds_abandoned_total` counter).
    marker_rounds_abandoned: Cell<u64>,
}

impl Default for TxnCoordinator {
    fn default() -> Self {
        TxnCoordinator::new()
    }
}

impl TxnCoordinator {
    pub fn new() -> TxnCoordinator {
        TxnCoordinator {
            state: RefCell::new(Transactions::new()),
            store: RefCell::new(None),
            running: RefCell::new(HashSet::new()),
            last_expiry_check_ms: Cell::new(now_ms()),
            expiring: Cell::new(false),
            client: BrokerClient::new("freshet-broker", BrokerClientLimits::default()),
            unloaded: crate::rt::Notify::new(),
            marker_rounds: Cell::new(0),
            marker_rounds_abandoned: Cell::new(0),
        }
    }

    /// Marker sends running now, and those abandoned so far because the coordinator lost
    /// the transaction's `__transaction_state` partition (metrics).
    pub fn marker_rounds(&self) -> (u64, u64) {
        (self.marker_rounds.get(), self.marker_rounds_abandoned.get())
    }

    /// Opens the transaction log and rebuilds the state from it; transactions caught in the
    /// middle are set up to be finished or aborted by the next ticks.
    pub async fn load(&self, data_dir: &Path, cache: Rc<TailCache>) -> Result<(), StorageError> {
        // Built aside (no RefCell borrow held across the replay's awaits), then installed.
        let mut state = Transactions::new();
        let log = InternalLog::<TxnCodec>::open(
            &txn_log_dir(data_dir),
            TXN_LOG_LIMITS,
            cache,
            |r| match r {
                (_, Some(r)) => state.load(r),
                (id, None) => state.unload(&id),
            },
        )
        .await?;
        *self.state.borrow_mut() = state;
        let pending = self.state.borrow_mut().recover(now_ms()).len();
        let log = Rc::new(log);
        *self.store.borrow_mut() = Some(TxnStore::Local(log.clone()));
        self.compact_if_due(&log).await?;
        tracing::info!(
            records = log.records(),
            transactional_ids = self.state.borrow().iter().count(),
            to_finish = pending,
            "transaction state loaded"
        );
        Ok(())
    }

    /// Rewrites the live records at the end of the log in one append and moves the log start
    /// past everything before them, if superseded records dominate (at load, and from the
    /// expiration check). The live records are taken right before the append is issued.
    async fn compact_if_due(&self, log: &InternalLog<TxnCodec>) -> Result<bool, StorageError> {
        log.compact_if_due(
            || self.state.borrow().iter().count(),
            || {
                self.state
                    .borrow()
                    .records()
                    .into_iter()
                    .map(|r| (r.transactional_id.clone(), Some(r)))
                    .collect()
            },
        )
        .await
    }

    pub async fn close(&self) {
        let store = self.store.borrow_mut().take();
        if let Some(TxnStore::Local(log)) = store {
            if let Err(e) = log.close().await {
                tracing::error!(error = %e, "closing the transaction log failed");
            }
        }
    }

    /// Removes expired transactional ids durably (tombstones), then compacts the log if
    /// superseded records dominate it. One at a time (the `expiring` flag).
    async fn expire_and_compact(&self, now: i64, expiration_ms: i64) {
        let expired = self.state.borrow_mut().expire_ids(now, expiration_ms);
        // Taken out of the cell: no borrow is held across the writes' awaits.
        let Some(store) = self.store.borrow().clone() else {
            return;
        };
        if !expired.is_empty() {
            let count = expired.len();
            let tombstones: Vec<TxnLogRecord> = expired.into_iter().map(|id| (id, None)).collect();
            let written = match &store {
                TxnStore::Local(log) => log
                    .append(tombstones, now, |_| ())
                    .await
                    .map_err(|e| e.to_string()),
                TxnStore::Replicated(store) => self
                    .persist_replicated(store, tombstones, TOMBSTONE_TIMEOUT)
                    .await
                    .map_err(|e| format!("{e:?}")),
            };
            match written {
                Ok(()) => tracing::info!(count, "expired transactional ids removed"),
                // They come back at the next load (and expire again).
                Err(e) => tracing::warn!(error = %e, "writing transactional id tombstones failed"),
            }
        }
        // A cluster's partitions are compacted by the log cleaner.
        if let TxnStore::Local(log) = &store {
            if let Err(e) = self.compact_if_due(log).await {
                tracing::warn!(error = %e, "compacting the transaction log failed");
            }
        }
    }

    /// Appends `record` to the transaction log; resolves once durable (in a cluster: once the
    /// in-sync replicas of its `__transaction_state` partition have it, [`replicated`]).
    async fn persist(&self, record: &TxnRecord) -> Result<(), ResponseError> {
        let store = self.store.borrow().clone();
        let log = match store {
            Some(TxnStore::Local(log)) => log,
            Some(TxnStore::Replicated(store)) => {
                let records = vec![(record.transactional_id.clone(), Some(record.clone()))];
                // Kafka waits for the replicas up to the transaction's timeout.
                let timeout = std::time::Duration::from_millis(record.timeout_ms.max(1) as u64);
                return self.persist_replicated(&store, records, timeout).await;
            }
            None => return Err(coordinator_gone_code()),
        };
        let records = vec![(record.transactional_id.clone(), Some(record.clone()))];
        log.append(records, now_ms(), |_| ()).await.map_err(|e| {
            tracing::error!(error = %e, "appending to the transaction log failed");
            match e {
                StorageError::InvalidRecord(_) => ResponseError::UnknownServerError,
                _ => coordinator_gone_code(),
            }
        })
    }
}

/// One record batch of transaction records (key: transactional id, value: JSON or null).
fn encode_records(records: &[TxnLogRecord], now: i64) -> Result<Bytes, String> {
    let mut out = Vec::with_capacity(records.len());
    for (id, r) in records {
        let value = match r {
            Some(r) => Some(Bytes::from(
                serde_json::to_vec(r).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        out.push((Some(Bytes::from(id.clone())), value, now));
    }
    batch::encode_batch(&out, Compression::None)
}

/// The records of `bytes` as (transactional id, record or `None` for a tombstone), and the
/// offset after the last one.
fn decode_batches(mut bytes: Bytes) -> Result<(Vec<TxnLogRecord>, i64), String> {
    let mut out = Vec::new();
    let mut next_offset = -1;
    while bytes.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| e.to_string())?;
        for record in set.records {
            next_offset = record.offset + 1;
            let key = record.key.ok_or("transaction record without a key")?;
            let id = String::from_utf8(key.to_vec()).map_err(|e| e.to_string())?;
            let r = match record.value {
                Some(value) => {
                    Some(serde_json::from_slice::<TxnRecord>(&value).map_err(|e| e.to_string())?)
                }
                None => None,
            };
            out.push((id, r));
        }
    }
    Ok((out, next_offset))
}

/// InitProducerId with a transactional id: (producer id, epoch).
pub async fn init_producer_id(
    shard: &Rc<Shard>,
    transactional_id: &str,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
) -> Result<(i64, i16), ResponseError> {
    assert_eq!(shard.id, COORDINATOR_SHARD);
    let mut fresh = None;
    // At most: allocate an id, abort an open transaction, then answer.
    for _ in 0..4 {
        let step = shard.txns.state.borrow_mut().init_producer_id(
            transactional_id,
            timeout_ms,
            expected,
            fresh,
            now_ms(),
        )?;
        match step {
            InitStep::NeedProducerId => {
                fresh = Some(shard.allocate_producer_id().await.map_err(|e| e.code)?);
            }
            InitStep::Ready {
                producer_id,
                epoch,
                record,
            } => {
                shard.txns.persist(&record).await?;
                return Ok((producer_id, epoch));
            }
            InitStep::AbortFirst(plan) => {
                run_plan(shard, plan).await?;
            }
        }
    }
    Err(ResponseError::ConcurrentTransactions)
}

/// AddPartitionsToTxn / AddOffsetsToTxn.
pub async fn add(
    shard: &Rc<Shard>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: Vec<(String, i32)>,
    group: Option<String>,
) -> Result<(), ResponseError> {
    let record = shard.txns.state.borrow_mut().add(
        transactional_id,
        producer_id,
        epoch,
        &partitions,
        group.as_deref(),
        now_ms(),
    )?;
    if let Some(record) = record {
        if let Err(e) = shard.txns.persist(&record).await {
            shard
                .txns
                .state
                .borrow_mut()
                .persist_failed(transactional_id);
            return Err(e);
        }
    }
    Ok(())
}

/// EndTxn: runs the end plan and answers when it is complete.
pub async fn end_txn(
    shard: &Rc<Shard>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    commit: bool,
) -> Result<(), ResponseError> {
    let plan = shard.txns.state.borrow_mut().begin_end(
        transactional_id,
        producer_id,
        epoch,
        commit,
        now_ms(),
    )?;
    match plan {
        Some(plan) => run_plan(shard, plan).await,
        None => Ok(()),
    }
}

/// Prepare record, markers, offsets, Complete record (module docs).
pub async fn run_plan(shard: &Rc<Shard>, plan: EndPlan) -> Result<(), ResponseError> {
    if !shard
        .txns
        .running
        .borrow_mut()
        .insert(plan.transactional_id.clone())
    {
        return Err(ResponseError::ConcurrentTransactions);
    }
    let result = run_plan_steps(shard, &plan).await;
    shard
        .txns
        .running
        .borrow_mut()
        .remove(&plan.transactional_id);
    if let Err(e) = &result {
        tracing::warn!(transactional_id = %plan.transactional_id, error = ?e, "ending a transaction failed; retried on the next tick");
    }
    result
}

async fn run_plan_steps(shard: &Rc<Shard>, plan: &EndPlan) -> Result<(), ResponseError> {
    shard.txns.persist(&plan.prepare).await?;
    let coordinator_epoch = shard.coordinator_epoch(&plan.transactional_id);
    let mut targets = plan.partitions.clone();
    // In a cluster every group's `__consumer_offsets` partition gets a marker too: its
    // coordinator may hold offsets of this transaction (those sent while the transaction's
    // coordinator was another node); one here with none held writes nothing.
    let metadata = shard.metadata();
    if let Some(topic) = metadata.topics.get(GROUP_TOPIC) {
        for group in &plan.prepare.groups {
            let partition = coordinator_key::partition_for(group, topic.partitions);
            if !targets
                .iter()
                .any(|(t, p)| t == GROUP_TOPIC && *p == partition)
            {
                targets.push((GROUP_TOPIC.to_string(), partition));
            }
        }
    }
    let marker = Marker {
        producer_id: plan.producer_id,
        epoch: plan.epoch,
        commit: plan.commit,
        coordinator_epoch,
    };
    write_markers(shard, targets, marker, &plan.transactional_id).await?;
    if plan.commit && !plan.offsets.is_empty() {
        let changes = plan
            .offsets
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        shard.groups.write_offsets(changes, now_ms()).await?;
    }
    let done = shard.txns.state.borrow_mut().complete_end(plan, now_ms());
    if let Some(record) = done {
        shard.txns.persist(&record).await?;
    }
    Ok(())
}

/// One transaction marker: whose, which outcome, from which coordinator epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// How long a marker written here may wait for the partition's in-sync replicas (Kafka waits
/// up to its request timeout) before it is answered REQUEST_TIMED_OUT and sent again; within
/// [`BROKER_CALL_TIMEOUT`], so a remote coordinator hears the answer.
const MARKER_REPLICATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Is `error` (a marker's answer) worth sending again after routing the partition anew?
fn marker_retriable(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::NotLeaderOrFollower
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::NotEnoughReplicas
            | ResponseError::NotCoordinator
            | ResponseError::CoordinatorNotAvailable
            | ResponseError::CoordinatorLoadInProgress
            | ResponseError::RequestTimedOut
    )
}

/// Writes `marker` to every partition of `targets`, here or on its leader (module doc,
/// "Markers across brokers"), for the transaction of `transactional_id`. On the coordinator
/// shard. In a cluster the rounds stop as soon as this node no longer leads the id's
/// `__transaction_state` partition at the epoch it had when they started (unloaded, or led
/// again at a new epoch): NOT_COORDINATOR, the pending sends dropped, as Kafka's
/// `TransactionMarkerChannelManager.removeMarkersForTxnTopicPartition`; the id's next
/// coordinator sends the markers again with its own epoch.
pub async fn write_markers(
    shard: &Rc<Shard>,
    targets: Vec<(String, i32)>,
    marker: Marker,
    transactional_id: &str,
) -> Result<(), ResponseError> {
    assert_eq!(shard.id, COORDINATOR_SHARD);
    let txns = &shard.txns;
    let led = txns.txn_partition_led(transactional_id);
    // Counted while the call runs, also when its future is dropped part way.
    struct Running<'a>(&'a Cell<u64>);
    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }
    txns.marker_rounds.set(txns.marker_rounds.get() + 1);
    let running = Running(&txns.marker_rounds);
    let rounds = marker_rounds(shard, targets, marker);
    let result = match led {
        // A single node: nothing moves.
        None => Some(rounds.await),
        Some((p, epoch)) => {
            let unloaded = txns.unloaded.clone();
            let lost = async move {
                unloaded.until(|| !txns.still_leads(p, epoch)).await;
                None
            };
            futures_lite::future::or(async { Some(rounds.await) }, lost).await
        }
    };
    drop(running);
    result.unwrap_or_else(|| {
        txns.marker_rounds_abandoned
            .set(txns.marker_rounds_abandoned.get() + 1);
        tracing::info!(
            transactional_id,
            producer_id = marker.producer_id,
            coordinator_epoch = marker.coordinator_epoch,
            "transaction markers abandoned: this node no longer coordinates the transaction"
        );
        Err(crate::error::not_coordinator_code())
    })
}

/// The rounds of [`write_markers`]: send, route what is left again, pause, at most
/// [`MARKER_ROUNDS_MAX`] times.
async fn marker_rounds(
    shard: &Rc<Shard>,
    mut targets: Vec<(String, i32)>,
    marker: Marker,
) -> Result<(), ResponseError> {
    let mut pause_ms = MARKER_RETRY_PAUSE_MS;
    let mut last_error = crate::error::not_leader_code();
    for round in 0..MARKER_ROUNDS_MAX {
        if round > 0 {
            crate::rt::sleep(std::time::Duration::from_millis(pause_ms)).await;
            pause_ms = (pause_ms * 2).min(1_000);
        }
        let metadata = shard.metadata();
        let node = shard.config.node_id;
        type Write = std::pin::Pin<Box<dyn std::future::Future<Output = Vec<MarkerResult>>>>;
        let mut writes: Vec<Write> = Vec::new();
        let mut remote: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        for (topic, partition) in targets.drain(..) {
            match routing::route(&metadata, node, &topic, partition) {
                // The topic is gone (deleted): nothing to mark.
                Route::Unknown => {}
                Route::Local => {
                    let shard = shard.clone();
                    writes.push(Box::pin(async move {
                        let r = write_local_marker(&shard, &topic, partition, marker).await;
                        vec![((topic, partition), r)]
                    }));
                }
                Route::Remote { leader, .. } => {
                    remote.entry(leader).or_default().push((topic, partition))
                }
            }
        }
        for (leader, partitions) in remote {
            writes.push(Box::pin(send_markers(
                shard.clone(),
                leader,
                partitions,
                marker,
            )));
        }
        for ((topic, partition), result) in crate::rt::join_all(writes).await.into_iter().flatten()
        {
            match result {
                Ok(()) => {}
                Err(e) if marker_retriable(e) => {
                    last_error = e;
                    targets.push((topic, partition));
                }
                Err(e) => return Err(e),
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        tracing::debug!(left = targets.len(), round, error = ?last_error, "transaction markers to send again");
    }
    tracing::warn!(left = ?targets, error = ?last_error, "transaction markers not all written; retried on the next tick");
    // The decision is durable and the tick finishes the plan: the client is told to retry
    // (EndTxn, InitProducerId), as Kafka answers while a transaction is being completed.
    Err(ResponseError::ConcurrentTransactions)
}

/// One partition's outcome of a marker.
type MarkerResult = ((String, i32), Result<(), ResponseError>);

/// Sends `marker` for `partitions` to broker `leader` in one WriteTxnMarkers request.
async fn send_markers(
    shard: Rc<Shard>,
    leader: i32,
    partitions: Vec<(String, i32)>,
    marker: Marker,
) -> Vec<MarkerResult> {
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
    let all_fail = |partitions: Vec<(String, i32)>, e: ResponseError| {
        partitions.into_iter().map(|p| (p, Err(e))).collect()
    };
    let Some(addr) = broker_addr(&shard, leader) else {
        return all_fail(partitions, crate::error::not_leader_code());
    };
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    let topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            WritableTxnMarkerTopic::default()
                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                .with_partition_indexes(ps)
        })
        .collect();
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(marker.producer_id))
            .with_producer_epoch(marker.epoch)
            .with_transaction_result(marker.commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(topics)]);
    let answer = shard
        .txns
        .client
        .send(
            &addr,
            WRITE_TXN_MARKERS_VERSION,
            &request,
            BROKER_CALL_TIMEOUT,
        )
        .await;
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(leader, error = %e, "sending transaction markers failed");
            return all_fail(partitions, crate::error::broker_unreachable_code());
        }
    };
    let mut answered: BTreeMap<(String, i32), i16> = BTreeMap::new();
    for m in response
        .markers
        .iter()
        .filter(|m| m.producer_id.0 == marker.producer_id)
    {
        for t in &m.topics {
            for p in &t.partitions {
                answered.insert((t.name.to_string(), p.partition_index), p.error_code);
            }
        }
    }
    partitions
        .into_iter()
        .map(|p| {
            // A partition missing from the answer is sent again.
            let code = answered.get(&p).copied();
            let result = match code {
                Some(code) => crate::error::answered_code(code).map_or(Ok(()), Err),
                None => Err(crate::error::broker_unreachable_code()),
            };
            (p, result)
        })
        .collect()
}

/// The address (`host:port`) of registered broker `node` on the inter-broker listener.
fn broker_addr(shard: &Shard, node: i32) -> Option<String> {
    let metadata = shard.metadata();
    let b = metadata.brokers.get(&node)?;
    let (host, port) = b.endpoint_on(&crate::cluster::inter_broker::current().listener);
    Some(format!("{host}:{port}"))
}

/// Writes `marker` to `topic`/`partition`, which this node leads (WriteTxnMarkers' receiving
/// side, and the coordinator's own partitions): a data partition gets the control batch on
/// its owning shard; a `__consumer_offsets` partition commits or drops the offsets its group
/// coordinator holds for the producer. Kafka's answers: NOT_LEADER_OR_FOLLOWER when another
/// broker leads it, UNKNOWN_TOPIC_OR_PARTITION when the metadata lacks it,
/// TRANSACTION_COORDINATOR_FENCED for a coordinator epoch older than the last marker's here.
pub async fn write_local_marker(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    marker: Marker,
) -> Result<(), ResponseError> {
    if topic == GROUP_TOPIC {
        let metadata = shard.metadata();
        return match routing::route(&metadata, shard.config.node_id, topic, partition) {
            Route::Local => shard
                .invoke_on(COORDINATOR_SHARD, move |c| async move {
                    complete_group_marker(&c, partition, marker).await
                })
                .await
                .unwrap_or(Err(coordinator_gone_code())),
            Route::Remote { .. } => Err(crate::error::not_leader_code()),
            Route::Unknown => Err(ResponseError::UnknownTopicOrPartition),
        };
    }
    let owner = shard.owner(topic, partition);
    let topic = topic.to_string();
    let answer = shard
        .invoke_on(owner, move |owner| async move {
            let Some(p) = owner.partition(&topic, partition) else {
                let metadata = owner.metadata();
                let node = owner.config.node_id;
                return Err(routing::absent_partition_code(&metadata, node, &topic, partition));
            };
            if marker.coordinator_epoch < p.log.marker_coordinator_epoch(marker.producer_id) {
                return Err(ResponseError::TransactionCoordinatorFenced);
            }
            // Kafka appends markers with acks=-1: below min.insync.replicas none is written,
            // and one is answered only once the high watermark passed it (a marker only the
            // old leader held would be lost with it, and the transaction on this partition
            // with it: committed records read as aborted).
            owner.enough_replicas(&p)?;
            let result = p
                .log
                .append_marker(
                    marker.producer_id,
                    marker.epoch,
                    marker.commit,
                    marker.coordinator_epoch,
                    now_ms(),
                )
                .await;
            p.hw_changed.notify_all();
            match result {
                Ok(info) => {
                    p.log
                        .note_marker_coordinator_epoch(marker.producer_id, marker.coordinator_epoch);
                    let replicated = owner.await_replicated(&p, info.last_offset);
                    crate::rt::timeout(MARKER_REPLICATION_TIMEOUT, replicated)
                        .await
                        .unwrap_or(Err(ResponseError::RequestTimedOut))
                        .map_err(|e| match e {
                            // Written, not yet on enough replicas: sent again (a duplicate
                            // marker of the same epoch changes nothing).
                            ResponseError::NotEnoughReplicasAfterAppend => {
                                ResponseError::NotEnoughReplicas
                            }
                            e => e,
                        })
                }
                // A newer epoch already wrote its marker here: this one is moot.
                Err(StorageError::InvalidProducerEpoch(_)) => Ok(()),
                Err(e) => {
                    tracing::warn!(%topic, partition, error = %e, "writing a transaction marker failed");
                    Err(crate::error::storage_code(&e))
                }
            }
        })
        .await;
    answer.unwrap_or(Err(coordinator_gone_code()))
}

/// The marker of a transaction for `__consumer_offsets` partition `partition`, on the group
/// coordinator: the producer's offsets held for the groups of that partition are committed
/// (written to the offsets log) or dropped, durably, in one batch; a failed write changes
/// nothing (the marker is sent again).
pub async fn complete_group_marker(
    shard: &Rc<Shard>,
    partition: i32,
    marker: Marker,
) -> Result<(), ResponseError> {
    assert_eq!(shard.id, COORDINATOR_SHARD);
    let partitions = shard
        .metadata()
        .topics
        .get(GROUP_TOPIC)
        .map_or(1, |t| t.partitions);
    let in_partition = |group: &str| coordinator_key::partition_for(group, partitions) == partition;
    shard
        .groups
        .end_txn_offsets(marker.producer_id, marker.commit, in_partition, now_ms())
        .await
}

/// Produce-side verification (module doc): is `tp` in the open transaction of `producer_id`
/// at `epoch`? Asks the coordinator of `transactional_id` (this node's state machine when it
/// is here or no id is given). On the coordinator shard.
pub async fn verify_partition(
    shard: &Rc<Shard>,
    transactional_id: Option<String>,
    producer_id: i64,
    epoch: i16,
    tp: (String, i32),
) -> Result<(), ResponseError> {
    assert_eq!(shard.id, COORDINATOR_SHARD);
    let remote = match &transactional_id {
        Some(id) => match shard.coordinator_of(CoordinatorKind::Transaction, id) {
            // Still loading the id's partition (a cluster's new coordinator): retriable, as
            // Kafka's verification answers a coordinator that is not ready.
            Ok(node)
                if node == shard.config.node_id
                    && shard
                        .not_coordinator(CoordinatorKind::Transaction, id)
                        .is_some() =>
            {
                return Err(crate::error::broker_unreachable_code());
            }
            Ok(node) if node == shard.config.node_id => None,
            Ok(node) => Some((id.clone(), node)),
            Err(_) => return Err(crate::error::broker_unreachable_code()),
        },
        None => None,
    };
    match remote {
        None => shard
            .txns
            .state
            .borrow()
            .verify_partition(producer_id, epoch, &tp),
        Some((id, node)) => verify_remote(shard, node, id, producer_id, epoch, tp).await,
    }
}

/// TxnOffsetCommit on the group coordinator when the transaction's coordinator is another
/// node: the transaction must hold the group (verified with its coordinator, as Kafka's
/// group coordinator verifies with AddPartitionsToTxn `verify_only` for the group's
/// `__consumer_offsets` partition); then the offsets wait here for the marker. On the
/// coordinator shard.
pub async fn hold_group_offsets(
    shard: &Rc<Shard>,
    transactional_id: String,
    producer_id: i64,
    epoch: i16,
    group: &str,
    offsets: Vec<(OffsetKey, CommittedOffset)>,
) -> Result<(), ResponseError> {
    assert_eq!(shard.id, COORDINATOR_SHARD);
    let unavailable = ResponseError::CoordinatorNotAvailable;
    let partitions = shard
        .metadata()
        .topics
        .get(GROUP_TOPIC)
        .map(|t| t.partitions)
        .ok_or(unavailable)?;
    let tp = (
        GROUP_TOPIC.to_string(),
        coordinator_key::partition_for(group, partitions),
    );
    verify_partition(shard, Some(transactional_id), producer_id, epoch, tp)
        .await
        .map_err(|e| {
            // Kafka's group coordinator answers a failed verification call so (retriable).
            if e == crate::error::broker_unreachable_code() {
                unavailable
            } else {
                e
            }
        })?;
    shard
        .groups
        .hold_txn_offsets(producer_id, offsets, now_ms())
        .await
}

/// AddPartitionsToTxn v4 `verify_only` for one partition, sent to the coordinator `node`.
async fn verify_remote(
    shard: &Rc<Shard>,
    node: i32,
    transactional_id: String,
    producer_id: i64,
    epoch: i16,
    (topic, partition): (String, i32),
) -> Result<(), ResponseError> {
    use kafka_protocol::messages::add_partitions_to_txn_request::{
        AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
    };
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId,
    };
    let unreachable = crate::error::broker_unreachable_code();
    let addr = broker_addr(shard, node).ok_or(unreachable)?;
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(transactional_id)))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partitions(vec![partition])]),
    ]);
    let response = shard
        .txns
        .client
        .send(&addr, VERIFY_VERSION, &request, BROKER_CALL_TIMEOUT)
        .await
        .map_err(|e| {
            tracing::info!(node, error = %e, "verifying a transactional write failed");
            unreachable
        })?;
    if let Some(e) = crate::error::answered_code(response.error_code) {
        return Err(e);
    }
    let code = response
        .results_by_transaction
        .iter()
        .flat_map(|t| t.topic_results.iter())
        .filter(|t| t.name.as_str() == topic)
        .flat_map(|t| t.results_by_partition.iter())
        .find(|p| p.partition_index == partition)
        .map(|p| p.partition_error_code)
        .ok_or(unreachable)?;
    match crate::error::answered_code(code) {
        None => Ok(()),
        // The coordinator moved: retriable for the producer.
        Some(
            ResponseError::NotCoordinator
            | ResponseError::CoordinatorNotAvailable
            | ResponseError::CoordinatorLoadInProgress,
        ) => Err(unreachable),
        Some(e) => Err(e),
    }
}

/// From the coordinator's tick: abort expired transactions and rerun stuck plans, each as its
/// own task.
pub fn tick(shard: &Rc<Shard>) {
    let now = now_ms();
    let txns = &shard.txns;
    if now - txns.last_expiry_check_ms.get()
        >= shard.config.transactional_id_expiration_check_interval_ms
        && !txns.expiring.get()
    {
        txns.last_expiry_check_ms.set(now);
        txns.expiring.set(true);
        let shard = shard.clone();
        crate::rt::spawn_local(async move {
            let expiration_ms = shard.config.transactional_id_expiration_ms;
            shard.txns.expire_and_compact(now, expiration_ms).await;
            shard.txns.expiring.set(false);
        })
        .detach();
    }
    let expired = shard.txns.state.borrow_mut().expire(now);
    for plan in &expired {
        tracing::info!(transactional_id = %plan.transactional_id, "transaction timed out; aborting");
    }
    let plans = shard.txns.state.borrow().pending_plans();
    for plan in plans {
        if shard.txns.running.borrow().contains(&plan.transactional_id) {
            continue;
        }
        let shard = shard.clone();
        crate::rt::spawn_local(async move {
            let _ = run_plan(&shard, plan).await;
        })
        .detach();
    }
}
