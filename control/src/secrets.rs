//! Passwords, session tokens and one-time tokens.
//!
//! Passwords are hashed with Argon2id at OWASP's parameters (m = 19 456 KiB, t = 2, p = 1);
//! tokens are 256 random bits handed to the client once and stored only as SHA-256.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::Rng as _;
use sha2::{Digest, Sha256};

use crate::error::ControlError;

/// Argon2 memory cost in KiB (OWASP: 19 MiB).
pub const ARGON2_M_KIB: u32 = 19_456;
/// Argon2 iterations (OWASP).
pub const ARGON2_T: u32 = 2;
/// Argon2 lanes (OWASP).
pub const ARGON2_P: u32 = 1;

fn argon2() -> Result<Argon2<'static>, ControlError> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
        .map_err(|e| ControlError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`). CPU-heavy
/// (tens of milliseconds): call it from a blocking thread.
pub fn hash_password(password: &str) -> Result<String, ControlError> {
    let mut salt_bytes = [0u8; 16];
    rand::rng().fill(&mut salt_bytes);
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| ControlError::Hash(e.to_string()))?;
    argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ControlError::Hash(e.to_string()))
}

/// True when `password` matches the PHC string. A malformed stored hash counts as a mismatch
/// (and is logged by the caller's error path only if parsing fails). CPU-heavy.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(a) = argon2() else { return false };
    a.verify_password(password.as_bytes(), &parsed).is_ok()
}

/// A new random token: 32 bytes from the OS-seeded CSPRNG, as URL-safe base64 (43 characters),
/// and the SHA-256 under which it is stored.
pub fn new_token() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    let text = URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&text);
    (text, hash)
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Characters of generated passwords: no look-alikes (0/O, 1/l/I), so a person can retype one
/// from a printed email.
const PASSWORD_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A generated password: 16 characters of a 56-letter alphabet (≈ 93 bits).
pub fn generate_password() -> String {
    let mut rng = rand::rng();
    (0..16)
        .map(|_| {
            let i = rng.random_range(0..PASSWORD_ALPHABET.len());
            char::from(PASSWORD_ALPHABET[i])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_with_owasp_parameters_and_verifies() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn same_password_hashes_differently_each_time() {
        assert_ne!(
            hash_password("abcdefghijk").expect("h1"),
            hash_password("abcdefghijk").expect("h2")
        );
    }

    #[test]
    fn tokens_are_256_bit_and_stored_as_their_hash() {
        let (t, h) = new_token();
        assert_eq!(t.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(&t).expect("b64").len(), 32);
        assert_eq!(token_hash(&t), h);
        assert_ne!(new_token().0, t);
    }

    #[test]
    fn generated_passwords_pass_the_policy_and_differ() {
        let a = generate_password();
        assert_eq!(a.chars().count(), 16);
        assert!(crate::validate::password(&a, "4445").is_ok());
        assert_ne!(a, generate_password());
    }

    /// Measures one Argon2id hash on this machine. Run with:
    /// `cargo test -p qorgan-control --release --lib argon2_hash_time -- --ignored --nocapture`
    #[test]
    #[ignore = "measurement, not a check"]
    fn argon2_hash_time() {
        let n = 20u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            hash_password("measure-me-please").expect("hash");
        }
        let per = start.elapsed() / n;
        println!("argon2id m=19456 t=2 p=1: {per:?} per hash (mean of {n})");
    }
}
