//! The transaction coordinator's state machine (pure: no I/O).
//!
//! One [`TxnMeta`] per `transactional.id`, as Kafka's `TransactionMetadata`: the producer id and
//! epoch it owns, its timeout, its state, the partitions and groups of the open transaction and
//! the offsets sent with `TxnOffsetCommit`. Requests come in as method calls and go out as
//! decisions: a [`TxnRecord`] to make durable (the runtime appends it to the internal
//! transaction log before answering), or an [`EndPlan`] (write markers to these partitions,
//! apply these offsets, then call [`Transactions::complete_end`]). `shard::txns` runs the
//! effects on the coordinator shard.
//!
//! States: `Empty -> Ongoing -> PrepareCommit|PrepareAbort -> CompleteCommit|CompleteAbort ->
//! Ongoing ...`. While a transaction is being completed (Prepare*), requests for it get
//! CONCURRENT_TRANSACTIONS (retriable).
//!
//! Kafka rules followed (transactions v1, which is what Kafka 4 clients use when the broker
//! does not advertise `transaction.version` 2):
//! - InitProducerId fences: the epoch is bumped on every call (a new producer id when the epoch
//!   is exhausted); an ongoing transaction is aborted first, with the bumped epoch, so the old
//!   producer's writes and markers are fenced.
//! - AddPartitionsToTxn/AddOffsetsToTxn/EndTxn with a producer id other than the owner's:
//!   INVALID_PRODUCER_ID_MAPPING; with another epoch: PRODUCER_FENCED.
//! - EndTxn on an Empty transaction: INVALID_TXN_STATE; repeating the last completed EndTxn:
//!   success (a retry); the opposite: INVALID_TXN_STATE.
//! - A transaction open longer than its timeout is aborted with a bumped epoch.
//!
//! Recovery ([`Transactions::recover`]): Prepare* transactions are completed again (markers
//! are idempotent for the partitions). Ongoing transactions are aborted with a bumped epoch,
//! because their TxnOffsetCommit offsets were only in memory; Kafka keeps them open instead.
//! A cluster's coordinator taking over a replicated partition uses
//! [`Transactions::recover_moved`] instead: Ongoing transactions stay open (and time out as
//! usual) unless they hold groups.
//!
//! Expiration ([`Transactions::expire_ids`], Kafka's `transactional.id.expiration.ms`): an id
//! in Empty, CompleteCommit or CompleteAbort whose state has not changed for that long is
//! removed; the runtime writes a tombstone for it. The time of the last change is kept in the
//! records, so it survives restarts (records written before it existed count from the load).

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};

use super::invariants::{debug_check, ensure, Violation};
use super::offsets::{CommittedOffset, OffsetKey};

/// Largest `transaction.timeout.ms` accepted (Kafka's `transaction.max.timeout.ms` default).
pub const TXN_TIMEOUT_MS_MAX: i32 = 900_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name for the state (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }
}

/// What the internal transaction log keeps per transactional id (the latest record wins).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: Vec<(String, i32)>,
    pub groups: Vec<String>,
    pub start_ms: i64,
    /// Offsets to commit, in PrepareCommit records only (so recovery can apply them).
    pub offsets: Vec<(OffsetKey, CommittedOffset)>,
    /// Wall clock of the change (expiration); -1 in records written before it was kept.
    #[serde(default = "unknown_ms")]
    pub last_update_ms: i64,
}

fn unknown_ms() -> i64 {
    -1
}

/// One transactional id's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub groups: BTreeSet<String>,
    pub offsets: BTreeMap<OffsetKey, CommittedOffset>,
    /// When the open transaction began (first AddPartitions/AddOffsets), -1 if none.
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// A change whose record failed to persist: the next AddPartitions/AddOffsets persists the
    /// state again even if it adds nothing new.
    pub unpersisted: bool,
}

/// The effects of ending a transaction: write a marker (`commit`, `producer_id`, `epoch`) to
/// each partition, apply `offsets` if committing, then call [`Transactions::complete_end`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndPlan {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
    pub offsets: Vec<(OffsetKey, CommittedOffset)>,
    /// Record of the Prepare* state, to make durable before the markers.
    pub prepare: TxnRecord,
}

/// What InitProducerId must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitStep {
    /// Call again with a freshly allocated producer id.
    NeedProducerId,
    /// Persist the record, then answer with this id and epoch.
    Ready {
        producer_id: i64,
        epoch: i16,
        record: TxnRecord,
    },
    /// Abort the open transaction first (run the plan, complete it), then call again.
    AbortFirst(EndPlan),
}

/// Every transactional id known to the coordinator.
#[derive(Debug, Default)]
pub struct Transactions {
    txns: BTreeMap<String, TxnMeta>,
}

fn record_of(id: &str, m: &TxnMeta) -> TxnRecord {
    TxnRecord {
        transactional_id: id.to_string(),
        producer_id: m.producer_id,
        epoch: m.epoch,
        timeout_ms: m.timeout_ms,
        state: m.state,
        partitions: m.partitions.iter().cloned().collect(),
        groups: m.groups.iter().cloned().collect(),
        start_ms: m.start_ms,
        offsets: if m.state == TxnState::PrepareCommit {
            m.offsets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            Vec::new()
        },
        last_update_ms: m.last_update_ms,
    }
}

impl Transactions {
    pub fn new() -> Transactions {
        Transactions::default()
    }

    pub fn get(&self, transactional_id: &str) -> Option<&TxnMeta> {
        self.txns.get(transactional_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &TxnMeta)> {
        self.txns.iter()
    }

    /// One record per transactional id: the current state (log compaction).
    pub fn records(&self) -> Vec<TxnRecord> {
        self.txns.iter().map(|(id, m)| record_of(id, m)).collect()
    }

    /// Replay one record of the internal log.
    pub fn load(&mut self, r: TxnRecord) {
        let meta = TxnMeta {
            producer_id: r.producer_id,
            epoch: r.epoch,
            timeout_ms: r.timeout_ms,
            state: r.state,
            partitions: r.partitions.into_iter().collect(),
            groups: r.groups.into_iter().collect(),
            offsets: r.offsets.into_iter().collect(),
            start_ms: r.start_ms,
            last_update_ms: r.last_update_ms,
            unpersisted: false,
        };
        self.txns.insert(r.transactional_id, meta);
    }

    /// Replay a tombstone of the internal log: the id expired.
    pub fn unload(&mut self, transactional_id: &str) {
        self.txns.remove(transactional_id);
    }

    /// Remove the transactional ids that expired at `now_ms` (module docs) and return them;
    /// the runtime makes their removal durable with tombstones.
    pub fn expire_ids(&mut self, now_ms: i64, expiration_ms: i64) -> Vec<String> {
        let expired: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, m)| {
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && !m.unpersisted
                    && m.last_update_ms >= 0
                    && now_ms.saturating_sub(m.last_update_ms) >= expiration_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.txns.remove(id);
        }
        expired
    }

    /// After loading: the transactions to end now (module docs, Recovery).
    pub fn recover(&mut self, now_ms: i64) -> Vec<EndPlan> {
        self.recover_where(now_ms, |_| true)
    }

    /// [`Transactions::recover`], aborting only the Ongoing transactions `abort_ongoing` picks.
    fn recover_where(
        &mut self,
        now_ms: i64,
        abort_ongoing: impl Fn(&TxnMeta) -> bool,
    ) -> Vec<EndPlan> {
        let mut plans = Vec::new();
        let ids: Vec<String> = self.txns.keys().cloned().collect();
        for id in ids {
            let m = self.txns.get_mut(&id).expect("listed");
            if m.last_update_ms < 0 {
                // A record from before the time was kept: count from now.
                m.last_update_ms = now_ms;
            }
            match m.state {
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    plans.push(plan_of(&id, m));
                }
                TxnState::Ongoing if abort_ongoing(m) => {
                    plans.push(self.prepare_abort_bumped(&id, now_ms));
                }
                _ => {}
            }
        }
        debug_check(|| self.check_invariants());
        plans
    }

    /// Forgets every transactional id for which `moved` is true, without a record (a
    /// cluster's coordinator losing the `__transaction_state` partition of those ids: their
    /// next coordinator replays them from the partition).
    pub fn unload_where(&mut self, moved: impl Fn(&str) -> bool) -> usize {
        let before = self.txns.len();
        self.txns.retain(|id, _| !moved(id));
        before - self.txns.len()
    }

    /// Takes over the ids of `loaded` (a replayed `__transaction_state` partition) after
    /// [`Transactions::recover_moved`] ran on it.
    pub fn absorb(&mut self, loaded: Transactions) {
        self.txns.extend(loaded.txns);
        debug_check(|| self.check_invariants());
    }

    /// After replaying a `__transaction_state` partition on a new coordinator (a cluster):
    /// Prepare* transactions are completed again (their markers written again, Kafka's
    /// `TransactionMarkerChannelManager` on load); Ongoing ones stay open and time out as
    /// usual ([`Transactions::expire`]), as in Kafka, except those that hold groups: the
    /// offsets of their TxnOffsetCommit were only in the old coordinator's memory, so they are
    /// aborted with a bumped epoch (committing them would lose the offsets). Returns the plans
    /// to run (also listed by [`Transactions::pending_plans`]).
    pub fn recover_moved(&mut self, now_ms: i64) -> Vec<EndPlan> {
        self.recover_where(now_ms, |m| !m.groups.is_empty())
    }

    /// Bump the epoch and move to PrepareAbort (fencing, timeouts, recovery).
    fn prepare_abort_bumped(&mut self, id: &str, now_ms: i64) -> EndPlan {
        let m = self.txns.get_mut(id).expect("known transactional id");
        m.epoch = m.epoch.saturating_add(1);
        m.state = TxnState::PrepareAbort;
        m.offsets.clear();
        m.last_update_ms = now_ms;
        plan_of(id, m)
    }

    /// [`Transactions::init_producer_id`] without the invariant check.
    fn init_producer_id_unchecked(
        &mut self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh_producer_id: Option<i64>,
        now_ms: i64,
    ) -> Result<InitStep, ResponseError> {
        if id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > TXN_TIMEOUT_MS_MAX {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let Some(m) = self.txns.get_mut(id) else {
            let Some(pid) = fresh_producer_id else {
                return Ok(InitStep::NeedProducerId);
            };
            let meta = TxnMeta {
                producer_id: pid,
                epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
                offsets: BTreeMap::new(),
                start_ms: -1,
                last_update_ms: now_ms,
                unpersisted: false,
            };
            let record = record_of(id, &meta);
            self.txns.insert(id.to_string(), meta);
            return Ok(InitStep::Ready {
                producer_id: pid,
                epoch: 0,
                record,
            });
        };
        if let Some((pid, epoch)) = expected {
            // A client bumping its own epoch must still own the id (KIP-360).
            if pid != m.producer_id || epoch != m.epoch {
                return Err(ResponseError::ProducerFenced);
            }
        }
        match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(ResponseError::ConcurrentTransactions)
            }
            TxnState::Ongoing => Ok(InitStep::AbortFirst(self.prepare_abort_bumped(id, now_ms))),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if m.epoch >= i16::MAX - 1 {
                    let Some(pid) = fresh_producer_id else {
                        return Ok(InitStep::NeedProducerId);
                    };
                    m.producer_id = pid;
                    m.epoch = 0;
                } else {
                    m.epoch += 1;
                }
                m.timeout_ms = timeout_ms;
                m.last_update_ms = now_ms;
                Ok(InitStep::Ready {
                    producer_id: m.producer_id,
                    epoch: m.epoch,
                    record: record_of(id, m),
                })
            }
        }
    }

    /// InitProducerId for `transactional_id` (module docs). `expected` is the (producer id,
    /// epoch) a v3+ client sends when it bumps its own epoch, `None` for (-1, -1).
    pub fn init_producer_id(
        &mut self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh_producer_id: Option<i64>,
        now_ms: i64,
    ) -> Result<InitStep, ResponseError> {
        self.checked(id, |t| {
            t.init_producer_id_unchecked(id, timeout_ms, expected, fresh_producer_id, now_ms)
        })
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn (a group): the record to persist if anything
    /// changed.
    pub fn add(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        group: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<TxnRecord>, ResponseError> {
        self.checked(id, |t| {
            t.add_unchecked(id, pid, epoch, partitions, group, now_ms)
        })
    }

    /// TxnOffsetCommit: remember offsets to commit with the transaction. The group must have
    /// been added with AddOffsetsToTxn.
    pub fn offset_commit(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        offsets: Vec<(OffsetKey, CommittedOffset)>,
    ) -> Result<(), ResponseError> {
        self.checked(id, |t| t.offset_commit_unchecked(id, pid, epoch, offsets))
    }

    /// EndTxn: `Ok(None)` for a retry of the completed outcome, else the plan to run.
    pub fn begin_end(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<Option<EndPlan>, ResponseError> {
        self.checked(id, |t| {
            t.begin_end_unchecked(id, pid, epoch, commit, now_ms)
        })
    }

    /// The markers of `plan` are written (and its offsets applied): the Complete* record.
    pub fn complete_end(&mut self, plan: &EndPlan, now_ms: i64) -> Option<TxnRecord> {
        self.checked(&plan.transactional_id, |t| {
            t.complete_end_unchecked(plan, now_ms)
        })
    }

    /// Runs `f` (a transition of `id`); in debug builds then checks `id`'s invariants and that
    /// its producer epoch did not go back.
    fn checked<R>(&mut self, id: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let before = self.txns.get(id).map(|m| (m.producer_id, m.epoch));
        let out = f(self);
        debug_check(|| self.check_transition(id, before));
        out
    }

    /// One id's invariants after a transition, and that its epoch did not go back
    /// (`before`: (producer id, epoch) before it, `None` if the id was unknown).
    fn check_transition(&self, id: &str, before: Option<(i64, i16)>) -> Result<(), Violation> {
        let Some(m) = self.txns.get(id) else {
            return Ok(());
        };
        if let Some((pid, epoch)) = before {
            ensure!(
                m.producer_id != pid || m.epoch >= epoch,
                "{id}: producer {pid} epoch went back from {epoch} to {}",
                m.epoch
            );
        }
        check_meta(id, m)?;
        ensure!(
            self.txns
                .iter()
                .all(|(other, o)| other == id || o.producer_id != m.producer_id),
            "{id}: producer id {} also owned by another transactional id",
            m.producer_id
        );
        Ok(())
    }

    /// Every transactional id's invariants ([`check_meta`]) and that no two ids share a
    /// producer id (produce-side verification finds a transaction by its producer id). For
    /// the simulator and the proptest; debug builds check the id a call touched after it.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        let mut producer_ids = BTreeMap::new();
        for (id, m) in &self.txns {
            check_meta(id, m)?;
            if let Some(other) = producer_ids.insert(m.producer_id, id) {
                return Err(Violation(format!(
                    "{id} and {other} share producer id {}",
                    m.producer_id
                )));
            }
        }
        Ok(())
    }

    /// Checks shared by the in-transaction requests.
    fn owned(&mut self, id: &str, pid: i64, epoch: i16) -> Result<&mut TxnMeta, ResponseError> {
        let m = self
            .txns
            .get_mut(id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        if m.producer_id != pid {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if m.epoch != epoch {
            return Err(ResponseError::ProducerFenced);
        }
        if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        Ok(m)
    }

    /// [`Transactions::add`] without the invariant check.
    fn add_unchecked(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        group: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<TxnRecord>, ResponseError> {
        let m = self.owned(id, pid, epoch)?;
        let mut changed = m.state != TxnState::Ongoing || m.unpersisted;
        m.unpersisted = false;
        if m.state != TxnState::Ongoing {
            m.state = TxnState::Ongoing;
            m.start_ms = now_ms;
            m.partitions.clear();
            m.groups.clear();
            m.offsets.clear();
        }
        for p in partitions {
            changed |= m.partitions.insert(p.clone());
        }
        if let Some(g) = group {
            changed |= m.groups.insert(g.to_string());
        }
        m.last_update_ms = now_ms;
        Ok(changed.then(|| record_of(id, m)))
    }

    /// Produce-side verification: is `partition` in the open transaction of `producer_id` at
    /// `epoch`? INVALID_PRODUCER_EPOCH for an older epoch, INVALID_TXN_STATE otherwise.
    pub fn verify_partition(
        &self,
        producer_id: i64,
        epoch: i16,
        partition: &(String, i32),
    ) -> Result<(), ResponseError> {
        let Some(m) = self.txns.values().find(|m| m.producer_id == producer_id) else {
            return Err(ResponseError::InvalidTxnState);
        };
        if epoch < m.epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        if m.epoch == epoch && m.state == TxnState::Ongoing && m.partitions.contains(partition) {
            Ok(())
        } else {
            Err(ResponseError::InvalidTxnState)
        }
    }

    /// Offsets sent with TxnOffsetCommit whose transaction has not completed yet (an
    /// OffsetFetch with `require_stable` answers them UNSTABLE_OFFSET_COMMIT, KIP-447).
    pub fn pending_offsets(&self) -> std::collections::HashSet<OffsetKey> {
        self.txns
            .values()
            .filter(|m| matches!(m.state, TxnState::Ongoing | TxnState::PrepareCommit))
            .flat_map(|m| m.offsets.keys().cloned())
            .collect()
    }

    /// The record of `id`'s last change could not be made durable (see `TxnMeta::unpersisted`).
    pub fn persist_failed(&mut self, id: &str) {
        if let Some(m) = self.txns.get_mut(id) {
            m.unpersisted = true;
        }
    }

    /// [`Transactions::offset_commit`] without the invariant check.
    fn offset_commit_unchecked(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        offsets: Vec<(OffsetKey, CommittedOffset)>,
    ) -> Result<(), ResponseError> {
        let m = self.owned(id, pid, epoch)?;
        if m.state != TxnState::Ongoing || offsets.iter().any(|(k, _)| !m.groups.contains(&k.group))
        {
            return Err(ResponseError::InvalidTxnState);
        }
        m.offsets.extend(offsets);
        Ok(())
    }

    /// [`Transactions::begin_end`] without the invariant check.
    fn begin_end_unchecked(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<Option<EndPlan>, ResponseError> {
        let m = self.owned(id, pid, epoch)?;
        match (m.state, commit) {
            (TxnState::Ongoing, _) => {
                m.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    m.offsets.clear();
                    TxnState::PrepareAbort
                };
                m.last_update_ms = now_ms;
                Ok(Some(plan_of(id, m)))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(None),
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// [`Transactions::complete_end`] without the invariant check.
    fn complete_end_unchecked(&mut self, plan: &EndPlan, now_ms: i64) -> Option<TxnRecord> {
        let m = self.txns.get_mut(&plan.transactional_id)?;
        let prepared = if plan.commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if m.state != prepared || m.producer_id != plan.producer_id || m.epoch != plan.epoch {
            return None;
        }
        m.state = if plan.commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        m.partitions.clear();
        m.groups.clear();
        m.offsets.clear();
        m.start_ms = -1;
        m.last_update_ms = now_ms;
        Some(record_of(&plan.transactional_id, m))
    }

    /// Marker writing failed: back to the Prepare state's predecessor is impossible (the
    /// decision is durable), so the plan stays pending; the runtime retries it on ticks.
    /// Returns the plans of every transaction stuck in Prepare*.
    pub fn pending_plans(&self) -> Vec<EndPlan> {
        self.txns
            .iter()
            .filter(|(_, m)| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
            .map(|(id, m)| plan_of(id, m))
            .collect()
    }

    /// Transactions open longer than their timeout: abort them with a bumped epoch.
    pub fn expire(&mut self, now_ms: i64) -> Vec<EndPlan> {
        let expired: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, m)| {
                m.state == TxnState::Ongoing
                    && m.start_ms >= 0
                    && now_ms.saturating_sub(m.start_ms) > i64::from(m.timeout_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let plans = expired
            .into_iter()
            .map(|id| self.prepare_abort_bumped(&id, now_ms))
            .collect();
        debug_check(|| self.check_invariants());
        plans
    }
}

/// The invariants of one transactional id (the module essay's, as code): producer id and
/// epoch are valid and the timeout within bounds; a transaction that is not open (`Empty`,
/// `Complete*`) holds no partitions, groups or offsets and has no start time; an open or
/// preparing one has a start time; offsets sent with TxnOffsetCommit belong to groups added
/// to the transaction; an abort carries no offsets.
pub fn check_meta(id: &str, m: &TxnMeta) -> Result<(), Violation> {
    ensure!(
        m.producer_id >= 0 && m.epoch >= 0,
        "{id}: producer id {} epoch {}",
        m.producer_id,
        m.epoch
    );
    ensure!(
        m.timeout_ms > 0 && m.timeout_ms <= TXN_TIMEOUT_MS_MAX,
        "{id}: timeout {} ms",
        m.timeout_ms
    );
    match m.state {
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            ensure!(
                m.partitions.is_empty() && m.groups.is_empty() && m.offsets.is_empty(),
                "{id}: {} with {} partitions, {} groups, {} offsets",
                m.state.name(),
                m.partitions.len(),
                m.groups.len(),
                m.offsets.len()
            );
            ensure!(
                m.start_ms == -1,
                "{id}: {} started at {}",
                m.state.name(),
                m.start_ms
            );
        }
        TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort => {
            ensure!(
                m.start_ms >= 0,
                "{id}: {} without a start time",
                m.state.name()
            );
        }
    }
    if m.state == TxnState::PrepareAbort {
        ensure!(
            m.offsets.is_empty(),
            "{id}: an abort with {} offsets",
            m.offsets.len()
        );
    }
    for key in m.offsets.keys() {
        ensure!(
            m.groups.contains(&key.group),
            "{id}: offset of group {} not added to the transaction",
            key.group
        );
    }
    Ok(())
}

fn plan_of(id: &str, m: &TxnMeta) -> EndPlan {
    let commit = m.state == TxnState::PrepareCommit;
    assert!(commit || m.state == TxnState::PrepareAbort);
    EndPlan {
        transactional_id: id.to_string(),
        producer_id: m.producer_id,
        epoch: m.epoch,
        commit,
        partitions: m.partitions.iter().cloned().collect(),
        offsets: if commit {
            m.offsets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            Vec::new()
        },
        prepare: record_of(id, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(step: InitStep) -> (i64, i16) {
        match step {
            InitStep::Ready {
                producer_id, epoch, ..
            } => (producer_id, epoch),
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    fn p(t: &str, i: i32) -> (String, i32) {
        (t.to_string(), i)
    }

    fn offset(group: &str, o: i64) -> (OffsetKey, CommittedOffset) {
        (
            OffsetKey {
                group: group.into(),
                topic: "in".into(),
                partition: 0,
            },
            CommittedOffset {
                offset: o,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            },
        )
    }

    /// A new coordinator's load: Prepare* stays for its plan, a plain Ongoing transaction
    /// stays open (and times out later), one holding groups is aborted with a bumped epoch;
    /// unloading forgets exactly the ids of the moved partition.
    #[test]
    fn a_moved_partition_recovers_prepare_keeps_ongoing_and_unloads() {
        let mut t = Transactions::new();
        let base = |id: &str, state: TxnState, groups: Vec<String>| TxnRecord {
            transactional_id: id.into(),
            producer_id: id.len() as i64,
            epoch: 3,
            timeout_ms: 1_000,
            state,
            partitions: vec![p("t", 0)],
            groups,
            start_ms: 10,
            offsets: Vec::new(),
            last_update_ms: -1,
        };
        t.load(base("open", TxnState::Ongoing, Vec::new()));
        t.load(base("with-group", TxnState::Ongoing, vec!["g".into()]));
        t.load(base("deciding", TxnState::PrepareCommit, Vec::new()));
        let mut done = base("done!", TxnState::CompleteCommit, Vec::new());
        done.partitions.clear();
        done.start_ms = -1;
        t.load(done);
        let plans = t.recover_moved(100);
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].transactional_id, "deciding");
        assert!(plans[0].commit);
        assert_eq!(plans[1].transactional_id, "with-group");
        assert!(!plans[1].commit);
        assert_eq!(plans[1].epoch, 4, "aborted with a bumped epoch");
        assert_eq!(t.get("open").unwrap().state, TxnState::Ongoing);
        assert_eq!(t.get("open").unwrap().last_update_ms, 100);
        let pending: Vec<String> = t
            .pending_plans()
            .into_iter()
            .map(|p| p.transactional_id)
            .collect();
        assert_eq!(
            pending,
            vec!["deciding".to_string(), "with-group".to_string()]
        );
        assert!(t.expire(1_000).is_empty(), "within its timeout");
        assert_eq!(t.expire(1_011).len(), 1, "the open one times out as usual");

        let mut other = Transactions::new();
        other.load(base("elsewhere-x", TxnState::Ongoing, Vec::new()));
        t.absorb(other);
        assert_eq!(t.unload_where(|id| id != "elsewhere-x"), 4);
        assert_eq!(
            t.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            ["elsewhere-x"]
        );
    }

    #[test]
    fn init_allocates_then_bumps_and_fences() {
        let mut t = Transactions::new();
        assert_eq!(
            t.init_producer_id("tx", 60_000, None, None, 0),
            Ok(InitStep::NeedProducerId)
        );
        assert_eq!(
            ready(
                t.init_producer_id("tx", 60_000, None, Some(1000), 0)
                    .unwrap()
            ),
            (1000, 0)
        );
        assert_eq!(
            ready(t.init_producer_id("tx", 60_000, None, None, 1).unwrap()),
            (1000, 1)
        );
        // The old epoch is fenced from the transaction.
        assert_eq!(
            t.add("tx", 1000, 0, &[p("a", 0)], None, 2),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            t.add("tx", 999, 1, &[p("a", 0)], None, 2),
            Err(ResponseError::InvalidProducerIdMapping)
        );
        assert_eq!(
            t.init_producer_id("tx", 60_000, Some((1000, 0)), None, 3),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            t.init_producer_id("tx", 0, None, None, 3),
            Err(ResponseError::InvalidTransactionTimeout)
        );
    }

    #[test]
    fn commit_runs_markers_then_completes_and_retries_succeed() {
        let mut t = Transactions::new();
        ready(t.init_producer_id("tx", 60_000, None, Some(7), 0).unwrap());
        let rec = t
            .add("tx", 7, 0, &[p("a", 0), p("b", 1)], None, 10)
            .unwrap()
            .expect("state changed");
        assert_eq!(rec.state, TxnState::Ongoing);
        assert_eq!(t.add("tx", 7, 0, &[p("a", 0)], None, 11), Ok(None));
        // A change that failed to persist is persisted by the next add, even an empty one.
        t.persist_failed("tx");
        assert!(t.add("tx", 7, 0, &[p("a", 0)], None, 11).unwrap().is_some());
        assert_eq!(t.add("tx", 7, 0, &[p("a", 0)], None, 11), Ok(None));
        assert!(t.add("tx", 7, 0, &[], Some("g"), 11).unwrap().is_some());
        t.offset_commit("tx", 7, 0, vec![offset("g", 42)]).unwrap();
        assert_eq!(t.pending_offsets().len(), 1);
        assert_eq!(
            t.offset_commit("tx", 7, 0, vec![offset("other", 1)]),
            Err(ResponseError::InvalidTxnState)
        );
        let plan = t.begin_end("tx", 7, 0, true, 20).unwrap().expect("plan");
        assert!(plan.commit);
        assert_eq!(plan.partitions, vec![p("a", 0), p("b", 1)]);
        assert_eq!(plan.offsets, vec![offset("g", 42)]);
        assert_eq!(plan.prepare.state, TxnState::PrepareCommit);
        assert_eq!(plan.prepare.offsets, vec![offset("g", 42)]);
        // While markers are written, everything else waits.
        assert_eq!(
            t.add("tx", 7, 0, &[p("a", 0)], None, 21),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(
            t.init_producer_id("tx", 60_000, None, None, 21),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(t.pending_offsets().len(), 1, "still pending while prepared");
        let done = t.complete_end(&plan, 22).expect("completed");
        assert!(t.pending_offsets().is_empty());
        assert_eq!(done.state, TxnState::CompleteCommit);
        assert!(done.partitions.is_empty());
        // A retried commit succeeds; an abort now is a state error.
        assert_eq!(t.begin_end("tx", 7, 0, true, 23), Ok(None));
        assert_eq!(
            t.begin_end("tx", 7, 0, false, 23),
            Err(ResponseError::InvalidTxnState)
        );
        // Next transaction.
        assert!(t.add("tx", 7, 0, &[p("c", 0)], None, 30).unwrap().is_some());
        let plan = t.begin_end("tx", 7, 0, false, 31).unwrap().expect("plan");
        assert_eq!(plan.partitions, vec![p("c", 0)]);
        assert!(!plan.commit);
    }

    /// Ids expire only in Empty/CompleteCommit/CompleteAbort, once unchanged for the
    /// expiration time; the time survives a reload through the records.
    #[test]
    fn idle_transactional_ids_expire_and_open_ones_do_not() {
        const EXP: i64 = 1_000;
        let mut t = Transactions::new();
        ready(
            t.init_producer_id("empty", 60_000, None, Some(1), 0)
                .unwrap(),
        );
        ready(
            t.init_producer_id("done", 60_000, None, Some(2), 0)
                .unwrap(),
        );
        ready(
            t.init_producer_id("open", 60_000, None, Some(3), 0)
                .unwrap(),
        );
        t.add("done", 2, 0, &[p("a", 0)], None, 100).unwrap();
        let plan = t
            .begin_end("done", 2, 0, false, 200)
            .unwrap()
            .expect("plan");
        t.complete_end(&plan, 300).expect("completed");
        t.add("open", 3, 0, &[p("a", 0)], None, 100).unwrap();
        assert!(t.expire_ids(999, EXP).is_empty(), "not yet");
        assert_eq!(t.expire_ids(1_000, EXP), vec!["empty".to_string()]);
        assert!(t.get("empty").is_none());
        assert!(t.expire_ids(1_299, EXP).is_empty(), "done changed at 300");
        // A reload keeps the time of the last change.
        let mut reloaded = Transactions::new();
        for r in t.records() {
            reloaded.load(r);
        }
        // (The open transaction is aborted by recovery: leave it out of this check.)
        reloaded.unload("open");
        assert!(reloaded.recover(1_250).is_empty());
        assert_eq!(reloaded.expire_ids(1_300, EXP), vec!["done".to_string()]);
        // Ongoing is never expired, however old; nor is a Prepare state.
        assert!(t.expire_ids(1_000_000, EXP).contains(&"done".to_string()));
        assert!(t.get("open").is_some());
        let plan = t
            .begin_end("open", 3, 0, true, 2_000_000)
            .unwrap()
            .expect("plan");
        assert!(
            t.expire_ids(9_000_000, EXP).is_empty(),
            "PrepareCommit stays"
        );
        t.complete_end(&plan, 9_000_000);
        assert_eq!(t.expire_ids(9_001_000, EXP), vec!["open".to_string()]);
        // A record without the time (an older broker's) counts from the load.
        let mut old = Transactions::new();
        let mut r = record_of(
            "legacy",
            &TxnMeta {
                producer_id: 9,
                epoch: 0,
                timeout_ms: 60_000,
                state: TxnState::CompleteCommit,
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
                offsets: BTreeMap::new(),
                start_ms: -1,
                last_update_ms: -1,
                unpersisted: false,
            },
        );
        let json = serde_json::to_string(&r)
            .unwrap()
            .replace(",\"last_update_ms\":-1", "");
        r = serde_json::from_str(&json).unwrap();
        assert_eq!(r.last_update_ms, -1);
        old.load(r);
        old.recover(5_000);
        assert!(old.expire_ids(5_999, EXP).is_empty());
        assert_eq!(old.expire_ids(6_000, EXP).len(), 1);
    }

    #[test]
    fn produce_verification_needs_the_partition_in_the_open_transaction() {
        let mut t = Transactions::new();
        ready(t.init_producer_id("tx", 60_000, None, Some(7), 0).unwrap());
        assert_eq!(
            t.verify_partition(7, 0, &p("a", 0)),
            Err(ResponseError::InvalidTxnState)
        );
        t.add("tx", 7, 0, &[p("a", 0)], None, 1).unwrap();
        assert_eq!(t.verify_partition(7, 0, &p("a", 0)), Ok(()));
        assert_eq!(
            t.verify_partition(7, 0, &p("a", 1)),
            Err(ResponseError::InvalidTxnState)
        );
        assert_eq!(
            t.verify_partition(8, 0, &p("a", 0)),
            Err(ResponseError::InvalidTxnState)
        );
        let plan = t.begin_end("tx", 7, 0, true, 2).unwrap().unwrap();
        t.complete_end(&plan, 3);
        assert_eq!(
            t.verify_partition(7, 0, &p("a", 0)),
            Err(ResponseError::InvalidTxnState),
            "a late write after the commit"
        );
        ready(t.init_producer_id("tx", 60_000, None, None, 4).unwrap());
        assert_eq!(
            t.verify_partition(7, 0, &p("a", 0)),
            Err(ResponseError::InvalidProducerEpoch)
        );
    }

    #[test]
    fn empty_transaction_cannot_end() {
        let mut t = Transactions::new();
        ready(t.init_producer_id("tx", 60_000, None, Some(7), 0).unwrap());
        assert_eq!(
            t.begin_end("tx", 7, 0, true, 1),
            Err(ResponseError::InvalidTxnState)
        );
        assert_eq!(
            t.begin_end("nope", 7, 0, true, 1),
            Err(ResponseError::InvalidProducerIdMapping)
        );
    }

    #[test]
    fn init_during_a_transaction_aborts_it_with_a_bumped_epoch() {
        let mut t = Transactions::new();
        ready(t.init_producer_id("tx", 60_000, None, Some(7), 0).unwrap());
        t.add("tx", 7, 0, &[p("a", 0)], None, 1).unwrap();
        let InitStep::AbortFirst(plan) = t.init_producer_id("tx", 60_000, None, None, 2).unwrap()
        else {
            panic!("expected an abort first");
        };
        assert_eq!((plan.epoch, plan.commit), (1, false));
        assert_eq!(plan.partitions, vec![p("a", 0)]);
        // The zombie (epoch 0) is fenced from ending its transaction.
        assert_eq!(
            t.begin_end("tx", 7, 0, true, 3),
            Err(ResponseError::ProducerFenced)
        );
        t.complete_end(&plan, 3).expect("complete");
        assert_eq!(
            ready(t.init_producer_id("tx", 60_000, None, None, 4).unwrap()),
            (7, 2)
        );
    }

    #[test]
    fn timeouts_abort_and_recovery_finishes_or_aborts() {
        let mut t = Transactions::new();
        ready(t.init_producer_id("slow", 1_000, None, Some(1), 0).unwrap());
        ready(
            t.init_producer_id("fast", 60_000, None, Some(2), 0)
                .unwrap(),
        );
        t.add("slow", 1, 0, &[p("a", 0)], None, 100).unwrap();
        t.add("fast", 2, 0, &[p("b", 0)], None, 100).unwrap();
        assert!(t.expire(1_100).is_empty());
        let plans = t.expire(1_101);
        assert_eq!(plans.len(), 1);
        assert_eq!(
            (
                plans[0].transactional_id.as_str(),
                plans[0].epoch,
                plans[0].commit
            ),
            ("slow", 1, false)
        );
        assert_eq!(
            t.add("slow", 1, 0, &[p("a", 0)], None, 1_200),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(t.pending_plans().len(), 1);

        // Replay the records a runtime would have persisted: "fast" is Ongoing and gets
        // aborted with a bumped epoch; "slow" is PrepareAbort and is completed again.
        let mut records = Vec::new();
        for (id, m) in t.iter() {
            records.push(record_of(id, m));
        }
        let mut r = Transactions::new();
        for rec in records {
            let text = serde_json::to_string(&rec).unwrap();
            r.load(serde_json::from_str(&text).unwrap());
        }
        let mut plans = r.recover(2_000);
        plans.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        assert_eq!(plans.len(), 2);
        assert_eq!(
            (
                plans[0].transactional_id.as_str(),
                plans[0].epoch,
                plans[0].commit
            ),
            ("fast", 1, false)
        );
        assert_eq!(plans[0].partitions, vec![p("b", 0)]);
        assert_eq!(
            (plans[1].transactional_id.as_str(), plans[1].epoch),
            ("slow", 1)
        );
        for plan in &plans {
            assert!(r.complete_end(plan, 2_001).is_some());
        }
        assert!(r.pending_plans().is_empty());
    }

    #[test]
    fn a_prepared_commit_keeps_its_offsets_through_recovery() {
        let mut t = Transactions::new();
        ready(t.init_producer_id("tx", 60_000, None, Some(7), 0).unwrap());
        t.add("tx", 7, 0, &[p("a", 0)], Some("g"), 1).unwrap();
        t.offset_commit("tx", 7, 0, vec![offset("g", 5)]).unwrap();
        let plan = t.begin_end("tx", 7, 0, true, 2).unwrap().unwrap();
        let mut r = Transactions::new();
        r.load(plan.prepare.clone());
        let plans = r.recover(3);
        assert_eq!(plans.len(), 1);
        assert!(plans[0].commit);
        assert_eq!(plans[0].offsets, vec![offset("g", 5)]);
    }

    /// One step of random producers on transactional ids tx0..tx2.
    #[derive(Clone, Debug)]
    enum Op {
        /// InitProducerId (`bump`: with the producer's current id and epoch, KIP-360).
        Init { id: u8, bump: bool },
        /// AddPartitionsToTxn (a partition) or AddOffsetsToTxn (a group), maybe with a stale
        /// epoch.
        Add {
            id: u8,
            partition: u8,
            group: bool,
            stale: bool,
        },
        /// TxnOffsetCommit for group g0 or g1.
        OffsetCommit { id: u8, group: u8 },
        /// EndTxn; the plan's markers are written (`complete`) or not yet.
        End {
            id: u8,
            commit: bool,
            complete: bool,
        },
        /// The runtime retries the plans stuck in Prepare*.
        RetryPending,
        /// Time passes: transactions past their timeout are aborted, expired ids removed.
        Expire { ms: u32 },
        /// A restart: the log's records are replayed into a fresh coordinator and recovered.
        Restart,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            1 => (0..3u8, any::<bool>()).prop_map(|(id, bump)| Op::Init { id, bump }),
            3 => (0..3u8, 0..4u8, any::<bool>(), proptest::bool::weighted(0.1)).prop_map(
                |(id, partition, group, stale)| Op::Add { id, partition, group, stale }
            ),
            1 => (0..3u8, 0..2u8).prop_map(|(id, group)| Op::OffsetCommit { id, group }),
            2 => (0..3u8, any::<bool>(), proptest::bool::weighted(0.8))
                .prop_map(|(id, commit, complete)| Op::End { id, commit, complete }),
            1 => Just(Op::RetryPending),
            1 => (0..120_000u32).prop_map(|ms| Op::Expire { ms }),
            1 => Just(Op::Restart),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random InitProducerId / AddPartitions / AddOffsets / TxnOffsetCommit / EndTxn calls,
        /// marker writes that finish or not, timeouts, expirations and restarts keep every
        /// invariant after every step; a producer id's epoch never goes back; every partition
        /// added to an ongoing transaction verifies for its producer.
        #[test]
        fn random_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..120)) {
            let mut t = Transactions::new();
            let mut next_pid = 1000;
            let mut now: i64 = 0;
            // What each producer was last told: (producer id, epoch).
            let mut producers: BTreeMap<u8, (i64, i16)> = BTreeMap::new();
            let mut epochs: BTreeMap<i64, i16> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Init { id, bump } => {
                        let tid = format!("tx{id}");
                        let expected = if bump { producers.get(&id).copied() } else { None };
                        let mut fresh = None;
                        for _ in 0..4 {
                            match t.init_producer_id(&tid, 60_000, expected, fresh, now) {
                                Ok(InitStep::NeedProducerId) => {
                                    next_pid += 1;
                                    fresh = Some(next_pid);
                                }
                                Ok(InitStep::AbortFirst(plan)) => {
                                    t.complete_end(&plan, now);
                                }
                                Ok(InitStep::Ready { producer_id, epoch, .. }) => {
                                    producers.insert(id, (producer_id, epoch));
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    Op::Add { id, partition, group, stale } => {
                        if let Some((pid, epoch)) = producers.get(&id).copied() {
                            let epoch = if stale { epoch - 1 } else { epoch };
                            let p = ("t".to_string(), i32::from(partition));
                            let tid = format!("tx{id}");
                            let added = if group {
                                t.add(&tid, pid, epoch, &[], Some("g0"), now)
                            } else {
                                t.add(&tid, pid, epoch, std::slice::from_ref(&p), None, now)
                            };
                            if added.is_ok() && !group {
                                proptest::prop_assert_eq!(t.verify_partition(pid, epoch, &p), Ok(()));
                            }
                        }
                    }
                    Op::OffsetCommit { id, group } => {
                        if let Some((pid, epoch)) = producers.get(&id).copied() {
                            let _ = t.offset_commit(&format!("tx{id}"), pid, epoch, vec![offset(&format!("g{group}"), 5)]);
                        }
                    }
                    Op::End { id, commit, complete } => {
                        if let Some((pid, epoch)) = producers.get(&id).copied() {
                            if let Ok(Some(plan)) = t.begin_end(&format!("tx{id}"), pid, epoch, commit, now) {
                                if complete {
                                    t.complete_end(&plan, now);
                                }
                            }
                        }
                    }
                    Op::RetryPending => {
                        for plan in t.pending_plans() {
                            t.complete_end(&plan, now);
                        }
                    }
                    Op::Expire { ms } => {
                        now += i64::from(ms);
                        for plan in t.expire(now) {
                            t.complete_end(&plan, now);
                        }
                        t.expire_ids(now, 200_000);
                    }
                    Op::Restart => {
                        let mut fresh = Transactions::new();
                        for r in t.records() {
                            fresh.load(r);
                        }
                        t = fresh;
                        t.recover(now);
                    }
                }
                if let Err(v) = t.check_invariants() {
                    proptest::prop_assert!(false, "{v}");
                }
                for (_, m) in t.iter() {
                    let before = epochs.insert(m.producer_id, m.epoch);
                    proptest::prop_assert!(
                        before.is_none_or(|e| e <= m.epoch),
                        "producer {} epoch went back from {before:?} to {}", m.producer_id, m.epoch
                    );
                }
            }
        }
    }
}
