//! Tests of the controller transport: the frame codec (pure, and fuzzed with proptest), then
//! real transports on 127.0.0.1 inside real glommio executors, with raw sockets for hostile
//! peers.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use proptest::prelude::*;
use protobuf::Message as _;
use raft::prelude::{Entry, Message, MessageType, Snapshot};

use super::*;
use crate::cluster::{raft_id, BrokerHeartbeat, QuorumStatus};

fn run<T>(test: impl Future<Output = T>) -> T {
    crate::rt::run_on_new_executor(1 << 20, 64, test).expect("a glommio executor")
}

/// A port nothing listens on right now (bound to port 0, read back, released).
fn free_addr() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    probe.local_addr().expect("local addr")
}

fn voters(addrs: &[SocketAddr]) -> Vec<Voter> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Voter {
            node_id: i as i32,
            addr: a.to_string(),
        })
        .collect()
}

/// Limits small enough for tests to reach them quickly.
fn test_limits() -> TransportLimits {
    TransportLimits {
        frame_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(5),
        reconnect_backoff_max: Duration::from_millis(100),
        ..TransportLimits::default()
    }
}

fn heartbeat_request(node_id: i32) -> ControllerRequest {
    ControllerRequest::Heartbeat(BrokerHeartbeat {
        node_id,
        incarnation_id: uuid::Uuid::new_v4(),
        host: "127.0.0.1".into(),
        port: 9092,
        rack: None,
        shutting_down: false,
        listeners: Vec::new(),
    })
}

/// A raft append message from `from` to `to` with `entries` small entries.
fn append(from: i32, to: i32, index: u64, entries: usize) -> Message {
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgAppend);
    msg.from = raft_id(from);
    msg.to = raft_id(to);
    msg.term = 3;
    msg.index = index;
    msg.log_term = 2;
    msg.commit = index;
    msg.context = bytes::Bytes::from_static(b"ctx");
    for i in 0..entries {
        let entry = Entry {
            index: index + 1 + i as u64,
            term: 3,
            data: bytes::Bytes::from(format!("[{{\"record\":{i}}}]")),
            context: bytes::Bytes::from(vec![i as u8; 9]),
            ..Entry::default()
        };
        msg.mut_entries().push(entry);
    }
    msg
}

/// A snapshot message carrying `data_bytes` of metadata.
fn snapshot_message(from: i32, to: i32, data_bytes: usize) -> Message {
    let mut snapshot = Snapshot {
        data: bytes::Bytes::from(
            (0..data_bytes)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        ),
        ..Snapshot::default()
    };
    snapshot.mut_metadata().index = 77;
    snapshot.mut_metadata().term = 5;
    snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgSnapshot);
    msg.from = raft_id(from);
    msg.to = raft_id(to);
    msg.term = 5;
    msg.set_snapshot(snapshot);
    msg
}

/// Collects the raft messages a listener receives.
fn collector() -> (Rc<RefCell<Vec<Message>>>, RaftHandler) {
    let got: Rc<RefCell<Vec<Message>>> = Rc::default();
    let sink = got.clone();
    (got, Rc::new(move |m| sink.borrow_mut().push(m)))
}

/// Answers heartbeats with an ack and every other call with the quorum of `leader`.
fn answering(leader: Option<i32>) -> CallHandler {
    Rc::new(move |request| {
        Box::pin(async move {
            match request {
                ControllerRequest::Heartbeat(_) => {
                    ControllerResponse::HeartbeatAck { fenced: false }
                }
                _ => ControllerResponse::Quorum(QuorumStatus {
                    leader_id: leader,
                    term: 9,
                    ..QuorumStatus::default()
                }),
            }
        })
    })
}

/// Answers every call with NotController{leader}.
fn redirecting(leader: Option<i32>) -> CallHandler {
    Rc::new(move |_| Box::pin(async move { ControllerResponse::NotController { leader } }))
}

/// Waits (up to 10 s) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let start = crate::rt::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        crate::rt::sleep(Duration::from_millis(5)).await;
    }
}

// ---- the codec ----

#[test]
fn headers_are_checked_before_any_body_is_read() {
    let header = |len: u32, kind: u8| {
        let b = len.to_be_bytes();
        [b[0], b[1], b[2], b[3], kind]
    };
    assert_eq!(parse_header(header(11, KIND_RAFT), 100), Ok((1, 10)));
    assert_eq!(parse_header(header(1, KIND_RESPONSE), 100), Ok((3, 0)));
    assert!(parse_header(header(0, KIND_RAFT), 100).is_err());
    assert!(parse_header(header(101, KIND_REQUEST), 100).is_err());
    assert!(parse_header(header(u32::MAX, KIND_REQUEST), CONTROLLER_FRAME_BYTES_MAX).is_err());
    for kind in [0u8, 4, 9, 255] {
        assert!(parse_header(header(5, kind), 100).is_err(), "kind {kind}");
    }
}

fn split_frame(frame: &[u8]) -> (u8, &[u8]) {
    let header: [u8; FRAME_HEADER_BYTES] = frame[..FRAME_HEADER_BYTES].try_into().unwrap();
    let (kind, payload_bytes) = parse_header(header, CONTROLLER_FRAME_BYTES_MAX).unwrap();
    assert_eq!(frame.len(), FRAME_HEADER_BYTES + payload_bytes);
    (kind, &frame[FRAME_HEADER_BYTES..])
}

#[test]
fn frames_round_trip() {
    for msg in [
        append(0, 1, 40, 3),
        snapshot_message(2, 0, 1000),
        Message::default(),
    ] {
        let frame = encode_raft(&msg, CONTROLLER_FRAME_BYTES_MAX).unwrap();
        let (kind, payload) = split_frame(&frame);
        match decode_frame(kind, bytes::Bytes::copy_from_slice(payload)).unwrap() {
            Frame::Raft(back) => assert_eq!(back, msg),
            other => panic!("decoded {other:?}"),
        }
    }
    let frame = encode_call(KIND_REQUEST, 7, &heartbeat_request(4), 1 << 20).unwrap();
    let (kind, payload) = split_frame(&frame);
    match decode_frame(kind, bytes::Bytes::copy_from_slice(payload)).unwrap() {
        Frame::Request {
            correlation_id: 7,
            request: ControllerRequest::Heartbeat(hb),
        } => assert_eq!(hb.node_id, 4),
        other => panic!("decoded {other:?}"),
    }
    let answer = ControllerResponse::NotController { leader: Some(2) };
    let frame = encode_call(KIND_RESPONSE, u64::MAX, &answer, 1 << 20).unwrap();
    let (kind, payload) = split_frame(&frame);
    assert!(matches!(
        decode_frame(kind, bytes::Bytes::copy_from_slice(payload)).unwrap(),
        Frame::Response {
            correlation_id: u64::MAX,
            response: ControllerResponse::NotController { leader: Some(2) }
        }
    ));
    // Over the frame limit: refused on the way out.
    assert!(encode_raft(&snapshot_message(0, 1, 2000), 1000).is_err());
    assert!(encode_call(KIND_REQUEST, 1, &heartbeat_request(1), 20).is_err());
}

#[test]
fn undecodable_payloads_are_errors() {
    // A message's `context` (field 14, bytes) claiming 9 MB that are not there.
    let mut claim = vec![(14 << 3) | 2];
    let mut len = 9_000_000u32;
    while len >= 0x80 {
        claim.push((len as u8) | 0x80);
        len >>= 7;
    }
    claim.push(len as u8);
    assert!(decode_frame(KIND_RAFT, bytes::Bytes::from(claim)).is_err());
    assert!(decode_frame(KIND_RAFT, bytes::Bytes::from_static(&[0xff; 7])).is_err());
    assert!(decode_frame(KIND_REQUEST, bytes::Bytes::from_static(&[0, 0, 0])).is_err());
    assert!(decode_frame(
        KIND_REQUEST,
        bytes::Bytes::from_static(b"\0\0\0\0\0\0\0\x01{\"nope\"")
    )
    .is_err());
    assert!(decode_frame(
        KIND_RESPONSE,
        bytes::Bytes::from_static(b"\0\0\0\0\0\0\0\x01[]")
    )
    .is_err());
}

proptest! {
    /// Whatever bytes arrive, decoding returns (an error or a frame), never panics.
    #[test]
    fn decoding_garbage_never_panics(kind in 0u8..5, payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_frame(kind, bytes::Bytes::from(payload));
    }

    /// Protobuf bytes of a real message, then damaged at one place: never a panic.
    #[test]
    fn damaged_raft_messages_never_panic(at in 0usize..400, byte in any::<u8>()) {
        let mut bytes = append(1, 2, 5, 4).write_to_bytes().unwrap();
        let at = at % bytes.len();
        bytes[at] = byte;
        let _ = decode_frame(KIND_RAFT, bytes::Bytes::copy_from_slice(&bytes));
        let _ = decode_frame(KIND_RAFT, bytes::Bytes::copy_from_slice(&bytes[..at]));
    }
}

mod tls;

// ---- real sockets ----

/// Two transports on real sockets: raft messages in both directions arrive intact and in
/// order, a snapshot message of 4 MiB included.
#[test]
fn raft_messages_arrive_intact_between_two_nodes() {
    run(async {
        let addrs = [free_addr(), free_addr()];
        let a = ControllerTransport::new(0, voters(&addrs), test_limits());
        let b = ControllerTransport::new(1, voters(&addrs), test_limits());
        let (at_a, to_a) = collector();
        let (at_b, to_b) = collector();
        a.serve(addrs[0], to_a, answering(None)).unwrap();
        b.serve(addrs[1], to_b, answering(None)).unwrap();
        let reports: Rc<RefCell<Vec<(u64, bool)>>> = Rc::default();
        let sink = reports.clone();
        a.on_snapshot_sent(Rc::new(move |to, delivered| {
            sink.borrow_mut().push((to, delivered))
        }));
        let mut sent = Vec::new();
        for i in 0..50 {
            sent.push(append(0, 1, i, (i % 4) as usize));
        }
        sent.push(snapshot_message(0, 1, 4 << 20));
        sent.push(append(0, 1, 99, 1));
        for msg in &sent {
            a.send_raft(msg.clone());
        }
        b.send_raft(append(1, 0, 5, 2));
        eventually("b has every message", || at_b.borrow().len() == sent.len()).await;
        assert_eq!(*at_b.borrow(), sent, "intact and in order");
        assert_eq!(
            *reports.borrow(),
            vec![(raft_id(1), true)],
            "the snapshot was written"
        );
        eventually("a has b's message", || at_a.borrow().len() == 1).await;
        assert_eq!(at_a.borrow()[0], append(1, 0, 5, 2));
        let stats = a.stats();
        assert_eq!(stats.raft_sent, sent.len() as u64);
        assert_eq!((stats.raft_dropped, stats.bad_frames), (0, 0));
        assert_eq!(b.stats().raft_received, sent.len() as u64);
        a.stop().await;
        b.stop().await;
    });
}

/// A call gets its answer (the later ones on the pooled connection); after stop, calls fail.
#[test]
fn calls_get_answers_on_a_pooled_connection() {
    run(async {
        let addrs = [free_addr(), free_addr()];
        let a = ControllerTransport::new(0, voters(&addrs), test_limits());
        let b = ControllerTransport::new(1, voters(&addrs), test_limits());
        let (_, to_b) = collector();
        b.serve(addrs[1], to_b, answering(Some(1))).unwrap();
        let target = addrs[1].to_string();
        for _ in 0..2 {
            let answer = a
                .call(&target, heartbeat_request(0), Duration::from_secs(5))
                .await
                .unwrap();
            assert!(matches!(
                answer,
                ControllerResponse::HeartbeatAck { fenced: false }
            ));
        }
        let answer = a
            .call(
                &target,
                ControllerRequest::DescribeQuorum,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert!(matches!(
            answer,
            ControllerResponse::Quorum(QuorumStatus {
                leader_id: Some(1),
                term: 9,
                ..
            })
        ));
        assert_eq!(b.stats().calls_served, 3);
        assert_eq!(
            a.pool.borrow().get(&target).map(Vec::len),
            Some(1),
            "one pooled connection"
        );
        // The peer restarts: the pooled connection is dead; the call goes through on a new one.
        b.stop().await;
        let b2 = ControllerTransport::new(1, voters(&addrs), test_limits());
        b2.serve(addrs[1], collector().1, answering(Some(1)))
            .unwrap();
        let answer = a
            .call(&target, heartbeat_request(0), Duration::from_secs(5))
            .await;
        assert!(
            matches!(answer, Ok(ControllerResponse::HeartbeatAck { .. })),
            "{answer:?}"
        );
        assert_eq!(b2.stats().calls_served, 1);
        b2.stop().await;
        a.stop().await;
        let after_stop = a
            .call(
                &target,
                ControllerRequest::DescribeQuorum,
                Duration::from_secs(1),
            )
            .await;
        assert_eq!(after_stop.unwrap_err(), TransportError::Stopped);
    });
}

/// A call to a peer that accepts but never answers times out at its timeout; one to an
/// address where nothing listens fails at once.
#[test]
fn a_call_to_a_silent_peer_times_out() {
    run(async {
        let a = ControllerTransport::new(0, Vec::new(), test_limits());
        // The kernel accepts into the backlog; nobody ever reads or answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_addr = silent.local_addr().unwrap().to_string();
        let started = crate::rt::now();
        let result = a
            .call(
                &silent_addr,
                ControllerRequest::DescribeQuorum,
                Duration::from_millis(300),
            )
            .await;
        assert!(
            matches!(result, Err(TransportError::Timeout { .. })),
            "{result:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(290) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        // Nothing listens: refused at once.
        let closed = free_addr().to_string();
        let result = a
            .call(
                &closed,
                ControllerRequest::DescribeQuorum,
                Duration::from_secs(5),
            )
            .await;
        assert!(
            matches!(result, Err(TransportError::Connect { .. })),
            "{result:?}"
        );
        a.stop().await;
    });
}

/// call_controller starts at the hint, follows NotController to the leader, skips a voter
/// that is down, and gives up at its deadline when no node leads.
#[test]
fn call_controller_follows_hints_and_skips_dead_voters() {
    run(async {
        let addrs = [free_addr(), free_addr(), free_addr()];
        let caller = ControllerTransport::new(0, voters(&addrs), test_limits());
        // Node 1 is down (nothing listens); node 0 points at node 2, which leads.
        let n0 = ControllerTransport::new(0, voters(&addrs), test_limits());
        let n2 = ControllerTransport::new(2, voters(&addrs), test_limits());
        n0.serve(addrs[0], collector().1, redirecting(Some(2)))
            .unwrap();
        n2.serve(addrs[2], collector().1, answering(Some(2)))
            .unwrap();
        for hint in [Some(0), Some(1), Some(2), None, Some(7)] {
            let answer = caller
                .call_controller(
                    ControllerRequest::DescribeQuorum,
                    hint,
                    Duration::from_secs(5),
                )
                .await
                .unwrap_or_else(|e| panic!("hint {hint:?}: {e}"));
            assert!(
                matches!(
                    answer,
                    ControllerResponse::Quorum(QuorumStatus {
                        leader_id: Some(2),
                        ..
                    })
                ),
                "hint {hint:?}: {answer:?}"
            );
        }
        // Asked for hint 0, after dead node 1, for no hint and for an unknown one (7): the
        // round starts at node 0 each time.
        assert_eq!(n0.stats().calls_served, 4);
        n2.stop().await;
        // Now nobody leads: node 0 keeps redirecting to a node that is gone.
        let started = crate::rt::now();
        let result = caller
            .call_controller(
                ControllerRequest::DescribeQuorum,
                Some(0),
                Duration::from_millis(400),
            )
            .await;
        assert!(
            matches!(result, Err(TransportError::NoController { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        n0.stop().await;
        caller.stop().await;
    });
}

/// A peer that goes away and comes back (a new process on the same address) is reconnected:
/// the link notices the close while idle, so the one message sent after the return arrives
/// (not lost on the dead connection); one sent while the peer is down waits in the queue and
/// arrives once it is back.
#[test]
fn a_peer_that_comes_back_is_reconnected() {
    run(async {
        let addrs = [free_addr(), free_addr()];
        let a = ControllerTransport::new(0, voters(&addrs), test_limits());
        let (at_b, to_b) = collector();
        let b = ControllerTransport::new(1, voters(&addrs), test_limits());
        b.serve(addrs[1], to_b, answering(None)).unwrap();
        a.send_raft(append(0, 1, 1, 1));
        eventually("b got the first message", || at_b.borrow().len() == 1).await;
        b.stop().await;
        crate::rt::sleep(Duration::from_millis(200)).await;
        let (at_b2, to_b2) = collector();
        let b2 = ControllerTransport::new(1, voters(&addrs), test_limits());
        b2.serve(addrs[1], to_b2, answering(None)).unwrap();
        a.send_raft(append(0, 1, 2, 1));
        eventually("the message after the return arrives", || {
            at_b2.borrow().len() == 1
        })
        .await;
        assert_eq!(at_b2.borrow()[0].index, 2);
        assert_eq!(a.stats().reconnects, 1);

        b2.stop().await;
        crate::rt::sleep(Duration::from_millis(100)).await;
        a.send_raft(append(0, 1, 3, 1)); // the peer is down: waits, reconnects fail for now
        crate::rt::sleep(Duration::from_millis(300)).await;
        let (at_b3, to_b3) = collector();
        let b3 = ControllerTransport::new(1, voters(&addrs), test_limits());
        b3.serve(addrs[1], to_b3, answering(None)).unwrap();
        eventually("the queued message arrives", || at_b3.borrow().len() == 1).await;
        assert_eq!(at_b3.borrow()[0].index, 3);
        assert_eq!(a.stats().reconnects, 2);
        assert_eq!(a.stats().raft_dropped, 0);
        a.stop().await;
        b3.stop().await;
    });
}

/// While a peer is down its queue holds at most `peer_queue_messages_max` messages and
/// `peer_queue_bytes_max` bytes; the rest is dropped and counted, and sending never blocks.
#[test]
fn the_peer_queue_drops_instead_of_growing_when_the_peer_is_down() {
    run(async {
        let addrs = [free_addr(), free_addr()];
        let limits = TransportLimits {
            peer_queue_messages_max: 8,
            peer_queue_bytes_max: 64 * 1024,
            ..test_limits()
        };
        let a = ControllerTransport::new(0, voters(&addrs), limits);
        let reports: Rc<RefCell<Vec<(u64, bool)>>> = Rc::default();
        let sink = reports.clone();
        a.on_snapshot_sent(Rc::new(move |to, delivered| {
            sink.borrow_mut().push((to, delivered))
        }));
        let messages: Vec<Message> = (0..1000).map(|i| append(0, 1, i, 2)).collect();
        let started = std::time::Instant::now();
        for msg in messages {
            a.send_raft(msg);
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "sending never waits for the peer"
        );
        let link = a.peers.borrow().get(&1).cloned().unwrap();
        assert!(link.queue.borrow().len() <= 8);
        crate::rt::sleep(Duration::from_millis(300)).await; // reconnect attempts fail meanwhile
        let stats = a.stats();
        assert_eq!(stats.raft_sent, 0);
        assert!(stats.raft_dropped >= 992, "{stats:?}");
        assert!(link.queue.borrow().len() <= 8);
        // A big message does not fit the byte bound even with room in count.
        let dropped = a.stats().raft_dropped;
        link.queue.borrow_mut().clear();
        link.queued_bytes.set(0);
        a.send_raft(snapshot_message(0, 1, 100 * 1024));
        assert_eq!(a.stats().raft_dropped, dropped + 1);
        eventually("the lost snapshot is reported", || {
            *reports.borrow() == vec![(raft_id(1), false)]
        })
        .await;
        // Unknown peers and messages to no one are dropped too.
        a.send_raft(append(0, 5, 1, 1));
        assert_eq!(a.stats().raft_dropped, dropped + 2);
        assert!(link.queued_bytes.get() <= 64 * 1024);
        a.stop().await;
        a.send_raft(append(0, 1, 1, 1));
        assert_eq!(a.stats().raft_dropped, dropped + 3, "after stop");
    });
}

/// A raw connection to `addr` (what a hostile peer opens).
async fn raw(addr: SocketAddr) -> TcpStream {
    crate::rt::net::connect(addr, Duration::from_secs(1))
        .await
        .expect("connect")
}

/// Whether the listener closed `stream` within 5 s (a read gives end of file or an error).
async fn closed_by_listener(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match timed(Duration::from_secs(5), stream.read(&mut buf)).await {
        Some(Ok(0)) | Some(Err(_)) => true,
        Some(Ok(_)) | None => false,
    }
}

fn raw_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    frame.push(kind);
    frame.extend_from_slice(payload);
    frame
}

/// Frames a hostile or broken peer might send, each of which must close its connection.
fn hostile_frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized length", {
            let mut f = ((CONTROLLER_FRAME_BYTES_MAX + 2) as u32)
                .to_be_bytes()
                .to_vec();
            f.extend_from_slice(&[KIND_RAFT, 0, 0, 0]);
            f
        }),
        ("huge length", vec![0xff, 0xff, 0xff, 0xff, KIND_REQUEST]),
        ("zero length", vec![0, 0, 0, 0, KIND_RAFT]),
        ("unknown kind", raw_frame(9, b"hello")),
        (
            "an answer to the listener",
            raw_frame(KIND_RESPONSE, &[0; 12]),
        ),
        ("bad protobuf", raw_frame(KIND_RAFT, &[0xff; 40])),
        (
            "bad json",
            raw_frame(KIND_REQUEST, b"\0\0\0\0\0\0\0\x01{\"Heartbeat\":"),
        ),
        ("short call", raw_frame(KIND_REQUEST, b"\0\0\0")),
    ];
    // A frame cut short: the header promises 1000 bytes, 10 come, then the close.
    let mut truncated = 1001u32.to_be_bytes().to_vec();
    truncated.push(KIND_RAFT);
    truncated.extend_from_slice(&[1; 10]);
    cases.push(("truncated", truncated));
    cases
}

/// Hostile input closes only the connection it came on: an oversized length, a zero
/// length, an unknown kind, an answer sent to the listener, undecodable protobuf and JSON, a
/// truncated frame. Meanwhile an honest peer's raft link and calls keep working.
#[test]
fn hostile_input_closes_only_its_connection() {
    run(async {
        let addrs = [free_addr(), free_addr()];
        let a = ControllerTransport::new(0, voters(&addrs), test_limits());
        let (at_b, to_b) = collector();
        let b = ControllerTransport::new(1, voters(&addrs), test_limits());
        b.serve(addrs[1], to_b, answering(Some(1))).unwrap();
        a.send_raft(append(0, 1, 1, 1));
        eventually("the honest link is up", || at_b.borrow().len() == 1).await;

        let cases = hostile_frames();
        let mut expected_bad = 0;
        for (what, bytes) in &cases {
            let mut s = raw(addrs[1]).await;
            s.write_all(bytes).await.unwrap();
            if *what == "truncated" {
                s.shutdown(std::net::Shutdown::Write).await.unwrap();
            }
            assert!(
                closed_by_listener(&mut s).await,
                "{what}: connection kept open"
            );
            expected_bad += 1;
        }
        eventually("every bad frame counted", || {
            b.stats().bad_frames == expected_bad
        })
        .await;

        // The listener and the honest peer are unaffected.
        a.send_raft(append(0, 1, 2, 1));
        eventually("the honest link still delivers", || {
            at_b.borrow().len() == 2
        })
        .await;
        let answer = a
            .call(
                &addrs[1].to_string(),
                heartbeat_request(0),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert!(matches!(answer, ControllerResponse::HeartbeatAck { .. }));
        // A raft message for another node is dropped, the connection kept.
        let mut s = raw(addrs[1]).await;
        s.write_all(&encode_raft(&append(0, 2, 1, 1), 1 << 20).unwrap())
            .await
            .unwrap();
        s.write_all(&encode_raft(&append(0, 1, 3, 1), 1 << 20).unwrap())
            .await
            .unwrap();
        eventually("the well-addressed one arrives", || {
            at_b.borrow().len() == 3
        })
        .await;
        assert_eq!(b.stats().bad_frames, expected_bad + 1);
        a.stop().await;
        b.stop().await;
    });
}

/// A frame that does not arrive whole within `frame_read_timeout` of its first byte closes
/// its connection: a slowloris header, a trickled body.
#[test]
fn slow_frames_are_closed_after_the_frame_read_timeout() {
    run(async {
        let addrs = [free_addr(), free_addr()];
        let b = ControllerTransport::new(1, voters(&addrs), test_limits());
        b.serve(addrs[1], collector().1, answering(Some(1)))
            .unwrap();
        let mut expected_bad = 0;
        // Slowloris: 3 bytes of a header, then nothing; closed after frame_read_timeout.
        let mut slow = raw(addrs[1]).await;
        slow.write_all(&[0, 0, 1]).await.unwrap();
        let started = crate::rt::now();
        assert!(closed_by_listener(&mut slow).await, "slowloris kept open");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        expected_bad += 1;
        // A slow body: a 100 KiB frame trickled 1 KiB per 100 ms.
        let mut trickle = raw(addrs[1]).await;
        let mut header = (100 * 1024 + 1u32).to_be_bytes().to_vec();
        header.push(KIND_RAFT);
        trickle.write_all(&header).await.unwrap();
        let mut closed = false;
        for _ in 0..30 {
            if trickle.write_all(&[0u8; 1024]).await.is_err() {
                closed = true;
                break;
            }
            crate::rt::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            closed || closed_by_listener(&mut trickle).await,
            "trickler kept open"
        );
        expected_bad += 1;
        eventually("both counted", || b.stats().bad_frames == expected_bad).await;
        b.stop().await;
    });
}

/// At `connections_accepted_max` open connections one more is closed at once; once one
/// closes, a new one is served again.
#[test]
fn connections_beyond_the_limit_are_closed() {
    run(async {
        let addrs = [free_addr()];
        let limits = TransportLimits {
            connections_accepted_max: 3,
            ..test_limits()
        };
        let b = ControllerTransport::new(0, voters(&addrs), limits);
        b.serve(addrs[0], collector().1, answering(Some(0)))
            .unwrap();
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(raw(addrs[0]).await);
        }
        eventually("three served", || b.connections.borrow().len() == 3).await;
        let mut extra = raw(addrs[0]).await;
        assert!(closed_by_listener(&mut extra).await);
        assert_eq!(b.stats().connections_refused, 1);
        drop(open.pop());
        eventually("one closed", || b.connections.borrow().len() == 2).await;
        let caller = ControllerTransport::new(5, Vec::new(), test_limits());
        let answer = caller
            .call(
                &addrs[0].to_string(),
                ControllerRequest::DescribeQuorum,
                Duration::from_secs(5),
            )
            .await;
        assert!(
            matches!(answer, Ok(ControllerResponse::Quorum(_))),
            "{answer:?}"
        );
        b.stop().await;
    });
}

/// At most `inflight_calls_per_connection_max` calls of one connection run at once; the
/// rest wait unread, and every call is answered (by correlation id) once they finish.
#[test]
fn calls_in_flight_per_connection_are_bounded() {
    run(async {
        let addrs = [free_addr()];
        let limits = TransportLimits {
            inflight_calls_per_connection_max: 2,
            ..test_limits()
        };
        let b = ControllerTransport::new(0, voters(&addrs), limits);
        let running = Rc::new(Cell::new(0u32));
        let open = Rc::new(Cell::new(false));
        let (r, o) = (running.clone(), open.clone());
        let on_call: CallHandler = Rc::new(move |_| {
            let (r, o) = (r.clone(), o.clone());
            Box::pin(async move {
                r.set(r.get() + 1);
                while !o.get() {
                    crate::rt::sleep(Duration::from_millis(5)).await;
                }
                ControllerResponse::HeartbeatAck { fenced: true }
            })
        });
        b.serve(addrs[0], collector().1, on_call).unwrap();
        let mut s = raw(addrs[0]).await;
        for id in 1..=5u64 {
            let frame = encode_call(KIND_REQUEST, id, &heartbeat_request(3), 1 << 20).unwrap();
            s.write_all(&frame).await.unwrap();
        }
        crate::rt::sleep(Duration::from_millis(200)).await;
        assert_eq!(running.get(), 2, "two run, three wait");
        open.set(true);
        let mut ids = Vec::new();
        let mut reader = FrameReader {
            reader: &mut s,
            frame_bytes_max: 1 << 20,
            frame_read_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(5)),
            budget: None,
        };
        for _ in 0..5 {
            let (kind, payload, _) = reader.next().await.expect("an answer");
            match decode_frame(kind, bytes::Bytes::from(payload)).unwrap() {
                Frame::Response {
                    correlation_id,
                    response: ControllerResponse::HeartbeatAck { fenced: true },
                } => ids.push(correlation_id),
                other => panic!("{other:?}"),
            }
        }
        ids.sort();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(running.get(), 5);
        b.stop().await;
    });
}

/// Large inbound bodies share `inbound_buffered_bytes_max`: while one connection holds the
/// budget with a half-sent 200 KiB frame, a second connection's 200 KiB frame, sent whole,
/// is not read; it is once the first completes.
#[test]
fn large_frames_wait_for_the_inbound_budget() {
    run(async {
        let addrs = [free_addr(), free_addr()];
        let limits = TransportLimits {
            inbound_buffered_bytes_max: 256 * 1024,
            frame_read_timeout: Duration::from_secs(10),
            ..test_limits()
        };
        let (at_b, to_b) = collector();
        let b = ControllerTransport::new(1, voters(&addrs), limits);
        b.serve(addrs[1], to_b, answering(None)).unwrap();
        let first = encode_raft(&snapshot_message(0, 1, 200 * 1024), 1 << 20).unwrap();
        let second = encode_raft(&snapshot_message(2, 1, 200 * 1024), 1 << 20).unwrap();
        let mut s1 = raw(addrs[1]).await;
        s1.write_all(&first[..100 * 1024]).await.unwrap();
        eventually("the first frame holds its budget", || {
            b.budget.kib.available() < 256 - 199
        })
        .await;
        let mut s2 = raw(addrs[1]).await;
        s2.write_all(&second).await.unwrap();
        crate::rt::sleep(Duration::from_millis(300)).await;
        assert!(at_b.borrow().is_empty(), "the second frame waits");
        s1.write_all(&first[100 * 1024..]).await.unwrap();
        eventually("both arrive", || at_b.borrow().len() == 2).await;
        assert_eq!(at_b.borrow()[0].from, raft_id(0), "the first frame first");
        eventually("the budget is back", || b.budget.kib.available() == 256).await;
        b.stop().await;
    });
}

/// A peer that accepts but never reads: once its socket buffers are full the link's write
/// times out, the link reconnects, and messages are dropped rather than waiting; sending
/// never blocks the caller.
#[test]
fn a_peer_that_stops_reading_does_not_stall_the_sender() {
    run(async {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = [free_addr(), silent.local_addr().unwrap()];
        let limits = TransportLimits {
            write_timeout: Duration::from_millis(300),
            ..test_limits()
        };
        let a = ControllerTransport::new(0, voters(&addrs), limits);
        let lost: Rc<Cell<u64>> = Rc::default();
        let sink = lost.clone();
        a.on_snapshot_sent(Rc::new(move |to, delivered| {
            assert_eq!(to, raft_id(1));
            if !delivered {
                sink.set(sink.get() + 1);
            }
        }));
        let snapshot = snapshot_message(0, 1, 4 << 20);
        let started = std::time::Instant::now();
        for _ in 0..16 {
            a.send_raft(snapshot.clone());
        }
        assert!(started.elapsed() < Duration::from_secs(5), "sending waited");
        eventually("a write timed out and the link reconnected", || {
            a.stats().reconnects >= 1 && a.stats().raft_dropped >= 1
        })
        .await;
        assert!(
            lost.get() >= 1,
            "a snapshot lost with the connection is reported"
        );
        a.stop().await;
    });
}

/// serve_waiting binds once a silent holder of the address (a killed node's socket) lets go,
/// and gives up at once when a live node's listener holds it.
#[test]
fn serve_waiting_outlasts_a_stale_socket_but_not_a_live_node() {
    run(async {
        let stale = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = stale.local_addr().unwrap();
        let b = ControllerTransport::new(0, voters(&[addr]), test_limits());
        let releaser = crate::rt::spawn_local(async move {
            crate::rt::sleep(Duration::from_millis(400)).await;
            drop(stale);
        });
        let started = crate::rt::now();
        let on_call = answering(Some(0));
        let served = b
            .serve_waiting(addr, collector().1, on_call, Duration::from_secs(5))
            .await;
        assert!(served.is_ok(), "{served:?}");
        assert!(started.elapsed() >= Duration::from_millis(350));
        releaser.await;

        let again = ControllerTransport::new(0, voters(&[addr]), test_limits());
        let started = crate::rt::now();
        let refused = again
            .serve_waiting(addr, collector().1, answering(None), Duration::from_secs(5))
            .await;
        assert!(
            matches!(refused, Err(TransportError::Bind { .. })),
            "{refused:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a live node is not waited out"
        );
        // Without waiting, a taken address is an error at once.
        let third = ControllerTransport::new(0, voters(&[addr]), test_limits());
        let third_result = third.serve(addr, collector().1, answering(None));
        assert!(matches!(third_result, Err(TransportError::Bind { .. })));
        b.stop().await;
    });
}

/// A handler that panics, or whose answer does not fit a frame, gives the caller a `Failed`
/// answer; the listener goes on serving.
#[test]
fn a_failing_handler_gives_a_failed_answer() {
    run(async {
        let addrs = [free_addr()];
        let limits = TransportLimits {
            frame_bytes_max: 4096,
            ..test_limits()
        };
        let b = ControllerTransport::new(0, voters(&addrs), limits.clone());
        let on_call: CallHandler = Rc::new(|request| {
            Box::pin(async move {
                match request {
                    ControllerRequest::DescribeQuorum => panic!("a bug in a handler"),
                    _ => ControllerResponse::Failed {
                        message: "x".repeat(10_000),
                    },
                }
            })
        });
        b.serve(addrs[0], collector().1, on_call).unwrap();
        let caller = ControllerTransport::new(1, Vec::new(), limits);
        let target = addrs[0].to_string();
        let timeout = Duration::from_secs(5);
        for request in [ControllerRequest::DescribeQuorum, heartbeat_request(1)] {
            let answer = caller.call(&target, request, timeout).await;
            match answer {
                Ok(ControllerResponse::Failed { message }) => assert!(message.len() < 200),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(b.stats().calls_served, 2);
        b.stop().await;
    });
}
