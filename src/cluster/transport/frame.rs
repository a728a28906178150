//! The controller transport's frames (module doc of [`super`], "Frames"): the codec (pure)
//! and the bounded reader of one connection's frames.

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt};
use protobuf::Message as _;
use raft::prelude::Message;

use crate::cluster::{ControllerRequest, ControllerResponse};
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
pub(super) const CORRELATION_ID_BYTES: usize = 8;
/// Inbound bodies up to this size are read without reserving the inbound budget.
const SMALL_BODY_BYTES_MAX: usize = 64 * 1024;

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
pub fn decode_frame(kind: u8, payload: bytes::Bytes) -> Result<Frame, String> {
    if kind == KIND_RAFT {
        // From `Bytes`, protobuf checks each field's length against what is there before it
        // allocates, and the message's byte fields share the payload instead of copying it.
        return Message::parse_from_carllerche_bytes(&payload)
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

pub(super) fn frame_with_header(kind: u8, payload_bytes: usize) -> Vec<u8> {
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

/// `fut`'s output, or `None` if `limit` passes first.
pub(super) async fn timed<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        crate::rt::sleep(limit).await;
        None
    })
    .await
}

/// Why reading frames from a connection stopped.
#[derive(Debug)]
pub(super) enum ReadEnd {
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
pub(super) struct FrameReader<'a, R> {
    pub(super) reader: R,
    pub(super) frame_bytes_max: usize,
    pub(super) frame_read_timeout: Duration,
    /// How long to wait for a frame's first byte (`None`: no limit, the caller has one).
    pub(super) idle_timeout: Option<Duration>,
    /// The inbound budget in KiB, reserved by large bodies before they are read.
    pub(super) budget: Option<&'a Budget>,
}

impl<R: AsyncRead + Unpin> FrameReader<'_, R> {
    /// The next frame's kind and payload, with its reservation of the inbound budget (held
    /// until the caller has decoded it).
    pub(super) async fn next(&mut self) -> Result<(u8, Vec<u8>, Option<StaticPermit>), ReadEnd> {
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
pub(super) struct Budget {
    pub(super) kib: Rc<Semaphore>,
    total_kib: u64,
}

impl Budget {
    pub(super) fn new(bytes: usize) -> Budget {
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
