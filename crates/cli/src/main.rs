//! `rampart`: the management server, the agent and the administrator's tools in one binary.
//! Each subcommand lives in its own file under `commands/`.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes scripts can rely on.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other failure.
    pub const FAILURE: u8 = 1;
    /// Wrong usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// The server refused the credential or session (log in again).
    pub const UNAUTHORIZED: u8 = 3;
    /// The server could not be reached.
    pub const UNREACHABLE: u8 = 4;
}

#[derive(Parser)]
#[command(
    name = "rampart",
    version,
    about = "Rampart endpoint protection: server, agent and administration"
)]
struct Cli {
    /// Root prefix of every path Rampart uses (install folder, configuration, state).
    #[arg(long, global = true, env = "RAMPART_ROOT", default_value = "/")]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install into the root, start the server with its embedded store and an enrolled local agent.
    Up(commands::up::Args),
    /// Stop what `rampart up --detach` started.
    Down,
    /// Run the management server.
    Server(commands::server::Args),
    /// Run, enroll or inspect the agent on this host.
    #[command(subcommand)]
    Agent(commands::agent::Command),
    /// Log in to a server as an administrator (saves a session for the other commands).
    Login(commands::login::Args),
    /// Show or change an agent group's policy.
    #[command(subcommand)]
    Policy(commands::policy::Command),
    /// List or create agent groups.
    #[command(subcommand)]
    Groups(commands::groups::Command),
    /// List or revoke agents.
    #[command(subcommand)]
    Agents(commands::agents::Command),
    /// Create enrollment tokens for new agents.
    #[command(subcommand, name = "enroll-token")]
    EnrollToken(commands::enroll_token::Command),
    /// List events the server received from agents.
    Events(commands::events::Args),
    /// Ransomware protection on this host: status, incidents, restore, vault.
    #[command(subcommand)]
    Ransomware(commands::ransomware::Command),
    /// The userspace tier's supervisor, started by the agent or the server themselves.
    #[command(hide = true, name = "selfprotect-supervisor")]
    SelfprotectSupervisor,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAMPART_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Command::SelfprotectSupervisor = cli.command {
        let code = rampart_selfprotect::userspace::supervisor::main();
        return ExitCode::from(u8::try_from(code).unwrap_or(exit::FAILURE));
    }
    // the commands that print and exit end quietly when what reads them stops (`| head`)
    if matches!(
        cli.command,
        Command::Policy(_)
            | Command::Groups(_)
            | Command::Agents(_)
            | Command::EnrollToken(_)
            | Command::Events(_)
            | Command::Ransomware(_)
    ) {
        rampart_sys::end_on_broken_pipe();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rampart: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let root = cli.root.clone();
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => commands::up::run(&root, args).await,
            Command::Down => commands::up::down(&root).await,
            Command::Server(args) => commands::server::run(&root, args).await,
            Command::Agent(cmd) => commands::agent::run(&root, cmd).await,
            Command::Login(args) => commands::login::run(&root, args).await,
            Command::Policy(cmd) => commands::policy::run(&root, cmd).await,
            Command::Groups(cmd) => commands::groups::run(&root, cmd).await,
            Command::Agents(cmd) => commands::agents::run(&root, cmd).await,
            Command::EnrollToken(cmd) => commands::enroll_token::run(&root, cmd).await,
            Command::Events(args) => commands::events::run(&root, args).await,
            Command::Ransomware(cmd) => commands::ransomware::run(&root, cmd).await,
            Command::SelfprotectSupervisor => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("rampart: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(h) = cause.downcast_ref::<rampart_cli::admin_client::HttpError>() {
            if h.status == reqwest::StatusCode::UNAUTHORIZED {
                return exit::UNAUTHORIZED;
            }
        }
        if let Some(r) = cause.downcast_ref::<reqwest::Error>() {
            if r.is_connect() || r.is_timeout() {
                return exit::UNREACHABLE;
            }
        }
        if let Some(rampart_agent::client::ClientError::Unauthorized) =
            cause.downcast_ref::<rampart_agent::client::ClientError>()
        {
            return exit::UNAUTHORIZED;
        }
    }
    exit::FAILURE
}
