//! Checking a password against an argon2 hash in PHC form: administrator passwords on the
//! server, the policy's unload password on the agent.

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;

/// Whether `password` matches the argon2 PHC string `phc` (constant time inside argon2); a
/// malformed `phc` matches nothing.
pub fn matches(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}
