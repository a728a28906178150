//! HTTP authentication, for the HTTP data listener (`http_authentication_method`) and the admin
//! listener (`admin_authentication_method`), with Confluent REST Proxy's methods:
//!
//! - `NONE` (the default): no authentication; the request has no principal. (The data listener
//!   then refuses everything while the authorizer is on, as before; `super::serve_one`.)
//! - `BASIC` (RFC 7617): `Authorization: Basic base64(user:password)`, checked against the
//!   user's stored SCRAM credential (SCRAM-SHA-512 first, then SCRAM-SHA-256), exactly as a
//!   SASL/PLAIN login is (`security::sasl::plain`): the password is never stored, the
//!   comparison of the derived key is constant-time. The principal is `User:<user>`.
//! - `BEARER` (RFC 6750): `Authorization: Bearer <JWT>`, validated by the broker's OAUTHBEARER
//!   validator (`security::oauth`: unsecured tokens when
//!   `sasl_oauthbearer_unsecured_validator_enabled`, else signed tokens against the JWKS file
//!   of `sasl_oauthbearer_jwks_endpoint_url`), whether or not OAUTHBEARER is among the SASL
//!   mechanisms. The principal is `User:<the token's principal claim>`.
//!
//! A request without credentials, with another scheme, or with credentials that do not check
//! is answered 401 with `WWW-Authenticate` naming the method and `http_authentication_realm`
//! (a refused bearer token adds RFC 6750's `error="invalid_token"`). Bad credentials are
//! answered after `connection_failed_authentication_delay_ms` (as Kafka's SASL failures),
//! counted in `freshet_authentication_failures_total`, and logged at most once per
//! [`AUTH_FAILURE_LOG_INTERVAL`] per listener and shard (with how many were not logged);
//! neither a password nor a token is ever logged ([`Credentials`]' `Debug` hides them).
//! A failure keeps no state.
//!
//! Cost: a Basic check derives the SCRAM key (PBKDF2, `iterations` rounds: 4096 by default,
//! at most 16384) — milliseconds of CPU. It never runs on the shard: it runs on the blocking
//! thread pool (`rt::spawn_blocking`), at most [`BASIC_DERIVATIONS_IN_FLIGHT_MAX`] at once per
//! shard (other checks wait their turn, so a flood of bad passwords costs at most that many
//! threads' CPU, never the shard's). A verified password is remembered per shard
//! ([`BasicCache`]: a keyed HMAC of user and password, not the password, next to the stored
//! key it was checked against), so the next request of that user with that password costs one
//! HMAC; a changed or deleted credential no longer matches. The HTTP listener serves one
//! request per connection, so this cache is per shard, not per connection. Memory: at most
//! [`BASIC_CACHE_ENTRIES_MAX`] entries of (user name, 64-byte stored key, 32-byte tag) per
//! listener and shard; only verified users enter it.
//!
//! A verified HTTPS client certificate (`super::tls`) authenticates a data-listener request
//! before this module is asked. Not done: HTTPS on the admin listener; a bearer token is
//! checked when the request arrives, a stream it opened is not closed at the token's
//! expiry; Confluent's `authentication.roles` (use ACLs) and credential propagation
//! (`confluent.rest.auth.propagate.method`: the broker checks the principal itself).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::wire::{base64_decode, reason, Head};
use crate::config::BrokerConfig;
use crate::security::oauth::OAuthValidator;
use crate::security::scram::{constant_time_eq, random_bytes, ScramCredential, ScramMechanism};
use crate::shard::Shard;

/// Verified Basic credentials remembered per listener and shard.
pub const BASIC_CACHE_ENTRIES_MAX: usize = 1024;
/// Basic checks (PBKDF2 derivations) running at once per listener and shard.
pub const BASIC_DERIVATIONS_IN_FLIGHT_MAX: u64 = 2;
/// Authentication failures are logged at most once per this long per listener and shard.
pub const AUTH_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// An authentication method (`http_authentication_method`, `admin_authentication_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    None,
    Basic,
    Bearer,
}

impl AuthMethod {
    /// From the setting's value (`NONE`, `BASIC`, `BEARER`, any case).
    pub fn parse(text: &str) -> Option<AuthMethod> {
        match text.trim().to_ascii_uppercase().as_str() {
            "NONE" | "" => Some(AuthMethod::None),
            "BASIC" => Some(AuthMethod::Basic),
            "BEARER" => Some(AuthMethod::Bearer),
            _ => None,
        }
    }

    /// The HTTP authentication scheme (`WWW-Authenticate`).
    pub fn scheme(self) -> &'static str {
        match self {
            AuthMethod::Bearer => "Bearer",
            _ => "Basic",
        }
    }
}

/// Checks the authentication settings: both methods are known, and `BEARER` has a validator
/// (the unsecured one or a JWKS file that loads). Called from `BrokerConfig::validate`.
pub fn check_config(config: &BrokerConfig) -> Result<(), String> {
    for (name, value) in [
        (
            "http_authentication_method",
            &config.http_authentication_method,
        ),
        (
            "admin_authentication_method",
            &config.admin_authentication_method,
        ),
    ] {
        match AuthMethod::parse(value) {
            None => {
                return Err(format!(
                    "{name} must be NONE, BASIC or BEARER, got '{value}'"
                ))
            }
            Some(AuthMethod::Bearer) => {
                bearer_validator(config).map_err(|e| format!("{name} = BEARER: {e}"))?;
            }
            Some(_) => {}
        }
    }
    super::tls::tls_config(config)?;
    Ok(())
}

/// The OAUTHBEARER validator the `sasl_oauthbearer_*` settings describe, whether or not
/// OAUTHBEARER is a SASL mechanism of a listener.
fn bearer_validator(config: &BrokerConfig) -> Result<OAuthValidator, String> {
    // `oauth_mode` answers for the SASL listeners, so only when OAUTHBEARER is enabled there:
    // ask it about a copy where it is.
    let mut settings = config.clone();
    settings.sasl_enabled_mechanisms = vec!["OAUTHBEARER".into()];
    match settings.oauth_mode() {
        Ok(Some(mode)) => OAuthValidator::new(mode),
        Ok(None) => Err("no OAUTHBEARER validator".into()),
        Err(e) => Err(e.0),
    }
}

/// The credentials an `Authorization` header carries. `Debug` never shows the secret.
#[derive(PartialEq, Eq)]
pub enum Credentials {
    Basic { user: String, password: Vec<u8> },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user:?}, <password>)"),
            Credentials::Bearer(_) => write!(f, "Bearer(<token>)"),
        }
    }
}

/// Parses an `Authorization` header value (the scheme in any case, RFC 7235); the error says
/// why it is not usable (for the log).
pub fn parse_authorization(value: &str) -> Result<Credentials, &'static str> {
    let (scheme, rest) = value
        .trim()
        .split_once(' ')
        .ok_or("no credentials after the scheme")?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest).ok_or("Basic credentials are not base64")?;
        let colon = decoded
            .iter()
            .position(|b| *b == b':')
            .ok_or("Basic credentials have no ':'")?;
        let user = std::str::from_utf8(&decoded[..colon]).map_err(|_| "user is not UTF-8")?;
        if user.is_empty() {
            return Err("empty user name");
        }
        Ok(Credentials::Basic {
            user: user.to_string(),
            password: decoded[colon + 1..].to_vec(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err("empty bearer token");
        }
        Ok(Credentials::Bearer(rest.to_string()))
    } else {
        Err("unknown authentication scheme")
    }
}

/// Why a request is not authenticated: answered 401.
#[derive(Debug, PartialEq, Eq)]
pub struct Unauthenticated {
    /// For the client (the JSON body's message).
    pub message: &'static str,
    /// Credentials were sent and did not check (delayed, counted and logged), rather than
    /// missing or of another scheme.
    pub bad_credentials: bool,
    /// RFC 6750's `error` of a refused bearer token (`invalid_token`, `insufficient_scope`).
    pub bearer_error: Option<&'static str>,
}

impl Unauthenticated {
    fn missing(message: &'static str) -> Unauthenticated {
        Unauthenticated {
            message,
            bad_credentials: false,
            bearer_error: None,
        }
    }

    fn bad(message: &'static str) -> Unauthenticated {
        Unauthenticated {
            message,
            bad_credentials: true,
            bearer_error: None,
        }
    }
}

/// The `WWW-Authenticate` value for `method` in `realm`.
pub fn challenge(method: AuthMethod, realm: &str, bearer_error: Option<&str>) -> String {
    let realm = realm.replace(['"', '\\', '\r', '\n'], "");
    match (method, bearer_error) {
        (AuthMethod::Bearer, Some(error)) => format!("Bearer realm=\"{realm}\", error=\"{error}\""),
        (AuthMethod::Bearer, None) => format!("Bearer realm=\"{realm}\""),
        _ => format!("Basic realm=\"{realm}\", charset=\"UTF-8\""),
    }
}

/// Verified Basic credentials of one listener on one shard: user → the mechanism and stored
/// key the password was checked against, and a tag (HMAC-SHA-256 under a random key of this
/// cache, of mechanism, user and password). A hit needs the same tag and the same stored key
/// as now (so a changed credential misses). At most [`BASIC_CACHE_ENTRIES_MAX`] entries.
pub struct BasicCache {
    key: Vec<u8>,
    entries: HashMap<String, CacheEntry>,
}

struct CacheEntry {
    mechanism: ScramMechanism,
    stored_key: Vec<u8>,
    tag: Vec<u8>,
}

impl BasicCache {
    pub fn new() -> BasicCache {
        BasicCache {
            key: random_bytes(32),
            entries: HashMap::new(),
        }
    }

    /// The tag of (mechanism, user, password): one HMAC, cheap.
    pub fn tag(&self, mechanism: ScramMechanism, user: &str, password: &[u8]) -> Vec<u8> {
        let mut data = Vec::with_capacity(user.len() + password.len() + 16);
        data.extend_from_slice(mechanism.name().as_bytes());
        data.push(0);
        data.extend_from_slice(user.as_bytes());
        data.push(0);
        data.extend_from_slice(password);
        ScramMechanism::Sha256.hmac(&self.key, &data)
    }

    /// Was this password verified against this stored key?
    pub fn hit(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        stored_key: &[u8],
        tag: &[u8],
    ) -> bool {
        self.entries.get(user).is_some_and(|e| {
            e.mechanism == mechanism
                && constant_time_eq(&e.stored_key, stored_key)
                && constant_time_eq(&e.tag, tag)
        })
    }

    /// Remembers a verified password (an arbitrary entry leaves when full).
    pub fn insert(
        &mut self,
        user: &str,
        mechanism: ScramMechanism,
        stored_key: &[u8],
        tag: Vec<u8>,
    ) {
        if self.entries.len() >= BASIC_CACHE_ENTRIES_MAX && !self.entries.contains_key(user) {
            let victim = self.entries.keys().next().cloned();
            if let Some(victim) = victim {
                self.entries.remove(&victim);
            }
        }
        self.entries.insert(
            user.to_string(),
            CacheEntry {
                mechanism,
                stored_key: stored_key.to_vec(),
                tag,
            },
        );
        assert!(self.entries.len() <= BASIC_CACHE_ENTRIES_MAX);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Default for BasicCache {
    fn default() -> Self {
        Self::new()
    }
}

/// One listener's authentication on one shard. Created by the listener's accept loop (the
/// HTTP listener on every shard, the admin listener on shard 0) and dropped with it.
pub struct Authenticator {
    pub method: AuthMethod,
    realm: String,
    /// `http` or `admin`, for the log.
    listener: &'static str,
    /// The bearer validator (`BEARER`; `None` if it did not build: every token is refused).
    oauth: Option<OAuthValidator>,
    cache: RefCell<BasicCache>,
    derivations: crate::rt::sync::Semaphore,
    /// When a failure was last logged, and the failures not logged since.
    failures: Cell<(Option<Instant>, u64)>,
}

impl Authenticator {
    /// The authenticator of a listener whose method setting is `method` (checked at start by
    /// [`check_config`]; an unknown value is refused here too, failing closed).
    pub fn new(config: &BrokerConfig, method: &str, listener: &'static str) -> Authenticator {
        let method = AuthMethod::parse(method).unwrap_or(AuthMethod::Basic);
        let oauth = match method {
            AuthMethod::Bearer => bearer_validator(config)
                .map_err(|e| tracing::error!(listener, error = %e, "no bearer token validator; every token is refused"))
                .ok(),
            _ => None,
        };
        Authenticator {
            method,
            realm: config.http_authentication_realm.clone(),
            listener,
            oauth,
            cache: RefCell::new(BasicCache::new()),
            derivations: crate::rt::sync::Semaphore::new(BASIC_DERIVATIONS_IN_FLIGHT_MAX),
            failures: Cell::new((None, 0)),
        }
    }

    /// Whether requests must authenticate.
    pub fn is_on(&self) -> bool {
        self.method != AuthMethod::None
    }

    /// The principal (`User:name`) of the request with head `head` from `peer`, or why not.
    pub async fn authenticate(
        &self,
        shard: &Shard,
        head: &Head,
        peer: &str,
    ) -> Result<Rc<str>, Unauthenticated> {
        let result = match head.header("authorization").map(parse_authorization) {
            None => Err(Unauthenticated::missing("authentication required")),
            Some(Err(why)) => {
                self.failed(shard, peer, None, why).await;
                Err(Unauthenticated::bad("bad Authorization header"))
            }
            Some(Ok(credentials)) => match (self.method, credentials) {
                (AuthMethod::Basic, Credentials::Basic { user, password }) => {
                    self.basic(shard, peer, user, password).await
                }
                (AuthMethod::Bearer, Credentials::Bearer(token)) => {
                    self.bearer(shard, peer, &token).await
                }
                _ => Err(Unauthenticated::missing(
                    "authentication required (another scheme)",
                )),
            },
        };
        if let Ok(principal) = &result {
            crate::metrics::record_authentication(true);
            tracing::debug!(listener = self.listener, %peer, %principal, "HTTP authentication done");
        }
        result
    }

    async fn basic(
        &self,
        shard: &Shard,
        peer: &str,
        user: String,
        password: Vec<u8>,
    ) -> Result<Rc<str>, Unauthenticated> {
        let metadata = shard.metadata();
        let stored = [ScramMechanism::Sha512, ScramMechanism::Sha256]
            .into_iter()
            .find_map(|m| {
                let s = metadata.scram_credentials.get(&user)?.get(m.name())?;
                Some((
                    m,
                    ScramCredential {
                        salt: s.salt.clone(),
                        stored_key: s.stored_key.clone(),
                        server_key: s.server_key.clone(),
                        iterations: s.iterations,
                    },
                ))
            });
        drop(metadata);
        let Some((mechanism, credential)) = stored else {
            self.failed(shard, peer, Some(&user), "unknown user").await;
            return Err(Unauthenticated::bad("invalid username or password"));
        };
        let tag = self.cache.borrow().tag(mechanism, &user, &password);
        let stored_key = credential.stored_key.clone();
        if self.cache.borrow().hit(&user, mechanism, &stored_key, &tag) {
            return Ok(Rc::from(format!("User:{user}")));
        }
        let matches = {
            let Ok(_permit) = self.derivations.acquire_permit(1).await else {
                return Err(Unauthenticated::missing("the listener is closing"));
            };
            crate::rt::spawn_blocking(move || credential.matches_password(mechanism, &password))
                .await
        };
        if matches {
            self.cache
                .borrow_mut()
                .insert(&user, mechanism, &stored_key, tag);
            Ok(Rc::from(format!("User:{user}")))
        } else {
            self.failed(shard, peer, Some(&user), "wrong password")
                .await;
            Err(Unauthenticated::bad("invalid username or password"))
        }
    }

    async fn bearer(
        &self,
        shard: &Shard,
        peer: &str,
        token: &str,
    ) -> Result<Rc<str>, Unauthenticated> {
        let validated = match &self.oauth {
            Some(validator) => validator
                .validate(token, crate::security::oauth::now_ms())
                .map_err(|refused| (refused.status, refused.reason)),
            None => Err(("invalid_token", "no validator".to_string())),
        };
        match validated {
            Ok(valid) => Ok(Rc::from(format!("User:{}", valid.principal))),
            Err((status, why)) => {
                self.failed(shard, peer, None, &why).await;
                Err(Unauthenticated {
                    message: "invalid bearer token",
                    bad_credentials: true,
                    bearer_error: Some(status),
                })
            }
        }
    }

    /// A failed authentication: counted, logged (rate-limited), answered after the delay.
    async fn failed(&self, shard: &Shard, peer: &str, user: Option<&str>, why: &str) {
        crate::metrics::record_authentication(false);
        let (last, suppressed) = self.failures.get();
        if last.is_none_or(|t| t.elapsed() >= AUTH_FAILURE_LOG_INTERVAL) {
            tracing::warn!(
                listener = self.listener,
                %peer,
                user = user.unwrap_or("-"),
                reason = why,
                not_logged_before = suppressed,
                "HTTP authentication failed"
            );
            self.failures.set((Some(Instant::now()), 0));
        } else {
            self.failures.set((last, suppressed + 1));
        }
        let delay = Duration::from_millis(shard.config.connection_failed_authentication_delay_ms);
        if !delay.is_zero() {
            crate::rt::sleep(delay).await;
        }
    }

    /// The `WWW-Authenticate` value answering `refusal`.
    pub fn challenge(&self, refusal: &Unauthenticated) -> String {
        challenge(self.method, &self.realm, refusal.bearer_error)
    }

    /// The data listener's 401: the REST proxy's JSON error and `WWW-Authenticate`.
    pub fn unauthorized_response(&self, refusal: &Unauthenticated) -> Vec<u8> {
        let body = super::wire::error_body(40101, refusal.message);
        format!(
            "HTTP/1.1 401 {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nWWW-Authenticate: {}\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n{body}",
            reason(401),
            body.len(),
            self.challenge(refusal)
        )
        .into_bytes()
    }

    /// Verified Basic credentials held (for tests and the module's memory bound).
    pub fn cached(&self) -> usize {
        self.cache.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        super::super::wire::base64_encode(text.as_bytes())
    }

    #[test]
    fn methods_parse_in_any_case_and_unknown_ones_do_not() {
        assert_eq!(AuthMethod::parse("NONE"), Some(AuthMethod::None));
        assert_eq!(AuthMethod::parse("basic"), Some(AuthMethod::Basic));
        assert_eq!(AuthMethod::parse(" Bearer "), Some(AuthMethod::Bearer));
        assert_eq!(AuthMethod::parse("digest"), None);
    }

    #[test]
    fn authorization_headers_parse_and_garbage_does_not() {
        assert_eq!(
            parse_authorization(&format!("Basic {}", b64("alice:p:w"))),
            Ok(Credentials::Basic {
                user: "alice".into(),
                password: b"p:w".to_vec()
            })
        );
        assert_eq!(
            parse_authorization(&format!("basic {}", b64("bob:"))),
            Ok(Credentials::Basic {
                user: "bob".into(),
                password: Vec::new()
            })
        );
        assert_eq!(
            parse_authorization("Bearer a.b.c"),
            Ok(Credentials::Bearer("a.b.c".into()))
        );
        for bad in [
            "Basic",
            "Basic !!!",
            &format!("Basic {}", b64("nocolon")),
            &format!("Basic {}", b64(":pw")),
            "Bearer ",
            "Digest x",
            "",
            "\u{0}\u{1}",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_settings_are_checked_at_start() {
        let mut config = BrokerConfig::default();
        assert_eq!(check_config(&config), Ok(()));
        config.http_authentication_method = "basic".into();
        assert_eq!(check_config(&config), Ok(()));
        config.admin_authentication_method = "DIGEST".into();
        assert!(check_config(&config)
            .unwrap_err()
            .contains("admin_authentication_method"));
        config.admin_authentication_method = "NONE".into();
        // BEARER needs a validator: neither the unsecured one nor a JWKS file is configured.
        config.http_authentication_method = "BEARER".into();
        assert!(check_config(&config)
            .unwrap_err()
            .contains("http_authentication_method = BEARER"));
        config.sasl_oauthbearer_unsecured_validator_enabled = true;
        assert_eq!(check_config(&config), Ok(()));
        config.sasl_oauthbearer_unsecured_validator_enabled = false;
        config.sasl_oauthbearer_jwks_endpoint_url = "file:///nonexistent/jwks.json".into();
        assert!(
            check_config(&config).is_err(),
            "a JWKS file that does not load"
        );
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let c = Credentials::Basic {
            user: "alice".into(),
            password: b"hunter2".to_vec(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Bearer("s3cr3t.jwt".into())).contains("s3cr3t"));
    }

    #[test]
    fn challenges_name_the_scheme_and_realm() {
        assert_eq!(
            challenge(AuthMethod::Basic, "Freshet", None),
            "Basic realm=\"Freshet\", charset=\"UTF-8\""
        );
        assert_eq!(
            challenge(AuthMethod::Bearer, "R\"x", Some("invalid_token")),
            "Bearer realm=\"Rx\", error=\"invalid_token\""
        );
    }

    #[test]
    fn the_cache_hits_only_the_same_password_and_stored_key_and_is_bounded() {
        let mut cache = BasicCache::new();
        let m = ScramMechanism::Sha512;
        let tag = cache.tag(m, "alice", b"pw");
        cache.insert("alice", m, b"key1", tag.clone());
        assert!(cache.hit("alice", m, b"key1", &tag));
        assert!(!cache.hit("alice", m, b"key1", &cache.tag(m, "alice", b"pw2")));
        assert!(
            !cache.hit("alice", m, b"key2", &tag),
            "a changed credential"
        );
        assert!(!cache.hit("alice", ScramMechanism::Sha256, b"key1", &tag));
        assert!(!cache.hit("bob", m, b"key1", &tag));
        // Another cache (another shard or a restart) has another key: tags do not carry over.
        assert_ne!(BasicCache::new().tag(m, "alice", b"pw"), tag);
        for i in 0..BASIC_CACHE_ENTRIES_MAX + 10 {
            let user = format!("u{i}");
            let tag = cache.tag(m, &user, b"pw");
            cache.insert(&user, m, b"k", tag);
        }
        assert_eq!(cache.len(), BASIC_CACHE_ENTRIES_MAX);
    }

    /// What a Basic check costs without the cache (one PBKDF2 at Kafka's default 4096
    /// iterations) and with it (one HMAC); printed with `--nocapture`. The cache must be at
    /// least 50 times cheaper.
    #[test]
    fn a_cached_check_is_much_cheaper_than_a_derivation() {
        let m = ScramMechanism::Sha512;
        let credential = ScramCredential::new(m, "secret", 4096);
        let started = Instant::now();
        assert!(credential.matches_password(m, b"secret"));
        let derivation = started.elapsed();
        let cache = BasicCache::new();
        let started = Instant::now();
        for _ in 0..100 {
            std::hint::black_box(cache.tag(m, "alice", b"secret"));
        }
        let cached = started.elapsed() / 100;
        println!("PBKDF2-SHA-512 x4096: {derivation:?}; cached check: {cached:?}");
        assert!(cached * 50 < derivation, "{cached:?} vs {derivation:?}");
    }
}
