//! The per-shard tail cache: recent batches of every partition log of one shard, so that
//! consumers that keep up are served from memory as `Bytes` clones (zero copy).
//!
//! Lifecycle: one [`TailCache`] per shard, created at shard start, shared (`Rc`) by all the
//! logs of that shard, dropped with the shard. Never crosses threads.
//!
//! Invariants:
//! - Per log, the cached batches are contiguous: each batch starts right after the previous
//!   one ends, and the newest cached batch is the newest appended batch. A read at an offset
//!   at or after the first cached batch can therefore be answered from memory alone.
//! - `used_bytes <= budget_bytes` after every insert (each entry is charged its length plus
//!   [`ENTRY_OVERHEAD_BYTES`]). Eviction is global FIFO across the shard's logs: the oldest
//!   inserted batch goes first, which is the one a keeping-up consumer no longer needs.
//! - Batches above a log's high watermark may be cached (they are inserted at append time);
//!   the log never serves them before they are durable, and drops them if a flush fails.

use bytes::Bytes;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// Bookkeeping bytes charged per cached batch on top of its length.
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

struct CachedBatch {
    seq: u64,
    base_offset: i64,
    last_offset: i64,
    data: Bytes,
}

#[derive(Default)]
struct Inner {
    used_bytes: usize,
    next_log_id: u64,
    next_seq: u64,
    live_entries: usize,
    logs: HashMap<u64, VecDeque<CachedBatch>>,
    /// Insertion order across logs: `(seq, log id)`; entries whose batch is gone are stale
    /// and skipped.
    fifo: VecDeque<(u64, u64)>,
}

/// Per-shard bounded cache of partition tails (Rc-shared by all logs of one shard).
pub struct TailCache {
    budget_bytes: usize,
    inner: RefCell<Inner>,
}

impl TailCache {
    /// A cache holding at most `budget_bytes` (batches plus bookkeeping) in total.
    pub fn new(budget_bytes: usize) -> Rc<TailCache> {
        Rc::new(TailCache {
            budget_bytes,
            inner: RefCell::new(Inner::default()),
        })
    }

    /// Bytes currently charged to the cache.
    pub fn used_bytes(&self) -> usize {
        self.inner.borrow().used_bytes
    }

    /// The configured budget.
    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    /// A new log id for [`Self::insert`] and friends.
    pub(crate) fn register(&self) -> u64 {
        let mut inner = self.inner.borrow_mut();
        inner.next_log_id += 1;
        let id = inner.next_log_id;
        inner.logs.insert(id, VecDeque::new());
        id
    }

    /// Forget a log (closed or deleted).
    pub(crate) fn unregister(&self, log: u64) {
        let mut inner = self.inner.borrow_mut();
        if let Some(q) = inner.logs.remove(&log) {
            for b in q {
                inner.used_bytes -= b.data.len() + ENTRY_OVERHEAD_BYTES;
                inner.live_entries -= 1;
            }
        }
        inner.maybe_compact();
    }

    /// Cache a batch just appended to `log`. If it does not continue the cached range, the
    /// log's cached range restarts with it. A batch bigger than the whole budget is not cached
    /// (and the log's range is dropped, to stay contiguous).
    pub(crate) fn insert(&self, log: u64, base_offset: i64, last_offset: i64, data: Bytes) {
        assert!(last_offset >= base_offset);
        let charge = data.len() + ENTRY_OVERHEAD_BYTES;
        let mut inner = self.inner.borrow_mut();
        let contiguous = inner
            .logs
            .get(&log)
            .and_then(|q| q.back())
            .is_none_or(|b| b.last_offset + 1 == base_offset);
        if !contiguous || charge > self.budget_bytes {
            inner.clear_log(log);
        }
        if charge > self.budget_bytes {
            return;
        }
        while inner.used_bytes + charge > self.budget_bytes {
            if !inner.evict_oldest() {
                break;
            }
        }
        inner.next_seq += 1;
        let seq = inner.next_seq;
        let Some(q) = inner.logs.get_mut(&log) else {
            return;
        };
        q.push_back(CachedBatch {
            seq,
            base_offset,
            last_offset,
            data,
        });
        inner.used_bytes += charge;
        inner.live_entries += 1;
        inner.fifo.push_back((seq, log));
        assert!(inner.used_bytes <= self.budget_bytes);
    }

    /// Drop cached batches of `log` that end at or after `offset` (a failed flush rolled the
    /// log back to `offset`).
    pub(crate) fn truncate_from(&self, log: u64, offset: i64) {
        let mut inner = self.inner.borrow_mut();
        let mut freed = 0usize;
        let mut n = 0usize;
        if let Some(q) = inner.logs.get_mut(&log) {
            while q.back().is_some_and(|b| b.last_offset >= offset) {
                if let Some(b) = q.pop_back() {
                    freed += b.data.len() + ENTRY_OVERHEAD_BYTES;
                    n += 1;
                }
            }
        }
        inner.used_bytes -= freed;
        inner.live_entries -= n;
        inner.maybe_compact();
    }

    /// Drop cached batches of `log` that end before `offset` (log start moved).
    pub(crate) fn evict_below(&self, log: u64, offset: i64) {
        let mut inner = self.inner.borrow_mut();
        let mut freed = 0usize;
        let mut n = 0usize;
        if let Some(q) = inner.logs.get_mut(&log) {
            while q.front().is_some_and(|b| b.last_offset < offset) {
                if let Some(b) = q.pop_front() {
                    freed += b.data.len() + ENTRY_OVERHEAD_BYTES;
                    n += 1;
                }
            }
        }
        inner.used_bytes -= freed;
        inner.live_entries -= n;
        inner.maybe_compact();
    }

    /// Serve a read of `log` from memory: whole batches from the one holding `offset`, none
    /// at or past `high_watermark`, at most `max_bytes` (the first one regardless if
    /// `min_one_batch`). `None` if `offset` is not covered by the cached range.
    pub(crate) fn read(
        &self,
        log: u64,
        offset: i64,
        high_watermark: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Option<Vec<Bytes>> {
        let inner = self.inner.borrow();
        let q = inner.logs.get(&log)?;
        let first = q.front()?;
        if offset < first.base_offset {
            return None;
        }
        let last = q.back()?;
        if offset > last.last_offset {
            return None;
        }
        let start = q.partition_point(|b| b.last_offset < offset);
        let mut out = Vec::new();
        let mut total = 0usize;
        for b in q.range(start..) {
            if b.last_offset >= high_watermark {
                break;
            }
            if total + b.data.len() > max_bytes && !(out.is_empty() && min_one_batch) {
                break;
            }
            total += b.data.len();
            out.push(b.data.clone());
        }
        Some(out)
    }

    /// First offset `log` has cached, if any (for tests and metrics).
    pub fn cached_start(&self, log: u64) -> Option<i64> {
        self.inner
            .borrow()
            .logs
            .get(&log)
            .and_then(|q| q.front().map(|b| b.base_offset))
    }
}

impl Inner {
    fn clear_log(&mut self, log: u64) {
        let mut freed = 0usize;
        let mut n = 0usize;
        if let Some(q) = self.logs.get_mut(&log) {
            for b in q.drain(..) {
                freed += b.data.len() + ENTRY_OVERHEAD_BYTES;
                n += 1;
            }
        }
        self.used_bytes -= freed;
        self.live_entries -= n;
        self.maybe_compact();
    }

    /// Evict the globally oldest live batch; false if nothing is cached.
    fn evict_oldest(&mut self) -> bool {
        while let Some((seq, log)) = self.fifo.pop_front() {
            let Some(q) = self.logs.get_mut(&log) else {
                continue;
            };
            // Batches of one log are inserted in order, so a live fifo entry is always its
            // log's front; anything else is stale.
            if q.front().is_some_and(|b| b.seq == seq) {
                if let Some(b) = q.pop_front() {
                    self.used_bytes -= b.data.len() + ENTRY_OVERHEAD_BYTES;
                    self.live_entries -= 1;
                    return true;
                }
            }
        }
        false
    }

    /// Keep the fifo bounded: rebuild it when stale entries dominate.
    fn maybe_compact(&mut self) {
        if self.fifo.len() <= 2 * self.live_entries + 1024 {
            return;
        }
        let mut all: Vec<(u64, u64)> = self
            .logs
            .iter()
            .flat_map(|(&log, q)| q.iter().map(move |b| (b.seq, log)))
            .collect();
        all.sort_unstable();
        self.fifo = all.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn cache_stays_within_budget_and_evicts_oldest_first() {
        let cache = TailCache::new(10 * (100 + ENTRY_OVERHEAD_BYTES));
        let a = cache.register();
        let b = cache.register();
        for i in 0..8 {
            cache.insert(a, i, i, batch(100));
            cache.insert(b, i, i, batch(100));
            assert!(cache.used_bytes() <= cache.budget_bytes());
        }
        // 16 inserted, 10 fit: the 6 oldest (a0,b0,a1,b1,a2,b2) are gone.
        assert_eq!(cache.cached_start(a), Some(3));
        assert_eq!(cache.cached_start(b), Some(3));
        assert!(cache.read(a, 2, 100, 1 << 20, true).is_none());
        let got = cache.read(a, 4, 7, 1 << 20, true).expect("cached");
        assert_eq!(got.len(), 3); // 4, 5, 6 (7 is at the high watermark)
        let got = cache.read(a, 4, 100, 150, false).expect("cached");
        assert_eq!(got.len(), 1);
        let got = cache.read(a, 4, 100, 50, true).expect("cached");
        assert_eq!(got.len(), 1);
        let got = cache.read(a, 4, 100, 50, false).expect("cached");
        assert!(got.is_empty());
        cache.truncate_from(a, 6);
        assert!(cache.read(a, 6, 100, 1 << 20, true).is_none());
        cache.unregister(a);
        cache.unregister(b);
        assert_eq!(cache.used_bytes(), 0);
    }

    #[test]
    fn non_contiguous_insert_restarts_the_range() {
        let cache = TailCache::new(1 << 20);
        let a = cache.register();
        cache.insert(a, 0, 4, batch(10));
        cache.insert(a, 10, 12, batch(10));
        assert_eq!(cache.cached_start(a), Some(10));
        cache.insert(a, 13, 13, batch(2 << 20));
        assert_eq!(cache.cached_start(a), None);
        assert_eq!(cache.used_bytes(), 0);
    }
}
