"""The web console (issue 17) in a real browser: Debian's headless Chromium, driven over the
DevTools protocol (`--remote-debugging-pipe`: JSON messages on fds 3/4, no extra package),
loads the console page from the admin listener. The DOM must show the topic confluent-kafka
created (with its log end offset), the group it committed (with its lag), and, in the live
tail, the records confluent-kafka produced before the page opened and those it produces while
the page is open, in order, over the push listener: by Server-Sent Events (an EventSource) and
by WebSocket.

`FRESHET_CONSOLE_SCREENSHOT=docs/console.png` also saves a 1280x800 screenshot of the page
(how README's picture is made)."""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_wire import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium with one page, over the DevTools protocol on a pipe."""

    def __init__(self):
        assert CHROMIUM, "chromium is not installed (tests/run-all.sh installs it with apt-get)"
        self.profile = tempfile.mkdtemp(prefix="freshet-chromium-")
        to_chrome_r, self._to_chrome_w = os.pipe()
        self._from_chrome_r, from_chrome_w = os.pipe()

        def fds():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=fds,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next_id = 0
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call(
            "Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def call(self, method, params=None, session=None, timeout_s=30):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self._next_id:
                    assert "error" not in answer, f"{method}: {answer['error']}"
                    return answer["result"]
            assert time.monotonic() < deadline, f"{method}: no answer from chromium"
            chunk = os.read(self._from_chrome_r, 1 << 20)
            assert chunk, "chromium exited"
            self._buf += chunk

    def page(self, method, params=None):
        return self.call(method, params, session=self.session)

    def open(self, url):
        # Through a blank page: a new fragment alone would not load the page again.
        self.page("Page.navigate", {"url": "about:blank"})
        self.page("Page.navigate", {"url": url})

    def js(self, expression):
        result = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_js(self, expression, what, timeout_s=30):
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"{what}: still {value!r} after {timeout_s}s; page says: "
                             f"{self.js('document.body.innerText')!r}")

    def screenshot(self, path, width=1280, height=800):
        self.page("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        time.sleep(0.5)
        data = self.page("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.call("Browser.close", timeout_s=5)
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


# The live tail's values, in the order the page shows them.
TAIL_VALUES = "[...document.querySelectorAll('#tail-rows tr')].map(r => r.cells[3].textContent)"


def produce(b, topic, values, partition=0):
    p = Producer({"bootstrap.servers": b.addr, "acks": "all", "linger.ms": 0})
    for v in values:
        p.produce(topic, value=v.encode(), key=b"k", partition=partition)
    assert p.flush(30) == 0


def test_console_shows_confluent_kafka_topic_group_and_live_records(make_broker):
    http_port = free_port()
    b = make_broker(shards=2, extra_args=["--http-listen", str(http_port)])
    admin = AdminClient({"bootstrap.servers": b.addr})
    for f in admin.create_topics([NewTopic("browser-orders", 2, 1)]).values():
        f.result(timeout=20)
    produced = [f"before-{i}" for i in range(5)]
    produce(b, "browser-orders", produced)
    c = Consumer({"bootstrap.servers": b.addr, "group.id": "browser-billing",
                  "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("browser-orders", 0, 2)], asynchronous=False)
    c.close()

    browser = Browser()
    try:
        console = f"http://127.0.0.1:{b.admin_port}/"
        for via in ("sse", "ws"):
            browser.open(f"{console}#topic=browser-orders&partition=0&from=earliest&via={via}")
            # The topic confluent-kafka created, with partition 0's log end offset.
            end = len(produced)
            browser.wait_js(
                "[...document.querySelectorAll('#topics tr.sub')].some(r => "
                "r.cells[0].textContent.trim() === 'browser-orders-0' && "
                f"r.cells[6].textContent === '{end}')",
                f"topic browser-orders-0 with log end {end}")
            # The group's lag: log end - committed 2.
            lag = browser.wait_js(
                "(r => r && r.cells[4].textContent)("
                "document.querySelector('#groups tr[data-group=\"browser-billing\"]'))",
                "group browser-billing")
            assert lag == str(end - 2)
            # The records produced before the page opened, then those produced while it is open.
            browser.wait_js(f"{TAIL_VALUES}.length >= {len(produced)}",
                            f"tail ({via}) shows the records produced so far")
            assert browser.js(TAIL_VALUES) == produced
            live = [f"{via}-live-{i}" for i in range(5)]
            produce(b, "browser-orders", live)
            produced += live
            browser.wait_js(f"{TAIL_VALUES}.length >= {len(produced)}",
                            f"tail ({via}) shows the live records")
            assert browser.js(TAIL_VALUES) == produced
            status = browser.js("document.getElementById('tail-status').textContent")
            assert status == f"tailing browser-orders-0 ({'SSE' if via == 'sse' else 'WebSocket'})"
        # Every partition at once (the topic-wide stream): partition 1's records join in.
        browser.open(f"{console}#topic=browser-orders&partition=all&from=earliest&via=sse")
        browser.wait_js(f"{TAIL_VALUES}.length >= {len(produced)}", "topic-wide tail")
        others = [f"p1-live-{i}" for i in range(3)]
        produce(b, "browser-orders", others, partition=1)
        browser.wait_js(f"{TAIL_VALUES}.length >= {len(produced) + 3}", "topic-wide tail, live")
        shown = browser.js(TAIL_VALUES)
        assert [v for v in shown if not v.startswith("p1-")] == produced
        assert [v for v in shown if v.startswith("p1-")] == others
        status = browser.js("document.getElementById('tail-status').textContent")
        assert status == "tailing browser-orders, all partitions (SSE)"
        shot = os.environ.get("FRESHET_CONSOLE_SCREENSHOT")
        if shot:
            time.sleep(3.5)  # one refresh of the tables after the last records
            browser.screenshot(shot)
    finally:
        browser.close()
