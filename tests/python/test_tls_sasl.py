"""Listeners with TLS and SASL (issue 15), driven by real clients with real certificates.

One broker runs four listeners (PLAINTEXT, SSL, SASL_SSL, SASL_PLAINTEXT) with certificates made
here by the openssl CLI (a CA, a server certificate for 127.0.0.1, client certificates from that
CA and from a rogue one). Users are created before the start with `freshet user create`, as
Kafka's `kafka-storage format --add-scram`. confluent-kafka (librdkafka) and kafka-python produce
and consume over SSL, SASL_SSL with SCRAM-SHA-512 and PLAIN, SASL_PLAINTEXT with SCRAM-SHA-256,
and mTLS; a wrong password, a plaintext client on the TLS port, a client certificate from an
unknown CA and garbage during the handshake are refused, and the broker keeps serving the others.
"""

import os
import socket
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import FRESHET_BIN, Broker, wait_until
from kafka_wire import free_port, recv_exact


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def make_cert(d, name, subject, ca, san=None):
    """A key and an X.509 v3 certificate (webpki takes no v1) for `subject` signed by CA `ca`
    (files `name`.key/.pem): a server one for `san`, else a client one."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{name}.key",
            "-out", f"{name}.csr", cwd=d)
    ext = f"subjectAltName={san}\n" if san else "extendedKeyUsage=clientAuth\n"
    (d / f"{name}.ext").write_text(ext)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
            cwd=d)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    make_ca(d, "ca")
    make_ca(d, "rogue-ca")
    make_cert(d, "server", "/CN=localhost", "ca", san="IP:127.0.0.1,DNS:localhost")
    make_cert(d, "alice", "/O=example/OU=eng/CN=alice", "ca")
    make_cert(d, "mallory", "/CN=mallory", "rogue-ca")
    return d


def create_user(data_dir, name, password, mechanism):
    out = subprocess.run(
        [FRESHET_BIN, "user", "create", "--data-dir", str(data_dir), "--name", name,
         "--password", password, "--mechanism", mechanism],
        capture_output=True, text=True)
    return out


class SecureBroker(Broker):
    """A broker of 2 shards (each serves every listener) with PLAINTEXT (the harness's ready
    check), SSL, SASL_SSL and SASL_PLAINTEXT; client certificates are requested on SSL."""

    def __init__(self, workdir, certs, extra=()):
        super().__init__(workdir, 2)
        self.ports = {"SSL": free_port(), "SASL_SSL": free_port(), "SASL_PLAINTEXT": free_port()}
        listeners = [f"PLAINTEXT://{self.addr}"] + [
            f"{name}://127.0.0.1:{port}" for name, port in self.ports.items()]
        self.extra_args = [
            "--listeners", ",".join(listeners),
            "--ssl-certificate-file", str(certs / "server.pem"),
            "--ssl-key-file", str(certs / "server.key"),
            "--ssl-ca-file", str(certs / "ca.pem"),
            "--ssl-client-auth", "requested",
            *extra,
        ]

    def at(self, name):
        return f"127.0.0.1:{self.ports[name]}"


@pytest.fixture
def secure_broker(tmp_path, certs, monkeypatch):
    # Debug lines of the listeners say who authenticated as whom.
    monkeypatch.setenv("RUST_LOG", "info,freshet::server=debug")
    b = SecureBroker(tmp_path / "broker", certs)
    b.workdir.mkdir()
    for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
        out = create_user(b.data_dir, "alice", "alice-secret", mechanism)
        assert out.returncode == 0, out.stderr
    try:
        yield b.start()
    finally:
        b.kill()
        print(b.log_tail())


def metric_total(broker, name):
    """The sum of metric `name` over its series in the broker's /metrics."""
    import urllib.request
    url = f"http://127.0.0.1:{broker.admin_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def ssl_conf(certs):
    return {"ssl.ca.location": str(certs / "ca.pem")}


def produce_consume(conf, topic, n=20):
    """Produces `n` messages with confluent-kafka under `conf` and reads them back."""
    p = Producer({**conf, "linger.ms": 5})
    for i in range(n):
        p.produce(topic, f"m{i}".encode())
    assert p.flush(30) == 0
    c = Consumer({**conf, "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    deadline = time.time() + 30
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    assert got == [f"m{i}".encode() for i in range(n)]


def auth_errors(conf, seconds=15):
    """Errors a producer under `conf` reports until an authentication error shows."""
    errors = []
    p = Producer({**conf, "error_cb": errors.append, "socket.timeout.ms": 10000})
    p.produce("never", b"x")
    deadline = time.time() + seconds
    while time.time() < deadline and not any(
            e.code() == KafkaError._AUTHENTICATION for e in errors):
        p.poll(0.2)
    p.purge()
    p.flush(5)
    return errors


def test_ssl_confluent_kafka_and_kafka_python(secure_broker, certs):
    """Both clients produce and consume over SSL; Metadata sends them to the SSL listener."""
    conf = {"bootstrap.servers": secure_broker.at("SSL"), "security.protocol": "SSL",
            **ssl_conf(certs)}
    md = AdminClient(conf).list_topics(timeout=10)
    assert [(b.host, b.port) for b in md.brokers.values()] == [
        ("127.0.0.1", secure_broker.ports["SSL"])]
    produce_consume(conf, "ssl-topic")

    from kafka import KafkaConsumer, KafkaProducer
    kp = KafkaProducer(bootstrap_servers=secure_broker.at("SSL"), security_protocol="SSL",
                       ssl_cafile=str(certs / "ca.pem"))
    kp.send("ssl-topic", b"from kafka-python").get(timeout=30)
    kp.close()
    kc = KafkaConsumer("ssl-topic", bootstrap_servers=secure_broker.at("SSL"),
                       security_protocol="SSL", ssl_cafile=str(certs / "ca.pem"),
                       auto_offset_reset="earliest", consumer_timeout_ms=10000)
    values = [m.value for m in kc]
    kc.close()
    assert b"from kafka-python" in values and b"m0" in values


def test_sasl_ssl_scram_sha512_and_plain(secure_broker, certs):
    """SCRAM-SHA-512 (confluent-kafka) and PLAIN (kafka-python) over SASL_SSL, with the users
    `freshet user create` made before the start; SCRAM-SHA-256 over SASL_PLAINTEXT."""
    scram = {"bootstrap.servers": secure_broker.at("SASL_SSL"), "security.protocol": "SASL_SSL",
             "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice",
             "sasl.password": "alice-secret", **ssl_conf(certs)}
    produce_consume(scram, "scram-topic")
    wait_until(lambda: "User:alice" in secure_broker.log_tail(400), 10,
               "the broker to log alice's SASL authentication")

    from kafka import KafkaConsumer
    kc = KafkaConsumer("scram-topic", bootstrap_servers=secure_broker.at("SASL_SSL"),
                       security_protocol="SASL_SSL", ssl_cafile=str(certs / "ca.pem"),
                       sasl_mechanism="PLAIN", sasl_plain_username="alice",
                       sasl_plain_password="alice-secret", auto_offset_reset="earliest",
                       consumer_timeout_ms=10000)
    assert len([m for m in kc]) == 20
    kc.close()

    sha256 = {"bootstrap.servers": secure_broker.at("SASL_PLAINTEXT"),
              "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
              "sasl.username": "alice", "sasl.password": "alice-secret"}
    produce_consume(sha256, "scram256-topic")


def test_mtls_principal_is_the_certificate_subject(secure_broker, certs):
    """A client certificate from the CA authenticates as User:<subject, RFC 2253>."""
    conf = {"bootstrap.servers": secure_broker.at("SSL"), "security.protocol": "SSL",
            "ssl.certificate.location": str(certs / "alice.pem"),
            "ssl.key.location": str(certs / "alice.key"), **ssl_conf(certs)}
    produce_consume(conf, "mtls-topic", n=3)
    wait_until(lambda: "User:CN=alice,OU=eng,O=example" in secure_broker.log_tail(400), 10,
               "the principal of alice's certificate in the broker log")


def test_wrong_password_is_refused_and_others_keep_working(secure_broker, certs):
    """A wrong SCRAM password and a wrong PLAIN password get SASL_AUTHENTICATION_FAILED (the
    client reports an authentication error); a good client on the same listener is unaffected."""
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        errors = auth_errors({
            "bootstrap.servers": secure_broker.at("SASL_SSL"), "security.protocol": "SASL_SSL",
            "sasl.mechanism": mechanism, "sasl.username": "alice", "sasl.password": "wrong",
            **ssl_conf(certs)})
        auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
        assert auth, f"{mechanism}: no authentication error, only {[str(e) for e in errors]}"
        assert "Authentication failed" in auth[0].str(), auth[0].str()
    wait_until(lambda: "SASL authentication failed" in secure_broker.log_tail(400), 10,
               "the failed authentication in the broker log")
    assert metric_total(secure_broker, "freshet_authentication_failures_total") >= 2
    produce_consume({"bootstrap.servers": secure_broker.at("SASL_SSL"),
                     "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                     "sasl.username": "alice", "sasl.password": "alice-secret",
                     **ssl_conf(certs)}, "after-wrong-password", n=3)


def test_unknown_mechanism_gets_the_enabled_ones(secure_broker):
    """SaslHandshake with a mechanism not enabled: UNSUPPORTED_SASL_MECHANISM (33) listing the
    enabled ones, then the connection closes."""
    with socket.create_connection(("127.0.0.1", secure_broker.ports["SASL_PLAINTEXT"]), 5) as s:
        mechanism = b"GSSAPI"
        body = struct.pack(">h", len(mechanism)) + mechanism
        header = struct.pack(">hhih", 17, 1, 7, 1) + b"t"
        s.sendall(struct.pack(">i", len(header + body)) + header + body)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        answer = recv_exact(s, size)
        correlation, error, count = struct.unpack(">ihi", answer[:10])
        assert (correlation, error) == (7, 33)
        assert b"SCRAM-SHA-512" in answer and b"PLAIN" in answer
        s.settimeout(5)
        assert s.recv(1) == b""


def tls_api_versions_ok(port, certs, client):
    """ApiVersions over TLS presenting `client`'s certificate: True if answered."""
    import ssl
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / f"{client}.pem"), str(certs / f"{client}.key"))
    try:
        with socket.create_connection(("127.0.0.1", port), 5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                header = struct.pack(">hhih", 18, 0, 1, 1) + b"t"
                s.sendall(struct.pack(">i", len(header)) + header)
                size = struct.unpack(">i", recv_exact(s, 4))[0]
                return struct.unpack(">ih", recv_exact(s, size)[:6]) == (1, 0)
    except (ssl.SSLError, ConnectionError, OSError):
        return False


def test_hostile_clients_are_refused_and_the_broker_keeps_serving(secure_broker, certs):
    """A plaintext Kafka client on the TLS port, a client certificate from an unknown CA,
    garbage instead of a ClientHello, and a Metadata request before SASL authentication: each
    connection is closed (logged), and a good client is served right after."""
    plain = Producer({"bootstrap.servers": secure_broker.at("SSL"),
                      "security.protocol": "PLAINTEXT"})
    plain.produce("plain-on-tls", b"x")
    assert plain.flush(4) == 1, "a plaintext client was served on the TLS port"
    plain.purge()
    wait_until(lambda: "InvalidContentType" in secure_broker.log_tail(2000), 10,
               "the broker to log the plaintext request on its TLS port")
    # A certificate from an unknown CA (Python's ssl presents it, whatever the CA names the
    # server asks for): the handshake fails with the alert "unknown ca".
    assert not tls_api_versions_ok(secure_broker.ports["SSL"], certs, "mallory")
    wait_until(lambda: "UnknownIssuer" in secure_broker.log_tail(2000), 10,
               "the broker to log the untrusted client certificate")
    assert tls_api_versions_ok(secure_broker.ports["SSL"], certs, "alice")
    for port in (secure_broker.ports["SSL"], secure_broker.ports["SASL_SSL"]):
        with socket.create_connection(("127.0.0.1", port), 5) as s:
            s.sendall(os.urandom(64) + b"\x16\x03\x01\xff\xff" + os.urandom(300))
            s.settimeout(10)
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    with socket.create_connection(("127.0.0.1", secure_broker.ports["SASL_PLAINTEXT"]), 5) as s:
        header = struct.pack(">hhih", 3, 1, 1, 1) + b"t"
        s.sendall(struct.pack(">i", len(header) + 4) + header + struct.pack(">i", -1))
        s.settimeout(10)
        assert s.recv(1) == b"", "Metadata before SASL authentication was answered"
    # The broker's logging thread writes the lines a little later.
    for line in ("TLS handshake failed", "unexpected request during SASL authentication"):
        wait_until(lambda: line in secure_broker.log_tail(400), 10, f"the broker to log {line!r}")
    produce_consume({"bootstrap.servers": secure_broker.at("SSL"), "security.protocol": "SSL",
                     **ssl_conf(certs)}, "after-hostile", n=3)
    admin = AdminClient({"bootstrap.servers": secure_broker.addr})
    admin.create_topics([NewTopic("plain-still-works", 1)])["plain-still-works"].result(10)


def test_user_create_refuses_a_running_brokers_data_dir(secure_broker):
    out = create_user(secure_broker.data_dir, "bob", "pw", "SCRAM-SHA-512")
    assert out.returncode != 0
    assert "running broker" in out.stderr


def test_alter_and_describe_user_scram_credentials(secure_broker, certs):
    """AlterUserScramCredentials (51) adds bob, who can then log in with SCRAM-SHA-256 and
    PLAIN; DescribeUserScramCredentials (50) lists mechanisms and iterations; after deletion
    bob is refused; an unknown user is RESOURCE_NOT_FOUND."""
    from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialDeletion,
                                       UserScramCredentialUpsertion)
    from confluent_kafka import KafkaException
    sasl = {"bootstrap.servers": secure_broker.at("SASL_SSL"), "security.protocol": "SASL_SSL",
            **ssl_conf(certs)}
    admin = AdminClient({**sasl, "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice",
                         "sasl.password": "alice-secret"})
    upsert = UserScramCredentialUpsertion(
        "bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"bob-secret")
    for f in admin.alter_user_scram_credentials([upsert]).values():
        f.result(10)
    described = {user: f.result(10) for user, f in
                 admin.describe_user_scram_credentials(["bob", "alice"]).items()}
    bob = described["bob"].scram_credential_infos
    assert [(i.mechanism, i.iterations) for i in bob] == [(ScramMechanism.SCRAM_SHA_256, 8192)]
    assert len(described["alice"].scram_credential_infos) == 2
    with pytest.raises(KafkaException) as missing:
        admin.describe_user_scram_credentials(["nobody"])["nobody"].result(10)
    assert missing.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND
    for mechanism in ("SCRAM-SHA-256", "PLAIN"):
        produce_consume({**sasl, "sasl.mechanism": mechanism, "sasl.username": "bob",
                         "sasl.password": "bob-secret"}, f"bob-{mechanism}", n=2)
    delete = UserScramCredentialDeletion("bob", ScramMechanism.SCRAM_SHA_256)
    for f in admin.alter_user_scram_credentials([delete]).values():
        f.result(10)
    errors = auth_errors({**sasl, "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "bob",
                          "sasl.password": "bob-secret"})
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_kcat_over_sasl_ssl_with_scram(secure_broker, certs):
    """kcat (librdkafka's CLI) produces and consumes over SASL_SSL with SCRAM-SHA-512."""
    common = ["-b", secure_broker.at("SASL_SSL"), "-X", "security.protocol=SASL_SSL",
              "-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=alice",
              "-X", "sasl.password=alice-secret", "-X", f"ssl.ca.location={certs / 'ca.pem'}"]
    subprocess.run(["kcat", "-P", "-t", "kcat-secure", *common], input=b"one\ntwo\n",
                   check=True, timeout=60)
    out = subprocess.run(["kcat", "-C", "-t", "kcat-secure", "-o", "beginning", "-e", "-q",
                          *common], capture_output=True, check=True, timeout=60)
    assert out.stdout.split() == [b"one", b"two"]
    wrong = subprocess.run(["kcat", "-L", *common[:-3], "sasl.password=wrong",
                            "-X", f"ssl.ca.location={certs / 'ca.pem'}"],
                           capture_output=True, timeout=60)
    assert wrong.returncode != 0
    assert b"Authentication failed" in wrong.stderr, wrong.stderr


def test_sasl_principals_meet_the_acls(tmp_path, certs):
    """With the authorizer on, the principal SASL authenticated is the one the ACLs see: alice,
    allowed to write one topic, produces to it; bob, with no ACL, gets TOPIC_AUTHORIZATION_FAILED
    on the same topic over the same listener."""
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType,
                                       ResourcePatternType, ResourceType)
    b = SecureBroker(tmp_path / "broker", certs,
                     extra=["--authorizer", "on", "--super-users", "User:ANONYMOUS"])
    b.workdir.mkdir()
    for name in ("alice", "bob"):
        out = create_user(b.data_dir, name, f"{name}-secret", "SCRAM-SHA-512")
        assert out.returncode == 0, out.stderr
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.addr})
        admin.create_topics([NewTopic("acl-topic", 1)])["acl-topic"].result(10)
        acls = [AclBinding(ResourceType.TOPIC, "acl-topic", ResourcePatternType.LITERAL,
                           "User:alice", "*", op, AclPermissionType.ALLOW)
                for op in (AclOperation.WRITE, AclOperation.DESCRIBE)]
        for f in admin.create_acls(acls).values():
            f.result(10)

        def produce_as(user):
            results = []
            p = Producer({"bootstrap.servers": b.at("SASL_SSL"), "security.protocol": "SASL_SSL",
                          "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
                          "sasl.password": f"{user}-secret", **ssl_conf(certs),
                          "message.timeout.ms": 10000})
            p.produce("acl-topic", b"x", on_delivery=lambda err, msg: results.append(err))
            p.flush(20)
            return results

        assert produce_as("alice") == [None]
        denied = produce_as("bob")
        assert len(denied) == 1 and denied[0] is not None
        assert denied[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied[0]
    finally:
        b.kill()
        print(b.log_tail())


def test_librdkafka_reauthenticates_within_the_session_lifetime(tmp_path, certs, monkeypatch):
    """KIP-368: with connections_max_reauth_ms = 3000 the broker answers a 3 s session lifetime
    and closes a connection that sends a request after it without re-authenticating; librdkafka
    re-authenticates before then (SASL_PLAINTEXT, PLAIN), so a producer sending for 10 s gets
    every message delivered and no error, and the broker logged re-authentications."""
    monkeypatch.setenv("RUST_LOG", "info,freshet::server=debug")
    b = SecureBroker(tmp_path / "broker", certs, extra=["--connections-max-reauth-ms", "3000"])
    b.workdir.mkdir()
    out = create_user(b.data_dir, "alice", "alice-secret", "SCRAM-SHA-512")
    assert out.returncode == 0, out.stderr
    b.start()
    try:
        errors, delivered, failed = [], [], []
        p = Producer({"bootstrap.servers": b.at("SASL_PLAINTEXT"),
                      "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                      "sasl.username": "alice", "sasl.password": "alice-secret",
                      "linger.ms": 5, "error_cb": errors.append})

        def on_delivery(err, msg):
            (failed if err else delivered).append(err or msg.offset())

        sent = 0
        deadline = time.time() + 10
        while time.time() < deadline:
            p.produce("reauth-topic", f"m{sent}".encode(), on_delivery=on_delivery)
            sent += 1
            p.poll(0.05)
        assert p.flush(30) == 0
        assert failed == [] and errors == [], (failed, errors)
        assert len(delivered) == sent and sent > 50
        log = b.log_path.read_text(errors="replace")
        assert log.count("SASL re-authentication begins") >= 2, log
        assert "SASL session expired" not in log, log
        print("\n".join(line for line in log.splitlines() if "closing connection" in line
                        or "re-authentication" in line or "SASL authentication done" in line))
    finally:
        b.kill()
        print(b.log_tail())
