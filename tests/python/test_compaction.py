"""Log compaction with kafka-python (pure Python client): an idempotent producer (kafka-python
3's default) writes many values for a few keys and a tombstone to a compacted topic; after the
segments roll and the broker's cleaner runs, a consumer from the beginning sees exactly the
latest value of each key at the offset it was written at (the gaps, empty batches kept for the
producer's state, and rewritten compressed batches do not trouble it), and the tombstone goes
after delete.retention.ms."""

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from conftest import wait_until

TOPIC = "compacted-py"
TIMEOUT_MS = 30_000


def read_all(broker):
    tp = TopicPartition(TOPIC, 0)
    c = KafkaConsumer(bootstrap_servers=broker.addr, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", request_timeout_ms=TIMEOUT_MS)
    c.assign([tp])
    end = c.end_offsets([tp])[tp]
    c.seek_to_beginning(tp)
    out = []
    deadline = time.monotonic() + 30
    while not out or out[-1][0] < end - 1:
        assert time.monotonic() < deadline, f"did not reach offset {end - 1}: {out[-3:]}"
        for msgs in c.poll(timeout_ms=500).values():
            out.extend((m.offset, m.key.decode(), None if m.value is None else m.value.decode())
                       for m in msgs)
    c.close()
    return [r for r in out if r[1] != "filler"]


@pytest.mark.timeout(90)
def test_compacted_topic_keeps_latest_value_per_key(make_broker, tmp_path):
    config = tmp_path / "broker.toml"
    config.write_text("log_cleaner_backoff_ms = 200\n")
    b = make_broker(shards=1, extra_args=["--config", str(config)])
    admin = KafkaAdminClient(bootstrap_servers=b.addr, request_timeout_ms=TIMEOUT_MS)
    admin.create_topics([NewTopic(TOPIC, 1, 1, topic_configs={
        "cleanup.policy": "compact", "segment.bytes": "4096", "segment.ms": "1000",
        "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "6000"})])
    admin.close()

    p = KafkaProducer(bootstrap_servers=b.addr, acks="all", compression_type="gzip", linger_ms=5,
                      request_timeout_ms=TIMEOUT_MS)
    futures = []
    for v in range(100):
        for k in range(5):
            futures.append((f"k{k}", f"k{k}-value-{v}",
                            p.send(TOPIC, key=f"k{k}".encode(), value=f"k{k}-value-{v}".encode(),
                                   partition=0)))
    latest = {}
    for key, value, f in futures:
        latest[key] = (f.get(timeout=30).offset, value)
    latest["k2"] = (p.send(TOPIC, key=b"k2", value=None, partition=0).get(timeout=30).offset, None)
    time.sleep(1.2)  # segment.ms passes: the next record rolls the segment
    p.send(TOPIC, key=b"filler", value=b"last", partition=0).get(timeout=30)
    p.close(timeout=10)

    with_tombstone = sorted((o, k, v) for k, (o, v) in latest.items())
    without = [r for r in with_tombstone if r[2] is not None]
    seen = []

    def compacted():
        got = read_all(b)
        seen.append(got == with_tombstone)
        return got == without

    wait_until(compacted, 40, "the compacted log without the tombstone")
    assert any(seen), "the tombstone was never served alone before delete.retention.ms passed"
