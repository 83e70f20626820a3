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
    /// Ransomware protection: which documents, what is done, how much the vault keeps.
    pub ransomware: RansomwareSettings,
}

/// Ransomware protection ("protects documents against unauthorized encryption or
/// modification").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RansomwareSettings {
    /// `block` (default): an actor convicted of encrypting or destroying documents is stopped,
    /// its program blocked and every file it touched restored; `audit`: the same detection and
    /// report, nothing stopped; `strict`: only trusted programs may modify documents in the
    /// protected folders (others get EPERM when they open one for writing).
    pub mode: RansomwareMode,
    /// Protected folders (absolute paths; on an agent below its root prefix). Default
    /// `/home`, `/root`, `/srv`; the server's host adds its data folder.
    pub folders: Vec<String>,
    /// Document types protected: `office`, `pdf`, `images`, `text`, `source`, `archives`,
    /// `databases`, `mail`, `virtual-disks` (default: all). Files whose name says nothing are
    /// recognised by their content type.
    pub document_types: Vec<DocumentFamily>,
    /// More extensions to protect (`dwg`, `.blend`).
    pub extra_extensions: Vec<String>,
    /// Paths left alone: a folder (`/home/alice/scratch`) or a folder name anywhere below the
    /// protected folders (`node_modules`, `target`, `.cache`).
    pub exclusions: Vec<String>,
    /// Programs whose changes are never judged (and that `strict` mode lets write).
    pub trusted_programs: Vec<TrustedProgram>,
    /// What the vault of originals keeps.
    pub vault: VaultSettings,
    /// Decoy documents placed in each protected folder: a change to one convicts at once.
    pub canaries: bool,
}

impl Default for RansomwareSettings {
    fn default() -> Self {
        RansomwareSettings {
            mode: RansomwareMode::Block,
            folders: vec!["/home".into(), "/root".into(), "/srv".into()],
            document_types: DocumentFamily::ALL.to_vec(),
            extra_extensions: Vec::new(),
            exclusions: vec![
                "node_modules".into(),
                "target".into(),
                ".cache".into(),
                ".git".into(),
            ],
            trusted_programs: Vec::new(),
            vault: VaultSettings::default(),
            canaries: true,
        }
    }
}

/// What ransomware protection does on conviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RansomwareMode {
    /// Stop the actor, block its program, restore its files.
    #[default]
    Block,
    /// Detect and report only.
    Audit,
    /// Only trusted programs may modify protected documents.
    Strict,
}

/// A family of document types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DocumentFamily {
    /// Word processing, spreadsheets, presentations.
    Office,
    /// PDF and other page formats.
    Pdf,
    /// Photos, drawings.
    Images,
    /// Plain and structured text.
    Text,
    /// Program source.
    Source,
    /// Archives.
    Archives,
    /// Database files.
    Databases,
    /// Mail, contacts, calendars.
    Mail,
    /// Virtual machine disks.
    VirtualDisks,
}

impl DocumentFamily {
    /// Every family.
    pub const ALL: &'static [DocumentFamily] = &[
        DocumentFamily::Office,
        DocumentFamily::Pdf,
        DocumentFamily::Images,
        DocumentFamily::Text,
        DocumentFamily::Source,
        DocumentFamily::Archives,
        DocumentFamily::Databases,
        DocumentFamily::Mail,
        DocumentFamily::VirtualDisks,
    ];
}

/// A trusted program: its path, and the SHA-256 its file must have (without one, the file at
/// that path when the policy is applied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedProgram {
    /// Absolute path of the executable.
    pub path: String,
    /// Its SHA-256, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Limits of the vault of originals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultSettings {
    /// Bytes of copies the vault keeps at most (oldest go first). Default 2 GiB.
    pub max_bytes: u64,
    /// Hours an original is kept after it changed. Default 72.
    pub max_age_hours: u32,
    /// Files larger than this are not copied before they change (recorded as not preserved).
    /// Default 256 MiB.
    pub max_file_bytes: u64,
}

impl Default for VaultSettings {
    fn default() -> Self {
        VaultSettings {
            max_bytes: 2 << 30,
            max_age_hours: 72,
            max_file_bytes: 256 << 20,
        }
    }
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
        self.ransomware.validate()?;
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

impl RansomwareSettings {
    fn validate(&self) -> Result<(), PolicyError> {
        let invalid = |field: &str, message: String| PolicyError::InvalidValue {
            field: format!("ransomware.{field}"),
            message,
        };
        for (i, f) in self.folders.iter().enumerate() {
            if !f.starts_with('/') || f.contains('\0') {
                return Err(invalid(
                    &format!("folders[{i}]"),
                    format!("must be an absolute path, got {f:?}"),
                ));
            }
        }
        for (i, e) in self.extra_extensions.iter().enumerate() {
            let e = e.trim_start_matches('.');
            if e.is_empty() || e.len() > 32 || !e.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(invalid(
                    &format!("extra_extensions[{i}]"),
                    format!("must be letters and digits (1 to 32), got {e:?}"),
                ));
            }
        }
        for (i, t) in self.trusted_programs.iter().enumerate() {
            if !t.path.starts_with('/') {
                return Err(invalid(
                    &format!("trusted_programs[{i}].path"),
                    format!("must be an absolute path, got {:?}", t.path),
                ));
            }
            if let Some(h) = &t.sha256 {
                if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(invalid(
                        &format!("trusted_programs[{i}].sha256"),
                        "must be 64 hex digits".into(),
                    ));
                }
            }
        }
        if self.vault.max_age_hours == 0 || self.vault.max_age_hours > 24 * 365 {
            return Err(invalid(
                "vault.max_age_hours",
                "must be between 1 and 8760".into(),
            ));
        }
        if self.vault.max_bytes < 1 << 20 {
            return Err(invalid("vault.max_bytes", "must be at least 1 MiB".into()));
        }
        Ok(())
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
                hint: " (allowed here: `checkin`, `update`, `unload`, `ransomware`)".into()
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
    fn ransomware_settings_are_validated_by_field() {
        let p = Policy::parse_json(
            r#"{"ransomware": {"mode": "strict", "folders": ["/data"], "document_types": ["pdf", "virtual-disks"],
                "trusted_programs": [{"path": "/usr/bin/git"}], "vault": {"max_age_hours": 24}}}"#,
        )
        .unwrap();
        let r = &p.policy.ransomware;
        assert_eq!(r.mode, RansomwareMode::Strict);
        assert_eq!(
            r.document_types,
            vec![DocumentFamily::Pdf, DocumentFamily::VirtualDisks]
        );
        assert_eq!(r.vault.max_file_bytes, 256 << 20, "defaults fill the rest");
        for (text, field) in [
            (r#"{"ransomware": {"mode": "kill"}}"#, "ransomware.mode"),
            (
                r#"{"ransomware": {"folders": ["home"]}}"#,
                "ransomware.folders[0]",
            ),
            (
                r#"{"ransomware": {"document_types": ["spreadsheets"]}}"#,
                "ransomware.document_types",
            ),
            (
                r#"{"ransomware": {"trusted_programs": [{"path": "/bin/x", "sha256": "abc"}]}}"#,
                "ransomware.trusted_programs[0].sha256",
            ),
            (
                r#"{"ransomware": {"vault": {"max_age_hours": 0}}}"#,
                "ransomware.vault.max_age_hours",
            ),
        ] {
            let err = Policy::parse_json(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
        let err = Policy::parse_json(r#"{"ransomware": {"vault": {"size": 1}}}"#).unwrap_err();
        assert!(err.to_string().contains("ransomware.vault.size"), "{err}");
    }

    #[test]
    fn round_trip() {
        let p = Policy::parse_json(r#"{"checkin": {"interval_seconds": 5}}"#).unwrap();
        let again = Policy::parse_value(p.policy.to_value()).unwrap();
        assert_eq!(p.policy, again.policy);
    }
}
