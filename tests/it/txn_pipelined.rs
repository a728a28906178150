//! A reproducer, found by librdkafka's 0103_transactions against 3 nodes
//! (`tests/librdkafka/run.sh --nodes 3`, subtest `do_test_fatal_idempo_error_without_kip360`):
//! a transactional producer that pipelines one-record batches (`batch.num.messages=1`, up to 5
//! in flight) into a partition gets OUT_OF_ORDER_SEQUENCE_NUMBER (fatal) at the start of a
//! transaction. Every batch that arrives before the transaction's first batch is appended
//! asks the transaction coordinator itself (`api::produce::verify_transaction`, KIP-890
//! verification), those questions were answered in any order, and the batches were appended
//! in the order of the answers, not of their sequence numbers (Kafka reads one request per
//! connection at a time, so its verifications never race). Fixed: transactional batches of a
//! partition take `Partition::txn_order` in arrival order, and one that asks the coordinator
//! keeps it until it is appended. This test failed 4 of 4 runs before the fix (the producer's
//! fatal OUT_OF_ORDER_SEQUENCE_NUMBER) and passed 4 of 4 after.

use crate::common;

use std::time::Duration;

use common::cluster::{ClusterOptions, TestCluster};
use common::within;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const TEST_LIMIT: Duration = Duration::from_secs(120);
const TXN_OP_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn pipelined_first_batches_of_a_transaction_keep_their_order() {
    within(TEST_LIMIT, || {
        let cluster = TestCluster::start(
            3,
            ClusterOptions {
                shards: 2,
                ..ClusterOptions::default()
            },
        );
        let topic = "txn-pipelined";
        let status = std::process::Command::new(common::broker_bin())
            .args(["-b", &cluster.bootstrap(), "topic", "create", topic])
            .args(["-p", "3", "-r", "3"])
            .status()
            .expect("freshet topic create");
        assert!(status.success());
        let producer: BaseProducer = cluster
            .client_config(&[0, 1, 2])
            .set("transactional.id", "txn-pipelined")
            .set("batch.num.messages", "1")
            .set("linger.ms", "0")
            .create()
            .expect("producer");
        producer.init_transactions(TXN_OP_TIMEOUT).expect("init");
        for txn in 0..20 {
            producer.begin_transaction().expect("begin");
            // Partitions led by every node: some verifications cross the network.
            for p in 0..3 {
                for i in 0..6 {
                    let value = format!("{txn}-{p}-{i}");
                    producer
                        .send(
                            BaseRecord::<(), str>::to(topic)
                                .payload(value.as_str())
                                .partition(p),
                        )
                        .map_err(|(e, _)| e)
                        .expect("enqueue");
                }
            }
            producer
                .commit_transaction(TXN_OP_TIMEOUT)
                .unwrap_or_else(|e| panic!("transaction {txn}: {e}"));
        }
    });
}
