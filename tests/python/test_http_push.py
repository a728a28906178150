"""The HTTP push stream (issue 17) with real clients: confluent-kafka produces, curl reads the
Server-Sent Events stream; a reconnect with Last-Event-ID resumes without gap or duplicate;
curl produces over the REST Proxy v3 shape and confluent-kafka reads it back."""

import json
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_wire import free_port


def start(make_broker, shards):
    port = free_port()
    b = make_broker(shards=shards, extra_args=["--http-listen", str(port)])
    cluster = AdminClient({"bootstrap.servers": b.addr}).list_topics(timeout=10).cluster_id
    return b, f"127.0.0.1:{port}", cluster


def create_topic(b, name, partitions):
    admin = AdminClient({"bootstrap.servers": b.addr})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(timeout=20)


class CurlStream:
    """`curl -N` on a stream URL; events parsed from its stdout by a reader thread."""

    def __init__(self, url, last_event_id=None):
        args = ["curl", "-sN", "--max-time", "60", url]
        if last_event_id is not None:
            args[1:1] = ["-H", f"Last-Event-ID: {last_event_id}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.events = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        ident, data = None, None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                with self.cond:
                    self.events.append((ident, data))
                    self.cond.notify_all()
                ident, data = None, None

    def wait_for(self, n, timeout_s=30):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.events) >= n, timeout_s), (
                f"{len(self.events)} of {n} events")
            return list(self.events)

    def close(self):
        self.proc.kill()
        self.proc.wait()


@pytest.mark.parametrize("shards", [1, 2])
def test_confluent_kafka_records_appear_on_the_curl_stream_in_order_and_resume(make_broker, shards):
    b, http, cluster = start(make_broker, shards)
    create_topic(b, "push", 2)
    url = f"http://{http}/v3/clusters/{cluster}/topics/push/partitions/1/records/stream"
    stream = CurlStream(url + "?offset=earliest")
    time.sleep(0.3)  # the stream is parked at the (empty) end before the records arrive
    p = Producer({"bootstrap.servers": b.addr, "linger.ms": 0, "acks": "all"})
    for i in range(200):
        p.produce("push", value=f"v{i}".encode(), key=b"k", partition=1, headers=[("h", b"x")])
        p.poll(0)
    assert p.flush(30) == 0
    events = stream.wait_for(200)
    stream.close()
    assert [e[0] for e in events[:200]] == [f"1:{i}" for i in range(200)]
    assert [e[1]["value"]["data"] for e in events[:200]] == [f"v{i}" for i in range(200)]
    assert events[0][1]["key"] == {"type": "STRING", "data": "k"}
    assert events[0][1]["headers"] == [{"name": "h", "value": "eA=="}]

    # Reconnect after event 1:119 as an EventSource would: 120.. follow, no gap, no duplicate.
    for i in range(200, 250):
        p.produce("push", value=f"v{i}".encode(), partition=1)
    assert p.flush(30) == 0
    again = CurlStream(url + "?offset=0", last_event_id="1:119")
    events = again.wait_for(130)
    again.close()
    assert [e[0] for e in events[:130]] == [f"1:{i}" for i in range(120, 250)]


def test_curl_produces_and_confluent_kafka_reads_it_back(make_broker):
    b, http, cluster = start(make_broker, 2)
    create_topic(b, "restp", 3)
    url = f"http://{http}/v3/clusters/{cluster}/topics/restp/records"
    bodies = [
        {"partition_id": 2, "key": {"type": "STRING", "data": "a"},
         "value": {"type": "JSON", "data": {"x": 1}}},
        {"partition_id": 2, "headers": [{"name": "t", "value": "AQ=="}],
         "value": {"type": "BINARY", "data": "AAEC"}},
    ]
    for i, body in enumerate(bodies):
        out = subprocess.run(
            ["curl", "-sS", "-X", "POST", "-H", "Content-Type: application/json",
             "--data", json.dumps(body), url],
            check=True, capture_output=True, text=True, timeout=30).stdout
        answer = json.loads(out)
        assert (answer["topic_name"], answer["partition_id"], answer["offset"]) == ("restp", 2, i)
    c = Consumer({"bootstrap.servers": b.addr, "group.id": "http-push-py",
                  "enable.auto.commit": False})
    c.assign([TopicPartition("restp", 2, 0)])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 2 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m)
    c.close()
    assert [(m.key(), m.value()) for m in got] == [(b"a", b'{"x":1}'), (None, b"\x00\x01\x02")]
    assert got[1].headers() == [("t", b"\x01")]
    # An unknown topic: the REST proxy's error JSON with 404.
    out = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", "--data", "{}",
         url.replace("restp", "nope")], capture_output=True, text=True, timeout=30).stdout
    body, status = out.rsplit("\n", 1)
    assert status == "404" and "error_code" in json.loads(body)
