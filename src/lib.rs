//! Freshet: a Kafka-wire-compatible event streaming broker, thread-per-core on io_uring.
//!
//! This crate is the broker; the crate graph above and below it is the architecture (see
//! `docs/ARCHITECTURE.md`): it depends on `freshet-protocol` (the wire protocol and the record
//! batch format, no I/O); the client, `freshet bench` and the admin CLI are the
//! `freshet-client` crate, which never depends on this one; `src/main.rs`, the `freshet`
//! binary, composes the two. The folder map:
//! - [`config`]: settings of the broker and of topics; every limit is named here.
//! - [`error`]: the one place where errors of every layer become Kafka error codes.
//! - [`protocol`]: request/response framing, the ApiVersions table, hand-framed Fetch
//!   responses. No I/O: the `freshet-protocol` crate, re-exported here under its old path.
//! - [`storage`]: durable partition logs on O_DIRECT files, group commit, recovery, retention.
//! - [`runtime`]: the composition root: starting and stopping the broker, each shard's life.
//! - [`shard`]: per-shard state, partition ownership and the cross-core router.
//! - [`server`]: accepting connections, the per-connection read loop, in-order responses.
//! - [`api`]: one file per Kafka API: decode, route to owning shards, assemble the answer.
//! - [`coordinator`]: cluster metadata (topics, partitions, configs), durable, on shard 0.
//! - [`start`]: `freshet start`: its flags, logging, settings, retries of a transient failure.
//! - [`tuning`]: `freshet tune`: host checks and settings, the disk probe and its profile.
//! - [`logging`]: the log writer: lines go to stderr through a bounded queue and a log thread,
//!   never from a shard thread (a slow stderr would stall the shard).
//! - [`fuzzing`]: the bodies of the `cargo fuzz` targets (`fuzz/`), shared with regression tests.
//! - [`metrics`]: per-shard counters, gathered and rendered for Prometheus when scraped.
//! - [`rt`]: the runtime seam: tasks, timers, locks, blocking calls and sockets, on glommio or
//!   on the deterministic simulated executor ([`rt::sim`]).
//! - [`security`]: Kafka's ACLs and the authorizer (pure; the handlers call it).
//! - [`os`]: the effective user, resource limits, disk space and the data-directory lock (rustix).

pub mod api;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod fuzzing;
pub mod logging;
pub mod metrics;
pub mod os;
pub mod replica;
pub mod rt;
pub mod runtime;
pub mod security;
/// The Kafka wire protocol, a crate of its own below the broker (`crates/freshet-protocol`).
pub use freshet_protocol as protocol;
pub mod server;
pub mod shard;
pub mod start;
pub mod storage;
pub mod tuning;
