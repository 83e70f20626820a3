//! Secrets the server hands out and checks: random tokens, their stored hashes, constant-time
//! comparison, and argon2 for administrator passwords.
//!
//! Agent credentials, enrollment-token secrets and session tokens are 256-bit random values, so
//! a SHA-256 of them is what the store keeps; passwords are low-entropy, so they get argon2id.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `bytes` random bytes from the operating system's generator, as lower-case hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A password an administrator can type: 20 characters from an unambiguous alphabet (~113 bits).
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut buf = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    buf.iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// SHA-256 of a high-entropy secret, hex: what the store keeps instead of the secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares a presented secret with a stored hash in constant time.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    let presented = hash_secret(secret);
    presented.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// argon2id hash of a password, in PHC string form.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// Checks a password against an argon2 PHC string (constant time inside argon2).
pub fn password_matches(password: &str, phc: &str) -> bool {
    rampart_protocol::passwords::matches(password, phc)
}

/// A well-formed argon2 hash of no known password, checked when the user does not exist so
/// that a login for an unknown name costs the same time as one for a known name.
pub fn decoy_password_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_password()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_passwords() {
        let s = random_hex(32);
        assert_eq!(s.len(), 64);
        let h = hash_secret(&s);
        assert!(secret_matches(&s, &h));
        assert!(!secret_matches(&random_hex(32), &h));
        let p = random_password();
        let ph = hash_password(&p);
        assert!(ph.starts_with("$argon2id$"));
        assert!(password_matches(&p, &ph));
        assert!(!password_matches("wrong", &ph));
        assert!(!password_matches(&p, "not a hash"));
    }
}
