"""An HTTP push stream and confluent-kafka's ShareConsumer (librdkafka 2.16) as members of one
share group on one partition (issue 17): the stream gets records (at most its max_records),
acknowledges some with curl, and when it closes the records it held go to the Kafka client
with delivery count 2; the records it accepted never reach the Kafka client; every record is
processed exactly once."""

import json
import subprocess
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from kafka_wire import free_port
from test_http_push import CurlStream
from test_share_groups import consumer, create_topic, poll_records


@pytest.mark.timeout(120)
def test_an_http_member_and_a_share_consumer_split_records_and_a_closed_stream_gives_back(
        make_broker, tmp_path):
    port = free_port()
    config = tmp_path / "freshet.toml"
    config.write_text('share_auto_offset_reset = "earliest"\n'
                      "group_share_min_heartbeat_interval_ms = 500\n"
                      "group_share_heartbeat_interval_ms = 500\n")
    b = make_broker(shards=2, extra_args=["--config", str(config), "--http-listen", str(port)])
    cluster = AdminClient({"bootstrap.servers": b.addr}).list_topics(timeout=10).cluster_id
    create_topic(b, "mix")
    base = f"http://127.0.0.1:{port}/v3/clusters/{cluster}"
    stream = CurlStream(f"{base}/topics/mix/records/stream?share_group=mixed&max_records=10")
    member = stream.wait_for(1)[0][1]
    assert member["share_group"] == "mixed"

    p = Producer({"bootstrap.servers": b.addr, "linger.ms": 0})
    for i in range(40):
        p.produce("mix", value=f"m{i}".encode())
    assert p.flush(30) == 0
    held = [e for _, e in stream.wait_for(11)[1:]]
    time.sleep(0.5)
    assert len(stream.events) == 11, "the stream took more than its max_records"
    assert all(e["delivery_count"] == 1 for e in held)

    # Accept five with curl, as the README shows.
    accepted = sorted(e["offset"] for e in held)[:5]
    body = {"member_id": member["member_id"], "acknowledgements": [
        {"topic_name": "mix", "partition_id": 0, "offset": o, "type": "ACCEPT"} for o in accepted]}
    out = subprocess.run(
        ["curl", "-sf", "--max-time", "20", "-H", "Content-Type: application/json",
         "-d", json.dumps(body), f"{base}/share-groups/mixed/acknowledgements"],
        capture_output=True, text=True, check=True).stdout
    assert [r["error_code"] for r in json.loads(out)["results"]] == [0]
    # Five more replace them on the stream.
    more = [e for _, e in stream.wait_for(16)[11:]]
    held_offsets = {e["offset"] for e in held} - set(accepted) | {e["offset"] for e in more}

    c = consumer(b, "mixed")
    c.subscribe(["mix"])
    first, again = {}, {}
    deadline = time.monotonic() + 60
    stream_closed = False
    while time.monotonic() < deadline and len(first) + len(again) < 40 - len(accepted):
        for m in poll_records(c, 0.5):
            target = first if m.delivery_count() == 1 else again
            assert m.offset() not in target, f"{m.offset()} twice"
            target[m.offset()] = m.delivery_count()
        if not stream_closed and len(first) == 40 - 15:
            # The Kafka client has everything the stream does not hold: close the stream.
            stream.close()
            stream_closed = True
    c.close()
    assert stream_closed, (sorted(first), sorted(held_offsets))
    assert set(first).isdisjoint(held_offsets | set(accepted))
    # What the closed stream held came to the Kafka client, with delivery count 2.
    assert set(again) == held_offsets, (sorted(again), sorted(held_offsets))
    assert set(again.values()) == {2}
    assert set(first) | set(again) | set(accepted) == set(range(40))
