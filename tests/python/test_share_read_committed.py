"""`share.isolation.level=read_committed` (a GROUP config, KIP-932) with real clients: a
confluent-kafka ShareConsumer of a read_committed share group gets committed transactions'
records only, as Kafka 4.2's SharePartition hands them out: nothing at or past the last stable
offset (an open transaction holds back the records after it), aborted transactions' records
never (archived), control records never. A read_uncommitted group of the same topic gets every
data record. librdkafka's test 0177 checks the same. The same on 3 nodes, where each
partition's leader holds its share partitions.
"""

import time

import pytest
from confluent_kafka import Producer, ShareConsumer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)


def set_group_configs(b, group, configs):
    """IncrementalAlterConfigs SET on GROUP `group` (`b`: anything with `addr`)."""
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        for name, value in configs.items()])
    a = AdminClient({"bootstrap.servers": b.addr, "log_level": 0})
    a.incremental_alter_configs([resource])[resource].result(30)


def transactional(b, tid):
    p = Producer({"bootstrap.servers": b.addr, "transactional.id": tid, "log_level": 0})
    p.init_transactions(30)
    return p


def in_transaction(p, topic, values, commit):
    p.begin_transaction()
    for v in values:
        p.produce(topic, value=v.encode())
    assert p.flush(30) == 0
    if commit:
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)


def consume(c, want, timeout_s):
    """Values polled by ShareConsumer `c` (accepted) until `want` of them or the timeout."""
    got = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(got) < want:
        for m in c.poll(0.5):
            assert m.error() is None, m.error()
            got.append(m.value().decode())
    return got


def share_consumer(b, group, topic):
    c = ShareConsumer({"bootstrap.servers": b.addr, "group.id": group, "log_level": 0})
    c.subscribe([topic])
    return c


@pytest.mark.timeout(150)
def test_read_committed_share_group_skips_aborted_and_waits_for_open_transactions(make_broker):
    b = make_broker()
    a = AdminClient({"bootstrap.servers": b.addr, "log_level": 0})
    a.create_topics([NewTopic("tx", 1, 1)])["tx"].result(30)
    set_group_configs(b, "rc", {"share.auto.offset.reset": "earliest",
                                "share.isolation.level": "read_committed"})
    set_group_configs(b, "ru", {"share.auto.offset.reset": "earliest"})
    p = transactional(b, "t1")
    in_transaction(p, "tx", ["c0", "c1", "c2"], commit=True)
    in_transaction(p, "tx", ["a0", "a1"], commit=False)
    in_transaction(p, "tx", ["c3"], commit=True)
    # A transaction left open, and a plain record after it.
    q = transactional(b, "t2")
    q.begin_transaction()
    q.produce("tx", value=b"o0")
    assert q.flush(30) == 0
    plain = Producer({"bootstrap.servers": b.addr, "log_level": 0})
    plain.produce("tx", value=b"p0")
    assert plain.flush(30) == 0

    rc = share_consumer(b, "rc", "tx")
    try:
        got = consume(rc, 4, 30)
        assert got == ["c0", "c1", "c2", "c3"], got
        # Nothing past the open transaction's first offset (the last stable offset).
        more = consume(rc, 1, 4)
        assert more == [], more
        q.commit_transaction(30)
        more = consume(rc, 2, 30)
        assert more == ["o0", "p0"], more
    finally:
        rc.close()

    ru = share_consumer(b, "ru", "tx")
    try:
        # Every data record, the aborted ones too (no control records).
        got = consume(ru, 8, 30)
        assert got == ["c0", "c1", "c2", "a0", "a1", "c3", "o0", "p0"], got
    finally:
        ru.close()


class Addr:
    def __init__(self, addr):
        self.addr = addr


@pytest.mark.timeout(300)
def test_read_committed_share_group_on_three_brokers(make_cluster):
    from test_share_cluster import SETTINGS, create_topic
    cluster = make_cluster(3, settings=SETTINGS)
    b = Addr(cluster.bootstrap(cluster.running()))
    create_topic(cluster, "txc", 3)
    set_group_configs(b, "rc", {"share.isolation.level": "read_committed"})
    p = transactional(b, "tc")
    # Every partition: one committed, one aborted, one committed transaction.
    for values, commit in [(["c0", "c1", "c2"], True), (["a0", "a1", "a2"], False),
                           (["c3", "c4", "c5"], True)]:
        p.begin_transaction()
        for i, v in enumerate(values):
            p.produce("txc", value=v.encode(), partition=i)
        assert p.flush(30) == 0
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    c = ShareConsumer({"bootstrap.servers": b.addr, "group.id": "rc", "log_level": 0})
    c.subscribe(["txc"])
    try:
        got = consume(c, 6, 90)
        got += consume(c, 1, 4)
        assert sorted(got) == ["c0", "c1", "c2", "c3", "c4", "c5"], got
    finally:
        c.close()
