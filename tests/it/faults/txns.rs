//! The fault suite's transactional workload: one rdkafka transactional producer writes
//! transactions of [`VALUES_PER_TXN`] values (`t<txn>-<i>`) over the partitions of
//! [`TXN_TOPIC`], committing most and aborting every [`ABORT_EVERY`]th on purpose, and records
//! each transaction's outcome as the client saw it (committed, aborted, or unknown when the
//! client could not tell). After the run the topic is read back with
//! `isolation.level=read_committed`; [`super::checker::check_txns`] checks it.

use super::checker::{TxnHistory, TxnOutcome};
use super::{workload_config, CALL_TIMEOUT};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The topic the transactions write (apart from the idempotent workload's, whose checker
/// allows no offset gaps: transaction markers take offsets).
pub const TXN_TOPIC: &str = "jepsen-txn";
/// Values per transaction, spread round-robin over the partitions.
const VALUES_PER_TXN: usize = 6;
/// Every this many transactions, one is aborted on purpose.
const ABORT_EVERY: u64 = 4;
/// Pause between two transactions.
const TXN_INTERVAL: Duration = Duration::from_millis(30);
/// The coordinator aborts a transaction left open this long (the producer's
/// `transaction.timeout.ms`), so that a transaction left open by a fault does not hold the
/// last stable offset back for the final read.
const TXN_TIMEOUT_MS: &str = "10000";
/// How long the final read may take (it waits for open transactions to time out).
const FINAL_READ_WITHIN: Duration = Duration::from_secs(30);

/// What the transactional producer thread shares with the test.
#[derive(Default)]
pub struct TxnShared {
    pub history: Mutex<TxnHistory>,
    pub stop: AtomicBool,
}

fn new_producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    workload_config(bootstrap)
        .set("transactional.id", "jepsen-txn-producer")
        .set("transaction.timeout.ms", TXN_TIMEOUT_MS)
        .set("message.timeout.ms", TXN_TIMEOUT_MS)
        .set("linger.ms", "5")
        .create()
        .expect("transactional producer")
}

/// `init_transactions` until it works or the workload stops (the coordinator may be down).
fn ready_producer(
    bootstrap: &str,
    shared: &TxnShared,
) -> Option<ThreadedProducer<DefaultProducerContext>> {
    while !shared.stop.load(Ordering::Relaxed) {
        let producer = new_producer(bootstrap);
        match producer.init_transactions(CALL_TIMEOUT) {
            Ok(()) => return Some(producer),
            Err(e) => {
                eprintln!("txn workload: init_transactions: {e}");
                thread::sleep(Duration::from_millis(500));
            }
        }
    }
    None
}

/// Ends the open transaction: commit (retried while retriable) or abort. Returns the outcome
/// and whether the producer must be replaced (a fatal error).
fn finish_txn(
    producer: &ThreadedProducer<DefaultProducerContext>,
    commit: bool,
) -> (TxnOutcome, bool) {
    let txn_error = |e: &KafkaError| match e {
        KafkaError::Transaction(r) => (r.is_retriable(), r.txn_requires_abort(), r.is_fatal()),
        _ => (false, false, true),
    };
    if commit {
        for _ in 0..3 {
            match producer.commit_transaction(CALL_TIMEOUT) {
                Ok(()) => return (TxnOutcome::Committed, false),
                Err(e) => {
                    eprintln!("txn workload: commit: {e}");
                    let (retriable, requires_abort, fatal) = txn_error(&e);
                    if fatal {
                        return (TxnOutcome::Unknown, true);
                    }
                    if requires_abort || !retriable {
                        break;
                    }
                }
            }
        }
    }
    for _ in 0..3 {
        match producer.abort_transaction(CALL_TIMEOUT) {
            Ok(()) => return (TxnOutcome::Aborted, false),
            Err(e) => {
                eprintln!("txn workload: abort: {e}");
                let (retriable, _, fatal) = txn_error(&e);
                if fatal || !retriable {
                    return (TxnOutcome::Unknown, true);
                }
            }
        }
    }
    (TxnOutcome::Unknown, true)
}

/// The transactional producer thread: transactions until told to stop; the last one ended
/// before returning.
pub fn produce_transactions(bootstrap: String, partitions: i32, shared: Arc<TxnShared>) {
    let Some(mut producer) = ready_producer(&bootstrap, &shared) else {
        return;
    };
    let mut txn: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        txn += 1;
        let values: Vec<String> = (0..VALUES_PER_TXN).map(|i| format!("t{txn}-{i}")).collect();
        shared
            .history
            .lock()
            .unwrap()
            .sent
            .insert(txn, values.clone());
        let outcome = match producer.begin_transaction() {
            Err(e) => {
                eprintln!("txn workload: begin: {e}");
                (TxnOutcome::Unknown, true)
            }
            Ok(()) => {
                let mut sent = true;
                for (i, v) in values.iter().enumerate() {
                    let record = BaseRecord::<(), String>::to(TXN_TOPIC)
                        .partition(i as i32 % partitions)
                        .payload(v);
                    if let Err((e, _)) = producer.send(record) {
                        eprintln!("txn workload: send {v}: {e}");
                        sent = false;
                        break;
                    }
                }
                let commit = sent && !txn.is_multiple_of(ABORT_EVERY);
                if !commit {
                    // Written to the log first (librdkafka's abort drops what it has not
                    // sent yet): read_committed must skip these records, not just miss them.
                    let _ = producer.flush(CALL_TIMEOUT);
                }
                finish_txn(&producer, commit)
            }
        };
        shared
            .history
            .lock()
            .unwrap()
            .outcomes
            .insert(txn, outcome.0);
        if outcome.1 {
            match ready_producer(&bootstrap, &shared) {
                Some(p) => producer = p,
                None => return,
            }
        }
        thread::sleep(TXN_INTERVAL);
    }
}

/// Reads [`TXN_TOPIC`] with read_committed from the start until every partition's position
/// reached its last stable offset and nothing came for a while (open transactions time out
/// meanwhile): the values read, in order, per partition.
pub fn final_read(bootstrap: &str, partitions: i32) -> Vec<(i32, i64, String)> {
    let consumer: BaseConsumer = workload_config(bootstrap)
        .set("group.id", "jepsen-txn-final-reader")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("read_committed consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(TXN_TOPIC, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let probe: BaseConsumer = workload_config(bootstrap)
        .set("group.id", "jepsen-txn-final-reader")
        .create()
        .expect("read_uncommitted probe");
    let mut out = Vec::new();
    let deadline = Instant::now() + FINAL_READ_WITHIN;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                out.push((m.partition(), m.offset(), value));
                quiet_since = Instant::now();
            }
            Some(Err(e)) => eprintln!("txn final read: {e}"),
            None => {}
        }
        if quiet_since.elapsed() < Duration::from_secs(3) {
            continue;
        }
        // Quiet, and no transaction open any more (the last stable offset, which a
        // read_committed ListOffsets answers, is the end of every partition): all read.
        let ends = |c: &BaseConsumer, p: i32| {
            c.fetch_watermarks(TXN_TOPIC, p, Duration::from_secs(5))
                .map(|(_, h)| h)
                .ok()
        };
        if (0..partitions)
            .all(|p| ends(&consumer, p).is_some() && ends(&consumer, p) == ends(&probe, p))
        {
            break;
        }
        quiet_since = Instant::now();
    }
    out
}
