//! `freshet quota set|remove|list` against a real broker: values set for a user, a client id
//! and the `<default>` user are listed (table and JSON), a key is removed, and Kafka's refusal
//! of a bad value is exit code 1 with INVALID_REQUEST on stderr.

use crate::common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{broker_bin, within, TestBroker};
use serde_json::Value;

const TEST_LIMIT: Duration = Duration::from_secs(120);

fn freshet(broker: &TestBroker, args: &[&str]) -> Output {
    Command::new(broker_bin())
        .args(args)
        .env("FRESHET_BROKERS", broker.addr())
        .output()
        .expect("run freshet")
}

fn ok(broker: &TestBroker, args: &[&str]) -> String {
    let out = freshet(broker, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn quota_cli_sets_lists_and_removes_client_quotas() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(1);
        ok(
            &broker,
            &[
                "quota",
                "set",
                "--user",
                "alice",
                "producer_byte_rate=1048576",
            ],
        );
        ok(
            &broker,
            &[
                "quota",
                "set",
                "--client-id",
                "app",
                "consumer_byte_rate=2048",
                "request_percentage=12.5",
            ],
        );
        ok(
            &broker,
            &["quota", "set", "--user-default", "producer_byte_rate=4096"],
        );
        let table = ok(&broker, &["quota", "list"]);
        assert!(
            table.contains("alice") && table.contains("1048576"),
            "{table}"
        );
        assert!(
            table.contains("<default>") && table.contains("12.5"),
            "{table}"
        );
        let json: Value = serde_json::from_str(&ok(
            &broker,
            &["quota", "list", "--client-id", "app", "--format", "json"],
        ))
        .unwrap();
        let rows = json.as_array().unwrap();
        assert_eq!(rows.len(), 2, "{json}");
        assert!(rows
            .iter()
            .all(|r| r["client_id"] == "app" && r["user"].is_null()));

        ok(
            &broker,
            &[
                "quota",
                "remove",
                "--client-id",
                "app",
                "request_percentage",
            ],
        );
        let json: Value = serde_json::from_str(&ok(
            &broker,
            &["quota", "list", "--client-id", "app", "--format", "json"],
        ))
        .unwrap();
        assert_eq!(json.as_array().unwrap().len(), 1, "{json}");

        let refused = freshet(
            &broker,
            &["quota", "set", "--user", "bob", "producer_byte_rate=1.5"],
        );
        assert_eq!(refused.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&refused.stderr).contains("INVALID_REQUEST"));
        let usage = freshet(&broker, &["quota", "set", "producer_byte_rate=1"]);
        assert_eq!(usage.status.code(), Some(2));
    });
}

// KIP-612 IP entities through the CLI (as `kafka-configs --entity-type ips`): a named IP (in
// canonical form) and the default IP take `connection_creation_rate` only, are listed with an
// `ip` filter and removed; an IP combined with a user is a usage error.
#[test]
fn quota_cli_sets_lists_and_removes_ip_connection_rates() {
    within(TEST_LIMIT, || {
        let broker = TestBroker::start(1);
        ok(
            &broker,
            &[
                "quota",
                "set",
                "--ip",
                "0:0::1",
                "connection_creation_rate=50",
            ],
        );
        ok(
            &broker,
            &[
                "quota",
                "set",
                "--ip-default",
                "connection_creation_rate=500",
            ],
        );
        let json: Value = serde_json::from_str(&ok(
            &broker,
            &["quota", "list", "--ip", "::1", "--format", "json"],
        ))
        .unwrap();
        let rows = json.as_array().unwrap();
        assert_eq!(rows.len(), 1, "{json}");
        assert_eq!(rows[0]["ip"], "::1");
        assert_eq!(rows[0]["key"], "connection_creation_rate");
        assert_eq!(rows[0]["value"], 50.0);
        let table = ok(&broker, &["quota", "list"]);
        assert!(
            table.contains("IP") && table.contains("<default>") && table.contains("500"),
            "{table}"
        );
        let refused = freshet(
            &broker,
            &[
                "quota",
                "set",
                "--ip",
                "127.0.0.1",
                "producer_byte_rate=100",
            ],
        );
        assert_eq!(refused.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&refused.stderr).contains("INVALID_REQUEST"));
        let usage = freshet(
            &broker,
            &[
                "quota",
                "set",
                "--ip",
                "127.0.0.1",
                "--user",
                "alice",
                "connection_creation_rate=1",
            ],
        );
        assert_eq!(usage.status.code(), Some(2));
        ok(
            &broker,
            &["quota", "remove", "--ip", "::1", "connection_creation_rate"],
        );
        let json: Value = serde_json::from_str(&ok(
            &broker,
            &["quota", "list", "--ip", "::1", "--format", "json"],
        ))
        .unwrap();
        assert!(json.as_array().unwrap().is_empty(), "{json}");
    });
}
