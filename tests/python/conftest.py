"""Fixtures that run the real `freshet` binary for the Python client tests.

FRESHET_BIN names the binary (tests/run-all.sh sets it to target/debug/freshet). Each broker gets
a free 127.0.0.1 port and its own temporary data directory; its stderr goes to a log file whose
tail is printed in the test's teardown (pytest shows it when the test fails).
"""

import ctypes
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

from kafka_wire import free_port, recv_exact

REPO = pathlib.Path(__file__).resolve().parents[2]
FRESHET_BIN = os.environ.get("FRESHET_BIN", str(REPO / "target" / "debug" / "freshet"))
READY_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # The broker gets SIGKILL if pytest dies, so no broker outlives a crashed run.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def api_versions_v0_ok(host, port):
    """Sends ApiVersions v0 over a raw socket; True if the broker answers with error 0."""
    with socket.create_connection((host, port), timeout=2) as s:
        client_id = b"freshet-pytest"
        header = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
        s.sendall(struct.pack(">i", len(header)) + header)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        body = recv_exact(s, size)
        correlation_id, error_code = struct.unpack(">ih", body[:6])
        return correlation_id == 1 and error_code == 0


class Broker:
    """One `freshet start` process on a free port with its own data directory."""

    def __init__(self, workdir, shards, extra_args=()):
        self.workdir = pathlib.Path(workdir)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "broker.log"
        self.port = free_port()
        self.admin_port = free_port()  # never the default 9644: brokers run side by side
        self.shards = shards
        self.extra_args = list(extra_args)
        self.proc = None

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def args(self):
        return [
            FRESHET_BIN, "start",
            "--listen", self.addr,
            "--data-dir", str(self.data_dir),
            "--shards", str(self.shards),
            "--admin-listen", f"127.0.0.1:{self.admin_port}",
            *self.extra_args,
        ]

    def start(self):
        assert self.proc is None
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.args(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"broker exited during startup with {code}\n{self.log_tail()}")
            try:
                if api_versions_v0_ok("127.0.0.1", self.port) and self._metadata_ok():
                    return
            except (OSError, ConnectionError) as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError(f"broker not ready after {READY_TIMEOUT_S}s: {last}\n{self.log_tail()}")

    def _metadata_ok(self):
        from confluent_kafka.admin import AdminClient

        md = AdminClient({"bootstrap.servers": self.addr, "log_level": 0}).list_topics(timeout=5)
        return len(md.brokers) >= 1

    def stop(self, sig=signal.SIGTERM):
        """Signals the broker and waits for it; returns its exit code."""
        proc, self.proc = self.proc, None
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"broker did not exit within {STOP_TIMEOUT_S}s of {sig!r}")

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def log_tail(self, lines=60):
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no broker log)"
        return "---- broker log tail ----\n" + "\n".join(text[-lines:]) + "\n---- end ----"


@pytest.fixture
def make_broker(tmp_path):
    """Factory: make_broker(shards=1, extra_args=()) starts a broker; all are killed afterwards."""
    brokers = []

    def make(shards=1, extra_args=()):
        b = Broker(tmp_path / f"broker{len(brokers)}", shards, extra_args)
        b.workdir.mkdir()
        brokers.append(b)
        return b.start()

    yield make
    for b in brokers:
        b.kill()
        print(b.log_tail())


@pytest.fixture(params=[1, 2], ids=["1shard", "2shards"])
def broker(request, make_broker):
    """A broker with 1 shard, then (as a second test run) with 2 shards."""
    return make_broker(shards=request.param)


def wait_until(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


# ---- multi-process clusters (issue 13); the Rust twin is tests/common/cluster.rs ----

CLUSTER_READY_TIMEOUT_S = 60
CLUSTER_START_ATTEMPTS_MAX = 3
_PORT_RACE_SIGNS = ("Address already in use", "AddrInUse", "os error 98")


def free_ports(count):
    """`count` distinct free 127.0.0.1 ports: all bound at once (no two alike), then released."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_status(addr, path, timeout_s=2):
    """GET http://addr/path: the status code, or None if nothing answered."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout_s) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


class Cluster:
    """`n` `freshet start` processes on 127.0.0.1 forming one metadata quorum.

    Node ids are 0..n-1 (also their index); the first `voters` nodes (all by default) are the
    voters of `controller_quorum_voters`. Each node has its own Kafka, controller and admin port
    and data directory. `start()` spawns every node before waiting for any (a quorum needs a
    majority up), waits for each node's /ready, then (unless `wait_for_cluster=False`) until
    every node's Metadata names a controller and lists every running node. A node that lost a
    port race makes the whole start retry with new ports. Every wait is bounded and fails with
    the nodes' log tails.
    """

    def __init__(self, workdir, n, shards=1, voters=None, racks=(), settings="", extra_args=()):
        assert n >= 1
        self.workdir = pathlib.Path(workdir)
        self.n = n
        self.shards = shards
        self.voter_count = n if voters is None else voters
        assert 1 <= self.voter_count <= n
        self.racks = list(racks)
        self.settings = settings
        self.extra_args = list(extra_args)
        self.procs = [None] * n
        self._choose_ports()

    def _choose_ports(self):
        ports = free_ports(3 * self.n)
        self.kafka_ports = ports[0::3]
        self.controller_ports = ports[1::3]
        self.admin_ports = ports[2::3]
        self.voters = ",".join(
            f"{i}@127.0.0.1:{self.controller_ports[i]}" for i in range(self.voter_count)
        )

    def node_dir(self, node):
        return self.workdir / f"node{node}"

    def data_dir(self, node):
        return self.node_dir(node) / "data"

    def log_path(self, node):
        return self.node_dir(node) / "node.log"

    def kafka_addr(self, node):
        return f"127.0.0.1:{self.kafka_ports[node]}"

    def controller_addr(self, node):
        return f"127.0.0.1:{self.controller_ports[node]}"

    def admin_addr(self, node):
        return f"127.0.0.1:{self.admin_ports[node]}"

    def bootstrap(self, nodes=None):
        """Kafka addresses of `nodes` (default: every node), comma-separated."""
        return ",".join(self.kafka_addr(i) for i in (range(self.n) if nodes is None else nodes))

    def running(self):
        return [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None]

    def args(self, node):
        config = self.node_dir(node) / "freshet.toml"
        args = [
            FRESHET_BIN, "start",
            "--config", str(config),
            "--node-id", str(node),
            "--listen", self.kafka_addr(node),
            "--controller-listen", self.controller_addr(node),
            "--controller-quorum-voters", self.voters,
            "--admin-listen", self.admin_addr(node),
            "--data-dir", str(self.data_dir(node)),
            "--shards", str(self.shards),
        ]
        if node < len(self.racks) and self.racks[node]:
            args += ["--broker-rack", self.racks[node]]
        return args + self.extra_args

    def _spawn(self, node):
        assert self.procs[node] is None, f"node {node} is running"
        self.node_dir(node).mkdir(parents=True, exist_ok=True)
        (self.node_dir(node) / "freshet.toml").write_text(self.settings)
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        with open(self.log_path(node), "ab") as log:
            self.procs[node] = subprocess.Popen(
                self.args(node), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                preexec_fn=_die_with_parent,
            )

    def _wait_nodes_ready(self, nodes):
        """None when every node of `nodes` answers /ready; else ("race", node) or a message."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = set(nodes)
        last = ""
        while pending:
            for node in sorted(pending):
                proc = self.procs[node]
                if proc.poll() is not None:
                    self.procs[node] = None
                    log = self.log_path(node).read_text(errors="replace")
                    if any(sign in log for sign in _PORT_RACE_SIGNS):
                        return ("race", node)
                    return f"node {node} exited during startup with {proc.returncode}"
                status = http_status(self.admin_addr(node), "/ready")
                if status == 200:
                    pending.discard(node)
                else:
                    last = f"node {node}: /ready {status}"
            if pending and time.monotonic() > deadline:
                return f"nodes {sorted(pending)} not ready after {READY_TIMEOUT_S}s ({last})"
            time.sleep(0.05)
        return None

    def start(self, wait_for_cluster=True):
        for attempt in range(1, CLUSTER_START_ATTEMPTS_MAX + 1):
            for node in range(self.n):
                self._spawn(node)
            problem = self._wait_nodes_ready(range(self.n))
            if problem is None:
                if wait_for_cluster:
                    self.wait_ready()
                return self
            self.kill_all()
            if isinstance(problem, tuple) and attempt < CLUSTER_START_ATTEMPTS_MAX:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self._choose_ports()
                continue
            self.fail(f"cluster of {self.n} did not start: {problem}")
        return self

    def metadata(self, node, timeout_s=5):
        """confluent-kafka's ClusterMetadata as `node` alone answers it."""
        from confluent_kafka.admin import AdminClient

        client = AdminClient({"bootstrap.servers": self.kafka_addr(node), "log_level": 0})
        return client.list_topics(timeout=timeout_s)

    def wait_until(self, probe, timeout_s, what):
        """Calls probe() until it returns a true value; it may return (False, state) to say
        what it saw. Fails after `timeout_s` naming `what`, the last state and the logs."""
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            try:
                value = probe()
            except Exception as e:  # a node not answering is "not yet"
                value = (False, repr(e))
            if isinstance(value, tuple) and value and value[0] is False:
                last = value[1]
            elif value:
                return value
            if time.monotonic() > deadline:
                self.fail(f"timed out after {timeout_s}s waiting for {what}; last seen: {last}")
            time.sleep(0.1)

    def wait_ready(self, timeout_s=CLUSTER_READY_TIMEOUT_S):
        """Every running node's Metadata names a controller and lists every running node."""
        running = set(self.running())

        def whole():
            for node in sorted(running):
                md = self.metadata(node)
                if md.controller_id < 0 or set(md.brokers) != running:
                    return (False, f"node {node}: controller {md.controller_id}, "
                                   f"brokers {sorted(md.brokers)} (want {sorted(running)})")
            return True

        self.wait_until(whole, timeout_s, "the cluster to be whole")

    def wait_controller(self, timeout_s, not_node=None):
        """The controller every running node names (a running node other than `not_node`)."""
        running = self.running()

        def agreed():
            seen = {self.metadata(node).controller_id for node in running}
            if len(seen) == 1:
                (c,) = seen
                if c in running and c != not_node:
                    return (True, c)
            return (False, f"controllers named: {sorted(seen)}")

        return self.wait_until(agreed, timeout_s, "one controller named by every node")[1]

    def kill9(self, node):
        proc, self.procs[node] = self.procs[node], None
        assert proc is not None, f"node {node} is not running"
        proc.kill()
        proc.wait()

    def kill_all(self):
        for node in range(self.n):
            if self.procs[node] is not None:
                self.kill9(node)

    def stop(self, node, sig=signal.SIGTERM):
        """Signals `node` and waits for it (bounded); returns its exit code."""
        proc, self.procs[node] = self.procs[node], None
        assert proc is not None, f"node {node} is not running"
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.fail(f"node {node} did not exit within {STOP_TIMEOUT_S}s of {sig!r}")

    def restart(self, node):
        """Starts a stopped `node` on the same ports and data directory; waits for /ready."""
        self.start_nodes([node])

    def start_nodes(self, nodes):
        for node in nodes:
            self._spawn(node)
        problem = self._wait_nodes_ready(nodes)
        if problem is not None:
            self.fail(f"restarting nodes {list(nodes)}: {problem}")

    def start_stopped(self):
        self.start_nodes([i for i in range(self.n) if self.procs[i] is None])

    def log_tail(self, node, lines=60):
        try:
            text = self.log_path(node).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"(no log for node {node})"
        return (f"---- node {node} log tail ----\n" + "\n".join(text[-lines:])
                + f"\n---- end of node {node} log ----")

    def logs_tail(self):
        return "\n".join(self.log_tail(i) for i in range(self.n))

    def fail(self, message):
        raise AssertionError(f"{message}\n{self.logs_tail()}")


@pytest.fixture
def make_cluster(tmp_path):
    """Factory: make_cluster(n=3, **options) starts a Cluster; every node is killed afterwards
    and the logs are printed (pytest shows them when the test fails)."""
    clusters = []

    def make(n=3, wait_for_cluster=True, **options):
        c = Cluster(tmp_path / f"cluster{len(clusters)}", n, **options)
        clusters.append(c)
        return c.start(wait_for_cluster=wait_for_cluster)

    yield make
    for c in clusters:
        c.kill_all()
        print(c.logs_tail())


@pytest.fixture
def cluster(make_cluster):
    """A whole 3-node cluster (every node a voter and a broker)."""
    return make_cluster(3)
