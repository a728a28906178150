//! Issue 18: shard stalls are seen, and one known cause of them is gone.
//!
//! - A broker whose threads are all held still (SIGSTOP for 300 ms: what a blocking call on a
//!   shard does to it) counts a reactor stall in `/metrics` (`freshet_reactor_stalls_total`,
//!   `freshet_reactor_stall_seconds`) and logs it.
//! - A broker whose stderr nobody reads (a pipe to a log collector that has stopped, or a log
//!   file on a saturated disk: `write(2)` blocks either way) keeps answering: log lines go
//!   through the log thread's bounded queue (`logging`), so a shard never blocks on a log
//!   line (what the queue cannot hold is dropped and counted), and the lines it held come
//!   through once stderr is read again.

use crate::common;
use common::{RawConn, TestBroker};
use kafka_protocol::messages::ApiVersionsRequest;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the broker is held still.
const STOPPED_FOR: Duration = Duration::from_millis(300);

#[test]
fn a_held_shard_is_counted_and_logged_as_a_reactor_stall() {
    common::within(Duration::from_secs(60), || {
        let broker = TestBroker::start(2);
        let pid = broker.pid() as libc::pid_t;
        // SAFETY: kill(2) on the broker child, which is running (not reaped).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        std::thread::sleep(STOPPED_FOR);
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        common::wait_until(
            Duration::from_secs(10),
            "a reactor stall in /metrics",
            || {
                broker.admin_get("/metrics").is_ok_and(|(_, text)| {
                    common::metric_sum(&text, "freshet_reactor_stalls_total") >= 1.0
                })
            },
        );
        let (_, text) = broker.admin_get("/metrics").expect("metrics");
        let longest = common::metric_sum(&text, "freshet_reactor_stall_seconds_sum");
        assert!(
            longest >= 0.2,
            "stall seconds {longest} after being held for {STOPPED_FOR:?}\n{text}"
        );
        common::wait_until(Duration::from_secs(5), "the stall in the log", || {
            broker.log().contains("reactor stall")
        });
    });
}

/// A broker child killed (by its pid) when dropped.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn api_versions(addr: std::net::SocketAddr, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut conn = RawConn::connect_timeout(addr, timeout).map_err(|e| e.to_string())?;
    conn.set_read_timeout(timeout);
    conn.request(3, &ApiVersionsRequest::default())
        .map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

#[test]
fn a_stderr_nobody_reads_does_not_stall_the_shards() {
    common::within(Duration::from_secs(80), || {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = common::free_port();
        let admin_port = common::free_port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // stderr is a pipe this test never reads: once its 64 KiB are full, a write blocks.
        let child = Command::new(common::broker_bin())
            .args(["start", "--listen", &addr.to_string(), "--shards", "2"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn broker");
        let broker = Broker(child);
        common::wait_until(common::BROKER_READY_TIMEOUT, "the broker to answer", || {
            api_versions(addr, Duration::from_secs(1)).is_ok()
        });
        // Each TLS ClientHello on the plaintext port is one warning line (~200 bytes): 3,000
        // of them are ten times what the pipe holds, spread over both shards.
        // A shard stuck on its log stops accepting: connects then time out; stop there.
        let mut refused = 0;
        for _ in 0..3000 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(mut s) => {
                    let _ = s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0]);
                }
                Err(_) => refused += 1,
            }
            if refused >= 3 {
                break;
            }
        }
        let mut worst = Duration::ZERO;
        for i in 0..50 {
            match api_versions(addr, Duration::from_secs(2)) {
                Ok(took) => worst = worst.max(took),
                Err(e) => panic!(
                    "ApiVersions {i} on a new connection failed while stderr is not read: {e}"
                ),
            }
        }
        eprintln!("50 ApiVersions with an unread stderr: worst {worst:?}");
        assert!(worst < Duration::from_millis(500), "worst {worst:?}");
        // Once stderr is read again, the lines held in the log queue meanwhile come through
        // (3,000 lines of ~250 bytes fit in it: none was dropped).
        let mut broker = broker;
        let stderr = broker.0.stderr.take().expect("stderr pipe");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut warnings = 0;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("TLS handshake on a plaintext listener") {
                    warnings += 1;
                    if warnings == 1000 {
                        let _ = tx.send(warnings);
                    }
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the queued log lines did not come through once stderr was read again");
        drop(broker);
    });
}
