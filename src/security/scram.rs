//! SCRAM credentials (RFC 5802, RFC 7677): what the metadata log stores for a user, and the
//! key derivations both the server exchange (`sasl::scram`) and PLAIN's check against a
//! stored credential use.
//!
//! A credential is Kafka's `ScramCredential`: salt, StoredKey = H(HMAC(SaltedPassword,
//! "Client Key")), ServerKey = HMAC(SaltedPassword, "Server Key") and the iteration count;
//! the password itself is never stored. Iterations are bounded as Kafka bounds them
//! (4096..=16384), which also bounds the CPU one login can cost the shard.

use ring::{digest, hmac, pbkdf2};

/// Kafka's smallest accepted SCRAM iteration count.
pub const ITERATIONS_MIN: i32 = 4096;
/// Kafka's largest accepted SCRAM iteration count.
pub const ITERATIONS_MAX: i32 = 16384;
/// Salt length used for new credentials, in bytes.
pub const SALT_BYTES: usize = 32;
/// Longest salt accepted from AlterUserScramCredentials, in bytes.
pub const SALT_BYTES_MAX: usize = 1024;

/// The SCRAM mechanisms served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// From the SASL mechanism name.
    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        match name {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// Kafka's wire code (`ScramMechanism.type()`: 1 SHA-256, 2 SHA-512).
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// From Kafka's wire code.
    pub fn from_kafka_type(code: i8) -> Option<ScramMechanism> {
        match code {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    fn hmac_algorithm(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2_algorithm(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn digest_algorithm(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    /// Output length of the hash, in bytes.
    pub fn hash_bytes(self) -> usize {
        self.digest_algorithm().output_len()
    }

    /// H(data).
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_algorithm(), data)
            .as_ref()
            .to_vec()
    }

    /// HMAC(key, data).
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(self.hmac_algorithm(), key);
        hmac::sign(&key, data).as_ref().to_vec()
    }

    /// SaltedPassword = Hi(password, salt, iterations), RFC 5802's PBKDF2.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.hash_bytes()];
        let iterations = std::num::NonZeroU32::new(iterations.max(1)).expect("max(1) is nonzero");
        pbkdf2::derive(
            self.pbkdf2_algorithm(),
            iterations,
            salt,
            password,
            &mut out,
        );
        out
    }
}

/// A stored SCRAM credential (Kafka's `ScramCredential`): never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl ScramCredential {
    /// The credential for `password` with `salt` and `iterations`.
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salted: &[u8],
        salt: &[u8],
        iterations: i32,
    ) -> Self {
        let client_key = mechanism.hmac(salted, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted, b"Server Key"),
            iterations,
        }
    }

    /// The credential for `password` with a fresh random salt.
    pub fn new(mechanism: ScramMechanism, password: &str, iterations: i32) -> Self {
        let salt = random_bytes(SALT_BYTES);
        let salted =
            mechanism.salted_password(password.as_bytes(), &salt, iterations.max(1) as u32);
        Self::from_salted_password(mechanism, &salted, &salt, iterations)
    }

    /// Does `password` match (PLAIN against a stored SCRAM credential)? Constant-time compare.
    pub fn matches_password(&self, mechanism: ScramMechanism, password: &[u8]) -> bool {
        let iterations = self.iterations.clamp(1, ITERATIONS_MAX) as u32;
        let salted = mechanism.salted_password(password, &self.salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        constant_time_eq(&mechanism.hash(&client_key), &self.stored_key)
    }
}

/// `n` bytes from the system's random source.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut out = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system random source works");
    out
}

/// Equal bytes, compared in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example: user "user", password "pencil", salt
    /// "W22ZaJ0SNY7soEsUEjb6gQ==", 4096 iterations; the server signature it prints checks the
    /// derived ServerKey.
    #[test]
    fn derivations_match_rfc7677() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let m = ScramMechanism::Sha256;
        let salted = m.salted_password(b"pencil", &salt, 4096);
        let cred = ScramCredential::from_salted_password(m, &salted, &salt, 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let server_signature = m.hmac(&cred.server_key, auth_message.as_bytes());
        assert_eq!(
            b64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert!(cred.matches_password(m, b"pencil"));
        assert!(!cred.matches_password(m, b"pencil2"));
    }

    #[test]
    fn new_credentials_have_fresh_salts_and_check_their_password() {
        let a = ScramCredential::new(ScramMechanism::Sha512, "secret", 4096);
        let b = ScramCredential::new(ScramMechanism::Sha512, "secret", 4096);
        assert_ne!(a.salt, b.salt);
        assert_eq!(a.stored_key.len(), 64);
        assert!(a.matches_password(ScramMechanism::Sha512, b"secret"));
        assert!(!a.matches_password(ScramMechanism::Sha512, b"Secret"));
    }
}
