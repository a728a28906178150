//! How a broker connects to another broker's Kafka listener: Kafka's
//! `inter.broker.listener.name` (or `security.inter.broker.protocol`) with the broker's own
//! credentials. Used by every inter-broker Kafka-protocol client: the followers' replica
//! fetchers (`replica::client`) and [`super::broker_client::BrokerClient`] (transaction
//! markers, KIP-890 verifications).
//!
//! - The listener: other brokers are called at their registered (advertised) address on it
//!   (`BrokerRegistration::endpoint_on`); default the first listener, as before.
//! - TLS (SSL, SASL_SSL): rustls, servers verified against `ssl_ca_file` with the host name
//!   checked; this broker's `ssl_certificate_file`/`ssl_key_file` offered as its client
//!   certificate, so on an `ssl_client_auth = required` listener it is `User:<subject>`.
//! - SASL (SASL_PLAINTEXT, SASL_SSL): SaslHandshake v1 with
//!   `sasl_mechanism_inter_broker_protocol`, then SaslAuthenticate v2 rounds driven by the
//!   pure `security::sasl::client` with the username/password of
//!   `listener_name.<listener>.<mechanism>.sasl_jaas_config`. A refusal fails the connect
//!   with the server's message (the caller backs off and retries, as after any failed connect).
//! - KIP-368: when the server answers a session lifetime, the connection reports when it
//!   must be replaced ([`Connected::renew_at`], at 85% of the lifetime); its owner drops it
//!   then and connects again rather than re-authenticating in place.
//!
//! The settings are built once per process ([`install`], from `runtime`, on a node of a
//! cluster only: a single node calls no other broker, and its settings need no inter-broker
//! credentials) and read by every shard ([`current`]); without [`install`] connections are
//! plaintext to the first listener.
//!
//! Bounds: a SASL answer is at most [`SASL_ANSWER_BYTES_MAX`]; the whole connect (TCP, TLS,
//! SASL) is bounded by the caller's timeout; at most [`SASL_ROUNDS_MAX`] SaslAuthenticate
//! rounds. Not done: re-authentication on the same connection (a new connection instead),
//! OAUTHBEARER/GSSAPI as a broker's own mechanism, skipping host-name verification
//! (`ssl.endpoint.identification.algorithm = ""`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::config::{BrokerConfig, ConfigError, InterBrokerSettings, SecurityProtocol};
use crate::rt::net::TcpStream;
use crate::security::sasl::client::{ClientCredentials, ClientStep, SaslClient};

/// The largest SaslHandshake/SaslAuthenticate answer read.
pub const SASL_ANSWER_BYTES_MAX: usize = 64 * 1024;
/// The most SaslAuthenticate rounds of one exchange (SCRAM needs two).
pub const SASL_ROUNDS_MAX: usize = 4;
/// The client id brokers authenticate with.
const CLIENT_ID: &str = "freshet-inter-broker";

/// How this process connects to other brokers (module doc).
#[derive(Debug)]
pub struct InterBrokerSecurity {
    /// The listener other brokers are called on.
    pub listener: String,
    pub protocol: SecurityProtocol,
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<ClientCredentials>,
}

impl InterBrokerSecurity {
    /// Plaintext to the first listener (the behaviour without `inter_broker_listener_name`).
    pub fn plaintext() -> InterBrokerSecurity {
        InterBrokerSecurity {
            listener: String::new(),
            protocol: SecurityProtocol::Plaintext,
            tls: None,
            sasl: None,
        }
    }

    /// From the broker's configuration (reads the TLS files; call off the shards).
    pub fn from_config(config: &BrokerConfig) -> Result<InterBrokerSecurity, ConfigError> {
        let InterBrokerSettings {
            listener,
            protocol,
            sasl,
        } = config.inter_broker()?;
        let tls = if protocol.tls() {
            let files = crate::security::tls::TlsFiles {
                certificate: config.ssl_certificate_file.clone(),
                key: config.ssl_key_file.clone(),
                ca: config.ssl_ca_file.clone(),
                client_auth: crate::security::tls::ClientAuth::None,
            };
            Some(files.client_config().map_err(ConfigError)?)
        } else {
            None
        };
        Ok(InterBrokerSecurity {
            listener,
            protocol,
            tls,
            sasl,
        })
    }
}

static INSTALLED: OnceLock<Arc<InterBrokerSecurity>> = OnceLock::new();

/// Sets this process's inter-broker security (once, at start; a second call is ignored).
pub fn install(security: InterBrokerSecurity) {
    let _ = INSTALLED.set(Arc::new(security));
}

/// This process's inter-broker security ([`InterBrokerSecurity::plaintext`] if none was
/// installed).
pub fn current() -> Arc<InterBrokerSecurity> {
    static PLAIN: OnceLock<Arc<InterBrokerSecurity>> = OnceLock::new();
    INSTALLED
        .get()
        .or_else(|| Some(PLAIN.get_or_init(|| Arc::new(InterBrokerSecurity::plaintext()))))
        .cloned()
        .expect("some security")
}

/// A connection to another broker, plain or TLS.
pub enum BrokerStream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for BrokerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BrokerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BrokerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BrokerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BrokerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BrokerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BrokerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BrokerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BrokerStream::Plain(s) => Pin::new(s).poll_close(cx),
            BrokerStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// A connected (and authenticated) stream.
pub struct Connected {
    pub stream: BrokerStream,
    /// When the connection must be replaced (the server's KIP-368 session lifetime);
    /// `None`: never.
    pub renew_at: Option<Instant>,
}

impl Connected {
    /// Is it time to replace this connection?
    pub fn expired(&self) -> bool {
        self.renew_at.is_some_and(|at| Instant::now() >= at)
    }
}

/// `fut`'s output, or an error naming `what` if `limit` passes first.
async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    futures_lite::future::or(fut, async {
        crate::rt::sleep(limit).await;
        Err(format!("{what}: no answer within {} ms", limit.as_millis()))
    })
    .await
}

/// Connects to the broker at `addr` (whose advertised host is `host`, checked against its
/// TLS certificate), with TLS and SASL as `security` says, all within `timeout`.
pub async fn connect(
    addr: SocketAddr,
    host: &str,
    timeout: Duration,
    security: &InterBrokerSecurity,
) -> Result<Connected, String> {
    within(timeout, "connecting", async {
        let tcp = crate::rt::net::connect(addr, timeout)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut stream = match &security.tls {
            None => BrokerStream::Plain(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| format!("{host} as a TLS server name: {e}"))?;
                let tls = futures_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {addr}: {e}"))?;
                BrokerStream::Tls(Box::new(tls))
            }
        };
        let renew_at = match &security.sasl {
            None => None,
            Some(credentials) => authenticate(&mut stream, credentials).await?,
        };
        Ok(Connected { stream, renew_at })
    })
    .await
}

/// The SASL exchange on a new connection; when the session must be renewed.
async fn authenticate(
    stream: &mut BrokerStream,
    credentials: &ClientCredentials,
) -> Result<Option<Instant>, String> {
    let mut client = SaslClient::new(credentials.clone())?;
    let handshake = SaslHandshakeRequest::default()
        .with_mechanism(StrBytes::from_string(client.mechanism().into()));
    let answer = call(stream, 1, 0, &handshake).await?;
    if answer.error_code != 0 {
        return Err(format!(
            "SaslHandshake {}: error {} (the server offers {:?})",
            client.mechanism(),
            answer.error_code,
            answer.mechanisms
        ));
    }
    let mut token = client.first();
    for round in 1..=SASL_ROUNDS_MAX {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let answer = call(stream, 2, round as i32, &request).await?;
        if answer.error_code != 0 {
            return Err(format!(
                "SASL authentication as {} failed: error {}: {}",
                credentials.username,
                answer.error_code,
                answer.error_message.as_deref().unwrap_or("")
            ));
        }
        match client.next(&answer.auth_bytes)? {
            ClientStep::Send(next) => token = next,
            ClientStep::Done => {
                let lifetime = u64::try_from(answer.session_lifetime_ms).unwrap_or(0);
                return Ok((lifetime > 0)
                    .then(|| Instant::now() + Duration::from_millis(lifetime * 85 / 100)));
            }
        }
    }
    Err("SASL exchange did not end".into())
}

/// One request and its answer on `stream` (answers at most [`SASL_ANSWER_BYTES_MAX`]).
async fn call<R: Request>(
    stream: &mut BrokerStream,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<R::Response, String> {
    let frame = super::broker_client::encode_request(CLIENT_ID, version, correlation_id, body)
        .map_err(|e| e.to_string())?;
    let io = |e: io::Error| format!("SASL exchange: {e}");
    stream.write_all(&frame).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await.map_err(io)?;
    let n = super::broker_client::check_length(length, SASL_ANSWER_BYTES_MAX)?;
    let mut answer = vec![0u8; n];
    stream.read_exact(&mut answer).await.map_err(io)?;
    super::broker_client::decode_response::<R>(Bytes::from(answer), version, correlation_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings follow Kafka's rules: the named listener, else the one named by the
    /// protocol, else the first; SASL needs credentials, TLS a CA; both names set is refused.
    #[test]
    fn the_inter_broker_listener_and_its_credentials() {
        let base = BrokerConfig {
            listeners: vec![
                "PLAINTEXT://127.0.0.1:9092".into(),
                "INTERNAL://127.0.0.1:9093".into(),
            ],
            listener_security_protocol_map: vec!["INTERNAL:SASL_PLAINTEXT".into()],
            ..BrokerConfig::default()
        };
        let s = InterBrokerSecurity::from_config(&base).expect("default");
        assert_eq!(
            (s.listener.as_str(), s.protocol),
            ("PLAINTEXT", SecurityProtocol::Plaintext)
        );
        let named = BrokerConfig {
            inter_broker_listener_name: "INTERNAL".into(),
            sasl_mechanism_inter_broker_protocol: "SCRAM-SHA-512".into(),
            ..base.clone()
        };
        let e = InterBrokerSecurity::from_config(&named).unwrap_err();
        assert!(
            e.0.contains("listener_name.internal.scram-sha-512.sasl_jaas_config"),
            "{e}"
        );
        let toml = r#"
            listeners = ["PLAINTEXT://127.0.0.1:9092", "INTERNAL://127.0.0.1:9093"]
            listener_security_protocol_map = ["INTERNAL:SASL_PLAINTEXT"]
            inter_broker_listener_name = "INTERNAL"
            sasl_mechanism_inter_broker_protocol = "SCRAM-SHA-512"
            listener_name.internal.scram-sha-512.sasl_jaas_config = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="pw";'
        "#;
        let parsed: BrokerConfig = toml::from_str(toml).expect("toml");
        let s = InterBrokerSecurity::from_config(&parsed).expect("named");
        assert_eq!(s.listener, "INTERNAL");
        let sasl = s.sasl.expect("credentials");
        assert_eq!(
            (sasl.username.as_str(), sasl.password.as_str()),
            ("broker", "pw")
        );
        assert!(
            !format!("{:?}", parsed.listener_name).contains("pw"),
            "password hidden"
        );

        let both = BrokerConfig {
            security_inter_broker_protocol: "PLAINTEXT".into(),
            ..parsed.clone()
        };
        assert!(InterBrokerSecurity::from_config(&both)
            .unwrap_err()
            .0
            .contains("Only one"));
        let by_protocol = BrokerConfig {
            inter_broker_listener_name: String::new(),
            security_inter_broker_protocol: "SASL_PLAINTEXT".into(),
            ..parsed.clone()
        };
        assert!(
            InterBrokerSecurity::from_config(&by_protocol).is_err(),
            "no such listener"
        );
        let plain_mech = BrokerConfig {
            sasl_mechanism_inter_broker_protocol: "OAUTHBEARER".into(),
            ..parsed
        };
        assert!(InterBrokerSecurity::from_config(&plain_mech).is_err());
        let tls = BrokerConfig {
            listeners: vec!["SSL://127.0.0.1:9092".into()],
            ssl_certificate_file: "/nonexistent.pem".into(),
            ssl_key_file: "/nonexistent.key".into(),
            ..BrokerConfig::default()
        };
        assert!(tls.inter_broker().unwrap_err().0.contains("ssl_ca_file"));
    }

    /// A single node calls no other broker: a SASL-only or TLS-only single node stays valid
    /// without inter-broker credentials or a CA (as before); the same listeners in a cluster
    /// need them.
    #[test]
    fn only_a_cluster_node_needs_inter_broker_credentials() {
        let single = BrokerConfig {
            listeners: vec!["SASL_PLAINTEXT://127.0.0.1:9092".into()],
            ..BrokerConfig::default()
        };
        single.validate().expect("a single SASL-only node");
        let node = BrokerConfig {
            controller_quorum_voters: "1@127.0.0.1:19193".into(),
            node_id: 1,
            ..single
        };
        let e = node.validate().unwrap_err();
        assert!(e.0.contains("sasl_jaas_config"), "{e}");
    }
}
