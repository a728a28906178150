//! Consumer threads: fetch their partitions from the log ends before the run to the log ends
//! after it, check every batch's CRC, and record end-to-end latency from the send time in the
//! first 8 bytes of each value.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

use super::super::latency::Recorder;
use super::Ctx;
use crate::fetch::{
    fetch_request, parse_fetch_response, FetchPosition, FetchedPartition, FETCH_VERSION_MAX,
    FETCH_VERSION_MIN,
};
use crate::records::batches;
use crate::Connection;

/// Consumer `c` of topic `t`: fetches partitions `p` with `p % consumers == c`.
pub(super) fn consume(ctx: &Arc<Ctx>, t: usize, c: usize) {
    if let Err(e) = consume_inner(ctx, t, c) {
        ctx.shared.error(format!("consumer {t}-{c}: {e}"));
    }
}

fn consume_inner(ctx: &Arc<Ctx>, t: usize, c: usize) -> Result<(), String> {
    let w = &ctx.workload;
    let s = &ctx.shared;
    let mine: Vec<usize> = (0..ctx.slots[t].len())
        .filter(|i| i % w.consumers == c)
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    let mut leaders: Vec<String> = mine
        .iter()
        .map(|&i| ctx.slots[t][i].leader_addr.clone())
        .collect();
    leaders.sort();
    leaders.dedup();
    let mut conns = Vec::new();
    for leader in &leaders {
        let conn =
            Connection::connect(leader, &ctx.options).map_err(|e| format!("{leader}: {e}"))?;
        let version = conn
            .versions()
            .pick(ApiKey::Fetch, FETCH_VERSION_MIN, FETCH_VERSION_MAX)
            .map_err(|e| e.to_string())?;
        conns.push((conn, version));
    }
    let mut consumer = Consumer {
        ctx,
        t,
        positions: mine.iter().map(|&i| ctx.start_offsets[t][i]).collect(),
        mine,
        ends: None,
        recorder: Recorder::new(s.e2e.clone(), ctx.measure_from_ns),
    };
    if w.backlog_mb > 0.0 {
        while !s.producers_done.load(Ordering::Relaxed) && !s.stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(10));
        }
    }
    while !s.stop.load(Ordering::Relaxed) {
        if consumer.ends.is_none() && s.producers_done.load(Ordering::Relaxed) {
            consumer.ends = s.end_offsets.lock().ok().and_then(|e| {
                e.as_ref()
                    .map(|e| consumer.mine.iter().map(|&i| e[t][i]).collect())
            });
        }
        if let Some(ends) = &consumer.ends {
            if consumer.positions.iter().zip(ends).all(|(p, e)| p >= e) {
                break;
            }
        }
        for (leader, (conn, version)) in leaders.iter().zip(conns.iter_mut()) {
            consumer.fetch_from(leader, conn, *version)?;
        }
    }
    Ok(())
}

/// One consumer thread's partitions and where it is in them.
struct Consumer<'a> {
    ctx: &'a Ctx,
    /// The topic.
    t: usize,
    /// Its partition slots.
    mine: Vec<usize>,
    /// The next offset to consume, per partition of `mine`.
    positions: Vec<i64>,
    /// Where to stop, per partition of `mine`, once the producers have finished.
    ends: Option<Vec<i64>>,
    recorder: Recorder,
}

impl Consumer<'_> {
    /// One Fetch from `leader` for this consumer's partitions it leads that are not done.
    fn fetch_from(
        &mut self,
        leader: &str,
        conn: &mut Connection,
        version: i16,
    ) -> Result<(), String> {
        let (ctx, t) = (self.ctx, self.t);
        let w = &ctx.workload;
        let wanted: Vec<usize> = (0..self.mine.len())
            .filter(|&j| ctx.slots[t][self.mine[j]].leader_addr == leader)
            .filter(|&j| self.ends.as_ref().is_none_or(|e| self.positions[j] < e[j]))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let request = fetch_request(
            &wanted
                .iter()
                .map(|&j| FetchPosition {
                    topic: ctx.topics[t].clone(),
                    partition: ctx.slots[t][self.mine[j]].partition,
                    offset: self.positions[j],
                    partition_max_bytes: w.fetch_partition_max_bytes,
                })
                .collect::<Vec<_>>(),
            w.fetch_max_wait_ms,
            1,
            w.fetch_max_bytes,
        );
        let body = conn
            .request_raw(version, &request)
            .map_err(|e| format!("fetch from {leader}: {e}"))?;
        let now_ns = ctx.clock.now_ns();
        let view = parse_fetch_response(body, version).map_err(|e| e.to_string())?;
        if view.error_code != 0 {
            return Err(format!("fetch error {}", view.error_code));
        }
        for part in &view.partitions {
            let Some(j) = wanted
                .iter()
                .copied()
                .find(|&j| ctx.slots[t][self.mine[j]].partition == part.partition)
            else {
                continue;
            };
            if part.error_code != 0 {
                ctx.shared.error(format!(
                    "fetch {}-{}: error {} ({})",
                    part.topic,
                    part.partition,
                    part.error_code,
                    crate::error_name(part.error_code)
                ));
                thread::sleep(Duration::from_millis(100));
                continue;
            }
            self.take_records(j, part, now_ns)?;
        }
        self.recorder.flush_if_due();
        Ok(())
    }

    /// Counts the records of one fetched partition (`mine[j]`) past its position, checks each
    /// batch's CRC, records end-to-end latency, and moves the position on.
    fn take_records(
        &mut self,
        j: usize,
        part: &FetchedPartition<'_>,
        now_ns: u64,
    ) -> Result<(), String> {
        let s = &self.ctx.shared;
        let (mut messages, mut bytes) = (0u64, 0u64);
        for batch in batches(part.records) {
            let batch = batch.map_err(|e| e.to_string())?;
            if batch.next_offset() <= self.positions[j] {
                continue;
            }
            if !batch.crc_ok() {
                s.crc_errors.fetch_add(1, Ordering::Relaxed);
            }
            if batch.is_control() {
                self.positions[j] = batch.next_offset();
                continue;
            }
            let from = self.positions[j];
            let recorder = &mut self.recorder;
            batch
                .for_each_record(|offset, _ts, _key, value| {
                    if offset < from {
                        return;
                    }
                    messages += 1;
                    if let Some(v) = value {
                        bytes += v.len() as u64;
                        if v.len() >= 8 {
                            let mut sent = [0u8; 8];
                            sent.copy_from_slice(&v[..8]);
                            recorder.record(u64::from_be_bytes(sent), now_ns);
                        }
                    }
                })
                .map_err(|e| e.to_string())?;
            self.positions[j] = batch.next_offset();
        }
        s.consumed_msgs.fetch_add(messages, Ordering::Relaxed);
        s.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }
}
