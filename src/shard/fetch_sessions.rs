//! Incremental fetch sessions (KIP-227): the per-shard session cache, as Kafka's
//! `FetchSessionCacheShard` / `FetchSession` keep it. Pure state, no I/O; `api::fetch` drives it.
//!
//! A full fetch (session epoch 0) may create a session holding the request's partitions with
//! their fetch parameters and the high watermark and log start offset last sent; an incremental
//! fetch (`session_id`, epoch = the previous one + 1) names only the partitions whose parameters
//! changed (and `forgotten_topics_data` those to drop), is served for every partition of the
//! session, and its answer carries only the partitions with something new: records, a changed
//! high watermark or log start offset, an error, or a diverging epoch.
//!
//! Placement: each shard keeps the sessions whose ids fall in its range (Kafka shards its cache
//! the same way): `[max(1, shard x range), (shard + 1) x range)` with range = `i32::MAX / shards`.
//! A full fetch creates its session on the shard of its connection, so a client that keeps its
//! connection finds its session locally; an incremental fetch from any connection goes to the
//! shard [`owner`] names.
//!
//! Bounds (per broker, split evenly over the shards): `max_incremental_fetch_session_cache_slots`
//! sessions (Kafka's default 1000) and `fetch_session_cache_partitions_max` cached partitions in
//! all (Freshet's own: Kafka has none; about 120 bytes each). When the slots are full, a new
//! session may evict one as Kafka's `tryEvict`: the least recently used when unused for
//! `fetch_session_eviction_ms` (Kafka's fixed 120 s), else the smallest evictable session
//! (created over `fetch_session_eviction_ms` ago, unprivileged before privileged) when the new
//! one is larger (or privileged over unprivileged). A session that does not fit gets no id
//! (session id 0: the client keeps sending full fetches). An incremental fetch that would grow
//! its session past the partition bound closes it and answers FETCH_SESSION_ID_NOT_FOUND (the
//! client starts over with a full fetch).

use std::collections::{BTreeSet, HashMap};

use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

/// No session (request: sessionless or new; response: none created).
pub const INVALID_SESSION_ID: i32 = 0;
/// A full fetch that creates (or re-creates) a session.
pub const INITIAL_EPOCH: i32 = 0;
/// A full fetch that closes its session and wants none.
pub const FINAL_EPOCH: i32 = -1;

/// The epoch after `prev` (Kafka's `FetchMetadata.nextEpoch`): wraps to 1, never 0.
pub fn next_epoch(prev: i32) -> i32 {
    if prev < 0 {
        FINAL_EPOCH
    } else if prev == i32::MAX {
        1
    } else {
        prev + 1
    }
}

/// The shard that holds session `id`, among `shards`.
pub fn owner(id: i32, shards: usize) -> usize {
    let range = id_range(shards);
    ((id.max(0) / range) as usize).min(shards.saturating_sub(1))
}

/// The session ids of each shard's range.
fn id_range(shards: usize) -> i32 {
    (i32::MAX / shards.max(1) as i32).max(1)
}

/// A partition's topic in a session: by id when the session uses topic ids (Fetch v13+), by
/// name before.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionTopic {
    Id(Uuid),
    Name(StrBytes),
}

/// A cached partition's key.
pub type PartitionKey = (SessionTopic, i32);

/// A partition's fetch parameters, as the fetcher last sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchParams {
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    pub current_leader_epoch: i32,
    pub last_fetched_epoch: i32,
    pub log_start_offset: i64,
}

/// What one partition's answer carried, to decide whether an incremental answer includes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub has_records: bool,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub error: bool,
    pub diverging: bool,
}

/// A cached partition: the request parameters and what was last sent.
#[derive(Debug, Clone, Copy)]
struct Cached {
    params: FetchParams,
    /// The high watermark last sent; -1 after an error, so the partition is sent again.
    high_watermark: i64,
    /// The log start offset last sent.
    log_start_offset: i64,
}

impl Cached {
    fn new(params: FetchParams) -> Cached {
        Cached {
            params,
            high_watermark: -1,
            log_start_offset: -1,
        }
    }

    /// Kafka's `CachedPartition.maybeUpdateResponseData`: whether the answer must include this
    /// partition; with `update`, remembers what it sent.
    fn must_respond(&mut self, answered: &Answered, update: bool) -> bool {
        let mut must = answered.has_records || answered.diverging;
        if self.high_watermark != answered.high_watermark {
            must = true;
            if update {
                self.high_watermark = answered.high_watermark;
            }
        }
        if self.log_start_offset != answered.log_start_offset {
            must = true;
            if update {
                self.log_start_offset = answered.log_start_offset;
            }
        }
        if answered.error {
            must = true;
            if update {
                self.high_watermark = -1;
            }
        }
        must
    }
}

/// One session.
#[derive(Debug)]
struct Session {
    privileged: bool,
    uses_topic_ids: bool,
    creation_ms: u64,
    last_used_ms: u64,
    /// The epoch the next incremental fetch must carry.
    epoch: i32,
    partitions: IndexMap<PartitionKey, Cached>,
    /// The size the eviction index knows this session by.
    indexed_size: usize,
}

/// Why an incremental fetch is refused (Kafka's error for each, or none for a session that
/// its own request emptied: that fetch is answered sessionless).
pub use crate::error::FetchSessionError as SessionError;

/// An incremental fetch's partitions: the whole session in its order (after the request's
/// changes), with the epoch its answer completes.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub partitions: Vec<(PartitionKey, FetchParams)>,
    /// The session epoch after this request (its answer is checked against it).
    pub epoch: i32,
}

/// The bounds of one shard's cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// Sessions this shard may hold.
    pub slots: usize,
    /// Cached partitions this shard may hold, all sessions together.
    pub partitions_max: usize,
    /// How long a session stays unused before any new one may evict it; also how old a session
    /// must be before a larger one may evict it.
    pub eviction_ms: u64,
}

impl CacheLimits {
    /// Shard `shard`'s part of the broker-wide `slots` and `partitions_max` over `shards`.
    pub fn for_shard(
        slots: usize,
        partitions_max: usize,
        eviction_ms: u64,
        shard: usize,
        shards: usize,
    ) -> CacheLimits {
        let share = |total: usize| total / shards + usize::from(shard < total % shards);
        CacheLimits {
            slots: share(slots),
            partitions_max: share(partitions_max),
            eviction_ms,
        }
    }
}

/// One shard's fetch sessions.
#[derive(Debug)]
pub struct FetchSessionCache {
    limits: CacheLimits,
    /// This shard's session ids: `[first, end)`.
    ids: (i32, i32),
    sessions: HashMap<i32, Session>,
    /// (last used ms, id), oldest first.
    last_used: BTreeSet<(u64, i32)>,
    /// (privileged, size, id) of sessions any new one may evict (created long enough ago).
    evictable_by_all: BTreeSet<(bool, usize, i32)>,
    /// The same for a new privileged session: also unprivileged sessions however young.
    evictable_by_privileged: BTreeSet<(bool, usize, i32)>,
    partitions_cached: usize,
    evictions: u64,
    /// The state of the id generator (xorshift, seeded per shard).
    rng: u64,
}

impl FetchSessionCache {
    /// The cache of shard `shard` among `shards`.
    pub fn new(limits: CacheLimits, shard: usize, shards: usize) -> FetchSessionCache {
        let range = id_range(shards);
        let first = (shard as i32).saturating_mul(range).max(1);
        let end = if shard + 1 >= shards {
            i32::MAX
        } else {
            (shard as i32 + 1).saturating_mul(range)
        };
        let seed = Uuid::new_v4().as_u64_pair().0 | 1;
        FetchSessionCache {
            limits,
            ids: (first, end),
            sessions: HashMap::new(),
            last_used: BTreeSet::new(),
            evictable_by_all: BTreeSet::new(),
            evictable_by_privileged: BTreeSet::new(),
            partitions_cached: 0,
            evictions: 0,
            rng: seed,
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Partitions cached, all sessions together.
    pub fn partitions_cached(&self) -> usize {
        self.partitions_cached
    }

    /// Sessions evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Whether session `id` is held.
    pub fn contains(&self, id: i32) -> bool {
        self.sessions.contains_key(&id)
    }

    fn new_id(&mut self) -> i32 {
        let (first, end) = self.ids;
        let span = (end - first).max(1) as u64;
        loop {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let id = first + (self.rng % span) as i32;
            if id != INVALID_SESSION_ID && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Kafka's `maybeCreateSession`: a new session of `partitions` (in answer order), when
    /// there is a slot or one can be freed; its id, or [`INVALID_SESSION_ID`].
    pub fn create(
        &mut self,
        now_ms: u64,
        privileged: bool,
        uses_topic_ids: bool,
        partitions: Vec<(PartitionKey, FetchParams, Answered)>,
    ) -> i32 {
        let size = partitions.len();
        if size > self.limits.partitions_max || self.limits.slots == 0 {
            return INVALID_SESSION_ID;
        }
        if self.sessions.len() >= self.limits.slots && !self.try_evict(privileged, size, now_ms) {
            return INVALID_SESSION_ID;
        }
        // Room for the partitions: stale sessions go first, as they would for a slot.
        while self.partitions_cached + size > self.limits.partitions_max {
            if !self.evict_stale(now_ms) {
                return INVALID_SESSION_ID;
            }
        }
        let mut map = IndexMap::with_capacity(size);
        for (key, params, answered) in partitions {
            let mut cached = Cached::new(params);
            cached.must_respond(&answered, true);
            map.insert(key, cached);
        }
        let id = self.new_id();
        self.sessions.insert(
            id,
            Session {
                privileged,
                uses_topic_ids,
                creation_ms: now_ms,
                last_used_ms: now_ms,
                epoch: next_epoch(INITIAL_EPOCH),
                partitions: map,
                indexed_size: 0,
            },
        );
        self.index(id, now_ms, None);
        id
    }

    /// Kafka's `tryEvict`: frees a slot for a new session of `size` partitions.
    fn try_evict(&mut self, privileged: bool, size: usize, now_ms: u64) -> bool {
        if self.evict_stale(now_ms) {
            return true;
        }
        let candidates = if privileged {
            &self.evictable_by_privileged
        } else {
            &self.evictable_by_all
        };
        match candidates.first().copied() {
            Some(first) if (privileged, size, 0) >= first => {
                self.remove(first.2);
                self.evictions += 1;
                true
            }
            _ => false,
        }
    }

    /// Evicts the least recently used session when it has been unused for `eviction_ms`.
    fn evict_stale(&mut self, now_ms: u64) -> bool {
        match self.last_used.first().copied() {
            Some((used, id)) if now_ms.saturating_sub(used) > self.limits.eviction_ms => {
                self.remove(id);
                self.evictions += 1;
                true
            }
            _ => false,
        }
    }

    /// Removes session `id`; whether it was held.
    pub fn remove(&mut self, id: i32) -> bool {
        let Some(session) = self.sessions.remove(&id) else {
            return false;
        };
        self.last_used.remove(&(session.last_used_ms, id));
        let key = (session.privileged, session.indexed_size, id);
        self.evictable_by_all.remove(&key);
        self.evictable_by_privileged.remove(&key);
        self.partitions_cached -= session.indexed_size;
        true
    }

    /// Kafka's `touch`: re-files session `id` as used at `now_ms` with its current size;
    /// `previous` is its (last used, size) in the indexes, if filed.
    fn index(&mut self, id: i32, now_ms: u64, previous: Option<(u64, usize)>) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Some((used, size)) = previous {
            self.last_used.remove(&(used, id));
            self.evictable_by_all
                .remove(&(session.privileged, size, id));
            self.evictable_by_privileged
                .remove(&(session.privileged, size, id));
            self.partitions_cached -= size;
        }
        session.last_used_ms = now_ms;
        session.indexed_size = session.partitions.len();
        self.last_used.insert((now_ms, id));
        let key = (session.privileged, session.indexed_size, id);
        let old = now_ms.saturating_sub(session.creation_ms) > self.limits.eviction_ms;
        if !session.privileged || old {
            self.evictable_by_privileged.insert(key);
        }
        if old {
            self.evictable_by_all.insert(key);
        }
        self.partitions_cached += session.indexed_size;
    }

    /// An incremental fetch (Kafka's `FetchManager.newContext`): checks the epoch and the use
    /// of topic ids, applies the request's `changed` partitions and `forgotten` ones, bumps the
    /// epoch and returns the whole session.
    pub fn begin_incremental(
        &mut self,
        id: i32,
        epoch: i32,
        uses_topic_ids: bool,
        changed: Vec<(PartitionKey, FetchParams)>,
        forgotten: &[PartitionKey],
        now_ms: u64,
    ) -> Result<Snapshot, SessionError> {
        let Some(session) = self.sessions.get_mut(&id) else {
            return Err(SessionError::NotFound);
        };
        if session.epoch != epoch {
            return Err(SessionError::InvalidEpoch);
        }
        if session.uses_topic_ids != uses_topic_ids {
            return Err(SessionError::TopicIdError);
        }
        let added = changed
            .iter()
            .filter(|(k, _)| !session.partitions.contains_key(k))
            .count();
        let others = self.partitions_cached - session.indexed_size;
        if others + session.partitions.len() + added > self.limits.partitions_max {
            // Growing past the bound: closed, as if evicted.
            self.remove(id);
            self.evictions += 1;
            return Err(SessionError::NotFound);
        }
        for (key, params) in changed {
            session
                .partitions
                .entry(key)
                .and_modify(|c| c.params = params)
                .or_insert_with(|| Cached::new(params));
        }
        for key in forgotten {
            session.partitions.shift_remove(key);
        }
        if session.partitions.is_empty() {
            self.remove(id);
            return Err(SessionError::Emptied);
        }
        session.epoch = next_epoch(session.epoch);
        let snapshot = Snapshot {
            partitions: session
                .partitions
                .iter()
                .map(|(k, c)| (k.clone(), c.params))
                .collect(),
            epoch: session.epoch,
        };
        let previous = (session.last_used_ms, session.indexed_size);
        self.index(id, now_ms, Some(previous));
        Ok(snapshot)
    }

    /// The end of an incremental fetch (Kafka's `IncrementalFetchContext`): which of the
    /// snapshot's partitions (`answered`, in snapshot order) its answer includes. With
    /// `update`, remembers what is sent and moves the partitions that returned records to the
    /// end of the session (so the next fetches serve the others first). `None`: the session
    /// is gone (evicted meanwhile: everything is sent, the next fetch learns it is gone);
    /// `Err(InvalidEpoch)`: another fetch of the session came in between.
    pub fn finish_incremental(
        &mut self,
        id: i32,
        epoch: i32,
        answered: &[(PartitionKey, Answered)],
        update: bool,
    ) -> Result<Option<Vec<bool>>, SessionError> {
        let Some(session) = self.sessions.get_mut(&id) else {
            return Ok(None);
        };
        if session.epoch != epoch {
            return Err(SessionError::InvalidEpoch);
        }
        let mut keep = Vec::with_capacity(answered.len());
        let mut moved = Vec::new();
        for (key, answer) in answered {
            let must = match session.partitions.get_mut(key) {
                Some(cached) => cached.must_respond(answer, update),
                None => false,
            };
            if must && update && answer.has_records {
                moved.push(key);
            }
            keep.push(must);
        }
        if !moved.is_empty() {
            // One pass: the partitions without records keep their order, those with go last.
            let moved: std::collections::HashSet<&PartitionKey> = moved.into_iter().collect();
            let old = std::mem::take(&mut session.partitions);
            let mut front = IndexMap::with_capacity(old.len());
            let mut tail = Vec::with_capacity(moved.len());
            for (key, cached) in old {
                if moved.contains(&key) {
                    tail.push((key, cached));
                } else {
                    front.insert(key, cached);
                }
            }
            front.extend(tail);
            session.partitions = front;
        }
        Ok(Some(keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, p: i32) -> PartitionKey {
        (SessionTopic::Name(StrBytes::from_string(name.into())), p)
    }

    fn params(offset: i64) -> FetchParams {
        FetchParams {
            fetch_offset: offset,
            partition_max_bytes: 1 << 20,
            current_leader_epoch: -1,
            last_fetched_epoch: -1,
            log_start_offset: -1,
        }
    }

    fn quiet(hw: i64) -> Answered {
        Answered {
            has_records: false,
            high_watermark: hw,
            log_start_offset: 0,
            error: false,
            diverging: false,
        }
    }

    fn parts(n: i32) -> Vec<(PartitionKey, FetchParams, Answered)> {
        (0..n).map(|p| (key("t", p), params(0), quiet(5))).collect()
    }

    fn cache(slots: usize, partitions_max: usize) -> FetchSessionCache {
        FetchSessionCache::new(
            CacheLimits {
                slots,
                partitions_max,
                eviction_ms: 1_000,
            },
            0,
            1,
        )
    }

    #[test]
    fn epochs_wrap_past_max_and_stay_final() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(-1), -1);
    }

    #[test]
    fn ids_fall_in_their_shard_range() {
        for shard in 0..3 {
            let mut c = FetchSessionCache::new(
                CacheLimits {
                    slots: 100,
                    partitions_max: 1000,
                    eviction_ms: 1,
                },
                shard,
                3,
            );
            for _ in 0..50 {
                let id = c.create(0, false, false, parts(1));
                assert!(id > 0);
                assert_eq!(owner(id, 3), shard, "id {id}");
            }
        }
    }

    #[test]
    fn incremental_answers_only_what_changed_and_checks_epochs() {
        let mut c = cache(10, 100);
        let id = c.create(0, false, false, parts(4));
        assert_eq!(
            c.begin_incremental(id, 2, false, vec![], &[], 1)
                .unwrap_err(),
            SessionError::InvalidEpoch
        );
        assert_eq!(
            c.begin_incremental(id, 1, true, vec![], &[], 1)
                .unwrap_err(),
            SessionError::TopicIdError
        );
        let snap = c.begin_incremental(id, 1, false, vec![], &[], 1).unwrap();
        assert_eq!(snap.epoch, 2);
        assert_eq!(snap.partitions.len(), 4);
        let mut answered: Vec<_> = snap
            .partitions
            .iter()
            .map(|(k, _)| (k.clone(), quiet(5)))
            .collect();
        answered[2].1.has_records = true;
        answered[3].1.high_watermark = 9;
        let keep = c
            .finish_incremental(id, 2, &answered, true)
            .unwrap()
            .unwrap();
        assert_eq!(keep, vec![false, false, true, true]);
        // The partition with records goes last; the same epoch again is refused.
        let snap = c.begin_incremental(id, 2, false, vec![], &[], 2).unwrap();
        let order: Vec<i32> = snap.partitions.iter().map(|(k, _)| k.1).collect();
        assert_eq!(order, vec![0, 1, 3, 2]);
        assert_eq!(
            c.finish_incremental(id, 2, &answered, true).unwrap_err(),
            SessionError::InvalidEpoch
        );
        // An error is always sent, and the partition is sent again once it clears.
        let mut answered: Vec<_> = snap
            .partitions
            .iter()
            .map(|(k, _)| (k.clone(), quiet(5)))
            .collect();
        answered[2].1.high_watermark = 9;
        answered[0].1.error = true;
        let keep = c
            .finish_incremental(id, 3, &answered, true)
            .unwrap()
            .unwrap();
        assert_eq!(keep, vec![true, false, false, false]);
        let snap = c.begin_incremental(id, 3, false, vec![], &[], 3).unwrap();
        let answered: Vec<_> = snap
            .partitions
            .iter()
            .map(|(k, _)| (k.clone(), quiet(5)))
            .collect();
        // Without `update` nothing is remembered: the same answer is kept again.
        for _ in 0..2 {
            let keep = c
                .finish_incremental(id, 4, &answered, false)
                .unwrap()
                .unwrap();
            assert_eq!(keep, vec![true, false, true, false]);
        }
    }

    #[test]
    fn changed_and_forgotten_partitions_update_the_session() {
        let mut c = cache(10, 100);
        let id = c.create(0, false, false, parts(2));
        let snap = c
            .begin_incremental(
                id,
                1,
                false,
                vec![(key("t", 1), params(7)), (key("u", 0), params(3))],
                &[key("t", 0)],
                1,
            )
            .unwrap();
        let got: Vec<(i32, i64)> = snap
            .partitions
            .iter()
            .map(|(k, p)| (k.1, p.fetch_offset))
            .collect();
        assert_eq!(got, vec![(1, 7), (0, 3)]);
        assert_eq!(c.partitions_cached(), 2);
        let err = c
            .begin_incremental(id, 2, false, vec![], &[key("t", 1), key("u", 0)], 2)
            .unwrap_err();
        assert_eq!(err, SessionError::Emptied);
        assert!(!c.contains(id));
        assert_eq!(c.partitions_cached(), 0);
        assert_eq!(
            c.begin_incremental(id, 3, false, vec![], &[], 3)
                .unwrap_err(),
            SessionError::NotFound
        );
    }

    #[test]
    fn eviction_follows_kafka() {
        let mut c = cache(2, 1000);
        let small = c.create(0, false, false, parts(2));
        let big = c.create(0, false, false, parts(10));
        // Full, and both too young to evict: no session.
        assert_eq!(c.create(10, false, false, parts(50)), INVALID_SESSION_ID);
        // A privileged session may evict a young unprivileged one (the smallest).
        let follower = c.create(20, true, false, parts(1));
        assert!(follower > 0 && !c.contains(small) && c.contains(big));
        // Once old, a larger session evicts the smallest unprivileged one, not a larger one.
        c.begin_incremental(big, 1, false, vec![], &[], 1_500)
            .unwrap();
        c.begin_incremental(follower, 1, false, vec![], &[], 1_500)
            .unwrap();
        assert_eq!(c.create(1_600, false, false, parts(5)), INVALID_SESSION_ID);
        let larger = c.create(1_600, false, false, parts(20));
        assert!(larger > 0 && !c.contains(big) && c.contains(follower));
        // Unused for eviction_ms: evicted by anyone, whatever its size.
        c.begin_incremental(larger, 1, false, vec![], &[], 1_700)
            .unwrap();
        let tiny = c.create(2_600, false, false, parts(1));
        assert!(tiny > 0 && !c.contains(follower) && c.contains(larger));
        assert_eq!(c.evictions(), 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c.partitions_cached(), 21);
    }

    #[test]
    fn partition_bound_refuses_and_closes() {
        let mut c = cache(10, 10);
        assert_eq!(c.create(0, false, false, parts(11)), INVALID_SESSION_ID);
        let id = c.create(0, false, false, parts(8));
        assert_eq!(c.create(0, false, false, parts(3)), INVALID_SESSION_ID);
        let more: Vec<_> = (0..3).map(|p| (key("u", p), params(0))).collect();
        assert_eq!(
            c.begin_incremental(id, 1, false, more, &[], 1).unwrap_err(),
            SessionError::NotFound
        );
        assert!(c.is_empty());
        assert_eq!(c.partitions_cached(), 0);
        // A stale session makes room for a new one's partitions.
        let id = c.create(0, false, false, parts(8));
        let other = c.create(5_000, false, false, parts(3));
        assert!(other > 0 && !c.contains(id));
    }

    #[test]
    fn shares_split_the_broker_bounds_exactly() {
        let total: usize = (0..3)
            .map(|s| CacheLimits::for_shard(1000, 10, 1, s, 3).slots)
            .sum();
        assert_eq!(total, 1000);
        assert_eq!(CacheLimits::for_shard(1, 10, 1, 1, 2).slots, 0);
    }
}
