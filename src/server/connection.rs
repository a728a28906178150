//! One client connection: read frames, run requests concurrently, answer in request order.
//!
//! Kafka clients pipeline requests and match responses by order, so the connection keeps a
//! FIFO of in-flight requests. The reader parses a frame, spawns its handler as a local task
//! and queues the task; the writer awaits the queued tasks one by one and writes each answer.
//! Handlers therefore overlap (which is what lets group commit batch a connection's produce
//! requests) while answers leave in order.
//!
//! Memory: an idle connection holds no read buffer (it waits with [`IDLE_READ_BYTES`] of
//! stack). A frame's buffer is allocated once its size has arrived, at most
//! [`FRAME_BUFFER_BYTES_MIN`] at first, and doubles as its bytes arrive (never past the frame
//! plus [`READ_AHEAD_BYTES`]): a client that announces a large request and sends it slowly
//! holds at most twice what it actually sent, plus 4 KiB. The buffer goes to the request's
//! handler and is freed when the request has been answered.
//!
//! Limits: a frame larger than `request_bytes_max` closes the connection (as Kafka does); at
//! most `inflight_requests_per_connection_max` requests wait per connection, and at most
//! `inflight_request_bytes_per_shard_max` bytes of requests per shard. A large request (over
//! [`SMALL_REQUEST_BYTES_MAX`]) reserves its size as soon as its size prefix is known, from the
//! three quarters of the budget that large requests may share; a small one reserves when it is
//! complete. So slow clients announcing large requests can never take the quarter of the budget
//! that keeps small requests (ApiVersions, Metadata, heartbeats) of other clients flowing. At
//! either limit the reader stops reading, so TCP backpressure reaches the client.
//!
//! Produce requests (recognised by the API key in their first bytes) reserve from their own
//! budget instead, `produce_inflight_bytes_per_shard_max` ([`Shard::produce_kib`]): they are
//! the requests that wait for the disk, so a slow or stalled disk fills only that budget and
//! stops reading only the connections that produce; ApiVersions, Metadata, heartbeats and
//! fetches of other connections keep their budget (issue 18).
//!
//! The connection closes when the client closes, sends something unparseable (a TLS
//! ClientHello is recognised and logged as such), a handler asks for it (unknown API key) or
//! panics, the connection idles longer than `connections_max_idle_ms`, or a request does not
//! arrive whole within `request_read_timeout_ms` of its first byte (time spent waiting for the
//! shard's request budget does not count); other connections are never affected.

mod sasl_gate;

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use std::panic::AssertUnwindSafe;

use crate::rt::net::TcpStream;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};

use crate::api::{self, Outcome};
use crate::metrics::ProduceStage;
use crate::protocol::frame::{take_frame, FrameError, SIZE_PREFIX_BYTES};
use crate::protocol::header::{parse_request_header, ParsedRequest};
use crate::security::sasl::SaslServer;
use crate::server::listener::Listener;
use crate::shard::Shard;

/// Bytes read at once while no frame size is known: an idle connection waits with this much in
/// its task and no read buffer. Most requests other than Produce (Fetch, Metadata, heartbeats,
/// commits) fit, so they take one read.
pub const IDLE_READ_BYTES: usize = 512;
/// The first buffer of a frame whose size has arrived holds this much (or the whole frame, if
/// smaller); it then doubles as the frame's bytes arrive.
pub const FRAME_BUFFER_BYTES_MIN: usize = 4 * 1024;
/// Room left past the end of a frame's buffer, so one read also takes the start (or all) of the
/// pipelined requests behind it.
pub const READ_AHEAD_BYTES: usize = 4 * 1024;
/// The most bytes asked of the socket (and zeroed beforehand) by one read.
pub const READ_WINDOW_BYTES_MAX: usize = 256 * 1024;
/// Requests up to this size are small: they reserve the shard's request budget once complete
/// and may use all of it; larger ones reserve on their size prefix and share 3/4 of it.
pub const SMALL_REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Kafka's API key of Produce: such requests reserve from the shard's produce budget.
const PRODUCE_API_KEY: i16 = 0;
/// The first bytes of a TLS handshake record (content type 22, version 3.x).
const TLS_HANDSHAKE_PREFIX: [u8; 2] = [0x16, 0x03];

/// A queued request: its handler task and the shard memory it holds until answered.
struct InFlight {
    /// The outcome, and for a Produce when it was ready (issue 16's `answered` stage).
    answer: crate::rt::JoinHandle<(Outcome, Option<Instant>)>,
    reservation: Reservation,
    /// A request recorded against a client quota: the reader reads nothing more until it has
    /// been answered (its throttle, if any, is then known), as Kafka handles one request of a
    /// channel at a time.
    gated: bool,
}

/// A quota's mute of one connection (Kafka's muted channel): gated requests not yet answered,
/// and until when the last throttle stops the reader. Set by the writer, obeyed by the reader.
#[derive(Default)]
struct Mute {
    gated: std::cell::Cell<u64>,
    until: std::cell::Cell<Option<Instant>>,
    changed: crate::rt::Notify,
}

/// Serves one accepted connection of `listener` until it closes: a TLS listener's connection
/// first completes its TLS handshake ([`serve_tls`]).
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: String, listener: Rc<Listener>) {
    let _ = stream.set_nodelay(true);
    if listener.tls.is_some() {
        // Boxed: the TLS state (kilobytes) must not size every plaintext connection's task.
        return Box::pin(serve_tls(shard, stream, peer, listener)).await;
    }
    let anonymous: Rc<str> = Rc::from(crate::protocol::header::ANONYMOUS_PRINCIPAL);
    serve_stream(shard, stream, peer, anonymous, listener).await
}

/// Serves a connection of a TLS listener: the TLS handshake (within
/// `request_read_timeout_ms`; a failed one closes the connection, logged and counted), then the
/// decrypted stream, whose principal is the client certificate's subject if it sent one.
async fn serve_tls(shard: Rc<Shard>, stream: TcpStream, peer: String, listener: Rc<Listener>) {
    let Some(tls) = &listener.tls else {
        return;
    };
    let timeout = Duration::from_millis(shard.config.request_read_timeout_ms);
    let accepting = tls.acceptor().accept(stream);
    let handshake = futures_lite::future::or(async { Some(accepting.await) }, async {
        crate::rt::sleep(timeout).await;
        None
    })
    .await;
    let stream = match handshake {
        Some(Ok(stream)) => stream,
        Some(Err(e)) => {
            crate::metrics::record_authentication(false);
            tracing::warn!(%peer, listener = %listener.name, error = %e, "TLS handshake failed (a plaintext client on a TLS listener, an untrusted or missing client certificate, or garbage); closing connection");
            return;
        }
        None => {
            tracing::warn!(%peer, listener = %listener.name, "TLS handshake not done within request_read_timeout_ms; closing connection");
            return;
        }
    };
    let principal = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| crate::security::tls::principal_of_certificate(cert))
        .unwrap_or_else(|| crate::protocol::header::ANONYMOUS_PRINCIPAL.to_string());
    if !listener.protocol.sasl() {
        crate::metrics::record_authentication(true);
    }
    tracing::debug!(%peer, %principal, "TLS handshake done");
    serve_stream(shard, stream, peer, Rc::from(principal), listener).await;
}

/// Serves a connection's (plain or decrypted) byte stream: the reader and the writer.
async fn serve_stream<S>(
    shard: Rc<Shard>,
    stream: S,
    peer: String,
    principal: Rc<str>,
    listener: Rc<Listener>,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (reader, writer) = futures_lite::io::split(stream);
    let depth = shard.config.inflight_requests_per_connection_max;
    let (queue_tx, queue_rx) = flume::bounded::<InFlight>(depth);
    let mute: Rc<Mute> = Rc::default();
    let write_task =
        crate::rt::spawn_local(write_loop(writer, queue_rx, peer.clone(), mute.clone()));
    let session = Session {
        principal,
        sasl: listener.protocol.sasl().then(|| listener.sasl_server()),
        listener,
        reauth: sasl_gate::Reauth::default(),
    };
    let why = read_loop(&shard, reader, queue_tx, &peer, session, &mute).await;
    tracing::debug!(%peer, reason = %why, "connection reader done");
    // The writer drains what was queued, then ends when the queue closes.
    write_task.await;
}

/// Who is on the other end of a connection, and how far its SASL authentication got.
struct Session {
    /// `User:ANONYMOUS`, the client certificate's subject, or the SASL user.
    principal: Rc<str>,
    /// The SASL server of a SASL listener until the client has authenticated (then `None`).
    sasl: Option<SaslServer>,
    listener: Rc<Listener>,
    /// The SASL session's expiry and re-authentication state (KIP-368).
    reauth: sasl_gate::Reauth,
}

/// Shard memory reserved for one request, in KiB; given back when dropped (by the writer, once
/// the request has been answered).
struct Reservation {
    shard: Rc<Shard>,
    /// KiB of [`Shard::inflight_kib`].
    kib: u64,
    /// KiB of [`Shard::large_request_kib`] (0 for a small request).
    large_kib: u64,
    /// KiB of [`Shard::produce_kib`] (a Produce request holds only these).
    produce_kib: u64,
    /// How long the request waited for this reservation (counts against its deadline).
    waited: Duration,
}

impl Reservation {
    /// Waits until the shard's request budget has room for a request of `bytes`; a large one
    /// also waits for room in the share large requests may hold. A Produce request (`produce`)
    /// waits for room in the shard's produce budget instead.
    async fn acquire(shard: &Rc<Shard>, bytes: usize, produce: bool) -> Option<Reservation> {
        if produce {
            let total = crate::shard::produce_kib_total(&shard.config);
            let kib = (bytes as u64).div_ceil(1024).clamp(1, total);
            shard.produce_kib.acquire(kib).await.ok()?;
            return Some(Reservation {
                shard: shard.clone(),
                kib: 0,
                large_kib: 0,
                produce_kib: kib,
                waited: Duration::ZERO,
            });
        }
        let total = shard_kib_total(shard);
        let kib = (bytes as u64).div_ceil(1024).clamp(1, total);
        let large_kib = if bytes > SMALL_REQUEST_BYTES_MAX {
            kib.min(crate::shard::large_request_kib_total(total))
        } else {
            0
        };
        // Always large share first, then the whole budget: one order, so no two requests can
        // each hold what the other waits for.
        if large_kib > 0 {
            shard.large_request_kib.acquire(large_kib).await.ok()?;
        }
        let mut reservation = Reservation {
            shard: shard.clone(),
            kib: 0,
            large_kib,
            produce_kib: 0,
            waited: Duration::ZERO,
        };
        shard.inflight_kib.acquire(kib).await.ok()?;
        reservation.kib = kib;
        Some(reservation)
    }
}

impl Reservation {
    /// A reservation of nothing (for a request answered without being handled).
    fn nothing(shard: &Rc<Shard>) -> Reservation {
        Reservation {
            shard: shard.clone(),
            kib: 0,
            large_kib: 0,
            produce_kib: 0,
            waited: Duration::ZERO,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shard.inflight_kib.signal(self.kib);
        self.shard.large_request_kib.signal(self.large_kib);
        self.shard.produce_kib.signal(self.produce_kib);
    }
}

/// How a wait for more bytes from the client ended.
enum ReadEnd {
    Data(std::io::Result<usize>),
    Stopping,
    TimedOut,
}

/// The client host as Kafka prints it (`InetAddress.toString()` of an unresolved address):
/// "/" then the IP, from a peer address "ip:port" or "[ipv6]:port".
fn client_host_of(peer: &str) -> Rc<str> {
    let host = peer.rsplit_once(':').map_or(peer, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Rc::from(format!("/{host}"))
}

/// `buf` with `more` appended, in a buffer of exactly the needed size when it must grow (never
/// the 64 KiB a shared `BytesMut` would reserve).
fn append(buf: &mut BytesMut, more: &[u8]) {
    if buf.capacity() - buf.len() < more.len() {
        let mut bigger = BytesMut::with_capacity(buf.len() + more.len());
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(more);
}

/// Makes room in `buf` for the next read of a frame of `frame_bytes` (size prefix included)
/// that has started arriving: a new buffer once the current one is full, twice as large as what
/// has arrived (at least [`FRAME_BUFFER_BYTES_MIN`], at most the frame plus
/// [`READ_AHEAD_BYTES`]). Returns how many bytes to read.
fn make_room(buf: &mut BytesMut, frame_bytes: usize) -> usize {
    assert!(
        buf.len() < frame_bytes,
        "a complete frame is taken, not read into"
    );
    if buf.capacity() == buf.len() {
        let cap = (2 * buf.len())
            .max(FRAME_BUFFER_BYTES_MIN)
            .min(frame_bytes + READ_AHEAD_BYTES);
        let mut bigger = BytesMut::with_capacity(cap);
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    (buf.capacity() - buf.len()).min(READ_WINDOW_BYTES_MAX)
}

async fn read_loop<R: AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    reader: R,
    queue: flume::Sender<InFlight>,
    peer: &str,
    mut session: Session,
    mute: &Mute,
) -> String {
    let request_bytes_max = shard.config.request_bytes_max;
    let mut frames = FrameReader {
        shard,
        reader,
        peer,
        // Before SASL authentication, Kafka's sasl.server.max.receive.size.
        max: if session.sasl.is_some() {
            request_bytes_max.min(crate::security::sasl::SASL_RECEIVE_BYTES_MAX)
        } else {
            request_bytes_max
        },
        idle: Duration::from_millis(shard.config.connections_max_idle_ms),
        request_timeout: Duration::from_millis(shard.config.request_read_timeout_ms),
        buf: BytesMut::new(),
        small: [0u8; IDLE_READ_BYTES],
        frames_read: 0,
    };
    let client_host = client_host_of(peer);
    loop {
        wait_unmuted(shard, mute).await;
        let (frame, reserved) = match frames.read_frame().await {
            Ok(read) => read,
            Err(why) => return why,
        };
        frames.frames_read += 1;
        if session.sasl.is_none() {
            // KIP-368: a re-authentication begins, or an expired session closes.
            match sasl_gate::reauth_begins(&mut session, &frame, peer) {
                Ok(true) => {
                    frames.max =
                        request_bytes_max.min(crate::security::sasl::SASL_RECEIVE_BYTES_MAX);
                }
                Ok(false) => {}
                Err(why) => return why,
            }
        }
        let frame = if session.sasl.is_some() {
            // Boxed: only connections that authenticate pay for its state.
            let step = Box::pin(sasl_gate::step(shard, &mut session, frame, &queue, peer));
            match step.await {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    if session.sasl.is_none() {
                        frames.max = request_bytes_max;
                    }
                    continue;
                }
                Err(why) => return why,
            }
        } else {
            frame
        };
        let who = (&session.principal, &session.listener.name);
        // A frame read while the answer before it was being throttled waits too.
        wait_unmuted(shard, mute).await;
        if let Err(why) = dispatch(
            shard,
            frame,
            reserved,
            &client_host,
            who,
            (&queue, mute),
            peer,
        )
        .await
        {
            return why;
        }
    }
}

/// The read side of a connection: the socket, the bytes of the frame being read, and the
/// limits on reading it.
struct FrameReader<'a, R> {
    shard: &'a Rc<Shard>,
    reader: R,
    peer: &'a str,
    /// `request_bytes_max`.
    max: usize,
    /// `connections_max_idle_ms`.
    idle: Duration,
    /// `request_read_timeout_ms`.
    request_timeout: Duration,
    /// The bytes of the frame being read (and any read past it); empty, without an allocation,
    /// between requests.
    buf: BytesMut,
    small: [u8; IDLE_READ_BYTES],
    frames_read: u64,
}

impl<R: AsyncRead + Unpin> FrameReader<'_, R> {
    /// Reads until a whole frame is at the front of `buf` and takes it, with the shard memory
    /// reserved for it if it is large. `Err`: why the connection closes.
    async fn read_frame(&mut self) -> Result<(BytesMut, Option<Reservation>), String> {
        let (shard, peer) = (self.shard, self.peer);
        // The shard memory for a large frame at the front of `buf`, reserved as soon as its
        // size is known and before its body is read.
        let mut reserved: Option<Reservation> = None;
        // When the frame's first byte arrived (plus the time spent waiting for the budget):
        // the whole frame must be here request_read_timeout_ms later.
        let mut started: Option<Instant> = (!self.buf.is_empty()).then(Instant::now);
        loop {
            if self.frames_read == 0 && self.buf.starts_with(&TLS_HANDSHAKE_PREFIX) {
                tracing::warn!(%peer, "TLS handshake on a plaintext listener (the client is configured for SSL or SASL_SSL); closing connection");
                return Err("TLS handshake on a plaintext listener".into());
            }
            match take_frame(&mut self.buf, self.max) {
                Ok(Some(frame)) => return Ok((frame, reserved)),
                Ok(None) => {}
                Err(FrameError::TooLarge { size, max }) => {
                    tracing::warn!(%peer, size, max, "request larger than socket.request.max.bytes; closing connection");
                    return Err(format!("frame of {size} bytes exceeds {max}"));
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "bad frame; closing connection");
                    return Err(format!("bad frame: {e}"));
                }
            }
            if self.buf.is_empty() {
                // Between requests: hold no memory.
                self.buf = BytesMut::new();
                if shard.stopping.get() {
                    return Err("broker stopping".into());
                }
            }
            // take_frame has checked the size once its 4 bytes are here.
            let buf = &self.buf;
            let frame_bytes = (buf.len() >= SIZE_PREFIX_BYTES).then(|| {
                i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]).max(0) as usize
                    + SIZE_PREFIX_BYTES
            });
            // A large frame reserves once its API key is here too (which budget it takes).
            if let (Some(frame_bytes), Some(api_key)) = (frame_bytes, api_key_of(buf)) {
                let size = frame_bytes - SIZE_PREFIX_BYTES;
                if size > SMALL_REQUEST_BYTES_MAX && reserved.is_none() {
                    let waiting = Instant::now();
                    let produce = api_key == PRODUCE_API_KEY;
                    match Reservation::acquire(shard, size, produce).await {
                        Some(mut r) => {
                            r.waited = waiting.elapsed();
                            reserved = Some(r);
                        }
                        None => return Err("shard stopping".into()),
                    }
                    if let Some(s) = started.as_mut() {
                        *s += waiting.elapsed();
                    }
                }
            }
            self.read_more(frame_bytes, &mut started).await?;
        }
    }

    /// One read from the socket (into `buf` once the frame's size is known, into `small`
    /// before), bounded by the idle or the request timeout and by the broker stopping.
    async fn read_more(
        &mut self,
        frame_bytes: Option<usize>,
        started: &mut Option<Instant>,
    ) -> Result<(), String> {
        let FrameReader {
            shard,
            reader,
            peer,
            idle,
            request_timeout,
            buf,
            small,
            ..
        } = self;
        let (shard, peer) = (*shard, *peer);
        let limit = match started {
            None => *idle,
            Some(s) => request_timeout.saturating_sub(s.elapsed()),
        };
        let filled = buf.len();
        let window = match frame_bytes {
            Some(frame_bytes) => make_room(buf, frame_bytes),
            None => small.len(),
        };
        // Read into the frame's buffer once its size is known, into `small` before.
        let into_buf = frame_bytes.is_some();
        if into_buf {
            buf.resize(filled + window, 0);
        }
        let target: &mut [u8] = if into_buf {
            &mut buf[filled..]
        } else {
            &mut small[..window]
        };
        let read = read_or_stop(shard, reader, target, filled, limit).await;
        match read {
            ReadEnd::Stopping => return Err("broker stopping".into()),
            ReadEnd::TimedOut if filled == 0 => {
                tracing::debug!(%peer, "idle connection closed (connections_max_idle_ms)");
                return Err("idle timeout".into());
            }
            ReadEnd::TimedOut => {
                tracing::warn!(%peer, received = filled, announced = frame_bytes.unwrap_or(0), "request not received whole within request_read_timeout_ms of its first byte; closing connection");
                return Err("request read timeout".into());
            }
            ReadEnd::Data(Ok(0)) => {
                return Err(if filled == 0 {
                    "closed by client".into()
                } else {
                    "client closed mid-frame".into()
                });
            }
            ReadEnd::Data(Ok(n)) => {
                if into_buf {
                    buf.truncate(filled + n);
                } else {
                    append(buf, &small[..n]);
                }
                started.get_or_insert_with(Instant::now);
            }
            ReadEnd::Data(Err(e)) => return Err(format!("read error: {e}")),
        }
        Ok(())
    }
}

/// Reads from the client into `target`, for `limit` at most; a stopping broker ends the wait
/// while no byte of a frame is here (`filled == 0`).
async fn read_or_stop<R: AsyncRead + Unpin>(
    shard: &Shard,
    reader: &mut R,
    target: &mut [u8],
    filled: usize,
    limit: Duration,
) -> ReadEnd {
    futures_lite::future::or(
        async { ReadEnd::Data(reader.read(target).await) },
        futures_lite::future::or(
            async {
                // A stopping broker stops waiting on idle connections.
                shard.stop.until(|| shard.stopping.get()).await;
                if filled == 0 {
                    ReadEnd::Stopping
                } else {
                    futures_lite::future::pending().await
                }
            },
            async {
                crate::rt::sleep(limit).await;
                ReadEnd::TimedOut
            },
        ),
    )
    .await
}

/// Parses a frame's request header, spawns its handler and queues it for the writer.
/// `Err`: why the connection closes.
async fn dispatch(
    shard: &Rc<Shard>,
    frame: BytesMut,
    reserved: Option<Reservation>,
    client_host: &Rc<str>,
    (principal, listener): (&Rc<str>, &Rc<str>),
    (queue, mute): (&flume::Sender<InFlight>, &Mute),
    peer: &str,
) -> Result<(), String> {
    let frame: Bytes = frame.freeze();
    let frame_bytes = frame.len();
    let mut request = match parse_request_header(frame) {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "unparseable request header; closing connection");
            return Err(format!("bad request header: {e}"));
        }
    };
    request.client_host = client_host.clone();
    request.principal = principal.clone();
    request.listener = listener.clone();
    let queued = Instant::now();
    let (reservation, timed_out) = match reserved {
        Some(r) => (r, false),
        None => reserve(shard, &request, frame_bytes).await?,
    };
    request.queued_for = reservation.waited + queued.elapsed();
    let gated = crate::quota::applies(&shard.metadata().client_quotas, &request);
    mute.gated.set(mute.gated.get() + u64::from(gated));
    let handler_shard = shard.clone();
    let produce = request.api_key == PRODUCE_API_KEY;
    let answer = crate::rt::spawn_local(async move {
        if timed_out {
            return (api::produce::answer_timed_out(&request), None);
        }
        if produce {
            crate::metrics::record_produce_stage(ProduceStage::Queued, queued.elapsed());
        }
        // A bug in one handler must not take the shard (and every other client) down:
        // the panic is logged by the panic hook and only this connection is closed.
        let outcome = AssertUnwindSafe(api::handle(&handler_shard, request))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                crate::metrics::record_handler_panic();
                Outcome::Close("request handler panicked".into())
            });
        (outcome, produce.then(Instant::now))
    })
    .detach();
    if queue
        .send_async(InFlight {
            answer,
            reservation,
            gated,
        })
        .await
        .is_err()
    {
        return Err("writer gone".into());
    }
    Ok(())
}

/// Waits while a quota's throttle mutes the connection (Kafka's muted channel), or a gated
/// request is not answered yet; a stopping broker ends the throttle's wait.
async fn wait_unmuted(shard: &Shard, mute: &Mute) {
    mute.changed.until(|| mute.gated.get() == 0).await;
    while let Some(until) = mute.until.get() {
        let now = Instant::now();
        if now >= until || shard.stopping.get() {
            mute.until.set(None);
            return;
        }
        let stopping = shard.stop.until(|| shard.stopping.get());
        futures_lite::future::or(crate::rt::sleep(until - now), stopping).await;
    }
}

/// Reserves the shard memory for a complete `request` of `bytes`, waiting for room. A Produce
/// waits for room in the produce budget for its `timeout_ms` at most (the wait counts against
/// it, so a stalled disk cannot leave it unanswered): `(_, true)` then, with nothing reserved,
/// and it is answered REQUEST_TIMED_OUT without being handled. `Err`: the shard is stopping.
async fn reserve(
    shard: &Rc<Shard>,
    request: &ParsedRequest,
    bytes: usize,
) -> Result<(Reservation, bool), String> {
    let stopping = || "shard stopping".to_string();
    if request.api_key != PRODUCE_API_KEY {
        let r = Reservation::acquire(shard, bytes, false).await;
        return r.map(|r| (r, false)).ok_or_else(stopping);
    }
    let limit = api::produce::budget_wait_max(request);
    let acquire = Reservation::acquire(shard, bytes, true);
    match limit {
        None => acquire.await.map(|r| (r, false)).ok_or_else(stopping),
        Some(limit) => match crate::rt::timeout(limit, acquire).await {
            Some(r) => r.map(|r| (r, false)).ok_or_else(stopping),
            None => Ok((Reservation::nothing(shard), true)),
        },
    }
}

/// The API key of the frame at the front of `buf` (size prefix included), once its bytes
/// are here.
fn api_key_of(buf: &[u8]) -> Option<i16> {
    buf.get(SIZE_PREFIX_BYTES..SIZE_PREFIX_BYTES + 2)
        .map(|k| i16::from_be_bytes([k[0], k[1]]))
}

fn shard_kib_total(shard: &Shard) -> u64 {
    (shard.config.inflight_request_bytes_per_shard_max / 1024).max(1) as u64
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    queue: flume::Receiver<InFlight>,
    peer: String,
    mute: Rc<Mute>,
) {
    let mut open = true;
    while let Ok(InFlight {
        answer,
        reservation,
        gated,
    }) = queue.recv_async().await
    {
        let (outcome, produce_ready) = match answer.await {
            Some((outcome, ready)) => (Some(outcome), ready),
            None => (None, None),
        };
        drop(reservation);
        if let Some(Outcome::Throttled { throttle_ms, .. }) = &outcome {
            let until = Instant::now() + Duration::from_millis(*throttle_ms);
            mute.until
                .set(Some(mute.until.get().map_or(until, |u| u.max(until))));
        }
        if gated {
            mute.gated.set(mute.gated.get() - 1);
            mute.changed.notify_all();
        }
        if !open {
            continue; // Drain so the reader is never stuck on a full queue.
        }
        match outcome {
            Some(Outcome::Respond(pieces)) => {
                if let Err(e) = write_pieces(&mut writer, &pieces).await {
                    tracing::debug!(%peer, error = %e, "write failed; closing connection");
                    open = false;
                } else if let Some(ready) = produce_ready {
                    crate::metrics::record_produce_stage(ProduceStage::Answered, ready.elapsed());
                }
            }
            Some(Outcome::NoResponse) => {}
            Some(Outcome::Throttled { pieces, .. }) if !pieces.is_empty() => {
                if let Err(e) = write_pieces(&mut writer, &pieces).await {
                    tracing::debug!(%peer, error = %e, "write failed; closing connection");
                    open = false;
                }
            }
            Some(Outcome::Throttled { .. }) => {}
            Some(Outcome::Close(reason)) => {
                tracing::warn!(%peer, %reason, "closing connection");
                open = false;
            }
            None => {
                tracing::error!(%peer, "request handler failed; closing connection");
                open = false;
            }
        }
        if !open {
            let _ = writer.close().await;
        }
    }
    if open {
        let _ = writer.flush().await;
        let _ = writer.close().await;
    }
}

/// Writes a response made of several pieces. Small pieces are gathered into one buffer;
/// large ones (record data) go to the socket as they are, without a copy (glommio has no
/// real vectored write: GLOMMIO.md pitfall 3).
async fn write_pieces<W: AsyncWrite + Unpin>(
    writer: &mut W,
    pieces: &[Bytes],
) -> std::io::Result<()> {
    const GATHER_BYTES_MAX: usize = 16 * 1024;
    let mut gathered = BytesMut::new();
    for piece in pieces {
        if piece.len() <= GATHER_BYTES_MAX {
            gathered.extend_from_slice(piece);
            if gathered.len() >= GATHER_BYTES_MAX {
                writer.write_all(&gathered).await?;
                gathered.clear();
            }
        } else {
            if !gathered.is_empty() {
                writer.write_all(&gathered).await?;
                gathered.clear();
            }
            writer.write_all(piece).await?;
        }
    }
    if !gathered.is_empty() {
        writer.write_all(&gathered).await?;
    }
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame's buffer starts at 4 KiB (less for a smaller frame), doubles only when full, and never
    /// exceeds the frame plus the read-ahead: what a connection holds is at most twice what it
    /// received, plus 4 KiB.
    #[test]
    fn frame_buffers_grow_with_what_arrived() {
        let frame_bytes = 1 << 20;
        let mut buf = BytesMut::new();
        append(&mut buf, &[0, 16, 0, 0, 1]);
        assert_eq!(buf.capacity(), 5);
        let mut received = buf.len();
        let mut capacities = Vec::new();
        while received < frame_bytes {
            let window = make_room(&mut buf, frame_bytes);
            assert!(window > 0 && window <= READ_WINDOW_BYTES_MAX);
            let n = window.min(frame_bytes - received);
            buf.extend_from_slice(&vec![7; n]);
            received += n;
            assert!(
                buf.capacity() <= (2 * received).max(FRAME_BUFFER_BYTES_MIN) + READ_AHEAD_BYTES
            );
            capacities.push(buf.capacity());
        }
        assert_eq!(capacities[0], FRAME_BUFFER_BYTES_MIN);
        let last = *capacities.last().unwrap();
        assert!((frame_bytes..=frame_bytes + READ_AHEAD_BYTES).contains(&last));
        // A small frame gets its whole size (plus read-ahead) at once.
        let mut small = BytesMut::new();
        append(&mut small, &[0, 0, 0, 100, 1, 2]);
        make_room(&mut small, 104);
        assert_eq!(small.capacity(), FRAME_BUFFER_BYTES_MIN);
        assert_eq!(&small[..], &[0, 0, 0, 100, 1, 2]);
    }
}
