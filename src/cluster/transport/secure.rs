//! Mutual TLS on the controller transport (Kafka's controller listener with security
//! protocol SSL and client authentication; module doc of [`super`], "Security").
//!
//! - Inbound: the listener's TLS handshake asks for a client certificate and refuses one that
//!   does not chain to `ssl_ca_file` (or none at all); the peer's principal is then Kafka's
//!   default mapping of the certificate's subject (`User:CN=...`, `security::tls`), and the
//!   [`Admit`] check (super user, or CLUSTER_ACTION on the cluster) decides whether the
//!   connection is served. A refused connection is closed before any frame is read. The
//!   check is made again for every inbound frame (Kafka checks each controller request), so
//!   a principal whose ACL is removed loses an open connection at its next frame.
//! - Outbound (raft links and calls): this node's certificate is presented, the peer's is
//!   verified against `ssl_ca_file` and the host (or IP) of its address in
//!   `controller_quorum_voters`, and its principal passes the same [`Admit`] check: a
//!   certificate of the CA that is not a node's cannot pose as a voter.
//! - Both sides: the handshake is bounded by [`TransportSecurity::handshake_timeout`]; the
//!   files are re-read when they change (`Reloading`, `ReloadingClient`), connections open
//!   keep what they were made with.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};

use crate::rt::net::TcpStream;
use crate::security::tls::{Reloading, ReloadingClient};

/// The default bound on a TLS handshake of the controller transport.
pub const HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// May `(principal, peer IP)` use the controller transport? `Err(why)` refuses it.
pub type Admit = Rc<dyn Fn(&str, &str) -> Result<(), String>>;

/// The TLS settings of a transport (module doc).
pub struct TransportSecurity {
    /// The listener's configuration (client certificates required).
    pub server: Reloading,
    /// The outbound links' configuration (this node's certificate, the CA).
    pub client: ReloadingClient,
    pub admit: Admit,
    pub handshake_timeout: Duration,
}

/// Why a TLS connection was refused.
#[derive(Debug)]
pub enum Refusal {
    /// The handshake failed or timed out (no certificate, another CA, not TLS at all).
    Handshake(String),
    /// The certificate was valid but its principal may not use the transport.
    NotAuthorized { principal: String, why: String },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Handshake(why) => write!(f, "TLS handshake failed: {why}"),
            Refusal::NotAuthorized { principal, why } => {
                write!(f, "peer {principal} not authorized: {why}")
            }
        }
    }
}

/// A connection of the transport: plain, or TLS from either side.
pub enum CtrlStream {
    Plain(TcpStream),
    Server(Box<futures_rustls::server::TlsStream<TcpStream>>),
    Client(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

/// `fut`'s output, or `Err` once `limit` has passed.
async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    futures_lite::future::or(fut, async {
        crate::rt::sleep(limit).await;
        Err(format!("not done within {} ms", limit.as_millis()))
    })
    .await
}

/// The principal of the first certificate of `chain` (`None`: none, or not parsable).
fn principal_of(chain: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Option<String> {
    chain
        .and_then(|c| c.first())
        .and_then(|cert| crate::security::tls::principal_of_certificate(cert))
}

impl TransportSecurity {
    /// The server side of a new inbound connection from `peer_ip`: the handshake, then the
    /// principal's check.
    pub async fn accept(&self, tcp: TcpStream, peer_ip: &str) -> Result<CtrlStream, Refusal> {
        let acceptor = self.server.acceptor();
        let tls = bounded(self.handshake_timeout, async {
            acceptor.accept(tcp).await.map_err(|e| e.to_string())
        })
        .await
        .map_err(Refusal::Handshake)?;
        let principal = principal_of(tls.get_ref().1.peer_certificates()).ok_or_else(|| {
            Refusal::Handshake("no client certificate with a readable subject".into())
        })?;
        (self.admit)(&principal, peer_ip)
            .map_err(|why| Refusal::NotAuthorized { principal, why })?;
        Ok(CtrlStream::Server(Box::new(tls)))
    }

    /// The client side of a new outbound connection to `addr` (`host:port`, the host checked
    /// against the peer's certificate), at `peer_ip`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: &str,
        peer_ip: &str,
    ) -> Result<CtrlStream, Refusal> {
        let host = host_of(addr);
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| Refusal::Handshake(format!("{host} as a TLS server name: {e}")))?;
        let connector = self.client.connector();
        let tls = bounded(self.handshake_timeout, async {
            connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(Refusal::Handshake)?;
        let principal = principal_of(tls.get_ref().1.peer_certificates()).ok_or_else(|| {
            Refusal::Handshake("no server certificate with a readable subject".into())
        })?;
        (self.admit)(&principal, peer_ip)
            .map_err(|why| Refusal::NotAuthorized { principal, why })?;
        Ok(CtrlStream::Client(Box::new(tls)))
    }
}

impl CtrlStream {
    /// The principal of the peer's certificate on a TLS connection (`None` on a plain one).
    pub fn peer_principal(&self) -> Option<String> {
        match self {
            CtrlStream::Plain(_) => None,
            CtrlStream::Server(s) => principal_of(s.get_ref().1.peer_certificates()),
            CtrlStream::Client(s) => principal_of(s.get_ref().1.peer_certificates()),
        }
    }
}

/// The host of `host:port` (an IPv6 address without its brackets).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl AsyncRead for CtrlStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            CtrlStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            CtrlStream::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            CtrlStream::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for CtrlStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            CtrlStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            CtrlStream::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            CtrlStream::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            CtrlStream::Plain(s) => Pin::new(s).poll_flush(cx),
            CtrlStream::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
            CtrlStream::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            CtrlStream::Plain(s) => Pin::new(s).poll_close(cx),
            CtrlStream::Server(s) => Pin::new(s.as_mut()).poll_close(cx),
            CtrlStream::Client(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host_of("node-1.example:9093"), "node-1.example");
        assert_eq!(host_of("[::1]:9093"), "::1");
    }
}
