//! Agent-group policies: what an administrator sets for a group of agents.
//!
//! A policy is validated before the server stores it ([`Policy::parse_json`] and
//! [`Policy::parse_value`]): an unknown key is an error that names the key, a bad value names
//! the field and what is allowed. Policies exported from the older suite may carry the four
//! self-protection switches (`protect_services`, `protect_install_files`, `protect_config`,
//! `protect_processes`, in whatever spelling); they are accepted, dropped and reported as
//! warnings, because self-protection is always on and no setting turns it off.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The settings an agent group's agents follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// How often agents of the group check in with the server.
    pub checkin: CheckinSettings,
    /// Privileges and Other Settings › Other Settings › Update Settings.
    pub update: UpdateSettings,
    /// The unload password that lifts self-protection on an agent (`rampart agent unload`).
    pub unload: UnloadSettings,
}

/// The unload password. Self-protection itself is always on; this only says who may lift it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct UnloadSettings {
    /// A new unload password (8 to 256 characters). Accepted on input only: the server replaces
    /// it by its argon2 hash before storing the policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The argon2id hash (PHC string) of the unload password. Without one, only a maintenance
    /// token signed by the server unloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

/// How often agents check in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckinSettings {
    /// Seconds between two check-ins (agents add up to ±10 % jitter). 1 to 86,400; default 60.
    pub interval_seconds: u32,
}

impl Default for CheckinSettings {
    fn default() -> Self {
        CheckinSettings {
            interval_seconds: 60,
        }
    }
}

/// Update settings of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateSettings {
    /// "Security Agents only update the following components": `all` (default) or
    /// `pattern-files` (program upgrades are held back, pattern files still flow).
    pub components: UpdateComponents,
}

/// Which components agents of a group take from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum UpdateComponents {
    /// Pattern files and program builds.
    #[default]
    #[serde(rename = "all")]
    All,
    /// Pattern files only: program upgrades are held back.
    #[serde(rename = "pattern-files")]
    PatternFiles,
}

/// A policy that passed validation, with the warnings its text gave rise to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPolicy {
    /// The validated policy.
    pub policy: Policy,
    /// Keys that were accepted but ignored (the legacy self-protection switches).
    pub warnings: Vec<String>,
}

/// Why a policy was refused. Nothing is stored when a policy is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not JSON (or TOML, for the CLI) at all.
    #[error("policy is not valid {format}: {message}")]
    Malformed {
        /// "JSON" or "TOML".
        format: &'static str,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key that no policy has.
    #[error("unknown policy key `{key}`{hint}")]
    UnknownKey {
        /// The dotted path of the key, e.g. `update.component`.
        key: String,
        /// The keys allowed at that place, as a sentence fragment.
        hint: String,
    },
    /// A value that the field does not allow.
    #[error("invalid value for `{field}`: {message}")]
    InvalidValue {
        /// The dotted path of the field.
        field: String,
        /// What is allowed there.
        message: String,
    },
}

/// The legacy self-protection switches, by normalized name (lower case, letters and digits).
const LEGACY_SWITCHES: &[&str] = &[
    "protectservices",
    "protectagentservices",
    "protectsecurityagentservices",
    "protectinstallfiles",
    "protectinstallationfiles",
    "protectfilesininstallationfolder",
    "protectfilesintheinstallationfolder",
    "protectinstallfolder",
    "protectconfig",
    "protectconfiguration",
    "protectconfigstore",
    "protectregistry",
    "protectregistrykeys",
    "protectprocesses",
    "protectagentprocesses",
    "protectsecurityagentprocesses",
];

/// Sections under which the older suite kept those switches, by normalized name.
const LEGACY_SECTIONS: &[&str] = &[
    "selfprotection",
    "agentselfprotection",
    "securityagentselfprotection",
    "selfprotect",
];

fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn is_legacy_switch(key: &str) -> bool {
    let n = normalize(key);
    let n = n
        .strip_prefix("enable")
        .map(str::to_owned)
        .unwrap_or(n.clone());
    LEGACY_SWITCHES.contains(&n.as_str())
}

fn legacy_warning(path: &str) -> String {
    format!(
        "`{path}` ignored: self-protection is always on and no policy setting turns it off \
         (only an authorized unload lifts it)"
    )
}

/// Removes the legacy switches from a policy object, returning a warning for each.
fn strip_legacy(object: &mut serde_json::Map<String, Value>) -> Vec<String> {
    let mut warnings = Vec::new();
    let keys: Vec<String> = object.keys().cloned().collect();
    for key in keys {
        if is_legacy_switch(&key) {
            object.remove(&key);
            warnings.push(legacy_warning(&key));
        } else if LEGACY_SECTIONS.contains(&normalize(&key).as_str()) {
            if let Some(Value::Object(section)) = object.get_mut(&key) {
                let inner: Vec<String> = section.keys().cloned().collect();
                for k in inner {
                    if is_legacy_switch(&k) {
                        section.remove(&k);
                        warnings.push(legacy_warning(&format!("{key}.{k}")));
                    }
                }
                if section.is_empty() {
                    object.remove(&key);
                }
            }
        }
    }
    warnings
}

impl Policy {
    /// Parses and validates a policy from JSON text.
    pub fn parse_json(text: &str) -> Result<ParsedPolicy, PolicyError> {
        let value: Value = serde_json::from_str(text).map_err(|e| PolicyError::Malformed {
            format: "JSON",
            message: e.to_string(),
        })?;
        Self::parse_value(value)
    }

    /// Validates a policy given as a JSON value (the CLI converts TOML to this form).
    pub fn parse_value(mut value: Value) -> Result<ParsedPolicy, PolicyError> {
        let Value::Object(object) = &mut value else {
            return Err(PolicyError::InvalidValue {
                field: "(policy)".into(),
                message: "a policy is a JSON object of settings, e.g. {\"update\": {\"components\": \"all\"}}".into(),
            });
        };
        let warnings = strip_legacy(object);
        let policy: Policy = serde_path_to_error::deserialize(value).map_err(convert_error)?;
        policy.validate()?;
        Ok(ParsedPolicy { policy, warnings })
    }

    /// Checks the ranges serde cannot express.
    fn validate(&self) -> Result<(), PolicyError> {
        let interval = self.checkin.interval_seconds;
        if !(1..=86_400).contains(&interval) {
            return Err(PolicyError::InvalidValue {
                field: "checkin.interval_seconds".into(),
                message: format!("must be between 1 and 86400 seconds, got {interval}"),
            });
        }
        if let Some(p) = &self.unload.password {
            if !(8..=256).contains(&p.chars().count()) {
                return Err(PolicyError::InvalidValue {
                    field: "unload.password".into(),
                    message: "must be 8 to 256 characters".into(),
                });
            }
        }
        if let Some(h) = &self.unload.password_hash {
            if !h.starts_with("$argon2") || h.len() > 512 {
                return Err(PolicyError::InvalidValue {
                    field: "unload.password_hash".into(),
                    message: "must be an argon2 hash in PHC form ($argon2id$…); to set a new password use unload.password".into(),
                });
            }
        }
        Ok(())
    }

    /// The policy as a JSON value with every field present.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a policy always serializes")
    }
}

fn convert_error(err: serde_path_to_error::Error<serde_json::Error>) -> PolicyError {
    let path = err.path().to_string();
    let message = err.inner().to_string();
    // serde's own words: "unknown field `x`, expected one of `a`, `b` at line .."
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let key = if path == "." || path.is_empty() {
            name.to_owned()
        } else {
            // serde_path_to_error's path ends at the unknown key itself
            path.clone()
        };
        let hint = match rest.find("expected ") {
            Some(i) => format!(
                " (allowed here: {})",
                rest[i + "expected ".len()..]
                    .trim_start_matches("one of ")
                    .trim_end_matches('.')
            ),
            None => String::new(),
        };
        return PolicyError::UnknownKey { key, hint };
    }
    let field = if path == "." { "(policy)".into() } else { path };
    PolicyError::InvalidValue { field, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_policy_takes_defaults() {
        let p = Policy::parse_json("{}").unwrap();
        assert_eq!(p.policy, Policy::default());
        assert_eq!(p.policy.checkin.interval_seconds, 60);
        assert_eq!(p.policy.update.components, UpdateComponents::All);
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Policy::parse_json(r#"{"update": {"component": "all"}}"#).unwrap_err();
        match &err {
            PolicyError::UnknownKey { key, hint } => {
                assert_eq!(key, "update.component");
                assert!(hint.contains("components"), "{hint}");
            }
            other => panic!("{other:?}"),
        }
        let err = Policy::parse_json(r#"{"colour": 1}"#).unwrap_err();
        assert_eq!(
            err,
            PolicyError::UnknownKey {
                key: "colour".into(),
                hint: " (allowed here: `checkin`, `update`, `unload`)".into()
            }
        );
    }

    #[test]
    fn bad_value_names_field_and_allowed_values() {
        let err = Policy::parse_json(r#"{"update": {"components": "everything"}}"#).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("update.components"), "{text}");
        assert!(text.contains("pattern-files"), "{text}");
        let err = Policy::parse_json(r#"{"checkin": {"interval_seconds": 0}}"#).unwrap_err();
        assert!(err.to_string().contains("checkin.interval_seconds"));
        let err = Policy::parse_json(r#"{"checkin": {"interval_seconds": "often"}}"#).unwrap_err();
        assert!(err.to_string().contains("checkin.interval_seconds"));
    }

    #[test]
    fn malformed_json_is_reported() {
        let err = Policy::parse_json("{\"update\": ").unwrap_err();
        assert!(matches!(err, PolicyError::Malformed { .. }), "{err:?}");
        assert!(Policy::parse_json("[1]").is_err());
    }

    #[test]
    fn legacy_switches_are_accepted_and_ignored_in_any_spelling() {
        let text = r#"{
            "protect_services": false,
            "ProtectInstallFiles": false,
            "protect-config": "off",
            "selfProtection": {"protectProcesses": false, "Protect Registry Keys": 0},
            "update": {"components": "pattern-files"}
        }"#;
        let p = Policy::parse_json(text).unwrap();
        assert_eq!(p.warnings.len(), 5, "{:?}", p.warnings);
        assert!(p.warnings.iter().all(|w| w.contains("always on")));
        assert_eq!(p.policy.update.components, UpdateComponents::PatternFiles);
        // nothing of the switches survives in what is stored
        let stored = p.policy.to_value().to_string().to_lowercase();
        assert!(!stored.contains("protect"), "{stored}");
    }

    #[test]
    fn unknown_key_inside_legacy_section_is_still_an_error() {
        let err = Policy::parse_json(r#"{"self_protection": {"protect_services": false, "x": 1}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("self_protection"), "{err}");
    }

    #[test]
    fn round_trip() {
        let p = Policy::parse_json(r#"{"checkin": {"interval_seconds": 5}}"#).unwrap();
        let again = Policy::parse_value(p.policy.to_value()).unwrap();
        assert_eq!(p.policy, again.policy);
    }
}
