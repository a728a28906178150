//! One share partition (KIP-932): the records of one topic partition as one share group
//! consumes them, acquired by members under a time lock and acknowledged one by one.
//!
//! Pure state machine (no I/O, time passed in): `shard::shares` runs it on the coordinator
//! shard, reads the records it asks for, and writes its [`ShareState`] to the share-state log.
//!
//! The model, as Kafka's `SharePartition`:
//! - The start offset (SPSO) and end offset (SPEO): every offset below the start is done
//!   (acknowledged or archived); offsets at or past the end were never acquired. Between them,
//!   each record is *in flight*: `Available` (released or lock timed out, to be delivered again)
//!   or `Acquired` by one member until a deadline. An offset between them that is not in the
//!   in-flight map is done (accepted, rejected, archived, a gap, a control record or, for a
//!   read_committed group, an aborted transaction's record): terminal
//!   states are not kept, so the start is simply the first in-flight offset (or the end).
//! - [`SharePartition::acquire`] hands out available records first, then new ones from the end,
//!   each with its delivery count raised by one, locked for `record_lock_duration_ms`.
//! - [`SharePartition::acknowledge`]: ACCEPT, REJECT and GAP end a record; RELEASE makes it
//!   available again, unless its delivery count reached `delivery_count_limit` (then it is
//!   archived, as are records whose lock runs out at the limit).
//! - Bounded: the end never runs more than `record_locks_max` offsets past the start (Kafka's
//!   `group.share.partition.max.record.locks` bounds SPEO - SPSO the same way), so the in-flight
//!   map holds at most `record_locks_max` entries, and a [`ShareState`] at most that many ranges.
//!
//! Durable state ([`ShareState`]): the start and end offsets and the in-flight records with their
//! delivery counts, acquired ones written as available (after a restart their locks are gone:
//! they are delivered again), as Kafka's share-group state persister does.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

/// Acknowledge types of ShareFetch / ShareAcknowledge (KIP-932).
pub const ACK_GAP: i8 = 0;
pub const ACK_ACCEPT: i8 = 1;
pub const ACK_RELEASE: i8 = 2;
pub const ACK_REJECT: i8 = 3;

/// The limits of a share partition (Kafka's `group.share.*` broker configs).
#[derive(Clone, Copy, Debug)]
pub struct ShareLimits {
    /// `group.share.record.lock.duration.ms`.
    pub record_lock_duration_ms: i64,
    /// `group.share.delivery.count.limit`.
    pub delivery_count_limit: i16,
    /// `group.share.partition.max.record.locks`: the most offsets from start to end.
    pub record_locks_max: usize,
}

/// An in-flight record.
#[derive(Clone, Debug, PartialEq, Eq)]
enum InFlight {
    Available {
        delivery_count: i16,
    },
    Acquired {
        delivery_count: i16,
        member: Rc<str>,
        deadline_ms: i64,
    },
}

impl InFlight {
    fn delivery_count(&self) -> i16 {
        match self {
            InFlight::Available { delivery_count } | InFlight::Acquired { delivery_count, .. } => {
                *delivery_count
            }
        }
    }
}

/// A run of acquired offsets with one delivery count (ShareFetch's `AcquiredRecords`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcquiredRange {
    pub first_offset: i64,
    pub last_offset: i64,
    pub delivery_count: i16,
}

/// One record batch as the log holds it: its first and last offsets and whether its records
/// are never delivered (`skipped`: a control batch, a transaction marker; for a read_committed
/// group also an aborted transaction's batch, which Kafka's `SharePartition` archives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSpan {
    pub base_offset: i64,
    pub last_offset: i64,
    pub skipped: bool,
}

/// Why an acknowledgement was refused (nothing of its batch is applied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckError {
    /// Malformed: first > last, a types list of the wrong length, an unknown type.
    InvalidRequest,
    /// A record in the range is not acquired by this member (INVALID_RECORD_STATE).
    InvalidRecordState,
}

/// The durable state of a share partition: start and end offsets, and the in-flight records as
/// runs `(first, last, delivery_count)` of available records (Kafka's share snapshot), with
/// Kafka's state epoch (a cluster's share coordinator raises it at each admin change, so a
/// partition leader still holding an older copy is fenced: `shard::shares::replicated`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareState {
    pub start_offset: i64,
    pub end_offset: i64,
    pub in_flight: Vec<(i64, i64, i16)>,
    #[serde(default)]
    pub state_epoch: i32,
}

/// Counts for describing a share partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShareCounts {
    pub acquired: usize,
    pub available: usize,
}

/// One share partition; see the module doc. Owned by the coordinator shard.
#[derive(Debug)]
pub struct SharePartition {
    limits: ShareLimits,
    end_offset: i64,
    in_flight: BTreeMap<i64, InFlight>,
}

impl SharePartition {
    /// A share partition starting (and ending) at `start_offset`.
    pub fn new(limits: ShareLimits, start_offset: i64) -> SharePartition {
        assert!(limits.record_locks_max > 0 && limits.delivery_count_limit > 0);
        assert!(start_offset >= 0);
        SharePartition {
            limits,
            end_offset: start_offset,
            in_flight: BTreeMap::new(),
        }
    }

    /// Rebuilt from its durable state (every in-flight record available). Ranges outside
    /// `[start, end)` or beyond the lock limit are dropped: the state came from disk.
    pub fn restore(limits: ShareLimits, state: &ShareState) -> SharePartition {
        let start = state.start_offset.max(0);
        let end = state
            .end_offset
            .clamp(start, start.saturating_add(limits.record_locks_max as i64));
        let mut p = SharePartition::new(limits, start);
        p.end_offset = end;
        for &(first, last, count) in &state.in_flight {
            for offset in first.max(start)..=last.min(end - 1) {
                p.in_flight.insert(
                    offset,
                    InFlight::Available {
                        delivery_count: count.max(0),
                    },
                );
            }
        }
        p.check();
        p
    }

    /// The start offset (SPSO): every offset below it is done.
    pub fn start_offset(&self) -> i64 {
        self.in_flight
            .keys()
            .next()
            .copied()
            .unwrap_or(self.end_offset)
    }

    /// The end offset (SPEO): the first offset never acquired.
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    /// Acquired and available records.
    pub fn counts(&self) -> ShareCounts {
        let acquired = self
            .in_flight
            .values()
            .filter(|r| matches!(r, InFlight::Acquired { .. }))
            .count();
        ShareCounts {
            acquired,
            available: self.in_flight.len() - acquired,
        }
    }

    /// The durable state (acquired records as available).
    pub fn state(&self) -> ShareState {
        let mut runs: Vec<(i64, i64, i16)> = Vec::new();
        for (&offset, record) in &self.in_flight {
            let count = record.delivery_count();
            match runs.last_mut() {
                Some((_, last, c)) if *last + 1 == offset && *c == count => *last = offset,
                _ => runs.push((offset, offset, count)),
            }
        }
        ShareState {
            start_offset: self.start_offset(),
            end_offset: self.end_offset,
            in_flight: runs,
            state_epoch: 0,
        }
    }

    /// Moves the whole partition to `offset` (the log start moved past it, or an admin reset):
    /// records below it are done; at or past the end the partition starts afresh there.
    pub fn reset_to(&mut self, offset: i64) {
        if offset >= self.end_offset {
            self.in_flight.clear();
            self.end_offset = offset;
        } else {
            self.in_flight = self.in_flight.split_off(&offset);
        }
        self.check();
    }

    /// Records whose lock ran out become available again (or are archived at the delivery
    /// limit). Returns whether anything changed.
    pub fn expire_locks(&mut self, now_ms: i64) -> bool {
        let expired: Vec<i64> = self
            .in_flight
            .iter()
            .filter(|(_, r)| matches!(r, InFlight::Acquired { deadline_ms, .. } if *deadline_ms <= now_ms))
            .map(|(o, _)| *o)
            .collect();
        for offset in &expired {
            self.release(*offset);
        }
        !expired.is_empty()
    }

    /// Releases every record `member` holds (the member left or its share session closed).
    /// Returns whether anything changed.
    pub fn release_member(&mut self, member: &str) -> bool {
        let held: Vec<i64> = self
            .in_flight
            .iter()
            .filter(|(_, r)| matches!(r, InFlight::Acquired { member: m, .. } if &**m == member))
            .map(|(o, _)| *o)
            .collect();
        for offset in &held {
            self.release(*offset);
        }
        !held.is_empty()
    }

    /// How many records `member` holds acquired (locks that ran out by `now_ms` not counted).
    pub fn acquired_by(&self, now_ms: i64, member: &str) -> usize {
        self.in_flight
            .values()
            .filter(|r| {
                matches!(r, InFlight::Acquired { member: m, deadline_ms, .. }
                    if &**m == member && *deadline_ms > now_ms)
            })
            .count()
    }

    /// The offset to read the log from for the next acquisition: the first available record,
    /// else the end when there is room for more in-flight records; `None` when nothing can be
    /// acquired. Expires locks first.
    pub fn next_read_offset(&mut self, now_ms: i64) -> Option<i64> {
        self.expire_locks(now_ms);
        let available = self
            .in_flight
            .iter()
            .find(|(_, r)| matches!(r, InFlight::Available { .. }))
            .map(|(o, _)| *o);
        available.or_else(|| self.has_room().then_some(self.end_offset))
    }

    fn has_room(&self) -> bool {
        ((self.end_offset - self.start_offset()) as usize) < self.limits.record_locks_max
    }

    /// Acquires for `member` up to `max_records` records of `batches` (read from the log in
    /// offset order, from [`Self::next_read_offset`]; `log_start` is the log's start offset):
    /// available ones again, then new ones from the end. Control batches and offsets the log
    /// no longer has are skipped (done). Returns the acquired runs in offset order.
    pub fn acquire(
        &mut self,
        now_ms: i64,
        member: &Rc<str>,
        batches: &[BatchSpan],
        max_records: usize,
    ) -> Vec<AcquiredRange> {
        let lock_ms = self.limits.record_lock_duration_ms;
        self.acquire_locked_for(now_ms, member, batches, max_records, lock_ms)
    }

    /// [`Self::acquire`] with locks of `lock_ms` (the group's `share.record.lock.duration.ms`;
    /// Kafka's `SharePartition` reads it from the group's config at each acquisition).
    pub fn acquire_locked_for(
        &mut self,
        now_ms: i64,
        member: &Rc<str>,
        batches: &[BatchSpan],
        max_records: usize,
        lock_ms: i64,
    ) -> Vec<AcquiredRange> {
        let deadline_ms = now_ms.saturating_add(lock_ms.max(0));
        let mut out: Vec<AcquiredRange> = Vec::new();
        let mut taken = 0usize;
        'batches: for batch in batches {
            if batch.last_offset < batch.base_offset {
                continue;
            }
            for offset in batch.base_offset..=batch.last_offset {
                if taken >= max_records {
                    break 'batches;
                }
                let delivery_count = if offset < self.end_offset {
                    match self.in_flight.get(&offset) {
                        // Available records of a skipped batch (the group turned
                        // read_committed after they were first delivered): archived.
                        Some(InFlight::Available { .. }) if batch.skipped => {
                            self.in_flight.remove(&offset);
                            continue;
                        }
                        Some(InFlight::Available { delivery_count }) => *delivery_count + 1,
                        _ => continue,
                    }
                } else {
                    // New records: offsets between the end and this one are not in the log
                    // (compacted away, or this read began past them): done.
                    // Skipping past a skipped batch or a gap moves the end too: never more
                    // than `record_locks_max` past the start.
                    let next_end = if batch.skipped {
                        batch.last_offset + 1
                    } else {
                        offset + 1
                    };
                    // (Without in-flight records the start moves with the end.)
                    let first_in_flight = self.in_flight.keys().next().copied();
                    let too_far = first_in_flight.is_some_and(|start| {
                        next_end - start > self.limits.record_locks_max as i64
                    });
                    if too_far {
                        break 'batches;
                    }
                    if batch.skipped {
                        self.end_offset = next_end;
                        continue 'batches;
                    }
                    self.end_offset = offset + 1;
                    1
                };
                self.in_flight.insert(
                    offset,
                    InFlight::Acquired {
                        delivery_count,
                        member: member.clone(),
                        deadline_ms,
                    },
                );
                taken += 1;
                match out.last_mut() {
                    Some(r)
                        if r.last_offset + 1 == offset && r.delivery_count == delivery_count =>
                    {
                        r.last_offset = offset
                    }
                    _ => out.push(AcquiredRange {
                        first_offset: offset,
                        last_offset: offset,
                        delivery_count,
                    }),
                }
            }
        }
        self.check();
        out
    }

    /// Applies one acknowledgement batch of `member`: `types` is one type for the whole range
    /// or one per offset. All or nothing: every non-gap offset must be acquired by `member`
    /// (gap offsets may also be absent already). Expires locks first, so an acknowledgement
    /// after the lock ran out is refused.
    pub fn acknowledge(
        &mut self,
        now_ms: i64,
        member: &str,
        first_offset: i64,
        last_offset: i64,
        types: &[i8],
    ) -> Result<(), AckError> {
        if first_offset < 0 || last_offset < first_offset {
            return Err(AckError::InvalidRequest);
        }
        // first >= 0 and last >= first: no overflow but at i64::MAX.
        let len = (last_offset - first_offset).saturating_add(1);
        if !(types.len() == 1 || types.len() as i64 == len) {
            return Err(AckError::InvalidRequest);
        }
        if types.iter().any(|t| !(ACK_GAP..=ACK_REJECT).contains(t)) {
            return Err(AckError::InvalidRequest);
        }
        if len > self.limits.record_locks_max as i64 {
            return Err(AckError::InvalidRecordState);
        }
        self.expire_locks(now_ms);
        let type_of = |offset: i64| {
            if types.len() == 1 {
                types[0]
            } else {
                types[(offset - first_offset) as usize]
            }
        };
        for offset in first_offset..=last_offset {
            let held = matches!(self.in_flight.get(&offset),
                Some(InFlight::Acquired { member: m, .. }) if &**m == member);
            let done_gap = type_of(offset) == ACK_GAP
                && offset < self.end_offset
                && !self.in_flight.contains_key(&offset);
            if !held && !done_gap {
                return Err(AckError::InvalidRecordState);
            }
        }
        for offset in first_offset..=last_offset {
            match type_of(offset) {
                ACK_RELEASE => self.release(offset),
                _ => {
                    self.in_flight.remove(&offset);
                }
            }
        }
        self.check();
        Ok(())
    }

    /// An acquired record back to available, or archived at the delivery limit.
    fn release(&mut self, offset: i64) {
        let Some(record) = self.in_flight.get(&offset) else {
            return;
        };
        let delivery_count = record.delivery_count();
        if delivery_count >= self.limits.delivery_count_limit {
            self.in_flight.remove(&offset);
        } else {
            self.in_flight
                .insert(offset, InFlight::Available { delivery_count });
        }
    }

    fn check(&self) {
        let start = self.start_offset();
        assert!(start <= self.end_offset);
        assert!((self.end_offset - start) as usize <= self.limits.record_locks_max);
        if let Some((&last, _)) = self.in_flight.iter().next_back() {
            assert!(last < self.end_offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ShareLimits = ShareLimits {
        record_lock_duration_ms: 1000,
        delivery_count_limit: 3,
        record_locks_max: 10,
    };

    fn batch(base: i64, last: i64) -> BatchSpan {
        BatchSpan {
            base_offset: base,
            last_offset: last,
            skipped: false,
        }
    }

    fn range(first: i64, last: i64, count: i16) -> AcquiredRange {
        AcquiredRange {
            first_offset: first,
            last_offset: last,
            delivery_count: count,
        }
    }

    fn m(id: &str) -> Rc<str> {
        Rc::from(id)
    }

    /// What a member holds: its acquired records, not another's, not acknowledged or
    /// timed-out ones (the bound of an HTTP share stream).
    #[test]
    fn acquired_by_counts_a_members_live_locks() {
        let mut p = SharePartition::new(LIMITS, 0);
        p.acquire(0, &m("a"), &[batch(0, 3)], 3);
        p.acquire(0, &m("b"), &[batch(0, 5)], 2);
        assert_eq!((p.acquired_by(0, "a"), p.acquired_by(0, "b")), (3, 2));
        p.acknowledge(0, "a", 0, 0, &[ACK_ACCEPT]).unwrap();
        p.acknowledge(0, "a", 1, 1, &[ACK_RELEASE]).unwrap();
        assert_eq!(p.acquired_by(0, "a"), 1);
        assert_eq!(p.acquired_by(0, "c"), 0);
        // Past the lock deadline nothing is held.
        assert_eq!(p.acquired_by(LIMITS.record_lock_duration_ms, "b"), 0);
    }

    /// Two members acquire disjoint records; accepting moves the start offset.
    #[test]
    fn acquire_then_accept_moves_start() {
        let mut p = SharePartition::new(LIMITS, 0);
        assert_eq!(p.next_read_offset(0), Some(0));
        let got = p.acquire(0, &m("a"), &[batch(0, 4)], 3);
        assert_eq!(got, vec![range(0, 2, 1)]);
        assert_eq!(p.next_read_offset(0), Some(3));
        let got = p.acquire(0, &m("b"), &[batch(0, 4)], 10);
        assert_eq!(got, vec![range(3, 4, 1)]);
        // b cannot acknowledge a's records.
        assert_eq!(
            p.acknowledge(0, "b", 0, 0, &[ACK_ACCEPT]),
            Err(AckError::InvalidRecordState)
        );
        p.acknowledge(0, "a", 0, 2, &[ACK_ACCEPT]).unwrap();
        assert_eq!(p.start_offset(), 3);
        p.acknowledge(0, "b", 3, 4, &[ACK_ACCEPT]).unwrap();
        assert_eq!((p.start_offset(), p.end_offset()), (5, 5));
        // Accepted twice: refused.
        assert_eq!(
            p.acknowledge(0, "b", 3, 3, &[ACK_ACCEPT]),
            Err(AckError::InvalidRecordState)
        );
    }

    /// A released record comes back with a higher delivery count; at the limit it is archived.
    #[test]
    fn release_redelivers_until_the_limit() {
        let mut p = SharePartition::new(LIMITS, 0);
        for round in 1..=3 {
            assert_eq!(p.next_read_offset(0), Some(0));
            let got = p.acquire(0, &m("a"), &[batch(0, 1)], 10);
            if round == 1 {
                assert_eq!(got, vec![range(0, 1, 1)]);
            } else {
                assert_eq!(got, vec![range(0, 0, round)]);
            }
            // Offset 1 accepted in the first round, offset 0 released each time.
            let types: &[i8] = if round == 1 {
                &[ACK_RELEASE, ACK_ACCEPT]
            } else {
                &[ACK_RELEASE]
            };
            let last = if round == 1 { 1 } else { 0 };
            p.acknowledge(0, "a", 0, last, types).unwrap();
        }
        // Delivered 3 times (the limit) and released: archived.
        assert_eq!((p.start_offset(), p.end_offset()), (2, 2));
        assert_eq!(p.counts(), ShareCounts::default());
    }

    /// A lock that runs out makes the record available again; a late ack is refused.
    #[test]
    fn lock_timeout_redelivers() {
        let mut p = SharePartition::new(LIMITS, 5);
        assert_eq!(
            p.acquire(0, &m("a"), &[batch(5, 5)], 10),
            vec![range(5, 5, 1)]
        );
        assert_eq!(p.next_read_offset(999), Some(6));
        assert_eq!(p.next_read_offset(1000), Some(5));
        assert_eq!(
            p.acknowledge(1000, "a", 5, 5, &[ACK_ACCEPT]),
            Err(AckError::InvalidRecordState)
        );
        assert_eq!(
            p.acquire(1000, &m("b"), &[batch(5, 5)], 10),
            vec![range(5, 5, 2)]
        );
        p.acknowledge(1001, "b", 5, 5, &[ACK_REJECT]).unwrap();
        assert_eq!(p.start_offset(), 6);
    }

    /// Released records of a batch later read as skipped (the group turned read_committed
    /// and the batch belongs to an aborted transaction) are archived, not delivered again.
    #[test]
    fn available_records_of_a_skipped_batch_are_archived() {
        let mut p = SharePartition::new(LIMITS, 0);
        assert_eq!(
            p.acquire(0, &m("a"), &[batch(0, 1)], 10),
            vec![range(0, 1, 1)]
        );
        p.acknowledge(0, "a", 0, 1, &[ACK_RELEASE]).unwrap();
        let aborted = BatchSpan {
            base_offset: 0,
            last_offset: 1,
            skipped: true,
        };
        assert_eq!(
            p.acquire(1, &m("b"), &[aborted, batch(2, 2)], 10),
            vec![range(2, 2, 1)]
        );
        assert_eq!((p.start_offset(), p.end_offset()), (2, 3));
    }

    /// Reject archives at once; gaps end absent offsets; control batches are skipped.
    #[test]
    fn reject_gap_and_control() {
        let mut p = SharePartition::new(LIMITS, 0);
        let control = BatchSpan {
            base_offset: 3,
            last_offset: 3,
            skipped: true,
        };
        let got = p.acquire(0, &m("a"), &[batch(0, 2), control, batch(4, 4)], 10);
        assert_eq!(got, vec![range(0, 2, 1), range(4, 4, 1)]);
        p.acknowledge(0, "a", 0, 2, &[ACK_REJECT, ACK_GAP, ACK_ACCEPT])
            .unwrap();
        // Offset 3 (control) is done already: a gap ack for it and 4 accepted.
        p.acknowledge(0, "a", 3, 4, &[ACK_GAP, ACK_ACCEPT]).unwrap();
        assert_eq!((p.start_offset(), p.end_offset()), (5, 5));
        // Malformed acknowledgements.
        assert_eq!(
            p.acknowledge(0, "a", 2, 1, &[ACK_ACCEPT]),
            Err(AckError::InvalidRequest)
        );
        assert_eq!(
            p.acknowledge(0, "a", 0, 2, &[ACK_ACCEPT, ACK_ACCEPT]),
            Err(AckError::InvalidRequest)
        );
        assert_eq!(
            p.acknowledge(0, "a", 0, 0, &[9]),
            Err(AckError::InvalidRequest)
        );
        assert_eq!(
            p.acknowledge(0, "a", 0, i64::MAX, &[ACK_ACCEPT]),
            Err(AckError::InvalidRecordState)
        );
    }

    /// The end never runs more than `record_locks_max` past the start: bounded memory.
    #[test]
    fn in_flight_is_bounded_by_the_lock_limit() {
        let mut p = SharePartition::new(LIMITS, 0);
        let got = p.acquire(0, &m("a"), &[batch(0, 99)], 1000);
        assert_eq!(got, vec![range(0, 9, 1)]);
        assert_eq!(p.next_read_offset(0), None);
        // Accepting everything but offset 0 frees no room: the start stays at 0.
        p.acknowledge(0, "a", 1, 9, &[ACK_ACCEPT]).unwrap();
        assert_eq!(p.next_read_offset(0), None);
        p.acknowledge(0, "a", 0, 0, &[ACK_ACCEPT]).unwrap();
        assert_eq!(p.next_read_offset(0), Some(10));
        let got = p.acquire(0, &m("a"), &[batch(10, 99)], 1000);
        assert_eq!(got, vec![range(10, 19, 1)]);
    }

    /// A gap (compacted offsets) or a control batch far past the end does not move the end more
    /// than the lock limit past a start held by an in-flight record.
    #[test]
    fn gaps_never_break_the_bound() {
        let mut p = SharePartition::new(LIMITS, 0);
        assert_eq!(
            p.acquire(0, &m("a"), &[batch(0, 0)], 10),
            vec![range(0, 0, 1)]
        );
        assert_eq!(p.acquire(0, &m("a"), &[batch(1000, 1005)], 10), vec![]);
        let control = BatchSpan {
            base_offset: 500,
            last_offset: 500,
            skipped: true,
        };
        assert_eq!(p.acquire(0, &m("a"), &[control], 10), vec![]);
        assert_eq!((p.start_offset(), p.end_offset()), (0, 1));
        // Once the start moves, the gap is skipped.
        p.acknowledge(0, "a", 0, 0, &[ACK_ACCEPT]).unwrap();
        assert_eq!(
            p.acquire(0, &m("a"), &[batch(1000, 1005)], 10),
            vec![range(1000, 1005, 1)]
        );
        assert_eq!((p.start_offset(), p.end_offset()), (1000, 1006));
    }

    /// The durable state round-trips; acquired records come back available; members that
    /// leave release what they hold.
    #[test]
    fn state_round_trip_and_member_release() {
        let mut p = SharePartition::new(LIMITS, 0);
        p.acquire(0, &m("a"), &[batch(0, 5)], 3);
        p.acquire(0, &m("b"), &[batch(0, 5)], 3);
        p.acknowledge(0, "a", 0, 0, &[ACK_ACCEPT]).unwrap();
        p.acknowledge(0, "a", 1, 1, &[ACK_RELEASE]).unwrap();
        let state = p.state();
        assert_eq!(
            state,
            ShareState {
                start_offset: 1,
                end_offset: 6,
                in_flight: vec![(1, 5, 1)],
                state_epoch: 0,
            }
        );
        let mut q = SharePartition::restore(LIMITS, &state);
        assert_eq!(
            q.counts(),
            ShareCounts {
                acquired: 0,
                available: 5
            }
        );
        assert_eq!(
            q.acquire(0, &m("c"), &[batch(0, 5)], 10),
            vec![range(1, 5, 2)]
        );
        assert!(p.release_member("b"));
        assert_eq!(
            p.counts(),
            ShareCounts {
                acquired: 1,
                available: 4
            }
        );
        // A state from disk past the limit is cut to it.
        let r = SharePartition::restore(
            LIMITS,
            &ShareState {
                start_offset: 0,
                end_offset: 1000,
                in_flight: vec![(0, 999, 1)],
                state_epoch: 0,
            },
        );
        assert_eq!(
            (r.start_offset(), r.end_offset(), r.counts().available),
            (0, 10, 10)
        );
    }
}
