//! `freshet consume TOPIC`: records to stdout, fetched from each partition's leader.
//!
//! Start with `-o beginning|end|N|-N` (N: an absolute offset, clamped to the log's range; -N:
//! N records before the end). Without
//! `--follow` the run ends once every partition reaches the end it had when the run started
//! (as `kcat -e`); with `--follow` it waits for new records. Either way it ends after `-n`
//! records, or after `--timeout-ms` without a new record. Output is `--format json` (one JSON
//! object per line) or a kcat-like template: `%t` topic, `%p` partition, `%o` offset, `%k` key,
//! `%v` value, `%h` headers (k=v,k=v), `%T` timestamp (ms), `%K`/`%S` key/value length, `%%`,
//! and `\n`, `\t`, `\\` escapes. Default: `%v\n`. Keys and values are printed as UTF-8 (invalid
//! bytes replaced).

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use serde_json::json;

use super::{
    CliError, ConnArgs, Result, Session, LEADER_MOVED, LEADER_REFRESHES_MAX, LEADER_REFRESH_BACKOFF,
};
use crate::admin::{self, ClusterMetadata};
use crate::fetch::{
    fetch_request, parse_fetch_response, FetchPosition, FetchedPartition, FETCH_VERSION_MAX,
    FETCH_VERSION_MIN,
};
use crate::records::batches;
use kafka_protocol::messages::ApiKey;

/// Most bytes asked per partition per fetch.
const PARTITION_FETCH_BYTES_MAX: i32 = 1 << 20;
/// Most bytes asked per fetch.
const FETCH_BYTES_MAX: i32 = 16 << 20;
/// How long a fetch waits at the broker for new records.
const FETCH_WAIT_MS: i32 = 500;

/// `freshet consume TOPIC [FLAGS]`.
#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to consume.
    pub topic: String,
    /// Where to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Partition(s) to read (repeatable; default: all).
    #[arg(short, long = "partition")]
    pub partitions: Vec<i32>,
    /// Where to start: beginning, end, an offset, or -N (N records before the end).
    #[arg(short, long, default_value = "beginning", allow_hyphen_values = true)]
    pub offset: String,
    /// Stop after this many records.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Keep waiting for new records at the end of the log.
    #[arg(short, long)]
    pub follow: bool,
    /// Stop after this many milliseconds without a new record.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// `json` (one object per line), or a template with %t %p %o %k %v %h %T %K %S.
    #[arg(long, default_value = "%v\\n")]
    pub format: String,
}

/// Where consuming starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Beginning,
    End,
    Offset(i64),
    /// N records before the end (`-o -N`).
    BeforeEnd(i64),
}

fn parse_start(s: &str) -> Result<Start> {
    match s {
        "beginning" | "earliest" | "start" => Ok(Start::Beginning),
        "end" | "latest" => Ok(Start::End),
        n => match n.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Start::Offset(n)),
            Ok(n) if n > i64::MIN => Ok(Start::BeforeEnd(-n)),
            _ => Err(CliError::Usage(format!(
                "--offset {s}: expected beginning, end, an offset, or -N (N before the end)"
            ))),
        },
    }
}

/// One record as printed.
struct Out<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// Renders a record with `format` (`json` or a template).
// Long: one flat match over the template's escapes, read as a table.
fn render(format: &str, r: &Out<'_>, out: &mut Vec<u8>) {
    let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
    if format == "json" {
        let headers: serde_json::Map<String, serde_json::Value> = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(text(*v))))
            .collect();
        let line = json!({
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "timestamp": r.timestamp,
            "key": text(r.key),
            "value": text(r.value),
            "headers": headers,
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
        return;
    }
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('t') => out.extend_from_slice(r.topic.as_bytes()),
                Some('p') => out.extend_from_slice(r.partition.to_string().as_bytes()),
                Some('o') => out.extend_from_slice(r.offset.to_string().as_bytes()),
                Some('T') => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
                Some('k') => out.extend_from_slice(r.key.unwrap_or(b"")),
                Some('v') => out.extend_from_slice(r.value.unwrap_or(b"")),
                Some('K') => out
                    .extend_from_slice(r.key.map_or(-1, |k| k.len() as i64).to_string().as_bytes()),
                Some('S') => out.extend_from_slice(
                    r.value
                        .map_or(-1, |v| v.len() as i64)
                        .to_string()
                        .as_bytes(),
                ),
                Some('h') => {
                    for (i, (k, v)) in r.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(k.as_bytes());
                        out.push(b'=');
                        out.extend_from_slice(v.unwrap_or(b""));
                    }
                }
                Some('%') => out.push(b'%'),
                Some(other) => {
                    out.push(b'%');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                }
                None => out.push(b'%'),
            },
            '\\' => match chars.next() {
                Some('n') => out.push(b'\n'),
                Some('t') => out.push(b'\t'),
                Some('\\') => out.push(b'\\'),
                Some(other) => {
                    out.push(b'\\');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                }
                None => out.push(b'\\'),
            },
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// A partition being read.
struct Position {
    partition: i32,
    leader: i32,
    offset: i64,
    /// Without --follow: the end to stop at.
    end: Option<i64>,
}

/// Runs `freshet consume`.
pub fn run(args: ConsumeArgs) -> Result<()> {
    let start = parse_start(&args.offset)?;
    let mut session = Session::connect(&args.conn)?;
    let topic = args.topic.as_str();
    let mut metadata = session.topics_metadata(&[topic])?;
    let mut positions = start_positions(&args, &mut session, &metadata, start)?;
    let mut printer = Printer {
        stdout: std::io::stdout().lock(),
        printed: 0,
        last_record: Instant::now(),
        buf: Vec::with_capacity(64 << 10),
    };
    let done = |positions: &[Position], printed: u64| {
        args.count.is_some_and(|n| printed >= n)
            || positions
                .iter()
                .all(|p| p.end.is_some_and(|e| p.offset >= e))
    };
    let mut leader_refreshes = 0;
    while !done(&positions, printer.printed) {
        if args
            .timeout_ms
            .is_some_and(|t| printer.last_record.elapsed() >= Duration::from_millis(t))
        {
            break;
        }
        let by_leader = unfinished_by_leader(&positions);
        let wait_ms = match args.timeout_ms {
            Some(t) => (t as i64 - printer.last_record.elapsed().as_millis() as i64)
                .clamp(0, FETCH_WAIT_MS as i64) as i32,
            None => FETCH_WAIT_MS,
        };
        let mut leaders_moved = false;
        for (leader, indexes) in by_leader {
            match fetch_and_print(
                &args,
                &mut session,
                &metadata,
                leader,
                &indexes,
                wait_ms,
                &mut positions,
                &mut printer,
            )? {
                ControlFlow::Break(()) => return Ok(()),
                ControlFlow::Continue(moved) => leaders_moved |= moved,
            }
        }
        if let Err(e) = printer.stdout.flush() {
            return stdout_closed(e);
        }
        if leaders_moved {
            refresh_leaders(
                &mut session,
                topic,
                &mut metadata,
                &mut positions,
                &mut leader_refreshes,
            )?;
        } else {
            leader_refreshes = 0;
        }
    }
    if let Some(n) = args.count {
        if printer.printed < n {
            eprintln!("freshet: consumed {} of {n} record(s)", printer.printed);
        }
    }
    Ok(())
}

/// The indexes of the positions not at their end yet, by leader.
fn unfinished_by_leader(positions: &[Position]) -> BTreeMap<i32, Vec<usize>> {
    let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (i, p) in positions.iter().enumerate() {
        if p.end.is_none_or(|e| p.offset < e) {
            by_leader.entry(p.leader).or_default().push(i);
        }
    }
    by_leader
}

/// Where the records go, and how many went.
struct Printer {
    stdout: std::io::StdoutLock<'static>,
    printed: u64,
    last_record: Instant,
    /// One rendered record.
    buf: Vec<u8>,
}

/// The chosen partitions (all if none given) with their leaders and the offsets to start at
/// (and, without `--follow`, to end at).
fn start_positions(
    args: &ConsumeArgs,
    session: &mut Session,
    metadata: &ClusterMetadata,
    start: Start,
) -> Result<Vec<Position>> {
    let topic = args.topic.as_str();
    let info = metadata.topic(topic).expect("checked by topics_metadata");
    let all: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
    let chosen: Vec<i32> = if args.partitions.is_empty() {
        all.clone()
    } else {
        if let Some(p) = args.partitions.iter().find(|p| !all.contains(p)) {
            return Err(CliError::kafka(3, format!("partition {topic}-{p}")));
        }
        args.partitions.clone()
    };
    let starts = session.offsets(metadata, topic, &chosen, admin::EARLIEST)?;
    let ends = session.offsets(metadata, topic, &chosen, admin::LATEST)?;
    let positions: Vec<Position> = chosen
        .iter()
        .map(|&p| {
            let leader = info
                .partitions
                .iter()
                .find(|i| i.partition == p)
                .map_or(-1, |i| i.leader);
            let offset = match start {
                Start::Beginning => starts[&p],
                Start::End => ends[&p],
                Start::Offset(n) => n.clamp(starts[&p], ends[&p].max(starts[&p])),
                Start::BeforeEnd(n) => (ends[&p] - n).max(starts[&p]),
            };
            Position {
                partition: p,
                leader,
                offset,
                end: (!args.follow).then_some(ends[&p]),
            }
        })
        .collect();
    if let Some(p) = positions.iter().find(|p| p.leader < 0) {
        return Err(CliError::kafka(
            5,
            format!("partition {topic}-{} has no leader", p.partition),
        ));
    }
    Ok(positions)
}

/// One Fetch to `leader` for the partitions at `indexes` of `positions`; prints their records
/// and moves the positions past them. `Break` when stdout is closed (the run ends quietly),
/// else `Continue(leadership of a partition moved)`.
#[allow(clippy::too_many_arguments)]
fn fetch_and_print(
    args: &ConsumeArgs,
    session: &mut Session,
    metadata: &ClusterMetadata,
    leader: i32,
    indexes: &[usize],
    wait_ms: i32,
    positions: &mut [Position],
    printer: &mut Printer,
) -> Result<ControlFlow<(), bool>> {
    let topic = args.topic.as_str();
    let mut leaders_moved = false;
    let asked: Vec<FetchPosition> = indexes
        .iter()
        .map(|&i| FetchPosition {
            topic: topic.to_string(),
            partition: positions[i].partition,
            offset: positions[i].offset,
            partition_max_bytes: PARTITION_FETCH_BYTES_MAX,
        })
        .collect();
    let conn = session.to_node(metadata, leader)?;
    let version = conn
        .versions()
        .pick(ApiKey::Fetch, FETCH_VERSION_MIN, FETCH_VERSION_MAX)?;
    let request = fetch_request(&asked, wait_ms, 1, FETCH_BYTES_MAX);
    let body = conn.request_raw(version, &request)?;
    let view = parse_fetch_response(body, version)?;
    if view.error_code != 0 {
        return Err(CliError::kafka(
            view.error_code,
            format!("fetch from {topic}"),
        ));
    }
    for fetched in &view.partitions {
        let Some(position) = positions
            .iter_mut()
            .find(|p| p.partition == fetched.partition)
        else {
            continue;
        };
        if LEADER_MOVED.contains(&fetched.error_code) {
            leaders_moved = true;
            continue;
        }
        if fetched.error_code != 0 {
            return Err(CliError::kafka(
                fetched.error_code,
                format!(
                    "fetch {topic}-{} at offset {}",
                    fetched.partition, position.offset
                ),
            ));
        }
        if print_records(args, fetched, position, printer)?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(leaders_moved))
}

/// Prints the records of one fetched partition from `position` on (up to its end and `-n`),
/// skipping control batches, and moves `position` past them. `Break` when stdout is closed.
fn print_records(
    args: &ConsumeArgs,
    fetched: &FetchedPartition<'_>,
    position: &mut Position,
    printer: &mut Printer,
) -> Result<ControlFlow<()>> {
    let topic = args.topic.as_str();
    for batch in batches(fetched.records) {
        let batch = batch?;
        let next = batch.next_offset();
        if batch.is_control() || next <= position.offset {
            position.offset = position.offset.max(next);
            continue;
        }
        let mut bytes = Bytes::copy_from_slice(batch.bytes());
        let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| {
            CliError::Io(format!(
                "record batch of {topic}-{}: {e}",
                fetched.partition
            ))
        })?;
        for record in &set.records {
            if record.offset < position.offset {
                continue;
            }
            if position.end.is_some_and(|e| record.offset >= e)
                || args.count.is_some_and(|n| printer.printed >= n)
            {
                break;
            }
            printer.buf.clear();
            render(
                &args.format,
                &Out {
                    topic,
                    partition: fetched.partition,
                    offset: record.offset,
                    timestamp: record.timestamp,
                    key: record.key.as_deref(),
                    value: record.value.as_deref(),
                    headers: record
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_deref()))
                        .collect(),
                },
                &mut printer.buf,
            );
            if let Err(e) = printer.stdout.write_all(&printer.buf) {
                stdout_closed(e)?;
                return Ok(ControlFlow::Break(()));
            }
            printer.printed += 1;
            printer.last_record = Instant::now();
            position.offset = record.offset + 1;
        }
        if args.count.is_some_and(|n| printer.printed >= n) {
            break;
        }
        position.offset = position.offset.max(next);
    }
    Ok(ControlFlow::Continue(()))
}

/// Leadership moved (another broker of a cluster leads now): asks Metadata again, after a
/// backoff, and takes each position's leader from it. An error after
/// [`LEADER_REFRESHES_MAX`] refreshes in a row, or if a partition has no leader.
fn refresh_leaders(
    session: &mut Session,
    topic: &str,
    metadata: &mut ClusterMetadata,
    positions: &mut [Position],
    leader_refreshes: &mut u32,
) -> Result<()> {
    *leader_refreshes += 1;
    if *leader_refreshes > LEADER_REFRESHES_MAX {
        return Err(CliError::kafka(
            6,
            format!("fetch from {topic}: no stable leader after {LEADER_REFRESHES_MAX} metadata refreshes"),
        ));
    }
    std::thread::sleep(LEADER_REFRESH_BACKOFF);
    *metadata = session.topics_metadata(&[topic])?;
    let info = metadata.topic(topic).expect("checked by topics_metadata");
    for p in positions.iter_mut() {
        p.leader = info
            .partitions
            .iter()
            .find(|i| i.partition == p.partition)
            .map_or(-1, |i| i.leader);
    }
    if let Some(p) = positions.iter().find(|p| p.leader < 0) {
        return Err(CliError::kafka(
            5,
            format!("partition {topic}-{} has no leader", p.partition),
        ));
    }
    Ok(())
}

/// A reader that went away (`| head`) ends the run normally; other write errors are I/O errors.
fn stdout_closed(e: std::io::Error) -> Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(CliError::Io(format!("stdout: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_every_placeholder() {
        let record = Out {
            topic: "t",
            partition: 2,
            offset: 7,
            timestamp: 99,
            key: Some(b"k1"),
            value: Some(b"v1"),
            headers: vec![("a", Some(b"1")), ("b", None)],
        };
        let mut out = Vec::new();
        render(
            "%t/%p/%o/%T %k=%v [%h] %K %S 100%%\\t%x\\n",
            &record,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "t/2/7/99 k1=v1 [a=1,b=] 2 2 100%\t%x\n"
        );
        let mut out = Vec::new();
        render("json", &record, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["key"], "k1");
        assert_eq!(v["headers"]["a"], "1");
        assert_eq!(v["offset"], 7);
    }

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("beginning").ok(), Some(Start::Beginning));
        assert_eq!(parse_start("end").ok(), Some(Start::End));
        assert_eq!(parse_start("12").ok(), Some(Start::Offset(12)));
        assert_eq!(parse_start("-3").ok(), Some(Start::BeforeEnd(3)));
        assert!(parse_start("soon").is_err());
    }
}
