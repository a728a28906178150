//! TCP through the seam: glommio's listener and stream (io_uring). Not simulated: opening a
//! socket under `rt::sim` panics (nothing simulated talks to the network).

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

pub use super::glommio_backend::{Error, TcpListener, TcpStream};

/// What socket calls return.
pub type Result<T> = std::result::Result<T, Error>;

fn not_simulated() {
    assert!(
        !super::sim::is_active(),
        "rt::net: sockets are not simulated; code run under rt::sim must not open one"
    );
}

/// Binds a listener on `addr` (with SO_REUSEPORT, as glommio always does).
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    not_simulated();
    TcpListener::bind(addr)
}

/// Connects to `addr`; fails with a timed-out error once `timeout` has passed (a zero
/// timeout counts as 1 ms).
pub async fn connect(addr: SocketAddr, timeout: std::time::Duration) -> Result<TcpStream> {
    not_simulated();
    super::glommio_backend::connect(addr, timeout).await
}

/// Takes over a bound, listening TCP socket.
pub fn listener_from_fd(fd: OwnedFd) -> TcpListener {
    not_simulated();
    // SAFETY: `OwnedFd` is ours alone and open; its ownership passes to the listener.
    unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) }
}
