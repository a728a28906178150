"""Incremental fetch sessions (KIP-227) with a real client that uses them: kafka-python (its
default `enable_incremental_fetch_sessions=True`, Fetch v12). librdkafka, confluent-kafka and
aiokafka send sessionless fetches (epoch -1), which the Rust tests cover with raw frames.

The consumer reads every message exactly once across many partitions while its fetches are
incremental (the broker holds its session, the client's epoch moves past 1)."""

import re
import urllib.request

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

TIMEOUT_MS = 30_000
PARTITIONS = 200


def metric_sum(broker, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if re.match(rf"^{name}[{{ ]", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def send(producer, topic, partitions, tag):
    for p in partitions:
        producer.send(topic, value=f"{tag}-{p}".encode(), partition=p)
    producer.flush(timeout=30)


def read(consumer, n):
    out = []
    for m in consumer:
        out.append((m.partition, m.value.decode()))
        if len(out) == n:
            break
    assert len(out) == n, f"read {len(out)} of {n} messages"
    return sorted(out)


def session_of(consumer):
    """kafka-python's session state for the one broker: (session id, next epoch)."""
    handlers = consumer._fetcher._session_handlers
    assert len(handlers) == 1
    metadata = next(iter(handlers.values())).next_metadata
    return metadata.session_id, metadata.epoch


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shards", [1, 2])
def test_kafka_python_consumes_through_an_incremental_session(make_broker, shards):
    b = make_broker(shards=shards)
    admin = KafkaAdminClient(bootstrap_servers=b.addr, request_timeout_ms=TIMEOUT_MS)
    admin.create_topics([NewTopic("many", PARTITIONS, 1)], timeout_ms=TIMEOUT_MS)
    admin.close()
    producer = KafkaProducer(bootstrap_servers=b.addr, acks="all", enable_idempotence=False,
                             request_timeout_ms=TIMEOUT_MS, max_block_ms=TIMEOUT_MS)
    send(producer, "many", range(PARTITIONS), "first")

    consumer = KafkaConsumer(bootstrap_servers=b.addr, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=20_000,
                             request_timeout_ms=TIMEOUT_MS, fetch_max_wait_ms=100)
    consumer.assign([TopicPartition("many", p) for p in range(PARTITIONS)])
    assert read(consumer, PARTITIONS) == sorted((p, f"first-{p}") for p in range(PARTITIONS))

    # Three partitions get more while the rest stay idle: the fetches stay incremental.
    send(producer, "many", [3, 77, 150], "second")
    assert read(consumer, 3) == [(3, "second-3"), (77, "second-77"), (150, "second-150")]
    session_id, epoch = session_of(consumer)
    assert session_id > 0 and epoch > 1, (session_id, epoch)
    assert metric_sum(b, "freshet_fetch_sessions") >= 1
    assert metric_sum(b, "freshet_fetch_session_partitions") >= PARTITIONS

    # Idle polls go on in the session, answering nothing.
    assert consumer.poll(timeout_ms=500) == {}
    assert session_of(consumer)[0] == session_id

    consumer.close()
    producer.close(timeout=10)
