"""Dynamic broker configs (issue 12, item 17; librdkafka's test 0081) with confluent-kafka's
AdminClient against a real freshet broker.

Kafka accepts AlterConfigs / IncrementalAlterConfigs on the BROKER resource (name = node id, or
"" for the cluster-wide default) for the configs its DynamicBrokerConfig lists, persists them,
describes them with source DYNAMIC_BROKER_CONFIG / DYNAMIC_DEFAULT_BROKER_CONFIG and applies the
log configs to every topic without its own override. Static configs are refused with
INVALID_REQUEST.

confluent-kafka refuses a ConfigResource with an empty name, so the cluster-wide default ("")
is tested with raw requests in tests/fetchadmin_configs.rs; here everything is per node.
"""

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewTopic, ResourceType)

T = 30  # seconds, for every client call


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.addr, "socket.timeout.ms": 20000})


def source(entry):
    return ConfigSource(getattr(entry.source, "value", entry.source))


def incremental(a, resource_name, ops):
    """IncrementalAlterConfigs of the BROKER resource; returns the exception or None."""
    res = ConfigResource(ResourceType.BROKER, resource_name, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=op) for name, value, op in ops])
    try:
        for f in a.incremental_alter_configs([res]).values():
            f.result(timeout=T)
    except KafkaException as e:
        return e
    return None


def describe(a, kind, name):
    res = ConfigResource(kind, name)
    return a.describe_configs([res])[res].result(timeout=T)


def keyless_produce_error(broker, topic):
    """Produces one record without a key; returns the delivery error (None if stored)."""
    p = Producer({"bootstrap.servers": broker.addr, "acks": "all", "retries": 0,
                  "message.timeout.ms": 20000})
    errors = []
    p.produce(topic, b"no key", on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(T) == 0
    return errors[0]


def test_dynamic_broker_configs_are_accepted_persisted_described_and_applied(make_broker):
    broker = make_broker(shards=2)
    a = admin(broker)
    SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE

    # What 0081 sets: accepted (before the fix: INVALID_REQUEST "Cannot update these configs
    # dynamically").
    legacy = ConfigResource(ResourceType.BROKER, "0",
                            set_config={"sasl.kerberos.min.time.before.relogin": "50000",
                                        "num.io.threads": "6"})
    for f in a.alter_configs([legacy]).values():
        f.result(timeout=T)
    assert incremental(a, "0", [("sasl.kerberos.min.time.before.relogin", "58000", SET),
                                ("background.threads", "4", SET),
                                ("log.cleanup.policy", "compact", SET),
                                ("log.retention.ms", "3600000", SET)]) is None

    # What Kafka refuses stays refused, with its error.
    for name, ops in [("0", [("log.dirs", "/elsewhere", SET)]),
                      ("0", [("num.partitions", "7", SET)]),
                      ("0", [("background.threads", "0", SET)])]:
        e = incremental(a, name, ops)
        assert e is not None and e.args[0].code() == KafkaError.INVALID_REQUEST, (name, ops, e)

    topic = "dyn-defaults"
    for f in a.create_topics([NewTopic(topic, 2, 1)], operation_timeout=T).values():
        f.result(timeout=T)

    def check(a):
        node = describe(a, ResourceType.BROKER, "0")
        assert node["sasl.kerberos.min.time.before.relogin"].value == "58000"
        assert source(node["sasl.kerberos.min.time.before.relogin"]) == ConfigSource.DYNAMIC_BROKER_CONFIG
        assert node["num.io.threads"].value == "6"
        assert node["background.threads"].value == "4"
        assert not node["background.threads"].is_read_only
        assert node["log.cleanup.policy"].value == "compact"
        assert source(node["log.cleanup.policy"]) == ConfigSource.DYNAMIC_BROKER_CONFIG
        assert node["num.partitions"].is_read_only

        # Acted on: the topic has no override, so it runs with the broker's dynamic log
        # configs: it is compacted and refuses records without a key.
        cfg = describe(a, ResourceType.TOPIC, topic)
        assert cfg["cleanup.policy"].value == "compact"
        assert source(cfg["cleanup.policy"]) == ConfigSource.DYNAMIC_BROKER_CONFIG
        assert cfg["retention.ms"].value == "3600000"
        error = keyless_produce_error(broker, topic)
        assert error is not None and error.code() == KafkaError.INVALID_RECORD, error

    check(a)
    broker.stop()
    broker.start()
    check(admin(broker))  # persisted across the restart

    # Deleting the dynamic config puts the topic back on the static default.
    a = admin(broker)
    assert incremental(a, "0", [("log.cleanup.policy", None, DELETE)]) is None
    assert describe(a, ResourceType.TOPIC, topic)["cleanup.policy"].value == "delete"
    assert keyless_produce_error(broker, topic) is None
