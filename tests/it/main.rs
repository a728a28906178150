//! Freshet's Rust integration tests, linked into this one test binary (`it`).
//!
//! Each file in `tests/it/` is a module of this binary, so cargo compiles and links the
//! `freshet` crate and the heavy dev-dependencies (rdkafka, tokio, proptest) into one
//! executable instead of one per file: one link step in CI instead of twenty. Tests keep their
//! names with the file as a prefix: `cargo test --test it -- storage_crash::` runs one file,
//! `cargo test --test it -- cli::topic_and_cluster` the tests whose names contain that, and
//! `cargo test --test it -- --list` lists them all.
//!
//! The harnesses stay where they were, so a file outside this binary can still use them:
//! `tests/common/` starts the real `freshet` binary (`TestBroker`, `RawConn`, `within`,
//! `wait_until`, `skip`), `tests/storage_common/` drives the storage engine in-process. Here
//! they are `crate::common` and `crate::storage_common`.
//!
//! # Adding a test file
//!
//! 1. Put it in `tests/it/` (`git mv tests/<area>_<topic>.rs tests/it/` for a file written
//!    as its own test binary).
//! 2. Replace its `mod common;` with `use crate::common;` (or `mod storage_common;` with
//!    `use crate::storage_common;`; `#[path = "storage_common/mod.rs"] mod common;` becomes
//!    `use crate::storage_common as common;`). Nothing else in the file changes.
//! 3. Add `mod <area>_<topic>;` below, in alphabetical order.
//! 4. A test that re-runs this executable as a child process (`std::env::current_exe()`) must
//!    name the child test with its module path, e.g. `storage_crash::crash_child_entry`.
//! 5. Check: `cargo test --test it -- <area>_<topic>::` runs its tests, and
//!    `cargo test --test it -- --list | grep -c ': test$'` grew by their number.
//!
//! All modules run in one process, `--test-threads` at a time (default: one per CPU), so a
//! test must not change process-wide state (environment variables, the current directory,
//! signal dispositions, rlimits) without doing it in a child process, as `storage_ioerror`
//! does for RLIMIT_FSIZE.

#[path = "../common/mod.rs"]
#[macro_use]
mod common;
#[path = "../storage_common/mod.rs"]
mod storage_common;

mod acl_authz;
mod acl_gaps;
mod admin_metrics;
mod bad_input;
mod bench;
mod bench_cpu;
mod broker_compaction;
mod broker_exactly_once;
mod broker_groups;
mod broker_process;
mod broker_rdkafka;
mod cli;
mod cluster;
mod cluster_cli;
mod cluster_listeners;
mod cluster_placement;
mod cluster_routing;
mod cluster_transport;
mod conn_limits;
mod conn_rate;
mod controller_tls;
mod coord_cluster;
mod coord_failover;
mod coord_metadata_log;
mod diskrec_recovery;
mod enospc;
mod epochs_broker;
mod faults;
mod fetch_from_follower;
mod fetch_sessions;
mod fetchadmin_admin;
mod fetchadmin_configs;
mod fetchadmin_fetch;
mod groups_limits;
mod http_console;
mod http_push;
mod http_share;
mod http_topic;
mod http_websocket;
mod inter_broker_auth;
mod layering;
mod log_output;
mod newuser_cli;
mod newuser_readme;
mod oauth;
mod partitions_fd_emfile;
mod partitions_fd_pool;
mod partitions_limits;
mod quorum_log;
mod quorum_node;
mod quota_cli;
mod quota_enforce;
mod reassign;
mod repl_control;
mod replication;
mod share_cluster;
mod share_groups;
mod share_rdk_findings;
mod sim_runner;
mod simulate;
mod simulate_compact;
mod simulate_internal;
mod simulate_quorum;
mod simulate_replication;
mod slow_disk;
mod stalls;
mod storage_compact;
mod storage_crash;
mod storage_epochs;
mod storage_ioerror;
mod storage_log;
mod storage_producer;
mod storage_prop;
mod storage_read_check;
mod storage_replica;
mod storage_txn_index;
mod stress;
mod tls_sasl;
mod tuning;
mod txn_cluster;
mod txn_failover;
mod txn_pipelined;
mod user_cli;
mod validate_cleaner_bomb;
mod validate_records;
