"""Fixtures that run the real `freshet` binary for the Python client tests.

FRESHET_BIN names the binary (tests/run-all.sh sets it to target/debug/freshet). Each broker gets
a free 127.0.0.1 port and its own temporary data directory; its stderr goes to a log file whose
tail is printed in the test's teardown (pytest shows it when the test fails).
"""

import ctypes
import os
import pathlib
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
