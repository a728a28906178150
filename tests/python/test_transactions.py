"""Exactly-once with confluent-kafka (librdkafka from the wheel): idempotent and transactional
producers against a real freshet broker."""

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

T = 30  # seconds, for every client call


def create_topic(broker, name, partitions):
    admin = AdminClient({"bootstrap.servers": broker.addr})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                                  operation_timeout=T)
    futures[name].result(T)


def read_all(broker, topic, partitions, isolation):
    """Values of every record up to the end (LSO for read_committed), as a sorted list."""
    c = Consumer({"bootstrap.servers": broker.addr, "group.id": "txn-reader",
                  "enable.auto.commit": False, "isolation.level": isolation,
                  "enable.partition.eof": True, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out, eof = [], set()
    deadline = time.monotonic() + T
    while len(eof) < partitions:
        assert time.monotonic() < deadline, f"reading {topic} timed out"
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
            eof.add(m.partition())
            continue
        out.append(m.value().decode())
    c.close()
    return sorted(out)


def txn_producer(broker, transactional_id, **conf):
    p = Producer({"bootstrap.servers": broker.addr, "transactional.id": transactional_id,
                  "linger.ms": 2, **conf})
    p.init_transactions(T)
    return p


def send(p, topic, partitions, values):
    for i, v in enumerate(values):
        p.produce(topic, value=v.encode(), partition=i % partitions)
    assert p.flush(T) == 0


def test_committed_and_aborted_transactions(broker):
    """read_committed sees committed transactions only; read_uncommitted sees both."""
    create_topic(broker, "py-txn", 3)
    p = txn_producer(broker, "py-txn-1")
    committed = [f"c-{i:03}" for i in range(30)]
    aborted = [f"a-{i:03}" for i in range(30)]
    p.begin_transaction()
    send(p, "py-txn", 3, committed)
    p.commit_transaction(T)
    p.begin_transaction()
    send(p, "py-txn", 3, aborted)
    p.abort_transaction(T)
    assert read_all(broker, "py-txn", 3, "read_committed") == committed
    assert read_all(broker, "py-txn", 3, "read_uncommitted") == sorted(committed + aborted)


def test_consume_transform_produce_commits_offsets_atomically(broker):
    """The exactly-once loop: consume, produce the transformed records and send the consumer's
    offsets in one transaction; an aborted round leaves offsets and output untouched."""
    create_topic(broker, "py-in", 1)
    create_topic(broker, "py-out", 1)
    plain = Producer({"bootstrap.servers": broker.addr})
    for i in range(10):
        plain.produce("py-in", value=f"in-{i}".encode(), partition=0)
    assert plain.flush(T) == 0

    group = "py-eos"
    c = Consumer({"bootstrap.servers": broker.addr, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    c.subscribe(["py-in"])
    p = txn_producer(broker, "py-eos-1")

    def round_trip(n, commit):
        msgs = []
        deadline = time.monotonic() + T
        while len(msgs) < n:
            assert time.monotonic() < deadline, "input not consumed"
            m = c.poll(0.2)
            if m is not None and not m.error():
                msgs.append(m)
        p.begin_transaction()
        for m in msgs:
            p.produce("py-out", value=m.value().replace(b"in", b"out"), partition=0)
        offsets = [TopicPartition("py-in", 0, msgs[-1].offset() + 1)]
        p.send_offsets_to_transaction(offsets, c.consumer_group_metadata(), T)
        if commit:
            p.commit_transaction(T)
        else:
            p.abort_transaction(T)
        return msgs

    round_trip(5, commit=True)
    assert c.committed([TopicPartition("py-in", 0)], T)[0].offset == 5
    round_trip(5, commit=False)
    assert c.committed([TopicPartition("py-in", 0)], T)[0].offset == 5, "abort kept the offset"
    c.close()
    assert read_all(broker, "py-out", 1, "read_committed") == [f"out-{i}" for i in range(5)]


def test_idempotent_producer_delivers_once(broker):
    """enable.idempotence: every message once, in order per partition."""
    create_topic(broker, "py-idem", 2)
    p = Producer({"bootstrap.servers": broker.addr, "enable.idempotence": True, "linger.ms": 2})
    values = [f"m-{i:04}" for i in range(2000)]
    send(p, "py-idem", 2, values)
    assert read_all(broker, "py-idem", 2, "read_uncommitted") == values


def test_second_producer_fences_the_first(broker):
    create_topic(broker, "py-fence", 1)
    zombie = txn_producer(broker, "py-fence-1")
    zombie.begin_transaction()
    send(zombie, "py-fence", 1, ["zombie"])
    fresh = txn_producer(broker, "py-fence-1")
    try:
        zombie.commit_transaction(T)
        raise AssertionError("the fenced producer committed")
    except KafkaException as e:
        assert e.args[0].fatal() or e.args[0].txn_requires_abort(), e
    fresh.begin_transaction()
    send(fresh, "py-fence", 1, ["fresh"])
    fresh.commit_transaction(T)
    assert read_all(broker, "py-fence", 1, "read_committed") == ["fresh"]
