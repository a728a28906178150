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
//!   an id wins), as Kafka does with `__transaction_state`.
//! - Ending a transaction ([`run_plan`]): the Prepare record is made durable (the decision),
//!   then a marker is appended to every partition of the transaction on its owning shard, the
//!   offsets of a commit go to the group coordinator's offsets log, and the Complete record is
//!   written. EndTxn is answered after all of it (Kafka answers after the Prepare record and
//!   writes markers in the background; answering later is allowed and simpler). A plan that
//!   fails (a partition's disk) stays in Prepare and is retried by the tick; markers are safe
//!   to write twice. A partition led by another broker fails the plan too (NOT_LEADER_OR_FOLLOWER):
//!   markers are not sent to other brokers yet (Kafka's WriteTxnMarkers), and completing
//!   without one would leave the transaction open there.
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

use crate::error::coordinator_gone_code;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::path::Path;
use std::rc::Rc;

use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::RecordBatchDecoder;

use super::{now_ms, Shard, COORDINATOR_SHARD};
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
/// Coordinator epoch stamped into markers (one node: never changes).
pub const COORDINATOR_EPOCH: i32 = 0;

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

/// The coordinator shard's transaction state; see the module doc.
pub struct TxnCoordinator {
    pub state: RefCell<Transactions>,
    log: RefCell<Option<Rc<InternalLog<TxnCodec>>>>,
    /// Transactional ids whose end plan is running now (not to be started twice).
    running: RefCell<HashSet<String>>,
    /// Wall clock of the last expiration check.
    last_expiry_check_ms: Cell<i64>,
    /// An expiration check (tombstones, compaction) is running.
    expiring: Cell<bool>,
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
            log: RefCell::new(None),
            running: RefCell::new(HashSet::new()),
            last_expiry_check_ms: Cell::new(now_ms()),
            expiring: Cell::new(false),
        }
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
        *self.log.borrow_mut() = Some(log.clone());
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
        let log = self.log.borrow_mut().take();
        if let Some(log) = log {
            if let Err(e) = log.close().await {
                tracing::error!(error = %e, "closing the transaction log failed");
            }
        }
    }

    /// Removes expired transactional ids durably (tombstones), then compacts the log if
    /// superseded records dominate it. One at a time (the `expiring` flag).
    async fn expire_and_compact(&self, now: i64, expiration_ms: i64) {
        let expired = self.state.borrow_mut().expire_ids(now, expiration_ms);
        let Some(log) = self.log.borrow().clone() else {
            return;
        };
        if !expired.is_empty() {
            let count = expired.len();
            let tombstones = expired.into_iter().map(|id| (id, None)).collect();
            match log.append(tombstones, now, |_| ()).await {
                Ok(()) => tracing::info!(count, "expired transactional ids removed"),
                // They come back at the next start (and expire again).
                Err(e) => tracing::warn!(error = %e, "writing transactional id tombstones failed"),
            }
        }
        if let Err(e) = self.compact_if_due(&log).await {
            tracing::warn!(error = %e, "compacting the transaction log failed");
        }
    }

    /// Appends `record` to the transaction log; resolves once durable.
    async fn persist(&self, record: &TxnRecord) -> Result<(), ResponseError> {
        let log = self.log.borrow().clone().ok_or(coordinator_gone_code())?;
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
    type Write = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ResponseError>>>>;
    let mut writes: Vec<Write> = Vec::with_capacity(plan.partitions.len());
    for (topic, partition) in &plan.partitions {
        writes.push(Box::pin(write_marker(
            shard.clone(),
            topic.clone(),
            *partition,
            plan.producer_id,
            plan.epoch,
            plan.commit,
        )));
    }
    for r in crate::rt::join_all(writes).await {
        r?;
    }
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

async fn write_marker(
    shard: Rc<Shard>,
    topic: String,
    partition: i32,
    producer_id: i64,
    epoch: i16,
    commit: bool,
) -> Result<(), ResponseError> {
    let owner = shard.owner(&topic, partition);
    let answer = shard
        .invoke_on(owner, move |owner| async move {
            let Some(p) = owner.partition(&topic, partition) else {
                let metadata = owner.metadata();
                let route = super::routing::route(&metadata, owner.config.node_id, &topic, partition);
                if let super::routing::Route::Remote { leader, .. } = route {
                    // Another broker leads it, and markers are not sent to other brokers yet
                    // (Kafka's WriteTxnMarkers): the plan fails and is retried rather than
                    // completing without the marker, which would leave the transaction open
                    // there forever.
                    tracing::warn!(%topic, partition, leader, "a transaction marker for a partition led by another broker cannot be written yet");
                    return Err(crate::error::not_leader_code());
                }
                // The topic is gone (deleted): nothing to mark.
                return Ok(());
            };
            let result = p
                .log
                .append_marker(producer_id, epoch, commit, COORDINATOR_EPOCH, now_ms())
                .await;
            p.hw_changed.notify_all();
            match result {
                Ok(_) => Ok(()),
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
