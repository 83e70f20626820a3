//! The agent's configuration (written at enrollment) and the enrollment itself.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rampart_protocol::enroll::{EnrollRequest, EnrollmentToken};
use serde::{Deserialize, Serialize};

use crate::client::ServerClient;
use crate::files::write_atomic;
use crate::identity;
use crate::paths::AgentPaths;

/// `ROOT/etc/rampart/agent.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The management server, `https://host:port`.
    pub server_url: String,
    /// This agent's id, given by the server at enrollment.
    pub agent_id: String,
    /// The group the agent enrolled into.
    pub group: String,
}

/// Everything the agent needs to talk to its server.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The configuration file's content.
    pub config: AgentConfig,
    /// The agent credential (`ID.SECRET`).
    pub credential: String,
    /// The pinned CA, PEM.
    pub ca_pem: String,
}

impl Enrollment {
    /// Reads the enrollment from the configuration store.
    pub fn load(paths: &AgentPaths) -> Result<Enrollment> {
        let file = paths.config_file();
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "reading {} (is this agent enrolled? `rampart agent enroll --server URL --token TOKEN`)",
                file.display()
            )
        })?;
        let config: AgentConfig =
            toml::from_str(&text).with_context(|| format!("reading {}", file.display()))?;
        let credential = read(&paths.credential_file())?;
        let ca_pem = read(&paths.server_ca_file())?;
        Ok(Enrollment {
            config,
            credential: credential.trim().to_owned(),
            ca_pem,
        })
    }

    /// A client for the server, with this agent's credential.
    pub fn client(&self) -> Result<ServerClient> {
        Ok(ServerClient::new(
            &self.config.server_url,
            &self.ca_pem,
            Some(self.credential.clone()),
        )?)
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Enrolls this host with the server at `server_url` using `token`, and stores the resulting
/// configuration, credential (mode 0600) and pinned CA in the configuration store.
pub async fn enroll(
    paths: &AgentPaths,
    server_url: &str,
    token: &str,
    force: bool,
) -> Result<AgentConfig> {
    if paths.config_file().exists() && !force {
        bail!(
            "this agent is already enrolled ({}); pass --force to enroll again as a new agent",
            paths.config_file().display()
        );
    }
    if !server_url.starts_with("https://") {
        bail!("the server URL must start with https:// (got {server_url:?})");
    }
    let token: EnrollmentToken = token.parse().map_err(anyhow::Error::msg)?;
    let ca_pem = ServerClient::fetch_pinned_ca(server_url, &token).await?;
    let client = ServerClient::new(server_url, &ca_pem, None)?;
    let answer = client
        .enroll(&EnrollRequest {
            token: token.credential(),
            identity: identity::current(),
        })
        .await
        .context("enrolling with the server")?;
    let config = AgentConfig {
        server_url: server_url.trim_end_matches('/').to_owned(),
        agent_id: answer.agent_id,
        group: answer.group,
    };
    std::fs::create_dir_all(&paths.config_dir).with_context(|| {
        format!(
            "creating the agent's configuration folder {}",
            paths.config_dir.display()
        )
    })?;
    write_atomic(&paths.server_ca_file(), ca_pem.as_bytes(), 0o644)?;
    write_atomic(
        &paths.credential_file(),
        answer.credential.as_bytes(),
        0o600,
    )?;
    write_atomic(
        &paths.server_signing_key_file(),
        answer.signing_key.as_bytes(),
        0o644,
    )?;
    // the configuration file last: its presence means the enrollment is complete
    write_atomic(
        &paths.config_file(),
        toml::to_string(&config)?.as_bytes(),
        0o644,
    )?;
    Ok(config)
}
