"""Push vs pull end-to-end latency (issue 17), measured in the same run on the same records:
confluent-kafka produces (acks=all, one record at a time at a fixed rate); the send-to-receipt
time of each record is taken by a Server-Sent Events stream, a WebSocket stream (both raw
sockets) and a confluent-kafka consumer (assigned, fetch.wait.max.ms=10), all reading at once.

CI runs a short sample (checks that every reader gets every record, in order); for figures:
`FRESHET_LATENCY_RECORDS=2000 FRESHET_LATENCY_RATE=200 pytest tests/python/test_push_latency.py -s`
(prints p50/p99 per reader)."""

import base64
import json
import os
import socket
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_wire import free_port

RECORDS = int(os.environ.get("FRESHET_LATENCY_RECORDS", "100"))
RATE = float(os.environ.get("FRESHET_LATENCY_RATE", "100"))


def stream_socket(http, path, websocket):
    s = socket.create_connection(http, timeout=30)
    extra = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
             f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
             if websocket else "Accept: text/event-stream\r\n")
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        assert chunk, "closed before the answer"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101" if websocket else b"HTTP/1.1 200"), head
    return s, rest


def sse_records(s, buf):
    """Yields each event's JSON as it arrives."""
    while True:
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"data: "):
                    yield json.loads(line[6:])
        chunk = s.recv(65536)
        if not chunk:
            return
        buf += chunk


def ws_records(s, buf):
    """Yields each text frame's JSON as it arrives (server frames are unmasked)."""
    def need(n):
        nonlocal buf
        while len(buf) < n:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError
            buf += chunk
    while True:
        need(2)
        opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if n == 126:
            need(4)
            n, at = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            need(10)
            n, at = int.from_bytes(buf[2:10], "big"), 10
        need(at + n)
        payload, buf = buf[at:at + n], buf[at + n:]
        if opcode == 1:
            yield json.loads(payload)


def quantiles(latencies):
    xs = sorted(latencies)
    return xs[len(xs) // 2], xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def test_push_and_pull_latency_on_the_same_records(make_broker):
    http_port = free_port()
    b = make_broker(shards=2, extra_args=["--http-listen", str(http_port)])
    admin = AdminClient({"bootstrap.servers": b.addr})
    cluster = admin.list_topics(timeout=10).cluster_id
    for f in admin.create_topics([NewTopic("latency", 1, 1)]).values():
        f.result(timeout=20)
    sent = [None] * RECORDS
    got = {"sse": [], "ws": [], "pull": []}
    http = ("127.0.0.1", http_port)
    # A warmed-up producer (its connection and metadata ready): its first record is offset 0,
    # the measured ones are offsets 1..=RECORDS.
    p = Producer({"bootstrap.servers": b.addr, "acks": "all", "linger.ms": 0})
    p.produce("latency", value=b"warm-up", partition=0)
    assert p.flush(30) == 0
    path = f"/v3/clusters/{cluster}/topics/latency/partitions/0/records/stream?offset=1"

    def push(name, websocket):
        s, rest = stream_socket(http, path, websocket)
        records = ws_records(s, rest) if websocket else sse_records(s, rest)
        for r in records:
            got[name].append((r["offset"] - 1, time.monotonic()))
            if len(got[name]) == RECORDS:
                break
        s.close()

    def pull():
        c = Consumer({"bootstrap.servers": b.addr, "group.id": "latency-pull",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        c.assign([TopicPartition("latency", 0, 1)])
        deadline = time.monotonic() + 120
        while len(got["pull"]) < RECORDS and time.monotonic() < deadline:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                got["pull"].append((m.offset() - 1, time.monotonic()))
        c.close()

    readers = [threading.Thread(target=push, args=("sse", False), daemon=True),
               threading.Thread(target=push, args=("ws", True), daemon=True),
               threading.Thread(target=pull, daemon=True)]
    for t in readers:
        t.start()
    time.sleep(2)  # every reader is connected and caught up
    start = time.monotonic()
    for i in range(RECORDS):
        while time.monotonic() < start + i / RATE:
            p.poll(0.0005)
        sent[i] = time.monotonic()
        p.produce("latency", value=str(i).encode(), partition=0)
        p.poll(0)
    assert p.flush(30) == 0
    for t in readers:
        t.join(timeout=60)
    lines = [f"push vs pull latency: {RECORDS} records at {RATE:g}/s, 2 shards"]
    for name, label in (("sse", "push SSE"), ("ws", "push WebSocket"),
                        ("pull", "pull confluent-kafka")):
        offsets = [o for o, _ in got[name]]
        assert offsets == list(range(RECORDS)), f"{name}: {len(offsets)} records, not in order"
        p50, p99 = quantiles([(at - sent[o]) * 1000 for o, at in got[name]])
        lines.append(f"  {label:<22} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    print("\n".join(lines))
