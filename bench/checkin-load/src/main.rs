//! `rampart-bench-checkin`: a check-in load benchmark for the Rampart management server.
//!
//! It simulates a fleet of agents in one process against one running server:
//!
//! 1. **Setup.** Logs in as an administrator, creates one enrollment token with `max_uses` =
//!    the number of agents, and enrolls every agent through the real `POST /api/v1/enroll`
//!    endpoint (bounded concurrency), followed by its first check-in, which gives it the ETag
//!    of its desired state. Credentials are kept in memory only.
//! 2. **Check-ins.** Every agent checks in each `--interval` seconds ±10 %, starting at a
//!    random phase, with the real check-in body and `If-None-Match`, so the steady state is
//!    `304 Not Modified`, as with real agents. The agents share a pool of HTTPS connections
//!    that trust only the server's CA. Latency percentiles, achieved rate, errors by kind and
//!    late check-ins (sent more than 1 s after their scheduled time: the simulator, not the
//!    server, fell behind) are reported for the window after the warm-up.
//! 3. **Events** (`--events-per-agent K`). Every agent uploads K events in batches; one batch
//!    per agent is re-sent and must come back as duplicates; every event is read back through
//!    the administrator API, which must hold exactly agents × K, none missing or twice.
//!
//! The summary goes to stdout, followed by one line `RESULT {json}`; `rampart-bench-checkin
//! table FILE…` turns such lines into Markdown tables. `bench/checkin.sh` runs the whole
//! benchmark against fresh servers on SQLite and PostgreSQL.

mod checkin;
mod events;
mod pool;
mod report;
mod setup;
mod stats;

use std::io::Read as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rampart_cli::admin_client::AdminClient;
use rand::Rng;

use crate::pool::{ConnectionMode, Pool};
use crate::report::{RunResult, ServerResult};

/// Simulates N Rampart agents checking in with one server, and reports what the server sustains.
#[derive(Parser)]
#[command(
    name = "rampart-bench-checkin",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print Markdown tables from the `RESULT` lines of earlier runs (files, or stdin).
    Table {
        /// Files holding `RESULT` lines (other lines are ignored).
        files: Vec<PathBuf>,
    },
}

/// Options of a benchmark run.
#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// The server, https://HOST:PORT (a loopback address unless --allow-remote).
    #[arg(long, env = "RAMPART_BENCH_SERVER")]
    server: Option<String>,
    /// The server's CA certificate (PEM), e.g. ROOT/var/lib/rampart/server/ca.pem.
    #[arg(long, env = "RAMPART_BENCH_CA")]
    ca: Option<PathBuf>,
    /// Administrator user name.
    #[arg(long, default_value = "admin")]
    admin_user: String,
    /// Administrator password (better given by the environment than on the command line).
    #[arg(long, env = "RAMPART_BENCH_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// Agent group the simulated agents enroll into.
    #[arg(long, default_value = "default")]
    group: String,
    /// Number of simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Seconds between two check-ins of one agent (each agent adds ±10 % jitter).
    #[arg(long, default_value_t = 60.0)]
    interval: f64,
    /// Seconds at the start whose check-ins are not counted.
    #[arg(long, default_value_t = 10.0)]
    warmup: f64,
    /// Seconds the check-in phase runs, warm-up included [default: interval + warm-up].
    #[arg(long)]
    duration: Option<f64>,
    /// HTTPS connections the simulated agents share (with --new-connection-per-checkin: at
    /// most this many at the same time).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Use HTTP/1.1 keep-alive connections, one request at a time on each, instead of the
    /// protocol the server offers (HTTP/2, multiplexed, like the real agent).
    #[arg(long, conflicts_with = "new_connection_per_checkin")]
    http1: bool,
    /// Open a new connection (TCP and TLS handshake) for every request.
    #[arg(long)]
    new_connection_per_checkin: bool,
    /// Enrollments and uploads in flight at the same time.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Skip the check-in phase (enroll, then events only).
    #[arg(long)]
    no_checkins: bool,
    /// Events each agent uploads after the check-in phase (0: no events phase).
    #[arg(long, default_value_t = 0)]
    events_per_agent: u64,
    /// Events per upload, at most (the agent uses 500; the server takes up to 1000).
    #[arg(long, default_value_t = 500)]
    event_batch: u64,
    /// Seconds a request may take before it counts as a timeout (the agent uses 30).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// A check-in sent more than this many seconds after its scheduled time is late.
    #[arg(long, default_value_t = 1.0)]
    late_after: f64,
    /// The server's process id: report its CPU time and peak memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's log file: count its ERROR and WARN lines.
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// Name of the run in reports [default: the server's store].
    #[arg(long)]
    label: Option<String>,
    /// Allow a server that is not on a loopback address. Load-test only servers you own.
    #[arg(long)]
    allow_remote: bool,
}

fn seconds(name: &str, v: f64) -> Result<Duration> {
    if !(v.is_finite() && v >= 0.0) {
        bail!("--{name} must be a number of seconds ≥ 0, got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

fn check_loopback(url: &reqwest::Url, allow_remote: bool) -> Result<()> {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback && !allow_remote {
        bail!(
            "{host} is not a loopback address; pass --allow-remote to load-test a server elsewhere"
        );
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<RunResult> {
    let server = args
        .server
        .clone()
        .context("--server URL is required (or RAMPART_BENCH_SERVER)")?;
    rampart_cli::admin_client::check_server_url(&server)?;
    let url = reqwest::Url::parse(&server)
        .with_context(|| format!("reading the server URL {server:?}"))?;
    check_loopback(&url, args.allow_remote)?;
    let ca_path = args
        .ca
        .clone()
        .context("--ca FILE is required (or RAMPART_BENCH_CA)")?;
    let ca_pem = std::fs::read_to_string(&ca_path)
        .with_context(|| format!("reading the CA certificate {}", ca_path.display()))?;
    let password = args.admin_password.clone().context(
        "the administrator password is required: RAMPART_BENCH_ADMIN_PASSWORD or --admin-password",
    )?;
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    let interval = seconds("interval", args.interval)?;
    if interval.is_zero() {
        bail!("--interval must be more than 0");
    }
    let warmup = seconds("warmup", args.warmup)?;
    let duration = match args.duration {
        Some(d) => seconds("duration", d)?,
        None => interval + warmup,
    };
    if !args.no_checkins && duration <= warmup {
        bail!("--duration ({duration:?}) must be longer than --warmup ({warmup:?})");
    }
    let timeout = seconds("timeout", args.timeout)?.max(Duration::from_secs(1));
    let mode = if args.new_connection_per_checkin {
        ConnectionMode::NewConnection
    } else if args.http1 {
        ConnectionMode::KeepAliveHttp1
    } else {
        ConnectionMode::KeepAlive
    };

    let admin = AdminClient::new(&server, &ca_pem, None)?;
    let health = admin
        .health()
        .await
        .context("checking the server's health")?;
    let (admin, _) = admin
        .login(&args.admin_user, &password)
        .await
        .context("logging in as administrator")?;
    let store = health["store"].as_str().unwrap_or("unknown").to_owned();
    let mut result = RunResult {
        label: args.label.clone().unwrap_or_else(|| store.clone()),
        store,
        server_version: health["version"].as_str().unwrap_or("unknown").to_owned(),
        mode: mode.name().to_owned(),
        connections: args.connections.max(1) as u64,
        agents: args.agents as u64,
        ..RunResult::default()
    };
    eprintln!(
        "rampart-bench-checkin: {} agents against {server} ({} store)",
        args.agents, result.store
    );

    let token = setup::create_token(&admin, &args.group, args.agents as u64, &ca_pem).await?;
    let pool = Arc::new(Pool::new(
        &server,
        &ca_pem,
        mode,
        args.connections,
        timeout,
    )?);
    result.http_version = pool.open_all().await?;
    eprintln!(
        "enrolling {} agents, {} at a time, over {} {} connection(s) ({})",
        args.agents,
        args.concurrency,
        args.connections,
        pool.mode().name(),
        result.http_version
    );
    let run_tag = format!("{:04x}", rand::thread_rng().gen::<u16>());
    let (agents, enroll) = setup::enroll_all(
        pool.clone(),
        &token,
        args.agents,
        args.concurrency,
        &run_tag,
    )
    .await;
    result.enroll = enroll;
    if agents.is_empty() {
        bail!("no agent could enroll: {}", result.enroll.errors.summary());
    }
    let agents = Arc::new(agents);

    if !args.no_checkins {
        eprintln!(
            "check-ins: {} agents every {:?} ±10 % for {:?} ({:?} warm-up not counted)",
            agents.len(),
            interval,
            duration,
            warmup
        );
        let plan = checkin::Plan {
            interval,
            warmup,
            duration,
            late_after: seconds("late-after", args.late_after)?,
            grace: timeout.max(Duration::from_secs(10)),
            server_pid: args.server_pid.map(|p| p.to_string()),
            server_port: url.port_or_known_default(),
        };
        result.checkin = Some(checkin::run(agents.clone(), pool.clone(), plan).await);
    }

    if args.events_per_agent > 0 {
        eprintln!("events phase");
        result.events = Some(
            events::run(
                agents.clone(),
                pool.clone(),
                &admin,
                args.events_per_agent,
                args.event_batch,
                args.concurrency,
            )
            .await,
        );
    }

    result.server = args
        .server_pid
        .map(|pid| ServerResult::collect(pid, args.server_log.as_deref()));
    result.client_cpu_s = stats::cpu_seconds("self");
    result.client_peak_rss_mib = stats::peak_rss_mib("self");
    result.passed = result.enroll.enrolled == result.enroll.requested
        && result.events.as_ref().is_none_or(|e| e.verified);
    Ok(result)
}

fn table(files: &[PathBuf]) -> Result<()> {
    let mut text = String::new();
    if files.is_empty() {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        for f in files {
            text.push_str(
                &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            );
            text.push('\n');
        }
    }
    let results = report::parse_results(&text)?;
    if results.is_empty() {
        bail!("no RESULT lines found");
    }
    print!("{}", report::markdown(&results));
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Table { files }) = cli.command {
        return match table(&files) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rampart-bench-checkin: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rampart-bench-checkin: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.run)) {
        Ok(result) => {
            print!("{}", result.human());
            println!("{}", result.result_line());
            if result.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("rampart-bench-checkin: {e:#}");
            ExitCode::FAILURE
        }
    }
}
