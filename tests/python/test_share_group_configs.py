"""Per-group configs (Kafka's GROUP config resource) with real clients: confluent-kafka's
AdminClient sets `share.auto.offset.reset` on a share group, as librdkafka's share-consumer
tests (0170-0185) do before their first consumer joins, and its ShareConsumer then starts
where the group's setting says, also after a broker restart (the setting is in the metadata
log). Names Kafka does not know and values Kafka's checks refuse get INVALID_CONFIG.
`share.isolation.level=read_committed`: see test_share_read_committed.py.
"""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, ShareConsumer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)


def admin(b):
    return AdminClient({"bootstrap.servers": b.addr, "log_level": 0})


def set_group_config(b, group, name, value):
    """IncrementalAlterConfigs SET on GROUP `group`; raises KafkaException when refused."""
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
    a = admin(b)  # kept alive until the answer (a destroyed handle fails the future)
    a.incremental_alter_configs([resource])[resource].result(30)


def produce(b, topic, n):
    p = Producer({"bootstrap.servers": b.addr, "log_level": 0})
    for i in range(n):
        p.produce(topic, value=str(i).encode())
    assert p.flush(30) == 0


def first_records(b, group, topic, timeout_s=20):
    """The offsets a new ShareConsumer of `group` gets from `topic` within `timeout_s` (it
    accepts them)."""
    c = ShareConsumer({"bootstrap.servers": b.addr, "group.id": group, "log_level": 0})
    c.subscribe([topic])
    seen = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not seen:
            for m in c.poll(0.5):
                assert m.error() is None, m.error()
                seen.append(m.offset())
        return sorted(seen)
    finally:
        c.close()


@pytest.mark.timeout(120)
def test_share_auto_offset_reset_per_group_survives_a_restart(make_broker):
    # The broker default stays Kafka's `latest`.
    b = make_broker()
    a = admin(b)
    a.create_topics([NewTopic("jobs", 1, 1)])["jobs"].result(30)
    # Set before the group has any member, as librdkafka's tests do.
    set_group_config(b, "early", "share.auto.offset.reset", "earliest")
    b.kill()
    b.start()
    # DescribeConfigs on the group: the stored value, every other Kafka group config too.
    a = admin(b)
    resource = ConfigResource(ResourceType.GROUP, "early")
    described = a.describe_configs([resource])[resource].result(30)
    assert described["share.auto.offset.reset"].value == "earliest"
    assert "share.session.timeout.ms" in described, sorted(described)
    produce(b, "jobs", 5)
    # The records produced before the group's first fetch: only an `earliest` group sees them.
    assert first_records(b, "early", "jobs") == [0, 1, 2, 3, 4]
    # A group without the setting starts at the log end (the broker default): nothing.
    assert first_records(b, "late", "jobs", timeout_s=3) == []


@pytest.mark.timeout(60)
def test_unknown_and_bad_group_configs_are_invalid_config(make_broker):
    b = make_broker()
    for name, value, says in [
        ("no.such.config", "1", "Unknown group config name: no.such.config"),
        ("share.auto.offset.reset", "none", "String must be one of: latest, earliest"),
        ("share.record.lock.duration.ms", "1000", "must be greater than or equal to 15000"),
        ("share.isolation.level", "serializable",
         "String must be one of: read_committed, read_uncommitted"),
    ]:
        with pytest.raises(KafkaException) as refused:
            set_group_config(b, "g", name, value)
        error = refused.value.args[0]
        assert error.code() == KafkaError.INVALID_CONFIG, error
        assert says in error.str(), error
