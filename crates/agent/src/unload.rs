//! Checking an unload password against the policy's argon2 hash.

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;

/// Whether `password` matches the argon2 PHC string `phc` (constant time inside argon2).
pub fn password_matches(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}
