"""Classic-group session expiry is on time (issue 12, item 18).

librdkafka's 0081 test closes static members (which send no LeaveGroup) and deletes their groups
one session timeout later; the broker's expiry used to wait for a 250 ms tick that also wrote
group snapshots, expired offsets and compacted the offsets log, and ran 1.0-1.2 s late, so
DeleteGroups got NON_EMPTY_GROUP. Here each static member heartbeats every 10 ms (so its session
ends within a few ms of close + session timeout) and its group is deleted 50 ms after that.
"""

import time

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

SESSION_TIMEOUT_MS = 6_000  # Kafka's group.min.session.timeout.ms
GROUPS = 4
# How long after close + session timeout DeleteGroups is sent (less than one old tick).
DELETE_AFTER_EXPIRY_S = 0.05


@pytest.mark.timeout(120)
def test_delete_groups_just_after_static_members_session_ends_succeeds(make_broker):
    b = make_broker(shards=1)
    topic = "timers"
    admin = AdminClient({"bootstrap.servers": b.addr, "log_level": 0})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    groups = [f"static-{i}" for i in range(GROUPS)]
    consumers = []
    for i, g in enumerate(groups):
        c = Consumer({
            "bootstrap.servers": b.addr,
            "group.id": g,
            "group.protocol": "classic",
            "group.instance.id": f"instance-{i}",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": 10,
            "log_level": 0,
        })
        c.subscribe([topic])
        consumers.append(c)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(c.assignment() for c in consumers):
        for c in consumers:
            c.poll(0.05)
    assert all(c.assignment() for c in consumers), "every static member has its partitions"
    # Committed offsets keep an empty group known (as the consumers of 0081 commit theirs).
    for c in consumers:
        c.commit(offsets=[TopicPartition(tp.topic, tp.partition, 0) for tp in c.assignment()],
                 asynchronous=False)

    # Closed one after another, 70 ms apart, so the expiries fall at different points of any
    # periodic tick.
    closed_at = []
    for c in consumers:
        c.close()
        closed_at.append(time.monotonic())
        time.sleep(0.07)

    results = []
    for g, t in zip(groups, closed_at):
        time.sleep(max(0.0, t + SESSION_TIMEOUT_MS / 1000 + DELETE_AFTER_EXPIRY_S - time.monotonic()))
        sent = time.monotonic() - t
        try:
            admin.delete_consumer_groups([g], request_timeout=10)[g].result(15)
            results.append((g, round(sent, 3), "deleted"))
        except KafkaException as e:
            results.append((g, round(sent, 3), e.args[0].name()))
    print(f"DeleteGroups at close + session timeout + {DELETE_AFTER_EXPIRY_S}s: {results}")
    assert all(r[2] == "deleted" for r in results), results
