//! One-time maintenance tokens: the server's signed permission to lift self-protection on one
//! agent, the second unload path beside the policy's unload password.
//!
//! A token is `rampart-maint.PAYLOAD.SIGNATURE` (base64url): the JSON [`MaintenanceClaims`] and
//! their ed25519 signature by the server's signing key, which the agent received at enrollment.
//! The agent checks the signature before it reads anything else, then the agent id, the expiry,
//! and that the nonce was never used.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "rampart-maint";

/// What a maintenance token allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceClaims {
    /// The one agent it is for.
    pub agent_id: String,
    /// Random, so that each token is used once.
    pub nonce: String,
    /// When it was issued, ms since the Unix epoch.
    pub issued_ms: i64,
    /// When it stops working.
    pub expires_ms: i64,
    /// The administrator who asked for it.
    pub issued_by: String,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the token's form.
    #[error("not a maintenance token (expected rampart-maint.PAYLOAD.SIGNATURE)")]
    Malformed,
    /// The signature is not the server's.
    #[error("the maintenance token is not signed by this agent's server")]
    BadSignature,
    /// For another agent.
    #[error("the maintenance token is for another agent")]
    WrongAgent,
    /// Expired.
    #[error("the maintenance token has expired")]
    Expired,
}

/// A new signing key from 32 random bytes (the caller supplies them from the OS generator).
pub fn signing_key(secret: [u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&secret)
}

/// The public half of `key`, hex, as agents keep it.
pub fn public_key_hex(key: &SigningKey) -> String {
    key.verifying_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Signs `claims` into a token.
pub fn issue(key: &SigningKey, claims: &MaintenanceClaims) -> String {
    let payload = serde_json::to_vec(claims).expect("claims serialize");
    let signature = key.sign(&payload);
    format!(
        "{PREFIX}.{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// Checks `token` against the server's public key (hex) for `agent_id` at `now_ms`: the
/// signature first, then the agent and the expiry. The caller checks the nonce was not used.
pub fn verify(
    token: &str,
    public_key_hex: &str,
    agent_id: &str,
    now_ms: i64,
) -> Result<MaintenanceClaims, TokenError> {
    let mut parts = token.trim().split('.');
    let (Some(PREFIX), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(sig)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or(TokenError::Malformed)?;
    let key = parse_hex32(public_key_hex)
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .ok_or(TokenError::BadSignature)?;
    key.verify(&payload, &Signature::from_bytes(&sig))
        .map_err(|_| TokenError::BadSignature)?;
    let claims: MaintenanceClaims =
        serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if claims.agent_id != agent_id {
        return Err(TokenError::WrongAgent);
    }
    if now_ms >= claims.expires_ms {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> MaintenanceClaims {
        MaintenanceClaims {
            agent_id: "a1".into(),
            nonce: "n".into(),
            issued_ms: 0,
            expires_ms: 1000,
            issued_by: "admin".into(),
        }
    }

    #[test]
    fn issue_and_verify() {
        let key = signing_key([7; 32]);
        let pk = public_key_hex(&key);
        let token = issue(&key, &claims());
        assert_eq!(verify(&token, &pk, "a1", 10).unwrap(), claims());
        assert_eq!(verify(&token, &pk, "a2", 10), Err(TokenError::WrongAgent));
        assert_eq!(verify(&token, &pk, "a1", 1000), Err(TokenError::Expired));
        let other = public_key_hex(&signing_key([8; 32]));
        assert_eq!(
            verify(&token, &other, "a1", 10),
            Err(TokenError::BadSignature)
        );
        // a changed payload breaks the signature
        let mut forged = claims();
        forged.agent_id = "a2".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let sig = token.rsplit('.').next().unwrap();
        let tampered = format!("{PREFIX}.{forged_payload}.{sig}");
        assert_eq!(
            verify(&tampered, &pk, "a2", 10),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify("nonsense", &pk, "a1", 10),
            Err(TokenError::Malformed)
        );
    }
}
