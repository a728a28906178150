//! Per-partition producer state: the idempotence and transaction bookkeeping of one partition.
//!
//! A [`ProducerStateTable`] lives inside a partition's log, on the partition's shard, and is
//! consulted where offsets are assigned (so concurrent appends on one partition are checked in
//! the order they get offsets). It is pure: no I/O; the log persists it as a snapshot file
//! ([`ProducerStateTable::encode`]) and rebuilds it on open by loading the newest snapshot and
//! replaying the batches after it ([`ProducerStateTable::replay`]).
//!
//! # What it keeps (as Kafka's `ProducerStateManager`)
//! For every producer id seen: its epoch, the metadata of its last
//! [`BATCHES_PER_PRODUCER_MAX`] batches (first/last sequence and offsets), and the first offset
//! of its open transaction, if any.
//!
//! # Rules (Kafka 4's `ProducerAppendInfo`)
//! - A batch whose epoch and sequence range equal one of the cached batches is a *duplicate*:
//!   it is answered with the original offsets and not written again.
//! - An epoch lower than the producer's: INVALID_PRODUCER_EPOCH.
//! - A higher epoch must start at sequence 0 (unless the producer was unknown):
//!   OUT_OF_ORDER_SEQUENCE_NUMBER otherwise. It replaces the cached batches.
//! - The same epoch must continue the last sequence (`last + 1`, wrapping from `i32::MAX` to 0):
//!   OUT_OF_ORDER_SEQUENCE_NUMBER otherwise.
//! - An unknown producer id is accepted at any sequence (Kafka 4 no longer answers
//!   UNKNOWN_PRODUCER_ID: the producer's state may have been removed by retention).
//! - A control batch (transaction marker) ends the producer's open transaction.
//!
//! # Transactions
//! A transactional batch opens a transaction for its producer at its first offset, if none is
//! open. The first offsets of open transactions give the last stable offset (LSO): the
//! smallest of them, or the high watermark. A marker closes the transaction and yields a
//! [`CompletedTxn`]; the log writes aborted ones to its aborted-transaction index
//! ([`super::txn_index`]), not kept here.
//!
//! Producers idle for [`PRODUCER_ID_EXPIRATION_MS`] without an open transaction are forgotten
//! ([`ProducerStateTable::expire`], from the shard's retention loop), as Kafka does.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Batches remembered per producer for duplicate detection (Kafka keeps 5, matching
/// `max.in.flight.requests.per.connection` <= 5 for idempotent producers).
pub const BATCHES_PER_PRODUCER_MAX: usize = 5;
/// Idle time after which a producer without an open transaction is forgotten (Kafka's
/// `producer.id.expiration.ms` default, one day); its next batch is then accepted at any
/// sequence, as an unknown producer's.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 86_400_000;
/// Producers per snapshot file at most (a larger file is treated as damaged).
pub const SNAPSHOT_PRODUCERS_MAX: usize = 1 << 20;

/// Sequence of the last record of a batch: `base + delta`, wrapping past `i32::MAX` to 0
/// (Kafka's `DefaultRecordBatch.incrementSequence`).
pub fn increment_sequence(base: i32, delta: i32) -> i32 {
    if base > i32::MAX - delta {
        delta - (i32::MAX - base) - 1
    } else {
        base + delta
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

/// What the log knows of one batch of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// The facts of an incoming batch the rules look at (from its header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchFacts {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    /// `lastOffsetDelta` of the batch.
    pub offset_delta: i32,
    pub transactional: bool,
    pub control: bool,
}

impl BatchFacts {
    /// Facts from a validated batch header.
    pub fn of(h: &freshet_protocol::batch::BatchHeader) -> BatchFacts {
        let attrs = h.attributes();
        BatchFacts {
            producer_id: h.producer_id.get(),
            epoch: h.producer_epoch.get(),
            first_seq: h.base_sequence.get(),
            offset_delta: h.last_offset_delta.get(),
            transactional: attrs & freshet_protocol::batch::ATTR_TRANSACTIONAL != 0,
            control: attrs & freshet_protocol::batch::ATTR_CONTROL != 0,
        }
    }

    /// True if the batch carries a producer id (idempotent or transactional).
    pub fn has_producer(&self) -> bool {
        self.producer_id >= 0
    }

    fn last_seq(&self) -> i32 {
        increment_sequence(self.first_seq, self.offset_delta)
    }
}

/// A refusal of the rules; the storage layer turns it into an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProducerError {
    /// The batch's epoch is older than the producer's: INVALID_PRODUCER_EPOCH.
    InvalidEpoch(String),
    /// The sequence does not continue the producer's: OUT_OF_ORDER_SEQUENCE_NUMBER.
    OutOfOrder(String),
    /// A structurally impossible batch (a sequence below 0 with a producer id).
    Invalid(String),
}

/// Verdict on an incoming batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Not a duplicate, passes the rules: append it, then [`ProducerStateTable::apply`].
    Append,
    /// Already appended at these offsets: answer with them and write nothing.
    Duplicate { first_offset: i64, last_offset: i64 },
}

/// A transaction ended by a marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// Offset of the marker.
    pub last_offset: i64,
    pub aborted: bool,
}

/// One producer's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// First offset of the producer's open transaction on this partition.
    pub txn_first_offset: Option<i64>,
    /// Coordinator epoch of the last marker (kept for DescribeProducers).
    pub coordinator_epoch: i32,
    /// Timestamp of the last batch (kept for DescribeProducers).
    pub last_timestamp: i64,
    /// Markers applied for this producer: a transactional write verified with the coordinator
    /// is refused if a marker arrived meanwhile (Kafka's verification guard).
    pub marker_count: u32,
}

impl ProducerEntry {
    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }
}

/// The producer state of one partition (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset -> producer id.
    ongoing: BTreeMap<i64, i64>,
}

impl ProducerStateTable {
    pub fn new() -> ProducerStateTable {
        ProducerStateTable::default()
    }

    /// The entry of a producer, if known.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Markers applied for `producer_id` so far (0 if unknown): the verification guard.
    pub fn marker_count(&self, producer_id: i64) -> u32 {
        self.producers
            .get(&producer_id)
            .map_or(0, |e| e.marker_count)
    }

    /// Notes the coordinator epoch of a marker written for a known `producer_id` (only ever
    /// raised): WriteTxnMarkers fences markers from an older coordinator with it.
    pub fn note_coordinator_epoch(&mut self, producer_id: i64, coordinator_epoch: i32) {
        if let Some(e) = self.producers.get_mut(&producer_id) {
            e.coordinator_epoch = e.coordinator_epoch.max(coordinator_epoch);
        }
    }

    /// Every producer, for DescribeProducers.
    pub fn iter(&self) -> impl Iterator<Item = (&i64, &ProducerEntry)> {
        self.producers.iter()
    }

    /// Number of producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True if no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// First offset of the oldest open transaction, if any (the LSO bound).
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// Open transactions as (producer id, first offset).
    pub fn ongoing(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ongoing.iter().map(|(o, p)| (*p, *o))
    }

    /// Judge an incoming client batch against the rules (module docs). Batches without a
    /// producer id always pass.
    pub fn check(&self, b: &BatchFacts) -> Result<Check, ProducerError> {
        if !b.has_producer() {
            return Ok(Check::Append);
        }
        if b.first_seq < 0 && !b.control {
            return Err(ProducerError::Invalid(format!(
                "invalid sequence number {} in record batch with producerId {}",
                b.first_seq, b.producer_id
            )));
        }
        let Some(entry) = self.producers.get(&b.producer_id) else {
            return Ok(Check::Append);
        };
        if b.epoch == entry.epoch {
            let last_seq = b.last_seq();
            if let Some(m) = entry
                .batches
                .iter()
                .find(|m| m.first_seq == b.first_seq && m.last_seq == last_seq)
            {
                return Ok(Check::Duplicate {
                    first_offset: m.first_offset,
                    last_offset: m.last_offset,
                });
            }
        }
        if b.epoch < entry.epoch {
            return Err(ProducerError::InvalidEpoch(format!(
                "epoch {} of producer {} is older than its current epoch {}",
                b.epoch, b.producer_id, entry.epoch
            )));
        }
        if b.control {
            return Ok(Check::Append);
        }
        if b.epoch > entry.epoch {
            if b.first_seq != 0 {
                return Err(ProducerError::OutOfOrder(format!(
                    "invalid sequence number for new epoch {} of producer {}: {} (expected 0)",
                    b.epoch, b.producer_id, b.first_seq
                )));
            }
            return Ok(Check::Append);
        }
        match entry.last_seq() {
            // A known epoch without batches (its data was truncated away): any sequence.
            None => Ok(Check::Append),
            Some(last) if in_sequence(last, b.first_seq) => Ok(Check::Append),
            Some(last) => Err(ProducerError::OutOfOrder(format!(
                "out of order sequence number for producer {}: {} (incoming seq. number), {} (current end sequence number)",
                b.producer_id, b.first_seq, last
            ))),
        }
    }

    /// Record a batch appended at `first_offset..=first_offset + offset_delta` (a checked
    /// client batch, a marker, or a batch replayed from the log). Returns the transaction a
    /// marker completed. `marker` is a control batch's (commit, coordinator epoch): the
    /// coordinator epoch is kept on every replica and replay alike, so a leader fences a
    /// marker from an older coordinator whichever replica wrote the newer one (Kafka's
    /// `ProducerAppendInfo.appendEndTxnMarker`).
    pub fn apply(
        &mut self,
        b: &BatchFacts,
        first_offset: i64,
        timestamp: i64,
        marker: Option<(bool, i32)>,
    ) -> Option<CompletedTxn> {
        if !b.has_producer() {
            return None;
        }
        let last_offset = first_offset + i64::from(b.offset_delta);
        let entry = self
            .producers
            .entry(b.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: b.epoch,
                ..ProducerEntry::default()
            });
        if b.epoch != entry.epoch {
            // A new epoch (a bump, or a transaction v2 marker) starts a new sequence.
            entry.batches.clear();
            entry.epoch = b.epoch;
        }
        entry.last_timestamp = timestamp;
        if b.control {
            entry.marker_count = entry.marker_count.wrapping_add(1);
            if let Some((_, coordinator_epoch)) = marker {
                entry.coordinator_epoch = entry.coordinator_epoch.max(coordinator_epoch);
            }
            let first = entry.txn_first_offset.take()?;
            self.ongoing.remove(&first);
            let done = CompletedTxn {
                producer_id: b.producer_id,
                first_offset: first,
                last_offset,
                aborted: marker.map(|(commit, _)| commit) == Some(false),
            };
            return Some(done);
        }
        entry.batches.push_back(BatchMeta {
            first_seq: b.first_seq,
            last_seq: b.last_seq(),
            first_offset,
            last_offset,
        });
        while entry.batches.len() > BATCHES_PER_PRODUCER_MAX {
            entry.batches.pop_front();
        }
        if b.transactional && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(first_offset);
            self.ongoing.insert(first_offset, b.producer_id);
        }
        None
    }

    /// Forget producers whose last batch timestamp is `expiration_ms` or more before `now_ms`
    /// and that have no open transaction (Kafka's producer expiry); returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Forget everything at or above `offset` (appends that never became durable).
    pub fn truncate_from(&mut self, offset: i64) {
        self.producers.retain(|_, e| {
            e.batches.retain(|m| m.last_offset < offset);
            if e.txn_first_offset.is_some_and(|f| f >= offset) {
                e.txn_first_offset = None;
            }
            !e.batches.is_empty() || e.txn_first_offset.is_some()
        });
        self.ongoing = self
            .producers
            .iter()
            .filter_map(|(p, e)| e.txn_first_offset.map(|f| (f, *p)))
            .collect();
    }

    /// Serialize (the snapshot file's contents): a versioned binary layout ending in a
    /// CRC-32C of everything before it. Version 2 (`FPS2`); version 1 also listed the aborted
    /// transactions, which now live in `.txnindex` files: a version 1 snapshot is read as
    /// damaged, so the log replays from its start and rebuilds those files.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.producers.len() * 64);
        out.extend_from_slice(b"FPS2");
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
            out.extend_from_slice(&e.marker_count.to_be_bytes());
            out.push(e.batches.len() as u8);
            for m in &e.batches {
                out.extend_from_slice(&m.first_seq.to_be_bytes());
                out.extend_from_slice(&m.last_seq.to_be_bytes());
                out.extend_from_slice(&m.first_offset.to_be_bytes());
                out.extend_from_slice(&m.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parse a snapshot; `None` if it is damaged in any way (the caller then replays more).
    pub fn decode(data: &[u8]) -> Option<ProducerStateTable> {
        let body_len = data.len().checked_sub(4)?;
        let (body, crc) = data.split_at(body_len);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader { buf: body, pos: 0 };
        if r.take(4)? != b"FPS2" {
            return None;
        }
        let n = u32::from_be_bytes(r.take(4)?.try_into().ok()?) as usize;
        if n > SNAPSHOT_PRODUCERS_MAX {
            return None;
        }
        let mut table = ProducerStateTable::new();
        for _ in 0..n {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let coordinator_epoch = r.i32()?;
            let last_timestamp = r.i64()?;
            let txn = r.i64()?;
            let marker_count = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
            let nb = usize::from(r.take(1)?[0]);
            if nb > BATCHES_PER_PRODUCER_MAX {
                return None;
            }
            let mut batches = VecDeque::with_capacity(nb);
            for _ in 0..nb {
                batches.push_back(BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            let txn_first_offset = (txn >= 0).then_some(txn);
            if let Some(f) = txn_first_offset {
                table.ongoing.insert(f, id);
            }
            table.producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    txn_first_offset,
                    coordinator_epoch,
                    last_timestamp,
                    marker_count,
                },
            );
        }
        (r.pos == body.len()).then_some(table)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchFacts {
        BatchFacts {
            producer_id: pid,
            epoch,
            first_seq: seq,
            offset_delta: count - 1,
            transactional: false,
            control: false,
        }
    }

    fn append(t: &mut ProducerStateTable, b: BatchFacts, offset: i64) -> Check {
        let c = t.check(&b).expect("accepted");
        if c == Check::Append {
            t.apply(&b, offset, 0, None);
        }
        c
    }

    #[test]
    fn sequences_continue_and_duplicates_get_original_offsets() {
        let mut t = ProducerStateTable::new();
        assert_eq!(append(&mut t, facts(7, 0, 0, 3), 100), Check::Append);
        assert_eq!(append(&mut t, facts(7, 0, 3, 2), 103), Check::Append);
        // A retry of the first batch: its original offsets, nothing new.
        assert_eq!(
            t.check(&facts(7, 0, 0, 3)),
            Ok(Check::Duplicate {
                first_offset: 100,
                last_offset: 102
            })
        );
        // A gap is out of order; so is a stale sequence that matches no cached batch.
        assert!(matches!(
            t.check(&facts(7, 0, 6, 1)),
            Err(ProducerError::OutOfOrder(_))
        ));
        assert!(matches!(
            t.check(&facts(7, 0, 1, 1)),
            Err(ProducerError::OutOfOrder(_))
        ));
        assert_eq!(append(&mut t, facts(7, 0, 5, 1), 105), Check::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_deduplicated() {
        let mut t = ProducerStateTable::new();
        for i in 0..6 {
            append(&mut t, facts(1, 0, i, 1), i64::from(i));
        }
        assert_eq!(t.get(1).map(|e| e.batches.len()), Some(5));
        // Batch 0 was evicted: its retry is now out of order, not a duplicate.
        assert!(matches!(
            t.check(&facts(1, 0, 0, 1)),
            Err(ProducerError::OutOfOrder(_))
        ));
        assert!(matches!(
            t.check(&facts(1, 0, 1, 1)),
            Ok(Check::Duplicate { .. })
        ));
    }

    #[test]
    fn epochs_fence_and_reset() {
        let mut t = ProducerStateTable::new();
        append(&mut t, facts(1, 3, 0, 2), 0);
        assert!(matches!(
            t.check(&facts(1, 2, 2, 1)),
            Err(ProducerError::InvalidEpoch(_))
        ));
        // A new epoch must start at 0.
        assert!(matches!(
            t.check(&facts(1, 4, 5, 1)),
            Err(ProducerError::OutOfOrder(_))
        ));
        assert_eq!(append(&mut t, facts(1, 4, 0, 1), 2), Check::Append);
        assert_eq!(t.get(1).map(|e| (e.epoch, e.batches.len())), Some((4, 1)));
        // Same sequence range under the old epoch is fenced, not a duplicate.
        assert!(matches!(
            t.check(&facts(1, 3, 0, 2)),
            Err(ProducerError::InvalidEpoch(_))
        ));
    }

    #[test]
    fn unknown_producers_start_anywhere_and_sequences_wrap() {
        let mut t = ProducerStateTable::new();
        assert_eq!(append(&mut t, facts(9, 0, 42, 1), 0), Check::Append);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(
            append(&mut t, facts(2, 0, i32::MAX - 1, 2), 10),
            Check::Append
        );
        assert_eq!(append(&mut t, facts(2, 0, 0, 1), 12), Check::Append);
        assert!(matches!(
            t.check(&facts(3, 0, -1, 1)),
            Err(ProducerError::Invalid(_))
        ));
        // Batches without a producer id are never judged.
        assert_eq!(t.check(&facts(-1, -1, -1, 1)), Ok(Check::Append));
    }

    #[test]
    fn transactions_bound_the_stable_offset_until_their_marker() {
        let mut t = ProducerStateTable::new();
        let mut b = facts(5, 0, 0, 2);
        b.transactional = true;
        append(&mut t, b, 10);
        let mut b2 = facts(6, 0, 0, 1);
        b2.transactional = true;
        append(&mut t, b2, 12);
        assert_eq!(t.first_unstable_offset(), Some(10));
        let marker = BatchFacts {
            producer_id: 5,
            epoch: 0,
            first_seq: -1,
            offset_delta: 0,
            transactional: true,
            control: true,
        };
        assert_eq!(t.check(&marker), Ok(Check::Append));
        let done = t.apply(&marker, 13, 0, Some((false, 0)));
        assert_eq!(
            done,
            Some(CompletedTxn {
                producer_id: 5,
                first_offset: 10,
                last_offset: 13,
                aborted: true
            })
        );
        assert_eq!(t.first_unstable_offset(), Some(12));
        let snap = ProducerStateTable::decode(&t.encode()).expect("round trip");
        assert_eq!(snap, t);
        // The producer's sequence survives its marker.
        assert_eq!(append(&mut t, facts(5, 0, 2, 1), 14), Check::Append);
        // Truncating below the open transaction forgets it.
        t.truncate_from(12);
        assert_eq!(t.first_unstable_offset(), None);
        assert!(t.get(6).is_none());
    }

    #[test]
    fn idle_producers_expire_unless_in_a_transaction() {
        let mut t = ProducerStateTable::new();
        let idle = facts(1, 0, 0, 1);
        t.apply(&idle, 0, 1_000, None);
        let mut open = facts(2, 0, 0, 1);
        open.transactional = true;
        t.apply(&open, 1, 1_000, None);
        t.apply(&facts(3, 0, 0, 1), 2, 50_000, None);
        assert_eq!(t.expire(60_000, 50_000), 1);
        assert!(t.get(1).is_none());
        assert!(t.get(2).is_some(), "open transaction kept");
        assert!(t.get(3).is_some(), "recent producer kept");
        // The expired producer may start anywhere again.
        assert_eq!(t.check(&facts(1, 0, 77, 1)), Ok(Check::Append));
    }

    proptest::proptest! {
        /// Model check: a producer's batches delivered in any order, with retries, are appended
        /// exactly once each and in sequence; a retry of one of the last five appended batches
        /// gets its original offsets, anything else is out of order.
        #[test]
        fn deliveries_with_retries_append_each_batch_once_in_order(
            counts in proptest::collection::vec(1i32..5, 1..30),
            deliveries in proptest::collection::vec(0usize..64, 1..200),
        ) {
            let firsts: Vec<i32> = counts
                .iter()
                .scan(0, |seq, c| {
                    let first = *seq;
                    *seq += c;
                    Some(first)
                })
                .collect();
            let mut t = ProducerStateTable::new();
            let mut appended: Vec<(usize, i64)> = Vec::new(); // (batch, first offset)
            let mut next_offset = 0i64;
            for d in deliveries {
                let i = d % counts.len();
                let b = facts(42, 0, firsts[i], counts[i]);
                let verdict = t.check(&b);
                let next_batch = appended.last().map(|(j, _)| j + 1);
                let recent = &appended[appended.len().saturating_sub(BATCHES_PER_PRODUCER_MAX)..];
                if let Some((_, first)) = recent.iter().find(|(j, _)| *j == i) {
                    proptest::prop_assert_eq!(
                        verdict,
                        Ok(Check::Duplicate {
                            first_offset: *first,
                            last_offset: *first + i64::from(counts[i]) - 1,
                        })
                    );
                } else if next_batch.is_none_or(|n| n == i) {
                    // In sequence, or the first batch seen of an unknown producer (any sequence).
                    proptest::prop_assert_eq!(verdict, Ok(Check::Append));
                    t.apply(&b, next_offset, 0, None);
                    appended.push((i, next_offset));
                    next_offset += i64::from(counts[i]);
                } else {
                    proptest::prop_assert!(
                        matches!(verdict, Err(ProducerError::OutOfOrder(_))),
                        "batch {} after {:?}: {:?}", i, appended, verdict
                    );
                }
            }
        }
    }

    #[test]
    fn snapshot_round_trips_and_rejects_damage() {
        let mut t = ProducerStateTable::new();
        for p in 0..4 {
            let mut b = facts(p, 1, 0, 3);
            b.transactional = p % 2 == 0;
            append(&mut t, b, p * 10);
        }
        let bytes = t.encode();
        assert_eq!(ProducerStateTable::decode(&bytes), Some(t.clone()));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert_eq!(ProducerStateTable::decode(&bad), None, "flip at {i}");
        }
        assert_eq!(ProducerStateTable::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(ProducerStateTable::decode(&[]), None);
    }
}
