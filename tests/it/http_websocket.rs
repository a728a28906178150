//! WebSocket push streams (issue 17): rdkafka's records arrive as text frames in order, a
//! reconnect with `?last_event_id=` resumes without gap or duplicate, pings are answered,
//! a close is echoed, and hostile frames (unmasked, too large) and handshakes get RFC 6455's
//! answers and a closed connection, never a panic. A raw-socket client.

use crate::common;
use crate::http_console::{create_topics, produce, producer, start, Http};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// A WebSocket client on a raw socket.
struct Ws {
    s: TcpStream,
    buf: Vec<u8>,
}

/// Sends a request head on a new connection and reads the answer's head: (status line and
/// headers, the bytes after them).
fn upgrade(h: &Http, path: &str, extra: &str) -> (TcpStream, String, Vec<u8>) {
    let mut s = TcpStream::connect(&h.http).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("read answer head");
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let rest = buf.split_off(end);
    (s, String::from_utf8(buf).unwrap(), rest)
}

fn stream_path(h: &Http, topic: &str, partition: i32, query: &str) -> String {
    format!(
        "/v3/clusters/{}/topics/{topic}/partitions/{partition}/records/stream{query}",
        h.cluster
    )
}

impl Ws {
    fn open(h: &Http, topic: &str, partition: i32, query: &str) -> Ws {
        let path = stream_path(h, topic, partition, query);
        let (s, head, buf) = upgrade(
            h,
            &path,
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{head}"
        );
        Ws { s, buf }
    }

    /// Sends one frame, masked unless `unmasked`.
    fn send(&mut self, b0: u8, payload: &[u8], unmasked: bool) {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut out = vec![b0];
        let m = if unmasked { 0 } else { 0x80 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n < 65536 => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if unmasked {
            out.extend_from_slice(payload);
        } else {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        self.s.write_all(&out).expect("send frame");
    }

    fn fill(&mut self, need: usize) {
        let mut chunk = [0u8; 65536];
        while self.buf.len() < need {
            let n = self.s.read(&mut chunk).expect("read frame");
            assert!(n > 0, "the stream ended");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame from the server: (opcode, payload). Server frames are never masked.
    fn frame(&mut self) -> (u8, Vec<u8>) {
        self.fill(2);
        assert_eq!(self.buf[0] & 0x80, 0x80, "a final frame");
        assert_eq!(self.buf[1] & 0x80, 0, "server frames are unmasked");
        let (len, at) = match self.buf[1] & 0x7f {
            126 => {
                self.fill(4);
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10);
                (
                    u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                    10,
                )
            }
            n => (n as usize, 2),
        };
        self.fill(at + len);
        let opcode = self.buf[0] & 0x0f;
        let payload = self.buf[at..at + len].to_vec();
        self.buf.drain(..at + len);
        (opcode, payload)
    }

    /// The next record (pings skipped).
    fn record(&mut self) -> Value {
        loop {
            match self.frame() {
                (0x1, text) => return serde_json::from_slice(&text).expect("record JSON"),
                (0x9, _) => continue,
                (op, p) => panic!("opcode {op}: {:?}", String::from_utf8_lossy(&p)),
            }
        }
    }

    /// Reads to the end of the connection (true if it ended within the read timeout).
    fn ends(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.s.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn rdkafka_records_arrive_as_frames_in_order_and_resume_without_gap_or_duplicate() {
    common::within(Duration::from_secs(120), || {
        let h = start(2, "");
        create_topics(&h.broker, &["ws".to_string()], 2);
        let p = producer(&h.broker);
        produce(&p, "ws", 1, &values("a", 50));
        let mut ws = Ws::open(&h, "ws", 1, "?offset=earliest");
        for i in 0..30 {
            let r = ws.record();
            assert_eq!(r["offset"], i);
            assert_eq!(r["partition"], 1);
            assert_eq!(r["value"]["data"], format!("a-{i}"));
            assert_eq!(r["key"]["data"], "k");
        }
        // Reconnect after the record at offset 29, as a client that has it.
        drop(ws);
        let mut ws = Ws::open(&h, "ws", 1, "?last_event_id=1%3A29");
        for i in 30..50 {
            assert_eq!(ws.record()["offset"], i);
        }
        // Caught up, the stream is woken by new records.
        produce(&p, "ws", 1, &values("b", 5));
        for i in 50..55 {
            let r = ws.record();
            assert_eq!(r["offset"], i);
            assert_eq!(r["value"]["data"], format!("b-{}", i - 50));
        }
        // ?offset=N starts there; out of the log is 416 before any upgrade.
        let mut ws = Ws::open(&h, "ws", 1, "?offset=53");
        assert_eq!(ws.record()["offset"], 53);
        let path = stream_path(&h, "ws", 1, "?offset=99");
        let (_, head, _) = upgrade(
            &h,
            &path,
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 416 "), "{head}");
    });
}

#[test]
fn pings_are_answered_a_close_is_echoed_and_bad_frames_close_the_connection() {
    common::within(Duration::from_secs(120), || {
        let h = start(1, "");
        create_topics(&h.broker, &["ctl".to_string()], 1);
        // Ping on a caught-up stream: a pong with the same payload; data frames are ignored.
        let mut ws = Ws::open(&h, "ctl", 0, "");
        ws.send(0x81, b"ignored", false);
        ws.send(0x89, b"are you there", false);
        assert_eq!(ws.frame(), (0xA, b"are you there".to_vec()));
        // Close 1000: echoed, then the connection ends.
        ws.send(0x88, &1000u16.to_be_bytes(), false);
        assert_eq!(ws.frame(), (0x8, 1000u16.to_be_bytes().to_vec()));
        assert!(ws.ends());
        // An unmasked frame: close 1002.
        let mut ws = Ws::open(&h, "ctl", 0, "");
        ws.send(0x89, b"x", true);
        let (op, payload) = ws.frame();
        assert_eq!((op, &payload[..2]), (0x8, &1002u16.to_be_bytes()[..]));
        assert!(ws.ends());
        // A frame over the 4 KiB limit: close 1009 from its header alone.
        let mut ws = Ws::open(&h, "ctl", 0, "");
        // (Only its header is sent: the server must not wait for the payload, and a payload
        // left unread when it closes would reset the connection before the close is read.)
        ws.s.write_all(&[0x82, 0x80 | 126, 0x11, 0x70, 1, 2, 3, 4])
            .unwrap();
        let (op, payload) = ws.frame();
        assert_eq!((op, &payload[..2]), (0x8, &1009u16.to_be_bytes()[..]));
        assert!(ws.ends());
        // Handshakes: another version is 426 naming 13; a bad key is 400.
        let path = stream_path(&h, "ctl", 0, "");
        let (_, head, _) = upgrade(
            &h,
            &path,
            "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 426 "), "{head}");
        assert!(head.contains("Sec-WebSocket-Version: 13\r\n"), "{head}");
        let (_, head, _) = upgrade(
            &h,
            &path,
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        // The broker is still serving.
        produce(&producer(&h.broker), "ctl", 0, &values("c", 1));
        let mut ws = Ws::open(&h, "ctl", 0, "?offset=earliest");
        assert_eq!(ws.record()["value"]["data"], "c-0");
    });
}
