//! The controller transport: how the nodes of a cluster talk to each other over TCP (the
//! controller listener, `controller_listen`).
//!
//! One [`ControllerTransport`] per node, held in an `Rc` on the coordinator shard (shard 0),
//! created when the node starts its quorum role and stopped ([`ControllerTransport::stop`])
//! when the node stops. It carries two kinds of traffic:
//! - **Raft messages** between the voters of the metadata quorum ([`ControllerTransport::send_raft`]):
//!   one outbound connection per peer, written by a task of its own from a bounded queue. A
//!   message that does not fit the queue (peer down or slow) is dropped and counted: Raft
//!   tolerates loss, and a slow peer never blocks the node. Inbound raft messages go to the
//!   `on_raft` callback as they arrive.
//! - **Calls** to the active controller ([`ControllerTransport::call`],
//!   [`ControllerTransport::call_controller`]): a [`ControllerRequest`] with a correlation id,
//!   answered on the same connection by the `on_call` handler of the called node. The caller
//!   keeps a few idle connections per address for the next call; a call that times out drops
//!   its connection (a late answer never reaches the next call).
//!
//! ## Frames
//! Every frame is `u32 BE length` (of what follows) + `u8 kind` + payload:
//! - kind 1 ([`KIND_RAFT`]): a raft-rs `Message`, its protobuf bytes;
//! - kind 2 ([`KIND_REQUEST`]): `u64 BE correlation id` + JSON [`ControllerRequest`];
//! - kind 3 ([`KIND_RESPONSE`]): `u64 BE correlation id` + JSON [`ControllerResponse`].
//!
//! The listener takes kinds 1 and 2; a caller takes only kind 3 with its own correlation id;
//! an outbound raft connection receives nothing (bytes on it close it).
//!
//! ## Bounds ([`TransportLimits`])
//! - a frame is at most [`CONTROLLER_FRAME_BYTES_MAX`] (80 MiB: a 64 MiB metadata snapshot
//!   fits), checked on the length prefix before any of the body is read;
//! - at most `connections_accepted_max` inbound connections; one more is closed at once;
//! - at most `inflight_calls_per_connection_max` calls run per inbound connection; at the
//!   limit the connection is not read (TCP backpressure);
//! - inbound frame bodies: a body over 64 KiB reserves its size from a budget of
//!   `inbound_buffered_bytes_max` shared by every inbound connection before it is read, and
//!   its buffer grows as its bytes arrive (never more than twice what arrived). Memory held by
//!   inbound connections is thus at most `inbound_buffered_bytes_max` plus 64 KiB + 16 KiB
//!   (read buffer) per connection, plus the answers being written;
//! - per peer, at most `peer_queue_messages_max` messages and `peer_queue_bytes_max` bytes
//!   wait to be sent.
//!
//! ## Failure behaviour
//! - A bad inbound frame (length over the bound or zero, an unknown kind, a kind not expected
//!   on that side, undecodable protobuf or JSON, a frame cut short by the peer, a frame not
//!   whole within `frame_read_timeout` of its first byte) closes that one connection, counts a
//!   bad frame and logs why (one line per 10 s, with the count of those not logged). The
//!   listener keeps serving every other connection. An inbound connection that sends nothing
//!   for `idle_timeout` is closed.
//! - A raft message addressed to another node is dropped and counted as a bad frame (a
//!   misconfigured voter list), the connection is kept.
//! - Outbound: a failed connect or a broken connection is retried with exponential backoff
//!   (from 20 ms to `reconnect_backoff_max`, ~1 s), only while there is something to send;
//!   the message being written when the connection broke is lost. The outbound task also
//!   watches the connection for the peer closing it, so an idle link is reopened at once
//!   rather than losing its next message.
//! - A call on a pooled connection that turns out closed (the peer restarted or timed it
//!   out) is retried once on a fresh connection; every other failure is the caller's.
//!
//! Not done here: TLS/SASL on the controller listener; the bind does not wait out a port
//! still held by a just-killed process (the caller retries).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt, FutureExt};
use protobuf::Message as _;
use raft::prelude::Message;

use super::{node_id_of, raft_id, ControllerRequest, ControllerResponse, Voter};
use crate::rt::net::TcpStream;
use crate::rt::sync::{Semaphore, StaticPermit};

/// The largest frame (kind byte and payload) either side accepts or sends.
pub const CONTROLLER_FRAME_BYTES_MAX: usize = 80 * 1024 * 1024;
/// The length prefix and the kind byte.
pub const FRAME_HEADER_BYTES: usize = 5;
/// A raft-rs `Message`, protobuf.
pub const KIND_RAFT: u8 = 1;
/// A call: correlation id + JSON [`ControllerRequest`].
pub const KIND_REQUEST: u8 = 2;
/// An answer: correlation id + JSON [`ControllerResponse`].
pub const KIND_RESPONSE: u8 = 3;
/// The correlation id of a call or an answer.
const CORRELATION_ID_BYTES: usize = 8;
/// Inbound bodies up to this size are read without reserving the inbound budget.
const SMALL_BODY_BYTES_MAX: usize = 64 * 1024;
/// The read buffer of an inbound connection.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Small outbound raft frames are gathered into one write up to this size.
const WRITE_GATHER_BYTES_MAX: usize = 64 * 1024;
/// The first reconnect backoff of a peer link; it doubles up to `reconnect_backoff_max`.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// At most one log line per this interval for each kind of repeated trouble.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Back-off after a failed accept, so the loop never spins.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// First pause of `call_controller` between rounds that found no controller; doubles to
/// [`CONTROLLER_RETRY_BACKOFF_MAX`].
const CONTROLLER_RETRY_BACKOFF_MIN: Duration = Duration::from_millis(20);
const CONTROLLER_RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Addresses for which idle call connections are kept (others are closed after the call).
const POOLED_ADDRS_MAX: usize = 16;

/// The transport's limits (module doc, "Bounds"); [`Default`] gives the production values.
#[derive(Debug, Clone)]
pub struct TransportLimits {
    /// The largest frame (kind + payload), either direction.
    pub frame_bytes_max: usize,
    /// Inbound connections open at once.
    pub connections_accepted_max: usize,
    /// Calls running at once per inbound connection.
    pub inflight_calls_per_connection_max: usize,
    /// Bytes of large inbound frame bodies buffered at once over all connections.
    pub inbound_buffered_bytes_max: usize,
    /// Raft messages waiting per peer.
    pub peer_queue_messages_max: usize,
    /// Bytes of raft messages waiting per peer.
    pub peer_queue_bytes_max: usize,
    /// Idle call connections kept per address.
    pub pooled_connections_per_addr_max: usize,
    pub connect_timeout: Duration,
    /// The longest pause between reconnect attempts to a peer.
    pub reconnect_backoff_max: Duration,
    /// A write that makes no progress for this long fails (a peer that stopped reading).
    pub write_timeout: Duration,
    /// An inbound frame must be whole this long after its first byte.
    pub frame_read_timeout: Duration,
    /// An inbound connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// The longest one attempt of `call_controller` waits for one node.
    pub call_attempt_timeout: Duration,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            frame_bytes_max: CONTROLLER_FRAME_BYTES_MAX,
            connections_accepted_max: 256,
            inflight_calls_per_connection_max: 16,
            inbound_buffered_bytes_max: 192 * 1024 * 1024,
            peer_queue_messages_max: 4096,
            peer_queue_bytes_max: 96 * 1024 * 1024,
            pooled_connections_per_addr_max: 4,
            connect_timeout: Duration::from_secs(1),
            reconnect_backoff_max: Duration::from_secs(1),
            write_timeout: Duration::from_secs(10),
            frame_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            call_attempt_timeout: Duration::from_secs(2),
        }
    }
}

/// What the transport has done since it was created (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Raft messages written to a peer's socket.
    pub raft_sent: u64,
    /// Raft messages dropped: peer queue full, unknown peer, too large, lost with a broken
    /// connection, or sent after stop.
    pub raft_dropped: u64,
    /// Raft messages received and handed to `on_raft`.
    pub raft_received: u64,
    /// Outbound raft connections opened after a peer's first one.
    pub reconnects: u64,
    /// Inbound frames refused (the connection closed), and misaddressed raft messages.
    pub bad_frames: u64,
    /// Inbound connections closed at once because `connections_accepted_max` were open.
    pub connections_refused: u64,
    /// Calls answered by this node's `on_call`.
    pub calls_served: u64,
}

/// Why a transport operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind the controller listener on {addr}: {message}")]
    Bind { addr: SocketAddr, message: String },
    #[error("cannot resolve {addr}: {message}")]
    Resolve { addr: String, message: String },
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("connection to {addr} failed: {message}")]
    Io { addr: String, message: String },
    #[error("bad frame from {addr}: {message}")]
    BadFrame { addr: String, message: String },
    #[error("no answer from {addr} within {after_ms} ms")]
    Timeout { addr: String, after_ms: u64 },
    #[error("no active controller answered within {after_ms} ms (last: {last})")]
    NoController { after_ms: u64, last: String },
    #[error("the request cannot be encoded: {0}")]
    Encode(String),
    #[error("the controller transport is stopped")]
    Stopped,
}

/// What the listener does with an inbound raft message (must not block).
pub type RaftHandler = Rc<dyn Fn(Message)>;
/// What the listener does with an inbound call: the answer, sent back on its connection.
pub type CallHandler =
    Rc<dyn Fn(ControllerRequest) -> Pin<Box<dyn Future<Output = ControllerResponse>>>>;

/// A decoded frame.
#[derive(Debug)]
pub enum Frame {
    Raft(Message),
    Request {
        correlation_id: u64,
        request: ControllerRequest,
    },
    Response {
        correlation_id: u64,
        response: ControllerResponse,
    },
}

/// Checks a frame header (length prefix and kind): the payload length, or why the frame is
/// refused.
pub fn parse_header(
    header: [u8; FRAME_HEADER_BYTES],
    frame_bytes_max: usize,
) -> Result<(u8, usize), String> {
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let kind = header[4];
    if length == 0 {
        return Err("a frame of length 0 (no kind)".into());
    }
    if length > frame_bytes_max {
        return Err(format!(
            "a frame of {length} bytes, over the limit of {frame_bytes_max}"
        ));
    }
    if !(KIND_RAFT..=KIND_RESPONSE).contains(&kind) {
        return Err(format!("unknown frame kind {kind}"));
    }
    Ok((kind, length - 1))
}

/// Decodes a frame's payload of `kind` (already checked by [`parse_header`]).
pub fn decode_frame(kind: u8, payload: &[u8]) -> Result<Frame, String> {
    if kind == KIND_RAFT {
        return Message::parse_from_bytes(payload)
            .map(Frame::Raft)
            .map_err(|e| format!("undecodable raft message: {e}"));
    }
    if payload.len() < CORRELATION_ID_BYTES {
        return Err(format!("a call frame of {} bytes", payload.len()));
    }
    let (id, json) = payload.split_at(CORRELATION_ID_BYTES);
    let correlation_id = u64::from_be_bytes(id.try_into().expect("8 bytes"));
    match kind {
        KIND_REQUEST => serde_json::from_slice(json)
            .map(|request| Frame::Request {
                correlation_id,
                request,
            })
            .map_err(|e| format!("undecodable request: {e}")),
        KIND_RESPONSE => serde_json::from_slice(json)
            .map(|response| Frame::Response {
                correlation_id,
                response,
            })
            .map_err(|e| format!("undecodable response: {e}")),
        _ => Err(format!("unknown frame kind {kind}")),
    }
}

fn frame_with_header(kind: u8, payload_bytes: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload_bytes);
    frame.extend_from_slice(&((payload_bytes + 1) as u32).to_be_bytes());
    frame.push(kind);
    frame
}

/// The whole frame of a raft message, or why it cannot be sent.
pub fn encode_raft(msg: &Message, frame_bytes_max: usize) -> Result<Vec<u8>, String> {
    let size = msg.compute_size() as usize;
    if size + 1 > frame_bytes_max {
        return Err(format!(
            "a raft message of {size} bytes, over the frame limit of {frame_bytes_max}"
        ));
    }
    let mut frame = frame_with_header(KIND_RAFT, size);
    msg.write_to_vec(&mut frame).map_err(|e| e.to_string())?;
    assert_eq!(frame.len(), FRAME_HEADER_BYTES + size, "protobuf size");
    Ok(frame)
}

/// The whole frame of a call (`kind` 2) or an answer (`kind` 3) with `value` as JSON.
pub fn encode_call<T: serde::Serialize>(
    kind: u8,
    correlation_id: u64,
    value: &T,
    frame_bytes_max: usize,
) -> Result<Vec<u8>, String> {
    assert!(kind == KIND_REQUEST || kind == KIND_RESPONSE);
    let json = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    let payload_bytes = CORRELATION_ID_BYTES + json.len();
    if payload_bytes + 1 > frame_bytes_max {
        return Err(format!(
            "a call of {payload_bytes} bytes, over the frame limit of {frame_bytes_max}"
        ));
    }
    let mut frame = frame_with_header(kind, payload_bytes);
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    frame.extend_from_slice(&json);
    Ok(frame)
}

/// Allows one log line per [`LOG_INTERVAL`] and counts the others.
#[derive(Default)]
struct LogLimiter {
    last: Cell<Option<crate::rt::Instant>>,
    suppressed: Cell<u64>,
}

impl LogLimiter {
    /// `Some(lines not logged since the last one)` if a line may be logged now.
    fn allow(&self) -> Option<u64> {
        if self.last.get().is_some_and(|t| t.elapsed() < LOG_INTERVAL) {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.last.set(Some(crate::rt::now()));
        Some(self.suppressed.replace(0))
    }
}

#[derive(Default)]
struct Counters {
    raft_sent: Cell<u64>,
    raft_dropped: Cell<u64>,
    raft_received: Cell<u64>,
    reconnects: Cell<u64>,
    bad_frames: Cell<u64>,
    connections_refused: Cell<u64>,
    calls_served: Cell<u64>,
}

fn bump(counter: &Cell<u64>, by: u64) {
    counter.set(counter.get() + by);
}

/// The outbound side towards one peer: the queue of encoded frames and the task that
/// writes them.
struct PeerLink {
    node_id: i32,
    addr: String,
    queue: RefCell<VecDeque<Vec<u8>>>,
    queued_bytes: Cell<usize>,
    /// The writer task, when it waits for a frame.
    waiter: RefCell<Option<Waker>>,
    task: RefCell<Option<crate::rt::JoinHandle<()>>>,
}

impl PeerLink {
    /// Queues `frame` unless the queue is full (`false`: dropped).
    fn push(&self, frame: Vec<u8>, limits: &TransportLimits) -> bool {
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= limits.peer_queue_messages_max
            || self.queued_bytes.get() + frame.len() > limits.peer_queue_bytes_max
        {
            return false;
        }
        self.queued_bytes.set(self.queued_bytes.get() + frame.len());
        queue.push_back(frame);
        if let Some(waker) = self.waiter.borrow_mut().take() {
            waker.wake();
        }
        true
    }

    /// Resolves once a frame is queued.
    async fn frames_queued(&self) {
        std::future::poll_fn(|cx| {
            if self.queue.borrow().is_empty() {
                *self.waiter.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    /// The next bytes to write: the first frame alone if large, or small frames gathered up
    /// to [`WRITE_GATHER_BYTES_MAX`]; with the number of messages in them.
    fn take_batch(&self) -> (Vec<u8>, u64) {
        let mut queue = self.queue.borrow_mut();
        let first = queue.pop_front().expect("a frame is queued");
        let mut batch = first;
        let mut count = 1;
        while let Some(next) = queue.front() {
            if batch.len() + next.len() > WRITE_GATHER_BYTES_MAX {
                break;
            }
            batch.extend_from_slice(next);
            queue.pop_front();
            count += 1;
        }
        self.queued_bytes.set(self.queued_bytes.get() - batch.len());
        (batch, count)
    }
}

/// `fut`'s output, or `None` if `limit` passes first.
async fn timed<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        crate::rt::sleep(limit).await;
        None
    })
    .await
}

/// Why reading frames from a connection stopped.
#[derive(Debug)]
enum ReadEnd {
    /// The peer closed the connection between frames.
    Closed,
    /// Nothing arrived for the idle timeout.
    Idle,
    /// A refused frame: bad header or contents, cut short, or too slow (counted, logged).
    Bad(String),
    /// The socket failed.
    Io(String),
}

/// Reads frames from one connection within the transport's limits.
struct FrameReader<'a, R> {
    reader: R,
    frame_bytes_max: usize,
    frame_read_timeout: Duration,
    /// How long to wait for a frame's first byte (`None`: no limit, the caller has one).
    idle_timeout: Option<Duration>,
    /// The inbound budget in KiB, reserved by large bodies before they are read.
    budget: Option<&'a Budget>,
}

impl<R: AsyncRead + Unpin> FrameReader<'_, R> {
    /// The next frame's kind and payload, with its reservation of the inbound budget (held
    /// until the caller has decoded it).
    async fn next(&mut self) -> Result<(u8, Vec<u8>, Option<StaticPermit>), ReadEnd> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        let first = match self.idle_timeout {
            Some(limit) => timed(limit, self.reader.read(&mut header[..1])).await,
            None => Some(self.reader.read(&mut header[..1]).await),
        };
        match first {
            None => return Err(ReadEnd::Idle),
            Some(Ok(0)) => return Err(ReadEnd::Closed),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ReadEnd::Io(e.to_string())),
        }
        let mut deadline = crate::rt::now() + self.frame_read_timeout;
        let mut filled = 1;
        while filled < FRAME_HEADER_BYTES {
            filled += read_by(&mut self.reader, &mut header[filled..], deadline).await?;
        }
        let (kind, payload_bytes) =
            parse_header(header, self.frame_bytes_max).map_err(ReadEnd::Bad)?;
        let mut permit = None;
        if let Some(budget) = self.budget.filter(|_| payload_bytes > SMALL_BODY_BYTES_MAX) {
            let waiting = crate::rt::now();
            let reserved = budget
                .reserve(payload_bytes)
                .await
                .ok_or_else(|| ReadEnd::Io("transport stopping".into()))?;
            permit = Some(reserved);
            // Waiting for the budget is not the peer's slowness.
            deadline += waiting.elapsed();
        }
        let mut payload: Vec<u8> = Vec::new();
        while payload.len() < payload_bytes {
            let filled = payload.len();
            if filled == payload.capacity() {
                // Grow as bytes arrive: a peer announcing a large frame and sending little
                // holds at most twice what it sent.
                let capacity = (2 * filled).max(4096).min(payload_bytes);
                payload.reserve_exact(capacity - filled);
            }
            let window = (payload.capacity() - filled).min(payload_bytes - filled);
            payload.resize(filled + window, 0);
            let n = read_by(&mut self.reader, &mut payload[filled..], deadline).await;
            payload.truncate(filled + *n.as_ref().unwrap_or(&0));
            n?;
        }
        Ok((kind, payload, permit))
    }
}

/// The memory inbound connections may hold for large frame bodies, in KiB.
struct Budget {
    kib: Rc<Semaphore>,
    total_kib: u64,
}

impl Budget {
    fn new(bytes: usize) -> Budget {
        let total_kib = (bytes as u64 / 1024).max(1);
        Budget {
            kib: Rc::new(Semaphore::new(total_kib)),
            total_kib,
        }
    }

    /// Reserves room for a body of `bytes` (all of the budget for one larger than it).
    async fn reserve(&self, bytes: usize) -> Option<StaticPermit> {
        let kib = (bytes as u64).div_ceil(1024).clamp(1, self.total_kib);
        self.kib.acquire_static_permit(kib).await.ok()
    }
}

/// One read into `buf` (not empty) that must complete before `deadline`, mid-frame.
async fn read_by<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    deadline: crate::rt::Instant,
) -> Result<usize, ReadEnd> {
    assert!(!buf.is_empty());
    let left = deadline.saturating_duration_since(crate::rt::now());
    match timed(left, reader.read(buf)).await {
        None => Err(ReadEnd::Bad(
            "a frame not whole within frame_read_timeout of its first byte".into(),
        )),
        Some(Ok(0)) => Err(ReadEnd::Bad(
            "a frame cut short (the peer closed mid-frame)".into(),
        )),
        Some(Ok(n)) => Ok(n),
        Some(Err(e)) => Err(ReadEnd::Io(e.to_string())),
    }
}

/// Resolves `addr` (`host:port`): an IP address at once, a name on the blocking pool.
async fn resolve(addr: &str) -> Result<SocketAddr, TransportError> {
    if let Ok(ip) = addr.parse::<SocketAddr>() {
        return Ok(ip);
    }
    let name = addr.to_string();
    let found = crate::rt::spawn_blocking(move || {
        use std::net::ToSocketAddrs;
        name.to_socket_addrs().map(|mut all| all.next())
    })
    .await;
    match found {
        Ok(Some(ip)) => Ok(ip),
        Ok(None) => Err(TransportError::Resolve {
            addr: addr.into(),
            message: "no address".into(),
        }),
        Err(e) => Err(TransportError::Resolve {
            addr: addr.into(),
            message: e.to_string(),
        }),
    }
}

/// A connection to `addr` with the transport's socket options.
async fn connect(addr: &str, limits: &TransportLimits) -> Result<TcpStream, TransportError> {
    let ip = resolve(addr).await?;
    let stream = crate::rt::net::connect(ip, limits.connect_timeout)
        .await
        .map_err(|e| TransportError::Connect {
            addr: addr.into(),
            message: e.to_string(),
        })?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(limits.write_timeout));
    Ok(stream)
}

/// The node's controller transport (module doc). Lives on the coordinator shard (shard 0),
/// `Rc`-held and `!Send`: created when the node takes its quorum role, [`Self::stop`]ped when
/// it stops. Its tasks hold it: dropping it without `stop` leaves the listener serving.
pub struct ControllerTransport {
    node_id: i32,
    voters: Vec<Voter>,
    limits: TransportLimits,
    counters: Rc<Counters>,
    stopped: Cell<bool>,
    /// Outbound raft links, made on the first message to each peer.
    peers: RefCell<BTreeMap<i32, Rc<PeerLink>>>,
    /// Idle call connections per address.
    pool: RefCell<HashMap<String, Vec<TcpStream>>>,
    accept_task: RefCell<Option<crate::rt::JoinHandle<()>>>,
    /// Inbound connections' tasks by connection number.
    connections: RefCell<HashMap<u64, crate::rt::JoinHandle<()>>>,
    next_connection: Cell<u64>,
    budget: Budget,
    next_correlation_id: Cell<u64>,
    local_addr: Cell<Option<SocketAddr>>,
    bad_frame_log: LogLimiter,
    refused_log: LogLimiter,
    drop_log: Rc<LogLimiter>,
}

impl ControllerTransport {
    /// A transport for node `node_id` among `voters` (its peers for raft messages and the
    /// nodes `call_controller` tries). Serves nothing until [`Self::serve`].
    pub fn new(node_id: i32, voters: Vec<Voter>, limits: TransportLimits) -> Rc<Self> {
        assert!(limits.frame_bytes_max > CORRELATION_ID_BYTES);
        assert!(
            limits.connections_accepted_max > 0 && limits.inflight_calls_per_connection_max > 0
        );
        Rc::new(ControllerTransport {
            node_id,
            voters,
            budget: Budget::new(limits.inbound_buffered_bytes_max),
            limits,
            counters: Rc::default(),
            stopped: Cell::new(false),
            peers: RefCell::default(),
            pool: RefCell::default(),
            accept_task: RefCell::default(),
            connections: RefCell::default(),
            next_connection: Cell::new(0),
            next_correlation_id: Cell::new(1),
            local_addr: Cell::new(None),
            bad_frame_log: LogLimiter::default(),
            refused_log: LogLimiter::default(),
            drop_log: Rc::default(),
        })
    }

    /// Binds the controller listener on `addr` (a plain bind without SO_REUSEPORT, so a
    /// second process cannot silently share the port) and spawns its accept loop. Inbound
    /// raft messages go to `on_raft`, calls to `on_call`.
    pub fn serve(
        self: &Rc<Self>,
        addr: SocketAddr,
        on_raft: RaftHandler,
        on_call: CallHandler,
    ) -> Result<(), TransportError> {
        assert!(self.accept_task.borrow().is_none(), "serve is called once");
        let bind_error = |e: std::io::Error| TransportError::Bind {
            addr,
            message: e.to_string(),
        };
        if self.stopped.get() {
            return Err(TransportError::Stopped);
        }
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        self.local_addr
            .set(Some(std_listener.local_addr().map_err(bind_error)?));
        let listener = crate::rt::net::listener_from_fd(std::os::fd::OwnedFd::from(std_listener));
        tracing::info!(node = self.node_id, addr = ?self.local_addr.get(), "controller listener");
        let task = crate::rt::spawn_local(self.clone().accept_loop(listener, on_raft, on_call));
        *self.accept_task.borrow_mut() = Some(task.detach());
        Ok(())
    }

    /// The address the listener is bound to (its port when bound to port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr.get()
    }

    async fn accept_loop(
        self: Rc<Self>,
        listener: crate::rt::net::TcpListener,
        on_raft: RaftHandler,
        on_call: CallHandler,
    ) {
        loop {
            let stream = match listener.accept().await {
                Ok(stream) => stream,
                Err(e) => {
                    if let Some(unlogged) = self.refused_log.allow() {
                        tracing::warn!(error = %e, similar_not_logged = unlogged, "controller listener: accept failed");
                    }
                    crate::rt::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
            if self.connections.borrow().len() >= self.limits.connections_accepted_max {
                bump(&self.counters.connections_refused, 1);
                if let Some(unlogged) = self.refused_log.allow() {
                    tracing::warn!(%peer, limit = self.limits.connections_accepted_max, similar_not_logged = unlogged, "controller listener: too many connections; closing new one");
                }
                continue;
            }
            let id = self.next_connection.get();
            self.next_connection.set(id + 1);
            let (me, on_raft, on_call) = (self.clone(), on_raft.clone(), on_call.clone());
            let task = crate::rt::spawn_local(async move {
                let why = me.serve_connection(stream, &peer, on_raft, on_call).await;
                tracing::debug!(%peer, reason = %why, "controller connection closed");
                me.connections.borrow_mut().remove(&id);
            });
            self.connections.borrow_mut().insert(id, task.detach());
        }
    }

    /// Serves one inbound connection until it closes; returns why.
    async fn serve_connection(
        &self,
        stream: TcpStream,
        peer: &str,
        on_raft: RaftHandler,
        on_call: CallHandler,
    ) -> String {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(self.limits.write_timeout));
        let (reader, writer) = futures_lite::io::split(stream);
        let mut frames = FrameReader {
            reader: futures_lite::io::BufReader::with_capacity(READ_BUFFER_BYTES, reader),
            frame_bytes_max: self.limits.frame_bytes_max,
            frame_read_timeout: self.limits.frame_read_timeout,
            idle_timeout: Some(self.limits.idle_timeout),
            budget: Some(&self.budget),
        };
        let depth = self.limits.inflight_calls_per_connection_max;
        let (answers, answers_rx) = flume::bounded::<Vec<u8>>(depth);
        // Dropped (cancelled) when this function returns: answers still running are lost
        // with the connection.
        let _writer = crate::rt::spawn_local(write_answers(writer, answers_rx));
        let calls = Rc::new(Semaphore::new(depth as u64));
        loop {
            let (kind, payload, permit) = match frames.next().await {
                Ok(frame) => frame,
                Err(ReadEnd::Closed) => return "closed by the peer".into(),
                Err(ReadEnd::Idle) => return "idle".into(),
                Err(ReadEnd::Io(e)) => return format!("read failed: {e}"),
                Err(ReadEnd::Bad(why)) => return self.bad_frame(peer, why),
            };
            let frame = decode_frame(kind, &payload);
            drop((payload, permit));
            match frame {
                Ok(Frame::Raft(msg)) => self.deliver_raft(msg, peer, &on_raft),
                Ok(Frame::Request {
                    correlation_id,
                    request,
                }) => {
                    // At the limit, stop reading: the peer's calls wait in TCP.
                    let Ok(permit) = calls.acquire_static_permit(1).await else {
                        return "stopping".into();
                    };
                    bump(&self.counters.calls_served, 1);
                    let answer = on_call(request);
                    let (answers, frame_bytes_max) = (answers.clone(), self.limits.frame_bytes_max);
                    crate::rt::spawn_local(async move {
                        let frame = answer_frame(answer, correlation_id, frame_bytes_max).await;
                        let _ = answers.send_async(frame).await;
                        drop(permit);
                    })
                    .detach();
                }
                Ok(Frame::Response { .. }) => {
                    return self.bad_frame(peer, "an answer sent to the listener".into())
                }
                Err(why) => return self.bad_frame(peer, why),
            }
        }
    }

    /// Counts and logs (rate-limited) a refused frame; the connection closes with this reason.
    fn bad_frame(&self, peer: &str, why: String) -> String {
        bump(&self.counters.bad_frames, 1);
        if let Some(unlogged) = self.bad_frame_log.allow() {
            tracing::warn!(%peer, reason = %why, similar_not_logged = unlogged, "controller listener: bad frame; closing connection");
        }
        why
    }

    fn deliver_raft(&self, msg: Message, peer: &str, on_raft: &RaftHandler) {
        if msg.to != raft_id(self.node_id) {
            bump(&self.counters.bad_frames, 1);
            if let Some(unlogged) = self.bad_frame_log.allow() {
                tracing::warn!(%peer, to = msg.to, own = raft_id(self.node_id), similar_not_logged = unlogged, "controller listener: a raft message for another node (voter lists differ?); dropped");
            }
            return;
        }
        bump(&self.counters.raft_received, 1);
        on_raft(msg);
    }
}

/// The answer frame of a call: the handler's answer, or `Failed` if the handler panicked or
/// its answer does not fit a frame.
async fn answer_frame(
    answer: Pin<Box<dyn Future<Output = ControllerResponse>>>,
    correlation_id: u64,
    frame_bytes_max: usize,
) -> Vec<u8> {
    let response = AssertUnwindSafe(answer)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| ControllerResponse::Failed {
            message: "the call's handler panicked".into(),
        });
    encode_call(KIND_RESPONSE, correlation_id, &response, frame_bytes_max).unwrap_or_else(|why| {
        let failed = ControllerResponse::Failed { message: why };
        encode_call(KIND_RESPONSE, correlation_id, &failed, frame_bytes_max)
            .expect("a short failure fits a frame")
    })
}

/// Writes an inbound connection's answers as they come.
async fn write_answers(
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    answers: flume::Receiver<Vec<u8>>,
) {
    while let Ok(frame) = answers.recv_async().await {
        if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
}

impl ControllerTransport {
    /// Queues `msg` for node `node_id_of(msg.to)`; never blocks. The message is dropped (and
    /// counted) when that peer's queue is full, the peer is not a voter, the message does not
    /// fit a frame, or the transport is stopped.
    pub fn send_raft(&self, msg: Message) {
        let Some(link) = self.link_for(msg.to) else {
            self.dropped(format_args!("no such peer (raft id {})", msg.to));
            return;
        };
        let frame = match encode_raft(&msg, self.limits.frame_bytes_max) {
            Ok(frame) => frame,
            Err(why) => return self.dropped(format_args!("{why}")),
        };
        if !link.push(frame, &self.limits) {
            // Dropping is what keeps a slow or absent peer from growing the queue: Raft
            // resends what matters.
            bump(&self.counters.raft_dropped, 1);
        }
    }

    fn dropped(&self, why: std::fmt::Arguments<'_>) {
        bump(&self.counters.raft_dropped, 1);
        if let Some(unlogged) = self.drop_log.allow() {
            tracing::warn!(reason = %why, similar_not_logged = unlogged, "raft message dropped");
        }
    }

    /// The link to raft id `to`, started on first use; `None` for no known peer or once
    /// stopped.
    fn link_for(&self, to: u64) -> Option<Rc<PeerLink>> {
        if self.stopped.get() || to == 0 || to == raft_id(self.node_id) {
            return None;
        }
        let node_id = node_id_of(to);
        if let Some(link) = self.peers.borrow().get(&node_id) {
            return Some(link.clone());
        }
        let voter = self.voters.iter().find(|v| v.node_id == node_id)?;
        let link = Rc::new(PeerLink {
            node_id,
            addr: voter.addr.clone(),
            queue: RefCell::default(),
            queued_bytes: Cell::new(0),
            waiter: RefCell::default(),
            task: RefCell::default(),
        });
        let task = crate::rt::spawn_local(run_peer(
            link.clone(),
            self.limits.clone(),
            self.counters.clone(),
            self.drop_log.clone(),
        ));
        *link.task.borrow_mut() = Some(task.detach());
        self.peers.borrow_mut().insert(node_id, link.clone());
        Some(link)
    }

    /// What the transport has done so far.
    pub fn stats(&self) -> TransportStats {
        let c = &self.counters;
        TransportStats {
            raft_sent: c.raft_sent.get(),
            raft_dropped: c.raft_dropped.get(),
            raft_received: c.raft_received.get(),
            reconnects: c.reconnects.get(),
            bad_frames: c.bad_frames.get(),
            connections_refused: c.connections_refused.get(),
            calls_served: c.calls_served.get(),
        }
    }

    /// Stops the transport: closes the listener and every connection, ends the peer links
    /// (dropping what they still queue). Later sends are dropped and calls fail with
    /// [`TransportError::Stopped`].
    pub async fn stop(&self) {
        self.stopped.set(true);
        let mut tasks: Vec<crate::rt::JoinHandle<()>> = Vec::new();
        tasks.extend(self.accept_task.borrow_mut().take());
        tasks.extend(self.connections.borrow_mut().drain().map(|(_, task)| task));
        for (_, link) in std::mem::take(&mut *self.peers.borrow_mut()) {
            tasks.extend(link.task.borrow_mut().take());
        }
        self.pool.borrow_mut().clear();
        for task in &tasks {
            task.cancel();
        }
        for task in tasks {
            task.await;
        }
    }
}

/// The outbound task of one peer: connects while there is something to send, writes the
/// queue, reconnects with backoff when the connection fails.
async fn run_peer(
    link: Rc<PeerLink>,
    limits: TransportLimits,
    counters: Rc<Counters>,
    log: Rc<LogLimiter>,
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut connected_before = false;
    loop {
        link.frames_queued().await;
        let stream = match connect(&link.addr, &limits).await {
            Ok(stream) => stream,
            Err(e) => {
                if let Some(unlogged) = log.allow() {
                    tracing::debug!(peer = link.node_id, error = %e, similar_not_logged = unlogged, "raft peer unreachable; retrying");
                }
                crate::rt::sleep(backoff).await;
                backoff = (backoff * 2).min(limits.reconnect_backoff_max);
                continue;
            }
        };
        if connected_before {
            bump(&counters.reconnects, 1);
        }
        connected_before = true;
        let (why, sent_any) = pump(&link, stream, &counters).await;
        tracing::debug!(peer = link.node_id, reason = %why, "raft connection closed");
        if sent_any {
            backoff = RECONNECT_BACKOFF_MIN;
        } else {
            crate::rt::sleep(backoff).await;
            backoff = (backoff * 2).min(limits.reconnect_backoff_max);
        }
    }
}

/// Writes `link`'s queue to `stream` until the connection fails or the peer closes it
/// (nothing is ever sent back on a raft connection). Returns why, and whether anything was
/// written.
async fn pump(link: &PeerLink, stream: TcpStream, counters: &Counters) -> (String, bool) {
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let mut probe = [0u8; 1];
    let mut sent_any = false;
    loop {
        let frames = futures_lite::future::or(
            async {
                link.frames_queued().await;
                None
            },
            async { Some(reader.read(&mut probe).await) },
        )
        .await;
        match frames {
            None => {}
            Some(Ok(0)) => return ("closed by the peer".into(), sent_any),
            Some(Ok(_)) => return ("the peer sent bytes on a raft connection".into(), sent_any),
            Some(Err(e)) => return (format!("read failed: {e}"), sent_any),
        }
        let (batch, count) = link.take_batch();
        let written = async {
            writer.write_all(&batch).await?;
            writer.flush().await
        }
        .await;
        if let Err(e) = written {
            bump(&counters.raft_dropped, count);
            return (format!("write failed: {e}"), sent_any);
        }
        bump(&counters.raft_sent, count);
        sent_any = true;
    }
}

/// How one exchange on a call connection failed.
struct ExchangeError {
    error: TransportError,
    /// The connection failed before any byte of an answer came back (write failed, or the
    /// peer closed it): on a pooled connection, the peer had likely closed it while idle.
    before_answer: bool,
}

/// Sends `frame` (a call with `correlation_id`) on `stream` and reads its answer.
async fn exchange(
    mut stream: TcpStream,
    addr: &str,
    correlation_id: u64,
    frame: &[u8],
    limits: &TransportLimits,
) -> Result<(ControllerResponse, TcpStream), ExchangeError> {
    let io = |e: std::io::Error| ExchangeError {
        error: TransportError::Io {
            addr: addr.into(),
            message: e.to_string(),
        },
        before_answer: true,
    };
    stream.write_all(frame).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut frames = FrameReader {
        reader: &mut stream,
        frame_bytes_max: limits.frame_bytes_max,
        frame_read_timeout: limits.frame_read_timeout,
        idle_timeout: None,
        budget: None,
    };
    let fail = |message: String, before_answer: bool| ExchangeError {
        error: TransportError::BadFrame {
            addr: addr.into(),
            message,
        },
        before_answer,
    };
    let (kind, payload, _) = match frames.next().await {
        Ok(frame) => frame,
        Err(ReadEnd::Closed) => {
            let e = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
            return Err(io(e));
        }
        Err(ReadEnd::Io(message)) => {
            return Err(ExchangeError {
                error: TransportError::Io {
                    addr: addr.into(),
                    message,
                },
                before_answer: true,
            })
        }
        Err(ReadEnd::Idle) => unreachable!("no idle timeout on a call"),
        Err(ReadEnd::Bad(why)) => return Err(fail(why, false)),
    };
    match decode_frame(kind, &payload) {
        Ok(Frame::Response {
            correlation_id: id,
            response,
        }) if id == correlation_id => Ok((response, stream)),
        Ok(Frame::Response {
            correlation_id: id, ..
        }) => Err(fail(
            format!("an answer to call {id}, expected {correlation_id}"),
            false,
        )),
        Ok(_) => Err(fail("a frame other than an answer".into(), false)),
        Err(why) => Err(fail(why, false)),
    }
}

impl ControllerTransport {
    /// Calls the node whose controller listener is `addr` and waits for its answer, at most
    /// `timeout` (connecting included).
    pub async fn call(
        &self,
        addr: &str,
        request: ControllerRequest,
        timeout: Duration,
    ) -> Result<ControllerResponse, TransportError> {
        if self.stopped.get() {
            return Err(TransportError::Stopped);
        }
        let correlation_id = self.next_correlation_id.get();
        self.next_correlation_id.set(correlation_id + 1);
        let frame = encode_call(
            KIND_REQUEST,
            correlation_id,
            &request,
            self.limits.frame_bytes_max,
        )
        .map_err(TransportError::Encode)?;
        timed(timeout, self.call_once(addr, correlation_id, &frame))
            .await
            .unwrap_or_else(|| {
                Err(TransportError::Timeout {
                    addr: addr.into(),
                    after_ms: timeout.as_millis() as u64,
                })
            })
    }

    async fn call_once(
        &self,
        addr: &str,
        correlation_id: u64,
        frame: &[u8],
    ) -> Result<ControllerResponse, TransportError> {
        let pooled = self.pool.borrow_mut().get_mut(addr).and_then(Vec::pop);
        if let Some(stream) = pooled {
            match exchange(stream, addr, correlation_id, frame, &self.limits).await {
                Ok((response, stream)) => {
                    self.pool_put(addr, stream);
                    return Ok(response);
                }
                // Closed while idle in the pool: once more on a new connection.
                Err(e) if e.before_answer => {}
                Err(e) => return Err(e.error),
            }
        }
        let stream = connect(addr, &self.limits).await?;
        let (response, stream) = exchange(stream, addr, correlation_id, frame, &self.limits)
            .await
            .map_err(|e| e.error)?;
        self.pool_put(addr, stream);
        Ok(response)
    }

    /// Keeps `stream` for the next call to `addr`, within the pool's bounds.
    fn pool_put(&self, addr: &str, stream: TcpStream) {
        if self.stopped.get() {
            return;
        }
        let mut pool = self.pool.borrow_mut();
        if !pool.contains_key(addr) && pool.len() >= POOLED_ADDRS_MAX {
            return;
        }
        let idle = pool.entry(addr.to_string()).or_default();
        if idle.len() < self.limits.pooled_connections_per_addr_max {
            idle.push(stream);
        }
    }

    /// Calls the active controller: first `leader_hint`, then whichever node a
    /// `NotController` answer names, else each voter in turn, until `deadline` has passed.
    /// Returns the first answer other than `NotController`.
    pub async fn call_controller(
        &self,
        request: ControllerRequest,
        leader_hint: Option<i32>,
        deadline: Duration,
    ) -> Result<ControllerResponse, TransportError> {
        assert!(!self.voters.is_empty(), "a quorum has voters");
        let end = crate::rt::now() + deadline;
        let mut next = leader_hint;
        let mut turn = 0usize;
        let mut backoff = CONTROLLER_RETRY_BACKOFF_MIN;
        let mut last = String::from("no node tried");
        let mut tried_since_pause = 0usize;
        loop {
            let left = end.saturating_duration_since(crate::rt::now());
            if left.is_zero() {
                return Err(TransportError::NoController {
                    after_ms: deadline.as_millis() as u64,
                    last,
                });
            }
            let target = next.take().unwrap_or_else(|| {
                turn += 1;
                self.voters[(turn - 1) % self.voters.len()].node_id
            });
            let Some(voter) = self.voters.iter().find(|v| v.node_id == target) else {
                last = format!("node {target} is not a voter");
                continue;
            };
            let attempt = left.min(self.limits.call_attempt_timeout);
            match self.call(&voter.addr, request.clone(), attempt).await {
                Ok(ControllerResponse::NotController { leader }) => {
                    last = format!("node {target}: not the controller (leader {leader:?})");
                    next = leader.filter(|&l| l != target);
                }
                Ok(response) => return Ok(response),
                Err(TransportError::Stopped) => return Err(TransportError::Stopped),
                Err(e) => last = format!("node {target}: {e}"),
            }
            tried_since_pause += 1;
            if next.is_none() && tried_since_pause >= self.voters.len() {
                // A round without a controller: an election may be under way; pause a little.
                tried_since_pause = 0;
                let pause = backoff.min(end.saturating_duration_since(crate::rt::now()));
                crate::rt::sleep(pause).await;
                backoff = (backoff * 2).min(CONTROLLER_RETRY_BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests;
