//! Partition replication's building blocks, below the shards (which run them: see
//! `shard::replication`): Kafka's model (`ReplicaManager`, `Partition.scala`,
//! `AbstractFetcherThread`) with one difference, our stronger durability: a follower asks for
//! the next offset only after its previous append is fdatasync'd, so the offset a leader hears
//! from a follower is durable there, and the high watermark means "on disk on every in-sync
//! replica".
//!
//! - [`leader`]: a leader's view of its followers (fetch offsets, caught-up times), the high
//!   watermark over the ISR and the ISR changes to propose. Pure.
//! - [`client`]: a follower's Fetch connection to its leader (kafka-protocol over `rt::net`).
//! - [`min_insync_replicas`]: the topic's `min.insync.replicas` for acks=all.
//!
//! This module imports neither `shard` nor `api` (the shard drives it).

pub mod client;
pub mod leader;

use crate::coordinator::broker_config;
use crate::coordinator::metadata::ClusterMetadata;

/// A topic's `min.insync.replicas`: its override, else the cluster's dynamic broker default
/// (for `node_id`), else 1. A value that does not parse counts as 1 (configs are validated
/// when set).
pub fn min_insync_replicas(metadata: &ClusterMetadata, topic: &str, node_id: i32) -> i32 {
    let overrides = metadata
        .topics
        .get(topic)
        .map(|t| t.configs.clone())
        .unwrap_or_default();
    broker_config::with_topic_defaults(&overrides, &metadata.broker_configs, node_id)
        .get("min.insync.replicas")
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|v| *v >= 1)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::metadata::TopicMeta;

    /// The topic's override wins over the cluster default; without either it is 1.
    #[test]
    fn min_insync_replicas_comes_from_the_topic_then_the_cluster() {
        let mut m = ClusterMetadata::default();
        let mut t = TopicMeta {
            id: uuid::Uuid::nil(),
            partitions: 1,
            configs: Default::default(),
            internal: false,
            assignment: Vec::new(),
        };
        m.topics.insert("a".into(), t.clone());
        assert_eq!(min_insync_replicas(&m, "a", 0), 1);
        t.configs.insert("min.insync.replicas".into(), "2".into());
        m.topics.insert("b".into(), t);
        assert_eq!(min_insync_replicas(&m, "b", 0), 2);
        assert_eq!(min_insync_replicas(&m, "missing", 0), 1);
    }
}
