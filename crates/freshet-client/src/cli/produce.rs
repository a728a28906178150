//! `freshet produce TOPIC`: one record per line of stdin.
//!
//! With `-K/--key-delimiter D` a line `key D value` gives a keyed record (a line without the
//! delimiter has no key); `-H k=v` adds headers to every record. The partition is `-p N`, else
//! Kafka's murmur2 of the key, else round-robin over the partitions. Records are batched per
//! partition (at most `--batch-records` records or `BATCH_BYTES_MAX` bytes) and each batch
//! goes, compressed as asked, to the partition's leader (from Metadata); when stdin is a
//! terminal every line is sent at once. With acks 1 or all, a partition's Kafka error stops the
//! run (exit 1); with acks 0 the broker answers nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, IsTerminal, Read};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde_json::json;

use super::{
    parse_key_value, print_json, CliError, ConnArgs, Format, Result, Session, LEADER_MOVED,
    LEADER_REFRESHES_MAX, LEADER_REFRESH_BACKOFF,
};
use crate::admin::ClusterMetadata;
use crate::produce::{
    parse_produce_response, PartitionRecords, ProduceBody, ProducePartitionResponse,
    PRODUCE_VERSION_MAX, PRODUCE_VERSION_MIN,
};
use crate::records::murmur2_partition;
use crate::{PipelineReader, PipelineWriter};

/// Record bytes (keys, values, headers, and a per-record allowance for framing) buffered before
/// the batches are sent: half of Kafka's default `max.message.bytes` (1 MiB), so a batch of
/// small records stays under it.
const BATCH_BYTES_MAX: usize = 512 << 10;
/// Framing bytes allowed per record (varints, attributes) when sizing a batch.
const RECORD_OVERHEAD_BYTES: usize = 24;
/// Longest line accepted from stdin.
const LINE_BYTES_MAX: usize = 16 << 20;

/// Compression codec of produced batches.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionArg {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl CompressionArg {
    fn codec(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// `freshet produce TOPIC [FLAGS] < lines`.
#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    /// Topic to produce to.
    pub topic: String,
    /// Where to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Split each line at the first DELIM into key and value.
    #[arg(short = 'K', long, value_name = "DELIM")]
    pub key_delimiter: Option<String>,
    /// Header key=value added to every record (repeatable).
    #[arg(short = 'H', long = "header", value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// Partition to produce to (default: by key, else round-robin).
    #[arg(short, long)]
    pub partition: Option<i32>,
    /// Compression codec.
    #[arg(short = 'z', long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// Acknowledgements: all (-1), 1 or 0.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: i16,
    /// Most records per batch.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_records: u32,
    /// Summary format (table: a line on stderr; json: a document on stdout).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// No summary line.
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_acks(s: &str) -> std::result::Result<i16, String> {
    match s {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        _ => Err(format!("acks must be all, -1, 1 or 0, not {s:?}")),
    }
}

/// A leader's pipelined connection (at most 2 requests in flight; used one at a time).
struct LeaderConn {
    writer: PipelineWriter<()>,
    reader: PipelineReader<()>,
    version: i16,
}

/// Where each partition's records went.
#[derive(Default)]
struct PartitionSummary {
    records: u64,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

struct Producer {
    topic: String,
    acks: i16,
    compression: Compression,
    timeout_ms: i32,
    metadata: ClusterMetadata,
    leaders: HashMap<i32, LeaderConn>,
    pending: BTreeMap<i32, Vec<Record>>,
    pending_records: usize,
    pending_bytes: usize,
    summary: BTreeMap<i32, PartitionSummary>,
}

/// Runs `freshet produce`.
pub fn run(args: ProduceArgs) -> Result<()> {
    let mut session = Session::connect(&args.conn)?;
    let metadata = session.topics_metadata(&[args.topic.as_str()])?;
    let partitions = partitions_to_write(&args, &metadata)?;
    let headers = record_headers(&args.headers);
    let mut producer = Producer {
        topic: args.topic.clone(),
        acks: args.acks,
        compression: args.compression.codec(),
        timeout_ms: args.conn.request_timeout_ms.min(i32::MAX as u64) as i32,
        metadata,
        leaders: HashMap::new(),
        pending: BTreeMap::new(),
        pending_records: 0,
        pending_bytes: 0,
        summary: BTreeMap::new(),
    };
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    let mut round_robin = 0usize;
    let mut total = 0u64;
    loop {
        line.clear();
        let n = (&mut input)
            .take(LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError::Io(format!("stdin: {e}")))?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > LINE_BYTES_MAX {
            return Err(CliError::Usage(format!(
                "a line of stdin is longer than {LINE_BYTES_MAX} bytes"
            )));
        }
        let (key, value) = split_key(&line, args.key_delimiter.as_deref());
        let partition = match (args.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => partitions[murmur2_partition(k, partitions.len() as i32) as usize],
            (None, None) => {
                round_robin = (round_robin + 1) % partitions.len();
                partitions[round_robin]
            }
        };
        producer.push(partition, key, value, headers.clone());
        total += 1;
        if interactive
            || producer.pending_records >= args.batch_records as usize
            || producer.pending_bytes >= BATCH_BYTES_MAX
        {
            producer.flush(&mut session)?;
        }
    }
    producer.flush(&mut session)?;
    producer.report(args.format, args.quiet, total);
    Ok(())
}

/// The topic's partitions; an error if it has none, or if `--partition` names another.
fn partitions_to_write(args: &ProduceArgs, metadata: &ClusterMetadata) -> Result<Vec<i32>> {
    let partitions: Vec<i32> = metadata
        .topic(&args.topic)
        .map(|t| t.partitions.iter().map(|p| p.partition).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(CliError::kafka(
            3,
            format!("topic {} has no partitions", args.topic),
        ));
    }
    if let Some(p) = args.partition {
        if !partitions.contains(&p) {
            return Err(CliError::kafka(3, format!("partition {}-{p}", args.topic)));
        }
    }
    Ok(partitions)
}

/// The `-H key=value` headers of every record.
fn record_headers(headers: &[(String, String)]) -> IndexMap<StrBytes, Option<Bytes>> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                StrBytes::from_string(k.clone()),
                Some(Bytes::copy_from_slice(v.as_bytes())),
            )
        })
        .collect()
}

/// A line's key and value: split at the first `key_delimiter` when one is given and found.
fn split_key(line: &[u8], key_delimiter: Option<&str>) -> (Option<Bytes>, Bytes) {
    match key_delimiter {
        Some(d) if !d.is_empty() => match find(line, d.as_bytes()) {
            Some(at) => (
                Some(Bytes::copy_from_slice(&line[..at])),
                Bytes::copy_from_slice(&line[at + d.len()..]),
            ),
            None => (None, Bytes::copy_from_slice(line)),
        },
        _ => (None, Bytes::copy_from_slice(line)),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Producer {
    fn push(
        &mut self,
        partition: i32,
        key: Option<Bytes>,
        value: Bytes,
        headers: IndexMap<StrBytes, Option<Bytes>>,
    ) {
        let records = self.pending.entry(partition).or_default();
        self.pending_bytes += RECORD_OVERHEAD_BYTES
            + key.as_ref().map_or(0, Bytes::len)
            + value.len()
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len))
                .sum::<usize>();
        let offset = records.len() as i64;
        records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            // Constant `offset - sequence` keeps the records in one batch (no idempotence).
            sequence: offset as i32 - 1,
            timestamp: now_ms(),
            key,
            value: Some(value),
            headers,
        });
        self.pending_records += 1;
    }

    fn leader(&mut self, session: &mut Session, node_id: i32) -> Result<&mut LeaderConn> {
        if !self.leaders.contains_key(&node_id) {
            let addr = self
                .metadata
                .broker(node_id)
                .map(|b| b.addr())
                .ok_or_else(|| CliError::kafka(5, format!("leader {node_id} not in metadata")))?;
            // A connection of its own: the session's would be consumed by the split.
            let conn = crate::Connection::connect(&addr, &session_options(session))
                .map_err(|e| CliError::Io(format!("{addr}: {e}")))?;
            let version =
                conn.versions()
                    .pick(ApiKey::Produce, PRODUCE_VERSION_MIN, PRODUCE_VERSION_MAX)?;
            let (writer, reader) = conn.into_pipeline(2);
            self.leaders.insert(
                node_id,
                LeaderConn {
                    writer,
                    reader,
                    version,
                },
            );
        }
        Ok(self.leaders.get_mut(&node_id).expect("just inserted"))
    }

    /// Sends every pending batch (one Produce request per leader) and checks the answers.
    /// Batches a broker refuses because it no longer leads their partition are sent again to
    /// the leader a fresh Metadata names (a bounded number of times).
    fn flush(&mut self, session: &mut Session) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_records = 0;
        self.pending_bytes = 0;
        let mut unsent: Vec<(i32, Bytes, usize)> = Vec::with_capacity(pending.len());
        for (partition, records) in pending {
            let mut buf = bytes::BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                &records,
                &RecordEncodeOptions {
                    version: 2,
                    compression: self.compression,
                },
            )
            .map_err(|e| CliError::Io(format!("encode a record batch: {e}")))?;
            unsent.push((partition, buf.freeze(), records.len()));
        }
        let mut refreshes = 0;
        loop {
            unsent = self.send(session, unsent)?;
            if unsent.is_empty() {
                return Ok(());
            }
            refreshes += 1;
            if refreshes > LEADER_REFRESHES_MAX {
                return Err(CliError::kafka(
                    6,
                    format!(
                        "produce to {}: no stable leader after {LEADER_REFRESHES_MAX} metadata refreshes",
                        self.topic
                    ),
                ));
            }
            std::thread::sleep(LEADER_REFRESH_BACKOFF);
            self.metadata = session.topics_metadata(&[self.topic.as_str()])?;
        }
    }

    /// Sends `batches` (partition, batch, records) to their leaders; returns those refused
    /// because leadership moved. Any other error ends the run.
    fn send(
        &mut self,
        session: &mut Session,
        batches: Vec<(i32, Bytes, usize)>,
    ) -> Result<Vec<(i32, Bytes, usize)>> {
        let topic = self
            .metadata
            .topic(&self.topic)
            .cloned()
            .ok_or_else(|| CliError::kafka(3, format!("topic {}", self.topic)))?;
        let mut by_leader: BTreeMap<i32, Vec<(i32, Bytes, usize)>> = BTreeMap::new();
        for batch in batches {
            let leader = topic
                .partitions
                .iter()
                .find(|p| p.partition == batch.0)
                .map_or(-1, |p| p.leader);
            by_leader.entry(leader).or_default().push(batch);
        }
        let mut moved = Vec::new();
        if let Some(leaderless) = by_leader.remove(&-1) {
            moved.extend(leaderless);
        }
        let (acks, timeout_ms) = (self.acks, self.timeout_ms);
        let topic_name = self.topic.clone();
        for (leader, batches) in by_leader {
            let conn = self.leader(session, leader)?;
            let parts: Vec<PartitionRecords<'_>> = batches
                .iter()
                .map(|(p, bytes, _)| PartitionRecords {
                    topic: &topic_name,
                    partition: *p,
                    records: bytes,
                })
                .collect();
            let body = ProduceBody::new(conn.version, acks, timeout_ms, &parts);
            let answers = if acks == 0 {
                conn.writer
                    .send_unanswered(ApiKey::Produce, conn.version, &body.slices())?;
                Vec::new()
            } else {
                conn.writer
                    .send(ApiKey::Produce, conn.version, &body.slices(), ())?;
                let answer = conn.reader.recv()?.ok_or_else(|| {
                    CliError::Io("the connection closed before the Produce answer".into())
                })?;
                parse_produce_response(answer.body, answer.version)?
            };
            self.account(batches, &answers, &mut moved)?;
        }
        Ok(moved)
    }

    /// Counts each sent batch in the summary from its answer (acks=0: no answer, counted as
    /// sent); a batch whose partition's leader moved goes to `moved`. An error for any other
    /// partition error.
    fn account(
        &mut self,
        batches: Vec<(i32, Bytes, usize)>,
        answers: &[ProducePartitionResponse],
        moved: &mut Vec<(i32, Bytes, usize)>,
    ) -> Result<()> {
        let (acks, topic_name) = (self.acks, &self.topic);
        for batch in batches {
            let (partition, count) = (batch.0, batch.2);
            if acks == 0 {
                self.summary.entry(partition).or_default().records += count as u64;
                continue;
            }
            let answer = answers
                .iter()
                .find(|a| a.partition == partition)
                .ok_or_else(|| {
                    CliError::Io(format!("no Produce answer for partition {partition}"))
                })?;
            if LEADER_MOVED.contains(&answer.error_code) {
                moved.push(batch);
                continue;
            }
            if answer.error_code != 0 {
                return Err(CliError::kafka(
                    answer.error_code,
                    match &answer.error_message {
                        Some(m) if !m.is_empty() => {
                            format!("produce to {topic_name}-{partition}: {m}")
                        }
                        _ => format!("produce to {topic_name}-{partition}"),
                    },
                ));
            }
            let summary = self.summary.entry(partition).or_default();
            summary.records += count as u64;
            summary.first_offset.get_or_insert(answer.base_offset);
            summary.last_offset = Some(answer.base_offset + count as i64 - 1);
        }
        Ok(())
    }

    fn report(&self, format: Format, quiet: bool, total: u64) {
        match format {
            Format::Json => print_json(&json!({
                "topic": self.topic,
                "records": total,
                "partitions": self.summary.iter().map(|(p, s)| json!({
                    "partition": p,
                    "records": s.records,
                    "first_offset": s.first_offset,
                    "last_offset": s.last_offset,
                })).collect::<Vec<_>>(),
            })),
            Format::Table if !quiet => {
                eprintln!(
                    "produced {total} record(s) to {} ({} partition(s))",
                    self.topic,
                    self.summary.len()
                );
            }
            Format::Table => {}
        }
    }
}

fn session_options(session: &Session) -> crate::ConnectOptions {
    session.options.clone()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
