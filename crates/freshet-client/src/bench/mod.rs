//! `freshet bench`: a load generator for any Kafka-compatible broker, in the spirit of the
//! OpenMessaging Benchmark.
//!
//! - [`workload`]: what to run (flags or a TOML/JSON file).
//! - [`latency`]: the clock, the send schedule, recording against the intended send time
//!   (coordinated omission), percentiles.
//! - [`run`]: producer and consumer threads over [the client](crate), sampling, the summary.
//! - [`report`]: the percentile table, the JSON summary, the HdrHistogram interval log.
//! - [`plot`]: SVG charts (latency by percentile, throughput over time, sweep results).
//! - [`sweep`]: capacity planning: raise the rate until a latency objective fails.
//! - [`cli`]: the `freshet bench` subcommand's flags.
//!
//! The client side runs on blocking threads (a writer and a reader per producer connection),
//! which is simple and fast enough to load a broker on the same machine; the numbers it gives
//! include the client's own CPU use on that machine, as any load generator's do.

pub mod broker_metrics;
pub mod cli;
pub mod latency;
pub mod plot;
pub mod report;
pub mod run;
pub mod sweep;
pub mod workload;
