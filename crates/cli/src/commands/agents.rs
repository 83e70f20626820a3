//! `rampart agents list|revoke`.

use std::path::Path;

use anyhow::Result;

use super::format_time;

/// `rampart agents` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// List enrolled agents.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an agent: its credential stops working at once.
    Revoke {
        /// The agent id.
        id: String,
    },
    /// Print a one-time maintenance token that lifts self-protection on one agent
    /// (`rampart agent unload --token` on its host).
    MaintenanceToken {
        /// The agent id.
        id: String,
        /// How long it may be used: a number with s, m, h or d.
        #[arg(long, default_value = "1h")]
        valid: String,
    },
}

/// Runs an agents subcommand.
pub async fn run(root: &Path, command: Command) -> Result<()> {
    let admin = super::admin(root)?;
    match command {
        Command::List { json } => {
            let agents = admin.agents().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
                return Ok(());
            }
            println!(
                "{:<36}  {:<20} {:<12} {:<7} {:<23} PROTECTIONS",
                "AGENT", "HOST", "GROUP", "POLICY", "LAST CHECK-IN"
            );
            for a in agents {
                let protections: Vec<String> = a
                    .protections
                    .iter()
                    .map(|p| format!("{}={:?}", p.name, p.state).to_lowercase())
                    .collect();
                println!(
                    "{:<36}  {:<20} {:<12} {:<7} {:<23} {}{}",
                    a.id,
                    a.identity.hostname,
                    a.group,
                    a.applied_policy_version
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "-".into()),
                    format_time(a.last_seen_ms),
                    protections.join(" "),
                    if a.revoked { "  (revoked)" } else { "" }
                );
            }
        }
        Command::Revoke { id } => {
            admin.revoke(&id).await?;
            println!("Agent {id} revoked");
        }
        Command::MaintenanceToken { id, valid } => {
            let seconds = super::enroll_token::parse_duration(&valid)?;
            let t = admin.maintenance_token(&id, seconds).await?;
            eprintln!(
                "One-time maintenance token for agent {id}, valid until {}:",
                format_time(t.expires_at_ms)
            );
            println!("{}", t.token);
        }
    }
    Ok(())
}
