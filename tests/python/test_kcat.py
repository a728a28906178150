"""Debian's kcat (bundling librdkafka 2.0.2, stricter about replies than newer clients)."""

import json
import shutil
import subprocess

import pytest

KCAT = shutil.which("kcat")


def kcat(broker, *args, stdin=None, timeout=60):
    """Runs kcat against the broker; fails the test on a non-zero exit, with kcat's stderr."""
    assert KCAT, "kcat is not installed (tests/run-all.sh installs it with apt-get)"
    cmd = [KCAT, "-b", broker.addr, "-m", "20", "-X", "broker.address.family=v4", *args]
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}\nstdout: {r.stdout!r}\nstderr: {r.stderr.decode(errors='replace')}"
    return r.stdout.decode()


# kcat -L lists the broker under its advertised address and the topics with their partitions.
def test_kcat_lists_broker_and_topics(broker):
    kcat(broker, "-P", "-t", "kcat-listed", stdin=b"one\n")
    meta = json.loads(kcat(broker, "-L", "-J"))
    assert [(b["id"], b["name"]) for b in meta["brokers"]] == [(0, broker.addr)]
    topics = {t["topic"]: t for t in meta["topics"]}
    assert "kcat-listed" in topics
    [p0] = topics["kcat-listed"]["partitions"]
    assert (p0["partition"], p0["leader"]) == (0, 0)
    text = kcat(broker, "-L", "-t", "kcat-listed")
    assert "1 brokers:" in text and 'topic "kcat-listed" with 1 partitions' in text


# kcat -P with keys (auto-creating the topic), then kcat -C reads keys and values back in order.
def test_kcat_produces_keyed_lines_and_consumes_them_back(broker):
    lines = [f"key{i % 3}:value {i}" for i in range(100)]
    kcat(broker, "-P", "-t", "kcat-keys", "-K", ":", stdin=("\n".join(lines) + "\n").encode())
    out = kcat(broker, "-C", "-t", "kcat-keys", "-o", "beginning", "-e", "-q", "-f", "%k=%s@%o\n")
    assert out.splitlines() == [f"key{i % 3}=value {i}@{i}" for i in range(100)]


# kcat produces with each codec it has; kcat consumes the batches back.
@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_kcat_round_trips_compressed_batches(broker, codec):
    topic = f"kcat-{codec}"
    lines = [f"{codec} line {i} " + "abc" * 40 for i in range(200)]
    kcat(broker, "-P", "-t", topic, "-p", "0", "-X", f"compression.codec={codec}",
         stdin=("\n".join(lines) + "\n").encode())
    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q")
    assert out.splitlines() == lines


# kcat -C from a relative offset, a header, and a count limit.
def test_kcat_consumes_from_offsets_with_headers(broker):
    kcat(broker, "-P", "-t", "kcat-hdr", "-H", "source=kcat", "-H", "n=1",
         stdin=("\n".join(f"m{i}" for i in range(10)) + "\n").encode())
    out = kcat(broker, "-C", "-t", "kcat-hdr", "-o", "-3", "-e", "-q", "-f", "%o %s %h\n")
    assert out.splitlines() == [f"{i} m{i} source=kcat,n=1" for i in (7, 8, 9)]
    out = kcat(broker, "-C", "-t", "kcat-hdr", "-o", "2", "-c", "2", "-q")
    assert out.splitlines() == ["m2", "m3"]


# kcat -Q looks up offsets by timestamp (ListOffsets).
def test_kcat_queries_offsets_by_timestamp(broker):
    kcat(broker, "-P", "-t", "kcat-times", stdin=b"a\nb\nc\n")
    out = kcat(broker, "-C", "-t", "kcat-times", "-o", "beginning", "-e", "-q", "-f", "%T\n")
    stamps = [int(x) for x in out.split()]
    assert len(stamps) == 3
    out = kcat(broker, "-Q", "-t", f"kcat-times:0:{stamps[0]}")
    assert "offset 0" in out, out
    out = kcat(broker, "-Q", "-t", f"kcat-times:0:{stamps[-1] + 60_000}")
    assert "offset -1" in out or "offset 3" in out, out
