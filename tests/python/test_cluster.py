"""Issue 13 with confluent-kafka against 3 real `freshet` processes (the `cluster` fixture).

The harness test, then confluent-kafka clients against the cluster.
"""

import signal

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def test_harness_gives_each_node_its_ports_dir_and_lifecycle(make_cluster):
    c = make_cluster(3, wait_for_cluster=False)
    addrs = [f(n) for n in range(3) for f in (c.kafka_addr, c.controller_addr, c.admin_addr)]
    assert len(set(addrs)) == 9, addrs
    assert c.voters.count("@") == 3
    for node in range(3):
        assert f"{node}@{c.controller_addr(node)}" in c.voters.split(",")
        assert len(c.metadata(node).brokers) >= 1
        assert c.data_dir(node).is_dir()
    c.kill9(1)
    assert c.running() == [0, 2]
    c.restart(1)
    assert len(c.metadata(1).brokers) >= 1
    assert c.stop(2, signal.SIGTERM) == 0
    assert c.running() == [0, 1]


def test_produce_and_consume_through_every_broker(cluster):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    futures = admin.create_topics([NewTopic("py-spread", num_partitions=12, replication_factor=1)],
                                  request_timeout=15)
    futures["py-spread"].result(timeout=30)
    def led_partitions():
        topic = cluster.metadata(0).topics.get("py-spread")
        if topic is None or len(topic.partitions) != 12:
            return (False, topic)
        leaders = sorted(p.leader for p in topic.partitions.values())
        return leaders if min(leaders) >= 0 else (False, leaders)

    leaders = cluster.wait_until(led_partitions, 15, "py-spread to have 12 led partitions")
    assert leaders == [0] * 4 + [1] * 4 + [2] * 4, leaders
    sent = set()
    for node in range(3):
        producer = Producer({"bootstrap.servers": cluster.bootstrap([node]), "acks": "all"})
        errors = []
        for i in range(36):
            value = f"via-{node}-{i}"
            producer.produce("py-spread", value=value, partition=i % 12,
                             on_delivery=lambda err, msg: err and errors.append(err))
            sent.add(value)
        assert producer.flush(30) == 0 and not errors, errors
        consumer = Consumer({"bootstrap.servers": cluster.bootstrap([node]),
                             "group.id": f"py-reader-{node}", "enable.auto.commit": False})
        consumer.assign([TopicPartition("py-spread", p, 0) for p in range(12)])
        read = set()

        def read_all():
            for m in consumer.consume(100, 0.5):
                if m.error() is None:
                    read.add(m.value().decode())
            return read == sent or (False, f"{len(read)} of {len(sent)}")

        cluster.wait_until(read_all, 30, f"the records via node {node}")
        consumer.close()


def test_killed_controller_is_replaced_and_create_topics_works(cluster):
    old = cluster.wait_controller(15)
    cluster.kill9(old)
    new = cluster.wait_controller(15, not_node=old)
    survivors = cluster.running()
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(survivors)})

    def created():
        f = admin.create_topics([NewTopic("py-after", 1, 1)], request_timeout=5)["py-after"]
        try:
            f.result(timeout=10)
            return True
        except Exception as e:  # NOT_CONTROLLER while the election settles
            if "TOPIC_ALREADY_EXISTS" in str(e):
                return True
            return (False, repr(e))

    cluster.wait_until(created, 15, f"CreateTopics after node {new} took over from {old}")
