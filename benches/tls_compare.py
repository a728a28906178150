#!/usr/bin/env python3
"""Produce and consume MB/s over TLS next to plaintext, in the same run (issue 15).

Starts one broker (FRESHET_BIN, a release build for figures that mean anything) with a PLAINTEXT
and an SSL listener (certificates made here with the openssl CLI), then for each listener in
turn produces MB_TOTAL of 1 KiB records to a topic of its own with confluent-kafka (acks=1) and
consumes them back from the start. Reports MB/s per phase and the broker's CPU seconds per GB
(user + system, from /proc/<pid>/stat), so what TLS costs the broker shows beside what it costs
the whole machine. Short by design (the machine is shared): a direction, not a benchmark.

Usage: FRESHET_BIN=target/release/freshet python3 benches/tls_compare.py [MB_TOTAL]
"""

import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition

BIN = os.environ.get("FRESHET_BIN", "target/release/freshet")
MB_TOTAL = int(sys.argv[1]) if len(sys.argv) > 1 else 256
RECORD_BYTES = 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def certificates(d):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem", cwd=d)


def cpu_seconds(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def produce(conf, topic, count, payload):
    p = Producer({**conf, "acks": 1, "linger.ms": 5, "batch.size": 1 << 20,
                  "queue.buffering.max.kbytes": 1 << 20})
    for _ in range(count):
        while True:
            try:
                p.produce(topic, payload)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(120) == 0


def consume(conf, topic, count):
    c = Consumer({**conf, "group.id": "bench", "enable.auto.commit": False,
                  "fetch.max.bytes": 50 << 20, "max.partition.fetch.bytes": 10 << 20})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    while got < count:
        for m in c.consume(10000, 1.0):
            if not m.error():
                got += 1
    c.close()


def main():
    with tempfile.TemporaryDirectory() as tmp:
        d = pathlib.Path(tmp)
        certificates(d)
        plain, ssl = free_port(), free_port()
        broker = subprocess.Popen(
            [BIN, "start", "--data-dir", str(d / "data"), "--shards", "1", "--admin-listen", "off",
             "--listeners", f"PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl}",
             "--ssl-certificate-file", str(d / "server.pem"),
             "--ssl-key-file", str(d / "server.key")],
            stdout=subprocess.DEVNULL, stderr=open(d / "broker.log", "w"))
        try:
            time.sleep(2)
            count = MB_TOTAL * 1024 * 1024 // RECORD_BYTES
            payload = os.urandom(RECORD_BYTES)
            rows = []
            for name, conf in [
                ("PLAINTEXT", {"bootstrap.servers": f"127.0.0.1:{plain}"}),
                ("SSL", {"bootstrap.servers": f"127.0.0.1:{ssl}", "security.protocol": "SSL",
                         "ssl.ca.location": str(d / "ca.pem")}),
            ]:
                topic = f"bench-{name.lower()}"
                for phase, run in [("produce", lambda: produce(conf, topic, count, payload)),
                                   ("consume", lambda: consume(conf, topic, count))]:
                    cpu0, t0 = cpu_seconds(broker.pid), time.monotonic()
                    run()
                    seconds = time.monotonic() - t0
                    cpu = cpu_seconds(broker.pid) - cpu0
                    gb = count * RECORD_BYTES / 1e9
                    rows.append((name, phase, count * RECORD_BYTES / 1e6 / seconds, cpu / gb))
            print(f"{MB_TOTAL} MiB of {RECORD_BYTES}-byte records, 1 partition, 1 shard, acks=1")
            print(f"{'listener':<10} {'phase':<8} {'MB/s':>8} {'broker CPU s/GB':>16}")
            for name, phase, mbs, cpu in rows:
                print(f"{name:<10} {phase:<8} {mbs:>8.1f} {cpu:>16.2f}")
        finally:
            broker.terminate()
            broker.wait(30)


if __name__ == "__main__":
    main()
