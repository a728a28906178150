//! The broker's log output (issue 7): structured logs on stderr, as text or JSON, and a broker
//! that keeps serving and stops cleanly when its stderr goes away (a log collector that died:
//! writes to a closed pipe fail with EPIPE and must not panic the broker).

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{broker_bin, free_port, RawConn};
use kafka_protocol::messages::ApiVersionsRequest;

#[test]
fn json_log_lines_are_json_and_a_closed_stderr_pipe_does_not_stop_the_broker() {
    common::within(Duration::from_secs(60), || {
        let tmp = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new(broker_bin())
            .args([
                "start",
                "--shards",
                "1",
                "--log-format",
                "json",
                "--log",
                "debug",
            ])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn freshet");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines.next().expect("a log line").expect("utf-8");
        let parsed: serde_json::Value = serde_json::from_str(&first).expect("JSON log line");
        assert_eq!(parsed["level"], "INFO", "{first}");
        assert!(parsed["fields"]["message"].is_string(), "{first}");
        // The log reader goes away: every later log line meets a closed pipe.
        drop(lines);

        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut answered = false;
        for _ in 0..100 {
            // Each connection logs at debug level, so each one writes to the dead pipe.
            if let Ok(mut conn) = RawConn::connect(addr) {
                if conn.request(0, &ApiVersionsRequest::default()).is_ok() {
                    answered = true;
                }
            }
            // Pacing, not synchronization: spread the connections over ~2 s of logging.
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(answered, "the broker stopped answering");
        assert!(child.try_wait().unwrap().is_none(), "the broker died");
        common::signal(&child, libc::SIGTERM);
        let status = common::wait_timeout(&mut child, Duration::from_secs(30))
            .expect("broker exits after SIGTERM");
        assert!(status.success(), "{status}");
    });
}
