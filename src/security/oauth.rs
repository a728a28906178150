//! SASL/OAUTHBEARER (RFC 7628) as Kafka's broker serves it: the client's first message
//! (`n,,\x01auth=Bearer <token>\x01\x01`, Kafka's `OAuthBearerClientInitialResponse`) and the
//! validation of its JWT, in one of two modes chosen by the configuration:
//! - **unsecured** (Kafka's `OAuthBearerUnsecuredValidatorCallbackHandler`, for tests and
//!   development): `alg` "none", an empty signature; the principal claim (`sub` by default),
//!   `exp` required, `iat` optional and not in the future, required scopes;
//! - **signed** (Kafka's KIP-768 `OAuthBearerValidatorCallbackHandler`): RS256/384/512,
//!   PS256/384/512, ES256/ES384 checked (with ring) against the keys of a JWKS file
//!   (`sasl_oauthbearer_jwks_endpoint_url = "file:///..."`, re-read when it changes, at most
//!   once a second); `exp` and `iat` required, `nbf` honoured, within
//!   `sasl_oauthbearer_clock_skew_seconds`; `aud` among the expected audiences and `iss` the
//!   expected issuer when those are set; the principal from `sasl_oauthbearer_sub_claim_name`.
//!   `alg` "none" is refused.
//!
//! A refused token is answered as Kafka's `OAuthBearerSaslServer` does: the server's challenge
//! is the JSON error (`{"status":"invalid_token"}`), the client answers `\x01`, and the
//! exchange fails with that JSON as the SASL_AUTHENTICATION_FAILED message (the state machine
//! is in `sasl`); why the token was refused is only logged. A valid token's `exp` is the
//! credential's lifetime (KIP-368: the session ends at the earlier of it and
//! `connections_max_reauth_ms`).
//!
//! Bounds: a client message is at most [`OAUTHBEARER_RESPONSE_BYTES_MAX`] bytes (a larger one
//! fails before any decoding); a JWKS file at most [`JWKS_FILE_BYTES_MAX`] bytes and
//! [`JWKS_KEYS_MAX`] keys (a larger one does not load: at start that stops the start, later
//! the previous keys stay).

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use serde_json::{Map, Value};

/// The largest OAUTHBEARER client message accepted (the token and its framing).
pub const OAUTHBEARER_RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// The largest JWKS file read.
pub const JWKS_FILE_BYTES_MAX: u64 = 1 << 20;
/// The most keys a JWKS file may hold.
pub const JWKS_KEYS_MAX: usize = 100;
/// How often, at most, the JWKS file's modification time is looked at.
const JWKS_RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Kafka's message for a client message that does not parse.
pub const MALFORMED_MESSAGE: &str = "Authentication failed during authentication due to invalid credentials with SASL mechanism OAUTHBEARER";

/// How tokens are validated (from the broker configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthMode {
    /// Unsecured JWTs (Kafka's unsecured validator's options).
    Unsecured {
        /// `unsecuredValidatorPrincipalClaimName` (default `sub`).
        principal_claim: String,
        /// `unsecuredValidatorScopeClaimName` (default `scope`).
        scope_claim: String,
        /// `unsecuredValidatorRequiredScope`: every one must be in the token's scope.
        required_scope: Vec<String>,
        /// `unsecuredValidatorAllowableClockSkewMs` (default 0).
        clock_skew_ms: i64,
    },
    /// Signed JWTs checked against a JWKS file.
    Signed {
        jwks_file: PathBuf,
        /// `sasl.oauthbearer.expected.audience`: when not empty, `aud` must hold one of them.
        expected_audience: Vec<String>,
        /// `sasl.oauthbearer.expected.issuer`: when set, `iss` must be it.
        expected_issuer: Option<String>,
        /// `sasl.oauthbearer.sub.claim.name` (default `sub`).
        sub_claim: String,
        /// `sasl.oauthbearer.scope.claim.name` (default `scope`).
        scope_claim: String,
        /// `sasl.oauthbearer.clock.skew.seconds` (default 30).
        clock_skew_s: i64,
    },
}

/// A token that validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidToken {
    /// The principal name (the principal is `User:` + it).
    pub principal: String,
    /// When the token expires, milliseconds since the epoch.
    pub expires_ms: i64,
}

/// A token refused: the JSON error the client is sent and, for the log only, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// RFC 7628 `status`: `invalid_token` or `insufficient_scope`.
    pub status: &'static str,
    /// The scope the token lacked (`insufficient_scope`).
    pub scope: Option<String>,
    pub reason: String,
}

impl Refused {
    fn invalid(reason: impl Into<String>) -> Refused {
        Refused {
            status: "invalid_token",
            scope: None,
            reason: reason.into(),
        }
    }

    /// The server's challenge, as Kafka's `OAuthBearerSaslServer.jsonErrorResponse` writes it.
    pub fn json(&self) -> String {
        let mut out = format!("{{\"status\":\"{}\"", self.status);
        if let Some(scope) = &self.scope {
            out.push_str(&format!(", \"scope\":\"{scope}\""));
        }
        out.push('}');
        out
    }
}

/// The client's first message: the authorization id (may be empty) and the token. Errors are
/// for the log; the client gets [`MALFORMED_MESSAGE`].
pub fn parse_client_response(message: &[u8]) -> Result<(String, String), String> {
    if message.len() > OAUTHBEARER_RESPONSE_BYTES_MAX {
        return Err(format!(
            "OAUTHBEARER client message of {} bytes, more than {OAUTHBEARER_RESPONSE_BYTES_MAX}",
            message.len()
        ));
    }
    let text = std::str::from_utf8(message).map_err(|_| "client message is not UTF-8")?;
    let rest = text
        .strip_prefix("n,")
        .ok_or("client message does not start with the GS2 header 'n,'")?;
    let (authzid, rest) = rest.split_once(",").ok_or("no end of the GS2 header")?;
    let authzid = match authzid {
        "" => String::new(),
        a => a
            .strip_prefix("a=")
            .filter(|name| !name.is_empty())
            .map(|name| name.replace("=2C", ",").replace("=3D", "="))
            .ok_or("bad authorization id in the GS2 header")?,
    };
    let pairs = rest
        .strip_prefix('\x01')
        .and_then(|r| r.strip_suffix("\x01\x01"))
        .ok_or("key/value pairs not framed by \\x01")?;
    let mut auth = None;
    for pair in pairs.split('\x01').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or("a key without a value")?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("bad key '{key}'"));
        }
        if key == "auth" {
            auth = Some(value);
        }
        // Other keys are SASL extensions; none are validated, so they are ignored.
    }
    let auth = auth.ok_or("'auth' not specified")?;
    let (scheme, token) = auth
        .split_once(' ')
        .ok_or("'auth' is not '<scheme> <token>'")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(format!("invalid scheme '{scheme}'"));
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err("the token has characters outside [-_.a-zA-Z0-9]".into());
    }
    Ok((authzid, token.to_string()))
}

/// The three parts of a compact JWS, decoded: header, claims, signature, and the signed input.
struct Jws<'a> {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signature: Vec<u8>,
    signed: &'a str,
}

fn base64url(part: &str, what: &str) -> Result<Vec<u8>, Refused> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| Refused::invalid(format!("{what} is not Base64URL: {e}")))
}

fn json_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, Refused> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Refused::invalid(format!("{what} is not a JSON object"))),
        Err(e) => Err(Refused::invalid(format!("{what} is not JSON: {e}"))),
    }
}

impl<'a> Jws<'a> {
    fn parse(token: &'a str) -> Result<Jws<'a>, Refused> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refused::invalid(
                "a JWS compact serialization has 3 dot-separated parts",
            ));
        };
        Ok(Jws {
            header: json_object(&base64url(h, "the JOSE header")?, "the JOSE header")?,
            claims: json_object(&base64url(c, "the claims")?, "the claims")?,
            signature: base64url(s, "the signature")?,
            signed: &token[..h.len() + 1 + c.len()],
        })
    }

    fn alg(&self) -> Result<&str, Refused> {
        self.header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| Refused::invalid("no 'alg' in the JOSE header"))
    }

    /// A NumericDate claim in milliseconds (`None` when absent).
    fn time_ms(&self, claim: &str) -> Result<Option<i64>, Refused> {
        match self.claims.get(claim) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|s| s.is_finite() && s.abs() < 1e13)
                .map(|s| Some((s * 1000.0) as i64))
                .ok_or_else(|| Refused::invalid(format!("claim '{claim}' is not a number"))),
        }
    }

    fn principal(&self, claim: &str) -> Result<String, Refused> {
        match self.claims.get(claim).and_then(Value::as_str) {
            Some(name) if !name.trim().is_empty() => Ok(name.to_string()),
            _ => Err(Refused::invalid(format!(
                "no principal name in JWT claim '{claim}' (a non-empty string)"
            ))),
        }
    }

    /// A claim holding one string, a space-separated list (scope) or an array of strings.
    fn strings(&self, claim: &str) -> Vec<String> {
        match self.claims.get(claim) {
            Some(Value::String(s)) => s
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Validates an unsecured token (Kafka's `OAuthBearerUnsecuredValidatorCallbackHandler`).
pub fn validate_unsecured(
    token: &str,
    principal_claim: &str,
    scope_claim: &str,
    required_scope: &[String],
    clock_skew_ms: i64,
    now_ms: i64,
) -> Result<ValidToken, Refused> {
    let jws = Jws::parse(token)?;
    if !jws.signature.is_empty() {
        return Err(Refused::invalid(
            "an unsecured JWS has an empty third part (the signature)",
        ));
    }
    if jws.alg()? != "none" {
        return Err(Refused::invalid("an unsecured JWS must have alg=none"));
    }
    let principal = jws.principal(principal_claim)?;
    let exp = jws
        .time_ms("exp")?
        .ok_or_else(|| Refused::invalid("no expiration time ('exp') in the JWT"))?;
    check_times(exp, jws.time_ms("iat")?, None, clock_skew_ms, now_ms)?;
    let scope = jws.strings(scope_claim);
    if let Some(missing) = required_scope.iter().find(|s| !scope.contains(s)) {
        return Err(Refused {
            status: "insufficient_scope",
            scope: Some(required_scope.join(" ")),
            reason: format!("the token's scope lacks required scope '{missing}'"),
        });
    }
    Ok(ValidToken {
        principal,
        expires_ms: exp,
    })
}

/// `exp` after now, `iat` not after now nor after `exp`, `nbf` not after now, each within the
/// skew (Kafka's `OAuthBearerValidationUtils` and jose4j's checks).
fn check_times(
    exp: i64,
    iat: Option<i64>,
    nbf: Option<i64>,
    skew_ms: i64,
    now_ms: i64,
) -> Result<(), Refused> {
    if now_ms.saturating_sub(skew_ms) >= exp {
        return Err(Refused::invalid(format!(
            "the token expired: now ({now_ms} ms) minus the allowed clock skew ({skew_ms} ms) is on or after its expiration time ({exp} ms)"
        )));
    }
    if let Some(iat) = iat {
        if iat > now_ms.saturating_add(skew_ms) {
            return Err(Refused::invalid(format!(
                "the token was issued in the future: iat {iat} ms, now {now_ms} ms, skew {skew_ms} ms"
            )));
        }
        if iat > exp {
            return Err(Refused::invalid(
                "the token's issue time is after its expiration time",
            ));
        }
    }
    if let Some(nbf) = nbf {
        if nbf > now_ms.saturating_add(skew_ms) {
            return Err(Refused::invalid(format!(
                "the token is not valid before {nbf} ms (now {now_ms} ms, skew {skew_ms} ms)"
            )));
        }
    }
    Ok(())
}

/// A public key of a JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMaterial {
    /// Modulus and exponent, big-endian, no leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed point (0x04 || x || y) on P-256 or P-384.
    Ec { p384: bool, point: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Jwk {
    kid: Option<String>,
    alg: Option<String>,
    key: KeyMaterial,
}

/// The signature keys of a JWKS document (RFC 7517): RSA and EC (P-256, P-384) keys whose
/// `use` is absent or `sig`; others are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWKS document; an error says why it does not load.
    pub fn parse(bytes: &[u8]) -> Result<Jwks, String> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no \"keys\" array")?;
        if keys.len() > JWKS_KEYS_MAX {
            return Err(format!("more than {JWKS_KEYS_MAX} keys"));
        }
        let field = |k: &Value, name: &str| k.get(name).and_then(Value::as_str).map(String::from);
        let bytes = |k: &Value, name: &str| -> Result<Vec<u8>, String> {
            let text = field(k, name).ok_or_else(|| format!("a key without \"{name}\""))?;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .map_err(|e| format!("key field \"{name}\" is not Base64URL: {e}"))
        };
        let mut out = Vec::new();
        for k in keys {
            if field(k, "use").is_some_and(|u| u != "sig") {
                continue;
            }
            let key = match (field(k, "kty").as_deref(), field(k, "crv").as_deref()) {
                (Some("RSA"), _) => {
                    let strip = |v: Vec<u8>| {
                        let zeros = v.iter().take_while(|b| **b == 0).count();
                        v[zeros..].to_vec()
                    };
                    KeyMaterial::Rsa {
                        n: strip(bytes(k, "n")?),
                        e: strip(bytes(k, "e")?),
                    }
                }
                (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
                    let (x, y) = (bytes(k, "x")?, bytes(k, "y")?);
                    let size = if crv == "P-256" { 32 } else { 48 };
                    if x.len() != size || y.len() != size {
                        return Err(format!("an {crv} key whose x or y is not {size} bytes"));
                    }
                    let mut point = vec![4u8];
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    KeyMaterial::Ec {
                        p384: crv == "P-384",
                        point,
                    }
                }
                _ => continue,
            };
            out.push(Jwk {
                kid: field(k, "kid"),
                alg: field(k, "alg"),
                key,
            });
        }
        Ok(Jwks { keys: out })
    }

    /// The number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No usable key?
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for `alg` and `kid`: the one with that kid, or without a kid the only one that
    /// fits the algorithm.
    fn select(&self, alg: &str, kid: Option<&str>) -> Result<&Jwk, Refused> {
        let fits = |k: &&Jwk| {
            let kind = match &k.key {
                KeyMaterial::Rsa { .. } => alg.starts_with("RS") || alg.starts_with("PS"),
                KeyMaterial::Ec { p384, .. } => alg == if *p384 { "ES384" } else { "ES256" },
            };
            kind && k.alg.as_deref().is_none_or(|a| a == alg)
        };
        let mut found = self
            .keys
            .iter()
            .filter(fits)
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid);
        match (found.next(), found.next(), kid) {
            (Some(key), None, _) | (Some(key), Some(_), Some(_)) => Ok(key),
            (None, _, Some(kid)) => Err(Refused::invalid(format!(
                "no key with kid '{kid}' for {alg} in the JWKS"
            ))),
            (None, _, None) => Err(Refused::invalid(format!("no key for {alg} in the JWKS"))),
            (Some(_), Some(_), None) => Err(Refused::invalid(
                "the token has no kid and several JWKS keys fit its algorithm",
            )),
        }
    }
}

/// Checks the signature of `jws` with `key` for `alg`.
fn verify(alg: &str, key: &KeyMaterial, jws: &Jws) -> Result<(), Refused> {
    use ring::signature as sig;
    let message = jws.signed.as_bytes();
    let result = match (alg, key) {
        (_, KeyMaterial::Rsa { n, e }) => {
            let params: &sig::RsaParameters = match alg {
                "RS256" => &sig::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &sig::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &sig::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &sig::RSA_PSS_2048_8192_SHA256,
                "PS384" => &sig::RSA_PSS_2048_8192_SHA384,
                "PS512" => &sig::RSA_PSS_2048_8192_SHA512,
                other => return Err(Refused::invalid(format!("unsupported alg {other}"))),
            };
            sig::RsaPublicKeyComponents { n, e }.verify(params, message, &jws.signature)
        }
        ("ES256", KeyMaterial::Ec { p384: false, point }) => {
            sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                .verify(message, &jws.signature)
        }
        ("ES384", KeyMaterial::Ec { p384: true, point }) => {
            sig::UnparsedPublicKey::new(&sig::ECDSA_P384_SHA384_FIXED, point)
                .verify(message, &jws.signature)
        }
        (other, _) => return Err(Refused::invalid(format!("unsupported alg {other}"))),
    };
    result.map_err(|_| Refused::invalid(format!("the {alg} signature does not verify")))
}

/// What a signed token is checked against (from the configuration).
pub struct SignedChecks<'a> {
    pub expected_audience: &'a [String],
    pub expected_issuer: Option<&'a str>,
    pub sub_claim: &'a str,
    pub clock_skew_s: i64,
}

/// Validates a signed token against `jwks` (Kafka's KIP-768 validator).
pub fn validate_signed(
    token: &str,
    jwks: &Jwks,
    checks: &SignedChecks,
    now_ms: i64,
) -> Result<ValidToken, Refused> {
    let jws = Jws::parse(token)?;
    let alg = jws.alg()?;
    if alg == "none" {
        return Err(Refused::invalid(
            "alg none is not accepted for signed tokens",
        ));
    }
    if jws.header.contains_key("crit") {
        return Err(Refused::invalid("a 'crit' header is not understood"));
    }
    let kid = jws.header.get("kid").and_then(Value::as_str);
    let key = jwks.select(alg, kid)?;
    verify(alg, &key.key, &jws)?;
    let exp = jws
        .time_ms("exp")?
        .ok_or_else(|| Refused::invalid("no expiration time ('exp') in the JWT"))?;
    let iat = jws
        .time_ms("iat")?
        .ok_or_else(|| Refused::invalid("no issue time ('iat') in the JWT"))?;
    let skew_ms = checks.clock_skew_s.saturating_mul(1000);
    check_times(exp, Some(iat), jws.time_ms("nbf")?, skew_ms, now_ms)?;
    if !checks.expected_audience.is_empty() {
        let aud = jws.strings("aud");
        if !aud.iter().any(|a| checks.expected_audience.contains(a)) {
            return Err(Refused::invalid(format!(
                "audience {aud:?} is not one of the expected {:?}",
                checks.expected_audience
            )));
        }
    }
    if let Some(issuer) = checks.expected_issuer {
        let iss = jws.claims.get("iss").and_then(Value::as_str);
        if iss != Some(issuer) {
            return Err(Refused::invalid(format!(
                "issuer {iss:?} is not the expected '{issuer}'"
            )));
        }
    }
    Ok(ValidToken {
        principal: jws.principal(checks.sub_claim)?,
        expires_ms: exp,
    })
}

/// The path of a `file://` JWKS endpoint URL (the only kind served: no HTTP client here).
pub fn jwks_file_of_url(url: &str) -> Result<PathBuf, String> {
    let path = url.strip_prefix("file://").ok_or_else(|| {
        format!("sasl_oauthbearer_jwks_endpoint_url must be a file:// URL (got '{url}'); HTTP(S) endpoints are not served")
    })?;
    if !path.starts_with('/') {
        return Err(format!(
            "sasl_oauthbearer_jwks_endpoint_url: '{url}' is not file:///absolute/path"
        ));
    }
    Ok(PathBuf::from(path))
}

/// Reads and parses a JWKS file, with its modification time.
fn load_jwks(path: &std::path::Path) -> Result<(Jwks, Option<SystemTime>), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > JWKS_FILE_BYTES_MAX {
        return Err(format!(
            "{}: larger than {JWKS_FILE_BYTES_MAX} bytes",
            path.display()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let jwks = Jwks::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((jwks, meta.modified().ok()))
}

/// A listener's token validator (one per listener per shard): the mode and, for signed
/// tokens, the JWKS file's keys, re-read when its modification time changes (looked at most
/// once a second, when a token is validated).
#[derive(Debug)]
pub struct OAuthValidator {
    mode: OAuthMode,
    jwks: RefCell<(Rc<Jwks>, Option<SystemTime>)>,
    checked: Cell<Instant>,
}

impl OAuthValidator {
    /// A validator; for signed tokens the JWKS file must load (the error names it).
    pub fn new(mode: OAuthMode) -> Result<OAuthValidator, String> {
        let jwks = match &mode {
            OAuthMode::Signed { jwks_file, .. } => {
                let (jwks, stamp) = load_jwks(jwks_file)?;
                if jwks.is_empty() {
                    return Err(format!(
                        "{}: no RSA or EC signature key",
                        jwks_file.display()
                    ));
                }
                (Rc::new(jwks), stamp)
            }
            OAuthMode::Unsecured { .. } => (Rc::default(), None),
        };
        Ok(OAuthValidator {
            mode,
            jwks: RefCell::new(jwks),
            checked: Cell::new(Instant::now()),
        })
    }

    /// The current keys, re-read first if the file changed (at most one look a second).
    fn keys(&self, path: &std::path::Path) -> Rc<Jwks> {
        if self.checked.get().elapsed() >= JWKS_RELOAD_CHECK_INTERVAL {
            self.checked.set(Instant::now());
            let stamp = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if stamp != self.jwks.borrow().1 {
                match load_jwks(path) {
                    Ok((jwks, stamp)) => {
                        tracing::info!(file = %path.display(), keys = jwks.len(), "JWKS reloaded");
                        *self.jwks.borrow_mut() = (Rc::new(jwks), stamp);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "JWKS file changed but does not load; keeping the previous keys")
                    }
                }
            }
        }
        self.jwks.borrow().0.clone()
    }

    /// Validates `token` at wall-clock time `now_ms`.
    pub fn validate(&self, token: &str, now_ms: i64) -> Result<ValidToken, Refused> {
        match &self.mode {
            OAuthMode::Unsecured {
                principal_claim,
                scope_claim,
                required_scope,
                clock_skew_ms,
            } => validate_unsecured(
                token,
                principal_claim,
                scope_claim,
                required_scope,
                *clock_skew_ms,
                now_ms,
            ),
            OAuthMode::Signed {
                jwks_file,
                expected_audience,
                expected_issuer,
                sub_claim,
                clock_skew_s,
                ..
            } => validate_signed(
                token,
                &self.keys(jwks_file),
                &SignedChecks {
                    expected_audience,
                    expected_issuer: expected_issuer.as_deref(),
                    sub_claim,
                    clock_skew_s: *clock_skew_s,
                },
                now_ms,
            ),
        }
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn unsecured(claims: &str) -> String {
        format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(claims.as_bytes()))
    }

    const NOW: i64 = 1_700_000_000_000;

    fn check(token: &str) -> Result<ValidToken, Refused> {
        validate_unsecured(token, "sub", "scope", &[], 0, NOW)
    }

    /// librdkafka's first message: GS2 header, auth, an extension, the closing \x01\x01.
    #[test]
    fn client_first_message_parses_as_kafka() {
        let (authz, token) =
            parse_client_response(b"n,,\x01auth=Bearer a.b.\x01ext=1\x01\x01").unwrap();
        assert_eq!((authz.as_str(), token.as_str()), ("", "a.b."));
        let (authz, _) = parse_client_response(b"n,a=al=2Cice,\x01auth=bearer x\x01\x01").unwrap();
        assert_eq!(authz, "al,ice");
        for bad in [
            &b""[..],
            b"y,,\x01auth=Bearer x\x01\x01",
            b"n,,\x01auth=Basic x\x01\x01",
            b"n,,\x01auth=Bearer x y\x01\x01",
            b"n,,\x01\x01",
            b"n,,auth=Bearer x",
            b"n,,\x01=x\x01\x01",
            b"n,,\x01auth=Bearer \xff\x01\x01",
        ] {
            assert!(parse_client_response(bad).is_err(), "{bad:?}");
        }
        let huge = format!(
            "n,,\x01auth=Bearer {}\x01\x01",
            "a".repeat(OAUTHBEARER_RESPONSE_BYTES_MAX)
        );
        assert!(parse_client_response(huge.as_bytes())
            .unwrap_err()
            .contains("more than"));
    }

    /// Kafka's unsecured validator: sub and exp required, exp in the future, iat not in the
    /// future, alg none and an empty signature, required scope.
    #[test]
    fn unsecured_tokens_are_checked_as_kafkas_validator() {
        let ok = check(&unsecured(
            r#"{"sub":"alice","iat":1699999999,"exp":1700000100}"#,
        ))
        .unwrap();
        assert_eq!(ok.principal, "alice");
        assert_eq!(ok.expires_ms, 1_700_000_100_000);
        let refused = |claims: &str| check(&unsecured(claims)).unwrap_err().reason;
        assert!(refused(r#"{"sub":"alice","exp":1699999999}"#).contains("expired"));
        assert!(refused(r#"{"sub":"alice"}"#).contains("exp"));
        assert!(refused(r#"{"exp":1800000000}"#).contains("principal"));
        assert!(refused(r#"{"sub":"","exp":1800000000}"#).contains("principal"));
        assert!(refused(r#"{"sub":7,"exp":1800000000}"#).contains("principal"));
        assert!(refused(r#"{"sub":"a","exp":"soon"}"#).contains("not a number"));
        assert!(refused(r#"{"sub":"a","exp":1800000000,"iat":1750000000}"#).contains("future"));
        // alg other than none, a signature, bad Base64, bad JSON, too few parts.
        let claims = b64(br#"{"sub":"a","exp":1800000000}"#);
        for token in [
            format!("{}.{claims}.", b64(br#"{"alg":"RS256"}"#)),
            format!("{}.{claims}.c2ln", b64(br#"{"alg":"none"}"#)),
            format!("{}.{claims}.", b64(b"{not json")),
            format!("{}.{claims}.", b64(b"[1]")),
            format!("!!!.{claims}."),
            format!("{}.{claims}", b64(br#"{"alg":"none"}"#)),
        ] {
            assert_eq!(
                check(&token).unwrap_err().status,
                "invalid_token",
                "{token}"
            );
        }
        let scoped = unsecured(r#"{"sub":"a","exp":1800000000,"scope":"read write"}"#);
        let need = |s: &[&str]| {
            let s: Vec<String> = s.iter().map(|x| x.to_string()).collect();
            validate_unsecured(&scoped, "sub", "scope", &s, 0, NOW)
        };
        assert!(need(&["write"]).is_ok());
        let e = need(&["admin"]).unwrap_err();
        assert_eq!(
            e.json(),
            r#"{"status":"insufficient_scope", "scope":"admin"}"#
        );
        assert_eq!(
            Refused::invalid("x").json(),
            r#"{"status":"invalid_token"}"#
        );
    }

    /// An ES256 key made here signs tokens; tampering, another key, expiry, the audience and
    /// the issuer are checked; alg none is refused.
    #[test]
    fn signed_es256_tokens_are_verified_against_the_jwks() {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let make = || {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap()
        };
        let (key, other) = (make(), make());
        let public = key.public_key().as_ref();
        let jwks = Jwks::parse(
            format!(
                r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","use":"sig","x":"{}","y":"{}"}},{{"kty":"oct","k":"AA"}}]}}"#,
                b64(&public[1..33]),
                b64(&public[33..])
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(jwks.len(), 1);
        let sign = |k: &EcdsaKeyPair, header: &str, claims: &str| {
            let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
            let sig = k.sign(&rng, input.as_bytes()).unwrap();
            format!("{input}.{}", b64(sig.as_ref()))
        };
        let aud = vec!["kafka".to_string()];
        let checks = SignedChecks {
            expected_audience: &aud,
            expected_issuer: Some("https://idp"),
            sub_claim: "sub",
            clock_skew_s: 30,
        };
        let h = r#"{"alg":"ES256","kid":"k1"}"#;
        let good = r#"{"sub":"alice","aud":["x","kafka"],"iss":"https://idp","iat":1699999990,"exp":1700000600}"#;
        let ok = validate_signed(&sign(&key, h, good), &jwks, &checks, NOW).unwrap();
        assert_eq!(
            (ok.principal.as_str(), ok.expires_ms),
            ("alice", 1_700_000_600_000)
        );
        // Without a kid: the only fitting key.
        assert!(
            validate_signed(&sign(&key, r#"{"alg":"ES256"}"#, good), &jwks, &checks, NOW).is_ok()
        );
        let refused = |token: String| {
            validate_signed(&token, &jwks, &checks, NOW)
                .unwrap_err()
                .reason
        };
        assert!(refused(sign(&other, h, good)).contains("does not verify"));
        let mut tampered = sign(&key, h, good);
        tampered.replace_range(tampered.len() - 3.., "AAA");
        assert!(refused(tampered).contains("does not verify"));
        assert!(refused(sign(&key, r#"{"alg":"ES256","kid":"k9"}"#, good)).contains("kid"));
        assert!(refused(sign(&key, r#"{"alg":"none"}"#, good)).contains("none"));
        let expired = good.replace("1700000600", "1699999960");
        assert!(refused(sign(&key, h, &expired)).contains("expired"));
        // Within the 30 s skew an expired token still passes.
        let just = good.replace("1700000600", "1699999990");
        assert!(validate_signed(&sign(&key, h, &just), &jwks, &checks, NOW).is_ok());
        let wrong_aud = good.replace(r#"["x","kafka"]"#, r#""other""#);
        assert!(refused(sign(&key, h, &wrong_aud)).contains("audience"));
        let wrong_iss = good.replace("https://idp", "https://evil");
        assert!(refused(sign(&key, h, &wrong_iss)).contains("issuer"));
        let no_iat = r#"{"sub":"alice","aud":"kafka","iss":"https://idp","exp":1700000600}"#;
        assert!(refused(sign(&key, h, no_iat)).contains("iat"));
        let nbf = good.replace(r#""iat""#, r#""nbf":1700001000,"iat""#);
        assert!(refused(sign(&key, h, &nbf)).contains("before"));
    }

    /// JWKS documents that do not load say why; unusable keys are skipped.
    #[test]
    fn jwks_documents_are_checked() {
        assert!(Jwks::parse(b"{").is_err());
        assert!(Jwks::parse(b"{}").is_err());
        assert!(Jwks::parse(br#"{"keys":[{"kty":"RSA","n":"!!","e":"AQAB"}]}"#).is_err());
        assert!(
            Jwks::parse(br#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#).is_err()
        );
        let many = format!(
            r#"{{"keys":[{}]}}"#,
            vec![r#"{"kty":"oct"}"#; JWKS_KEYS_MAX + 1].join(",")
        );
        assert!(Jwks::parse(many.as_bytes())
            .unwrap_err()
            .contains("more than"));
        let enc = br#"{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}"#;
        assert!(Jwks::parse(enc).unwrap().is_empty());
        assert!(jwks_file_of_url("https://idp/jwks").is_err());
        assert!(jwks_file_of_url("file://relative").is_err());
        assert_eq!(
            jwks_file_of_url("file:///etc/jwks.json").unwrap(),
            PathBuf::from("/etc/jwks.json")
        );
    }

    /// The validator re-reads a changed JWKS file (a rotated key is accepted after it, the
    /// old one refused); a file that stops loading keeps the previous keys.
    #[test]
    fn a_changed_jwks_file_is_reloaded() {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let make = || {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap()
        };
        let jwks_of = |k: &EcdsaKeyPair| {
            let p = k.public_key().as_ref();
            format!(
                r#"{{"keys":[{{"kty":"EC","crv":"P-256","x":"{}","y":"{}"}}]}}"#,
                b64(&p[1..33]),
                b64(&p[33..])
            )
        };
        let token = |k: &EcdsaKeyPair| {
            let now = now_ms() / 1000;
            let claims = format!(r#"{{"sub":"alice","iat":{now},"exp":{}}}"#, now + 60);
            let input = format!("{}.{}", b64(br#"{"alg":"ES256"}"#), b64(claims.as_bytes()));
            let sig = k.sign(&rng, input.as_bytes()).unwrap();
            format!("{input}.{}", b64(sig.as_ref()))
        };
        let (old, new) = (make(), make());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, jwks_of(&old)).unwrap();
        let validator = OAuthValidator::new(OAuthMode::Signed {
            jwks_file: file.clone(),
            expected_audience: Vec::new(),
            expected_issuer: None,
            sub_claim: "sub".into(),
            scope_claim: "scope".into(),
            clock_skew_s: 30,
        })
        .unwrap();
        assert!(validator.validate(&token(&old), now_ms()).is_ok());
        assert!(validator.validate(&token(&new), now_ms()).is_err());
        std::thread::sleep(JWKS_RELOAD_CHECK_INTERVAL + Duration::from_millis(50));
        std::fs::write(&file, jwks_of(&new)).unwrap();
        assert!(validator.validate(&token(&new), now_ms()).is_ok());
        assert!(validator.validate(&token(&old), now_ms()).is_err());
        std::thread::sleep(JWKS_RELOAD_CHECK_INTERVAL + Duration::from_millis(50));
        std::fs::write(&file, "{broken").unwrap();
        assert!(validator.validate(&token(&new), now_ms()).is_ok());
        // At start, a file that does not load is an error naming it.
        let missing = OAuthMode::Signed {
            jwks_file: dir.path().join("missing.json"),
            expected_audience: Vec::new(),
            expected_issuer: None,
            sub_claim: "sub".into(),
            scope_claim: "scope".into(),
            clock_skew_s: 30,
        };
        assert!(OAuthValidator::new(missing)
            .unwrap_err()
            .contains("missing.json"));
    }

    proptest::proptest! {
        /// Whatever bytes arrive, parsing and validating never panic.
        #[test]
        fn hostile_messages_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            parts in proptest::collection::vec("[A-Za-z0-9_=-]{0,40}", 0..5),
        ) {
            let _ = parse_client_response(&bytes);
            let token = parts.join(".");
            let _ = check(&token);
            let jwks = Jwks::default();
            let aud = Vec::new();
            let checks = SignedChecks { expected_audience: &aud, expected_issuer: None, sub_claim: "sub", clock_skew_s: 30 };
            let _ = validate_signed(&token, &jwks, &checks, NOW);
        }
    }
}
