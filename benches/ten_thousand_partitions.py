#!/usr/bin/env python3
"""Issue 16's "10,000 partitions" measurement (driven by benches/ten-thousand-partitions.sh).

Starts a fresh `freshet start --shards N` on free 127.0.0.1 ports (never 9092) with an empty
data directory, creates TOPICS x PARTITIONS partitions with confluent-kafka's AdminClient,
produces RECORDS records to every partition (acks=all, explicit partition), consumes them all
once (assign from the beginning, no group commits), idles, then stops the broker (SIGTERM) and
starts it again on the same data directory, timing start to `/ready` and to a metadata answer
naming every partition with a leader. After every phase it records the broker's VmRSS, VmHWM
(from /proc/PID/status) and open descriptors (`/proc/PID/fd`). Only the broker it started is
ever signalled, by PID. Prints the figures and writes them as JSON to OUT/results.json.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BIN = os.environ.get("FRESHET_BIN", "target/release/freshet")
OUT = os.path.abspath(os.environ.get("FRESHET_10K_OUT", "target/ten-thousand-partitions"))
SHARDS = int(os.environ.get("FRESHET_10K_SHARDS", "2"))
TOPICS = int(os.environ.get("FRESHET_10K_TOPICS", "100"))
PARTITIONS = int(os.environ.get("FRESHET_10K_PARTITIONS", "100"))
RECORDS = int(os.environ.get("FRESHET_10K_RECORDS", "3"))
IDLE_S = float(os.environ.get("FRESHET_10K_IDLE_S", "30"))
VALUE = b"v" * 100


def free_port():
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port != 9092:
            return port


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def proc_figures(pid):
    fig = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                fig[key] = int(rest.split()[0])
    fds = os.listdir(f"/proc/{pid}/fd")
    kinds = {}
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            kind = "socket"
        elif target.startswith("anon_inode:"):
            kind = target
        elif target.startswith("/"):
            # Segment logs, indexes, directories...: named by their extension.
            ext = os.path.splitext(target)[1]
            kind = "file" + ext if ext and len(ext) < 12 and "-" not in ext else "file"
        else:
            kind = target.split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "rss_mib": round(fig.get("VmRSS", 0) / 1024, 1),
        "hwm_mib": round(fig.get("VmHWM", 0) / 1024, 1),
        "threads": fig.get("Threads", 0),
        "open_fds": len(fds),
        "fds_by_kind": kinds,
        "loadavg": loadavg(),
    }


class Broker:
    def __init__(self, data):
        self.data = data
        self.port = free_port()
        self.admin_port = free_port()
        self.proc = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        log = open(os.path.join(OUT, "broker.log"), "a")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [BIN, "start", "--listen", self.bootstrap, "--admin-listen",
             f"127.0.0.1:{self.admin_port}", "--data-dir", self.data, "--shards", str(SHARDS),
             "--log", "warn"],
            stdout=log, stderr=log)
        deadline = t0 + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"broker exited with {self.proc.returncode}; see {OUT}/broker.log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready",
                                            timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("broker not ready within 600 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            t0 = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            return time.monotonic() - t0
        return None


def topic_names():
    return [f"tenk-{i:03d}" for i in range(TOPICS)]


def all_partitions_led(admin):
    md = admin.list_topics(timeout=30)
    led = 0
    for name in topic_names():
        t = md.topics.get(name)
        if t is None or t.error is not None:
            continue
        led += sum(1 for p in t.partitions.values() if p.leader >= 0 and p.error is None)
    return led


def wait_all_led(admin, timeout=600):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if all_partitions_led(admin) == TOPICS * PARTITIONS:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise SystemExit("not every partition has a leader")


def create(admin):
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=PARTITIONS, replication_factor=1) for n in topic_names()],
        operation_timeout=120, request_timeout=180)
    for name, f in futures.items():
        f.result()


def produce(bootstrap):
    acked = [0]
    errors = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked[0] += 1

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                  "enable.idempotence": False, "queue.buffering.max.messages": 1000000})
    for r in range(RECORDS):
        for name in topic_names():
            for part in range(PARTITIONS):
                p.produce(name, value=VALUE, key=f"{part}-{r}".encode(), partition=part,
                          on_delivery=on_delivery)
                p.poll(0)
    left = p.flush(300)
    if left or errors:
        raise SystemExit(f"produce: {left} not delivered, errors {errors[:5]} ({len(errors)})")
    return acked[0]


def consume(bootstrap):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "tenk-once",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100,
                  "enable.partition.eof": False})
    c.assign([TopicPartition(n, p, -2) for n in topic_names() for p in range(PARTITIONS)])
    want = TOPICS * PARTITIONS * RECORDS
    got = 0
    seen = set()
    deadline = time.monotonic() + 600
    while got < want and time.monotonic() < deadline:
        for m in c.consume(10000, 1.0):
            if m.error() is not None:
                raise SystemExit(f"consume: {m.error()}")
            got += 1
            seen.add((m.topic(), m.partition()))
    c.close()
    if got != want or len(seen) != TOPICS * PARTITIONS:
        raise SystemExit(f"consume: {got} of {want} records from {len(seen)} partitions")
    return got


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    data = os.path.join(OUT, "data")
    results = {"bin": BIN, "shards": SHARDS, "topics": TOPICS, "partitions_per_topic": PARTITIONS,
               "records_per_partition": RECORDS, "value_bytes": len(VALUE),
               "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime()),
               "phases": {}}

    def phase(name, **extra):
        fig = proc_figures(broker.proc.pid)
        fig.update(extra)
        results["phases"][name] = fig
        print(f"{name:>18}: RSS {fig['rss_mib']:7.1f} MiB  HWM {fig['hwm_mib']:7.1f} MiB  "
              f"fds {fig['open_fds']:5d} {fig['fds_by_kind']}  load {fig['loadavg']}  "
              + " ".join(f"{k}={v}" for k, v in extra.items()), flush=True)

    broker = Broker(data)
    try:
        ready = broker.start()
        time.sleep(1)
        phase("idle (empty)", ready_s=round(ready, 2))
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        t0 = time.monotonic()
        create(admin)
        led = wait_all_led(admin)
        phase("created", create_s=round(time.monotonic() - t0, 1), leaders_wait_s=round(led, 1))
        t0 = time.monotonic()
        acked = produce(broker.bootstrap)
        phase("produced", acked=acked, produce_s=round(time.monotonic() - t0, 1))
        t0 = time.monotonic()
        got = consume(broker.bootstrap)
        phase("consumed", records=got, consume_s=round(time.monotonic() - t0, 1))
        time.sleep(IDLE_S)
        phase(f"idle {IDLE_S:g} s")
        stop_s = broker.stop()
        load = loadavg()
        ready = broker.start()
        t_ready = time.monotonic()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        led = wait_all_led(admin)
        phase("restarted", stop_s=round(stop_s, 2), start_to_ready_s=round(ready, 2),
              ready_to_all_led_s=round(led, 2), load_at_restart=load)
        # The data survived: every partition's records are read again after the restart.
        got = consume(broker.bootstrap)
        phase("consumed again", records=got)
    finally:
        broker.stop()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    shutil.rmtree(data, ignore_errors=True)
    print(f"results: {OUT}/results.json")


if __name__ == "__main__":
    sys.exit(main())
