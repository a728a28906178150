"""SASL/OAUTHBEARER (issue 15) with confluent-kafka (librdkafka), as Kafka clients configure it.

Unsecured tokens: librdkafka's `enable.sasl.oauthbearer.unsecure.jwt` with
`sasl.oauthbearer.config=principal=alice` produces and consumes, and the authorizer sees
User:alice (allowed on one topic and group prefix) and User:bob (refused). Signed tokens: an
`oauth_cb` hands out RS256 JWTs signed here with the openssl CLI by a key of the broker's JWKS
file (`sasl_oauthbearer_jwks_endpoint_url = "file://..."`): accepted, and re-authenticated
within the token's lifetime (KIP-368); signed by another key, expired, or for another audience:
an authentication error, while the broker keeps serving.
"""

import base64
import json
import subprocess
import time
import uuid

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                   NewTopic, ResourcePatternType, ResourceType)

from conftest import Broker
from kafka_wire import free_port
from test_tls_sasl import auth_errors, produce_consume


class OAuthBroker(Broker):
    """A broker with PLAINTEXT (the harness's ready check) and SASL_PLAINTEXT offering
    OAUTHBEARER, configured by the TOML `settings`."""

    def __init__(self, workdir, settings, extra=()):
        super().__init__(workdir, 1)
        self.sasl_port = free_port()
        workdir.mkdir()
        config = workdir / "freshet.toml"
        config.write_text('sasl_enabled_mechanisms = ["OAUTHBEARER"]\n'
                          "connection_failed_authentication_delay_ms = 0\n" + settings)
        self.extra_args = [
            "--listeners", f"PLAINTEXT://{self.addr},SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}",
            "--config", str(config), *extra,
        ]

    @property
    def sasl_addr(self):
        return f"127.0.0.1:{self.sasl_port}"


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rsa_key(d, name):
    """A 2048-bit RSA key `name`.key and its JWK (n, e)."""
    key = d / f"{name}.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    out = subprocess.run(["openssl", "rsa", "-in", str(key), "-noout", "-modulus"], check=True,
                         capture_output=True, text=True).stdout
    modulus = bytes.fromhex(out.strip().split("=", 1)[1])
    return key, {"n": b64u(modulus), "e": b64u((65537).to_bytes(3, "big"))}


def rs256(key, header, claims):
    """A compact JWS signed with RS256 by `key` (openssl dgst -sha256 -sign)."""
    signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(claims).encode())}"
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)],
                         input=signing_input.encode(), check=True, capture_output=True).stdout
    return f"{signing_input}.{b64u(sig)}"


def oauth_conf(broker, **extra):
    return {"bootstrap.servers": broker.sasl_addr, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER", **extra}


def test_unsecured_jwt_produces_consumes_and_meets_the_acls(tmp_path):
    b = OAuthBroker(tmp_path / "broker", "sasl_oauthbearer_unsecured_validator_enabled = true\n",
                    extra=["--authorizer", "on", "--super-users", "User:ANONYMOUS"])
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.addr})
        admin.create_topics([NewTopic("oauth-topic", 1)])["oauth-topic"].result(10)
        acls = [AclBinding(ResourceType.TOPIC, "oauth-topic", ResourcePatternType.LITERAL,
                           "User:alice", "*", op, AclPermissionType.ALLOW)
                for op in (AclOperation.WRITE, AclOperation.READ, AclOperation.DESCRIBE)]
        acls.append(AclBinding(ResourceType.GROUP, "g-", ResourcePatternType.PREFIXED,
                               "User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW))
        for f in admin.create_acls(acls).values():
            f.result(10)

        def unsecured(principal):
            return oauth_conf(b, **{"enable.sasl.oauthbearer.unsecure.jwt": True,
                                    "sasl.oauthbearer.config": f"principal={principal}"})

        produce_consume(unsecured("alice"), "oauth-topic")
        results = []
        p = Producer({**unsecured("bob"), "message.timeout.ms": 10000})
        p.produce("oauth-topic", b"x", on_delivery=lambda err, msg: results.append(err))
        p.flush(20)
        assert len(results) == 1 and results[0] is not None, results
        assert results[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, results[0]
        log = b.log_path.read_text(errors="replace")
        assert "panicked" not in log
    finally:
        b.kill()
        print(b.log_tail())


def test_signed_jwts_are_checked_against_the_jwks_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RUST_LOG", "info,freshet::server=debug")
    d = tmp_path
    key, jwk = rsa_key(d, "idp")
    rogue, _ = rsa_key(d, "rogue")
    jwks = d / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig",
                                          "alg": "RS256", **jwk}]}))
    b = OAuthBroker(d / "broker",
                    f'sasl_oauthbearer_jwks_endpoint_url = "file://{jwks}"\n'
                    'sasl_oauthbearer_expected_audience = ["kafka"]\n'
                    'sasl_oauthbearer_expected_issuer = "https://idp.test"\n')
    b.start()
    header = {"alg": "RS256", "typ": "JWT", "kid": "k1"}

    def token_cb(signer=key, lifetime_s=3600, exp_offset_s=None, aud="kafka"):
        def cb(_config):
            now = time.time()
            exp = int(now + (lifetime_s if exp_offset_s is None else exp_offset_s))
            claims = {"sub": "alice", "iss": "https://idp.test", "aud": aud,
                      "iat": int(now), "exp": exp, "jti": str(uuid.uuid4())}
            # librdkafka is told the token lives lifetime_s, whatever the claims say.
            return rs256(signer, header, claims), now + lifetime_s
        return cb

    try:
        produce_consume(oauth_conf(b, oauth_cb=token_cb()), f"signed-{uuid.uuid4()}")

        for name, cb in [("another key", token_cb(signer=rogue)),
                         ("expired", token_cb(exp_offset_s=-300)),
                         ("another audience", token_cb(aud="not-kafka"))]:
            errors = auth_errors(oauth_conf(b, oauth_cb=cb))
            assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), (name, errors)

        # Tokens living 6 s: the broker answers that session lifetime, librdkafka gets a new
        # token and re-authenticates before it ends; every message of 12 s is delivered.
        errors, delivered, failed = [], [], []
        p = Producer({**oauth_conf(b, oauth_cb=token_cb(lifetime_s=6)), "linger.ms": 5,
                      "error_cb": errors.append})

        def on_delivery(err, msg):
            (failed if err else delivered).append(err or msg.offset())

        sent = 0
        deadline = time.time() + 12
        while time.time() < deadline:
            p.produce("oauth-reauth", f"m{sent}".encode(), on_delivery=on_delivery)
            sent += 1
            p.poll(0.05)
        assert p.flush(30) == 0
        # A re-authentication made with a token close to its expiry gets a session of a
        # fraction of a second, and librdkafka's next one comes within a second: refused as
        # Kafka refuses it (KafkaChannel's one-second minimum between re-authentications:
        # ILLEGAL_SASL_STATE), then the client reconnects. Seen once in CI; tolerated, every
        # message must still be delivered.
        too_soon = "Request not valid in current SASL state"
        errors = [e for e in errors if too_soon not in e.str() and
                  e.code() != KafkaError._ALL_BROKERS_DOWN]
        assert failed == [] and errors == [], (failed, errors)
        assert len(delivered) == sent and sent > 50
        log = b.log_path.read_text(errors="replace")
        assert log.count("SASL re-authentication begins") >= 1, log
        for reason in ("does not verify", "expired", "audience"):
            assert reason in log, reason
        assert "panicked" not in log
    finally:
        b.kill()
        print(b.log_tail())
