"""Topic names a client may not create (issue 12 item 13), driven by real clients.

Kafka's internal topics (`__consumer_offsets`, `__transaction_state`) are refused with
INVALID_REQUEST ("Creation of internal topic ... is prohibited."), and names under the broker's
reserved prefix `.freshet` (its own files in the data directory, e.g. the disk probe
`.freshet-disk-probe-<n>`) with INVALID_TOPIC_EXCEPTION; neither is created, and the broker keeps
serving topics with ordinary names, including ones that merely look similar.
"""

import time

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import NewTopic as CkNewTopic
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import InvalidRequestError, InvalidTopicError


def _kafka_python_admin(broker):
    return KafkaAdminClient(bootstrap_servers=broker.addr, request_timeout_ms=10000)


@pytest.mark.parametrize("name", ["__consumer_offsets", "__transaction_state"])
def test_internal_topic_names_are_refused_with_invalid_request(make_broker, name):
    broker = make_broker(shards=2)
    admin = _kafka_python_admin(broker)
    try:
        with pytest.raises(InvalidRequestError):
            admin.create_topics([NewTopic(name, 1, 1)])
        assert name not in admin.list_topics()
    finally:
        admin.close()


def test_reserved_prefix_is_refused_with_invalid_topic_and_similar_names_work(make_broker):
    broker = make_broker(shards=2)
    admin = _kafka_python_admin(broker)
    try:
        with pytest.raises(InvalidTopicError):
            admin.create_topics([NewTopic(".freshet-disk-probe", 1, 1)])
        # Names that only resemble the reserved ones are ordinary topics.
        admin.create_topics([NewTopic("freshet-disk-probe", 1, 1), NewTopic("_consumer_offsets", 1, 1)])
        topics = admin.list_topics()
        assert ".freshet-disk-probe" not in topics
        assert "freshet-disk-probe" in topics and "_consumer_offsets" in topics
    finally:
        admin.close()


def test_confluent_kafka_sees_kafkas_error_codes(make_broker):
    broker = make_broker(shards=1)
    admin = AdminClient({"bootstrap.servers": broker.addr})
    futures = admin.create_topics(
        [CkNewTopic("__consumer_offsets", 1, 1), CkNewTopic(".freshet-x", 1, 1)],
        request_timeout=10,
    )
    codes = {}
    for name, future in futures.items():
        with pytest.raises(Exception) as raised:
            future.result(timeout=15)
        codes[name] = raised.value.args[0].code()
    assert codes == {
        "__consumer_offsets": KafkaError.INVALID_REQUEST,
        ".freshet-x": KafkaError.TOPIC_EXCEPTION,
    }
    # The broker still serves: a normal topic is created and listed.
    admin.create_topics([CkNewTopic("after-refusals", 1, 1)])["after-refusals"].result(timeout=15)
    deadline = time.monotonic() + 10
    while "after-refusals" not in admin.list_topics(timeout=5).topics:
        assert time.monotonic() < deadline, "topic created after the refusals never listed"
        time.sleep(0.1)
