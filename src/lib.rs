//! Freshet: a Kafka-wire-compatible event streaming broker, thread-per-core on io_uring.
//!
//! The folder map is the architecture (see `docs/ARCHITECTURE.md`):
//! - [`config`]: settings of the broker and of topics; every limit is named here.
//! - [`error`]: the one place where errors of every layer become Kafka error codes.
//! - [`protocol`]: request/response framing, the ApiVersions table, hand-framed Fetch
//!   responses. No I/O.
//! - [`storage`]: durable partition logs on O_DIRECT files, group commit, recovery, retention.
//! - [`shard`]: shard startup, partition ownership and the cross-core router.
//! - [`server`]: accepting connections, the per-connection read loop, in-order responses.
//! - [`api`]: one file per Kafka API: decode, route to owning shards, assemble the answer.
//! - [`coordinator`]: cluster metadata (topics, partitions, configs), durable, on shard 0.
//! - [`fuzzing`]: the bodies of the `cargo fuzz` targets (`fuzz/`), shared with regression tests.
//! - [`metrics`]: per-shard counters, gathered and rendered for Prometheus when scraped.

pub mod api;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod fuzzing;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod storage;
