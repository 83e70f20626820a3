//! `rampart events`: events the server received.

use std::path::Path;

use anyhow::Result;
use rampart_protocol::admin::EventsQuery;

use super::format_time;

/// Options of `rampart events`.
#[derive(clap::Args)]
pub struct Args {
    /// Only this agent's events.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only events of this kind (agent.started, tamper, …).
    #[arg(long)]
    pub kind: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Lists events.
pub async fn run(root: &Path, args: Args) -> Result<()> {
    let admin = super::admin(root)?;
    let events = admin
        .events(&EventsQuery {
            agent: args.agent,
            kind: args.kind,
            offset: None,
            limit: Some(args.limit),
        })
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(());
    }
    for e in events {
        println!(
            "{}  {}  {:>6}  {:<18} {}",
            format_time(e.time_ms),
            &e.agent_id[..e.agent_id.len().min(8)],
            e.seq,
            e.kind,
            e.body
        );
    }
    Ok(())
}
