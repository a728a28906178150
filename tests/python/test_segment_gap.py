"""Issue 12 item 6 with kafka-python: a segment file removed from the middle of a partition
(offsets missing between two segments) must not hang consumers. Kafka answers a fetch inside
the gap with the next segment's batches; the consumer reads every remaining record, then new
records get offsets after the old end."""

import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

TOPIC = "segment-gap"
RECORDS = 1000


def test_kafka_python_consumer_reads_across_a_removed_middle_segment(make_broker):
    broker = make_broker(shards=1)
    admin = KafkaAdminClient(bootstrap_servers=broker.addr)
    admin.create_topics([NewTopic(TOPIC, 1, 1, topic_configs={"segment.bytes": "16384"})])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.addr, acks="all", linger_ms=0)
    for i in range(RECORDS):
        # One batch per record (each send waited for), so segments roll every ~100 records.
        producer.send(TOPIC, value=b"v-%06d-" % i + b"." * 100, partition=0).get(timeout=30)
    producer.close()
    assert broker.stop() == 0

    part = broker.data_dir / f"{TOPIC}-0"
    segments = sorted(part.glob("*.log"))
    assert len(segments) >= 5, segments
    gap_start = int(segments[2].stem)
    gap_end = int(segments[3].stem)
    segments[2].unlink()
    broker.start()

    consumer = KafkaConsumer(
        bootstrap_servers=broker.addr, enable_auto_commit=False, consumer_timeout_ms=1000
    )
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    expected = RECORDS - (gap_end - gap_start)
    got = {}
    deadline = time.monotonic() + 30
    while len(got) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for r in records:
                got[r.offset] = r.value
    consumer.close()
    assert len(got) == expected, (
        f"consumer stopped at {max(got) if got else None} (gap [{gap_start}, {gap_end}))\n"
        + broker.log_tail()
    )
    for offset, value in got.items():
        assert not gap_start <= offset < gap_end
        assert value.startswith(b"v-%06d-" % offset)

    producer = KafkaProducer(bootstrap_servers=broker.addr, acks="all")
    meta = producer.send(TOPIC, value=b"after", partition=0).get(timeout=30)
    producer.close()
    assert meta.offset == RECORDS
