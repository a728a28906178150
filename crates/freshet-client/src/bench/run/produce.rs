//! The offered load: producer threads that create messages on their [`Schedule`], batch them
//! per partition and write pipelined Produce requests, and the reader threads that take the
//! answers and record publish latency.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use super::super::broker_metrics;
use super::super::latency::{Clock, Recorder, Schedule};
use super::super::workload::KeyDistribution;
use super::{spawn, Ctx};
use crate::produce::{
    parse_produce_response, PartitionRecords, ProduceBody, PRODUCE_VERSION_MAX, PRODUCE_VERSION_MIN,
};
use crate::records::{murmur2_partition, BatchBuilder};
use crate::{Connection, PipelineReader, PipelineWriter};
use freshet_protocol::batch::{encode_batch, Compression, NewRecord};

/// Keys cycled by [`KeyDistribution::RoundRobin`].
const ROUND_ROBIN_KEYS: u64 = 10_000;

/// The messages of one partition in one Produce request, for the answer's bookkeeping.
struct TagPart {
    topic: usize,
    partition: i32,
    intended_ns: Vec<u64>,
    bytes: u64,
}

/// A partition's batch being filled.
#[derive(Default)]
struct Accumulator {
    intended_ns: Vec<u64>,
    keys: Vec<Option<Bytes>>,
    bytes: usize,
    first_ns: u64,
}

impl Accumulator {
    /// Adds a message created at `now_ns`, intended at `intended_ns`.
    fn push(&mut self, key: Option<Bytes>, intended_ns: u64, now_ns: u64, value_bytes: usize) {
        if self.intended_ns.is_empty() {
            self.first_ns = now_ns;
        }
        self.bytes += value_bytes + key.as_ref().map_or(0, |k| k.len());
        self.intended_ns.push(intended_ns);
        self.keys.push(key);
    }
}

/// One pipelined connection to a partition leader.
struct ProducerConn {
    addr: String,
    writer: PipelineWriter<Vec<TagPart>>,
    reader: JoinHandle<()>,
    version: i16,
}

/// Producer `index` of `count`, writing topic `t`.
pub(super) fn produce(ctx: &Arc<Ctx>, t: usize, index: usize, count: usize) {
    if let Err(e) = produce_inner(ctx, t, index, count) {
        ctx.shared.error(format!("producer {index}: {e}"));
    }
}

fn produce_inner(ctx: &Arc<Ctx>, t: usize, index: usize, count: usize) -> Result<(), String> {
    let w = &ctx.workload;
    let s = &ctx.shared;
    let slots = &ctx.slots[t];
    let (mut conns, conn_of) = connect_leaders(ctx, t, index)?;
    let (schedule, limit) = share(ctx, index, count);
    let linger_ns = (w.linger_ms * 1e6) as u64;
    let mut accs: Vec<Accumulator> = slots.iter().map(|_| Accumulator::default()).collect();
    let mut bufs: Vec<Vec<u8>> = slots.iter().map(|_| Vec::new()).collect();
    // Keyless messages stick to one partition until its batch is sent (Kafka's sticky
    // partitioner), then move to the next.
    let mut sticky = index % slots.len();
    let mut sticky_used = false;
    let mut rng = ctx.clock.origin_ns() ^ ((index as u64 + 1) << 32) | 1;
    let mut k: u64 = 0;
    // Wait for the schedule's start.
    sleep_until(&ctx.clock, ctx.start_ns);
    let mut last_linger_check = 0u64;
    let mut now = ctx.clock.now_ns();
    // Issue 16: how busy this thread is (CPU over wall time) and how far it falls behind.
    let cpu_started = broker_metrics::thread_cpu_seconds();
    let wall_started = now;
    let mut lag_max_ns = 0u64;
    while k < limit && !s.stop.load(Ordering::Relaxed) {
        // The clock is read every 16 messages, and whenever the schedule seems ahead: at max
        // rate a message's creation time is exact to within the few µs 16 messages take.
        let read_clock = k.is_multiple_of(16);
        if read_clock {
            now = ctx.clock.now_ns();
        }
        let intended = match schedule {
            Some(sch) => sch.intended_ns(k),
            None => now,
        };
        if read_clock && intended >= ctx.measure_from_ns {
            lag_max_ns = lag_max_ns.max(now.saturating_sub(intended));
        }
        if intended > now {
            now = ctx.clock.now_ns();
        }
        if intended >= ctx.end_ns || (schedule.is_none() && now >= ctx.end_ns) {
            break;
        }
        if intended > now {
            // Ahead of schedule: send what lingered long enough, then sleep.
            let next_linger = send_ready(
                ctx, t, &mut accs, &mut bufs, &mut conns, &conn_of, now, linger_ns, false,
            )?;
            last_linger_check = now;
            advance_sticky(&accs, &mut sticky, &mut sticky_used);
            sleep_until(&ctx.clock, intended.min(next_linger));
            continue;
        }
        let (key, slot) = choose_key(w.key_distribution, k, sticky, &mut rng, slots.len());
        let acc = &mut accs[slot];
        acc.push(key, intended, now, w.message_bytes);
        k += 1;
        sticky_used |= slot == sticky;
        if acc.bytes >= w.batch_bytes || now.saturating_sub(last_linger_check) > 100_000 {
            send_ready(
                ctx, t, &mut accs, &mut bufs, &mut conns, &conn_of, now, linger_ns, false,
            )?;
            last_linger_check = now;
            if w.key_distribution == KeyDistribution::None {
                advance_sticky(&accs, &mut sticky, &mut sticky_used);
            }
        }
    }
    let now = ctx.clock.now_ns();
    send_ready(
        ctx, t, &mut accs, &mut bufs, &mut conns, &conn_of, now, 0, true,
    )?;
    let wall_s = ctx.clock.now_ns().saturating_sub(wall_started) as f64 / 1e9;
    if wall_s > 0.0 {
        let busy = (broker_metrics::thread_cpu_seconds() - cpu_started) / wall_s;
        s.producer_busy_max_permille
            .fetch_max((busy * 1000.0) as u64, Ordering::Relaxed);
    }
    s.send_lag_max_ns.fetch_max(lag_max_ns, Ordering::Relaxed);
    for conn in conns {
        drop(conn.writer);
        let _ = conn.reader.join();
    }
    Ok(())
}

/// One connection per partition leader of topic `t`, each with its answer reader thread:
/// `(connections, connection index of each partition slot)`.
fn connect_leaders(
    ctx: &Arc<Ctx>,
    t: usize,
    index: usize,
) -> Result<(Vec<ProducerConn>, Vec<usize>), String> {
    let slots = &ctx.slots[t];
    let mut conns: Vec<ProducerConn> = Vec::new();
    let mut conn_of = Vec::with_capacity(slots.len());
    for slot in slots {
        if let Some(i) = conns.iter().position(|c| c.addr == slot.leader_addr) {
            conn_of.push(i);
            continue;
        }
        let conn = Connection::connect(&slot.leader_addr, &ctx.options)
            .map_err(|e| format!("{}: {e}", slot.leader_addr))?;
        let version = conn
            .versions()
            .pick(ApiKey::Produce, PRODUCE_VERSION_MIN, PRODUCE_VERSION_MAX)
            .map_err(|e| e.to_string())?;
        let (writer, reader) = conn.into_pipeline(ctx.workload.inflight);
        let reader_ctx = ctx.clone();
        let reader = spawn(format!("acks-{index}-{}", conns.len()), move || {
            read_acks(&reader_ctx, reader)
        })?;
        conns.push(ProducerConn {
            addr: slot.leader_addr.clone(),
            writer,
            reader,
            version,
        });
        conn_of.push(conns.len() - 1);
    }
    Ok((conns, conn_of))
}

/// Producer `index` of `count`'s share of the offered load: its send schedule (`None`: as
/// fast as it can) and how many messages it sends at most.
fn share(ctx: &Ctx, index: usize, count: usize) -> (Option<Schedule>, u64) {
    let w = &ctx.workload;
    // This producer's share of the rate and of the message count.
    let rate = w.rate / count as f64;
    // Stagger producers within one interval so they do not send in lockstep.
    let offset_ns = if rate > 0.0 {
        (1e9 / rate * index as f64 / count as f64) as u64
    } else {
        0
    };
    let schedule = Schedule::new(ctx.start_ns + offset_ns, rate);
    let limit = if w.messages > 0 {
        w.messages / count as u64 + u64::from((index as u64) < w.messages % count as u64)
    } else if w.backlog_mb > 0.0 {
        let total = (w.backlog_mb * 1e6 / w.message_bytes as f64).ceil() as u64;
        total / count as u64 + u64::from((index as u64) < total % count as u64)
    } else {
        u64::MAX
    };
    (schedule, limit)
}

/// The key of message `k` and its partition slot (of `partitions`): keyless messages go to the
/// sticky partition, keyed ones where Kafka's murmur2 partitioner puts them.
fn choose_key(
    keys: KeyDistribution,
    k: u64,
    sticky: usize,
    rng: &mut u64,
    partitions: usize,
) -> (Option<Bytes>, usize) {
    match keys {
        KeyDistribution::None => (None, sticky),
        KeyDistribution::RoundRobin => {
            let key = Bytes::from(format!("key-{}", k % ROUND_ROBIN_KEYS));
            let p = murmur2_partition(&key, partitions as i32) as usize;
            (Some(key), p)
        }
        KeyDistribution::Random => {
            *rng ^= *rng >> 12;
            *rng ^= *rng << 25;
            *rng ^= *rng >> 27;
            let key =
                Bytes::copy_from_slice(&rng.wrapping_mul(0x2545_f491_4f6c_dd1d).to_be_bytes());
            let p = murmur2_partition(&key, partitions as i32) as usize;
            (Some(key), p)
        }
    }
}

/// Moves the sticky partition on once its batch has been sent.
fn advance_sticky(accs: &[Accumulator], sticky: &mut usize, used: &mut bool) {
    if *used && accs[*sticky].intended_ns.is_empty() {
        *sticky = (*sticky + 1) % accs.len();
        *used = false;
    }
}

/// Sends every batch that is full or has lingered `linger_ns` (all non-empty ones if `all`),
/// one Produce request per leader. Returns when the oldest remaining batch will be due.
/// `bufs[i]` is partition slot `i`'s reused encoding buffer.
#[allow(clippy::too_many_arguments)]
fn send_ready(
    ctx: &Ctx,
    t: usize,
    accs: &mut [Accumulator],
    bufs: &mut [Vec<u8>],
    conns: &mut [ProducerConn],
    conn_of: &[usize],
    now: u64,
    linger_ns: u64,
    all: bool,
) -> Result<u64, String> {
    let w = &ctx.workload;
    let (per_conn, next_due) = due_batches(
        w.batch_bytes,
        accs,
        conns.len(),
        conn_of,
        now,
        linger_ns,
        all,
    );
    for (c, indexes) in per_conn.into_iter().enumerate() {
        if indexes.is_empty() {
            continue;
        }
        let mut tags = Vec::with_capacity(indexes.len());
        let mut messages = 0u64;
        for &i in &indexes {
            let acc = std::mem::take(&mut accs[i]);
            encode(ctx, &acc, &mut bufs[i])?;
            messages += acc.intended_ns.len() as u64;
            tags.push(TagPart {
                topic: t,
                partition: ctx.slots[t][i].partition,
                bytes: (acc.intended_ns.len() * w.message_bytes) as u64,
                intended_ns: acc.intended_ns,
            });
        }
        let parts: Vec<PartitionRecords<'_>> = indexes
            .iter()
            .map(|&i| PartitionRecords {
                topic: &ctx.topics[t],
                partition: ctx.slots[t][i].partition,
                records: &bufs[i],
            })
            .collect();
        let conn = &mut conns[c];
        let body = ProduceBody::new(conn.version, w.acks, w.request_timeout_ms, &parts);
        let slices = body.slices();
        ctx.shared.sent_msgs.fetch_add(messages, Ordering::Relaxed);
        if w.acks == 0 {
            conn.writer
                .send_unanswered(ApiKey::Produce, conn.version, &slices)
                .map_err(|e| format!("send to {}: {e}", conn.addr))?;
            let bytes: u64 = tags.iter().map(|t| t.bytes).sum();
            ctx.shared.acked_msgs.fetch_add(messages, Ordering::Relaxed);
            ctx.shared.acked_bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            conn.writer
                .send(ApiKey::Produce, conn.version, &slices, tags)
                .map_err(|e| format!("send to {}: {e}", conn.addr))?;
        }
    }
    Ok(next_due)
}

/// The partition slots whose batches are to be sent now, per connection, and when the oldest
/// remaining batch will be due (see [`send_ready`]).
fn due_batches(
    batch_bytes: usize,
    accs: &[Accumulator],
    conn_count: usize,
    conn_of: &[usize],
    now: u64,
    linger_ns: u64,
    all: bool,
) -> (Vec<Vec<usize>>, u64) {
    let mut next_due = u64::MAX;
    let mut per_conn: Vec<Vec<usize>> = vec![Vec::new(); conn_count];
    for (i, acc) in accs.iter().enumerate() {
        if acc.intended_ns.is_empty() {
            continue;
        }
        let due = acc.first_ns + linger_ns;
        if all || acc.bytes >= batch_bytes || due <= now {
            per_conn[conn_of[i]].push(i);
        } else {
            next_due = next_due.min(due);
        }
    }
    (per_conn, next_due)
}

/// Encodes one partition's accumulated messages as a record batch into `buf`: written in
/// place when uncompressed, through the generic encoder when compressed.
fn encode(ctx: &Ctx, acc: &Accumulator, buf: &mut Vec<u8>) -> Result<(), String> {
    let filler = &ctx.filler[16..ctx.workload.message_bytes];
    if ctx.compression == Compression::None {
        let mut builder = BatchBuilder::new(buf);
        for (seq, (&intended, key)) in acc.intended_ns.iter().zip(&acc.keys).enumerate() {
            builder.push(
                key.as_deref(),
                &[&intended.to_be_bytes(), &(seq as u64).to_be_bytes(), filler],
                (intended / 1_000_000) as i64,
            );
        }
        builder.finish();
        return Ok(());
    }
    let size = ctx.workload.message_bytes;
    let n = acc.intended_ns.len();
    let mut values = BytesMut::with_capacity(n * size);
    for (seq, &intended) in acc.intended_ns.iter().enumerate() {
        values.put_u64(intended);
        values.put_u64(seq as u64);
        values.extend_from_slice(filler);
    }
    let values = values.freeze();
    let records: Vec<NewRecord> = acc
        .intended_ns
        .iter()
        .enumerate()
        .map(|(i, &intended)| {
            (
                acc.keys[i].clone(),
                Some(values.slice(i * size..(i + 1) * size)),
                (intended / 1_000_000) as i64,
            )
        })
        .collect();
    let batch = encode_batch(&records, ctx.compression)?;
    buf.clear();
    buf.extend_from_slice(&batch);
    Ok(())
}

/// Reads Produce answers on one connection; records publish latency.
fn read_acks(ctx: &Ctx, mut reader: PipelineReader<Vec<TagPart>>) {
    let s = &ctx.shared;
    let mut recorder = Recorder::new(s.publish.clone(), ctx.measure_from_ns);
    loop {
        let answer = match reader.recv() {
            Ok(Some(answer)) => answer,
            Ok(None) => break,
            Err(e) => {
                s.error(format!("reading Produce answers: {e}"));
                s.stop.store(true, Ordering::Relaxed);
                break;
            }
        };
        let done_ns = ctx.clock.now_ns();
        match parse_produce_response(answer.body, answer.version) {
            Ok(responses) => {
                for part in answer.tag {
                    let response = responses.iter().find(|r| {
                        r.partition == part.partition && r.topic == ctx.topics[part.topic]
                    });
                    let n = part.intended_ns.len() as u64;
                    match response {
                        Some(r) if r.error_code == 0 => {
                            for &intended in &part.intended_ns {
                                recorder.record(intended, done_ns);
                            }
                            s.acked_msgs.fetch_add(n, Ordering::Relaxed);
                            s.acked_bytes.fetch_add(part.bytes, Ordering::Relaxed);
                        }
                        other => {
                            s.failed_msgs.fetch_add(n, Ordering::Relaxed);
                            s.error(match other {
                                Some(r) => format!(
                                    "produce to {}-{}: error {} ({}) {}",
                                    r.topic,
                                    r.partition,
                                    r.error_code,
                                    crate::error_name(r.error_code),
                                    r.error_message.clone().unwrap_or_default()
                                ),
                                None => format!(
                                    "produce to partition {}: no answer for it",
                                    part.partition
                                ),
                            });
                        }
                    }
                }
            }
            Err(e) => {
                let n: u64 = answer.tag.iter().map(|p| p.intended_ns.len() as u64).sum();
                s.failed_msgs.fetch_add(n, Ordering::Relaxed);
                s.error(format!("Produce answer: {e}"));
            }
        }
        recorder.flush_if_due();
    }
}

fn sleep_until(clock: &Clock, when_ns: u64) {
    let now = clock.now_ns();
    if when_ns > now {
        // Coarse sleep: lateness is charged to the latency, as it would be for an application.
        thread::sleep(Duration::from_nanos((when_ns - now).min(100_000_000)));
    }
}
