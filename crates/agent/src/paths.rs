//! Where the agent keeps its files, all below one root prefix (`/` on a real host, a temporary
//! folder in tests, so several agents run side by side).

use std::path::{Path, PathBuf};

/// The agent's folders and files.
#[derive(Debug, Clone)]
pub struct AgentPaths {
    /// The root prefix everything else is below.
    pub root: PathBuf,
    /// Installation folder: `ROOT/opt/rampart` (the `rampart` binary is in `bin/`).
    pub install_dir: PathBuf,
    /// Configuration store: `ROOT/etc/rampart`.
    pub config_dir: PathBuf,
    /// State: `ROOT/var/lib/rampart/agent` (outbox, applied policy, status).
    pub state_dir: PathBuf,
    /// Logs: `ROOT/var/log/rampart`.
    pub log_dir: PathBuf,
    /// The vault of originals ransomware protection keeps: `ROOT/var/lib/rampart/vault`.
    pub vault_dir: PathBuf,
    /// Quarantine: `ROOT/var/lib/rampart/quarantine` (files a convicted actor made).
    pub quarantine_dir: PathBuf,
}

impl AgentPaths {
    /// The layout below `root`.
    pub fn new(root: &Path) -> Self {
        AgentPaths {
            root: root.to_path_buf(),
            install_dir: root.join("opt/rampart"),
            config_dir: root.join("etc/rampart"),
            state_dir: root.join("var/lib/rampart/agent"),
            log_dir: root.join("var/log/rampart"),
            vault_dir: root.join("var/lib/rampart/vault"),
            quarantine_dir: root.join("var/lib/rampart/quarantine"),
        }
    }

    /// The data folder of a management server on this host (the same root): its database, CA
    /// and keys. Ransomware protection guards it wherever the server runs beside an agent.
    pub fn server_data_dir(&self) -> PathBuf {
        self.root.join("var/lib/rampart/server")
    }

    /// The installed `rampart` binary.
    pub fn installed_binary(&self) -> PathBuf {
        self.install_dir.join("bin/rampart")
    }

    /// The agent's service unit files (systemd), protected like the install folder.
    pub fn unit_files(&self) -> Vec<PathBuf> {
        vec![
            self.root.join("etc/systemd/system/rampart-agent.service"),
            self.root.join("lib/systemd/system/rampart-agent.service"),
        ]
    }

    /// The agent's local control socket (`rampart agent note`, `rampart agent unload`).
    pub fn control_socket(&self) -> PathBuf {
        self.state_dir.join("control.sock")
    }

    /// The agent's configuration (server URL, agent id).
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("agent.toml")
    }

    /// The agent's credential (mode 0600).
    pub fn credential_file(&self) -> PathBuf {
        self.config_dir.join("agent.credential")
    }

    /// The server CA the agent pinned at enrollment.
    pub fn server_ca_file(&self) -> PathBuf {
        self.config_dir.join("server-ca.pem")
    }

    /// The server's public key for maintenance tokens, received at enrollment.
    pub fn server_signing_key_file(&self) -> PathBuf {
        self.config_dir.join("server-signing-key")
    }

    /// Nonces of the maintenance tokens already used (each works once).
    pub fn used_tokens_file(&self) -> PathBuf {
        self.state_dir.join("used-maintenance-tokens")
    }

    /// The outbox database.
    pub fn outbox_db(&self) -> PathBuf {
        self.state_dir.join("outbox.db")
    }

    /// The desired state last received from the server, with its ETag.
    pub fn desired_state_file(&self) -> PathBuf {
        self.state_dir.join("desired-state.json")
    }

    /// Ransomware incidents (one JSON file each, with what restores them).
    pub fn incidents_dir(&self) -> PathBuf {
        self.state_dir.join("ransomware-incidents")
    }

    /// What the running agent last wrote about itself, for `rampart agent status`.
    pub fn status_file(&self) -> PathBuf {
        self.state_dir.join("status.json")
    }
}
