//! Committed offsets: the in-memory table and its record format in the internal offsets log.
//!
//! No I/O here. The coordinator shard keeps every commit in an internal log on the storage
//! engine (`<data_dir>/internal/__consumer_offsets-0/`, see `shard::groups`), as Kafka keeps
//! `__consumer_offsets`: one record per committed partition, key = (group, topic, partition),
//! value = the offset and its metadata, a null value (tombstone) for a deleted offset. The
//! table is rebuilt on start by replaying the log from the beginning; the last record of a key
//! wins.
//!
//! Record key: `u16 version (0) | u16 len | group | u16 len | topic | i32 partition`.
//! Record value: `u16 version (0) | i64 offset | i32 leader epoch | i64 commit time (ms) |
//! i32 len | metadata`. Big-endian, as Kafka's own records.
//!
//! Group metadata shares the log, as in Kafka's `__consumer_offsets`: key
//! `u16 version (1: classic group, 2: KIP-848 consumer group) | u16 len | group`, value
//! `u16 version (0) | JSON snapshot of the group` (see `group::ClassicGroupSnapshot` and
//! `consumer_group::ConsumerGroupSnapshot`), a null value when the group is gone.
//!
//! Offsets held for a transaction coordinated on another node share it too: key `u16 version
//! (3) | i64 producer id`, value `u16 version (0) | JSON` [`PendingChange`] (hold these offsets,
//! or release these keys). A marker's release and the commits it makes are one batch, so they
//! are durable together.
//!
//! The log is compacted by `shard::groups` (at startup and from the tick loop) when superseded
//! records dominate: the live offsets and group snapshots are rewritten at its end and the log
//! start moves past the rest.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;

use super::invariants::{debug_check, ensure, Violation};
use freshet_protocol::batch::{self, Compression, NewRecord};

/// Kafka's `offset.metadata.max.bytes` default.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;

/// What a group committed for one partition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// The key of a committed offset.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

/// One change to the table: a commit, or a deletion (`None`).
pub type OffsetChange = (OffsetKey, Option<CommittedOffset>);

/// Which group metadata a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupKind {
    Classic,
    Consumer,
}

impl GroupKind {
    fn key_version(self) -> u16 {
        match self {
            GroupKind::Classic => 1,
            GroupKind::Consumer => 2,
        }
    }
}

/// A group metadata record: its kind, the group id, and the snapshot (`None`: the group is gone).
pub type GroupRecord = (GroupKind, String, Option<Bytes>);

/// One record of the offsets log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogRecord {
    Offset(OffsetChange),
    Group(GroupRecord),
    /// Offsets held for a producer's transaction coordinated on another node (see
    /// [`PendingTxnOffsets`]), or released by its marker.
    Pending(i64, PendingChange),
}

/// A change to the offsets a group coordinator holds for one producer's transaction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PendingChange {
    /// TxnOffsetCommit: these offsets are held (the latest of a key wins).
    Hold(Vec<(OffsetKey, CommittedOffset)>),
    /// The transaction's marker: these keys are no longer held (committed by `Offset` records
    /// of the same batch, or dropped).
    Release(Vec<OffsetKey>),
}

/// How a group's committed offsets expire (Kafka's `OffsetExpirationCondition`), given
/// `offsets.retention.minutes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Nothing expires (a group rebalancing, or one whose subscriptions are unknown).
    Never,
    /// Every offset, once the retention passed since `since_ms` (when the group became Empty;
    /// `None`: each offset's commit time).
    All { since_ms: Option<i64> },
    /// Offsets of topics not in the set, each once the retention passed since its commit (an
    /// empty set: a group without group management, or a consumer group without members).
    Unsubscribed(std::collections::BTreeSet<String>),
}

/// Every committed offset of the broker, by group then (topic, partition). Lives on the
/// coordinator shard.
#[derive(Debug, Default)]
pub struct Offsets {
    groups: BTreeMap<String, BTreeMap<(String, i32), CommittedOffset>>,
}

impl Offsets {
    /// Applies a commit or a deletion.
    pub fn apply(&mut self, change: OffsetChange) {
        let group = change.0.group.clone();
        self.apply_unchecked(change);
        // Only the touched group's entry: a whole-table check per commit would be quadratic
        // while the log replays at start.
        debug_check(|| {
            ensure!(
                self.groups.get(&group).is_none_or(|g| !g.is_empty()),
                "group {group} kept with no offsets"
            );
            Ok(())
        });
    }

    /// The invariants of the table: a group is listed only while it has a committed offset
    /// (so [`Offsets::group_ids`] and [`Offsets::has_group`] mean "has offsets"), and every
    /// key fits the record format (group and topic at most `u16::MAX` bytes), so that
    /// [`encode_key`] can write it back at compaction.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        for (group, offsets) in &self.groups {
            ensure!(!offsets.is_empty(), "group {group} kept with no offsets");
            ensure!(
                group.len() <= usize::from(u16::MAX),
                "group id of {} bytes",
                group.len()
            );
            for (topic, partition) in offsets.keys() {
                ensure!(
                    topic.len() <= usize::from(u16::MAX),
                    "{group}: topic name of {} bytes ({partition})",
                    topic.len()
                );
            }
        }
        Ok(())
    }

    /// [`Offsets::apply`] without the debug check.
    fn apply_unchecked(&mut self, change: OffsetChange) {
        let (key, value) = change;
        match value {
            Some(v) => {
                self.groups
                    .entry(key.group)
                    .or_default()
                    .insert((key.topic, key.partition), v);
            }
            None => {
                if let Some(g) = self.groups.get_mut(&key.group) {
                    g.remove(&(key.topic, key.partition));
                    if g.is_empty() {
                        self.groups.remove(&key.group);
                    }
                }
            }
        }
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.groups.get(group)?.get(&(topic.to_string(), partition))
    }

    /// Every committed offset of `group`, in (topic, partition) order.
    pub fn of_group(&self, group: &str) -> Vec<((String, i32), CommittedOffset)> {
        self.groups
            .get(group)
            .map(|g| g.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// The keys of every committed offset of `topics`, in any group.
    pub fn of_topics(&self, topics: &[String]) -> Vec<OffsetKey> {
        let mut keys = Vec::new();
        for (group, offsets) in &self.groups {
            for (topic, partition) in offsets.keys() {
                if topics.contains(topic) {
                    keys.push(OffsetKey {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    });
                }
            }
        }
        keys
    }

    /// Number of committed offsets (all groups).
    pub fn len(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Every committed offset as a change that recreates it (a compaction snapshot).
    pub fn all_changes(&self) -> Vec<OffsetChange> {
        let mut out = Vec::with_capacity(self.len());
        for (group, offsets) in &self.groups {
            for ((topic, partition), value) in offsets {
                out.push((
                    OffsetKey {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    },
                    Some(value.clone()),
                ));
            }
        }
        out
    }

    /// The offsets that expired at `now_ms` with `retention_ms`, under each group's `policy`.
    pub fn expired(
        &self,
        now_ms: i64,
        retention_ms: i64,
        policy: impl Fn(&str) -> Expiry,
    ) -> Vec<OffsetKey> {
        let mut out = Vec::new();
        for (group, offsets) in &self.groups {
            let expiry = policy(group);
            for ((topic, partition), value) in offsets {
                let base = match &expiry {
                    Expiry::Never => continue,
                    Expiry::All { since_ms } => since_ms.unwrap_or(value.commit_timestamp_ms),
                    Expiry::Unsubscribed(subscribed) if subscribed.contains(topic) => continue,
                    Expiry::Unsubscribed(_) => value.commit_timestamp_ms,
                };
                if now_ms.saturating_sub(base) >= retention_ms {
                    out.push(OffsetKey {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    });
                }
            }
        }
        out
    }

    /// Groups with at least one committed offset.
    pub fn group_ids(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// Forgets the committed offsets of every group `unloaded` names (their coordinator moved
    /// to another broker); nothing is written.
    pub fn unload(&mut self, unloaded: impl Fn(&str) -> bool) {
        self.groups.retain(|group, _| !unloaded(group));
    }
}

fn put_str16(buf: &mut BytesMut, s: &str) {
    assert!(s.len() <= usize::from(u16::MAX), "checked by the caller");
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

fn get_str16(buf: &mut Bytes) -> Result<String, String> {
    if buf.remaining() < 2 {
        return Err("truncated string length".into());
    }
    let len = usize::from(buf.get_u16());
    if buf.remaining() < len {
        return Err("truncated string".into());
    }
    String::from_utf8(buf.split_to(len).to_vec()).map_err(|e| e.to_string())
}

/// The record key of `key`.
pub fn encode_key(key: &OffsetKey) -> Bytes {
    let mut buf = BytesMut::with_capacity(10 + key.group.len() + key.topic.len());
    buf.put_u16(0);
    put_str16(&mut buf, &key.group);
    put_str16(&mut buf, &key.topic);
    buf.put_i32(key.partition);
    buf.freeze()
}

/// The record value of `value`.
pub fn encode_value(value: &CommittedOffset) -> Bytes {
    let mut buf = BytesMut::with_capacity(26 + value.metadata.len());
    buf.put_u16(0);
    buf.put_i64(value.offset);
    buf.put_i32(value.leader_epoch);
    buf.put_i64(value.commit_timestamp_ms);
    buf.put_i32(value.metadata.len() as i32);
    buf.put_slice(value.metadata.as_bytes());
    buf.freeze()
}

fn decode_key(mut buf: Bytes) -> Result<OffsetKey, String> {
    if buf.remaining() < 2 || buf.get_u16() != 0 {
        return Err("unknown offset key version".into());
    }
    let group = get_str16(&mut buf)?;
    let topic = get_str16(&mut buf)?;
    if buf.remaining() != 4 {
        return Err("bad offset key length".into());
    }
    Ok(OffsetKey {
        group,
        topic,
        partition: buf.get_i32(),
    })
}

fn decode_value(mut buf: Bytes) -> Result<CommittedOffset, String> {
    if buf.remaining() < 26 || buf.get_u16() != 0 {
        return Err("unknown or truncated offset value".into());
    }
    let offset = buf.get_i64();
    let leader_epoch = buf.get_i32();
    let commit_timestamp_ms = buf.get_i64();
    let len = buf.get_i32();
    if len < 0 || buf.remaining() != len as usize {
        return Err("bad offset metadata length".into());
    }
    let metadata = String::from_utf8(buf.to_vec()).map_err(|e| e.to_string())?;
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

/// One record batch (magic v2, uncompressed) holding `changes`, ready for
/// `PartitionLog::append` (which assigns the offsets).
pub fn encode_batch(changes: &[OffsetChange], now_ms: i64) -> Result<Bytes, String> {
    let records: Vec<LogRecord> = changes.iter().cloned().map(LogRecord::Offset).collect();
    encode_records(&records, now_ms)
}

/// One record batch holding `records` (offsets and group metadata).
pub fn encode_records(records: &[LogRecord], now_ms: i64) -> Result<Bytes, String> {
    assert!(!records.is_empty());
    let records: Vec<NewRecord> = records
        .iter()
        .map(|record| match record {
            LogRecord::Offset((key, value)) => (
                Some(encode_key(key)),
                value.as_ref().map(encode_value),
                now_ms,
            ),
            LogRecord::Group((kind, group, snapshot)) => {
                let mut key = BytesMut::with_capacity(4 + group.len());
                key.put_u16(kind.key_version());
                put_str16(&mut key, group);
                let value = snapshot.as_ref().map(|json| {
                    let mut v = BytesMut::with_capacity(2 + json.len());
                    v.put_u16(0);
                    v.put_slice(json);
                    v.freeze()
                });
                (Some(key.freeze()), value, now_ms)
            }
            LogRecord::Pending(producer_id, change) => {
                let mut key = BytesMut::with_capacity(10);
                key.put_u16(PENDING_KEY_VERSION);
                key.put_i64(*producer_id);
                let mut value = BytesMut::new();
                value.put_u16(0);
                // A plain struct of strings and numbers: serializing it cannot fail.
                let json = serde_json::to_vec(change).expect("pending offsets as JSON");
                value.put_slice(&json);
                (Some(key.freeze()), Some(value.freeze()), now_ms)
            }
        })
        .collect();
    batch::encode_batch(&records, Compression::None)
}

fn decode_record(mut key: Bytes, value: Option<Bytes>) -> Result<LogRecord, String> {
    if key.remaining() < 2 {
        return Err("truncated record key".into());
    }
    let kind = match u16::from_be_bytes([key[0], key[1]]) {
        0 => {
            let key = decode_key(key)?;
            return Ok(LogRecord::Offset((
                key,
                value.map(decode_value).transpose()?,
            )));
        }
        1 => GroupKind::Classic,
        2 => GroupKind::Consumer,
        PENDING_KEY_VERSION => return decode_pending(key, value),
        v => return Err(format!("unknown record key version {v}")),
    };
    key.advance(2);
    let group = get_str16(&mut key)?;
    if key.has_remaining() {
        return Err("bad group key length".into());
    }
    let snapshot = match value {
        None => None,
        Some(mut v) => {
            if v.remaining() < 2 || v.get_u16() != 0 {
                return Err("unknown group value version".into());
            }
            Some(v)
        }
    };
    Ok(LogRecord::Group((kind, group, snapshot)))
}

/// The key version of a [`LogRecord::Pending`].
const PENDING_KEY_VERSION: u16 = 3;

fn decode_pending(mut key: Bytes, value: Option<Bytes>) -> Result<LogRecord, String> {
    if key.remaining() != 10 {
        return Err("bad pending offsets key length".into());
    }
    key.advance(2);
    let producer_id = key.get_i64();
    let mut value = value.ok_or("pending offsets without a value")?;
    if value.remaining() < 2 || value.get_u16() != 0 {
        return Err("unknown pending offsets value version".into());
    }
    let change = serde_json::from_slice(&value).map_err(|e| e.to_string())?;
    Ok(LogRecord::Pending(producer_id, change))
}

/// The changes in whole batches read back from the offsets log, and the offset after the last
/// record.
pub fn decode_batches(mut bytes: Bytes) -> Result<(Vec<LogRecord>, i64), String> {
    let mut changes = Vec::new();
    let mut next_offset = -1;
    while bytes.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| e.to_string())?;
        for record in set.records {
            next_offset = record.offset + 1;
            let key = record.key.ok_or("offset record without a key")?;
            changes.push(decode_record(key, record.value)?);
        }
    }
    Ok((changes, next_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> OffsetKey {
        OffsetKey {
            group: "g".into(),
            topic: "t".into(),
            partition: p,
        }
    }

    fn value(o: i64) -> CommittedOffset {
        CommittedOffset {
            offset: o,
            leader_epoch: -1,
            metadata: "meta".into(),
            commit_timestamp_ms: 7,
        }
    }

    /// Commits and deletions survive the trip through a record batch, and replaying them in
    /// order gives the table back (last record of a key wins).
    #[test]
    fn batch_round_trip_and_replay() {
        let changes = vec![(key(0), Some(value(5))), (key(1), Some(value(9)))];
        let later = vec![(key(0), Some(value(6))), (key(1), None)];
        let mut log = BytesMut::new();
        log.extend_from_slice(&encode_batch(&changes, 1).unwrap());
        log.extend_from_slice(&encode_batch(&later, 2).unwrap());
        let group = LogRecord::Group((GroupKind::Consumer, "g".into(), Some(Bytes::from("{}"))));
        let gone = LogRecord::Group((GroupKind::Classic, "h".into(), None));
        log.extend_from_slice(&encode_records(&[group.clone(), gone.clone()], 3).unwrap());
        let (decoded, _) = decode_batches(log.freeze()).unwrap();
        assert_eq!(decoded.len(), 6);
        assert_eq!(decoded[3], LogRecord::Offset((key(1), None)));
        assert_eq!(decoded[4], group);
        assert_eq!(decoded[5], gone);
        let mut table = Offsets::default();
        for c in decoded {
            if let LogRecord::Offset(c) = c {
                table.apply(c);
            }
        }
        assert_eq!(table.get("g", "t", 0), Some(&value(6)));
        assert_eq!(table.get("g", "t", 1), None);
        assert_eq!(table.group_ids(), vec!["g".to_string()]);
        assert_eq!(table.of_topics(&["t".to_string()]), vec![key(0)]);
        assert!(table.of_topics(&["other".to_string()]).is_empty());
        table.apply((key(0), None));
        assert!(!table.has_group("g"));
    }

    /// Kafka's expiry conditions: an Empty group's offsets all go once the retention passed
    /// since it became empty; a group without group management loses each offset by its own
    /// commit time; a stable consumer group only offsets of topics it no longer subscribes to;
    /// a rebalancing group none.
    #[test]
    fn expiry_follows_each_groups_condition() {
        let mut table = Offsets::default();
        let at = |group: &str, topic: &str, committed: i64| {
            (
                OffsetKey {
                    group: group.into(),
                    topic: topic.into(),
                    partition: 0,
                },
                Some(CommittedOffset {
                    commit_timestamp_ms: committed,
                    ..value(1)
                }),
            )
        };
        for change in [
            at("empty", "t", 0),
            at("simple", "old", 0),
            at("simple", "new", 90),
            at("stable", "t", 0),
            at("stable", "dropped", 0),
            at("busy", "t", 0),
        ] {
            table.apply(change);
        }
        let policy = |g: &str| match g {
            "empty" => Expiry::All { since_ms: Some(50) },
            "stable" => Expiry::Unsubscribed(["t".to_string()].into()),
            "busy" => Expiry::Never,
            _ => Expiry::Unsubscribed(Default::default()),
        };
        let names = |keys: Vec<OffsetKey>| -> Vec<String> {
            keys.into_iter()
                .map(|k| format!("{}/{}", k.group, k.topic))
                .collect()
        };
        // Retention 100: at 120 only offsets committed at 0 of the non-empty groups are old
        // enough; the empty group became empty at 50.
        assert_eq!(
            names(table.expired(120, 100, policy)),
            ["simple/old", "stable/dropped"]
        );
        assert_eq!(
            names(table.expired(200, 100, policy)),
            ["empty/t", "simple/new", "simple/old", "stable/dropped"]
        );
    }

    /// Many changes make exactly one batch with base offset 0, as `PartitionLog::append`
    /// requires of a produced batch.
    #[test]
    fn many_changes_make_one_valid_batch() {
        let changes: Vec<OffsetChange> = (0..50).map(|p| (key(p), Some(value(1)))).collect();
        let bytes = encode_batch(&changes, 1).unwrap();
        let h = freshet_protocol::batch::validate(&bytes).expect("one whole valid batch");
        assert_eq!(h.base_offset(), 0);
        assert_eq!(h.records_count(), 50);
    }

    /// A truncated record value is an error, not a panic.
    #[test]
    fn truncated_value_is_an_error() {
        assert!(decode_value(Bytes::from_static(&[0, 0, 1])).is_err());
        assert!(decode_key(Bytes::from_static(&[0, 0, 0, 9, b'g'])).is_err());
        assert!(decode_record(Bytes::from_static(&[0, 7]), None).is_err());
        assert!(decode_record(Bytes::from_static(&[0, 1, 0, 1, b'g', 0]), None).is_err());
        assert!(decode_record(
            Bytes::from_static(&[0, 2, 0, 1, b'g']),
            Some(Bytes::from_static(&[0]))
        )
        .is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random commits and deletions over a few groups, topics and partitions: after every
        /// step the invariants hold and the table equals a plain map of the last value per
        /// key; replaying `all_changes` into an empty table gives the same table (compaction).
        #[test]
        fn random_changes_match_a_model(
            changes in proptest::collection::vec(
                (0..3u8, 0..2u8, 0..3i32, proptest::option::of(0..100i64)),
                1..80,
            )
        ) {
            let mut table = Offsets::default();
            let mut model: BTreeMap<OffsetKey, CommittedOffset> = BTreeMap::new();
            for (g, t, p, offset) in changes {
                let key = OffsetKey { group: format!("g{g}"), topic: format!("t{t}"), partition: p };
                let value = offset.map(value);
                match &value {
                    Some(v) => model.insert(key.clone(), v.clone()),
                    None => model.remove(&key),
                };
                table.apply((key, value));
                if let Err(v) = table.check_invariants() {
                    proptest::prop_assert!(false, "{v}");
                }
                proptest::prop_assert_eq!(table.len(), model.len());
                for (k, v) in &model {
                    proptest::prop_assert_eq!(table.get(&k.group, &k.topic, k.partition), Some(v));
                }
                let groups: std::collections::BTreeSet<String> =
                    model.keys().map(|k| k.group.clone()).collect();
                proptest::prop_assert_eq!(table.group_ids(), groups.into_iter().collect::<Vec<_>>());
            }
            let mut replayed = Offsets::default();
            for c in table.all_changes() {
                replayed.apply(c);
            }
            proptest::prop_assert_eq!(replayed.all_changes(), table.all_changes());
        }
    }
}

/// The most offsets a group coordinator holds for transactions coordinated on other nodes
/// (about 200 bytes each plus the names: some tens of MiB at the limit).
pub const PENDING_TXN_OFFSETS_MAX: usize = 100_000;

/// Offsets sent with TxnOffsetCommit for a transaction whose coordinator is on another node,
/// held by the group coordinator until the transaction's marker for the group's
/// `__consumer_offsets` partition arrives (Kafka's `pendingTransactionalOffsetCommits`), then
/// committed or dropped. Keyed by producer id, as Kafka's; the latest TxnOffsetCommit of a key
/// wins. Durable: every change is a [`LogRecord::Pending`] of the offsets log, applied here
/// ([`PendingTxnOffsets::apply`]) once written and again at replay. At most
/// [`PENDING_TXN_OFFSETS_MAX`] entries ([`PendingTxnOffsets::fits`] is asked before a hold is
/// written).
#[derive(Debug, Default)]
pub struct PendingTxnOffsets {
    by_producer: BTreeMap<i64, BTreeMap<OffsetKey, CommittedOffset>>,
    entries: usize,
}

impl PendingTxnOffsets {
    pub fn new() -> PendingTxnOffsets {
        PendingTxnOffsets::default()
    }

    /// Would holding `offsets` for `producer_id` stay within the bound?
    pub fn fits(&self, producer_id: i64, offsets: &[(OffsetKey, CommittedOffset)]) -> bool {
        let held = self.by_producer.get(&producer_id);
        let new = offsets
            .iter()
            .filter(|(k, _)| !held.is_some_and(|h| h.contains_key(k)))
            .count();
        self.entries + new <= PENDING_TXN_OFFSETS_MAX
    }

    /// Applies a change written to (or replayed from) the offsets log.
    pub fn apply(&mut self, producer_id: i64, change: PendingChange) {
        match change {
            PendingChange::Hold(offsets) => {
                let held = self.by_producer.entry(producer_id).or_default();
                for (k, v) in offsets {
                    if held.insert(k, v).is_none() {
                        self.entries += 1;
                    }
                }
            }
            PendingChange::Release(keys) => {
                let Some(held) = self.by_producer.get_mut(&producer_id) else {
                    return;
                };
                for k in keys {
                    if held.remove(&k).is_some() {
                        self.entries -= 1;
                    }
                }
                if held.is_empty() {
                    self.by_producer.remove(&producer_id);
                }
            }
        }
    }

    /// The offsets `producer_id`'s marker ends: those held for the groups `in_partition`
    /// accepts (the groups of one `__consumer_offsets` partition). Nothing changes until the
    /// release is written and applied.
    pub fn for_marker(
        &self,
        producer_id: i64,
        in_partition: impl Fn(&str) -> bool,
    ) -> Vec<(OffsetKey, CommittedOffset)> {
        self.by_producer
            .get(&producer_id)
            .into_iter()
            .flatten()
            .filter(|(k, _)| in_partition(&k.group))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Forgets the offsets held for the groups `unloaded` names (their coordinator moved to
    /// another broker, which replays them from its log); nothing is written.
    pub fn unload(&mut self, unloaded: impl Fn(&str) -> bool) {
        let mut removed = 0;
        self.by_producer.retain(|_, held| {
            let before = held.len();
            held.retain(|k, _| !unloaded(&k.group));
            removed += before - held.len();
            !held.is_empty()
        });
        self.entries -= removed;
    }

    /// The records that rebuild this table (a compaction of the offsets log).
    pub fn records(&self) -> Vec<LogRecord> {
        self.by_producer
            .iter()
            .map(|(pid, held)| {
                let offsets = held.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                LogRecord::Pending(*pid, PendingChange::Hold(offsets))
            })
            .collect()
    }

    /// Producers with offsets held (the live records of [`Self::records`]).
    pub fn producers(&self) -> usize {
        self.by_producer.len()
    }

    /// Every key with an offset pending (OffsetFetch with `require_stable` answers
    /// UNSTABLE_OFFSET_COMMIT for them).
    pub fn keys(&self) -> impl Iterator<Item = &OffsetKey> {
        self.by_producer.values().flat_map(|m| m.keys())
    }

    /// Offsets held.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }
}

#[cfg(test)]
mod pending_tests {
    use super::*;

    fn offset(group: &str, partition: i32, value: i64) -> (OffsetKey, CommittedOffset) {
        (
            OffsetKey {
                group: group.into(),
                topic: "t".into(),
                partition,
            },
            CommittedOffset {
                offset: value,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            },
        )
    }

    fn hold(offsets: Vec<(OffsetKey, CommittedOffset)>) -> PendingChange {
        PendingChange::Hold(offsets)
    }

    /// Unloading a `__consumer_offsets` partition's groups forgets their committed and held
    /// offsets only, and keeps the count of held offsets right.
    #[test]
    fn unload_forgets_only_the_named_groups() {
        let mut p = PendingTxnOffsets::new();
        p.apply(1, hold(vec![offset("a", 0, 5), offset("b", 0, 6)]));
        p.apply(2, hold(vec![offset("a", 1, 9)]));
        p.unload(|g| g == "a");
        assert_eq!(p.len(), 1);
        assert_eq!(p.producers(), 1);
        assert_eq!(p.for_marker(1, |_| true), vec![offset("b", 0, 6)]);
        assert!(p.for_marker(2, |_| true).is_empty());
        let mut table = Offsets::default();
        for (k, v) in [offset("a", 0, 1), offset("b", 0, 2), offset("b", 1, 3)] {
            table.apply((k, Some(v)));
        }
        table.unload(|g| g == "b");
        assert_eq!(table.group_ids(), vec!["a".to_string()]);
        assert_eq!(table.len(), 1);
        table.check_invariants().unwrap();
    }

    /// A marker ends the producer's offsets of its partition's groups only; the latest offset
    /// of a key wins; releases apply once; the count follows.
    #[test]
    fn markers_end_the_offsets_of_their_groups() {
        let mut p = PendingTxnOffsets::new();
        p.apply(1, hold(vec![offset("a", 0, 5), offset("b", 0, 6)]));
        p.apply(1, hold(vec![offset("a", 0, 7)]));
        p.apply(2, hold(vec![offset("a", 1, 9)]));
        assert_eq!(p.len(), 3);
        assert_eq!(p.keys().count(), 3);
        let done = p.for_marker(1, |g| g == "a");
        assert_eq!(done, vec![offset("a", 0, 7)]);
        assert_eq!(p.len(), 3, "nothing changes before the release");
        let keys: Vec<OffsetKey> = done.into_iter().map(|(k, _)| k).collect();
        p.apply(1, PendingChange::Release(keys.clone()));
        p.apply(1, PendingChange::Release(keys));
        assert_eq!(p.len(), 2);
        assert_eq!(p.for_marker(2, |g| g == "b"), vec![]);
        assert_eq!(p.for_marker(3, |_| true), vec![]);
        assert_eq!(p.producers(), 2);
    }

    /// The table's records rebuild it; pending records round-trip through a batch.
    #[test]
    fn records_rebuild_the_table_and_round_trip() {
        let mut p = PendingTxnOffsets::new();
        p.apply(1, hold(vec![offset("a", 0, 5), offset("b", 0, 6)]));
        p.apply(9, hold(vec![offset("a", 1, 9)]));
        let records = p.records();
        let batch = encode_records(&records, 1).unwrap();
        let (decoded, next) = decode_batches(batch).unwrap();
        assert_eq!(decoded, records);
        assert_eq!(next, records.len() as i64);
        let mut again = PendingTxnOffsets::new();
        for r in decoded {
            let LogRecord::Pending(pid, change) = r else {
                panic!("{r:?}")
            };
            again.apply(pid, change);
        }
        assert_eq!(again.records(), records);
        assert_eq!(again.len(), 3);
        let release = LogRecord::Pending(1, PendingChange::Release(vec![offset("a", 0, 0).0]));
        let (decoded, _) =
            decode_batches(encode_records(std::slice::from_ref(&release), 1).unwrap()).unwrap();
        assert_eq!(decoded, vec![release]);
    }

    /// Past the bound a hold does not fit; replacing held keys still does.
    #[test]
    fn the_table_is_bounded() {
        let mut p = PendingTxnOffsets::new();
        let many: Vec<_> = (0..PENDING_TXN_OFFSETS_MAX as i32)
            .map(|i| offset("g", i, 1))
            .collect();
        assert!(p.fits(1, &many));
        p.apply(1, hold(many));
        assert!(!p.fits(2, &[offset("g", -1, 1)]));
        assert!(p.fits(1, &[offset("g", 0, 2)]));
        assert_eq!(p.len(), PENDING_TXN_OFFSETS_MAX);
    }
}
