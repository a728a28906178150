//! The client side of Freshet, a crate of its own above the protocol crate and beside the
//! broker (it never depends on the broker, nor on glommio):
//! - the crate root: a small, blocking Kafka protocol client, what `freshet bench` and the
//!   admin CLI talk to any Kafka-compatible broker with;
//! - [`bench`]: `freshet bench`, the load generator: latency histograms, reports, plots;
//! - [`cli`]: the admin CLI (`freshet topic|group|produce|consume|cluster`) and the clap
//!   command tree of every client-side subcommand ([`cli::Command`]), which the `freshet`
//!   binary puts next to the broker's own (`start`, `tune`).
//!
//! Shape:
//! - [`Connection`] ([`conn`]): one TCP connection. `connect` negotiates API versions
//!   (ApiVersions, with Kafka's v0 fallback when the broker refuses our version), and
//!   [`Connection::request`] sends any `kafka-protocol` request at the highest version both sides
//!   speak and waits for its answer. [`Connection::into_pipeline`] splits the connection into a
//!   [`PipelineWriter`] and a [`PipelineReader`] for pipelined requests (correlation ids checked
//!   in order, in-flight requests bounded), typically on two threads.
//! - [`admin`]: Metadata, CreateTopics, DeleteTopics, ListOffsets as plain functions returning
//!   plain structs; [`cluster`]: full topic metadata, DescribeCluster, DescribeConfigs and
//!   IncrementalAlterConfigs; [`groups`]: FindCoordinator, ListGroups, DescribeGroups,
//!   DeleteGroups, OffsetFetch, OffsetCommit (for `freshet group`).
//! - [`produce`]: the hot path, framed by hand: a Produce request is written as a small header
//!   followed by the record batches' bytes as they are (no re-encoding, no copy into one buffer).
//! - [`fetch`]: Fetch requests, and a hand-written parser of Fetch responses that hands out each
//!   partition's record bytes as a slice of the response frame, without decoding records.
//! - [`records`]: walking record batches and (uncompressed, or after decompression) the records
//!   in them; Kafka's murmur2 key partitioner.
//!
//! Record batches are encoded with [`freshet_protocol::batch::encode_batch`] (compression there).
//!
//! Invariants: nothing a broker sends can panic this client: every length is checked against
//! the bytes present and against [`ConnectOptions::frame_bytes_max`]; malformed input becomes a
//! [`ClientError::Protocol`]. Every request has a bounded wait ([`ConnectOptions::io_timeout`]).
//!
//! Not yet: TLS/SASL, retries (callers decide), idempotent/transactional producing, fetch
//! sessions (every fetch is a full fetch), Produce v13 / Fetch v13+ (topic ids).

pub mod admin;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod conn;
pub mod fetch;
pub mod groups;
pub mod produce;
pub mod records;
mod wire;

pub use conn::{ConnectOptions, Connection, PipelineReader, PipelineWriter};

/// An error talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed, timed out or was closed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The broker sent bytes that do not parse as the expected response.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Neither side speaks a version of this API that the other does.
    #[error("the broker does not support {api} versions {min}..={max}")]
    Unsupported {
        /// The API's name.
        api: &'static str,
        /// Lowest version this client can use.
        min: i16,
        /// Highest version this client can use.
        max: i16,
    },
    /// The broker answered with a Kafka error code.
    #[error("{context}: Kafka error {code} ({})", error_name(*code))]
    Kafka {
        /// What was asked (e.g. "create topic t").
        context: String,
        /// The Kafka error code.
        code: i16,
    },
}

/// A `Result` with [`ClientError`].
pub type Result<T> = std::result::Result<T, ClientError>;

/// The name Kafka gives an error code, for messages (the common ones; others are "UNKNOWN").
pub fn error_name(code: i16) -> &'static str {
    match code {
        0 => "NONE",
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        17 => "INVALID_TOPIC_EXCEPTION",
        18 => "RECORD_LIST_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        35 => "UNSUPPORTED_VERSION",
        36 => "TOPIC_ALREADY_EXISTS",
        37 => "INVALID_PARTITIONS",
        41 => "NOT_CONTROLLER",
        42 => "INVALID_REQUEST",
        87 => "INVALID_RECORD",
        100 => "UNKNOWN_TOPIC_ID",
        _ => "UNKNOWN",
    }
}
