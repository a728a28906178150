"""Clients configured for SASL or TLS against Freshet's plaintext listener (issue 12 item 14).

Freshet has no SASL or TLS yet. A SASL client must get an authentication error that names its
mechanism (the broker answers SaslHandshake with ILLEGAL_SASL_STATE, as Kafka does on a
PLAINTEXT listener), not a bare transport failure; a TLS client's ClientHello is logged as such.
"""

import time

from confluent_kafka import KafkaError, Producer

from conftest import wait_until


def collect_errors(conf, seconds):
    """Runs a producer with `conf` for up to `seconds`; returns the errors its error_cb saw."""
    errors = []
    p = Producer({**conf, "error_cb": errors.append, "socket.timeout.ms": 10000})
    p.produce("sasl-topic", b"never delivered")
    deadline = time.time() + seconds
    while time.time() < deadline and not any(
            e.code() == KafkaError._AUTHENTICATION for e in errors):
        p.poll(0.2)
    p.purge()
    p.flush(5)
    return errors


def test_sasl_plain_client_gets_an_authentication_error_naming_the_mechanism(make_broker):
    broker = make_broker(shards=1)
    errors = collect_errors({
        "bootstrap.servers": broker.addr,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "alice",
        "sasl.password": "secret",
    }, 20)
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert auth, f"no authentication error, only: {[str(e) for e in errors]}"
    assert "PLAIN" in auth[0].str(), auth[0].str()
    # librdkafka's text for ILLEGAL_SASL_STATE (34), from the broker's SaslHandshake answer.
    assert "handshake failed" in auth[0].str(), auth[0].str()
    assert "Request not valid in current SASL state" in auth[0].str(), auth[0].str()
    wait_until(lambda: "SASL handshake on a plaintext listener" in broker.log_tail(400), 10,
               "the broker to log the SASL handshake")


def test_tls_client_hello_is_logged_as_a_tls_handshake(make_broker):
    broker = make_broker(shards=1)
    collect_errors({"bootstrap.servers": broker.addr, "security.protocol": "SSL"}, 3)
    wait_until(lambda: "TLS handshake on a plaintext listener" in broker.log_tail(400), 10,
               "the broker to log the TLS ClientHello")
    assert "socket.request.max.bytes" not in broker.log_tail(400)
