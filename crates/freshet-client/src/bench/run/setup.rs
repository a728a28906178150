//! Before a run: the topics, their leaders, the log ends the counts start from, the filler.

use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::super::latency::Clock;
use super::super::workload::Workload;
use super::Slot;
use crate::admin::{self, NewTopic};
use crate::{ConnectOptions, Connection};

/// The topics of a run, where their partitions live and where their logs ended before it.
pub(super) struct Placement {
    /// Topic names.
    pub(super) topics: Vec<String>,
    /// Per topic, its partitions and their leaders.
    pub(super) slots: Vec<Vec<Slot>>,
    /// Per topic and partition, the log end offset before the run.
    pub(super) start_offsets: Vec<Vec<i64>>,
}

/// Connects to the bootstrap broker, creates the topics (unless the workload names one) and
/// waits for their leaders.
pub(super) fn prepare(
    w: &Workload,
    options: &ConnectOptions,
    clock: &Clock,
) -> Result<Placement, String> {
    let mut bootstrap = Connection::connect(&w.bootstrap, options)
        .map_err(|e| format!("connect to {}: {e}", w.bootstrap))?;
    let run_id = format!("{:08x}", (clock.origin_ns() / 1000) as u32);
    let topics: Vec<String> = match &w.topic {
        Some(t) => vec![t.clone()],
        None => (0..w.topics)
            .map(|i| format!("{}-{run_id}-{i}", w.topic_prefix))
            .collect(),
    };
    create_topics(&mut bootstrap, w, &topics)?;
    let slots = wait_for_leaders(&mut bootstrap, &topics)?;
    let start_offsets = log_ends(&slots, &topics, options)?;
    Ok(Placement {
        topics,
        slots,
        start_offsets,
    })
}

fn create_topics(conn: &mut Connection, w: &Workload, topics: &[String]) -> Result<(), String> {
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|name| NewTopic {
            name: name.clone(),
            partitions: w.partitions,
            replication_factor: w.replication_factor,
            configs: Vec::new(),
        })
        .collect();
    let results = admin::create_topics(conn, &new, 30_000).map_err(|e| e.to_string())?;
    for r in results {
        if r.error_code != 0 && r.error_code != admin::TOPIC_ALREADY_EXISTS {
            return Err(format!(
                "create topic {}: error {} {}",
                r.name,
                r.error_code,
                r.error_message.unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// Polls Metadata until every partition of `topics` has a leader (or 30 s pass).
fn wait_for_leaders(conn: &mut Connection, topics: &[String]) -> Result<Vec<Vec<Slot>>, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    loop {
        let md = admin::metadata(conn, Some(&names)).map_err(|e| e.to_string())?;
        let mut all = Vec::new();
        for name in topics {
            let slots: Vec<Slot> = md
                .topic(name)
                .filter(|t| t.error_code == 0)
                .map(|t| {
                    t.partitions
                        .iter()
                        .filter(|p| p.error_code == 0 && p.leader >= 0)
                        .filter_map(|p| {
                            md.broker(p.leader).map(|b| Slot {
                                partition: p.partition,
                                leader_addr: b.addr(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            all.push(slots);
        }
        let complete = all.iter().all(|s| !s.is_empty())
            && md.topics.iter().all(|t| {
                t.partitions
                    .iter()
                    .all(|p| p.leader >= 0 && p.error_code == 0)
            });
        if complete {
            return Ok(all);
        }
        if Instant::now() > deadline {
            return Err(format!("topics {topics:?} have no leaders after 30 s"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The log end offset of every partition, asked of each leader.
pub(super) fn log_ends(
    slots: &[Vec<Slot>],
    topics: &[String],
    options: &ConnectOptions,
) -> Result<Vec<Vec<i64>>, String> {
    let mut out = Vec::new();
    for (t, topic_slots) in slots.iter().enumerate() {
        let mut offsets = vec![0i64; topic_slots.len()];
        let mut leaders: Vec<&str> = topic_slots.iter().map(|s| s.leader_addr.as_str()).collect();
        leaders.sort_unstable();
        leaders.dedup();
        for leader in leaders {
            let mut conn =
                Connection::connect(leader, options).map_err(|e| format!("{leader}: {e}"))?;
            let indexes: Vec<usize> = (0..topic_slots.len())
                .filter(|&i| topic_slots[i].leader_addr == leader)
                .collect();
            let partitions: Vec<i32> = indexes.iter().map(|&i| topic_slots[i].partition).collect();
            // In a cluster the leader may install a new topic a moment after the broker that
            // created it: retry its "not here yet" answers for a while.
            let deadline = Instant::now() + Duration::from_secs(10);
            let ends = loop {
                match admin::list_offsets(&mut conn, &topics[t], &partitions, admin::LATEST) {
                    Err(crate::ClientError::Kafka {
                        code: 3 | 5 | 6, ..
                    }) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(100));
                    }
                    other => break other.map_err(|e| e.to_string())?,
                }
            };
            for (i, end) in indexes.into_iter().zip(ends) {
                offsets[i] = end;
            }
        }
        out.push(offsets);
    }
    Ok(out)
}

/// xorshift64* filler: incompressible, deterministic per run.
pub(super) fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}
