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
//!   `on_raft` callback as they arrive. What became of each snapshot message (written to the
//!   peer's socket, or lost) goes to the [`SnapshotReport`] hook, which raft-rs's leader needs
//!   (`report_snapshot`) before it sends that follower anything again.
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
//! - answers: per inbound connection at most `inflight_calls_per_connection_max` being
//!   computed and as many waiting for the writer, which encodes them one at a time (a peer
//!   that does not read holds one encoded answer; its writes fail after `write_timeout`);
//! - per peer, at most `peer_queue_messages_max` messages and `peer_queue_bytes_max` bytes
//!   wait to be sent;
//! - calls made: one call at a time per connection, at most
//!   `pooled_connections_per_addr_max` idle connections kept per address (16 addresses); an
//!   answer is read within the call's timeout and at most `frame_bytes_max`.
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
//! - A call on a pooled connection that turns out closed before any answer came (the peer
//!   restarted or timed it out) is retried once on a fresh connection; every other failure is
//!   the caller's. (A peer that ran the call and then died unanswered gets it twice: a
//!   forwarded change is then met by its own first attempt, as with any retried forward.)
//!
//! The listener is bound with a plain socket (no SO_REUSEPORT: a second process cannot share
//! the port silently); [`ControllerTransport::serve_waiting`] waits out a port still held by
//! a node just killed with -9 (io_uring's teardown), but not one a live node answers on.
//!
//! Files: this one holds the transport (listener, calls, stop, stats); `frame.rs` the frame
//! codec and the bounded frame reader; `peer.rs` the outbound raft link to one peer;
//! `secure.rs` mutual TLS; tests in
//! `tests.rs` (and `tests/it/cluster_transport.rs`: a raft quorum over real transports).
//!
//! ## Security
//! Plaintext by default: anyone who reaches the listener can forward any metadata change
//! (ACLs and SCRAM users included), read the whole metadata and heartbeat as any node, so it
//! belongs on a network only the cluster's nodes reach. With a [`TransportSecurity`]
//! ([`ControllerTransport::with_security`]; Kafka's SSL controller listener,
//! `controller_listener_names`) every connection is mutual TLS (`secure.rs`): the listener
//! requires a client certificate of the CA, outbound links present the node's certificate and
//! verify the peer's (CA and host), and on both sides the peer's principal must pass the
//! [`Admit`] hook (the node's: super user or CLUSTER_ACTION on the cluster) or the connection
//! is closed before any frame is read, counted ([`TransportStats`], `/metrics`) and logged.
//! No SASL on this transport.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncWriteExt, FutureExt};
use raft::prelude::Message;

mod frame;
mod peer;
mod secure;

pub use frame::{
    decode_frame, encode_call, encode_raft, parse_header, Frame, CONTROLLER_FRAME_BYTES_MAX,
    FRAME_HEADER_BYTES, KIND_RAFT, KIND_REQUEST, KIND_RESPONSE,
};
use frame::{timed, Budget, FrameReader, ReadEnd, CORRELATION_ID_BYTES};
use peer::{run_peer, PeerLink};
pub use secure::{Admit, CtrlStream, Refusal, TransportSecurity, HANDSHAKE_TIMEOUT_DEFAULT};

use super::{node_id_of, raft_id, ControllerRequest, ControllerResponse, Voter};
use crate::rt::net::TcpStream;
use crate::rt::sync::Semaphore;
use crate::rt::LogLimiter;

/// The read buffer of an inbound connection.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// At most one log line per this interval for each kind of repeated trouble.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Back-off after a failed accept, so the loop never spins.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// First pause of `call_controller` between rounds that found no controller; doubles to
/// [`CONTROLLER_RETRY_BACKOFF_MAX`].
const CONTROLLER_RETRY_BACKOFF_MIN: Duration = Duration::from_millis(20);
const CONTROLLER_RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How long `stop` waits for the reactor to close the transport's sockets.
const SOCKET_CLOSE_WAIT: Duration = Duration::from_millis(10);
/// How long `serve_waiting` waits for an answer from a listener holding its address.
const BIND_PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Pause between `serve_waiting`'s binds.
const BIND_RETRY_INTERVAL: Duration = Duration::from_millis(50);
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
    /// TLS connections (either side) whose handshake failed or timed out: no certificate,
    /// one from another CA, a plaintext peer.
    pub tls_handshake_failures: u64,
    /// TLS connections (either side) whose peer's principal may not use the transport.
    pub peers_not_authorized: u64,
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

fn bind_error(addr: SocketAddr, e: std::io::Error) -> TransportError {
    TransportError::Bind {
        addr,
        message: e.to_string(),
    }
}

/// What became of a snapshot message: `(raft id of the peer, written to its socket)`.
/// raft-rs's leader waits for it (`RawNode::report_snapshot`: `Finish` when written,
/// `Failure` when lost) before it sends that follower anything again.
pub type SnapshotReport = Rc<dyn Fn(u64, bool)>;
/// What the listener does with an inbound raft message (must not block).
pub type RaftHandler = Rc<dyn Fn(Message)>;
/// What the listener does with an inbound call: the answer, sent back on its connection.
pub type CallHandler =
    Rc<dyn Fn(ControllerRequest) -> Pin<Box<dyn Future<Output = ControllerResponse>>>>;

#[derive(Default)]
struct Counters {
    raft_sent: Cell<u64>,
    raft_dropped: Cell<u64>,
    raft_received: Cell<u64>,
    reconnects: Cell<u64>,
    bad_frames: Cell<u64>,
    connections_refused: Cell<u64>,
    calls_served: Cell<u64>,
    tls_handshake_failures: Cell<u64>,
    peers_not_authorized: Cell<u64>,
}

fn bump(counter: &Cell<u64>, by: u64) {
    counter.set(counter.get() + by);
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

/// What an outbound connection needs besides its address: the limits, and with TLS the
/// settings and where a refusal is counted and logged.
struct Dialer {
    limits: TransportLimits,
    security: Option<Rc<TransportSecurity>>,
    counters: Rc<Counters>,
    /// Refused TLS connections are logged per reason (a flood of failed handshakes does not
    /// hide the principal refused next).
    handshake_log: LogLimiter,
    not_authorized_log: LogLimiter,
}

impl Dialer {
    /// A connection to `addr` with the transport's socket options, TLS when configured.
    async fn connect(&self, addr: &str) -> Result<CtrlStream, TransportError> {
        let ip = resolve(addr).await?;
        let stream = crate::rt::net::connect(ip, self.limits.connect_timeout)
            .await
            .map_err(|e| TransportError::Connect {
                addr: addr.into(),
                message: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(self.limits.write_timeout));
        let Some(security) = &self.security else {
            return Ok(CtrlStream::Plain(stream));
        };
        match security.connect(stream, addr, &ip.ip().to_string()).await {
            Ok(stream) => Ok(stream),
            Err(refusal) => {
                if let Some(unlogged) = self.count_refusal(&refusal) {
                    tracing::warn!(peer = %addr, reason = %refusal, similar_not_logged = unlogged, "controller transport: outbound connection refused; closing it");
                }
                Err(TransportError::Connect {
                    addr: addr.into(),
                    message: refusal.to_string(),
                })
            }
        }
    }
}

impl Dialer {
    /// Counts a refused TLS connection in the transport's stats and the process's metrics;
    /// `Some(similar lines not logged)` when it may be logged now.
    fn count_refusal(&self, refusal: &Refusal) -> Option<u64> {
        use crate::metrics::{record_controller_refusal, ControllerRefusal};
        match refusal {
            Refusal::Handshake(_) => {
                bump(&self.counters.tls_handshake_failures, 1);
                record_controller_refusal(ControllerRefusal::Tls);
                self.handshake_log.allow()
            }
            Refusal::NotAuthorized { .. } => {
                bump(&self.counters.peers_not_authorized, 1);
                record_controller_refusal(ControllerRefusal::NotAuthorized);
                self.not_authorized_log.allow()
            }
        }
    }
}

/// The node's controller transport (module doc). Lives on the coordinator shard (shard 0),
/// `Rc`-held and `!Send`: created when the node takes its quorum role, [`Self::stop`]ped when
/// it stops. Its tasks hold it: dropping it without `stop` leaves the listener serving.
pub struct ControllerTransport {
    node_id: i32,
    voters: Vec<Voter>,
    limits: TransportLimits,
    counters: Rc<Counters>,
    /// Outbound connections (limits, TLS).
    dialer: Rc<Dialer>,
    stopped: Cell<bool>,
    /// Outbound raft links, made on the first message to each peer.
    peers: RefCell<BTreeMap<i32, Rc<PeerLink>>>,
    /// Idle call connections per address.
    pool: RefCell<HashMap<String, Vec<CtrlStream>>>,
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
    snapshot_report: Rc<RefCell<Option<SnapshotReport>>>,
}

impl ControllerTransport {
    /// A transport for node `node_id` among `voters` (its peers for raft messages and the
    /// nodes `call_controller` tries). Serves nothing until [`Self::serve`].
    pub fn new(node_id: i32, voters: Vec<Voter>, limits: TransportLimits) -> Rc<Self> {
        Self::with_security(node_id, voters, limits, None)
    }

    /// [`Self::new`], with mutual TLS on the listener and on every outbound connection when
    /// `security` is given (module doc, "Security").
    pub fn with_security(
        node_id: i32,
        voters: Vec<Voter>,
        limits: TransportLimits,
        security: Option<TransportSecurity>,
    ) -> Rc<Self> {
        assert!(limits.frame_bytes_max > CORRELATION_ID_BYTES);
        assert!(
            limits.connections_accepted_max > 0 && limits.inflight_calls_per_connection_max > 0
        );
        let counters: Rc<Counters> = Rc::default();
        let dialer = Rc::new(Dialer {
            limits: limits.clone(),
            security: security.map(Rc::new),
            counters: counters.clone(),
            handshake_log: LogLimiter::new(LOG_INTERVAL),
            not_authorized_log: LogLimiter::new(LOG_INTERVAL),
        });
        Rc::new(ControllerTransport {
            node_id,
            voters,
            budget: Budget::new(limits.inbound_buffered_bytes_max),
            limits,
            counters,
            dialer,
            stopped: Cell::new(false),
            peers: RefCell::default(),
            pool: RefCell::default(),
            accept_task: RefCell::default(),
            connections: RefCell::default(),
            next_connection: Cell::new(0),
            next_correlation_id: Cell::new(1),
            local_addr: Cell::new(None),
            bad_frame_log: LogLimiter::new(LOG_INTERVAL),
            refused_log: LogLimiter::new(LOG_INTERVAL),
            drop_log: Rc::new(LogLimiter::new(LOG_INTERVAL)),
            snapshot_report: Rc::default(),
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
        let listener = std::net::TcpListener::bind(addr).map_err(|e| bind_error(addr, e))?;
        self.serve_listener(listener, on_raft, on_call)
    }

    /// [`Self::serve`], but while `addr` is taken by a listener that does not answer calls
    /// (the socket of a node just killed with -9, still held by the kernel's io_uring
    /// teardown), retries for up to `wait_max`. A listener that answers is a live node: the
    /// bind error is returned at once.
    pub async fn serve_waiting(
        self: &Rc<Self>,
        addr: SocketAddr,
        on_raft: RaftHandler,
        on_call: CallHandler,
        wait_max: Duration,
    ) -> Result<(), TransportError> {
        let started = crate::rt::now();
        loop {
            let e = match std::net::TcpListener::bind(addr) {
                Ok(listener) => return self.serve_listener(listener, on_raft, on_call),
                Err(e) => e,
            };
            if e.kind() != std::io::ErrorKind::AddrInUse || started.elapsed() >= wait_max {
                return Err(bind_error(addr, e));
            }
            let target = addr.to_string();
            let request = ControllerRequest::DescribeQuorum;
            if self
                .call(&target, request, BIND_PROBE_TIMEOUT)
                .await
                .is_ok()
            {
                return Err(bind_error(addr, e)); // a live node's listener
            }
            crate::rt::sleep(BIND_RETRY_INTERVAL).await;
        }
    }

    fn serve_listener(
        self: &Rc<Self>,
        std_listener: std::net::TcpListener,
        on_raft: RaftHandler,
        on_call: CallHandler,
    ) -> Result<(), TransportError> {
        assert!(self.accept_task.borrow().is_none(), "serve is called once");
        if self.stopped.get() {
            return Err(TransportError::Stopped);
        }
        let addr = std_listener
            .local_addr()
            .map_err(|e| bind_error(SocketAddr::from(([0, 0, 0, 0], 0)), e))?;
        self.local_addr.set(Some(addr));
        let listener = crate::rt::net::listener_from_fd(std::os::fd::OwnedFd::from(std_listener));
        tracing::info!(node = self.node_id, %addr, "controller listener");
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
                let why = match me.secure_inbound(stream, &peer).await {
                    Some(stream) => me.serve_connection(stream, &peer, on_raft, on_call).await,
                    None => "refused".into(),
                };
                tracing::debug!(%peer, reason = %why, "controller connection closed");
                me.connections.borrow_mut().remove(&id);
            });
            self.connections.borrow_mut().insert(id, task.detach());
        }
    }

    /// A new inbound connection from `peer` as it is served: plain, or after its TLS
    /// handshake and its principal's check; `None` (counted and logged) when refused.
    async fn secure_inbound(&self, stream: TcpStream, peer: &str) -> Option<CtrlStream> {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(self.limits.write_timeout));
        let Some(security) = &self.dialer.security else {
            return Some(CtrlStream::Plain(stream));
        };
        let ip = secure::host_of(peer).to_string();
        match security.accept(stream, &ip).await {
            Ok(stream) => Some(stream),
            Err(refusal) => {
                if let Some(unlogged) = self.dialer.count_refusal(&refusal) {
                    tracing::warn!(%peer, reason = %refusal, similar_not_logged = unlogged, "controller listener: connection refused; closing it");
                }
                None
            }
        }
    }

    /// Serves one inbound connection until it closes; returns why.
    async fn serve_connection(
        &self,
        stream: CtrlStream,
        peer: &str,
        on_raft: RaftHandler,
        on_call: CallHandler,
    ) -> String {
        // On TLS, the peer's principal is checked again for every frame, as Kafka checks
        // each request: an ACL removed takes effect on open connections.
        let principal = stream.peer_principal();
        let ip = secure::host_of(peer).to_string();
        let (reader, writer) = futures_lite::io::split(stream);
        let mut frames = FrameReader {
            reader: futures_lite::io::BufReader::with_capacity(READ_BUFFER_BYTES, reader),
            frame_bytes_max: self.limits.frame_bytes_max,
            frame_read_timeout: self.limits.frame_read_timeout,
            idle_timeout: Some(self.limits.idle_timeout),
            budget: Some(&self.budget),
        };
        let depth = self.limits.inflight_calls_per_connection_max;
        // Answers are encoded by the writer, one at a time: a peer that does not read holds
        // at most one encoded answer, plus `depth` waiting here and `depth` being computed.
        let (answers, answers_rx) = flume::bounded::<(u64, ControllerResponse)>(depth);
        // Dropped (cancelled) when this function returns: answers still running are lost
        // with the connection.
        let frame_bytes_max = self.limits.frame_bytes_max;
        let _writer = crate::rt::spawn_local(write_answers(writer, answers_rx, frame_bytes_max));
        let calls = Rc::new(Semaphore::new(depth as u64));
        loop {
            let (kind, payload, permit) = match frames.next().await {
                Ok(frame) => frame,
                Err(ReadEnd::Closed) => return "closed by the peer".into(),
                Err(ReadEnd::Idle) => return "idle".into(),
                Err(ReadEnd::Io(e)) => return format!("read failed: {e}"),
                Err(ReadEnd::Bad(why)) => return self.bad_frame(peer, why),
            };
            if let (Some(security), Some(principal)) = (&self.dialer.security, &principal) {
                if let Err(why) = (security.admit)(principal, &ip) {
                    let refusal = Refusal::NotAuthorized {
                        principal: principal.clone(),
                        why,
                    };
                    if let Some(unlogged) = self.dialer.count_refusal(&refusal) {
                        tracing::warn!(%peer, reason = %refusal, similar_not_logged = unlogged, "controller listener: peer no longer authorized; closing its connection");
                    }
                    return refusal.to_string();
                }
            }
            let frame = decode_frame(kind, bytes::Bytes::from(payload));
            drop(permit);
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
                    let answers = answers.clone();
                    crate::rt::spawn_local(async move {
                        let response = AssertUnwindSafe(answer).catch_unwind().await;
                        let response = response.unwrap_or_else(|_| ControllerResponse::Failed {
                            message: "the call's handler panicked".into(),
                        });
                        let _ = answers.send_async((correlation_id, response)).await;
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

/// The answer frame of a call, or a `Failed` answer when it does not fit a frame.
fn answer_frame(
    correlation_id: u64,
    response: &ControllerResponse,
    frame_bytes_max: usize,
) -> Vec<u8> {
    encode_call(KIND_RESPONSE, correlation_id, response, frame_bytes_max).unwrap_or_else(|why| {
        let failed = ControllerResponse::Failed { message: why };
        encode_call(KIND_RESPONSE, correlation_id, &failed, frame_bytes_max)
            .expect("a short failure fits a frame")
    })
}

/// Writes an inbound connection's answers as they come.
async fn write_answers(
    mut writer: futures_lite::io::WriteHalf<CtrlStream>,
    answers: flume::Receiver<(u64, ControllerResponse)>,
    frame_bytes_max: usize,
) {
    while let Ok((correlation_id, response)) = answers.recv_async().await {
        let frame = answer_frame(correlation_id, &response, frame_bytes_max);
        drop(response);
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
        let snapshot = msg.get_msg_type() == raft::prelude::MessageType::MsgSnapshot;
        let queued = match encode_raft(&msg, self.limits.frame_bytes_max) {
            Ok(frame) => link.push(frame, snapshot, &self.limits),
            Err(why) => {
                if let Some(unlogged) = self.drop_log.allow() {
                    tracing::warn!(reason = %why, similar_not_logged = unlogged, "raft message dropped");
                }
                false
            }
        };
        if !queued {
            // Dropping is what keeps a slow or absent peer from growing the queue: Raft
            // resends what matters.
            bump(&self.counters.raft_dropped, 1);
            if snapshot {
                let link = link.clone();
                crate::rt::spawn_local(async move { link.report_snapshots(1, false) }).detach();
            }
        }
    }

    /// Sets the hook told what became of each snapshot message sent (see
    /// [`SnapshotReport`]); it runs on a task of the transport, never inside `send_raft`.
    pub fn on_snapshot_sent(&self, report: SnapshotReport) {
        *self.snapshot_report.borrow_mut() = Some(report);
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
            report: self.snapshot_report.clone(),
        });
        let task = crate::rt::spawn_local(run_peer(
            link.clone(),
            self.dialer.clone(),
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
            tls_handshake_failures: c.tls_handshake_failures.get(),
            peers_not_authorized: c.peers_not_authorized.get(),
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
        // The reactor closes sockets asynchronously: let it run the closes, so that the
        // listener's address can be bound again as soon as stop returns.
        crate::rt::sleep(SOCKET_CLOSE_WAIT).await;
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
    mut stream: CtrlStream,
    addr: &str,
    correlation_id: u64,
    frame: &[u8],
    limits: &TransportLimits,
) -> Result<(ControllerResponse, CtrlStream), ExchangeError> {
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
    match decode_frame(kind, bytes::Bytes::from(payload)) {
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
        let stream = self.dialer.connect(addr).await?;
        let (response, stream) = exchange(stream, addr, correlation_id, frame, &self.limits)
            .await
            .map_err(|e| e.error)?;
        self.pool_put(addr, stream);
        Ok(response)
    }

    /// Keeps `stream` for the next call to `addr`, within the pool's bounds.
    fn pool_put(&self, addr: &str, stream: CtrlStream) {
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
