"""ACLs and the authorizer (issue 15) with real clients against a real freshet broker:
confluent-kafka's AdminClient creates, describes and deletes ACLs (librdkafka's test 0081
ACL part does the same), and kafka-python and confluent-kafka get Kafka's authorization
errors on the operations the ACLs deny. Every connection is User:ANONYMOUS until SASL exists.
"""

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                   AclPermissionType, AdminClient, NewTopic,
                                   ResourcePatternType, ResourceType)

T = 30  # seconds, for every client call
ANON = "User:ANONYMOUS"


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.addr, "socket.timeout.ms": 20000})


def binding(rtype, name, pattern, op, perm, principal=ANON):
    return AclBinding(rtype, name, pattern, principal, "*", op, perm)


def test_admin_client_creates_describes_and_deletes_acls(make_broker):
    broker = make_broker(extra_args=["--authorizer", "on", "--super-users", ANON])
    a = admin(broker)
    acls = [
        binding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, AclOperation.READ,
                AclPermissionType.ALLOW, "User:alice"),
        binding(ResourceType.TOPIC, "logs-", ResourcePatternType.PREFIXED, AclOperation.WRITE,
                AclPermissionType.ALLOW, "User:alice"),
        binding(ResourceType.GROUP, "g", ResourcePatternType.LITERAL, AclOperation.ALL,
                AclPermissionType.DENY, "User:bob"),
    ]
    for f in a.create_acls(acls).values():
        assert f.result(timeout=T) is None
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    described = a.describe_acls(everything).result(timeout=T)
    assert sorted(map(str, described)) == sorted(map(str, acls))
    # MATCH: the bindings that apply to the topic "logs-app".
    match = AclBindingFilter(ResourceType.TOPIC, "logs-app", ResourcePatternType.MATCH, None,
                             None, AclOperation.ANY, AclPermissionType.ANY)
    assert [str(b) for b in a.describe_acls(match).result(timeout=T)] == [str(acls[1])]
    alice = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:alice", None,
                             AclOperation.ANY, AclPermissionType.ANY)
    deleted = list(a.delete_acls([alice]).values())[0].result(timeout=T)
    assert sorted(map(str, deleted)) == sorted(map(str, acls[:2]))
    assert [str(b) for b in a.describe_acls(everything).result(timeout=T)] == [str(acls[2])]
    # A binding Kafka refuses: the CLUSTER resource has one name.
    bad = binding(ResourceType.BROKER, "x", ResourcePatternType.LITERAL, AclOperation.ALTER,
                  AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as e:
        for f in a.create_acls([bad]).values():
            f.result(timeout=T)
    assert e.value.args[0].code() == KafkaError.INVALID_REQUEST


def test_admin_client_without_authorizer_gets_security_disabled(make_broker):
    broker = make_broker()
    a = admin(broker)
    acl = binding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, AclOperation.READ,
                  AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as e:
        for f in a.create_acls([acl]).values():
            f.result(timeout=T)
    assert e.value.args[0].code() == KafkaError.SECURITY_DISABLED


def test_clients_get_authorization_errors_where_acls_deny(make_broker):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

    broker = make_broker(extra_args=["--authorizer", "on",
                                     "--allow-everyone-if-no-acl-found", "true"])
    a = admin(broker)
    for f in a.create_topics([NewTopic("open", 1), NewTopic("locked", 1)]).values():
        f.result(timeout=T)
    deny = [
        binding(ResourceType.TOPIC, "locked", ResourcePatternType.LITERAL, AclOperation.ALL,
                AclPermissionType.DENY),
        binding(ResourceType.GROUP, "nope", ResourcePatternType.LITERAL, AclOperation.READ,
                AclPermissionType.DENY),
    ]
    for f in a.create_acls(deny).values():
        f.result(timeout=T)

    # confluent-kafka: delivery to the denied topic fails with TOPIC_AUTHORIZATION_FAILED,
    # the open topic takes the record.
    p = Producer({"bootstrap.servers": broker.addr, "message.timeout.ms": 20000})
    results = {}
    for topic in ("open", "locked"):
        p.produce(topic, b"v", on_delivery=lambda err, msg, t=topic: results.__setitem__(t, err))
    p.flush(T)
    assert results["open"] is None
    assert results["locked"].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # kafka-python: the same through its own client.
    kp = KafkaProducer(bootstrap_servers=broker.addr, retries=0, max_block_ms=10000)
    kp.send("open", b"v").get(timeout=T)
    with pytest.raises(TopicAuthorizationFailedError):
        kp.send("locked", b"v").get(timeout=T)
    kp.close()

    # A consumer in a denied group is refused with GROUP_AUTHORIZATION_FAILED.
    c = KafkaConsumer("open", bootstrap_servers=broker.addr, group_id="nope",
                      auto_offset_reset="earliest", consumer_timeout_ms=10000)
    with pytest.raises(GroupAuthorizationFailedError):
        for _ in c:
            break
    c.close()


def test_transactional_producer_needs_write_on_its_transactional_id(make_broker):
    broker = make_broker(extra_args=["--authorizer", "on",
                                     "--allow-everyone-if-no-acl-found", "true"])
    a = admin(broker)
    for f in a.create_topics([NewTopic("t", 1)]).values():
        f.result(timeout=T)
    deny = binding(ResourceType.TRANSACTIONAL_ID, "tx-", ResourcePatternType.PREFIXED,
                   AclOperation.WRITE, AclPermissionType.DENY)
    for f in a.create_acls([deny]).values():
        f.result(timeout=T)
    # An id outside the denied prefix commits.
    ok = Producer({"bootstrap.servers": broker.addr, "transactional.id": "other"})
    ok.init_transactions(T)
    ok.begin_transaction()
    ok.produce("t", b"v")
    ok.commit_transaction(T)
    # One under it is refused at init with TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
    denied = Producer({"bootstrap.servers": broker.addr, "transactional.id": "tx-1"})
    with pytest.raises(KafkaException) as e:
        denied.init_transactions(T)
    assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
