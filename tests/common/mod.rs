//! Test harness: runs the real `freshet` binary as a child process and talks to it over TCP.
//!
//! `TestBroker` owns one broker process on a free 127.0.0.1 port with its own temporary data
//! directory. Its stderr goes to a log file that is printed when a test fails. The broker is
//! killed when the `TestBroker` is dropped, and also (PR_SET_PDEATHSIG) when the thread that
//! started it exits, so a hung or panicking test never leaves a broker behind.
//!
//! `RawConn` is a minimal Kafka wire connection (framing plus the `kafka-protocol` codecs) used
//! for the readiness probe and for tests that need exact control over the bytes sent.
//!
//! `within` bounds a test's total running time. `wait_until` / `wait_for` wait for a condition
//! (never a bare sleep) and fail naming what did not happen. `skip` reports a test that cannot
//! run here (e.g. it needs root) as skipped instead of letting it pass silently.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, Message, Request, StrBytes};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message as _;
use rdkafka::{Offset, TopicPartitionList};

pub mod cluster;
pub mod netns;
pub mod proxy;

/// How long a broker may take from spawn to answering a metadata request.
pub const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `TestBroker` waits for its broker to be ready: [`BROKER_READY_TIMEOUT`], or
/// `FRESHET_BROKER_READY_TIMEOUT_S` seconds (a measurement that runs the broker under valgrind,
/// which starts tens of times slower).
fn ready_timeout() -> Duration {
    std::env::var("FRESHET_BROKER_READY_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(BROKER_READY_TIMEOUT, Duration::from_secs)
}
/// How long a broker may take to exit after SIGTERM.
pub const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Read/write timeout on raw test connections.
pub const RAW_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One running `freshet` broker process.
pub struct TestBroker {
    /// The broker binary `start_again` runs ([`broker_bin`] unless chosen).
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    /// Port of the admin HTTP listener (`/metrics`, `/health`, `/ready`).
    admin_port: u16,
    shards: usize,
    extra_args: Vec<String>,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Set once a panic message has carried the log, so `Drop` does not print it again.
    log_shown: std::cell::Cell<bool>,
    // Holds the data dir and the log file; removed on drop.
    _tmp: tempfile::TempDir,
}

impl TestBroker {
    /// Starts a broker with `shards` shards on a free port and a fresh data directory.
    pub fn start(shards: usize) -> TestBroker {
        TestBroker::start_with(shards, &[])
    }

    /// Like `start`, with extra `freshet start` arguments (e.g. `--auto-create-topics false`).
    pub fn start_with(shards: usize, extra_args: &[&str]) -> TestBroker {
        TestBroker::start_in(shards, None, extra_args)
    }

    /// Like `start_with`, with the data directory at `data_dir` (e.g. on a small file system)
    /// instead of a fresh temporary one.
    pub fn start_in(shards: usize, data_dir: Option<PathBuf>, extra_args: &[&str]) -> TestBroker {
        TestBroker::start_bin_in(broker_bin(), shards, data_dir, extra_args)
    }

    /// Like `start_in`, running the broker binary `bin` (e.g. an older build, to test that a
    /// data directory it wrote still starts; `set_bin` switches for the next start).
    pub fn start_bin_in(
        bin: PathBuf,
        shards: usize,
        data_dir: Option<PathBuf>,
        extra_args: &[&str],
    ) -> TestBroker {
        let tmp = tempfile::Builder::new()
            .prefix("freshet-test-")
            .tempdir()
            .expect("tempdir");
        let data_dir = data_dir.unwrap_or_else(|| tmp.path().join("data"));
        let log_path = tmp.path().join("broker.log");
        let mut broker = TestBroker {
            bin,
            child: None,
            port: free_port(),
            admin_port: free_port(),
            shards,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            data_dir,
            log_path,
            log_shown: std::cell::Cell::new(false),
            _tmp: tmp,
        };
        broker.start_again();
        broker
    }

    /// The address clients connect to, as `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr().parse().unwrap()
    }

    /// The admin HTTP listener's address, as `127.0.0.1:PORT` (unless the test passed its own
    /// `--admin-listen`).
    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    /// GETs `path` from the admin listener: (status code, body).
    pub fn admin_get(&self, path: &str) -> io::Result<(u16, String)> {
        http_get(&self.admin_addr(), path)
    }

    /// Requests of API `api` (as `/metrics` names it, e.g. "Fetch") handled so far, all shards.
    pub fn requests_handled(&self, api: &str) -> f64 {
        let (status, text) = self.admin_get("/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "GET /metrics: {text}");
        let prefix = format!("freshet_requests_total{{api=\"{api}\",");
        text.lines()
            .filter_map(|l| {
                l.strip_prefix(&prefix)?
                    .rsplit(' ')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .sum()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is not running").id()
    }

    /// The command line used to start this broker (without the binary).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "start".to_string(),
            "--listen".to_string(),
            self.addr(),
            "--data-dir".to_string(),
            self.data_dir.display().to_string(),
            "--shards".to_string(),
            self.shards.to_string(),
        ];
        // Never the default admin port: tests run in parallel.
        if !self
            .extra_args
            .iter()
            .any(|a| a.starts_with("--admin-listen"))
        {
            args.extend(["--admin-listen".to_string(), self.admin_addr()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts the broker process (again) on the same port and data directory, waits until ready.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = spawn_broker_process(&self.bin, &self.args(), &self.log_path);
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + ready_timeout();
        let mut last_err = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                panic!(
                    "broker exited during startup with {status}\n{}",
                    self.log_tail()
                );
            }
            match probe_ready(self.socket_addr()) {
                Ok(()) => return,
                Err(e) => last_err = e.to_string(),
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "broker not ready after {:?}: {last_err}\n{}",
            ready_timeout(),
            self.log_tail()
        );
    }

    /// The binary the next `start_again` runs.
    pub fn set_bin(&mut self, bin: PathBuf) {
        self.bin = bin;
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `sig` and waits for the process to exit; returns its exit status.
    pub fn stop_with(&mut self, sig: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("broker is not running");
        signal(&child, sig);
        match wait_timeout(&mut child, BROKER_STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker did not exit within {BROKER_STOP_TIMEOUT:?} of signal {sig}\n{}",
                    self.log_tail()
                );
            }
        }
    }

    /// Clean restart: SIGTERM, require exit status 0, start again on the same port and data.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "broker exited with {status} after SIGTERM\n{}",
            self.log_tail()
        );
        self.start_again();
    }

    /// Kills the broker with SIGKILL (no chance to flush or clean up) and reaps it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("broker is not running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait after SIGKILL");
    }

    /// Waits (up to 5 s) until nothing accepts connections on the broker's port any more.
    pub fn wait_port_closed(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect_timeout(&self.socket_addr(), Duration::from_millis(200)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "port {} still accepting 5 s after the broker died",
                self.port
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Is the broker process still running?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Resident set size of the broker process in bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        proc_status_bytes(self.pid(), "VmRSS").expect("VmRSS")
    }

    /// Everything the broker wrote to stderr so far (all its runs).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last lines of the broker's stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        self.log_shown.set(true);
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(80);
        format!(
            "---- broker log ({}), last {} lines ----\n{}\n---- end of broker log ----",
            self.log_path.display(),
            lines.len() - from,
            lines[from..].join("\n")
        )
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() && !self.log_shown.get() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// Path of the broker binary: FRESHET_BIN if set, else the one cargo built for this test.
pub fn broker_bin() -> PathBuf {
    match std::env::var_os("FRESHET_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_freshet")),
    }
}

/// A minimal HTTP/1.1 GET over a fresh connection: (status code, body).
pub fn http_get(addr: &str, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(RAW_IO_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no HTTP head in {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// The value of the Prometheus sample `series` (name with labels, exactly as rendered), if
/// present in `text`.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The sum of every sample of metric `name` (any labels) in `text`.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a child we have not reaped yet, so the pid is ours.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(
        rc,
        0,
        "kill({}, {sig}) failed: {}",
        child.id(),
        io::Error::last_os_error()
    );
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Ready means: TCP connect works, ApiVersions answers with no error and lists Metadata, and a
/// Metadata request (all topics) answers with this broker in its broker list.
fn probe_ready(addr: SocketAddr) -> io::Result<()> {
    let mut conn = RawConn::connect_timeout(addr, Duration::from_secs(2))?;
    let versions = conn
        .request(0, &ApiVersionsRequest::default())
        .map_err(io::Error::other)?;
    if versions.error_code != 0 {
        return Err(io::Error::other(format!(
            "ApiVersions error {}",
            versions.error_code
        )));
    }
    let metadata = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Metadata as i16)
        .ok_or_else(|| io::Error::other("ApiVersions does not list Metadata"))?;
    let version = metadata.max_version.min(MetadataRequest::VERSIONS.max);
    let response = conn
        .request(version, &MetadataRequest::default().with_topics(None))
        .map_err(io::Error::other)?;
    if response.brokers.is_empty() {
        return Err(io::Error::other("Metadata lists no brokers"));
    }
    Ok(())
}

/// A raw Kafka protocol connection: length-prefixed frames, request header, codec messages.
pub struct RawConn {
    pub stream: TcpStream,
    next_correlation_id: i32,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> io::Result<RawConn> {
        RawConn::connect_timeout(addr, RAW_IO_TIMEOUT)
    }

    pub fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<RawConn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(RAW_IO_TIMEOUT))?;
        stream.set_write_timeout(Some(RAW_IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            stream,
            next_correlation_id: 1,
        })
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Encodes header + body for `R` at `version` into a complete frame (with length prefix).
    pub fn encode_request<R: Request>(version: i16, correlation_id: i32, body: &R) -> Bytes {
        let api_key = ApiKey::try_from(R::KEY).expect("known api key");
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("freshet-tests")));
        let mut payload = BytesMut::new();
        header
            .encode(&mut payload, api_key.request_header_version(version))
            .expect("encode header");
        body.encode(&mut payload, version).expect("encode body");
        let mut frame = BytesMut::with_capacity(4 + payload.len());
        frame.put_i32(payload.len() as i32);
        frame.put(payload);
        frame.freeze()
    }

    /// Sends a request and returns its correlation id (does not wait for the answer).
    pub fn send<R: Request>(&mut self, version: i16, body: &R) -> io::Result<i32> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        self.stream
            .write_all(&Self::encode_request(version, correlation_id, body))?;
        Ok(correlation_id)
    }

    /// Reads one response frame for `R` at `version` and checks its correlation id.
    pub fn receive<R: Request>(
        &mut self,
        version: i16,
        correlation_id: i32,
    ) -> io::Result<R::Response> {
        let mut frame = self
            .read_frame()?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"))?;
        let api_key = ApiKey::try_from(R::KEY).expect("known api key");
        let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
            .map_err(io::Error::other)?;
        if header.correlation_id != correlation_id {
            return Err(io::Error::other(format!(
                "correlation id {} in response, expected {correlation_id}",
                header.correlation_id
            )));
        }
        let body = R::Response::decode(&mut frame, version).map_err(io::Error::other)?;
        if frame.has_remaining() {
            return Err(io::Error::other(format!(
                "{} bytes left over after decoding {:?} v{version} response",
                frame.remaining(),
                api_key
            )));
        }
        Ok(body)
    }

    /// Sends a request and waits for its response.
    pub fn request<R: Request>(&mut self, version: i16, body: &R) -> io::Result<R::Response> {
        let correlation_id = self.send(version, body)?;
        self.receive::<R>(version, correlation_id)
    }

    /// Reads one length-prefixed frame; `None` if the peer closed cleanly before a frame began.
    pub fn read_frame(&mut self) -> io::Result<Option<Bytes>> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = i32::from_be_bytes(len);
        if !(0..=256 * 1024 * 1024).contains(&len) {
            return Err(io::Error::other(format!("response frame length {len}")));
        }
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Some(Bytes::from(body)))
    }
}

/// Runs `body` on its own thread and fails the test if it takes longer than `limit`.
/// A panic in `body` is passed on unchanged.
pub fn within<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name("test-body".into())
        .spawn(move || {
            let result = body();
            let _ = tx.send(());
            result
        })
        .expect("spawn test thread");
    match rx.recv_timeout(limit) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("test did not finish within {limit:?} (its broker is killed when the process exits)")
        }
    }
}

/// How often `wait_until` and `wait_for` look at their condition.
pub const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Waits until `done()` is true, looking every [`WAIT_POLL_INTERVAL`]; panics after `timeout`
/// with "timed out after ... waiting for {what}". `what` names the condition, e.g. "the
/// consumer to see 100 records".
pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    wait_for(timeout, what, || if done() { Ok(()) } else { Err(()) })
}

/// Waits until `probe()` returns `Ok(value)` and returns the value; `Err(state)` means "not
/// yet", and the last such state is printed (`{:?}`) if `timeout` passes first.
pub fn wait_for<T, E: std::fmt::Debug>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, E>,
) -> T {
    let started = Instant::now();
    loop {
        let last = match probe() {
            Ok(value) => return value,
            Err(state) => state,
        };
        if started.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last:?}");
        }
        thread::sleep(WAIT_POLL_INTERVAL);
    }
}

/// Environment variable that turns [`skip`] into a failure: set it to 1 where every test must
/// really run (CI runs as root, with loop devices).
pub const REQUIRE_ALL_TESTS_ENV: &str = "FRESHET_REQUIRE_ALL_TESTS";

/// Reports that the calling test cannot run here and why; the caller then returns. libtest
/// has no runtime skip, so the test is listed as passed, but the line `SKIPPED: <test>: <why>`
/// is written to stderr past libtest's output capture, and `tests/run-all.sh` counts such lines
/// as skipped, not passed. With `FRESHET_REQUIRE_ALL_TESTS=1` it panics instead.
pub fn skip(test: &str, why: &str) {
    if std::env::var(REQUIRE_ALL_TESTS_ENV).is_ok_and(|v| v == "1") {
        panic!("{test} cannot run here ({why}), and {REQUIRE_ALL_TESTS_ENV}=1 requires it");
    }
    // Straight to the stderr handle: `eprintln!` would be captured and shown only on failure.
    // The leading newline keeps the line whole when libtest has printed "test x ... " already.
    let _ = writeln!(io::stderr(), "\nSKIPPED: {test}: {why}");
}

/// Declares each scenario `fn name(shards: usize)` as two tests, `name::one_shard` and
/// `name::two_shards`, each bounded by the given number of seconds (`within`).
macro_rules! shard_scenarios {
    ($($name:ident => $secs:expr;)*) => {$(
        mod $name {
            #[test]
            fn one_shard() {
                crate::common::within(std::time::Duration::from_secs($secs), || super::$name(1))
            }
            #[test]
            fn two_shards() {
                crate::common::within(std::time::Duration::from_secs($secs), || super::$name(2))
            }
        }
    )*};
}

/// A current-thread tokio runtime to drive the rdkafka clients' futures.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The rdkafka client settings the tests share: `broker`'s address over IPv4 and a 20 s socket
/// timeout.
pub fn client_config(broker: &TestBroker) -> rdkafka::config::ClientConfig {
    client_config_with(broker, &[])
}

/// `client_config` with `extra` settings added after it (an extra of the same name wins).
pub fn client_config_with(
    broker: &TestBroker,
    extra: &[(&str, &str)],
) -> rdkafka::config::ClientConfig {
    let mut config = rdkafka::config::ClientConfig::new();
    config
        .set("bootstrap.servers", broker.addr())
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "20000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config
}

/// A Produce request, acks=all with a 30 s timeout, of `records` to `topic`/`partition`.
pub fn produce_request(topic: &str, partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// Produces `records` to `topic`/`partition` with Produce `version` (3 and up: topics by name),
/// acks=all; returns the partition's response.
pub fn produce_records(
    conn: &mut RawConn,
    version: i16,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> PartitionProduceResponse {
    let request = produce_request(topic, partition, records);
    let response: ProduceResponse = conn.request(version, &request).expect("Produce");
    response.responses[0].partition_responses[0].clone()
}

/// Assigns `consumer` `topic`/`partition` from its first offset (no group membership).
pub fn assign_from_beginning(consumer: &BaseConsumer, topic: &str, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
}

/// Polls `consumer` until it has read `expected` records or `timeout` has passed: offset ->
/// value (empty for a null value). A consumer error fails the test.
pub fn poll_values(
    consumer: &BaseConsumer,
    expected: usize,
    timeout: Duration,
) -> std::collections::BTreeMap<i64, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let deadline = Instant::now() + timeout;
    while out.len() < expected && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consumer error");
            out.insert(m.offset(), m.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

/// Produces `values` as one batch (no keys, timestamp 1_700_000_000_000) to `topic`/0 with
/// Produce v9, acks=all: (error code, base offset).
pub fn produce_values(
    conn: &mut RawConn,
    topic: &str,
    values: impl IntoIterator<Item = Vec<u8>>,
) -> (i16, i64) {
    use freshet_protocol::batch::{encode_batch, Compression, NewRecord};
    let records: Vec<NewRecord> = values
        .into_iter()
        .map(|v| (None, Some(Bytes::from(v)), 1_700_000_000_000))
        .collect();
    let batch = encode_batch(&records, Compression::None).expect("encode batch");
    let p = produce_records(conn, 9, topic, 0, batch);
    (p.error_code, p.base_offset)
}

/// A consumer from `config` that reads by assignment only (`group_id` is never joined, nothing is
/// committed), checks CRCs, and waits at most 100 ms per fetch.
pub fn assign_only_consumer(
    mut config: rdkafka::config::ClientConfig,
    group_id: &str,
) -> BaseConsumer {
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("check.crcs", "true")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer")
}

/// A size field of `/proc/<pid>/status` ("VmRSS", "VmHWM", ...; the kernel gives kB) in bytes;
/// `None` when the process or the field is gone.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// CreateTopics v7 (30 s timeout) of one topic `name` with `partitions` partitions,
/// replication factor 1 and `configs`: the topic's error code.
pub fn create_topic_raw(
    conn: &mut RawConn,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> i16 {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::CreateTopicsRequest;
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_value(Some(StrBytes::from_string(v.to_string())))
                    })
                    .collect(),
            )]);
    conn.request(7, &request).expect("CreateTopics").topics[0].error_code
}

/// Creates `topic` through an rdkafka admin client made from `config`, with `options`; fails
/// the test unless the broker created it.
pub fn create_topic_via_admin(
    config: &rdkafka::config::ClientConfig,
    topic: &rdkafka::admin::NewTopic,
    options: &rdkafka::admin::AdminOptions,
) {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        config.create().expect("admin client");
    let results = runtime()
        .block_on(admin.create_topics([topic], options))
        .expect("CreateTopics");
    assert_eq!(results.len(), 1);
    assert!(
        results[0].is_ok(),
        "create {}: {:?}",
        topic.name,
        results[0]
    );
}

/// This process's RLIMIT_NOFILE: (soft, hard).
pub fn nofile_limit() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    (limit.rlim_cur, limit.rlim_max)
}

/// Sets this process's soft RLIMIT_NOFILE (a broker child started later inherits it); returns
/// the previous soft limit. The limit is process-wide: every test running at once sees it.
pub fn set_nofile_soft(soft: u64) -> u64 {
    let (previous, hard) = nofile_limit();
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit with a valid pointer to a local struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    previous
}

/// Writes `settings` to `freshet.toml` in a new temporary directory, for `--config`: (the
/// directory, removed when dropped; the file's path).
pub fn config_file(settings: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("freshet.toml");
    fs::write(&config, settings).expect("write freshet.toml");
    (dir, config)
}

/// Spawns a broker process `bin args`, its stdout and stderr appended to `log_path`, logging at
/// info unless RUST_LOG says otherwise, and killed when the thread that spawned it exits
/// (PR_SET_PDEATHSIG: no broker outlives a test).
pub fn spawn_broker_process(bin: &Path, args: &[String], log_path: &Path) -> Child {
    spawn_broker_process_in(bin, args, log_path, None)
}

/// Like [`spawn_broker_process`], in `node`'s network namespace of a fabric when given.
pub fn spawn_broker_process_in(
    bin: &Path,
    args: &[String],
    log_path: &Path,
    netns: Option<(&netns::Fabric, usize)>,
) -> Child {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("open broker log");
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    if let Some((fabric, node)) = netns {
        fabric
            .enter(node, &mut cmd)
            .unwrap_or_else(|e| panic!("enter node {node}'s network namespace: {e}"));
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {bin:?} {args:?}: {e}"))
}
