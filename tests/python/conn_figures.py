"""Measures the broker's memory and latency under connection abuse (issue 12 items 5 and 7).

Not a pytest test: a script that prints figures, for before/after comparisons.

    FRESHET_BIN=target/release/freshet python tests/python/conn_figures.py [idle|cycles|slow] ...

- idle N: RSS with N idle connections (half never sent a byte, half did one ApiVersions).
- cycles N: RSS after N connect-close cycles.
- slow N SECONDS: N connections each announce a 1 MiB request and send 1 byte per second;
  meanwhile new connections' ApiVersions latency is sampled; prints the worst latency, the peak
  RSS and how many slow connections the broker closed.
"""

import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time

from kafka_wire import free_port, recv_exact

BIN = os.environ.get("FRESHET_BIN", "target/debug/freshet")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def api_versions_frame():
    client_id = b"figures"
    header = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    return struct.pack(">i", len(header)) + header


def api_versions(port, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(api_versions_frame())
    size = struct.unpack(">i", recv_exact(s, 4))[0]
    recv_exact(s, size)
    return s


def start(extra):
    work = tempfile.mkdtemp(prefix="conn-figures-")
    port, admin = free_port(), free_port()
    log = open(os.path.join(work, "broker.log"), "w")
    args = [BIN, "start", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(work, "data"),
            "--shards", "1", "--admin-listen", f"127.0.0.1:{admin}"] + extra
    proc = subprocess.Popen(args, stdout=log, stderr=log)
    deadline = time.time() + 60
    while True:
        try:
            api_versions(port, 2).close()
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    time.sleep(0.5)
    return proc, port, work


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    what = sys.argv[1]
    extra = []
    if what == "slow":
        extra = ["--config", "/dev/null"]
        work = tempfile.mkdtemp()
        cfg = os.path.join(work, "f.toml")
        with open(cfg, "w") as f:
            f.write(f"request_read_timeout_ms = {int(sys.argv[4]) if len(sys.argv) > 4 else 30000}\n")
        extra = ["--config", cfg]
    proc, port, _work = start(extra)
    try:
        base = rss_mib(proc.pid)
        print(f"baseline RSS {base:.1f} MiB")
        if what == "idle":
            n = int(sys.argv[2])
            conns = []
            for i in range(n):
                if i % 2:
                    conns.append(api_versions(port))
                else:
                    conns.append(socket.create_connection(("127.0.0.1", port)))
            time.sleep(2)
            now = rss_mib(proc.pid)
            print(f"{n} idle connections: RSS {now:.1f} MiB (+{now - base:.1f} MiB, "
                  f"{(now - base) * 1024 / n:.1f} KiB per connection)")
            for c in conns:
                c.close()
            time.sleep(2)
            print(f"after closing them: RSS {rss_mib(proc.pid):.1f} MiB")
        elif what == "cycles":
            n = int(sys.argv[2])
            t = time.time()
            for i in range(n):
                s = socket.create_connection(("127.0.0.1", port))
                if i % 2:
                    s.sendall(api_versions_frame())
                    size = struct.unpack(">i", recv_exact(s, 4))[0]
                    recv_exact(s, size)
                s.close()
            time.sleep(2)
            now = rss_mib(proc.pid)
            print(f"{n} connect-close cycles in {time.time() - t:.1f} s: RSS {now:.1f} MiB "
                  f"(+{now - base:.1f} MiB)")
        elif what == "slow":
            n, secs = int(sys.argv[2]), float(sys.argv[3])
            slow = []
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(struct.pack(">i", 1 << 20) + b"\x00")
                slow.append(s)
            start_t = time.time()
            worst, peak, failures, samples = 0.0, base, 0, 0
            next_byte = time.time() + 1
            while time.time() - start_t < secs:
                t0 = time.time()
                try:
                    api_versions(port, timeout=5).close()
                    worst = max(worst, time.time() - t0)
                except OSError:
                    failures += 1
                    worst = max(worst, time.time() - t0)
                samples += 1
                peak = max(peak, rss_mib(proc.pid))
                if time.time() >= next_byte:
                    next_byte += 1
                    for s in slow:
                        try:
                            s.send(b"\x00")
                        except OSError:
                            pass
                time.sleep(0.2)
            closed = 0
            for s in slow:
                s.settimeout(0.05)
                try:
                    if s.recv(1) == b"":
                        closed += 1
                except socket.timeout:
                    pass
                except OSError:
                    closed += 1
            print(f"{n} slow connections for {secs:.0f} s: ApiVersions worst {worst * 1000:.0f} ms, "
                  f"{failures}/{samples} failed (5 s timeout); peak RSS {peak:.1f} MiB "
                  f"(+{peak - base:.1f} MiB); slow connections closed by the broker: {closed}/{n}")
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
