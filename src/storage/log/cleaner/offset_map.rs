//! The cleaner's offset map: key -> latest offset over the dirty range, bounded in memory
//! (Kafka's `SkimpyOffsetMap` and its dedupe buffer). Pure: no I/O.
//!
//! Bound: the round checks [`OffsetMap::is_full`] before mapping each batch and stops at the
//! last whole batch mapped, so the map holds at most [`OffsetMap::capacity`] keys plus the
//! keys of one batch.
//! `latest_offset` is the last offset the map covers: records above it are not judged by
//! the map (the filter keeps them).

use super::OFFSET_MAP_ENTRY_BYTES;
use std::collections::HashMap;
use std::hash::Hasher;

/// Key hash -> latest offset over the dirty range (Kafka's `SkimpyOffsetMap`). Keys are
/// stored as a 128-bit hash (two SipHash-1-3 digests): a collision could merge two keys, as
/// Kafka's MD5-based map could; at 2^-128 per pair it is not a practical concern.
pub struct OffsetMap {
    entries: HashMap<u128, i64>,
    capacity: usize,
    /// Last offset the map covers (-1: none); set by the round as it maps batches.
    pub(super) latest_offset: i64,
}

impl OffsetMap {
    /// A map that holds at most `memory_bytes / OFFSET_MAP_ENTRY_BYTES` keys (at least 1024).
    pub fn with_memory(memory_bytes: usize) -> OffsetMap {
        OffsetMap {
            entries: HashMap::new(),
            capacity: (memory_bytes / OFFSET_MAP_ENTRY_BYTES).max(1024),
            latest_offset: -1,
        }
    }

    /// Keys the map holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn clear(&mut self, latest_offset: i64) {
        self.entries.clear();
        if self.entries.capacity() > self.capacity * 2 {
            self.entries.shrink_to(self.capacity);
        }
        self.latest_offset = latest_offset;
    }

    pub(super) fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity
    }

    pub(super) fn put(&mut self, key: &[u8], offset: i64) {
        self.entries.insert(key_hash(key), offset);
    }

    pub(super) fn get(&self, key: &[u8]) -> i64 {
        self.entries.get(&key_hash(key)).copied().unwrap_or(-1)
    }
}

fn key_hash(key: &[u8]) -> u128 {
    let mut a = std::collections::hash_map::DefaultHasher::new();
    a.write(key);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    b.write_u8(0x5a);
    b.write(key);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_map_is_bounded() {
        let map = OffsetMap::with_memory(0);
        assert_eq!(map.capacity(), 1024);
        let mut map = OffsetMap::with_memory(48 * 2000);
        assert_eq!(map.capacity(), 2000);
        for i in 0..2000u32 {
            map.put(&i.to_be_bytes(), i64::from(i));
        }
        assert!(map.is_full());
        assert_eq!(map.get(&7u32.to_be_bytes()), 7);
        assert_eq!(map.get(b"missing"), -1);
    }

    #[test]
    fn clear_forgets_keys_and_sets_the_covered_offset() {
        let mut map = OffsetMap::with_memory(48 * 2000);
        map.put(b"a", 5);
        map.put(b"a", 9);
        assert_eq!(
            (map.len(), map.get(b"a")),
            (1, 9),
            "a key keeps its latest offset"
        );
        map.clear(41);
        assert!(map.is_empty());
        assert_eq!(map.get(b"a"), -1);
        assert_eq!(map.latest_offset, 41);
    }
}
