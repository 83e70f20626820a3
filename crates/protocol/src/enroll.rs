//! Enrollment: an agent trades an enrollment token for its own credential.
//!
//! The enrollment token an administrator hands out carries the SHA-256 fingerprint of the
//! server's CA, so the agent can pin the CA before it sends anything secret.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::checkin::AgentIdentity;

/// What the agent sends to enroll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The enrollment token's id and secret, `ID.SECRET` (without the CA fingerprint).
    pub token: String,
    /// Who the agent is.
    pub identity: AgentIdentity,
}

/// The server's answer: the agent's own identity and credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollResponse {
    /// The agent's id.
    pub agent_id: String,
    /// The agent's credential, `AGENT_ID.SECRET`; the server keeps only a hash of it.
    pub credential: String,
    /// The group the agent joined.
    pub group: String,
    /// The server's ed25519 public key (hex): maintenance tokens must carry its signature.
    pub signing_key: String,
}

/// The enrollment token as handed to an operator: `rampart-enroll.ID.SECRET.CA_SHA256`.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// Token id (hex).
    pub id: String,
    /// Token secret (hex).
    pub secret: String,
    /// SHA-256 of the server CA certificate (DER), hex.
    pub ca_sha256: String,
}

const PREFIX: &str = "rampart-enroll";

impl EnrollmentToken {
    /// The part the server checks: `ID.SECRET`.
    pub fn credential(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}.{}.{}.{}", self.id, self.secret, self.ca_sha256)
    }
}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // never print the secret
        write!(f, "EnrollmentToken({}, ca {})", self.id, self.ca_sha256)
    }
}

impl FromStr for EnrollmentToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        let hex = |p: &str, len: usize| p.len() == len && p.bytes().all(|b| b.is_ascii_hexdigit());
        match parts.as_slice() {
            [PREFIX, id, secret, fp] if hex(id, 16) && hex(secret, 64) && hex(fp, 64) => {
                Ok(EnrollmentToken {
                    id: id.to_string(),
                    secret: secret.to_string(),
                    ca_sha256: fp.to_ascii_lowercase(),
                })
            }
            _ => Err("not an enrollment token: expected rampart-enroll.ID.SECRET.CA_SHA256 as printed by `rampart enroll-token create`".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_debug_hides_secret() {
        let t = EnrollmentToken {
            id: "0123456789abcdef".into(),
            secret: "a".repeat(64),
            ca_sha256: "b".repeat(64),
        };
        let parsed: EnrollmentToken = t.to_string().parse().unwrap();
        assert!(parsed == t);
        assert!(!format!("{t:?}").contains(&"a".repeat(64)));
        assert!("rampart-enroll.x.y.z".parse::<EnrollmentToken>().is_err());
    }
}
