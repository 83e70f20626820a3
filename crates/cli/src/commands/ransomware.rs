//! `rampart ransomware …`: ransomware protection on this host, through the running agent
//! (which does the work: with self-protection on, only it may touch its vault).

use std::path::Path;

use anyhow::{bail, Context, Result};
use rampart_agent::control::{self, Reply, Request};
use rampart_agent::paths::AgentPaths;
use rampart_agent::ransomware::VaultSummary;
use rampart_protocol::ransomware::{FileOutcome, Incident};

use super::format_time;

/// `rampart ransomware` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Show whether documents are protected, in which mode, and how many incidents there were.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the incidents: who was convicted, what it did, what became of every file.
    Incidents {
        /// Print JSON (every file of every incident).
        #[arg(long)]
        json: bool,
    },
    /// Restore the files of an incident (again: a restore can be repeated safely).
    Restore {
        /// The incident's id, as `rampart ransomware incidents` shows it.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what the vault of originals holds and its limits.
    Vault {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

async fn ask(root: &Path, request: &Request) -> Result<Reply> {
    let paths = AgentPaths::new(root);
    let reply = control::request(&paths.control_socket(), request)
        .await
        .with_context(|| format!("asking the agent at {}", paths.control_socket().display()))?;
    let Some(reply) = reply else {
        bail!(
            "no agent is running below {} (start it with `rampart agent run`)",
            root.display()
        );
    };
    if !reply.ok {
        bail!("{}", reply.message);
    }
    Ok(reply)
}

/// Runs a `rampart ransomware` subcommand.
pub async fn run(root: &Path, cmd: Command) -> Result<()> {
    match cmd {
        Command::Status { json } => {
            let reply = ask(root, &Request::RansomwareStatus).await?;
            let data = reply.data.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&data)?);
                return Ok(());
            }
            println!(
                "Ransomware protection  {}",
                data["status"]["state"].as_str().unwrap_or("unknown")
            );
            println!("  {}", reply.message);
            println!(
                "  Mode       {}",
                data["mode"].as_str().unwrap_or("unknown")
            );
            let folders: Vec<&str> = data["folders"]
                .as_array()
                .map(|a| a.iter().filter_map(|f| f.as_str()).collect())
                .unwrap_or_default();
            println!("  Folders    {}", folders.join(", "));
            let protected: Vec<&str> = data["protected"]
                .as_array()
                .map(|a| a.iter().filter_map(|f| f.as_str()).collect())
                .unwrap_or_default();
            if !protected.is_empty() && protected != folders {
                println!("  Protected  {}", protected.join(", "));
            }
            println!("  Incidents  {}", data["incidents"]);
            println!(
                "  Held       {} open(s) waited for their actor's judgement, {} ms in all",
                data["held"]["opens"], data["held"]["ms"]
            );
            println!(
                "  Backlog    {} change(s) waiting to be judged",
                data["backlog"]
            );
            if data["calm"].is_object() {
                println!(
                    "  Calm       {} folder(s) read without a round trip, {} document(s) guarded by a lease; {} permission event(s), {} lease break(s) so far ({} ms waited in all)",
                    data["calm"]["folders"],
                    data["calm"]["guarded"],
                    data["calm"]["permission_events"],
                    data["calm"]["lease_breaks"],
                    data["calm"]["lease_break_ms"].as_u64().unwrap_or(0)
                );
                match data["calm"]["processes"].as_str() {
                    Some("tracepoints") | None => {}
                    Some("proc connector") => println!(
                        "  Processes  read from the proc connector (the kernel did not load the tracepoints): every fork, exec and exit costs more"
                    ),
                    Some(_) => println!(
                        "  Processes  not announced: changes of processes gone before they are read are attributed to no one"
                    ),
                }
                if data["calm"]["refused_unasked"].as_u64().unwrap_or(0) > 0 {
                    println!(
                        "  Refused    {} open(s) refused by the kernel: the agent had no descriptor left for their event",
                        data["calm"]["refused_unasked"]
                    );
                }
                if data["calm"]["let_through"].as_u64().unwrap_or(0) > 0 {
                    println!(
                        "  Unjudged   {} open(s) let through unjudged: the permission side had stopped answering (a bug — the agent's log tells when)",
                        data["calm"]["let_through"]
                    );
                }
                if data["calm"]["changes_lost"].as_u64().unwrap_or(0) > 0 {
                    println!(
                        "  Lost       the kernel's queue of changes overflowed {} time(s): changes were lost unjudged",
                        data["calm"]["changes_lost"]
                    );
                }
            }
            Ok(())
        }
        Command::Incidents { json } => {
            let reply = ask(root, &Request::RansomwareIncidents).await?;
            let incidents: Vec<Incident> = serde_json::from_value(reply.data.unwrap_or_default())
                .context("reading the agent's answer")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&incidents)?);
                return Ok(());
            }
            if incidents.is_empty() {
                println!("No ransomware incidents.");
                return Ok(());
            }
            println!(
                "{:<24} {:<23} {:<9} {:>7} {:>8} {:>9}  PROGRAM",
                "INCIDENT", "CONVICTED", "RESPONSE", "CHANGED", "RESTORED", "NOT-KEPT"
            );
            for i in &incidents {
                println!(
                    "{:<24} {:<23} {:<9} {:>7} {:>8} {:>9}  {}",
                    i.id,
                    format_time(i.convicted_ms),
                    format!("{:?}", i.response).to_lowercase(),
                    i.changed_before_conviction,
                    i.count(FileOutcome::Restored),
                    i.count(FileOutcome::NotPreserved),
                    i.actor.program
                );
            }
            Ok(())
        }
        Command::Restore { id, json } => {
            let reply = ask(root, &Request::RansomwareRestore { id }).await?;
            let incident: Incident = serde_json::from_value(reply.data.unwrap_or_default())
                .context("reading the agent's answer")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&incident)?);
                return Ok(());
            }
            for f in &incident.files {
                println!(
                    "{:<14} {:<9} {}{}",
                    serde_json::to_value(f.outcome)?.as_str().unwrap_or(""),
                    format!("{:?}", f.action).to_lowercase(),
                    f.path,
                    f.renamed_to
                        .as_ref()
                        .map(|t| format!(" (was at {t})"))
                        .unwrap_or_default()
                );
            }
            println!(
                "{}: {} restored, {} unchanged, {} quarantined, {} not preserved, {} failed",
                incident.id,
                incident.count(FileOutcome::Restored),
                incident.count(FileOutcome::Unchanged),
                incident.count(FileOutcome::Quarantined),
                incident.count(FileOutcome::NotPreserved),
                incident.count(FileOutcome::Failed)
            );
            if incident.count(FileOutcome::Failed) > 0 {
                bail!("some files could not be restored (the agent's log says why)");
            }
            Ok(())
        }
        Command::Vault { json } => {
            let reply = ask(root, &Request::RansomwareVault).await?;
            let v: VaultSummary = serde_json::from_value(reply.data.unwrap_or_default())
                .context("reading the agent's answer")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("Vault       {}", v.dir);
            println!(
                "Copies      {} ({:.1} MiB of at most {:.1} MiB, kept up to {} h)",
                v.copies,
                v.bytes as f64 / 1048576.0,
                v.max_bytes as f64 / 1048576.0,
                v.max_age_hours
            );
            println!(
                "Per file    at most {:.1} MiB (larger documents are recorded as not preserved)",
                v.max_file_bytes as f64 / 1048576.0
            );
            println!(
                "Guarding    {} document(s) in {} folder(s)",
                v.documents, v.folders
            );
            Ok(())
        }
    }
}
