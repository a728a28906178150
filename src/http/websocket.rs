//! WebSocket (RFC 6455) for push streams: the opening handshake and the frame codec.
//!
//! A stream request (`GET .../partitions/{p}/records/stream`) that asks to upgrade
//! (`Upgrade: websocket`, `Connection: upgrade`, `Sec-WebSocket-Version: 13` and a
//! `Sec-WebSocket-Key` of 16 base64 bytes) is answered `101 Switching Protocols` and then
//! carries the same records as the Server-Sent Events stream, one JSON record per text frame
//! ([`super::stream`] runs both). The resume position is a query parameter: `?offset=N` (the
//! next record to deliver), or `?last_event_id=p:o` (the last record the client has, as SSE's
//! `Last-Event-ID`). A missing or wrong upgrade header is answered 400 (426 for another
//! version, with `Sec-WebSocket-Version: 13`). No origin check and no subprotocol: like the
//! SSE stream's `Access-Control-Allow-Origin: *`, any page may read it (the listener answers
//! 403 to everything while the authorizer is on, unless HTTP authentication is configured).
//!
//! From the client the server takes control frames: a ping is answered with a pong of the same
//! payload, a close with a close (then the connection ends); pongs are ignored. Whole text
//! messages are handed to the stream (a share-group stream takes acknowledgements that way,
//! other streams drop them); binary and fragmented data frames are ignored. Every client frame must be
//! masked and its payload at most [`WS_CLIENT_FRAME_BYTES_MAX`] (control frames at most 125
//! bytes, unfragmented); anything else is a protocol error answered with close 1002 (1009 for
//! a too-large frame) before the connection ends, so the connection holds at most one frame
//! of that size besides the stream's own buffers. The server pings an idle stream every
//! `STREAM_KEEPALIVE`. Server frames are unmasked, unfragmented.

use super::wire::{base64_decode, base64_encode, Head};

/// The largest payload of a frame from the client.
pub const WS_CLIENT_FRAME_BYTES_MAX: usize = 4096;
/// The largest control frame payload (RFC 6455 5.5).
pub const WS_CONTROL_PAYLOAD_BYTES_MAX: usize = 125;
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Frame opcodes.
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close status codes used here.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;

/// Whether the request asks for a WebSocket.
pub fn wants_upgrade(head: &Head) -> bool {
    head.header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64_encode(digest.as_ref())
}

/// Checks an upgrade request: the `101` answer, or `Err((status, message))`.
pub fn handshake(head: &Head) -> Result<Vec<u8>, (u16, String)> {
    if head.method != "GET" {
        return Err((400, "a WebSocket opens with GET".into()));
    }
    let connection_upgrade = head.header("connection").is_some_and(|c| {
        c.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !wants_upgrade(head) || !connection_upgrade {
        return Err((
            400,
            "Upgrade: websocket and Connection: Upgrade needed".into(),
        ));
    }
    if head.header("sec-websocket-version") != Some("13") {
        return Err((426, "only WebSocket version 13".into()));
    }
    let key = head.header("sec-websocket-key").unwrap_or("");
    if base64_decode(key).map(|k| k.len()) != Some(16) {
        return Err((400, "Sec-WebSocket-Key must be 16 bytes in base64".into()));
    }
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )
    .into_bytes())
}

/// Appends one unmasked, final server frame to `out`.
pub fn encode_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// A close frame with `code` and `reason` (cut to fit a control frame).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(WS_CONTROL_PAYLOAD_BYTES_MAX - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    let mut out = Vec::with_capacity(payload.len() + 2);
    encode_frame(OP_CLOSE, &payload, &mut out);
    out
}

/// A frame from the client, unmasked.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Why a client frame is refused: the close code and reason to answer with.
pub type FrameError = (u16, &'static str);

/// Parses the first frame of `buf`: `Ok(None)` while it is incomplete, else the frame and the
/// bytes it took. Refuses (before its payload has arrived) an unmasked frame, reserved bits,
/// an unknown opcode, a fragmented or over-long control frame, or a payload over
/// [`WS_CLIENT_FRAME_BYTES_MAX`].
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    if b0 & 0x70 != 0 {
        return Err((CLOSE_PROTOCOL_ERROR, "reserved bits set"));
    }
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err((CLOSE_PROTOCOL_ERROR, "unknown opcode"));
    }
    if b1 & 0x80 == 0 {
        return Err((CLOSE_PROTOCOL_ERROR, "client frames must be masked"));
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or_default()), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let control = opcode >= OP_CLOSE;
    if control && (!fin || len > WS_CONTROL_PAYLOAD_BYTES_MAX as u64) {
        return Err((CLOSE_PROTOCOL_ERROR, "bad control frame"));
    }
    if len > WS_CLIENT_FRAME_BYTES_MAX as u64 {
        return Err((CLOSE_TOO_BIG, "frame too large"));
    }
    let len = len as usize;
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let mask = [mask[0], mask[1], mask[2], mask[3]];
    at += 4;
    let Some(data) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let payload = data
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        at + len,
    )))
}

/// What the stream must do about the client's frames so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes (pongs) and go on.
    Send(Vec<u8>),
    /// Send these bytes (a close frame) and end the connection.
    Close(Vec<u8>),
    /// A whole (unfragmented) text message from the client: a share stream's
    /// acknowledgements (`super::share`); other streams ignore it.
    Text(Vec<u8>),
}

/// Takes the whole frames at the front of `buf` (removing them): the pongs to send, the close
/// to end with, or one whole text message (after the pongs before it have been answered).
/// `None` while no whole frame is there.
pub fn take_frames(buf: &mut Vec<u8>) -> Option<Reply> {
    let mut pongs = Vec::new();
    loop {
        match parse_frame(buf) {
            Err((code, reason)) => return Some(Reply::Close(close_frame(code, reason))),
            Ok(None) => break,
            Ok(Some((frame, used))) => {
                if frame.opcode == OP_TEXT && frame.fin {
                    if !pongs.is_empty() {
                        // The pongs go first; the text is taken on the next call.
                        break;
                    }
                    buf.drain(..used);
                    return Some(Reply::Text(frame.payload));
                }
                buf.drain(..used);
                match frame.opcode {
                    OP_PING => encode_frame(OP_PONG, &frame.payload, &mut pongs),
                    OP_CLOSE => {
                        // Echo the client's code (RFC 6455 5.5.1), or a normal close.
                        let code = frame
                            .payload
                            .get(..2)
                            .map_or(CLOSE_NORMAL, |c| u16::from_be_bytes([c[0], c[1]]));
                        let sendable = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
                        let code = if sendable { code } else { CLOSE_PROTOCOL_ERROR };
                        return Some(Reply::Close(close_frame(code, "")));
                    }
                    _ => {}
                }
            }
        }
    }
    (!pongs.is_empty()).then_some(Reply::Send(pongs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![b0];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn the_rfc_example_key_is_accepted() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let head = super::super::wire::parse_head(
            "GET /x HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
        let answer = String::from_utf8(handshake(&head).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 101 "));
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        let old = super::super::wire::parse_head(
            "GET /x HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
        assert_eq!(handshake(&old).unwrap_err().0, 426);
        let short_key = super::super::wire::parse_head(
            "GET /x HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abcd\r\n\r\n",
        )
        .unwrap();
        assert_eq!(handshake(&short_key).unwrap_err().0, 400);
    }

    #[test]
    fn server_frames_use_the_three_length_forms() {
        for (len, header) in [(5usize, 2usize), (126, 4), (70_000, 10)] {
            let mut out = Vec::new();
            encode_frame(OP_TEXT, &vec![b'x'; len], &mut out);
            assert_eq!(out.len(), header + len);
            assert_eq!(out[0], 0x81);
        }
        let close = close_frame(1002, &"é".repeat(100));
        assert_eq!(close[1] as usize, close.len() - 2);
        assert!(close.len() - 2 <= WS_CONTROL_PAYLOAD_BYTES_MAX);
        assert!(std::str::from_utf8(&close[4..]).is_ok());
    }

    #[test]
    fn client_frames_parse_and_bad_ones_are_refused() {
        let ping = masked(0x89, b"hi");
        for cut in 0..ping.len() {
            assert_eq!(parse_frame(&ping[..cut]), Ok(None), "cut at {cut}");
        }
        let (frame, used) = parse_frame(&ping).unwrap().unwrap();
        assert_eq!(
            (frame.opcode, frame.payload.as_slice(), used),
            (OP_PING, &b"hi"[..], ping.len())
        );
        let long = masked(0x81, &[b'a'; 300]);
        assert_eq!(parse_frame(&long).unwrap().unwrap().0.payload.len(), 300);
        // Unmasked, reserved bits, unknown opcode, fragmented or long control frames.
        assert_eq!(
            parse_frame(&[0x89, 0x00]).unwrap_err().0,
            CLOSE_PROTOCOL_ERROR
        );
        assert_eq!(
            parse_frame(&[0xC1, 0x80]).unwrap_err().0,
            CLOSE_PROTOCOL_ERROR
        );
        assert_eq!(
            parse_frame(&[0x83, 0x80]).unwrap_err().0,
            CLOSE_PROTOCOL_ERROR
        );
        assert_eq!(
            parse_frame(&masked(0x09, b"")).unwrap_err().0,
            CLOSE_PROTOCOL_ERROR
        );
        assert_eq!(
            parse_frame(&masked(0x89, &[0; 126])).unwrap_err().0,
            CLOSE_PROTOCOL_ERROR
        );
        // Too large: refused from the header alone, whatever the length form.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse_frame(&huge).unwrap_err().0, CLOSE_TOO_BIG);
        assert_eq!(
            parse_frame(&[0x82, 0x80 | 126, 0x10, 0x01]).unwrap_err().0,
            CLOSE_TOO_BIG
        );
    }

    #[test]
    fn pings_are_answered_and_a_close_ends() {
        let mut buf = masked(0x89, b"a");
        buf.extend(masked(0x8A, b"ignored"));
        buf.extend(masked(0x82, b"binary ignored"));
        buf.extend(masked(0x89, b"b"));
        buf.extend(masked(0x81, b"a text"));
        buf.extend(masked(0x89, b"c"));
        buf.extend(&masked(0x88, &1001u16.to_be_bytes())[..3]);
        let mut expected = Vec::new();
        encode_frame(OP_PONG, b"a", &mut expected);
        encode_frame(OP_PONG, b"b", &mut expected);
        // The pongs before a text message first, then the text, then what follows.
        assert_eq!(take_frames(&mut buf), Some(Reply::Send(expected)));
        assert_eq!(take_frames(&mut buf), Some(Reply::Text(b"a text".to_vec())));
        let mut expected = Vec::new();
        encode_frame(OP_PONG, b"c", &mut expected);
        assert_eq!(take_frames(&mut buf), Some(Reply::Send(expected)));
        assert_eq!(buf.len(), 3, "the incomplete close stays buffered");
        assert_eq!(take_frames(&mut buf), None);
        buf.clear();
        buf.extend(masked(0x88, &1001u16.to_be_bytes()));
        assert_eq!(
            take_frames(&mut buf),
            Some(Reply::Close(close_frame(1001, "")))
        );
        let mut bad = vec![0x81, 0x05, b'h'];
        assert!(
            matches!(take_frames(&mut bad), Some(Reply::Close(c)) if c[2..4] == 1002u16.to_be_bytes())
        );
    }
}
