//! Aborted-transaction index: one `<base>.txnindex` file per segment that holds abort markers,
//! as Kafka's `TransactionIndex`.
//!
//! An entry is Kafka's 34-byte layout: `version i16 (0), producer id i64, first offset i64,
//! last offset i64 (the abort marker), last stable offset i64` (the LSO right after the abort:
//! the first offset of the oldest transaction still open, or the marker's offset + 1). An entry
//! belongs to the segment holding its marker; entries of a segment are in marker order.
//!
//! # Lifecycle (owned by the partition's [`super::log::PartitionLog`], on its shard)
//! - An abort marker adds its entry to [`TxnIndexes::pending`] (memory) when it is appended; it
//!   is durable through the marker itself: recovery replays the log from the newest producer
//!   snapshot and re-derives every entry of the replayed segments.
//! - Pending entries of sealed segments are written (atomically, read-merge-write) before the
//!   producer snapshot of a roll is written, so a snapshot never hides an unwritten entry; the
//!   active segment's entries are written at a clean close. Memory thus holds only the entries
//!   of the segments a roll has not yet covered: the rest are read from disk by a
//!   read_committed fetch, only for the segments from the one holding the fetch offset until
//!   an entry's LSO shows no later abort can overlap the fetched range (Kafka's rule).
//! - A file goes with its segment (retention, DeleteRecords, recovery truncation); the cleaner
//!   merges the files of the segments it swaps into the new segment's file before its commit
//!   point (duplicates are removed on read).
//! - On open every file is checked; a damaged one makes recovery replay from the log start,
//!   rebuilding every index; files of replayed segments are rewritten from the replay.
//!
//! Not done: a file missing for a segment below the newest snapshot is read as "no aborts"
//! (Kafka does the same for a missing `.txnindex`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::file_names::{self, segment_file_name};
use super::io;
use super::StorageError;

/// Bytes of one entry.
pub const ENTRY_BYTES: usize = 34;
/// The entry version written (Kafka's `AbortedTxn.CURRENT_VERSION`).
pub const VERSION: i16 = 0;
/// Largest index file read (a larger one is treated as damaged).
pub const TXN_INDEX_BYTES_MAX: u64 = 64 << 20;
/// File extension.
pub const EXT: &str = file_names::TXN_INDEX_EXT;

/// One aborted transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
    /// LSO right after the abort.
    pub last_stable_offset: i64,
}

/// The segment base a `.txnindex` file name stands for.
pub fn parse_name(name: &str) -> Option<i64> {
    file_names::parse_segment_file_name(name, EXT)
}

/// Serialize entries (the file's contents).
pub fn encode(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for e in entries {
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&e.producer_id.to_be_bytes());
        out.extend_from_slice(&e.first_offset.to_be_bytes());
        out.extend_from_slice(&e.last_offset.to_be_bytes());
        out.extend_from_slice(&e.last_stable_offset.to_be_bytes());
    }
    out
}

/// Parse a file; `None` if damaged (a partial entry, an unknown version, offsets out of order).
pub fn decode(data: &[u8]) -> Option<Vec<AbortedTxn>> {
    if !data.len().is_multiple_of(ENTRY_BYTES) {
        return None;
    }
    let i64_at =
        |c: &[u8], at: usize| i64::from_be_bytes(c[at..at + 8].try_into().unwrap_or([0; 8]));
    let mut out = Vec::with_capacity(data.len() / ENTRY_BYTES);
    for c in data.chunks_exact(ENTRY_BYTES) {
        if i16::from_be_bytes([c[0], c[1]]) != VERSION {
            return None;
        }
        let e = AbortedTxn {
            producer_id: i64_at(c, 2),
            first_offset: i64_at(c, 10),
            last_offset: i64_at(c, 18),
            last_stable_offset: i64_at(c, 26),
        };
        if e.first_offset < 0 || e.first_offset > e.last_offset {
            return None;
        }
        if out
            .last()
            .is_some_and(|p: &AbortedTxn| p.last_offset >= e.last_offset)
        {
            return None;
        }
        out.push(e);
    }
    Some(out)
}

/// Read the index of segment `base`: `Ok(None)` if there is no file, an error if damaged.
pub async fn read(dir: &Path, base: i64) -> Result<Option<Vec<AbortedTxn>>, StorageError> {
    let path = dir.join(segment_file_name(base, EXT));
    let Some(data) = io::read_small_file(&path, TXN_INDEX_BYTES_MAX).await? else {
        return Ok(None);
    };
    decode(&data).map(Some).ok_or_else(|| StorageError::Io {
        op: "read transaction index",
        source: std::io::Error::other(format!("damaged {}", path.display())),
    })
}

/// Replace the index of segment `base` by `entries` (atomic and durable).
pub async fn write(dir: &Path, base: i64, entries: &[AbortedTxn]) -> Result<(), StorageError> {
    io::write_file_atomic(&dir.join(segment_file_name(base, EXT)), encode(entries)).await
}

/// The in-memory part of a partition's indexes: entries not yet written, and which segments
/// have a file. Pure; the log does the I/O.
#[derive(Debug, Default)]
pub struct TxnIndexes {
    /// Segment base -> entries not yet in its file, in marker order.
    pub pending: BTreeMap<i64, Vec<AbortedTxn>>,
    /// Segment bases with a `.txnindex` file.
    pub on_disk: BTreeSet<i64>,
}

impl TxnIndexes {
    /// Record an abort whose marker went to segment `base`.
    pub fn add(&mut self, base: i64, e: AbortedTxn) {
        self.pending.entry(base).or_default().push(e);
    }

    /// Forget pending entries whose marker is at or above `offset` (appends that never became
    /// durable).
    pub fn truncate_from(&mut self, offset: i64) {
        for v in self.pending.values_mut() {
            v.retain(|e| e.last_offset < offset);
        }
        self.pending.retain(|_, v| !v.is_empty());
    }

    /// Forget segment `base` (its files are being removed).
    pub fn forget(&mut self, base: i64) {
        self.pending.remove(&base);
        self.on_disk.remove(&base);
    }

    /// Pending entries of segments below `base`, to be written.
    pub fn pending_below(&self, base: i64) -> Vec<(i64, Vec<AbortedTxn>)> {
        self.pending
            .range(..base)
            .map(|(b, v)| (*b, v.clone()))
            .collect()
    }

    /// `base`'s file now holds its pending entries up to `written` of them.
    pub fn mark_written(&mut self, base: i64, written: usize) {
        if let Some(v) = self.pending.get_mut(&base) {
            v.drain(..written.min(v.len()));
            if v.is_empty() {
                self.pending.remove(&base);
            }
        }
        self.on_disk.insert(base);
    }
}

/// Collect the aborted transactions overlapping `[from, to)` from per-segment entry lists in
/// segment order, stopping after the segment where an entry's LSO reaches `to` (no later
/// abort can start below it). Returns (producer id, first offset), sorted, without duplicates.
pub fn collect_overlapping(
    segments: impl IntoIterator<Item = Vec<AbortedTxn>>,
    from: i64,
    to: i64,
) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for entries in segments {
        let mut complete = false;
        for e in entries {
            if e.last_offset >= from && e.first_offset < to {
                out.push((e.producer_id, e.first_offset));
            }
            complete |= e.last_stable_offset >= to;
        }
        if complete {
            break;
        }
    }
    out.sort_unstable_by_key(|(p, f)| (*f, *p));
    out.dedup();
    out
}

/// For each batch of `batches` (in offset order): true when it holds records of one of the
/// aborted transactions `aborted` (producer id, first offset), which a read_committed reader
/// never sees, as Kafka's consumer skips them (`CompletedFetch.nextFetchedRecord`): an aborted
/// transaction's producer is aborting from its first offset until its next control batch
/// (the abort marker). Used by read_committed HTTP streams and the share fetches of a
/// read_committed share group (`shard::shares`).
/// Control batches and batches without a header are false.
pub fn aborted_batches(batches: &[bytes::Bytes], aborted: &[(i64, i64)]) -> Vec<bool> {
    let mut pending: Vec<(i64, i64)> = aborted.to_vec();
    // By first offset, popped from the end: the earliest last.
    pending.sort_by_key(|a| std::cmp::Reverse(a.1));
    let mut aborting: BTreeSet<i64> = BTreeSet::new();
    batches
        .iter()
        .map(|b| {
            let Some(h) = freshet_protocol::batch::header(b) else {
                return false;
            };
            while pending
                .last()
                .is_some_and(|&(_, first)| first <= h.last_offset())
            {
                if let Some((pid, _)) = pending.pop() {
                    aborting.insert(pid);
                }
            }
            let pid = h.producer_id.get();
            if h.is_control() {
                // A producer's abort marker ends its aborted transaction.
                aborting.remove(&pid);
                return false;
            }
            h.attributes() & freshet_protocol::batch::ATTR_TRANSACTIONAL != 0
                && aborting.contains(&pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: p,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn entries_round_trip_in_kafkas_layout() {
        let v = vec![e(7, 0, 3, 4), e(8, 2, 9, 10)];
        let data = encode(&v);
        assert_eq!(data.len(), 2 * ENTRY_BYTES);
        assert_eq!(&data[..2], &[0, 0]);
        assert_eq!(decode(&data), Some(v));
        assert_eq!(decode(&data[..40]), None);
        let mut bad = data.clone();
        bad[1] = 1;
        assert_eq!(decode(&bad), None);
        assert_eq!(parse_name("00000000000000000042.txnindex"), Some(42));
        assert_eq!(parse_name("42.txnindex"), None);
    }

    #[test]
    fn collection_stops_once_an_lso_passes_the_range() {
        let segs = vec![
            vec![e(1, 0, 5, 6)],
            vec![e(2, 12, 14, 30)],
            vec![e(3, 20, 31, 32)],
        ];
        assert_eq!(collect_overlapping(segs.clone(), 0, 10), vec![(1, 0)]);
        // The second segment's LSO (30) covers [0, 25): the third is not looked at.
        assert_eq!(
            collect_overlapping(segs.clone(), 0, 25),
            vec![(1, 0), (2, 12)]
        );
        assert_eq!(collect_overlapping(segs.clone(), 15, 40), vec![(3, 20)]);
        // Duplicates (a cleaner merge interrupted) are listed once.
        let dup = vec![vec![e(1, 0, 5, 0)], vec![e(1, 0, 5, 6)]];
        assert_eq!(collect_overlapping(dup, 0, 10), vec![(1, 0)]);
    }

    #[test]
    fn pending_entries_are_truncated_and_marked_written() {
        let mut t = TxnIndexes::default();
        t.add(0, e(1, 0, 5, 6));
        t.add(10, e(2, 8, 12, 13));
        t.add(10, e(3, 9, 14, 15));
        t.truncate_from(14);
        assert_eq!(
            t.pending_below(100),
            vec![(0, vec![e(1, 0, 5, 6)]), (10, vec![e(2, 8, 12, 13)])]
        );
        t.mark_written(0, 1);
        assert_eq!(t.pending_below(10), vec![]);
        assert!(t.on_disk.contains(&0));
        t.forget(0);
        assert!(!t.on_disk.contains(&0));
    }
}
