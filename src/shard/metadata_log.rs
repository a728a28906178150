//! The cluster metadata log: the topics, their ids, partitions and configs, the producer-id
//! blocks and the dynamic broker configs, kept as an [`InternalLog`] of
//! [`MetadataRecord`]s in `<data_dir>/internal/__cluster_metadata-0/` (Kafka's KRaft
//! `__cluster_metadata`, here without a quorum yet: the cluster issue puts this log under
//! Raft).
//!
//! - Records: one JSON [`MetadataRecord`] per Kafka record (no key). A change is decided by
//!   the pure state machine (`ClusterMetadata::record_for`: checks, new topic ids) and
//!   replayed by the pure `ClusterMetadata::replay`; the first record of a log, a migrated
//!   JSON document and every compaction are a `Snapshot` of the whole metadata.
//! - Startup ([`load_at_startup`]): the log is opened and replayed on a short-lived executor
//!   of its own on the main thread, before the shards start (every shard needs the metadata to
//!   open its partitions); then the coordinator shard opens it again for its appends
//!   ([`MetadataLog::open`]).
//! - Migration: a data directory from before this log has `cluster-metadata.json` (see
//!   `coordinator::store`). When the log is empty and that file exists, its content is
//!   appended to the log as a snapshot (fdatasync'd), and only then the file is renamed to
//!   `cluster-metadata.json.migrated` (kept, not deleted) and the directory fsync'd. A crash
//!   before the append is durable leaves the file and an empty log (migrated again at the next
//!   start); a crash after it leaves the log with the snapshot, which wins over the file (the
//!   rename is done then). The file is never read once the log holds a record.
//! - Changes (`Shard::change_metadata`, coordinator shard): the records of a request are
//!   appended in one append and the metadata is published only once it is durable; the log is
//!   compacted to one snapshot once it holds more than [`COMPACT_RECORDS_MIN`] records.
//!
//! Bounds: a snapshot or a request's records must fit [`METADATA_BATCH_BYTES_MAX`] (the
//! append fails with KAFKA_STORAGE_ERROR past it, nothing changes); the legacy JSON file is
//! read up to `coordinator::store::METADATA_FILE_BYTES_MAX`.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use bytes::{Buf, Bytes};
use kafka_protocol::records::RecordBatchDecoder;

use crate::coordinator::metadata::{ClusterMetadata, MetadataRecord};
use crate::coordinator::store;
use crate::storage::internal_log::{internal_log_dir, InternalLog, InternalLogLimits, RecordCodec};
use crate::storage::{StorageError, TailCache};
use freshet_protocol::batch::{self, Compression};

/// The metadata log's name under `<data_dir>/internal/`.
pub const METADATA_LOG_NAME: &str = "__cluster_metadata";
/// The log is compacted to one snapshot when it holds more than this many records.
pub const COMPACT_RECORDS_MIN: usize = 1_000;
pub use crate::coordinator::metadata::METADATA_BATCH_BYTES_MAX;

/// The metadata log's limits and compaction policy (the live state is one snapshot).
pub const METADATA_LOG_LIMITS: InternalLogLimits = InternalLogLimits {
    compact_records_min: COMPACT_RECORDS_MIN,
    compact_ratio: 1,
    batch_records_max: 1_000,
    batch_bytes_max: (METADATA_BATCH_BYTES_MAX / 2) as usize,
    max_message_bytes: METADATA_BATCH_BYTES_MAX,
    segment_bytes: 16 * 1024 * 1024,
};

/// Bytes of the executor's I/O memory for the startup load (the log's reads use it).
const STARTUP_IO_MEMORY_BYTES: usize = 1 << 20;
/// Bytes of tail cache for the startup load.
const STARTUP_TAIL_CACHE_BYTES: usize = 1 << 20;

/// The metadata log's directory under the data directory.
pub fn metadata_log_dir(data_dir: &Path) -> std::path::PathBuf {
    internal_log_dir(data_dir, METADATA_LOG_NAME)
}

/// The metadata log's records: one JSON [`MetadataRecord`] per Kafka record.
pub struct MetadataCodec;

impl RecordCodec for MetadataCodec {
    type Record = MetadataRecord;
    const NAME: &'static str = "metadata log";

    fn encode_batch(records: &[MetadataRecord], now_ms: i64) -> Result<Bytes, String> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let value = serde_json::to_vec(r).map_err(|e| e.to_string())?;
            out.push((None, Some(Bytes::from(value)), now_ms));
        }
        batch::encode_batch(&out, Compression::None)
    }

    fn decode_batches(mut bytes: Bytes) -> Result<(Vec<MetadataRecord>, i64), String> {
        let mut out = Vec::new();
        let mut next_offset = -1;
        while bytes.has_remaining() {
            let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| e.to_string())?;
            for record in set.records {
                next_offset = record.offset + 1;
                let value = record.value.ok_or("metadata record without a value")?;
                out.push(serde_json::from_slice(&value).map_err(|e| e.to_string())?);
            }
        }
        Ok((out, next_offset))
    }

    fn record_bytes(record: &MetadataRecord) -> usize {
        match record {
            // About the JSON of every topic and broker config.
            MetadataRecord::Snapshot { metadata } => {
                let topics: usize = metadata
                    .topics
                    .iter()
                    .map(|(n, t)| n.len() + 128 + config_bytes(&t.configs))
                    .sum();
                let brokers: usize = metadata.broker_configs.values().map(config_bytes).sum();
                let groups: usize = metadata
                    .group_configs
                    .iter()
                    .map(|(g, c)| g.len() + 64 + config_bytes(c))
                    .sum();
                let quotas: usize = metadata
                    .client_quotas
                    .iter()
                    .map(|(e, v)| 128 + e.name_bytes() + 64 * v.len())
                    .sum();
                let users: usize = metadata
                    .scram_credentials
                    .iter()
                    .map(|(u, m)| u.len() + m.len() * SCRAM_CREDENTIAL_JSON_BYTES)
                    .sum();
                let acls: usize = metadata.acls.iter().map(acl_bytes).sum();
                topics + brokers + groups + quotas + users + acls + 256
            }
            MetadataRecord::TopicCreated { name, topic } => {
                name.len() + 256 + config_bytes(&topic.configs)
            }
            MetadataRecord::TopicConfigsSet { name, configs }
            | MetadataRecord::BrokerConfigsSet {
                resource: name,
                configs,
            }
            | MetadataRecord::GroupConfigsSet {
                group: name,
                configs,
            } => name.len() + 128 + config_bytes(configs),
            MetadataRecord::TopicDeleted { name }
            | MetadataRecord::PartitionsCreated { name, .. } => name.len() + 128,
            MetadataRecord::ProducerIdBlockAllocated { .. }
            | MetadataRecord::BrokerFenced { .. }
            | MetadataRecord::BrokerUnfenced { .. } => 128,
            MetadataRecord::BrokerRegistered { registration } => {
                registration.host.len() + registration.rack.as_ref().map_or(0, String::len) + 256
            }
            MetadataRecord::PartitionChanged {
                topic, assignment, ..
            } => topic.len() + 192 + 12 * (assignment.replicas.len() + assignment.isr.len()),
            MetadataRecord::ClientQuotaSet { entity, values } => {
                256 + entity.name_bytes() + values.keys().map(|k| k.len() + 32).sum::<usize>()
            }
            MetadataRecord::UserScramCredentialSet { user, .. } => {
                user.len() + SCRAM_CREDENTIAL_JSON_BYTES
            }
            MetadataRecord::UserScramCredentialRemoved { user, .. } => user.len() + 128,
            MetadataRecord::AclCreated { acl } => acl_bytes(acl),
            MetadataRecord::AclsDeleted { acls } => acls.iter().map(acl_bytes).sum::<usize>() + 64,
        }
    }
}

/// About the JSON of one SCRAM credential (salt and two keys of up to 64 bytes, each byte
/// written as a number of up to 4 characters).
const SCRAM_CREDENTIAL_JSON_BYTES: usize = 1024;
fn acl_bytes(acl: &crate::security::acl::AclBinding) -> usize {
    acl.resource_name.len() + acl.principal.len() + acl.host.len() + 192
}

fn config_bytes(configs: &std::collections::BTreeMap<String, String>) -> usize {
    configs.iter().map(|(k, v)| k.len() + v.len() + 8).sum()
}

/// Opens the metadata log in `data_dir` and replays it: the metadata it holds, or `None`
/// for an empty log.
async fn replay(
    data_dir: &Path,
    cache: Rc<TailCache>,
) -> Result<(InternalLog<MetadataCodec>, Option<ClusterMetadata>), StorageError> {
    let mut metadata: Option<ClusterMetadata> = None;
    let log = InternalLog::<MetadataCodec>::open(
        &metadata_log_dir(data_dir),
        METADATA_LOG_LIMITS,
        cache,
        |record| replay_record(&mut metadata, record),
    )
    .await?;
    Ok((log, metadata))
}

/// Applies one record read back from the metadata log to the metadata replayed so far
/// (`None` before the first snapshot): what a load does for every record, in log order (the
/// simulator replays with it too).
pub fn replay_record(metadata: &mut Option<ClusterMetadata>, record: MetadataRecord) {
    *metadata = Some(match (&*metadata, record) {
        (_, MetadataRecord::Snapshot { metadata }) => metadata,
        (Some(current), change) => current.replay(&change),
        // A change before any snapshot: the log starts with one, so this is damage.
        (None, change) => {
            tracing::error!(?change, "metadata log: a change before the first snapshot");
            ClusterMetadata::default().replay(&change)
        }
    });
}

/// Loads the metadata at startup, migrating `cluster-metadata.json` into the log, or creating
/// a new cluster's metadata with `fresh` (see the module doc). Runs its own glommio executor
/// on a scoped thread (the shards are not started yet) and waits for it.
pub fn load_at_startup(
    data_dir: &Path,
    fresh: impl FnOnce() -> ClusterMetadata + Send,
) -> std::io::Result<ClusterMetadata> {
    crate::rt::run_on_own_thread("metadata-load", STARTUP_IO_MEMORY_BYTES, 64, || {
        load_or_migrate(data_dir, fresh)
    })
}

/// The startup load on the load executor: replay, else migrate the JSON, else create.
async fn load_or_migrate(
    data_dir: &Path,
    fresh: impl FnOnce() -> ClusterMetadata,
) -> std::io::Result<ClusterMetadata> {
    let storage = |e: StorageError| std::io::Error::other(format!("metadata log: {e}"));
    crate::storage::prime_disk(data_dir)
        .await
        .map_err(storage)?;
    let cache = TailCache::new(STARTUP_TAIL_CACHE_BYTES);
    let (log, replayed) = replay(data_dir, cache).await.map_err(storage)?;
    let result = async {
        if let Some(metadata) = replayed {
            // A crash after the migration's append and before its rename: finish it.
            if store::metadata_path(data_dir).exists() {
                store::mark_migrated(data_dir)?;
                tracing::info!("cluster-metadata.json was migrated before a crash; renamed now");
            }
            return Ok::<_, std::io::Error>(metadata);
        }
        let (metadata, migrating) = match store::load(data_dir)? {
            Some(metadata) => (metadata, true),
            None => (fresh(), false),
        };
        let snapshot = MetadataRecord::Snapshot {
            metadata: metadata.clone(),
        };
        log.append(vec![snapshot], crate::shard::now_ms(), |_| ())
            .await
            .map_err(storage)?;
        if migrating {
            store::mark_migrated(data_dir)?;
            tracing::info!(
                topics = metadata.topics.len(),
                "cluster-metadata.json migrated into the metadata log"
            );
        }
        Ok(metadata)
    }
    .await;
    let closed = log.close().await.map_err(storage);
    let metadata = result?;
    closed?;
    Ok(metadata)
}

/// A writer of the single-node metadata log as the broker kept it before the quorum. The
/// broker no longer writes it (changes go through the quorum's log, `cluster::raft_log`); it is
/// kept so tests can lay out a pre-quorum data directory and check that it starts unchanged.
#[derive(Default)]
pub struct MetadataLog {
    log: RefCell<Option<Rc<InternalLog<MetadataCodec>>>>,
}

impl MetadataLog {
    /// Opens the log for appends (coordinator shard, at startup). `published` is what the
    /// startup load gave every shard; the log must replay to the same.
    pub async fn open(
        &self,
        data_dir: &Path,
        cache: Rc<TailCache>,
        published: &ClusterMetadata,
    ) -> Result<(), StorageError> {
        let (log, replayed) = replay(data_dir, cache).await?;
        if replayed.as_ref() != Some(published) {
            let _ = log.close().await;
            return Err(StorageError::CorruptMessage(
                "the metadata log changed since the startup load".into(),
            ));
        }
        *self.log.borrow_mut() = Some(Rc::new(log));
        Ok(())
    }

    /// Appends the records of one metadata change (one append: all or nothing) and resolves
    /// once they are durable; then compacts the log to `after` (the metadata they make) if it
    /// has grown past [`COMPACT_RECORDS_MIN`]. The caller serializes changes.
    pub async fn append(
        &self,
        records: Vec<MetadataRecord>,
        after: &ClusterMetadata,
    ) -> Result<(), StorageError> {
        let log = self.log.borrow().clone().ok_or(StorageError::Closed)?;
        log.append(records, crate::shard::now_ms(), |_| ()).await?;
        let snapshot = || {
            vec![MetadataRecord::Snapshot {
                metadata: after.clone(),
            }]
        };
        if let Err(e) = log.compact_if_due(|| 1, snapshot).await {
            // The change is durable; the log is compacted on a later change.
            tracing::warn!(error = %e, "compacting the metadata log failed");
        }
        Ok(())
    }

    /// Flushes and closes the log (shutdown).
    pub async fn close(&self) {
        let log = self.log.borrow_mut().take();
        if let Some(log) = log {
            if let Err(e) = log.close().await {
                tracing::error!(error = %e, "closing the metadata log failed");
            }
        }
    }
}
