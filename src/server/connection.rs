//! One client connection: read frames, run requests concurrently, answer in request order.
//!
//! Kafka clients pipeline requests and match responses by order, so the connection keeps a
//! FIFO of in-flight requests. The reader parses a frame, spawns its handler as a local task
//! and queues the task; the writer awaits the queued tasks one by one and writes each answer.
//! Handlers therefore overlap (which is what lets group commit batch a connection's produce
//! requests) while answers leave in order.
//!
//! Limits: a frame larger than `request_bytes_max` closes the connection (as Kafka does); at
//! most `inflight_requests_per_connection_max` requests wait per connection, and at most
//! `inflight_request_bytes_per_shard_max` bytes of requests per shard, reserved as soon as a
//! frame's size is known, before its body is read; at either limit the reader stops reading, so
//! TCP backpressure reaches the client.
//!
//! The connection closes when the client closes, sends something unparseable, a handler asks
//! for it (unknown API key) or panics, the connection idles longer than
//! `connections_max_idle_ms`, or a started request stalls longer than
//! `request_read_timeout_ms`; other connections are never affected.

use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use std::panic::AssertUnwindSafe;

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;

use crate::api::{self, Outcome};
use crate::protocol::frame::{take_frame, FrameError};
use crate::protocol::header::parse_request_header;
use crate::shard::Shard;

/// Bytes asked of the socket per read when no frame size is known yet.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A queued request: its handler task and the shard memory it holds until answered.
struct InFlight {
    answer: glommio::task::JoinHandle<Outcome>,
    kib: u64,
}

/// Serves one accepted connection until it closes.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: String) {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = futures_lite::io::split(stream);
    let depth = shard.config.inflight_requests_per_connection_max;
    let (queue_tx, queue_rx) = flume::bounded::<InFlight>(depth);
    let write_task =
        glommio::spawn_local(write_loop(shard.clone(), writer, queue_rx, peer.clone()));
    let why = read_loop(&shard, reader, queue_tx, &peer).await;
    tracing::debug!(%peer, reason = %why, "connection reader done");
    // The writer drains what was queued, then ends when the queue closes.
    write_task.await;
}

/// Shard memory reserved for one request, in KiB; given back when dropped.
struct Reservation<'a> {
    shard: &'a Shard,
    kib: u64,
}

impl<'a> Reservation<'a> {
    /// Waits until the shard's request budget has room for `bytes`.
    async fn acquire(shard: &'a Shard, bytes: usize) -> Option<Reservation<'a>> {
        let kib = (bytes as u64)
            .div_ceil(1024)
            .clamp(1, shard_kib_total(shard));
        shard.inflight_kib.acquire(kib).await.ok()?;
        Some(Reservation { shard, kib })
    }

    /// Hands the reservation over to whoever will give it back (the writer).
    fn into_kib(self) -> u64 {
        let kib = self.kib;
        std::mem::forget(self);
        kib
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.shard.inflight_kib.signal(self.kib);
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

async fn read_loop(
    shard: &Rc<Shard>,
    mut reader: futures_lite::io::ReadHalf<TcpStream>,
    queue: flume::Sender<InFlight>,
    peer: &str,
) -> String {
    let max = shard.config.request_bytes_max;
    let idle = Duration::from_millis(shard.config.connections_max_idle_ms);
    let stall = Duration::from_millis(shard.config.request_read_timeout_ms);
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let client_host = client_host_of(peer);
    loop {
        // The shard memory for the frame at the front of `buf`, reserved as soon as its size is
        // known and before its body is read, so a shard never holds more request bytes than
        // its budget (plus one read chunk per connection).
        let mut reserved: Option<Reservation> = None;
        let frame = loop {
            match take_frame(&mut buf, max) {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(FrameError::TooLarge { size, max }) => {
                    tracing::warn!(%peer, size, max, "request larger than socket.request.max.bytes; closing connection");
                    return format!("frame of {size} bytes exceeds {max}");
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "bad frame; closing connection");
                    return format!("bad frame: {e}");
                }
            }
            if shard.stopping.get() && buf.is_empty() {
                return "broker stopping".into();
            }
            // take_frame has checked the size once its 4 bytes are here.
            let announced = if buf.len() >= 4 {
                i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]).max(0) as usize + 4
            } else {
                0
            };
            if announced > 0 && reserved.is_none() {
                match Reservation::acquire(shard, announced - 4).await {
                    Some(r) => reserved = Some(r),
                    None => return "shard stopping".into(),
                }
            }
            // Grow the buffer for the frame being read, never past what was announced.
            let want = announced
                .saturating_sub(buf.len())
                .clamp(READ_CHUNK_BYTES, 1 << 20);
            let filled = buf.len();
            buf.resize(filled + want, 0);
            // Between requests a connection may idle up to connections_max_idle_ms; once a
            // request has started, its bytes must keep coming within request_read_timeout_ms.
            let limit = if filled == 0 { idle } else { stall };
            let read = futures_lite::future::or(
                async { ReadEnd::Data(reader.read(&mut buf[filled..]).await) },
                futures_lite::future::or(
                    async {
                        // A stopping broker stops waiting on idle connections.
                        while !shard.stopping.get() {
                            shard.stop.wait().await;
                        }
                        if filled == 0 {
                            ReadEnd::Stopping
                        } else {
                            futures_lite::future::pending().await
                        }
                    },
                    async {
                        glommio::timer::sleep(limit).await;
                        ReadEnd::TimedOut
                    },
                ),
            )
            .await;
            match read {
                ReadEnd::Stopping => return "broker stopping".into(),
                ReadEnd::TimedOut if filled == 0 => {
                    tracing::debug!(%peer, "idle connection closed (connections_max_idle_ms)");
                    return "idle timeout".into();
                }
                ReadEnd::TimedOut => {
                    tracing::warn!(%peer, received = filled, announced, "request not completed within request_read_timeout_ms; closing connection");
                    return "request read timeout".into();
                }
                ReadEnd::Data(Ok(0)) => {
                    return if filled == 0 {
                        "closed by client".into()
                    } else {
                        "client closed mid-frame".into()
                    };
                }
                ReadEnd::Data(Ok(n)) => buf.truncate(filled + n),
                ReadEnd::Data(Err(e)) => return format!("read error: {e}"),
            }
        };
        let frame: Bytes = frame.freeze();
        let reservation = match reserved {
            Some(r) => r,
            None => match Reservation::acquire(shard, frame.len()).await {
                Some(r) => r,
                None => return "shard stopping".into(),
            },
        };
        let mut request = match parse_request_header(frame) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "unparseable request header; closing connection");
                return format!("bad request header: {e}");
            }
        };
        request.client_host = client_host.clone();
        let handler_shard = shard.clone();
        let answer = glommio::spawn_local(async move {
            // A bug in one handler must not take the shard (and every other client) down:
            // the panic is logged by the panic hook and only this connection is closed.
            AssertUnwindSafe(api::handle(&handler_shard, request))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    crate::metrics::record_handler_panic();
                    Outcome::Close("request handler panicked".into())
                })
        })
        .detach();
        let kib = reservation.into_kib();
        if queue.send_async(InFlight { answer, kib }).await.is_err() {
            shard.inflight_kib.signal(kib);
            return "writer gone".into();
        }
    }
}

fn shard_kib_total(shard: &Shard) -> u64 {
    (shard.config.inflight_request_bytes_per_shard_max / 1024).max(1) as u64
}

async fn write_loop(
    shard: Rc<Shard>,
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    queue: flume::Receiver<InFlight>,
    peer: String,
) {
    let mut open = true;
    while let Ok(InFlight { answer, kib }) = queue.recv_async().await {
        let outcome = answer.await;
        shard.inflight_kib.signal(kib);
        if !open {
            continue; // Drain so the reader is never stuck on a full queue.
        }
        match outcome {
            Some(Outcome::Respond(pieces)) => {
                if let Err(e) = write_pieces(&mut writer, &pieces).await {
                    tracing::debug!(%peer, error = %e, "write failed; closing connection");
                    open = false;
                }
            }
            Some(Outcome::NoResponse) => {}
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
async fn write_pieces(
    writer: &mut futures_lite::io::WriteHalf<TcpStream>,
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
