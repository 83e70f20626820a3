//! Where the server keeps its files, all below one root prefix (`/` on a real host, a
//! temporary folder in tests, so several servers run side by side).

use std::path::{Path, PathBuf};

/// The server's folders and files.
#[derive(Debug, Clone)]
pub struct ServerPaths {
    /// The root prefix everything else is below.
    pub root: PathBuf,
    /// Data folder: database, CA certificate, listen address.
    pub data_dir: PathBuf,
    /// Configuration folder (shared with the agent): `ROOT/etc/rampart`.
    pub config_dir: PathBuf,
}

impl ServerPaths {
    /// The layout below `root`.
    pub fn new(root: &Path) -> Self {
        ServerPaths {
            root: root.to_path_buf(),
            data_dir: root.join("var/lib/rampart/server"),
            config_dir: root.join("etc/rampart"),
        }
    }

    /// The embedded SQLite database.
    pub fn sqlite_db(&self) -> PathBuf {
        self.data_dir.join("rampart.db")
    }

    /// The default database URL: the embedded SQLite store.
    pub fn default_database_url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.sqlite_db().display())
    }

    /// The CA certificate in PEM, written at start for operators and agents.
    pub fn ca_pem(&self) -> PathBuf {
        self.data_dir.join("ca.pem")
    }

    /// The install folder (`ROOT/opt/rampart`), shared with the agent.
    pub fn install_dir(&self) -> PathBuf {
        self.root.join("opt/rampart")
    }

    /// The server's service unit files (systemd).
    pub fn unit_files(&self) -> Vec<PathBuf> {
        vec![
            self.root.join("etc/systemd/system/rampart-server.service"),
            self.root.join("lib/systemd/system/rampart-server.service"),
        ]
    }

    /// The address the server listens on, written once it listens (`127.0.0.1:8443`).
    pub fn listen_address_file(&self) -> PathBuf {
        self.data_dir.join("listen-address")
    }
}
