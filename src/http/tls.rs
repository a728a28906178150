//! HTTPS on the HTTP listener (`http_ssl_enabled`): the connection's byte stream, plain TCP or
//! TLS over it ([`HttpStream`], which every handler reads and writes), and the handshake with
//! the Kafka listeners' TLS code (`security::tls`: rustls with ring, TLS 1.2/1.3, certificate
//! files reloaded when they change, client certificates chained to `ssl_ca_file`).
//!
//! `http_ssl_client_authentication` (REST Proxy's `ssl.client.authentication`): `NONE`,
//! `REQUESTED` or `REQUIRED`. A verified client certificate's principal is what the Kafka
//! listeners make of it (`security::tls::principal_of_certificate`: `User:` + the subject DN in
//! RFC 2253 order, Kafka's default `ssl.principal.mapping.rules`); a required certificate that
//! is missing or not trusted fails the handshake (the connection is closed, logged and counted
//! as a failed authentication). The handshake must end within
//! [`super::REQUEST_READ_TIMEOUT`]. Memory: a TLS connection adds rustls' state and buffers
//! (about 17 KiB idle, measured on the Kafka listener) to the listener's per-connection bound.
//!
//! Not done: the admin listener stays plain HTTP; the start-up check that no other broker holds
//! `http_listen` probes with plain HTTP, so it does not recognise an HTTPS broker there.

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

use crate::config::BrokerConfig;
use crate::rt::net::TcpStream;
use crate::security::tls::{ClientAuth, Reloading, TlsFiles};

/// A connection of the HTTP listener.
pub enum HttpStream {
    Plain(TcpStream),
    /// Boxed: the TLS state (kilobytes) must not size plain connections.
    Tls(Box<futures_rustls::server::TlsStream<TcpStream>>),
}

impl HttpStream {
    /// The client's address.
    pub fn peer_addr(&self) -> Result<std::net::SocketAddr, crate::rt::net::Error> {
        match self {
            HttpStream::Plain(s) => s.peer_addr(),
            HttpStream::Tls(s) => s.get_ref().0.peer_addr(),
        }
    }
}

impl AsyncRead for HttpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            HttpStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            HttpStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HttpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            HttpStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            HttpStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            HttpStream::Plain(s) => Pin::new(s).poll_flush(cx),
            HttpStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            HttpStream::Plain(s) => Pin::new(s).poll_close(cx),
            HttpStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// `http_ssl_client_authentication` as the TLS code's client authentication; `None` for an
/// unknown value.
pub fn client_auth(text: &str) -> Option<ClientAuth> {
    match text.trim().to_ascii_uppercase().as_str() {
        "NONE" | "" => Some(ClientAuth::None),
        "REQUESTED" => Some(ClientAuth::Requested),
        "REQUIRED" => Some(ClientAuth::Required),
        _ => None,
    }
}

/// The listener's TLS configuration when `http_ssl_enabled` (`Ok(None)` when not); an error
/// names the setting or file that does not do. Checked at start (`super::auth::check_config`).
pub fn tls_config(config: &BrokerConfig) -> Result<Option<Reloading>, String> {
    if !config.http_ssl_enabled {
        return Ok(None);
    }
    let client_auth = client_auth(&config.http_ssl_client_authentication).ok_or_else(|| {
        format!(
            "http_ssl_client_authentication must be NONE, REQUESTED or REQUIRED, got '{}'",
            config.http_ssl_client_authentication
        )
    })?;
    if config.ssl_certificate_file.as_os_str().is_empty()
        || config.ssl_key_file.as_os_str().is_empty()
    {
        return Err("http_ssl_enabled needs ssl_certificate_file and ssl_key_file".into());
    }
    if client_auth != ClientAuth::None && config.ssl_ca_file.as_os_str().is_empty() {
        return Err("http_ssl_client_authentication REQUESTED/REQUIRED needs ssl_ca_file".into());
    }
    let files = TlsFiles {
        certificate: config.ssl_certificate_file.clone(),
        key: config.ssl_key_file.clone(),
        ca: config.ssl_ca_file.clone(),
        client_auth,
    };
    Reloading::new(files)
        .map(Some)
        .map_err(|e| format!("http_ssl_enabled: {e}"))
}

/// The connection as the handlers see it and its client certificate's principal, if any:
/// plain when `tls` is `None`, else after the TLS handshake (`Err` when it fails or does not
/// end within [`super::REQUEST_READ_TIMEOUT`]; logged and counted).
pub async fn accept(
    tls: Option<&Reloading>,
    stream: TcpStream,
    peer: &str,
) -> std::io::Result<(HttpStream, Option<Rc<str>>)> {
    let Some(tls) = tls else {
        return Ok((HttpStream::Plain(stream), None));
    };
    let handshake =
        crate::rt::timeout(super::REQUEST_READ_TIMEOUT, tls.acceptor().accept(stream)).await;
    let stream = match handshake {
        Some(Ok(stream)) => stream,
        Some(Err(e)) => {
            crate::metrics::record_authentication(false);
            tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
            return Err(e);
        }
        None => return Err(std::io::Error::other("HTTPS handshake timed out")),
    };
    let principal = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| crate::security::tls::principal_of_certificate(cert))
        .map(Rc::from);
    Ok((HttpStream::Tls(Box::new(stream)), principal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_settings_are_checked() {
        let mut config = BrokerConfig::default();
        assert!(tls_config(&config).unwrap().is_none());
        config.http_ssl_enabled = true;
        assert!(tls_config(&config)
            .err()
            .unwrap()
            .contains("ssl_certificate_file"));
        config.ssl_certificate_file = "/nonexistent/cert.pem".into();
        config.ssl_key_file = "/nonexistent/key.pem".into();
        config.http_ssl_client_authentication = "sometimes".into();
        assert!(tls_config(&config).err().unwrap().contains("REQUIRED"));
        config.http_ssl_client_authentication = "required".into();
        assert!(tls_config(&config).err().unwrap().contains("ssl_ca_file"));
        config.http_ssl_client_authentication = "NONE".into();
        assert!(tls_config(&config)
            .err()
            .unwrap()
            .contains("/nonexistent/cert.pem"));
        assert_eq!(client_auth("Requested"), Some(ClientAuth::Requested));
    }
}
