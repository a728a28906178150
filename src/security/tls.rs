//! TLS for listeners with rustls (no OpenSSL): the server configuration from PEM files
//! (`ssl_certificate_file`, `ssl_key_file`, `ssl_ca_file`), TLS 1.2 and 1.3, client
//! certificates (`ssl_client_auth = none|requested|required`, verified against the CA file),
//! certificate reload without restart, and the principal of a client certificate.
//!
//! Reload: [`Reloading::acceptor`] checks the files' modification times at most once per
//! [`RELOAD_CHECK_INTERVAL`] and builds a new configuration when they changed; connections
//! already open keep the configuration they were accepted with. A new certificate that does not
//! load is logged and the old one kept.
//!
//! Principal: Kafka's default `ssl.principal.mapping.rules` (DEFAULT) give `User:` + the
//! client certificate's subject as `X500Principal.getName()` prints it (RFC 2253: the last RDN
//! first, `CN=alice,OU=eng,O=example`). [`subject_rfc2253`] reads the subject from the DER
//! certificate (a small bounded DER reader: the certificate was verified by rustls first).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How often a listener looks for changed certificate files.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

impl ClientAuth {
    /// From Kafka's value (`none` for anything else: the config was validated).
    pub fn parse(text: &str) -> ClientAuth {
        match text {
            "requested" => ClientAuth::Requested,
            "required" => ClientAuth::Required,
            _ => ClientAuth::None,
        }
    }
}

/// Where a TLS listener's certificate, key and CAs come from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// Empty: no client certificates are asked for.
    pub ca: PathBuf,
    pub client_auth: ClientAuth,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.certificate.as_path(), self.key.as_path()];
        if !self.ca.as_os_str().is_empty() {
            paths.push(self.ca.as_path());
        }
        paths
    }

    /// The files' modification times (None for one that cannot be read).
    fn stamps(&self) -> Vec<Option<SystemTime>> {
        self.paths()
            .into_iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Builds the rustls server configuration.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        // ring, not aws-lc-rs (rustls's default, which builds C with cmake); ring offers no
        // post-quantum key exchange, hence its deprecation note.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.certificate)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("ssl_certificate_file {}: {e}", self.certificate.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "ssl_certificate_file {}: no certificate",
                self.certificate.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("ssl_key_file {}: {e}", self.key.display()))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = match self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            auth => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in CertificateDer::pem_file_iter(&self.ca)
                    .map_err(|e| format!("ssl_ca_file {}: {e}", self.ca.display()))?
                {
                    let ca = ca.map_err(|e| format!("ssl_ca_file {}: {e}", self.ca.display()))?;
                    roots
                        .add(ca)
                        .map_err(|e| format!("ssl_ca_file {}: {e}", self.ca.display()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let verifier = if auth == ClientAuth::Requested {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| format!("ssl_ca_file {}: {e}", self.ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("TLS certificate and key: {e}"))?;
        Ok(Arc::new(config))
    }
}

impl TlsFiles {
    /// The rustls client configuration a broker connects to another broker's TLS listener
    /// with (`inter_broker_listener_name` on an SSL or SASL_SSL listener): the servers are
    /// verified against `ca` (Kafka's truststore; the host name is checked, Kafka's
    /// `ssl.endpoint.identification.algorithm = https`), and this broker's own certificate
    /// and key are offered when the server asks for a client certificate (Kafka uses its
    /// keystore both ways).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        if self.ca.as_os_str().is_empty() {
            return Err("a TLS inter-broker listener needs ssl_ca_file (the CA that signed the brokers' certificates)".into());
        }
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&self.ca)
            .map_err(|e| format!("ssl_ca_file {}: {e}", self.ca.display()))?
        {
            let ca = ca.map_err(|e| format!("ssl_ca_file {}: {e}", self.ca.display()))?;
            roots
                .add(ca)
                .map_err(|e| format!("ssl_ca_file {}: {e}", self.ca.display()))?;
        }
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.certificate)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("ssl_certificate_file {}: {e}", self.certificate.display()))?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("ssl_key_file {}: {e}", self.key.display()))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("TLS certificate and key: {e}"))?;
        Ok(Arc::new(config))
    }
}

/// A rustls configuration built from [`TlsFiles`] and built again when the files change
/// (looked at most once per [`RELOAD_CHECK_INTERVAL`]); a change that does not load keeps the
/// previous configuration. The server and client sides below are this with their loader.
struct Reloadable<C> {
    files: TlsFiles,
    load: fn(&TlsFiles) -> Result<Arc<C>, String>,
    /// What a reload is logged as ("certificate", "client certificate").
    what: &'static str,
    current: RefCell<(Arc<C>, Vec<Option<SystemTime>>)>,
    checked: Cell<Instant>,
}

impl<C> Reloadable<C> {
    fn new(
        files: TlsFiles,
        load: fn(&TlsFiles) -> Result<Arc<C>, String>,
        what: &'static str,
    ) -> Result<Reloadable<C>, String> {
        let stamps = files.stamps();
        let config = load(&files)?;
        Ok(Reloadable {
            files,
            load,
            what,
            current: RefCell::new((config, stamps)),
            checked: Cell::new(Instant::now()),
        })
    }

    /// The newest configuration that loaded.
    fn current(&self) -> Arc<C> {
        if self.checked.get().elapsed() >= RELOAD_CHECK_INTERVAL {
            self.checked.set(Instant::now());
            let stamps = self.files.stamps();
            if stamps != self.current.borrow().1 {
                match (self.load)(&self.files) {
                    Ok(config) => {
                        tracing::info!(certificate = %self.files.certificate.display(), "TLS {} reloaded", self.what);
                        *self.current.borrow_mut() = (config, stamps);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous {}", self.what);
                        self.current.borrow_mut().1 = stamps;
                    }
                }
            }
        }
        self.current.borrow().0.clone()
    }
}

/// A listener's TLS configuration, re-read when its files change. One per listener per shard.
pub struct Reloading(Reloadable<rustls::ServerConfig>);

impl Reloading {
    /// Loads the files; an error names the file that failed.
    pub fn new(files: TlsFiles) -> Result<Reloading, String> {
        Reloadable::new(files, TlsFiles::server_config, "certificate").map(Reloading)
    }

    /// The acceptor for a new connection, with the newest configuration that loaded.
    pub fn acceptor(&self) -> futures_rustls::TlsAcceptor {
        futures_rustls::TlsAcceptor::from(self.0.current())
    }
}

/// A client configuration ([`TlsFiles::client_config`]) re-read when its files change, as
/// [`Reloading`] does for servers: for links that connect again and again (the controller
/// transport's), so that a renewed certificate is presented without a restart.
pub struct ReloadingClient(Reloadable<rustls::ClientConfig>);

impl ReloadingClient {
    /// Loads the files; an error names the file that failed.
    pub fn new(files: TlsFiles) -> Result<ReloadingClient, String> {
        Reloadable::new(files, TlsFiles::client_config, "client certificate").map(ReloadingClient)
    }

    /// The connector for a new connection, with the newest configuration that loaded.
    pub fn connector(&self) -> futures_rustls::TlsConnector {
        futures_rustls::TlsConnector::from(self.0.current())
    }
}

/// One DER element: its tag, its contents and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// A dotted OID from its DER contents.
fn oid_text(oid: &[u8]) -> Option<String> {
    let (&first, rest) = oid.split_first()?;
    let mut parts = vec![
        (first / 40).min(2) as u64,
        (first - 40 * (first / 40).min(2)) as u64,
    ];
    let mut value: u64 = 0;
    for &b in rest {
        if value > (u64::MAX >> 7) {
            return None;
        }
        value = (value << 7) | (b & 0x7f) as u64;
        if b & 0x80 == 0 {
            parts.push(value);
            value = 0;
        }
    }
    Some(
        parts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// The RFC 2253 keyword Java prints for an attribute OID, if it has one.
fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// An attribute value as RFC 2253 writes it: a string with `,+"\<>;` (and a leading `#` or
/// space, a trailing space) escaped.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A directory string's text, for the string types certificates use.
fn string_value(tag: u8, contents: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 | 0x14 => std::str::from_utf8(contents).ok().map(str::to_string),
        0x1e => {
            let units: Vec<u16> = contents
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// The certificate's subject as `X500Principal.getName()` (RFC 2253) prints it, or `None`
/// when the DER does not parse.
pub fn subject_rfc2253(certificate: &[u8]) -> Option<String> {
    let (_, cert, _) = der_element(certificate)?;
    let (_, tbs, _) = der_element(cert)?;
    let mut rest = tbs;
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit version
    }
    // serial, signature algorithm, issuer, validity, then the subject.
    for _ in 0..4 {
        rest = der_element(rest)?.2;
    }
    let (tag, subject, _) = der_element(rest)?;
    if tag != 0x30 {
        return None;
    }
    let mut rdns = Vec::new();
    let mut set_rest = subject;
    while !set_rest.is_empty() {
        let (tag, set, next) = der_element(set_rest)?;
        if tag != 0x31 {
            return None;
        }
        set_rest = next;
        let mut attributes = Vec::new();
        let mut attr_rest = set;
        while !attr_rest.is_empty() {
            let (_, attr, next) = der_element(attr_rest)?;
            attr_rest = next;
            let (oid_tag, oid, value_rest) = der_element(attr)?;
            if oid_tag != 0x06 {
                return None;
            }
            let oid = oid_text(oid)?;
            let (value_tag, value, _) = der_element(value_rest)?;
            let text = match (keyword(&oid), string_value(value_tag, value)) {
                (Some(k), Some(v)) => format!("{k}={}", escape_value(&v)),
                _ => {
                    let whole = &value_rest[..value_rest.len() - der_element(value_rest)?.2.len()];
                    let hex: String = whole.iter().map(|b| format!("{b:02x}")).collect();
                    format!("{oid}=#{hex}")
                }
            };
            attributes.push(text);
        }
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// Kafka's principal for a verified client certificate: `User:` + its subject (RFC 2253).
pub fn principal_of_certificate(certificate: &[u8]) -> Option<String> {
    subject_rfc2253(certificate).map(|dn| format!("User:{dn}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The subject prints as Java's X500Principal.getName(): last RDN first, keywords for the
    /// usual attributes, special characters escaped, others as OID=#hex.
    #[test]
    fn subject_prints_as_rfc2253() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "DE");
        dn.push(rcgen::DnType::OrganizationName, "Example, Inc");
        dn.push(rcgen::DnType::OrganizationalUnitName, "eng");
        dn.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            principal_of_certificate(cert.der()).as_deref(),
            Some("User:CN=alice,OU=eng,O=Example\\, Inc,C=DE")
        );
    }

    /// Truncated or garbage DER gives None, never a panic.
    #[test]
    fn garbage_certificates_give_no_subject() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().to_vec();
        for cut in 0..der.len().min(200) {
            let _ = subject_rfc2253(&der[..cut]);
        }
        assert_eq!(subject_rfc2253(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(subject_rfc2253(b""), None);
    }

    #[test]
    fn rfc2253_escapes() {
        assert_eq!(escape_value(" a,b+c "), "\\ a\\,b\\+c\\ ");
        assert_eq!(escape_value("#x"), "\\#x");
    }
}
