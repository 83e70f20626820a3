//! `rampart agent …`: run the agent daemon, enroll this host, show its status, write a note,
//! lift self-protection, uninstall.

use std::path::Path;

use anyhow::{bail, Result};
use rampart_agent::config::{enroll, Enrollment};
use rampart_agent::control::{self, Request};
use rampart_agent::outbox::Outbox;
use rampart_agent::paths::AgentPaths;
use rampart_agent::status::AgentStatus;
use rampart_protocol::events::AGENT_NOTE;
use serde_json::json;

use super::format_time;

/// `rampart agent` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Run the agent daemon in the foreground until SIGTERM or SIGINT.
    Run,
    /// Enroll this host with a management server.
    Enroll {
        /// The server, e.g. https://rampart.example.com:8443.
        #[arg(long)]
        server: String,
        /// The enrollment token from `rampart enroll-token create`.
        #[arg(long, env = "RAMPART_ENROLLMENT_TOKEN", hide_env_values = true)]
        token: String,
        /// Enroll again, as a new agent, even if this host is enrolled.
        #[arg(long)]
        force: bool,
    },
    /// Show the agent's enrollment, protections and delivery state.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Lift self-protection for 10 minutes: with a maintenance token from the server
    /// (`rampart agents maintenance-token`), or with the policy's unload password (read from
    /// RAMPART_UNLOAD_PASSWORD or standard input).
    Unload {
        /// A one-time maintenance token signed by the server.
        #[arg(long, env = "RAMPART_MAINTENANCE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Uninstall the agent from this host: only through an authorized unload (the same token or
    /// password as `unload`), then the agent is stopped and its install folder, configuration
    /// store, state, vault, quarantine and service unit are removed.
    Uninstall {
        /// A one-time maintenance token signed by the server.
        #[arg(long, env = "RAMPART_MAINTENANCE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Write an operator's note into the agent's event stream (delivered like every event).
    Note {
        /// The note's text.
        text: String,
        /// Write this many numbered notes at once.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
}

/// Runs an agent subcommand.
pub async fn run(root: &Path, command: Command) -> Result<()> {
    let paths = AgentPaths::new(root);
    match command {
        Command::Run => rampart_agent::daemon::run(paths, super::stop_signal()).await,
        Command::Enroll {
            server,
            token,
            force,
        } => {
            let config = enroll(&paths, &server, &token, force).await?;
            println!(
                "Enrolled as agent {} in group {:?} of {}",
                config.agent_id, config.group, config.server_url
            );
            Ok(())
        }
        Command::Status { json } => status(&paths, json).await,
        Command::Unload { token } => {
            let request = unload_request(token)?;
            match control::request(&paths.control_socket(), &request).await? {
                Some(reply) if reply.ok => {
                    println!("{}", reply.message);
                    Ok(())
                }
                Some(reply) => bail!("{}", reply.message),
                None => bail!("no agent is running below {}", paths.root.display()),
            }
        }
        Command::Uninstall { token } => uninstall(&paths, unload_request(token)?).await,
        Command::Note { text, count } => {
            if count == 0 || count > 1_000_000 {
                bail!("--count must be between 1 and 1000000");
            }
            Enrollment::load(&paths)?;
            // the running agent writes its own outbox; without one, write it directly
            let request = Request::Note {
                text: text.clone(),
                count,
            };
            if let Some(reply) = control::request(&paths.control_socket(), &request).await? {
                if !reply.ok {
                    bail!("{}", reply.message);
                }
                println!("{}", reply.message);
                return Ok(());
            }
            let outbox = Outbox::open(&paths.outbox_db()).await?;
            let events: Vec<_> = (0..count)
                .map(|i| {
                    let body = if count == 1 {
                        json!({"text": text})
                    } else {
                        json!({"text": text, "index": i})
                    };
                    (AGENT_NOTE.to_owned(), body)
                })
                .collect();
            for chunk in events.chunks(10_000) {
                outbox.push_many(chunk).await?;
            }
            outbox.close().await;
            println!("{count} note(s) written to the outbox");
            Ok(())
        }
    }
}

async fn status(paths: &AgentPaths, as_json: bool) -> Result<()> {
    let enrollment = Enrollment::load(paths)?;
    let mut status = AgentStatus::load(paths).unwrap_or_default();
    // a running agent answers with its live state; its files are its own to open
    let live = control::request(&paths.control_socket(), &Request::Status)
        .await
        .ok()
        .flatten();
    let running = live.is_some() || status.is_running();
    if let Some(p) = live.as_ref().and_then(|r| r.protections.clone()) {
        status.protections = p;
    }
    let pending = match live.and_then(|r| r.pending) {
        Some(n) => n,
        None if running => status.outbox_pending,
        // no agent: read the outbox without writing to it
        None => Outbox::pending_read_only(&paths.outbox_db())
            .await
            .unwrap_or(0),
    };
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "agent_id": enrollment.config.agent_id,
                "group": enrollment.config.group,
                "server_url": enrollment.config.server_url,
                "running": running,
                "pid": if running { Some(status.pid) } else { None },
                "last_checkin_ms": status.last_checkin_ms,
                "last_error": status.last_error,
                "applied_policy_version": status.applied_policy_version,
                "protections": status.protections,
                "outbox_pending": pending,
            }))?
        );
        return Ok(());
    }
    println!("Agent       {}", enrollment.config.agent_id);
    println!("Group       {}", enrollment.config.group);
    println!("Server      {}", enrollment.config.server_url);
    println!(
        "Daemon      {}",
        if running {
            format!("running (pid {})", status.pid)
        } else {
            "not running".to_owned()
        }
    );
    println!("Check-in    {}", format_time(status.last_checkin_ms));
    if let Some(e) = &status.last_error {
        println!("Last error  {e}");
    }
    println!(
        "Policy      {}",
        status
            .applied_policy_version
            .map(|v| format!("version {v}"))
            .unwrap_or_else(|| "none received yet".to_owned())
    );
    println!("Outbox      {pending} event(s) waiting");
    println!("Protections");
    for p in &status.protections {
        println!("  {:<18} {}", p.name, p.describe());
    }
    Ok(())
}

/// The unload request: the token if one was given, else the password (from
/// `RAMPART_UNLOAD_PASSWORD`, or asked for on standard input).
fn unload_request(token: Option<String>) -> Result<Request> {
    if let Some(token) = token {
        return Ok(Request::UnloadWithToken { token });
    }
    let password = match std::env::var("RAMPART_UNLOAD_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            eprint!("Unload password: ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        }
    };
    Ok(Request::Unload { password })
}

/// `rampart agent uninstall`: the running agent checks the authorization (and reports a refused
/// one as a `tamper` event); once it has lifted its protection it is stopped and its files go.
async fn uninstall(paths: &AgentPaths, request: Request) -> Result<()> {
    const AGENT: &[&str] = &["agent", "run"];
    match control::request(&paths.control_socket(), &request).await? {
        Some(reply) if reply.ok => {}
        Some(reply) => bail!("uninstall refused: {}", reply.message),
        None => bail!(
            "no agent runs below {}: uninstalling needs the running agent, which checks the \
             authorization (start it with `rampart agent run`)",
            paths.root.display()
        ),
    }
    if let Some(pid) = rampart_selfprotect::procinfo::running_below(&paths.root, AGENT) {
        super::up::terminate(pid);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while rampart_selfprotect::procinfo::running_below(&paths.root, AGENT).is_some() {
            if std::time::Instant::now() > deadline {
                bail!("the agent (pid {pid}) did not stop within 15 s; nothing was removed");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    // a server below the same root (`rampart up`) runs the installed binary too
    let server_here = paths.server_data_dir().is_dir();
    let mut gone = vec![
        paths.config_dir.clone(),
        paths.state_dir.clone(),
        paths.vault_dir.clone(),
        paths.quarantine_dir.clone(),
    ];
    gone.extend(paths.unit_files());
    if !server_here {
        gone.push(paths.install_dir.clone());
    }
    let mut removed = Vec::new();
    for path in gone {
        // the shadow a healed folder had, should the unload have left one
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let (Some(parent), Some(name)) = (path.parent(), name) {
            let shadow = parent.join(format!(".{name}.rampart-shadow"));
            if shadow.exists() {
                remove(&shadow)?;
            }
        }
        if std::fs::symlink_metadata(&path).is_ok() {
            remove(&path)?;
            removed.push(path.display().to_string());
        }
    }
    println!("Rampart agent uninstalled from {}", paths.root.display());
    for r in removed {
        println!("  removed  {r}");
    }
    if server_here {
        println!(
            "  kept     {} (the management server below this root uses it)",
            paths.install_dir.display()
        );
    }
    Ok(())
}

/// Removes a file or a folder with everything in it, immutable attributes first.
fn remove(path: &Path) -> Result<()> {
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !m.file_type().is_symlink() {
            let _ = rampart_sys::set_immutable(&p, false);
        }
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p)?.flatten().map(|e| e.path()));
        }
    }
    let m = std::fs::symlink_metadata(path)?;
    let result = if m.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    result.map_err(|e| anyhow::anyhow!("removing {}: {e}", path.display()))
}
