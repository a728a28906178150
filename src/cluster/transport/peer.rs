//! The outbound raft link to one peer (module doc of [`super`]): a bounded queue of encoded
//! frames and the task that connects, writes them, and reconnects with backoff.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::{bump, Counters, CtrlStream, Dialer, SnapshotReport, TransportLimits};
use crate::cluster::raft_id;
use crate::rt::LogLimiter;

/// Small outbound raft frames are gathered into one write up to this size.
const WRITE_GATHER_BYTES_MAX: usize = 64 * 1024;
/// The first reconnect backoff of a peer link; it doubles up to `reconnect_backoff_max`.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);

/// The outbound side towards one peer: the queue of encoded frames and the task that
/// writes them.
pub(super) struct PeerLink {
    pub(super) node_id: i32,
    pub(super) addr: String,
    /// Encoded frames, each marked if it carries a snapshot.
    pub(super) queue: RefCell<VecDeque<(Vec<u8>, bool)>>,
    pub(super) queued_bytes: Cell<usize>,
    /// The writer task, when it waits for a frame.
    pub(super) waiter: RefCell<Option<Waker>>,
    pub(super) task: RefCell<Option<crate::rt::JoinHandle<()>>>,
    /// The transport's snapshot report hook.
    pub(super) report: Rc<RefCell<Option<SnapshotReport>>>,
}

impl PeerLink {
    /// Queues `frame` (`snapshot`: it carries a snapshot) unless the queue is full (`false`:
    /// dropped).
    pub(super) fn push(&self, frame: Vec<u8>, snapshot: bool, limits: &TransportLimits) -> bool {
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= limits.peer_queue_messages_max
            || self.queued_bytes.get() + frame.len() > limits.peer_queue_bytes_max
        {
            return false;
        }
        self.queued_bytes.set(self.queued_bytes.get() + frame.len());
        queue.push_back((frame, snapshot));
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
    /// to [`WRITE_GATHER_BYTES_MAX`]; with the number of messages and of snapshots in them.
    fn take_batch(&self) -> (Vec<u8>, u64, usize) {
        let mut queue = self.queue.borrow_mut();
        let (mut batch, first_is_snapshot) = queue.pop_front().expect("a frame is queued");
        let mut count = 1;
        let mut snapshots = usize::from(first_is_snapshot);
        while let Some((next, is_snapshot)) = queue.front() {
            if batch.len() + next.len() > WRITE_GATHER_BYTES_MAX {
                break;
            }
            batch.extend_from_slice(next);
            snapshots += usize::from(*is_snapshot);
            queue.pop_front();
            count += 1;
        }
        self.queued_bytes.set(self.queued_bytes.get() - batch.len());
        (batch, count, snapshots)
    }

    /// Tells the report hook, if any, that `snapshots` snapshot messages to this peer were
    /// written to its socket (`delivered`) or lost. Called from tasks, never from
    /// `send_raft`: the hook may step the raft node, which may be sending.
    pub(super) fn report_snapshots(&self, snapshots: usize, delivered: bool) {
        let Some(report) = self.report.borrow().clone() else {
            return;
        };
        for _ in 0..snapshots {
            report(raft_id(self.node_id), delivered);
        }
    }
}

/// The outbound task of one peer: connects while there is something to send, writes the
/// queue, reconnects with backoff when the connection fails.
pub(super) async fn run_peer(link: Rc<PeerLink>, dialer: Rc<Dialer>, log: Rc<LogLimiter>) {
    let (limits, counters) = (&dialer.limits, &dialer.counters);
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut connected_before = false;
    loop {
        link.frames_queued().await;
        let stream = match dialer.connect(&link.addr).await {
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
        let (why, sent_any) = pump(&link, stream, counters).await;
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
async fn pump(link: &PeerLink, stream: CtrlStream, counters: &Counters) -> (String, bool) {
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
        let (batch, count, snapshots) = link.take_batch();
        let written = async {
            writer.write_all(&batch).await?;
            writer.flush().await
        }
        .await;
        link.report_snapshots(snapshots, written.is_ok());
        if let Err(e) = written {
            bump(&counters.raft_dropped, count);
            return (format!("write failed: {e}"), sent_any);
        }
        bump(&counters.raft_sent, count);
        sent_any = true;
    }
}
