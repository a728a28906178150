//! The fault suite's checker: a pure function from a recorded [`History`] to the list of
//! [`Violation`]s it contains, in the spirit of Jepsen's Kafka queue checker.
//!
//! A history holds what the clients saw, nothing the brokers say about themselves:
//! - `acked`: every record a producer got an acknowledgement for (value -> partition, offset);
//! - `attempted`: every value a producer ever sent (acknowledged, failed or unanswered); a
//!   failed or unanswered send may or may not be in the log, so it is allowed but not required;
//! - `live_reads`: what consumers read during the run (partition, offset, value);
//! - `commits`: committed offsets as consumers read them back, per (group, partition), in the
//!   order they were observed;
//! - `final_reads`: each partition read from its log start to its high watermark after every
//!   fault was healed, in the order the consumer delivered the records, with the log start and
//!   the end the read stopped at.
//!
//! The properties (each broken one is a [`Violation`]):
//! 1. every acknowledged record is read back, at the partition and offset it was acknowledged
//!    at (`Lost`, `WrongOffset`);
//! 2. exactly once: no value is in the log twice (`Duplicate`), except where the client
//!    itself re-sent it as a new record: copies written by one producer id under different
//!    producer epochs ([`split_resent`]). A broker deduplicates by (producer id, epoch,
//!    sequence) and cannot tell such a re-send from a new record; librdkafka makes them when it
//!    bumps its epoch (KIP-360) after a message timed out on one partition while retries of
//!    possibly persisted batches wait on another: it renumbers those retries under the new
//!    epoch (librdkafka issue 4953; Apache Kafka brokers get the same copies). Those are
//!    counted and reported, not failures;
//! 3. per partition, offsets strictly increase and have no gaps (the workload has neither
//!    transactions nor compaction, the only sources of legitimate gaps), starting at the log
//!    start and ending at the end the reader stopped at (`NotIncreasing`, `Gap`);
//! 4. nothing is read that no producer sent (`Phantom`);
//! 5. a record a consumer saw during the run is still there afterwards, same offset, same
//!    value (`LiveReadGone`);
//! 6. a group's committed offset for a partition never goes backwards (`CommitBackwards`).
//!
//! Transactions ([`check_txns`], over a [`TxnHistory`] and a read_committed read of their
//! topic): no value of a transaction the client aborted is read (`AbortedRead`); every value of
//! a committed one is (`CommittedMissing`); a transaction whose outcome the client could not
//! tell is read whole or not at all (`PartialTxn`); no value twice (`Duplicate`), none that no
//! transaction sent (`Phantom`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// A record's place in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// One partition read from its log start to its end after the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionRead {
    /// The log start offset when the read began (0 unless something deleted records).
    pub log_start: i64,
    /// The offset the read stopped at (the high watermark it read up to, exclusive).
    pub end: i64,
    /// (offset, value) in the order the consumer delivered them.
    pub records: Vec<(i64, String)>,
}

/// Everything the clients of one run saw; see the module doc.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub acked: BTreeMap<String, Position>,
    pub attempted: BTreeSet<String>,
    pub live_reads: Vec<(Position, String)>,
    /// (group, partition) -> committed offsets in the order observed.
    pub commits: BTreeMap<(String, i32), Vec<i64>>,
    pub final_reads: BTreeMap<i32, PartitionRead>,
}

/// The producer that wrote a batch, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerEpoch {
    pub id: i64,
    pub epoch: i16,
}

/// Splits off the duplicates the client made by re-sending a value under a new producer
/// epoch: every copy written by the same producer id (≥ 0), each under a different epoch
/// (`writers`: who wrote each position). Returns the other violations and how many values
/// were such re-sends. A copy whose writer is unknown, a non-idempotent writer (id -1), or two
/// copies under one epoch stay violations: that is the broker failing to deduplicate.
pub fn split_resent(
    violations: Vec<Violation>,
    writers: &BTreeMap<Position, ProducerEpoch>,
) -> (Vec<Violation>, usize) {
    let mut resent = 0;
    let kept = violations
        .into_iter()
        .filter(|v| {
            let Violation::Duplicate { at, .. } = v else {
                return true;
            };
            let copies: Option<Vec<ProducerEpoch>> =
                at.iter().map(|p| writers.get(p).copied()).collect();
            let Some(copies) = copies else {
                return true;
            };
            let one_producer = copies.iter().all(|c| c.id >= 0 && c.id == copies[0].id);
            let epochs: BTreeSet<i16> = copies.iter().map(|c| c.epoch).collect();
            let is_resend = one_producer && epochs.len() == copies.len();
            resent += usize::from(is_resend);
            !is_resend
        })
        .collect();
    (kept, resent)
}

/// How a transaction ended, as its producer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    Committed,
    Aborted,
    /// The client could not tell (a fatal error, or the abort failed too).
    Unknown,
}

/// What the transactional producer did: each transaction's values and its outcome.
#[derive(Debug, Clone, Default)]
pub struct TxnHistory {
    pub sent: BTreeMap<u64, Vec<String>>,
    pub outcomes: BTreeMap<u64, TxnOutcome>,
}

/// The transaction properties (module doc) of `read`: (partition, offset, value) as a
/// read_committed consumer read the transactions' topic after the run.
pub fn check_txns(history: &TxnHistory, read: &[(i32, i64, String)]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut txn_of: HashMap<&str, u64> = HashMap::new();
    for (txn, values) in &history.sent {
        for v in values {
            txn_of.insert(v.as_str(), *txn);
        }
    }
    let mut seen: BTreeMap<&str, Vec<Position>> = BTreeMap::new();
    for (partition, offset, value) in read {
        let at = Position {
            partition: *partition,
            offset: *offset,
        };
        seen.entry(value.as_str()).or_default().push(at);
        match txn_of.get(value.as_str()) {
            None => out.push(Violation::Phantom {
                value: value.clone(),
                at,
            }),
            Some(txn) if history.outcomes.get(txn) == Some(&TxnOutcome::Aborted) => {
                out.push(Violation::AbortedRead {
                    value: value.clone(),
                    at,
                })
            }
            Some(_) => {}
        }
    }
    for (value, at) in &seen {
        if at.len() > 1 {
            out.push(Violation::Duplicate {
                value: value.to_string(),
                at: at.clone(),
            });
        }
    }
    for (txn, values) in &history.sent {
        let read_count = values
            .iter()
            .filter(|v| seen.contains_key(v.as_str()))
            .count();
        match history
            .outcomes
            .get(txn)
            .copied()
            .unwrap_or(TxnOutcome::Unknown)
        {
            TxnOutcome::Committed if read_count < values.len() => {
                out.push(Violation::CommittedMissing {
                    txn: *txn,
                    missing: values
                        .iter()
                        .filter(|v| !seen.contains_key(v.as_str()))
                        .cloned()
                        .collect(),
                })
            }
            TxnOutcome::Unknown if read_count != 0 && read_count != values.len() => {
                out.push(Violation::PartialTxn {
                    txn: *txn,
                    read: read_count,
                    of: values.len(),
                })
            }
            _ => {}
        }
    }
    out
}

/// A broken property; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged record is nowhere in the log.
    Lost { value: String, acked: Position },
    /// An acknowledged record is in the log, but not where it was acknowledged.
    WrongOffset {
        value: String,
        acked: Position,
        found: Position,
    },
    /// A value is in the log more than once.
    Duplicate { value: String, at: Vec<Position> },
    /// A partition's offsets, as read, did not strictly increase.
    NotIncreasing {
        partition: i32,
        after: i64,
        got: i64,
    },
    /// Offsets missing from a partition (`from..to`, exclusive end).
    Gap { partition: i32, from: i64, to: i64 },
    /// A value no producer sent.
    Phantom { value: String, at: Position },
    /// A record read during the run is not in the log afterwards (or another one is there).
    LiveReadGone {
        value: String,
        at: Position,
        now: Option<String>,
    },
    /// A committed offset observed lower than one observed before it.
    CommitBackwards {
        group: String,
        partition: i32,
        before: i64,
        after: i64,
    },
    /// An acknowledged record's partition was not read at all after the run.
    PartitionNotRead { partition: i32 },
    /// A read_committed consumer read a value of a transaction its producer aborted.
    AbortedRead { value: String, at: Position },
    /// Values of a committed transaction a read_committed consumer did not read.
    CommittedMissing { txn: u64, missing: Vec<String> },
    /// A transaction of unknown outcome read in part.
    PartialTxn { txn: u64, read: usize, of: usize },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost { value, acked } => write!(
                f,
                "lost: {value} acknowledged at {}/{} is not in the log",
                acked.partition, acked.offset
            ),
            Violation::WrongOffset {
                value,
                acked,
                found,
            } => write!(
                f,
                "wrong offset: {value} acknowledged at {}/{} is at {}/{}",
                acked.partition, acked.offset, found.partition, found.offset
            ),
            Violation::Duplicate { value, at } => write!(f, "duplicate: {value} at {at:?}"),
            Violation::NotIncreasing {
                partition,
                after,
                got,
            } => write!(
                f,
                "partition {partition}: offset {got} read after {after} (not increasing)"
            ),
            Violation::Gap {
                partition,
                from,
                to,
            } => write!(f, "partition {partition}: offsets {from}..{to} missing"),
            Violation::Phantom { value, at } => write!(
                f,
                "phantom: {value} at {}/{} was never sent",
                at.partition, at.offset
            ),
            Violation::LiveReadGone { value, at, now } => write!(
                f,
                "read during the run and later gone: {value} at {}/{} (now {now:?})",
                at.partition, at.offset
            ),
            Violation::CommitBackwards {
                group,
                partition,
                before,
                after,
            } => write!(
                f,
                "group {group} partition {partition}: committed offset went from {before} to {after}"
            ),
            Violation::PartitionNotRead { partition } => {
                write!(f, "partition {partition} holds acknowledged records but was not read")
            }
            Violation::AbortedRead { value, at } => {
                write!(f, "read_committed read {value} of an aborted transaction at {at:?}")
            }
            Violation::CommittedMissing { txn, missing } => {
                write!(f, "committed transaction {txn}: {missing:?} not read")
            }
            Violation::PartialTxn { txn, read, of } => {
                write!(f, "transaction {txn} of unknown outcome read in part: {read} of {of}")
            }
        }
    }
}

/// Every violation in `history`, ordered by kind then position (empty: the run is valid).
pub fn check(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    let (log, where_is) = check_partitions(history, &mut out);
    check_acked(history, &log, &where_is, &mut out);
    check_live_reads(history, &log, &mut out);
    check_commits(history, &mut out);
    out
}

/// Properties 2-4 over the final reads; returns the log as read (position -> value) and every
/// position of each value.
#[allow(clippy::type_complexity)]
fn check_partitions(
    history: &History,
    out: &mut Vec<Violation>,
) -> (BTreeMap<Position, String>, HashMap<String, Vec<Position>>) {
    let mut log = BTreeMap::new();
    let mut where_is: HashMap<String, Vec<Position>> = HashMap::new();
    for (&partition, read) in &history.final_reads {
        let mut expected = read.log_start;
        let mut last: Option<i64> = None;
        for (offset, value) in &read.records {
            let at = Position {
                partition,
                offset: *offset,
            };
            if let Some(prev) = last.filter(|prev| offset <= prev) {
                out.push(Violation::NotIncreasing {
                    partition,
                    after: prev,
                    got: *offset,
                });
                continue;
            }
            if *offset > expected {
                out.push(Violation::Gap {
                    partition,
                    from: expected,
                    to: *offset,
                });
            }
            expected = offset + 1;
            last = Some(*offset);
            if !history.attempted.contains(value) {
                out.push(Violation::Phantom {
                    value: value.clone(),
                    at,
                });
            }
            where_is.entry(value.clone()).or_default().push(at);
            log.insert(at, value.clone());
        }
        if read.end > expected {
            out.push(Violation::Gap {
                partition,
                from: expected,
                to: read.end,
            });
        }
    }
    let mut duplicates: Vec<Violation> = where_is
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(value, at)| Violation::Duplicate {
            value: value.clone(),
            at: at.clone(),
        })
        .collect();
    duplicates.sort_by_key(|v| match v {
        Violation::Duplicate { at, .. } => at[0],
        _ => unreachable!(),
    });
    out.extend(duplicates);
    (log, where_is)
}

/// Property 1.
fn check_acked(
    history: &History,
    log: &BTreeMap<Position, String>,
    where_is: &HashMap<String, Vec<Position>>,
    out: &mut Vec<Violation>,
) {
    let mut unread = BTreeSet::new();
    for (value, &acked) in &history.acked {
        if !history.final_reads.contains_key(&acked.partition) {
            unread.insert(acked.partition);
            continue;
        }
        if log.get(&acked) == Some(value) {
            continue;
        }
        match where_is.get(value).and_then(|at| at.first()) {
            Some(&found) => out.push(Violation::WrongOffset {
                value: value.clone(),
                acked,
                found,
            }),
            None => out.push(Violation::Lost {
                value: value.clone(),
                acked,
            }),
        }
    }
    out.extend(
        unread
            .into_iter()
            .map(|partition| Violation::PartitionNotRead { partition }),
    );
}

/// Property 5 (a live read of a partition not read afterwards is reported by property 1's
/// `PartitionNotRead` when it matters, so it is skipped here).
fn check_live_reads(history: &History, log: &BTreeMap<Position, String>, out: &mut Vec<Violation>) {
    let mut seen = BTreeSet::new();
    for (at, value) in &history.live_reads {
        let Some(read) = history.final_reads.get(&at.partition) else {
            continue;
        };
        // Below the log start the record may have been deleted on purpose (retention).
        if at.offset < read.log_start || !seen.insert((*at, value.clone())) {
            continue;
        }
        let now = log.get(at);
        if now != Some(value) {
            out.push(Violation::LiveReadGone {
                value: value.clone(),
                at: *at,
                now: now.cloned(),
            });
        }
    }
}

/// Property 6.
fn check_commits(history: &History, out: &mut Vec<Violation>) {
    for ((group, partition), offsets) in &history.commits {
        let mut highest: Option<i64> = None;
        for &offset in offsets {
            if let Some(before) = highest.filter(|&h| offset < h) {
                out.push(Violation::CommitBackwards {
                    group: group.clone(),
                    partition: *partition,
                    before,
                    after: offset,
                });
            }
            highest = Some(highest.map_or(offset, |h| h.max(offset)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(partition: i32, offset: i64) -> Position {
        Position { partition, offset }
    }

    /// Two partitions, four acknowledged records, one unacknowledged send that made it in,
    /// live reads and commits all consistent.
    fn valid() -> History {
        let mut h = History::default();
        for (value, p, o) in [("a", 0, 0), ("b", 0, 1), ("c", 1, 0), ("d", 1, 2)] {
            h.acked.insert(value.into(), pos(p, o));
        }
        for v in ["a", "b", "c", "d", "maybe", "never-arrived"] {
            h.attempted.insert(v.into());
        }
        h.final_reads.insert(
            0,
            PartitionRead {
                log_start: 0,
                end: 2,
                records: vec![(0, "a".into()), (1, "b".into())],
            },
        );
        h.final_reads.insert(
            1,
            PartitionRead {
                log_start: 0,
                end: 3,
                records: vec![(0, "c".into()), (1, "maybe".into()), (2, "d".into())],
            },
        );
        h.live_reads = vec![(pos(0, 0), "a".into()), (pos(1, 1), "maybe".into())];
        h.commits.insert(("g".into(), 0), vec![-1, 1, 1, 2]);
        h
    }

    #[test]
    fn a_valid_history_passes() {
        assert_eq!(check(&valid()), vec![]);
    }

    #[test]
    fn a_lost_acknowledged_record_fails() {
        let mut h = valid();
        h.final_reads.get_mut(&0).unwrap().records.pop();
        h.final_reads.get_mut(&0).unwrap().end = 1;
        assert_eq!(
            check(&h),
            vec![Violation::Lost {
                value: "b".into(),
                acked: pos(0, 1)
            }]
        );
    }

    #[test]
    fn an_acknowledged_record_at_another_offset_fails() {
        let mut h = valid();
        // Same log length, "b" and "a" swapped: both at the wrong offset.
        h.final_reads.get_mut(&0).unwrap().records = vec![(0, "b".into()), (1, "a".into())];
        let v = check(&h);
        assert!(v.contains(&Violation::WrongOffset {
            value: "b".into(),
            acked: pos(0, 1),
            found: pos(0, 0)
        }));
        assert!(v.contains(&Violation::WrongOffset {
            value: "a".into(),
            acked: pos(0, 0),
            found: pos(0, 1)
        }));
        // And the live read of "a" at 0/0 is gone.
        assert!(v
            .iter()
            .any(|x| matches!(x, Violation::LiveReadGone { .. })));
    }

    #[test]
    fn a_record_in_another_partition_is_a_wrong_offset() {
        let mut h = valid();
        h.acked.insert("b".into(), pos(1, 1));
        let v = check(&h);
        assert!(v.contains(&Violation::WrongOffset {
            value: "b".into(),
            acked: pos(1, 1),
            found: pos(0, 1)
        }));
    }

    #[test]
    fn a_duplicate_fails_even_when_both_copies_are_unacknowledged() {
        let mut h = valid();
        let p0 = h.final_reads.get_mut(&0).unwrap();
        p0.records.push((2, "maybe".into()));
        p0.end = 3;
        assert_eq!(
            check(&h),
            vec![Violation::Duplicate {
                value: "maybe".into(),
                at: vec![pos(0, 2), pos(1, 1)]
            }]
        );
    }

    #[test]
    fn a_retried_acknowledged_record_written_twice_fails() {
        let mut h = valid();
        let p0 = h.final_reads.get_mut(&0).unwrap();
        p0.records.push((2, "b".into()));
        p0.end = 3;
        assert_eq!(
            check(&h),
            vec![Violation::Duplicate {
                value: "b".into(),
                at: vec![pos(0, 1), pos(0, 2)]
            }]
        );
    }

    #[test]
    fn only_copies_under_different_epochs_of_one_producer_are_resends() {
        let dup = |at: Vec<Position>| Violation::Duplicate {
            value: "v".into(),
            at,
        };
        let w = |id, epoch| ProducerEpoch { id, epoch };
        let writers: BTreeMap<Position, ProducerEpoch> = [
            (pos(0, 1), w(7, 0)),
            (pos(0, 5), w(7, 2)),
            (pos(0, 6), w(7, 2)),
            (pos(1, 3), w(8, 3)),
            (pos(1, 4), w(-1, -1)),
            (pos(1, 5), w(-1, -1)),
        ]
        .into();
        let all = vec![
            dup(vec![pos(0, 1), pos(0, 5)]), // a re-send under a new epoch
            dup(vec![pos(0, 5), pos(0, 6)]), // one epoch twice: the broker's
            dup(vec![pos(0, 1), pos(1, 3)]), // two producers
            dup(vec![pos(1, 4), pos(1, 5)]), // not idempotent
            dup(vec![pos(0, 1), pos(2, 0)]), // a copy nobody wrote
        ];
        let (kept, resent) = split_resent(all.clone(), &writers);
        assert_eq!(resent, 1);
        assert_eq!(kept, all[1..].to_vec());
    }

    #[test]
    fn transactions_are_all_or_nothing_and_aborted_ones_unseen() {
        let values = |t: u64| -> Vec<String> { (0..2).map(|i| format!("t{t}-{i}")).collect() };
        let mut h = TxnHistory::default();
        for (t, o) in [
            (1, TxnOutcome::Committed),
            (2, TxnOutcome::Aborted),
            (3, TxnOutcome::Unknown),
            (4, TxnOutcome::Unknown),
        ] {
            h.sent.insert(t, values(t));
            h.outcomes.insert(t, o);
        }
        let r = |p: i32, o: i64, v: &str| (p, o, v.to_string());
        let good = vec![
            r(0, 0, "t1-0"),
            r(1, 0, "t1-1"),
            r(0, 5, "t3-0"),
            r(1, 5, "t3-1"),
        ];
        assert_eq!(check_txns(&h, &good), vec![]);
        let bad = vec![
            r(0, 0, "t1-0"),   // t1-1 missing
            r(0, 2, "t2-0"),   // aborted
            r(0, 5, "t3-0"),   // t3 in part
            r(0, 6, "t3-0"),   // twice
            r(0, 7, "nobody"), // phantom
        ];
        let v = check_txns(&h, &bad);
        for expected in [
            Violation::CommittedMissing {
                txn: 1,
                missing: vec!["t1-1".into()],
            },
            Violation::AbortedRead {
                value: "t2-0".into(),
                at: pos(0, 2),
            },
            Violation::Phantom {
                value: "nobody".into(),
                at: pos(0, 7),
            },
            Violation::Duplicate {
                value: "t3-0".into(),
                at: vec![pos(0, 5), pos(0, 6)],
            },
        ] {
            assert!(v.contains(&expected), "{expected} not in {v:?}");
        }
        assert!(v.contains(&Violation::PartialTxn {
            txn: 3,
            read: 1,
            of: 2
        }));
        assert_eq!(v.len(), 5, "{v:?}");
    }

    #[test]
    fn offsets_going_backwards_or_repeating_fail() {
        let mut h = valid();
        h.final_reads.get_mut(&1).unwrap().records =
            vec![(0, "c".into()), (2, "d".into()), (1, "maybe".into())];
        let v = check(&h);
        assert!(v.contains(&Violation::NotIncreasing {
            partition: 1,
            after: 2,
            got: 1
        }));
        let mut h = valid();
        h.final_reads.get_mut(&0).unwrap().records =
            vec![(0, "a".into()), (0, "a".into()), (1, "b".into())];
        assert_eq!(
            check(&h),
            vec![Violation::NotIncreasing {
                partition: 0,
                after: 0,
                got: 0
            }]
        );
    }

    #[test]
    fn a_gap_fails_inside_at_the_start_and_at_the_end() {
        let mut h = valid();
        // Offset 1 of partition 1 ("maybe", never acknowledged) missing.
        h.final_reads.get_mut(&1).unwrap().records.remove(1);
        assert_eq!(
            check(&h),
            vec![
                Violation::Gap {
                    partition: 1,
                    from: 1,
                    to: 2
                },
                Violation::LiveReadGone {
                    value: "maybe".into(),
                    at: pos(1, 1),
                    now: None
                }
            ]
        );
        let mut h = valid();
        h.final_reads.get_mut(&0).unwrap().end = 4;
        assert_eq!(
            check(&h),
            vec![Violation::Gap {
                partition: 0,
                from: 2,
                to: 4
            }]
        );
        let mut h = valid();
        let p0 = h.final_reads.get_mut(&0).unwrap();
        p0.records.remove(0);
        p0.log_start = 0;
        h.live_reads.clear();
        assert_eq!(
            check(&h),
            vec![
                Violation::Gap {
                    partition: 0,
                    from: 0,
                    to: 1
                },
                Violation::Lost {
                    value: "a".into(),
                    acked: pos(0, 0)
                }
            ]
        );
    }

    #[test]
    fn a_value_nobody_sent_fails() {
        let mut h = valid();
        let p0 = h.final_reads.get_mut(&0).unwrap();
        p0.records.push((2, "ghost".into()));
        p0.end = 3;
        assert_eq!(
            check(&h),
            vec![Violation::Phantom {
                value: "ghost".into(),
                at: pos(0, 2)
            }]
        );
    }

    #[test]
    fn a_record_read_during_the_run_and_replaced_later_fails() {
        let mut h = valid();
        // A consumer saw "x" at 1/1 (sent, never acknowledged); afterwards "maybe" is there.
        h.attempted.insert("x".into());
        h.live_reads.push((pos(1, 1), "x".into()));
        assert_eq!(
            check(&h),
            vec![Violation::LiveReadGone {
                value: "x".into(),
                at: pos(1, 1),
                now: Some("maybe".into())
            }]
        );
        // Read during the run past what is left afterwards: truncated away.
        let mut h = valid();
        h.attempted.insert("y".into());
        h.live_reads.push((pos(0, 2), "y".into()));
        assert_eq!(
            check(&h),
            vec![Violation::LiveReadGone {
                value: "y".into(),
                at: pos(0, 2),
                now: None
            }]
        );
    }

    #[test]
    fn a_committed_offset_going_backwards_fails() {
        let mut h = valid();
        h.commits.insert(("g".into(), 1), vec![5, 7, 6, 8]);
        h.commits.insert(("g".into(), 2), vec![3, -1]);
        assert_eq!(
            check(&h),
            vec![
                Violation::CommitBackwards {
                    group: "g".into(),
                    partition: 1,
                    before: 7,
                    after: 6
                },
                Violation::CommitBackwards {
                    group: "g".into(),
                    partition: 2,
                    before: 3,
                    after: -1
                }
            ]
        );
    }

    #[test]
    fn an_unread_partition_with_acknowledged_records_fails() {
        let mut h = valid();
        h.final_reads.remove(&1);
        assert_eq!(
            check(&h),
            vec![Violation::PartitionNotRead { partition: 1 }]
        );
    }

    #[test]
    fn records_deleted_below_the_log_start_are_not_gaps() {
        let mut h = valid();
        let p1 = h.final_reads.get_mut(&1).unwrap();
        p1.log_start = 1;
        p1.records.remove(0);
        h.acked.remove("c");
        assert_eq!(check(&h), vec![]);
    }
}
