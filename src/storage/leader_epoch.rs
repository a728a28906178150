//! The leader-epoch cache of a partition and its file, `<dir>/leader-epoch-checkpoint`
//! (Kafka's `LeaderEpochFileCache` and `LeaderEpochCheckpointFile`).
//!
//! Every batch carries the leader epoch it was first written in (`partitionLeaderEpoch`, bytes
//! 12..16 of the batch). The cache keeps, for each epoch that has data in the log, the offset
//! of its first batch: `(epoch, start_offset)` entries, both strictly increasing. From it,
//! [`LeaderEpochCache::end_offset_for`] answers OffsetForLeaderEpoch (where did epoch `e` end
//! on this replica?), which is how a follower or a consumer finds the divergent suffix of its
//! log after a leader change (KIP-101, KIP-279, KIP-320).
//!
//! Pure: no I/O here. The log (`storage::log`) owns one cache, updates it where offsets are
//! assigned or truncated, and writes the file (atomically) before each recovery checkpoint that
//! makes more of the log trusted, so the file always covers the log below the recovery point;
//! recovery re-derives the entries of the part it scans. A missing or damaged file is rebuilt
//! from the batches of the log (never a panic, never a refusal to open).
//!
//! File format, Kafka's exactly: a version line `0`, a line with the number of entries, then
//! one `epoch start_offset` line per entry (single spaces, `\n` line ends).
//!
//! Bounds: the cache holds one entry per leader epoch that wrote data (a few per leader
//! change); a file larger than [`FILE_BYTES_MAX`] is not read whole and counts as damaged.

/// Name of the cache's file inside a partition directory.
pub const FILE_NAME: &str = "leader-epoch-checkpoint";
/// Largest leader-epoch file read (about 50k entries); a larger one is rebuilt from the log.
pub const FILE_BYTES_MAX: u64 = 1 << 20;
/// Version of the file format (Kafka's `LeaderEpochCheckpointFile.CURRENT_VERSION`).
pub const FILE_VERSION: i32 = 0;
/// Kafka's `UNDEFINED_EPOCH`.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// One epoch and the offset of its first batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: i32,
    /// Offset of the first batch written in it.
    pub start_offset: i64,
}

/// The leader-epoch cache (see the module docs). Invariant: epochs and start offsets both
/// strictly increase along `entries`, and all are >= 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// An empty cache.
    pub fn new() -> LeaderEpochCache {
        LeaderEpochCache::default()
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The latest epoch with data, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// The latest entry, if any.
    pub fn latest_entry(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Record that `epoch` starts at `start_offset` (Kafka's `assign`). Nothing changes when
    /// the latest entry is the same epoch at an offset at or below it; otherwise every entry
    /// with an epoch >= `epoch` or a start offset >= `start_offset` is dropped first, so both
    /// stay strictly increasing. Negative epochs or offsets (batches of old clients) are
    /// ignored. Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if let Some(last) = self.entries.last() {
            if last.epoch == epoch && start_offset >= last.start_offset {
                return false;
            }
        }
        while self
            .entries
            .last()
            .is_some_and(|e| e.epoch >= epoch || e.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.check_invariants();
        true
    }

    /// [`LeaderEpochCache::assign`] only if `epoch` is above the latest one: what recovery and
    /// appends do for each batch (`maybeAssignEpochStartOffset`). Returns whether it changed.
    pub fn note_epoch_start(&mut self, epoch: i32, start_offset: i64) -> bool {
        if self.latest_epoch().is_some_and(|l| epoch <= l) {
            return false;
        }
        self.assign(epoch, start_offset)
    }

    /// Kafka's `endOffsetFor`: for `requested`, the largest epoch <= it and the start offset of
    /// the next larger epoch (the log end offset `log_end` when `requested` is the latest
    /// epoch); `(requested, first start offset)` when `requested` is below every known epoch;
    /// `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)` for an undefined epoch, an empty cache or an
    /// epoch above the latest one.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return UNDEFINED;
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end);
        }
        // The first entry with a larger epoch.
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(next) = self.entries.get(higher) else {
            return UNDEFINED;
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            None => (requested, next.start_offset),
            Some(floor) => (floor.epoch, next.start_offset),
        }
    }

    /// The epoch of the batch holding `offset` (the last entry starting at or below it).
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let i = self.entries.partition_point(|e| e.start_offset <= offset);
        i.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// Drop the entries that start at or after `end_offset` (the log was truncated to it;
    /// Kafka's `truncateFromEnd`). A negative offset changes nothing. Returns whether it changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        if end_offset < 0 {
            return false;
        }
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log now starts at `start_offset` (Kafka's `truncateFromStart`): entries starting at
    /// or below it are dropped, except that the last of them is kept, starting at
    /// `start_offset`. A negative offset changes nothing. Returns whether it changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        if start_offset < 0 {
            return false;
        }
        let below = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(last_below) = below.checked_sub(1).map(|i| self.entries[i]) else {
            return false;
        };
        if below == 1 && last_below.start_offset == start_offset {
            return false;
        }
        self.entries.drain(..below);
        self.entries.insert(
            0,
            EpochEntry {
                epoch: last_below.epoch,
                start_offset,
            },
        );
        self.check_invariants();
        true
    }

    /// Forget everything (Kafka's `clear`).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The file's bytes (see the module docs for the format).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{FILE_VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out.into_bytes()
    }

    /// Parse the file; an error says what is wrong (the caller rebuilds from the log). The
    /// entries are applied with [`LeaderEpochCache::assign`], as Kafka loads them, so a file
    /// whose entries do not increase cannot break the invariant.
    pub fn decode(data: &[u8]) -> Result<LeaderEpochCache, String> {
        let text = std::str::from_utf8(data).map_err(|_| "not UTF-8".to_string())?;
        let mut lines = text.split('\n');
        let version = lines.next().unwrap_or_default();
        if version.trim().parse::<i32>() != Ok(FILE_VERSION) {
            return Err(format!("unrecognised version {version:?}"));
        }
        let count_line = lines.next().ok_or("no entry count")?;
        let count: usize = count_line
            .trim()
            .parse()
            .map_err(|_| format!("bad entry count {count_line:?}"))?;
        let mut cache = LeaderEpochCache::new();
        for i in 0..count {
            let line = lines
                .next()
                .filter(|l| !l.is_empty())
                .ok_or_else(|| format!("expected {count} entries but found only {i}"))?;
            let mut parts = line.split_whitespace();
            let (Some(epoch), Some(offset), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("malformed line {line:?}"));
            };
            let epoch: i32 = epoch
                .parse()
                .map_err(|_| format!("malformed line {line:?}"))?;
            let offset: i64 = offset
                .parse()
                .map_err(|_| format!("malformed line {line:?}"))?;
            if epoch < 0 || offset < 0 {
                return Err(format!("negative entry {line:?}"));
            }
            cache.assign(epoch, offset);
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(format!("expected {count} entries but found more"));
        }
        Ok(cache)
    }

    /// The invariant: epochs and start offsets strictly increase, all non-negative.
    fn check_invariants(&self) {
        assert!(self
            .entries
            .first()
            .is_none_or(|e| e.epoch >= 0 && e.start_offset >= 0));
        assert!(
            self.entries
                .windows(2)
                .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset < w[1].start_offset),
            "leader epoch entries must increase: {:?}",
            self.entries
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);

    fn entries(c: &LeaderEpochCache) -> Vec<(i32, i64)> {
        c.entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    fn cache_of(list: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::new();
        for &(e, o) in list {
            c.assign(e, o);
        }
        c
    }

    // The cases of Kafka's LeaderEpochFileCacheTest, one by one.

    #[test]
    fn adds_epoch_and_answers_log_end_for_latest() {
        let c = cache_of(&[(2, 10)]);
        assert_eq!(c.latest_epoch(), Some(2));
        assert_eq!(entries(&c), vec![(2, 10)]);
        assert_eq!(c.end_offset_for(2, 11), (2, 11));
        let c = cache_of(&[(2, 11), (2, 12)]);
        assert_eq!(c.end_offset_for(2, 14), (2, 14));
    }

    #[test]
    fn undefined_epoch_or_empty_cache_is_undefined() {
        let c = cache_of(&[(2, 11), (3, 12)]);
        assert_eq!(c.end_offset_for(UNDEFINED_EPOCH, 0), UNDEFINED);
        let empty = LeaderEpochCache::new();
        assert_eq!(empty.end_offset_for(0, 0), UNDEFINED);
        assert_eq!(empty.end_offset_for(UNDEFINED_EPOCH, 73), UNDEFINED);
        assert_eq!(empty.end_offset_for(7, 0), UNDEFINED);
        assert_eq!(empty.latest_epoch(), None);
    }

    #[test]
    fn start_offset_of_an_epoch_is_not_overwritten() {
        assert_eq!(entries(&cache_of(&[(2, 9), (2, 10)])), vec![(2, 9)]);
        assert_eq!(entries(&cache_of(&[(2, 6), (2, 10)])), vec![(2, 6)]);
        assert_eq!(entries(&cache_of(&[(2, 6), (2, 7)])), vec![(2, 6)]);
    }

    #[test]
    fn start_offsets_and_epochs_stay_monotonic() {
        assert_eq!(entries(&cache_of(&[(2, 9), (3, 9)])), vec![(3, 9)]);
        assert_eq!(entries(&cache_of(&[(2, 6), (3, 5)])), vec![(3, 5)]);
        let c = cache_of(&[(1, 5), (2, 6), (1, 7)]);
        assert_eq!(c.latest_epoch(), Some(1));
        assert_eq!(c.end_offset_for(1, 8), (1, 8));
        assert_eq!(c.end_offset_for(2, 8), UNDEFINED);
        assert_eq!(entries(&c), vec![(1, 7)]);
    }

    #[test]
    fn requested_epoch_below_the_first_answers_the_first_start() {
        let c = cache_of(&[(5, 11), (6, 12), (7, 13)]);
        assert_eq!(c.end_offset_for(4, 0), (4, 11));
    }

    #[test]
    fn matching_epoch_at_an_earlier_offset_truncates() {
        let mut c = cache_of(&[(5, 11), (6, 12), (7, 13)]);
        c.assign(7, 12);
        assert_eq!(c.end_offset_for(5, 0), (5, 12));
        assert_eq!(c.end_offset_for(6, 0), (5, 12));
    }

    #[test]
    fn previous_epoch_ends_where_the_next_starts() {
        let c = cache_of(&[(1, 11), (1, 12), (2, 13), (2, 14), (3, 15), (3, 16)]);
        assert_eq!(c.end_offset_for(2, 17), (2, 15));
        let c = cache_of(&[(0, 10), (2, 13), (4, 17)]);
        assert_eq!(c.end_offset_for(1, 0), (0, 13));
        assert_eq!(c.end_offset_for(2, 0), (2, 17));
        assert_eq!(c.end_offset_for(3, 0), (2, 17));
        let c = cache_of(&[(2, 100)]);
        assert_eq!(c.end_offset_for(3, 100), UNDEFINED);
        let c = cache_of(&[(2, 6)]);
        assert_eq!(c.end_offset_for(2, 7), (2, 7));
    }

    #[test]
    fn tracks_epochs_as_leaders_change_many_times() {
        let mut c = cache_of(&[(0, 0), (1, 0)]);
        assert_eq!(c.latest_epoch(), Some(1));
        assert_eq!(c.end_offset_for(1, 0), (1, 0));
        assert_eq!(c.end_offset_for(0, 0), (0, 0));
        assert_eq!(c.end_offset_for(1, 5), (1, 5));
        assert_eq!(c.end_offset_for(0, 5), (0, 0));
        c.assign(2, 5);
        assert_eq!(c.end_offset_for(2, 10), (2, 10));
        assert_eq!(c.end_offset_for(1, 10), (1, 5));
        assert_eq!(c.end_offset_for(0, 10), (0, 0));
    }

    #[test]
    fn tracks_epochs_as_a_follower_receives_batches() {
        let c = cache_of(&[
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 3),
            (1, 4),
            (1, 5),
            (2, 6),
            (2, 7),
        ]);
        assert_eq!(c.latest_epoch(), Some(2));
        assert_eq!(c.end_offset_for(2, 9), (2, 9));
        assert_eq!(c.end_offset_for(0, 9), (0, 3));
        assert_eq!(c.end_offset_for(1, 9), (1, 6));
    }

    #[test]
    fn truncate_from_end() {
        let base = [(2, 6), (3, 8), (4, 11)];
        let mut c = cache_of(&base);
        c.truncate_from_end(8);
        assert_eq!(entries(&c), vec![(2, 6)]);
        let mut c = cache_of(&base);
        c.truncate_from_end(9);
        assert_eq!(c.latest_epoch(), Some(3));
        assert_eq!(entries(&c), vec![(2, 6), (3, 8)]);
        let mut c = cache_of(&base);
        assert!(!c.truncate_from_end(UNDEFINED_EPOCH_OFFSET));
        assert_eq!(c.entries().len(), 3);
        let mut empty = LeaderEpochCache::new();
        assert!(!empty.truncate_from_end(7));
    }

    #[test]
    fn truncate_from_start() {
        let base = [(2, 6), (3, 8), (4, 11)];
        let cut = |at: i64| {
            let mut c = cache_of(&base);
            c.truncate_from_start(at);
            entries(&c)
        };
        assert_eq!(cut(8), vec![(3, 8), (4, 11)]);
        assert_eq!(cut(1), base.to_vec());
        assert_eq!(cut(6), base.to_vec());
        assert_eq!(cut(11), vec![(4, 11)]);
        assert_eq!(cut(9), vec![(3, 9), (4, 11)]);
        assert_eq!(cut(15), vec![(4, 15)]);
        assert_eq!(cut(UNDEFINED_EPOCH_OFFSET), base.to_vec());
        let mut c = cache_of(&[(0, 0), (1, 7), (2, 10)]);
        c.truncate_from_start(5);
        assert_eq!(entries(&c), vec![(0, 5), (1, 7), (2, 10)]);
        let mut empty = LeaderEpochCache::new();
        assert!(!empty.truncate_from_start(7));
    }

    #[test]
    fn clear_and_epoch_for_offset() {
        let mut c = cache_of(&[(2, 6), (3, 8), (4, 11)]);
        assert_eq!(c.epoch_for_offset(5), None);
        assert_eq!(c.epoch_for_offset(6), Some(2));
        assert_eq!(c.epoch_for_offset(10), Some(3));
        assert_eq!(c.epoch_for_offset(100), Some(4));
        c.clear();
        assert!(c.entries().is_empty());
    }

    #[test]
    fn note_epoch_start_only_moves_forward() {
        let mut c = cache_of(&[(2, 6)]);
        assert!(!c.note_epoch_start(2, 9));
        assert!(!c.note_epoch_start(1, 9));
        assert!(c.note_epoch_start(5, 9));
        assert_eq!(entries(&c), vec![(2, 6), (5, 9)]);
        assert!(!c.note_epoch_start(-1, 10));
    }

    /// Kafka's text format exactly, read back, and persisted state survives a new instance.
    #[test]
    fn file_format_is_kafkas() {
        let c = cache_of(&[(0, 0), (3, 120), (7, 4096)]);
        let bytes = c.encode();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "0\n3\n0 0\n3 120\n7 4096\n"
        );
        assert_eq!(LeaderEpochCache::decode(&bytes), Ok(c));
        assert_eq!(
            LeaderEpochCache::new().encode(),
            b"0\n0\n".to_vec(),
            "an empty cache"
        );
        assert_eq!(
            LeaderEpochCache::decode(b"0\n0\n"),
            Ok(LeaderEpochCache::new())
        );
        // A file written by Kafka (no trailing newline is tolerated too).
        assert_eq!(
            entries(&LeaderEpochCache::decode(b"0\n2\n1 0\n4 55").unwrap()),
            vec![(1, 0), (4, 55)]
        );
    }

    /// Damaged files are errors (the log rebuilds the cache), never panics.
    #[test]
    fn damaged_files_are_refused() {
        let bad: [&[u8]; 13] = [
            b"",
            b"1\n1\n0 0\n",
            b"0\n",
            b"0\nx\n",
            b"0\n2\n0 0\n",
            b"0\n1\n0 0\n1 5\n",
            b"0\n1\n0\n",
            b"0\n1\n0 0 0\n",
            b"0\n1\na b\n",
            b"0\n1\n-1 5\n",
            b"0\n1\n1 -5\n",
            b"\xff\xfe",
            b"0\n99999999999999999999999\n",
        ];
        for data in bad {
            assert!(
                LeaderEpochCache::decode(data).is_err(),
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
        // Non-increasing entries load as Kafka loads them (through assign), keeping the
        // invariant.
        let c = LeaderEpochCache::decode(b"0\n3\n5 10\n3 20\n6 5\n").unwrap();
        assert_eq!(entries(&c), vec![(6, 5)]);
    }

    /// Random bytes never panic the decoder, and whatever decodes keeps the invariant.
    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let alphabet = b"0123456789 -\n";
            let data: Vec<u8> = (0..len)
                .map(|i| alphabet[((x >> (i % 50)) as usize + i * 7) % alphabet.len()])
                .collect();
            if let Ok(c) = LeaderEpochCache::decode(&data) {
                c.check_invariants();
            }
        }
    }
}
