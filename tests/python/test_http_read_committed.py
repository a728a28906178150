"""read_committed push streams (issue 17): `?isolation=read_committed` on the SSE stream of a
partition and on the topic-wide stream stops at the last stable offset and leaves out aborted
transactions' records. confluent-kafka's transactional producer aborts one transaction and
commits another: the aborted records never appear, the committed ones appear only once
committed (a read_uncommitted stream beside them sees everything, so the check can fail)."""

import subprocess
import time

import pytest
from confluent_kafka import Producer

from test_http_push import CurlStream, create_topic, start

T = 30


def values(events):
    return [e["value"]["data"] for _, e in events]


@pytest.mark.parametrize("shards", [1, 2])
def test_aborted_records_never_appear_and_committed_ones_once_committed(make_broker, shards):
    b, http, cluster = start(make_broker, shards)
    create_topic(b, "rc", 2)
    base = f"http://{http}/v3/clusters/{cluster}/topics/rc"
    rc = CurlStream(f"{base}/partitions/0/records/stream?offset=earliest&isolation=read_committed")
    rc_topic = CurlStream(f"{base}/records/stream?offset=earliest&isolation=read_committed")
    uncommitted = CurlStream(f"{base}/partitions/0/records/stream?offset=earliest")
    time.sleep(0.3)  # parked at the (empty) end before the records arrive

    txn = Producer({"bootstrap.servers": b.addr, "transactional.id": "rc-1", "linger.ms": 2})
    txn.init_transactions(T)
    plain = Producer({"bootstrap.servers": b.addr, "linger.ms": 0, "acks": "all"})

    txn.begin_transaction()
    for i in range(10):
        txn.produce("rc", value=f"a-{i}".encode(), partition=0)
    assert txn.flush(T) == 0
    # Behind the open transaction: not stable yet.
    plain.produce("rc", value=b"plain-0", partition=0)
    assert plain.flush(T) == 0
    uncommitted.wait_for(11)
    time.sleep(0.5)
    assert rc.events == [] and rc_topic.events == [], (rc.events, rc_topic.events)
    txn.abort_transaction(T)

    txn.begin_transaction()
    for i in range(10):
        txn.produce("rc", value=f"c-{i}".encode(), partition=0)
    assert txn.flush(T) == 0
    # The aborted transaction ended: what precedes the open one is stable now.
    assert values(rc.wait_for(1)) == ["plain-0"]
    time.sleep(0.5)
    assert values(rc.events) == ["plain-0"], "records of an open transaction were streamed"
    txn.commit_transaction(T)

    want = ["plain-0"] + [f"c-{i}" for i in range(10)]
    for s in (rc, rc_topic):
        got = s.wait_for(11)
        time.sleep(0.3)
        assert values(s.events) == want, values(s.events)
        offsets = [e["offset"] for _, e in s.events]
        assert offsets == sorted(set(offsets))
    # The uncommitted stream saw the aborted records (so the filter above did something).
    assert [v for v in values(uncommitted.wait_for(21)) if v.startswith("a-")] == [
        f"a-{i}" for i in range(10)]
    for s in (rc, rc_topic, uncommitted):
        s.close()

    bad = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
         f"{base}/partitions/0/records/stream?isolation=snapshot"],
        capture_output=True, text=True)
    assert bad.stdout == "400"
