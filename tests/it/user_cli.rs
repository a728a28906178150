//! `freshet user create|list|delete` on a stopped node's data directory (issue 15), through
//! the real binary: users created before a start log in; `list` shows them pending, then
//! stored (mechanism and iterations, never salts or keys); `list` and `delete` refuse a
//! running broker's directory; after `delete` (one mechanism, or a whole user) the next start
//! refuses the deleted user's login and `list` no longer shows it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Output};
use std::time::Duration;

use kafka_protocol::messages::{ApiVersionsRequest, SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;

use crate::common::{self, free_port, within, RawConn};

fn user(args: &[&str], data_dir: &Path) -> Output {
    std::process::Command::new(common::broker_bin())
        .arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap()
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A broker with PLAINTEXT (readiness) and SASL_PLAINTEXT (PLAIN, SCRAM); the caller kills it.
fn start(dir: &Path, round: u32) -> (Child, SocketAddr) {
    let (plain, sasl) = (free_port(), free_port());
    let config = format!(
        "listeners = [\"PLAINTEXT://127.0.0.1:{plain}\", \"SASL_PLAINTEXT://127.0.0.1:{sasl}\"]\n\
         data_dir = \"{}\"\nshards = 1\nadmin_listen = \"off\"\n\
         connection_failed_authentication_delay_ms = 0\n",
        dir.join("data").display()
    );
    let path = dir.join(format!("freshet{round}.toml"));
    std::fs::write(&path, config).unwrap();
    let args = vec![
        "start".to_string(),
        "--config".into(),
        path.display().to_string(),
    ];
    let child = common::spawn_broker_process(
        &common::broker_bin(),
        &args,
        &dir.join(format!("broker{round}.log")),
    );
    let plain = SocketAddr::from(([127, 0, 0, 1], plain));
    common::wait_until(Duration::from_secs(30), "the broker to answer", || {
        RawConn::connect(plain)
            .and_then(|mut c| c.request(0, &ApiVersionsRequest::default()))
            .is_ok_and(|r| r.error_code == 0)
    });
    (child, SocketAddr::from(([127, 0, 0, 1], sasl)))
}

/// SASL/PLAIN as `name`: the SaslAuthenticate error code.
fn plain_login(sasl: SocketAddr, name: &str, password: &str) -> i16 {
    let mut conn = RawConn::connect(sasl).unwrap();
    let hs = conn
        .request(
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        )
        .unwrap();
    assert_eq!(hs.error_code, 0);
    let token = format!("\0{name}\0{password}");
    conn.request(
        2,
        &SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from(token)),
    )
    .unwrap()
    .error_code
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn user_list_and_delete_on_a_stopped_node() {
    within(Duration::from_secs(180), || {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        for (name, mechanism, iterations) in [
            ("alice", "SCRAM-SHA-512", "4096"),
            ("alice", "SCRAM-SHA-256", "8192"),
            ("bob", "SCRAM-SHA-512", "4096"),
        ] {
            stdout_of(&user(
                &[
                    "create",
                    "--name",
                    name,
                    "--password",
                    &format!("{name}-secret"),
                    "--mechanism",
                    mechanism,
                    "--iterations",
                    iterations,
                ],
                &data,
            ));
        }
        let listed = stdout_of(&user(&["list"], &data));
        assert_eq!(
            listed.matches("pending (stored at the next start)").count(),
            3
        );
        assert!(listed.contains("SCRAM-SHA-256") && listed.contains("8192"));

        let (broker, sasl) = start(dir.path(), 1);
        assert_eq!(plain_login(sasl, "alice", "alice-secret"), 0);
        assert_eq!(plain_login(sasl, "bob", "bob-secret"), 0);
        for args in [&["list"][..], &["delete", "--name", "bob"]] {
            let out = user(args, &data);
            assert!(!out.status.success(), "{args:?}");
            assert!(String::from_utf8_lossy(&out.stderr).contains("running broker"));
        }
        stop(broker);

        let listed = stdout_of(&user(&["list"], &data));
        let rows: Vec<&str> = listed.lines().skip(1).collect();
        assert_eq!(rows.len(), 3, "{listed}");
        assert!(rows.iter().all(|r| r.ends_with("stored")), "{listed}");
        // Mechanisms and iterations, nothing of the salted keys.
        let bootstrap_gone = !data.join("scram-bootstrap.json").exists();
        assert!(bootstrap_gone);
        assert!(!listed.to_lowercase().contains("salt") && !listed.contains("key"));
        assert!(listed.len() < 400, "{listed}");

        stdout_of(&user(&["delete", "--name", "bob"], &data));
        stdout_of(&user(
            &["delete", "--name", "alice", "--mechanism", "SCRAM-SHA-256"],
            &data,
        ));
        let out = user(&["delete", "--name", "carol"], &data);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no user carol"));
        let listed = stdout_of(&user(&["list"], &data));
        assert_eq!(
            listed.matches("deleted at the next start").count(),
            2,
            "{listed}"
        );

        let (broker, sasl) = start(dir.path(), 2);
        assert_eq!(plain_login(sasl, "bob", "bob-secret"), 58, "bob is deleted");
        assert_eq!(plain_login(sasl, "alice", "alice-secret"), 0);
        stop(broker);

        let listed = stdout_of(&user(&["list"], &data));
        let rows: Vec<&str> = listed.lines().skip(1).collect();
        assert_eq!(rows.len(), 1, "{listed}");
        assert!(
            rows[0].starts_with("alice") && rows[0].contains("SCRAM-SHA-512"),
            "{listed}"
        );
    });
}
