//! Sparse per-segment indexes in Kafka's file formats.
//!
//! - Offset index (`.index`): 8-byte entries `(relative offset i32, position i32)`, big-endian.
//!   An entry `(o, p)` says the batch whose *last* offset is `base + o` starts at byte `p`
//!   (Kafka's convention). Lookup of offset `t` returns the position of the last entry with
//!   `o <= t - base`, so a forward scan from it reaches the batch holding `t`.
//! - Time index (`.timeindex`): 12-byte entries `(timestamp i64, relative offset i32)`. An
//!   entry `(T, o)` says every record up to and including `base + o` has a timestamp `<= T`,
//!   and `T` is first reached in the batch ending at `base + o`.
//!
//! One entry is added per `index.interval.bytes` of log (the first batch of a segment never
//! gets one: position 0 is implied). Indexes live in memory for every segment; the files are
//! written whole at segment roll and at clean close (atomically: temp file, fdatasync,
//! rename), never appended in place, so a crash cannot leave a half-written index under the
//! real name. On load, [`OffsetIndex::decode`] and [`TimeIndex::decode`] check every entry
//! (sizes, monotonicity, bounds); a damaged index is rebuilt from the log by recovery.
//!
//! What it does not do yet: lazy loading. Memory is ~20 bytes per 4 KiB of log (~0.5%).

/// Bytes per offset index entry.
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes per time index entry.
pub const TIME_ENTRY_BYTES: usize = 12;

/// In-memory sparse offset index of one segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    /// `(relative last offset, position)`, both strictly increasing.
    pub entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Append an entry; must be past the last one.
    pub fn push(&mut self, rel_offset: u32, position: u32) {
        if let Some(&(o, p)) = self.entries.last() {
            assert!(rel_offset > o && position > p, "offset index must grow");
        }
        self.entries.push((rel_offset, position));
    }

    /// Position to start scanning from to find relative offset `rel_target`.
    pub fn lookup(&self, rel_target: u32) -> u32 {
        self.entry_at_or_before(rel_target).map_or(0, |(_, p)| p)
    }

    /// The entry `(relative offset, position)` with the greatest offset `<= rel_target`: the
    /// batch at that position ends exactly at that offset.
    pub fn entry_at_or_before(&self, rel_target: u32) -> Option<(u32, u32)> {
        let idx = self.entries.partition_point(|&(o, _)| o <= rel_target);
        idx.checked_sub(1).map(|i| self.entries[i])
    }

    /// Position of the entry for the batch ending at `rel_offset`, if indexed exactly.
    pub fn position_of_exact(&self, rel_offset: u32) -> Option<u32> {
        self.entries
            .binary_search_by_key(&rel_offset, |&(o, _)| o)
            .ok()
            .map(|i| self.entries[i].1)
    }

    /// Drop entries at or after byte `position` (truncation, rollback).
    pub fn truncate_to_position(&mut self, position: u64) {
        let keep = self
            .entries
            .partition_point(|&(_, p)| u64::from(p) < position);
        self.entries.truncate(keep);
    }

    /// Kafka's file format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for &(o, p) in &self.entries {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Parse and check a `.index` file against a segment of `segment_len` bytes whose last
    /// relative offset is `rel_last`. Trailing all-zero entries (Kafka preallocates) are
    /// ignored.
    pub fn decode(data: &[u8], segment_len: u64, rel_last: i64) -> Result<OffsetIndex, String> {
        if !data.len().is_multiple_of(OFFSET_ENTRY_BYTES) {
            return Err(format!(
                "offset index size {} is not a multiple of 8",
                data.len()
            ));
        }
        let mut idx = OffsetIndex::default();
        for (i, e) in data.chunks_exact(OFFSET_ENTRY_BYTES).enumerate() {
            let o = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            let p = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
            if o == 0 && p == 0 && i > 0 {
                break;
            }
            if i64::from(o) > rel_last || u64::from(p) >= segment_len.max(1) {
                return Err(format!(
                    "offset index entry {i} ({o}, {p}) is out of bounds"
                ));
            }
            if let Some(&(lo, lp)) = idx.entries.last() {
                if o <= lo || p <= lp {
                    return Err(format!("offset index entry {i} ({o}, {p}) does not grow"));
                }
            }
            idx.entries.push((o, p));
        }
        Ok(idx)
    }
}

/// In-memory sparse time index of one segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeIndex {
    /// `(max timestamp so far, relative offset)`, timestamps strictly increasing.
    pub entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Append an entry if its timestamp is larger than the last one's.
    pub fn maybe_push(&mut self, timestamp: i64, rel_offset: u32) {
        match self.entries.last() {
            Some(&(t, o)) if timestamp <= t => {
                let _ = o;
            }
            Some(&(_, o)) => {
                assert!(rel_offset >= o, "time index offsets must not go back");
                self.entries.push((timestamp, rel_offset));
            }
            None => self.entries.push((timestamp, rel_offset)),
        }
    }

    /// Relative offset of the last entry whose timestamp is `< ts`: every record up to it is
    /// older than `ts`.
    pub fn last_before(&self, ts: i64) -> Option<u32> {
        let idx = self.entries.partition_point(|&(t, _)| t < ts);
        if idx == 0 {
            None
        } else {
            Some(self.entries[idx - 1].1)
        }
    }

    /// The last entry (the segment's max timestamp once the segment is sealed).
    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    /// Drop entries whose offset is `>= rel_offset`.
    pub fn truncate_to_offset(&mut self, rel_offset: i64) {
        let keep = self
            .entries
            .partition_point(|&(_, o)| i64::from(o) < rel_offset);
        self.entries.truncate(keep);
    }

    /// Kafka's file format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for &(t, o) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&o.to_be_bytes());
        }
        out
    }

    /// Parse and check a `.timeindex` file for a segment whose last relative offset is
    /// `rel_last`. Trailing all-zero entries are ignored.
    pub fn decode(data: &[u8], rel_last: i64) -> Result<TimeIndex, String> {
        if !data.len().is_multiple_of(TIME_ENTRY_BYTES) {
            return Err(format!(
                "time index size {} is not a multiple of 12",
                data.len()
            ));
        }
        let mut idx = TimeIndex::default();
        for (i, e) in data.chunks_exact(TIME_ENTRY_BYTES).enumerate() {
            let mut tb = [0u8; 8];
            tb.copy_from_slice(&e[..8]);
            let t = i64::from_be_bytes(tb);
            let o = u32::from_be_bytes([e[8], e[9], e[10], e[11]]);
            if t == 0 && o == 0 && i > 0 {
                break;
            }
            if i64::from(o) > rel_last {
                return Err(format!("time index entry {i} ({t}, {o}) is out of bounds"));
            }
            if let Some(&(lt, lo)) = idx.entries.last() {
                if t <= lt || o < lo {
                    return Err(format!("time index entry {i} ({t}, {o}) does not grow"));
                }
            }
            idx.entries.push((t, o));
        }
        Ok(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_round_trips_and_looks_up() {
        let mut idx = OffsetIndex::default();
        idx.push(10, 4200);
        idx.push(20, 8500);
        assert_eq!(idx.lookup(0), 0);
        assert_eq!(idx.lookup(9), 0);
        assert_eq!(idx.lookup(10), 4200);
        assert_eq!(idx.lookup(19), 4200);
        assert_eq!(idx.lookup(25), 8500);
        let back = OffsetIndex::decode(&idx.encode(), 9000, 30).expect("valid");
        assert_eq!(back, idx);
        assert!(OffsetIndex::decode(&idx.encode(), 8000, 30).is_err());
        assert!(OffsetIndex::decode(&idx.encode()[..12], 9000, 30).is_err());
        idx.truncate_to_position(8500);
        assert_eq!(idx.entries, vec![(10, 4200)]);
    }

    #[test]
    fn time_index_finds_last_entry_before() {
        let mut idx = TimeIndex::default();
        idx.maybe_push(100, 3);
        idx.maybe_push(100, 5);
        idx.maybe_push(200, 9);
        assert_eq!(idx.entries.len(), 2);
        assert_eq!(idx.last_before(100), None);
        assert_eq!(idx.last_before(101), Some(3));
        assert_eq!(idx.last_before(1000), Some(9));
        let back = TimeIndex::decode(&idx.encode(), 9).expect("valid");
        assert_eq!(back, idx);
        assert!(TimeIndex::decode(&idx.encode(), 8).is_err());
    }
}
