"""confluent-kafka (librdkafka from the wheel) against a real freshet broker.

Most consumers here set a group.id but only use assign() with explicit offsets and never
commit; the group tests at the end subscribe and go through the group coordinator.
"""

import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicCollection, TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewPartitions, NewTopic, OffsetSpec, ResourceType)

T = 30  # seconds, for every client call


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.addr, "socket.timeout.ms": 20000})


def producer(broker, **conf):
    return Producer({"bootstrap.servers": broker.addr, "acks": "all", "linger.ms": 5,
                     "message.timeout.ms": 30000, **conf})


def consumer(broker, **conf):
    return Consumer({"bootstrap.servers": broker.addr, "group.id": "assign-only-never-joins",
                     "enable.auto.commit": False, "auto.offset.reset": "error",
                     "check.crcs": True, "fetch.wait.max.ms": 100, **conf})


def produce_all(p, messages):
    """messages: list of dicts of Producer.produce kwargs. Returns delivered Message objects."""
    delivered = []
    errors = []

    def on_delivery(err, msg):
        (errors if err else delivered).append(err or msg)

    for kw in messages:
        p.produce(on_delivery=on_delivery, **kw)
        p.poll(0)
    remaining = p.flush(T)
    assert remaining == 0, f"{remaining} messages not delivered within {T}s"
    assert not errors, errors[:5]
    return delivered


def consume(c, n, timeout=T):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"consumed {len(out)} of {n} within {timeout}s"
        m = c.poll(0.2)
        if m is None:
            continue
        assert m.error() is None, f"consumer error after {len(out)} messages: {m.error()}"
        out.append(m)
    return out


def create(broker, name, partitions=1, config=None):
    a = admin(broker)  # must outlive its futures
    futures = a.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=T, request_timeout=T)
    futures[name].result(timeout=T)


# Produce with each compression codec and consume back exactly, keys and headers included.
@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_each_codec_round_trips_values_keys_and_headers(broker, codec):
    topic = f"ck-{codec}"
    create(broker, topic, partitions=3)
    msgs = [dict(topic=topic, key=f"k{i % 7}".encode(), value=(f"{codec}-{i}-" * 30).encode(),
                 headers=[("i", str(i).encode()), ("none", None)]) for i in range(300)]
    delivered = produce_all(producer(broker, **{"compression.type": codec}), msgs)
    by_pos = {(m.partition(), m.offset()): m for m in delivered}
    assert len(by_pos) == 300
    c = consumer(broker)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
    got = consume(c, 300)
    c.close()
    for m in got:
        sent = by_pos[(m.partition(), m.offset())]
        assert (m.key(), m.value()) == (sent.key(), sent.value())
        i = m.value().decode().split("-")[1]
        assert m.headers() == [("i", i.encode()), ("none", None)]


# Admin: create (with configs, and validate_only), describe, list, duplicate, delete.
def test_admin_creates_describes_and_deletes_topics(broker):
    a = admin(broker)
    fs = a.create_topics([NewTopic("ck-a", 4, 1, config={"cleanup.policy": "compact"}),
                          NewTopic("ck-b", 1, 1)], operation_timeout=T)
    for f in fs.values():
        f.result(timeout=T)
    fs = a.create_topics([NewTopic("ck-dry", 2, 1)], validate_only=True)
    fs["ck-dry"].result(timeout=T)
    topics = a.list_topics(timeout=T).topics
    assert {"ck-a", "ck-b"} <= set(topics) and "ck-dry" not in topics
    assert len(topics["ck-a"].partitions) == 4
    assert all(p.leader == 0 for p in topics["ck-a"].partitions.values())

    desc = a.describe_topics(TopicCollection(["ck-a"]))["ck-a"].result(timeout=T)
    assert desc.name == "ck-a" and len(desc.partitions) == 4
    assert desc.topic_id is not None and str(desc.topic_id) != "AAAAAAAAAAAAAAAAAAAAAA", "topic id is zero"
    assert [p.id for p in desc.partitions] == [0, 1, 2, 3]

    with pytest.raises(KafkaException) as e:
        a.create_topics([NewTopic("ck-a", 4, 1)])["ck-a"].result(timeout=T)
    assert e.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    a.delete_topics(["ck-b"], operation_timeout=T)["ck-b"].result(timeout=T)
    assert "ck-b" not in a.list_topics(timeout=T).topics
    with pytest.raises(KafkaException) as e:
        a.delete_topics(["ck-b"])["ck-b"].result(timeout=T)
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


# CreatePartitions grows a topic.
def test_create_partitions_grows_topic(broker):
    create(broker, "ck-grow", 1)
    a = admin(broker)
    a.create_partitions([NewPartitions("ck-grow", 3)])["ck-grow"].result(timeout=T)
    assert len(a.list_topics("ck-grow", timeout=T).topics["ck-grow"].partitions) == 3
    [m] = produce_all(producer(broker), [dict(topic="ck-grow", value=b"x", partition=2)])
    assert (m.partition(), m.offset()) == (2, 0)


# Configs: describe defaults, alter (replace), incremental alter (set/delete), broker configs.
def test_configs_round_trip(broker):
    create(broker, "ck-cfg", 1, {"retention.ms": "86400000"})
    a = admin(broker)
    res = ConfigResource(ResourceType.TOPIC, "ck-cfg")

    def describe():
        return a.describe_configs([res])[res].result(timeout=T)

    cfg = describe()
    assert cfg["retention.ms"].value == "86400000"
    assert cfg["retention.ms"].source in (ConfigSource.DYNAMIC_TOPIC_CONFIG, ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert cfg["max.message.bytes"].value == "1048588" and cfg["max.message.bytes"].is_default
    assert cfg["cleanup.policy"].value == "delete"

    fs = a.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, "ck-cfg", incremental_configs=[
        ConfigEntry("segment.bytes", "33554432", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])])
    for f in fs.values():
        f.result(timeout=T)
    cfg = describe()
    assert cfg["segment.bytes"].value == "33554432"
    assert cfg["retention.ms"].value == "604800000" and cfg["retention.ms"].is_default

    fs = a.alter_configs([ConfigResource(ResourceType.TOPIC, "ck-cfg", set_config={"retention.bytes": "5000000"})])
    for f in fs.values():
        f.result(timeout=T)
    cfg = describe()
    assert cfg["retention.bytes"].value == "5000000"
    assert cfg["segment.bytes"].value == "1073741824", "AlterConfigs replaces the whole set"

    broker_res = ConfigResource(ResourceType.BROKER, "0")
    bcfg = a.describe_configs([broker_res])[broker_res].result(timeout=T)
    assert "num.partitions" in bcfg and "auto.create.topics.enable" in bcfg


# DescribeCluster names the one node, with the advertised address.
def test_describe_cluster_lists_this_node(broker):
    a = admin(broker)
    result = a.describe_cluster(request_timeout=T).result(timeout=T)
    assert [(n.id, n.host, n.port) for n in result.nodes] == [(0, "127.0.0.1", broker.port)]
    assert result.controller is not None and result.controller.id == 0
    assert result.cluster_id


# ListOffsets (earliest, latest, max timestamp, by timestamp) and DeleteRecords.
def test_list_offsets_and_delete_records(broker):
    create(broker, "ck-offsets", 1)
    base = int(time.time() * 1000) - 60_000
    produce_all(producer(broker), [dict(topic="ck-offsets", value=f"v{i}".encode(), timestamp=base + i * 1000)
                                   for i in range(10)])
    a = admin(broker)
    tp = TopicPartition("ck-offsets", 0)

    def offset(spec):
        return a.list_offsets({tp: spec}, request_timeout=T)[tp].result(timeout=T)

    assert offset(OffsetSpec.earliest()).offset == 0
    assert offset(OffsetSpec.latest()).offset == 10
    mx = offset(OffsetSpec.max_timestamp())
    assert (mx.offset, mx.timestamp) == (9, base + 9000)
    assert offset(OffsetSpec.for_timestamp(base + 4500)).offset == 5

    c = consumer(broker)
    assert c.get_watermark_offsets(tp, timeout=T) == (0, 10)
    [found] = c.offsets_for_times([TopicPartition("ck-offsets", 0, base + 2000)], timeout=T)
    assert found.offset == 2

    deleted = a.delete_records([TopicPartition("ck-offsets", 0, 4)], request_timeout=T)
    [f] = deleted.values()
    assert f.result(timeout=T).low_watermark == 4
    assert offset(OffsetSpec.earliest()).offset == 4
    c.assign([TopicPartition("ck-offsets", 0, OFFSET_BEGINNING)])
    [m] = consume(c, 1)
    assert (m.offset(), m.value()) == (4, b"v4")
    c.close()


# A value over the topic's max.message.bytes gets MSG_SIZE_TOO_LARGE from the broker.
def test_too_large_message_is_rejected_by_the_broker(broker):
    create(broker, "ck-limit", 1, {"max.message.bytes": "100000"})
    p = producer(broker, **{"message.max.bytes": 5_000_000, "retries": 0})
    errors = []
    p.produce("ck-limit", value=b"z" * 200_000, on_delivery=lambda err, msg: errors.append(err))
    p.produce("ck-limit", value=bytes(range(256)) * 800, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(T) == 0
    assert [e.code() if e else None for e in errors] == [KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.MSG_SIZE_TOO_LARGE]
    [m] = produce_all(p, [dict(topic="ck-limit", value=b"small")])
    assert m.offset() == 0


# Two consumers subscribed in one group end with disjoint assignments that cover every
# partition, and between them read every message (some twice across the rebalance at most).
@pytest.mark.timeout(60)
def test_two_consumers_in_a_group_split_the_partitions(make_broker):
    b = make_broker(shards=2)
    a = admin(b)
    a.create_topics([NewTopic("split-topic", 4, 1)])["split-topic"].result(T)
    p = producer(b)
    sent = [{"topic": "split-topic", "key": f"k{i}".encode(), "value": f"v{i}".encode()}
            for i in range(40)]
    delivered = produce_all(p, sent)
    assert len({m.partition() for m in delivered}) >= 2
    conf = {"bootstrap.servers": b.addr, "group.id": "split-group",
            "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100}
    consumers = [Consumer(conf), Consumer(conf)]
    for c in consumers:
        c.subscribe(["split-topic"])
    seen = set()
    deadline = time.monotonic() + 45
    try:
        while time.monotonic() < deadline:
            for c in consumers:
                m = c.poll(0.1)
                if m is not None and m.error() is None:
                    seen.add(m.value())
            parts = [{tp.partition for tp in c.assignment()} for c in consumers]
            if len(seen) == 40 and all(parts) and not (parts[0] & parts[1]) \
                    and parts[0] | parts[1] == {0, 1, 2, 3}:
                break
        parts = [{tp.partition for tp in c.assignment()} for c in consumers]
        assert all(parts), f"both consumers have partitions: {parts}"
        assert not (parts[0] & parts[1]), f"disjoint: {parts}"
        assert parts[0] | parts[1] == {0, 1, 2, 3}, f"complete: {parts}"
        assert seen == {m["value"] for m in sent}
    finally:
        for c in consumers:
            c.close()


# Admin view of groups: a group with committed offsets is listed and described; deleting it
# fails while a member is in it (NON_EMPTY_GROUP) and succeeds, offsets included, once empty.
@pytest.mark.timeout(60)
def test_admin_lists_describes_and_deletes_groups(make_broker):
    from confluent_kafka import ConsumerGroupTopicPartitions

    b = make_broker(shards=2)
    a = admin(b)
    produce_all(producer(b), [{"topic": "admin-topic", "value": b"x"}])
    conf = {"bootstrap.servers": b.addr, "group.id": "admin-group",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    c = Consumer(conf)
    c.subscribe(["admin-topic"])
    [m] = consume(c, 1)
    c.commit(message=m, asynchronous=False)

    listed = a.list_consumer_groups(request_timeout=T).result()
    assert "admin-group" in {g.group_id for g in listed.valid}
    described = a.describe_consumer_groups(["admin-group"], request_timeout=T)["admin-group"]
    d = described.result()
    assert d.state.name == "STABLE" and len(d.members) == 1
    assert d.members[0].host == "/127.0.0.1", "the client's address, as Kafka shows it"
    assert [tp.partition for tp in d.members[0].assignment.topic_partitions] == [0]
    busy = a.delete_consumer_groups(["admin-group"], request_timeout=T)["admin-group"]
    with pytest.raises(KafkaException) as e:
        busy.result()
    assert e.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
    c.close()

    offsets = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions("admin-group")],
                                            request_timeout=T)["admin-group"].result()
    assert [(tp.topic, tp.offset) for tp in offsets.topic_partitions] == [("admin-topic", 1)]
    a.delete_consumer_groups(["admin-group"], request_timeout=T)["admin-group"].result()
    listed = a.list_consumer_groups(request_timeout=T).result()
    assert "admin-group" not in {g.group_id for g in listed.valid}
    offsets = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions("admin-group")],
                                            request_timeout=T)["admin-group"].result()
    assert all(tp.offset < 0 for tp in offsets.topic_partitions)


# A member killed with SIGKILL (no LeaveGroup) is expired after its session timeout and its
# partitions move to the surviving member, which then reads every message.
@pytest.mark.timeout(60)
def test_killed_member_is_expired_and_its_partitions_move(make_broker):
    import subprocess
    import sys
    import textwrap

    b = make_broker(shards=2)
    a = admin(b)
    a.create_topics([NewTopic("expiry-topic", 2, 1)])["expiry-topic"].result(T)
    conf = {"bootstrap.servers": b.addr, "group.id": "expiry-group",
            "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500}
    script = textwrap.dedent(f"""
        import sys, time
        from confluent_kafka import Consumer
        c = Consumer({conf!r})
        c.subscribe(["expiry-topic"])
        while True:
            c.poll(0.2)
            if c.assignment():
                print("assigned", flush=True)
    """)
    victim = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    survivor = Consumer(conf)
    survivor.subscribe(["expiry-topic"])
    try:
        assert victim.stdout.readline().strip() == "assigned"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(survivor.assignment()) != 1:
            survivor.poll(0.2)
        assert len(survivor.assignment()) == 1, "the two members split the two partitions"
        victim.kill()
        victim.wait()
        produce_all(producer(b), [{"topic": "expiry-topic", "partition": p, "value": b"v%d" % p}
                                  for p in (0, 1)])
        seen = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(seen) < 2:
            m = survivor.poll(0.2)
            if m is not None and m.error() is None:
                seen.add(m.value())
        assert seen == {b"v0", b"v1"}
        assert len(survivor.assignment()) == 2
    finally:
        victim.kill()
        survivor.close()


# A static member (group.instance.id) that restarts gets its partitions back at once: the
# coordinator replaces the old incarnation instead of waiting for a rebalance.
@pytest.mark.timeout(60)
def test_static_member_restart_gets_its_partitions_back_at_once(make_broker):
    b = make_broker(shards=2)
    a = admin(b)
    a.create_topics([NewTopic("static-topic", 2, 1)])["static-topic"].result(T)
    conf = {"bootstrap.servers": b.addr, "group.id": "static-group",
            "group.instance.id": "instance-1", "auto.offset.reset": "earliest",
            "session.timeout.ms": 30000, "heartbeat.interval.ms": 500}

    def assigned_after():
        c = Consumer(conf)
        c.subscribe(["static-topic"])
        start = time.monotonic()
        while not c.assignment() and time.monotonic() - start < 30:
            c.poll(0.1)
        parts = sorted(tp.partition for tp in c.assignment())
        c.close()
        return parts, time.monotonic() - start

    assert assigned_after()[0] == [0, 1]
    parts, took = assigned_after()
    assert parts == [0, 1]
    assert took < 2, f"the restarted static member waited {took:.1f}s"


# The KIP-848 consumer protocol (group.protocol=consumer, librdkafka >= 2.12): a member killed
# with SIGKILL is removed when its session (the broker's group.consumer.session.timeout.ms)
# expires, and its partitions move to the surviving member, which reads every message; the
# survivor's commits carry its member epoch and are read back by the admin client.
@pytest.mark.timeout(90)
def test_consumer_protocol_killed_member_partitions_move(make_broker, tmp_path):
    import subprocess
    import sys
    import textwrap

    from confluent_kafka import ConsumerGroupTopicPartitions

    config = tmp_path / "freshet.toml"
    config.write_text("group_consumer_session_timeout_ms = 6000\n"
                      "group_consumer_heartbeat_interval_ms = 500\n")
    b = make_broker(shards=2, extra_args=["--config", str(config)])
    a = admin(b)
    a.create_topics([NewTopic("kip848-expiry", 4, 1)])["kip848-expiry"].result(T)
    conf = {"bootstrap.servers": b.addr, "group.id": "kip848-expiry-group",
            "group.protocol": "consumer", "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    script = textwrap.dedent(f"""
        from confluent_kafka import Consumer
        c = Consumer({conf!r})
        c.subscribe(["kip848-expiry"])
        said = False
        while True:
            c.poll(0.2)
            if c.assignment() and not said:
                print("assigned", flush=True)
                said = True
    """)
    victim = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    survivor = Consumer(conf)
    survivor.subscribe(["kip848-expiry"])
    try:
        # Keep polling the survivor while waiting: it must hand over partitions (an
        # incremental rebalance needs the application to poll).
        import select
        victim_assigned = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (victim_assigned
                                                   and len(survivor.assignment()) == 2):
            survivor.poll(0.1)
            if not victim_assigned and select.select([victim.stdout], [], [], 0)[0]:
                assert victim.stdout.readline().strip() == "assigned"
                victim_assigned = True
        assert victim_assigned
        assert len(survivor.assignment()) == 2, "the two members split the four partitions"
        # The admin client describes it with ConsumerGroupDescribe.
        d = a.describe_consumer_groups(["kip848-expiry-group"],
                                       request_timeout=T)["kip848-expiry-group"].result()
        assert d.type.name == "CONSUMER" and len(d.members) == 2
        assert sorted(tp.partition for m in d.members
                      for tp in m.assignment.topic_partitions) == [0, 1, 2, 3]
        victim.kill()
        victim.wait()
        killed_at = time.monotonic()
        produce_all(producer(b), [{"topic": "kip848-expiry", "partition": p, "value": b"v%d" % p}
                                  for p in range(4)])
        seen = {}
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and (len(seen) < 4 or len(survivor.assignment()) < 4):
            m = survivor.poll(0.2)
            if m is not None and m.error() is None:
                seen[m.value()] = m
        assert set(seen) == {b"v0", b"v1", b"v2", b"v3"}
        assert len(survivor.assignment()) == 4
        assert time.monotonic() - killed_at > 3, "partitions moved only after the session timeout"
        for m in seen.values():
            survivor.commit(message=m, asynchronous=False)
        offsets = a.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions("kip848-expiry-group")],
            request_timeout=T)["kip848-expiry-group"].result()
        assert sorted((tp.partition, tp.offset) for tp in offsets.topic_partitions) == \
            [(p, 1) for p in range(4)]
        busy = a.delete_consumer_groups(["kip848-expiry-group"],
                                        request_timeout=T)["kip848-expiry-group"]
        with pytest.raises(KafkaException) as e:
            busy.result()
        assert e.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
    finally:
        victim.kill()
        survivor.close()
    # Once the last member left, the group and its offsets can be deleted.
    a.delete_consumer_groups(["kip848-expiry-group"],
                             request_timeout=T)["kip848-expiry-group"].result()
    listed = a.list_consumer_groups(request_timeout=T).result()
    assert "kip848-expiry-group" not in {g.group_id for g in listed.valid}
