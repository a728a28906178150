//! Partition replication's building blocks, below the shards (which run them: see
//! `shard::replication`): Kafka's model (`ReplicaManager`, `Partition.scala`,
//! `AbstractFetcherThread`) with one difference, our stronger durability: a follower asks for
//! the next offset only after its previous append is fdatasync'd, so the offset a leader hears
//! from a follower is durable there, and the high watermark means "on disk on every in-sync
//! replica".
//!
//! - [`leader`]: a leader's view of its followers (fetch offsets, caught-up times), the high
//!   watermark over the ISR and the ISR changes to propose. Pure.
//! - [`partition`]: a replica's [`Role`] and the rules on its log (role from an assignment,
//!   high watermark, follower fetches, ISR proposals, a Fetch's epoch checks, acks=all).
//! - [`follower`]: a follower's handling of its leader's answers on its log (append, high
//!   watermark, truncation of a divergent suffix, out of range).
//! - [`client`]: a follower's Fetch connection to its leader (kafka-protocol over `rt::net`).
//!
//! `partition` and `follower` take the log and the role alone, so the shard and the
//! replication simulator (`tests/it/simulate_replication.rs`) run the same rules.
//!
//! This module imports neither `shard` nor `api` (the shard drives it).

pub mod client;
pub mod follower;
pub mod leader;
pub mod partition;

pub use partition::Role;
