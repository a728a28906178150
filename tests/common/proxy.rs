//! A TCP proxy for tests that cuts connections mid-flight.
//!
//! `CutProxy` listens on its own 127.0.0.1 port and forwards every connection to a target. While
//! cutting is on, once `cut_every_bytes` more client-to-broker bytes have passed it forwards the
//! chunk that crossed the mark, waits a moment (so the broker handles the request), then closes
//! both sides; answers to that chunk (and anything after it on that connection) are dropped,
//! so the client never sees them and must retry requests the broker did handle. Start the broker with
//! `--advertise` set to the proxy's address so clients route every connection through it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How long a cut connection waits after forwarding the crossing chunk before closing.
const CUT_DELAY: Duration = Duration::from_millis(30);

struct Shared {
    target: SocketAddr,
    cutting: AtomicBool,
    cut_every_bytes: u64,
    bytes_since_cut: AtomicU64,
    cuts: AtomicU64,
    stop: AtomicBool,
}

/// A proxy listening on a free port; stops accepting when dropped.
pub struct CutProxy {
    shared: Arc<Shared>,
    port: u16,
}

impl CutProxy {
    /// Listen on `port` and forward to `target`; cutting starts off.
    pub fn start(port: u16, target: SocketAddr, cut_every_bytes: u64) -> CutProxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind proxy port");
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared {
            target,
            cutting: AtomicBool::new(false),
            cut_every_bytes,
            bytes_since_cut: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let s = s.clone();
                        thread::spawn(move || serve(s, client));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CutProxy { shared, port }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Turn cutting on or off.
    pub fn set_cutting(&self, on: bool) {
        self.shared.bytes_since_cut.store(0, Ordering::SeqCst);
        self.shared.cutting.store(on, Ordering::SeqCst);
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(s: Arc<Shared>, client: TcpStream) {
    let _ = client.set_nonblocking(false);
    let Ok(upstream) = TcpStream::connect(s.target) else {
        return;
    };
    let (Ok(mut c_read), Ok(mut u_write)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let (mut u_read, mut c_write) = (upstream, client);
    let c_close = c_write.try_clone().ok();
    let u_close = u_write.try_clone().ok();
    // Set before the crossing chunk goes upstream: its answer must never reach the client.
    let doomed = Arc::new(AtomicBool::new(false));
    let doomed_reader = doomed.clone();
    // broker -> client
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = u_read.read(&mut buf) {
            if n == 0
                || doomed_reader.load(Ordering::SeqCst)
                || c_write.write_all(&buf[..n]).is_err()
            {
                break;
            }
        }
        let _ = c_write.shutdown(Shutdown::Both);
        let _ = u_read.shutdown(Shutdown::Both);
    });
    // client -> broker, cutting as configured
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = c_read.read(&mut buf) {
        if n == 0 {
            break;
        }
        let mut cut = false;
        if s.cutting.load(Ordering::SeqCst) {
            let total = s.bytes_since_cut.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if total >= s.cut_every_bytes {
                s.bytes_since_cut.store(0, Ordering::SeqCst);
                s.cuts.fetch_add(1, Ordering::SeqCst);
                doomed.store(true, Ordering::SeqCst);
                cut = true;
            }
        }
        if u_write.write_all(&buf[..n]).is_err() {
            break;
        }
        if cut {
            thread::sleep(CUT_DELAY);
            break;
        }
    }
    for sock in [c_close, u_close].into_iter().flatten() {
        let _ = sock.shutdown(Shutdown::Both);
    }
}
