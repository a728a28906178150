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
//!
//! This module imports neither `shard` nor `api` (the shard drives it).

pub mod client;
pub mod leader;
