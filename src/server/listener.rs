//! One Kafka listener as a shard serves it: its name, its security protocol, its TLS
//! configuration (reloaded when the certificate files change) and the SASL mechanisms it
//! offers. Built per shard from the configuration ([`crate::config::ListenerSpec`]); the
//! accept loop hands it to every connection it accepts.

use std::rc::Rc;

use crate::config::{BrokerConfig, ListenerSpec, SecurityProtocol};
use crate::security::oauth::OAuthValidator;
use crate::security::sasl::SaslServer;
use crate::security::tls::{ClientAuth, Reloading, TlsFiles};

/// A listener on one shard. Lives as long as the shard's accept loop and its connections.
pub struct Listener {
    /// The listener name (`PLAINTEXT`, `SASL_SSL`, or a mapped name).
    pub name: Rc<str>,
    pub protocol: SecurityProtocol,
    /// The TLS configuration of an SSL or SASL_SSL listener.
    pub tls: Option<Reloading>,
    /// The SASL mechanisms offered (empty for a listener without SASL).
    pub sasl_mechanisms: Vec<String>,
    /// OAUTHBEARER's token validator, when offered (its JWKS keys loaded).
    pub oauth: Option<Rc<OAuthValidator>>,
}

impl Listener {
    /// The listener `spec` of `config`; an error names the TLS file that does not load.
    pub fn new(config: &BrokerConfig, spec: &ListenerSpec) -> Result<Listener, String> {
        let tls = if spec.protocol.tls() {
            let files = TlsFiles {
                certificate: config.ssl_certificate_file.clone(),
                key: config.ssl_key_file.clone(),
                ca: config.ssl_ca_file.clone(),
                // As Kafka (KIP-684): `ssl.client.auth` is for SSL listeners; a SASL_SSL
                // listener authenticates with SASL and asks for no certificate.
                client_auth: if spec.protocol.sasl() {
                    ClientAuth::None
                } else {
                    ClientAuth::parse(&config.ssl_client_auth)
                },
            };
            Some(Reloading::new(files).map_err(|e| format!("listener {}: {e}", spec.name))?)
        } else {
            None
        };
        let oauth = match config.oauth_mode() {
            Ok(Some(mode)) if spec.protocol.sasl() => Some(Rc::new(
                OAuthValidator::new(mode).map_err(|e| format!("listener {}: {e}", spec.name))?,
            )),
            Ok(_) => None,
            Err(e) => return Err(format!("listener {}: {}", spec.name, e.0)),
        };
        Ok(Listener {
            oauth,
            name: Rc::from(spec.name.as_str()),
            protocol: spec.protocol,
            tls,
            sasl_mechanisms: if spec.protocol.sasl() {
                config.sasl_enabled_mechanisms.clone()
            } else {
                Vec::new()
            },
        })
    }

    /// A new connection's (or re-authentication's) SASL server.
    pub fn sasl_server(&self) -> SaslServer {
        SaslServer::new(&self.sasl_mechanisms).with_oauth(self.oauth.clone())
    }
}
