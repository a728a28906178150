"""kafka-python (pure Python client) against a real freshet broker."""

import pathlib

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError

TIMEOUT_MS = 30_000


def producer(broker, **kw):
    # Idempotence is off here on purpose: these tests are about other features. kafka-python 3
    # turns idempotence on by default (it needs InitProducerId); the mission example below
    # keeps that default.
    return KafkaProducer(bootstrap_servers=broker.addr, request_timeout_ms=TIMEOUT_MS,
                         max_block_ms=TIMEOUT_MS, acks="all", enable_idempotence=False, **kw)


def assigned_consumer(broker, partitions, **kw):
    c = KafkaConsumer(bootstrap_servers=broker.addr, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=20_000,
                      request_timeout_ms=TIMEOUT_MS, **kw)
    c.assign(partitions)
    return c


def read(consumer, n):
    """Reads exactly n messages (consumer_timeout_ms bounds the wait)."""
    out = []
    for m in consumer:
        out.append(m)
        if len(out) == n:
            break
    assert len(out) == n, f"read {len(out)} of {n} messages"
    return out


# The mission example, with the producer's default settings: send to a topic that does not exist
# yet (auto-created), then an assigned consumer reading from the earliest offset gets it back.
def test_send_to_new_topic_auto_creates_it_and_assigned_consumer_reads_it_back(broker):
    p = KafkaProducer(bootstrap_servers=broker.addr)
    meta = p.send("test-topic", b"test-message").get(timeout=30)
    p.flush(timeout=30)
    p.close(timeout=10)
    assert meta.topic == "test-topic" and meta.offset == 0

    c = assigned_consumer(broker, [TopicPartition("test-topic", meta.partition)])
    [m] = read(c, 1)
    assert (m.topic, m.partition, m.offset, m.key, m.value) == ("test-topic", meta.partition, 0, None, b"test-message")
    assert c.poll(timeout_ms=500) == {}, "only one message was sent"
    c.close()


# The same round trip with a consumer group (subscribe + group_id), through the group coordinator.
@pytest.mark.timeout(60)
def test_group_consumer_reads_back_what_was_sent(make_broker):
    b = make_broker(shards=1)
    p = producer(b)
    p.send("group-topic", b"for the group").get(timeout=30)
    p.close(timeout=10)
    c = KafkaConsumer("group-topic", bootstrap_servers=b.addr, group_id="g1",
                      auto_offset_reset="earliest", consumer_timeout_ms=15_000)
    try:
        [m] = read(c, 1)
        assert m.value == b"for the group"
    finally:
        c.close()


# The mission example verbatim: the topic does not exist before the producer sends, and a
# consumer in group 'test-group' prints what was sent.
@pytest.mark.timeout(60)
def test_mission_example_group_consumer_prints_the_message(make_broker, capsys):
    b = make_broker(shards=2)
    p = KafkaProducer(bootstrap_servers=b.addr)
    p.send("test-topic", b"test-message")
    p.flush(timeout=30)
    p.close(timeout=10)
    consumer = KafkaConsumer("test-topic", bootstrap_servers=b.addr, group_id="test-group",
                             auto_offset_reset="earliest", consumer_timeout_ms=15_000)
    for message in consumer:
        print(message.value)
        break
    consumer.close()
    assert capsys.readouterr().out.strip() == "b'test-message'"


# Committed offsets are resumed by the next consumer of the group, and survive kill -9 of the
# broker (they are in the durable offsets log).
@pytest.mark.timeout(60)
def test_committed_offsets_survive_consumer_restart_and_broker_kill(make_broker):
    b = make_broker(shards=2)
    p = producer(b)
    for i in range(5):
        p.send("resume-topic", f"m{i}".encode()).get(timeout=30)
    p.close(timeout=10)

    def group_consumer():
        return KafkaConsumer("resume-topic", bootstrap_servers=b.addr, group_id="resume-group",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=15_000, request_timeout_ms=TIMEOUT_MS)

    c = group_consumer()
    assert [m.value for m in read(c, 3)] == [b"m0", b"m1", b"m2"]
    c.commit()
    c.close()
    c = group_consumer()
    [m] = read(c, 1)
    assert m.value == b"m3"
    c.commit()
    c.close()
    b.kill()
    b.start()
    c = group_consumer()
    [m] = read(c, 1)
    assert m.value == b"m4"
    c.close()


# One OffsetCommit of several partitions (a simple consumer: no group membership, generation
# -1) is stored whole, metadata strings included, and read back.
@pytest.mark.timeout(60)
def test_commit_of_several_partitions_at_once_reads_back(broker):
    from kafka.structs import OffsetAndMetadata

    admin = KafkaAdminClient(bootstrap_servers=broker.addr, request_timeout_ms=TIMEOUT_MS)
    admin.create_topics([NewTopic("multi-commit", 4, 1)])
    admin.close()
    c = KafkaConsumer(bootstrap_servers=broker.addr, group_id="multi-commit-group",
                      enable_auto_commit=False, request_timeout_ms=TIMEOUT_MS)
    tps = [TopicPartition("multi-commit", p) for p in range(4)]
    c.commit({tp: OffsetAndMetadata(10 + tp.partition, f"m{tp.partition}", -1) for tp in tps})
    for tp in tps:
        assert c.committed(tp) == 10 + tp.partition
        assert c.committed(tp, metadata=True).metadata == f"m{tp.partition}"
    c.close()


# Keyed messages over 4 partitions (gzip-compressed) keep their per-key order; headers survive.
def test_keyed_gzip_messages_keep_per_key_order_and_headers(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.addr, request_timeout_ms=TIMEOUT_MS)
    admin.create_topics({"kp-keyed": {"num_partitions": 4, "replication_factor": 1}})
    admin.close()
    p = producer(broker, compression_type="gzip", linger_ms=10)
    futures = []
    for seq in range(50):
        for k in range(8):
            futures.append(p.send("kp-keyed", key=f"k{k}".encode(), value=f"k{k}:{seq}".encode(),
                                  headers=[("seq", str(seq).encode()), ("empty", b"")]))
    metas = [f.get(timeout=30) for f in futures]
    p.close(timeout=10)
    assert len({m.partition for m in metas}) >= 2

    c = assigned_consumer(broker, [TopicPartition("kp-keyed", i) for i in range(4)])
    msgs = read(c, len(futures))
    c.close()
    last = {}
    part_of = {}
    for m in msgs:
        key = m.key.decode()
        k, seq = m.value.decode().split(":")
        assert k == key
        assert part_of.setdefault(key, m.partition) == m.partition
        assert int(seq) == last.get(key, -1) + 1, f"{key}: {seq} after {last.get(key)}"
        last[key] = int(seq)
        assert list(m.headers) == [("seq", seq.encode()), ("empty", b"")]
    assert all(v == 49 for v in last.values())


# KafkaAdminClient: create, list, describe, describe configs, delete.
def test_admin_client_creates_lists_describes_and_deletes_topics(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.addr, request_timeout_ms=TIMEOUT_MS)
    admin.create_topics({"kp-admin": {"num_partitions": 3, "replication_factor": 1,
                                      "configs": {"retention.ms": "123456"}}})
    assert "kp-admin" in admin.list_topics()
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics({"kp-admin": {"num_partitions": 3, "replication_factor": 1}})
    [desc] = admin.describe_topics(["kp-admin"])
    assert desc["error_code"] == 0 and desc["name"] == "kp-admin"
    assert sorted(p["partition_index"] for p in desc["partitions"]) == [0, 1, 2]
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-admin")],
                                     config_filter="all")
    entries = configs["topic"]["kp-admin"]
    assert entries["retention.ms"]["value"] == "123456"
    assert entries["cleanup.policy"]["value"] == "delete"
    modified = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-admin")])
    assert set(modified["topic"]["kp-admin"]) == {"retention.ms"}, "only retention.ms was set"
    admin.delete_topics(["kp-admin"])
    assert "kp-admin" not in admin.list_topics()
    admin.close()


# DescribeLogDirs reports the data directory and the size of each written partition;
# DescribeCluster names this one broker.
def test_admin_client_describes_log_dirs_and_cluster(broker):
    p = producer(broker)
    for i in range(20):
        p.send("kp-logdirs", b"x" * 1000, partition=0)
    p.flush(timeout=30)
    p.close(timeout=10)
    admin = KafkaAdminClient(bootstrap_servers=broker.addr, request_timeout_ms=TIMEOUT_MS)
    [per_broker] = admin.describe_log_dirs()
    assert per_broker["broker"] == 0
    [log_dir] = per_broker["log_dirs"]
    assert log_dir["error_code"] == 0
    assert pathlib.Path(log_dir["log_dir"]).resolve() == broker.data_dir.resolve()
    topics = {t["name"]: t for t in log_dir["topics"]}
    [part] = topics["kp-logdirs"]["partitions"]
    assert part["partition_index"] == 0 and part["partition_size"] >= 20 * 1000
    cluster = admin.describe_cluster()
    assert [b["broker_id"] for b in cluster["brokers"]] == [0]
    assert cluster["controller_id"] == 0 and cluster["cluster_id"]
    admin.close()
