//! `rampart groups list|create`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// `rampart groups` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// List agent groups.
    List,
    /// Create an agent group, optionally with its first policy (TOML or JSON file).
    Create {
        /// Group name.
        name: String,
        /// Initial policy file.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

/// Runs a groups subcommand.
pub async fn run(root: &Path, command: Command) -> Result<()> {
    let admin = super::admin(root)?;
    match command {
        Command::List => {
            println!("{:<24} {:>8} {:>8}", "GROUP", "POLICY", "AGENTS");
            for g in admin.groups().await? {
                println!("{:<24} {:>8} {:>8}", g.name, g.policy_version, g.agents);
            }
        }
        Command::Create { name, policy } => {
            let policy = match policy {
                Some(file) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    Some(serde_json::from_str(&super::policy::policy_text_to_json(
                        &text,
                    )?)?)
                }
                None => None,
            };
            let view = admin.create_group(&name, policy).await?;
            for w in &view.warnings {
                eprintln!("warning: {w}");
            }
            println!("Created agent group {name:?}");
        }
    }
    Ok(())
}
