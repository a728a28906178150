#!/usr/bin/env python3
"""Cluster figures of the metadata quorum, measured on real `freshet` processes (issue 13).

- election: kill -9 the active controller of a 3-node cluster; the time until a CreateTopics
  sent to a surviving broker succeeds again (a new controller elected, the change committed
  by the two survivors), over `--trials` kills (the killed node restarts between trials);
- fencing: kill -9 a broker that is not the controller; the time until Metadata from a
  survivor no longer lists it (Kafka's `broker.session.timeout.ms`, 9 s by default);
- CreateTopics latency (one 1-partition topic, sequential) on a single node and on 3 nodes,
  sent to the active controller and to a follower (forwarded).

Run: `python3 benches/cluster_failover.py --bin target/release/freshet [--trials 20]`
(needs confluent-kafka; the repository's venv has it). Everything listens on 127.0.0.1 on free
ports; every process it starts is stopped at the end.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

LEADER_LINE = re.compile(r"active controller leader=(\d+) term=(\d+)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


class Node:
    def __init__(self, bin_path, root, node_id, kafka_port, voters):
        self.bin = bin_path
        self.node_id = node_id
        self.kafka = f"127.0.0.1:{kafka_port}"
        self.voters = voters
        self.dir = os.path.join(root, f"node{node_id}")
        self.log_path = os.path.join(root, f"node{node_id}.log")
        self.proc = None

    def start(self):
        args = [self.bin, "start", "--node-id", str(self.node_id), "--listen", self.kafka,
                "--data-dir", self.dir, "--admin-listen", "off", "--shards", "1"]
        if self.voters:
            args += ["--controller-quorum-voters", self.voters]
        self.log = open(self.log_path, "a")
        self.log_start = os.path.getsize(self.log_path)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log_path) as f:
                f.seek(self.log_start)
                if "freshet ready" in f.read():
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.node_id} exited; see {self.log_path}")
            time.sleep(0.02)
        raise RuntimeError(f"node {self.node_id} not ready in {timeout}s; see {self.log_path}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def last_leader(self):
        """(term, leader) of the last 'active controller' line of this node's log."""
        best = None
        with open(self.log_path, errors="replace") as f:
            for m in LEADER_LINE.finditer(f.read()):
                best = (int(m.group(2)), int(m.group(1)))
        return best


def cluster(bin_path, root, n):
    os.makedirs(root, exist_ok=True)
    ports = [free_port() for _ in range(n)]
    voters = "" if n == 1 else ",".join(f"{i}@127.0.0.1:{free_port()}" for i in range(n))
    nodes = [Node(bin_path, root, i, ports[i], voters) for i in range(n)]
    for node in nodes:
        node.start()
    for node in nodes:
        node.wait_ready()
    return nodes


def admin(nodes):
    return AdminClient({"bootstrap.servers": ",".join(n.kafka for n in nodes),
                        "socket.timeout.ms": 2000, "log_level": 0})


def create(client, name, timeout=2.0):
    """One CreateTopics; True on success."""
    futures = client.create_topics([NewTopic(name, 1, 1)], operation_timeout=timeout,
                                   request_timeout=timeout)
    try:
        futures[name].result()
        return True
    except KafkaException:
        return False


def active_controller(nodes):
    seen = [n.last_leader() for n in nodes if n.proc is not None]
    seen = [s for s in seen if s is not None]
    return max(seen)[1] if seen else None


def wait_controller(nodes, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        leader = active_controller(nodes)
        if leader is not None and nodes[leader].proc is not None:
            return leader
        time.sleep(0.05)
    raise RuntimeError("no active controller")


def election_trials(nodes, trials):
    out = []
    for t in range(trials):
        leader = wait_controller(nodes)
        survivors = [n for n in nodes if n.node_id != leader]
        client = admin(survivors)
        assert create(client, f"warm-{t}", 10), "the cluster creates topics before the kill"
        t0 = time.monotonic()
        nodes[leader].kill9()
        i = 0
        # A new client per attempt: librdkafka sends admin requests to the controller its
        # cached metadata names (refreshed every 5 minutes by default), the killed node.
        while not create(admin(survivors), f"after-kill-{t}-{i}", 0.25):
            i += 1
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        out.append(elapsed)
        print(f"  election trial {t + 1}: node {leader} killed, CreateTopics again after "
              f"{elapsed * 1000:.0f} ms", flush=True)
        nodes[leader].start()
        nodes[leader].wait_ready()
    return out


def listed_brokers(client):
    """The broker ids Metadata lists (retried: librdkafka may ask the broker just killed)."""
    while True:
        try:
            return set(client.list_topics(timeout=2).brokers)
        except KafkaException:
            time.sleep(0.02)


def fencing_trials(nodes, trials):
    out = []
    for t in range(trials):
        leader = wait_controller(nodes)
        victim = next(n for n in nodes if n.node_id != leader)
        survivors = [n for n in nodes if n is not victim]
        client = admin(survivors)
        deadline = time.time() + 30
        while victim.node_id not in listed_brokers(client):
            if time.time() > deadline:
                raise RuntimeError(f"node {victim.node_id} never listed")
            time.sleep(0.1)
        t0 = time.monotonic()
        victim.kill9()
        while victim.node_id in listed_brokers(client):
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
        out.append(elapsed)
        print(f"  fencing trial {t + 1}: node {victim.node_id} killed, fenced after "
              f"{elapsed * 1000:.0f} ms", flush=True)
        victim.start()
        victim.wait_ready()
    return out


def create_latency(nodes, target, count, prefix):
    client = AdminClient({"bootstrap.servers": target.kafka})
    out = []
    for i in range(count):
        t0 = time.monotonic()
        assert create(client, f"{prefix}-{i}", 10), "CreateTopics failed"
        out.append(time.monotonic() - t0)
    return out


def summary(name, values, unit_ms=True):
    if not values:
        print(f"{name}: not measured")
        return
    f = 1000.0 if unit_ms else 1.0
    print(f"{name}: n={len(values)} p50={pct(values, 50) * f:.0f} ms "
          f"p99={pct(values, 99) * f:.0f} ms max={max(values) * f:.0f} ms "
          f"mean={statistics.mean(values) * f:.0f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="target/release/freshet")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--fencing-trials", type=int, default=5)
    parser.add_argument("--creates", type=int, default=50)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="freshet-cluster-bench-")
    nodes = []
    try:
        print("single node: CreateTopics latency", flush=True)
        nodes = cluster(args.bin, os.path.join(root, "one"), 1)
        one = create_latency(nodes, nodes[0], args.creates, "one")
        for n in nodes:
            n.stop()
        print("3 nodes", flush=True)
        nodes = cluster(args.bin, os.path.join(root, "three"), 3)
        leader = wait_controller(nodes)
        follower = next(n for n in nodes if n.node_id != leader)
        to_leader = create_latency(nodes, nodes[leader], args.creates, "lead")
        to_follower = create_latency(nodes, follower, args.creates, "fwd")
        fencing = fencing_trials(nodes, args.fencing_trials)
        election = election_trials(nodes, args.trials)
        print()
        summary("CreateTopics, 1 node", one)
        summary("CreateTopics, 3 nodes, sent to the active controller", to_leader)
        summary("CreateTopics, 3 nodes, sent to a follower (forwarded)", to_follower)
        summary("kill -9 of the active controller -> CreateTopics works again", election)
        summary("kill -9 of a broker -> fenced (gone from Metadata)", fencing)
    finally:
        for n in nodes:
            try:
                n.stop()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
