//! The agent's self-protection: what it covers (its install folder, configuration store, state
//! folder, ransomware vault and quarantine, and service unit, all below the agent's root
//! prefix) handed to the [`Guardian`](rampart_selfprotect::guardian::Guardian), which picks
//! the tier.

use rampart_selfprotect::guardian::{Supervision, Target};

use crate::paths::AgentPaths;

pub use rampart_selfprotect::guardian::{Guardian as Protection, NAME, UNLOAD_PERIOD};

/// What self-protection covers for the agent below `paths`' root.
pub fn target(paths: &AgentPaths) -> Target {
    Target {
        trees: vec![
            paths.install_dir.clone(),
            paths.config_dir.clone(),
            paths.state_dir.clone(),
            // ransomware protection's originals and what it took away from an attacker: only
            // the agent writes, renames or deletes there
            paths.vault_dir.clone(),
            paths.quarantine_dir.clone(),
        ],
        files: paths.unit_files(),
        // the configuration store stays without the immutable attribute: a write the kernel
        // refuses for immutability never reaches the file guard, so it could not be reported
        immutable_trees: vec![paths.install_dir.clone()],
        supervision: Some(Supervision::of_this_process(&paths.root)),
    }
}
