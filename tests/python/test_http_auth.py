"""Authentication and ACLs on the HTTP listeners (issues 15 and 17) with real clients: curl and
Python's urllib send REST Proxy v3 requests with Basic credentials (checked against the SCRAM
credentials confluent-kafka's AdminClient stored) or an unsecured bearer token; the same ACLs
as Kafka requests decide (WRITE to produce, READ on the topic and group to stream or commit);
confluent-kafka reads back what was produced. The admin listener's console API needs
credentials and DESCRIBE on the cluster when configured. On the Kafka listener every client
is User:ANONYMOUS, made a super user here to administer."""

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                   NewTopic, ResourcePatternType, ResourceType,
                                   ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

from conftest import Broker
from kafka_wire import free_port

T = 30  # seconds, for every client call


class HttpBroker(Broker):
    """A broker with the HTTP listener on, configured by the TOML `settings`."""

    def __init__(self, workdir, settings):
        super().__init__(workdir, 1)
        self.http_port = free_port()
        workdir.mkdir()
        config = workdir / "freshet.toml"
        config.write_text(f'http_listen = "127.0.0.1:{self.http_port}"\n'
                          'authorizer = true\nsuper_users = "User:ANONYMOUS"\n' + settings)
        self.extra_args = ["--config", str(config)]

    @property
    def http(self):
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def admin_http(self):
        return f"http://127.0.0.1:{self.admin_port}"


def started(tmp_path, settings):
    b = HttpBroker(tmp_path / "broker", settings)
    b.start()
    return b


def admin(b):
    return AdminClient({"bootstrap.servers": b.addr, "socket.timeout.ms": 20000})


def setup(b, topics, users, acls):
    a = admin(b)
    for f in a.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        f.result(timeout=T)
    upserts = [UserScramCredentialUpsertion(u, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512,
                                                                    4096), pw.encode())
               for u, pw in users.items()]
    if upserts:
        for f in a.alter_user_scram_credentials(upserts).values():
            f.result(timeout=T)
    grant(b, acls)
    return a.list_topics(timeout=T).cluster_id


def grant(b, acls):
    bindings = [AclBinding(rtype, name, ResourcePatternType.LITERAL, principal, "*", op,
                           AclPermissionType.ALLOW) for principal, op, rtype, name in acls]
    if not bindings:
        return
    a = admin(b)  # kept alive until the futures are done
    for f in a.create_acls(bindings).values():
        assert f.result(timeout=T) is None


def curl(method, url, body=None, user=None, headers=(), extra=()):
    """(status, headers text, body) of one curl request (status 0: no HTTP answer)."""
    args = ["curl", "-sS", "-D", "-", "--max-time", "20", "-X", method, *extra]
    if user is not None:
        args += ["-u", user]
    for h in headers:
        args += ["-H", h]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=30).stdout
    head, _, rest = out.partition("\n\n")  # text mode: CRLF read as LF
    if not head.startswith("HTTP/"):
        return 0, head, rest
    return int(head.split(" ")[1]), head, rest


def urlopen(method, url, body=None, basic=None, bearer=None):
    """(status, headers, body) of one urllib request (an error status is returned, not raised)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if basic is not None:
        req.add_header("Authorization",
                       "Basic " + base64.b64encode(":".join(basic).encode()).decode())
    if bearer is not None:
        req.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(req, timeout=T) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


RECORD = {"value": {"type": "STRING", "data": "hello"}}


def records_url(b, cluster, topic):
    return f"{b.http}/v3/clusters/{cluster}/topics/{topic}/records"


def read_back(b, topic, n):
    c = Consumer({"bootstrap.servers": b.addr, "group.id": "http-auth-reader",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.monotonic() + T
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    return got


def failures(b):
    status, _, text = urlopen("GET", f"{b.admin_http}/metrics")
    assert status == 200
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("freshet_authentication_failures_total"))


def test_basic_auth_produce_needs_credentials_and_a_write_acl(tmp_path):
    b = started(tmp_path, 'http_authentication_method = "BASIC"\n')
    try:
        cluster = setup(b, ["orders", "secret"], {"alice": "alice-secret", "bob": "bob:pw"},
                        [("User:alice", AclOperation.WRITE, ResourceType.TOPIC, "orders")])
        url = records_url(b, cluster, "orders")
        # curl -u and urllib's Authorization header: produced, read back by confluent-kafka.
        status, _, body = curl("POST", url, RECORD, user="alice:alice-secret")
        assert status == 200, body
        assert json.loads(body)["offset"] == 0
        status, _, body = urlopen("POST", url, RECORD, basic=("alice", "alice-secret"))
        assert status == 200, body
        assert read_back(b, "orders", 2) == [b"hello", b"hello"]
        # Later requests hit the verified-credential cache: time a few (printed with -s).
        t0 = time.monotonic()
        for _ in range(5):
            assert urlopen("POST", url, RECORD, basic=("alice", "alice-secret"))[0] == 200
        print(f"5 authenticated produces: {(time.monotonic() - t0) / 5 * 1000:.1f} ms each")

        before = failures(b)
        # No credentials, a wrong password, an unknown user: 401 with the Basic challenge.
        for user in (None, "alice:wrong", "mallory:x"):
            status, head, body = curl("POST", url, RECORD, user=user)
            assert status == 401, (user, body)
            assert 'WWW-Authenticate: Basic realm="Freshet"' in head
            assert json.loads(body)["error_code"] == 40101
        # Garbage in the header.
        status, _, _ = curl("POST", url, RECORD, headers=["Authorization: Basic %%%"])
        assert status == 401
        assert failures(b) >= before + 3
        # bob's password has a ':' in it (only the first one splits user from password); he
        # has no ACL: 403 with Kafka's message, as for alice on a topic she may not write and
        # a topic that does not exist (not 404: names do not leak).
        for user, topic in (("bob:bob:pw", "orders"), ("alice:alice-secret", "secret"),
                            ("alice:alice-secret", "nope")):
            status, _, body = curl("POST", records_url(b, cluster, topic), RECORD, user=user)
            assert status == 403, (user, topic, body)
            assert json.loads(body) == {"error_code": 40301,
                                        "message": f"Not authorized to access topics: [{topic}]"}
        assert read_back(b, "orders", 7) == [b"hello"] * 7
        b.kill()
        log = b.log_path.read_text()
        assert "HTTP authentication failed" in log
        assert "alice-secret" not in log and "bob:pw" not in log
    finally:
        b.kill()


def test_streams_and_commits_need_read_on_the_group_and_topic(tmp_path):
    b = started(tmp_path, 'http_authentication_method = "BASIC"\n'
                          "connection_failed_authentication_delay_ms = 0\n")
    try:
        cluster = setup(b, ["orders", "secret"], {"alice": "alice-secret"}, [
            ("User:alice", AclOperation.WRITE, ResourceType.TOPIC, "orders"),
            ("User:alice", AclOperation.READ, ResourceType.TOPIC, "orders"),
            ("User:alice", AclOperation.READ, ResourceType.GROUP, "g-ok"),
        ])
        alice = "alice:alice-secret"
        assert curl("POST", records_url(b, cluster, "orders"), RECORD, user=alice)[0] == 200
        stream = f"{b.http}/v3/clusters/{cluster}/topics/orders/partitions/0/records/stream"
        # A group alice may not READ: 403 before any event.
        status, _, body = curl("GET", stream + "?group=g-denied", user=alice)
        assert status == 403
        assert json.loads(body)["message"] == "Not authorized to access group: g-denied"
        status, _, body = curl("GET", stream.replace("orders", "secret") + "?offset=earliest",
                               user=alice)
        assert status == 403
        assert json.loads(body)["message"] == "Not authorized to access topics: [secret]"
        status, _, _ = curl("GET", stream + "?offset=earliest")
        assert status == 401
        # A share group she may not READ either.
        status, _, body = curl("GET", stream + "?share_group=s-denied", user=alice)
        assert status == 403 and "s-denied" in body
        # Allowed: the stream carries the record (curl stops at --max-time; read what came).
        proc = subprocess.run(["curl", "-sN", "--max-time", "3", "-u", alice,
                               stream + "?offset=earliest&group=g-ok"],
                              capture_output=True, text=True, timeout=30)
        events = [json.loads(line[6:]) for line in proc.stdout.splitlines()
                  if line.startswith("data: ")]
        assert [e["offset"] for e in events] == [0], proc.stdout
        # Commits: READ on the group, then on the topic.
        commit = {"topic_name": "orders", "partition_id": 0, "offset": 1}
        offsets = f"{b.http}/v3/clusters/{cluster}/consumer-groups/%s/offsets"
        status, _, body = urlopen("POST", offsets % "g-ok", commit, basic=("alice", "alice-secret"))
        assert status == 200, body
        status, _, body = urlopen("POST", offsets % "g-denied", commit,
                                  basic=("alice", "alice-secret"))
        assert status == 403 and "g-denied" in body
        status, _, body = urlopen("POST", offsets % "g-ok", {**commit, "topic_name": "secret"},
                                  basic=("alice", "alice-secret"))
        assert status == 403 and "[secret]" in body
        # The commit went through the group coordinator: Kafka clients see it.
        c = Consumer({"bootstrap.servers": b.addr, "group.id": "g-ok"})
        got = c.committed([TopicPartition("orders", 0)], timeout=T)
        c.close()
        assert got[0].offset == 1
    finally:
        b.kill()


def unsecured_jwt(sub, exp_in_s):
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    now = int(time.time())
    return f"{part({'alg': 'none'})}.{part({'sub': sub, 'iat': now, 'exp': now + exp_in_s})}."


def test_bearer_token_of_the_unsecured_validator(tmp_path):
    b = started(tmp_path, 'http_authentication_method = "BEARER"\n'
                          "sasl_oauthbearer_unsecured_validator_enabled = true\n"
                          "connection_failed_authentication_delay_ms = 0\n")
    try:
        cluster = setup(b, ["orders"], {},
                        [("User:alice", AclOperation.WRITE, ResourceType.TOPIC, "orders")])
        url = records_url(b, cluster, "orders")
        status, _, body = urlopen("POST", url, RECORD, bearer=unsecured_jwt("alice", 60))
        assert status == 200, body
        status, _, body = curl("POST", url, RECORD,
                               headers=[f"Authorization: Bearer {unsecured_jwt('alice', 60)}"])
        assert status == 200, body
        assert read_back(b, "orders", 2) == [b"hello", b"hello"]
        status, _, body = urlopen("POST", url, RECORD, bearer=unsecured_jwt("bob", 60))
        assert status == 403, body
        # Expired: 401 with RFC 6750's invalid_token.
        status, headers, _ = urlopen("POST", url, RECORD, bearer=unsecured_jwt("alice", -120))
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="Freshet", error="invalid_token"'
        # Basic credentials on a BEARER listener: the Bearer challenge.
        status, headers, _ = urlopen("POST", url, RECORD, basic=("alice", "x"))
        assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="Freshet"'
    finally:
        b.kill()


def test_admin_listener_needs_credentials_and_describe_on_the_cluster(tmp_path):
    b = started(tmp_path, 'admin_authentication_method = "BASIC"\n'
                          "connection_failed_authentication_delay_ms = 0\n")
    try:
        setup(b, ["orders", "secret"], {"alice": "alice-secret", "prom": "prom-secret"},
              [("User:alice", AclOperation.DESCRIBE, ResourceType.TOPIC, "orders")])
        api = f"{b.admin_http}/api/topics"
        # Probes need nothing.
        assert urlopen("GET", f"{b.admin_http}/health")[0] == 200
        assert urlopen("GET", f"{b.admin_http}/ready")[0] == 200
        status, head, _ = curl("GET", api)
        assert status == 401 and 'WWW-Authenticate: Basic realm="Freshet"' in head
        assert curl("GET", api, user="alice:wrong")[0] == 401
        # Authenticated without DESCRIBE on the cluster: 403 (the console page too).
        status, _, body = curl("GET", api, user="alice:alice-secret")
        assert status == 403 and "Cluster authorization failed." in body
        assert curl("GET", f"{b.admin_http}/", user="alice:alice-secret")[0] == 403
        grant(b, [("User:alice", AclOperation.DESCRIBE, ResourceType.BROKER, "kafka-cluster")])
        # Now allowed; she sees only the topics she may DESCRIBE.
        status, _, body = urlopen("GET", api, basic=("alice", "alice-secret"))
        assert status == 200, body
        topics = json.loads(body)
        assert [t["name"] for t in topics["topics"]] == ["orders"]
        assert topics["topics_total"] == 1
        assert curl("GET", f"{b.admin_http}/", user="alice:alice-secret")[0] == 200
        # /metrics: any authenticated principal (a Prometheus scraper's basic_auth), no ACL.
        assert curl("GET", f"{b.admin_http}/metrics")[0] == 401
        status, _, body = urlopen("GET", f"{b.admin_http}/metrics", basic=("prom", "prom-secret"))
        assert status == 200 and "freshet_" in body
    finally:
        b.kill()


def test_password_checks_do_not_block_the_shard(tmp_path):
    """A Basic check derives the SCRAM key (PBKDF2-SHA-512, here 16384 rounds: ~0.25 s in a
    debug build). A flood of wrong passwords runs those on the blocking pool, two at a time:
    Kafka requests on the same (only) shard keep being answered at once. With the derivation
    on the shard (a build made to check this test), the median ApiVersions round trip during
    the flood was 446 ms and the test failed; off the shard it is ~10 ms on a loaded machine."""
    import statistics
    import threading

    from conftest import api_versions_v0_ok

    b = started(tmp_path, 'http_authentication_method = "BASIC"\n'
                          "connection_failed_authentication_delay_ms = 0\n")
    try:
        cluster = setup(b, ["orders"], {}, [])
        upsert = UserScramCredentialUpsertion(
            "slow", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 16384), b"right")
        a = admin(b)
        for f in a.alter_user_scram_credentials([upsert]).values():
            f.result(timeout=T)
        url = records_url(b, cluster, "orders")
        t0 = time.monotonic()
        assert urlopen("POST", url, RECORD, basic=("slow", "wrong"))[0] == 401
        one_check = time.monotonic() - t0
        statuses = []

        def flood():
            for _ in range(2):
                statuses.append(urlopen("POST", url, RECORD, basic=("slow", "wrong"))[0])

        threads = [threading.Thread(target=flood) for _ in range(4)]
        for t in threads:
            t.start()
        latencies = []
        while any(t.is_alive() for t in threads):
            t1 = time.monotonic()
            assert api_versions_v0_ok("127.0.0.1", b.port)
            latencies.append(time.monotonic() - t1)
        for t in threads:
            t.join()
        assert statuses == [401] * 8
        median = statistics.median(latencies)
        print(f"one bad check {one_check * 1000:.0f} ms; during 8: {len(latencies)} ApiVersions, "
              f"median {median * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
        assert median < 0.05, median
        # The right password is still accepted, and a second time from the cache.
        for _ in range(2):
            assert urlopen("POST", url, RECORD, basic=("slow", "right"))[0] == 403  # no ACL
    finally:
        b.kill()


def test_https_with_client_certificates_and_basic(tmp_path):
    """HTTPS on the HTTP listener (certificates made by the openssl CLI): a client certificate
    authenticates by itself as the Kafka listeners map it (User:CN=alice); without one, Basic
    credentials over TLS; a certificate of another CA or plain HTTP never gets an answer, and
    the listener keeps serving."""
    import ssl

    from test_tls_sasl import make_ca, make_cert

    d = tmp_path / "certs"
    d.mkdir()
    make_ca(d, "ca")
    make_ca(d, "rogue-ca")
    make_cert(d, "server", "/CN=localhost", "ca", san="IP:127.0.0.1,DNS:localhost")
    make_cert(d, "alice", "/CN=alice", "ca")
    make_cert(d, "mallory", "/CN=alice", "rogue-ca")
    b = started(tmp_path, 'http_authentication_method = "BASIC"\n'
                          "connection_failed_authentication_delay_ms = 0\n"
                          "http_ssl_enabled = true\n"
                          'http_ssl_client_authentication = "REQUESTED"\n'
                          f'ssl_certificate_file = "{d / "server.pem"}"\n'
                          f'ssl_key_file = "{d / "server.key"}"\n'
                          f'ssl_ca_file = "{d / "ca.pem"}"\n')
    try:
        cluster = setup(b, ["orders"], {"bob": "bob-secret"}, [
            ("User:CN=alice", AclOperation.WRITE, ResourceType.TOPIC, "orders"),
            ("User:bob", AclOperation.WRITE, ResourceType.TOPIC, "orders"),
        ])
        url = records_url(b, cluster, "orders").replace("http://", "https://")
        ca = ["--cacert", str(d / "ca.pem")]
        alice = ca + ["--cert", str(d / "alice.pem"), "--key", str(d / "alice.key")]
        status, _, body = curl("POST", url, RECORD, headers=(), extra=alice)
        assert status == 200, body
        # urllib with a client certificate too.
        context = ssl.create_default_context(cafile=str(d / "ca.pem"))
        context.load_cert_chain(str(d / "alice.pem"), str(d / "alice.key"))
        req = urllib.request.Request(url, data=json.dumps(RECORD).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=T, context=context) as r:
            assert r.status == 200
        # No certificate: Basic over TLS, or 401.
        assert curl("POST", url, RECORD, extra=ca)[0] == 401
        status, _, body = curl("POST", url, RECORD, user="bob:bob-secret", extra=ca)
        assert status == 200, body
        # Another CA's certificate (same subject) or plain HTTP: no HTTP answer at all.
        rogue = ca + ["--cert", str(d / "mallory.pem"), "--key", str(d / "mallory.key")]
        assert curl("POST", url, RECORD, extra=rogue)[0] == 0
        assert curl("POST", url.replace("https://", "http://"), RECORD)[0] == 0
        assert read_back(b, "orders", 3) == [b"hello"] * 3
        assert curl("POST", url, RECORD, extra=alice)[0] == 200
    finally:
        b.kill()
