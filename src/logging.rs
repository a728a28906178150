//! The broker's log writer: no thread that serves requests ever writes to stderr itself.
//!
//! A log line written straight to stderr is a blocking `write(2)` on the shard thread: when
//! stderr is a file on a saturated disk (the kernel throttles writers of dirty pages), or a
//! pipe to a log collector that has fallen behind (the pipe's 64 KiB fill up), the write
//! waits, and so does every connection and partition of that shard (issue 18: a reactor
//! stall). So [`QueuedStderr`], the writer the `tracing` subscriber formats into, hands each
//! formatted line to a bounded queue ([`LOG_QUEUE_LINES_MAX`] lines, [`LOG_QUEUE_BYTES_MAX`]
//! bytes) that one `freshet-log` thread drains to stderr. A full queue drops the line instead of waiting, counts it, and the
//! log thread reports the count once it can write again ("N log lines dropped").
//!
//! Memory: at most [`LOG_QUEUE_BYTES_MAX`] bytes of lines queued (and [`LOG_QUEUE_LINES_MAX`]
//! lines), each at most [`LOG_LINE_BYTES_MAX`] bytes (a longer line is cut there). [`flush`] (at the end of `freshet start`) waits, for a bounded
//! time, until the queue has been written, so the last lines before exit are not lost.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Log lines queued for stderr at most; more are dropped (and counted).
pub const LOG_QUEUE_LINES_MAX: usize = 16 * 1024;
/// Bytes of log lines queued for stderr at most; more are dropped (and counted).
pub const LOG_QUEUE_BYTES_MAX: usize = 4 << 20;
/// A log line longer than this is cut to it.
pub const LOG_LINE_BYTES_MAX: usize = 16 * 1024;
/// [`flush`] waits this long at most.
pub const FLUSH_WAIT_MAX: Duration = Duration::from_secs(2);

enum Message {
    Line(Vec<u8>),
    /// Answer on this channel once everything queued before has been written.
    Flush(SyncSender<()>),
}

/// The queue to the log thread, shared by every writer.
struct Queue {
    tx: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
    /// Bytes of the lines in the queue.
    queued_bytes: Arc<AtomicUsize>,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

/// The `tracing_subscriber` writer: each event's formatted line goes to the log thread's queue
/// (started on first use), never straight to stderr. See the module docs.
#[derive(Clone, Copy, Default)]
pub struct QueuedStderr;

/// One event's line, queued when dropped (`tracing_subscriber` makes one writer per event).
pub struct LineWriter {
    line: Vec<u8>,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueuedStderr {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter { line: Vec::new() }
    }
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = LOG_LINE_BYTES_MAX.saturating_sub(self.line.len());
        self.line.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        if self.line.len() == LOG_LINE_BYTES_MAX && self.line.last() != Some(&b'\n') {
            self.line.push(b'\n');
        }
        let line = std::mem::take(&mut self.line);
        let Some(queue) = queue() else {
            // No log thread (it could not be started): write as before.
            let _ = std::io::stderr().write_all(&line);
            return;
        };
        let len = line.len();
        let before = queue.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > LOG_QUEUE_BYTES_MAX || queue.tx.try_send(Message::Line(line)).is_err() {
            queue.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            queue.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The queue, starting the log thread on first use; `None` if the thread cannot start.
fn queue() -> Option<&'static Queue> {
    if let Some(q) = QUEUE.get() {
        return Some(q);
    }
    let (tx, rx) = sync_channel(LOG_QUEUE_LINES_MAX);
    let dropped = Arc::new(AtomicU64::new(0));
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let (thread_dropped, thread_queued) = (dropped.clone(), queued_bytes.clone());
    let started = std::thread::Builder::new()
        .name("freshet-log".into())
        .spawn(move || drain(rx, &thread_dropped, &thread_queued));
    if started.is_err() {
        return None;
    }
    // Two threads may race to start it; the loser's thread ends when its queue is dropped.
    Some(QUEUE.get_or_init(|| Queue {
        tx,
        dropped,
        queued_bytes,
    }))
}

/// The log thread: writes queued lines to stderr, and how many were dropped.
fn drain(rx: Receiver<Message>, dropped: &AtomicU64, queued_bytes: &AtomicUsize) {
    let mut reported = 0u64;
    while let Ok(message) = rx.recv() {
        let mut err = std::io::stderr().lock();
        match message {
            Message::Line(line) => {
                let _ = err.write_all(&line);
                queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
            }
            Message::Flush(done) => {
                let _ = err.flush();
                let _ = done.try_send(());
            }
        }
        let now = dropped.load(Ordering::Relaxed);
        if now > reported {
            let _ = writeln!(
                err,
                "freshet: {} log lines dropped: stderr was not keeping up (a slow disk or log collector)",
                now - reported
            );
            reported = now;
        }
    }
}

/// Log lines dropped so far because the queue was full.
pub fn dropped_lines() -> u64 {
    QUEUE.get().map_or(0, |q| q.dropped.load(Ordering::Relaxed))
}

/// Waits until every line queued so far is written, [`FLUSH_WAIT_MAX`] at most. For the end of
/// the process; blocking, so never called on a shard thread.
pub fn flush() {
    let Some(queue) = QUEUE.get() else {
        return;
    };
    let (done_tx, done_rx) = sync_channel(1);
    let deadline = std::time::Instant::now() + FLUSH_WAIT_MAX;
    let mut message = Message::Flush(done_tx);
    loop {
        match queue.tx.try_send(message) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                message = m;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let _ = done_rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line is cut at the limit (and still ends the line); shorter ones pass whole.
    #[test]
    fn long_lines_are_cut_at_the_limit() {
        let mut w = LineWriter { line: Vec::new() };
        w.write_all(b"short ").unwrap();
        w.write_all(b"line\n").unwrap();
        assert_eq!(w.line, b"short line\n");
        let mut w = LineWriter { line: Vec::new() };
        w.write_all(&vec![b'x'; LOG_LINE_BYTES_MAX + 10]).unwrap();
        assert_eq!(w.line.len(), LOG_LINE_BYTES_MAX);
        std::mem::forget(w); // not queued: this test does not start the log thread
    }
}
