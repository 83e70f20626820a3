//! `rampart up`: the main job on one machine. Installs the running binary into the root's
//! install folder, starts the management server with its embedded store, enrolls a local agent
//! into the `default` group, starts it, and prints the console URL, the first administrator's
//! one-time password and where the data lives. In the foreground it restarts either process
//! if it dies and stops both on Ctrl-C; `--detach` leaves them running (`rampart down` stops them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rampart_agent::paths::AgentPaths;
use rampart_agent::status::AgentStatus;
use rampart_cli::admin_client::{AdminClient, Session};
use rampart_protocol::enroll::EnrollmentToken;
use rampart_server::{secrets, store, ServerOptions, ServerPaths, FIRST_ADMIN};

/// Options of `rampart up`.
#[derive(clap::Args)]
pub struct Args {
    /// Address the server listens on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Return once both are up, leaving them running in the background.
    #[arg(long)]
    pub detach: bool,
}

/// What `rampart up` runs, as the words after `rampart --root ROOT`.
const SERVER: &[&str] = &["server"];
const AGENT: &[&str] = &["agent", "run"];

/// The server's or the agent's process below `root`, if one runs (found by its command line:
/// the userspace tier's supervisor may have started it again under a new pid).
fn running(root: &Path, words: &[&str]) -> Option<u32> {
    rampart_selfprotect::procinfo::running_below(root, words)
}

/// Copies the running binary into the install folder (unless it runs from there).
fn install(paths: &AgentPaths) -> Result<PathBuf> {
    let target = paths.installed_binary();
    let me = std::env::current_exe().context("finding the running binary")?;
    if me.canonicalize().ok() == target.canonicalize().ok() {
        return Ok(target);
    }
    let dir = target.parent().expect("binary path has a folder");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(".rampart.new");
    std::fs::copy(&me, &tmp)
        .with_context(|| format!("copying {} to {}", me.display(), tmp.display()))?;
    std::fs::rename(&tmp, &target)?;
    Ok(target)
}

fn log_file(paths: &AgentPaths, name: &str) -> Result<std::fs::File> {
    std::fs::create_dir_all(&paths.log_dir)?;
    let path = paths.log_dir.join(name);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

fn spawn(
    binary: &Path,
    root: &Path,
    args: &[&str],
    log: std::fs::File,
    detach: bool,
) -> Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // killed if `up` fails half-way (once self-protected, only after `give_back` lifted it);
        // `--detach` forgets the handles once all is up
        .kill_on_drop(true);
    if detach {
        cmd.process_group(0);
    }
    cmd.spawn()
        .with_context(|| format!("starting {} {}", binary.display(), args.join(" ")))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Starts everything; see the module doc.
pub async fn run(root: &Path, args: Args) -> Result<()> {
    let root = std::path::absolute(root)?;
    let agent_paths = AgentPaths::new(&root);
    let server_paths = ServerPaths::new(&root);
    let already: Vec<u32> = [SERVER, AGENT]
        .iter()
        .filter_map(|w| running(&root, w))
        .collect();
    if !already.is_empty() {
        bail!(
            "Rampart is already running for root {} (pids {:?}); stop it with `rampart --root {} down`",
            root.display(),
            already,
            root.display()
        );
    }
    eprintln!(
        "Installing the rampart binary into {}",
        agent_paths.install_dir.display()
    );
    let binary = install(&agent_paths)?;

    // First start: the store, the CA, the first administrator, and a one-use token for the
    // local agent, prepared here before the server process opens the store.
    let options = ServerOptions {
        root: root.clone(),
        listen: args.listen,
        database_url: None,
        extra_names: Vec::new(),
    };
    let prepared = rampart_server::prepare(&options).await?;
    let password = prepared.first_admin_password.clone();
    let needs_enrollment = !agent_paths.config_file().exists();
    let token = if needs_enrollment {
        let token = EnrollmentToken {
            id: secrets::random_hex(8),
            secret: secrets::random_hex(32),
            ca_sha256: prepared.ca.fingerprint()?,
        };
        let group = prepared
            .store
            .group_id(rampart_server::store::DEFAULT_GROUP)
            .await?;
        prepared
            .store
            .create_enrollment_token(
                &token.id,
                &group,
                &secrets::hash_secret(&token.secret),
                store::now_ms() + 600_000,
                1,
                "rampart up",
            )
            .await?;
        Some(token)
    } else {
        None
    };
    prepared.store.close().await;
    drop(prepared);

    let _ = std::fs::remove_file(server_paths.listen_address_file());
    let server_args = ["server", "--listen", &args.listen.to_string()];
    let mut server = spawn(
        &binary,
        &root,
        &server_args,
        log_file(&agent_paths, "server.log")?,
        args.detach,
    )?;
    // from here a failure must not leave a self-protected server nobody can stop: `up` lifts
    // what it started (see `give_back`)
    let started = async {
        let address = wait_for(
            &mut server,
            "the server",
            "start listening",
            &agent_paths.log_dir.join("server.log"),
            Duration::from_millis(50),
            || listen_address(&server_paths),
        )
        .await?;
        let url = format!("https://{address}");
        if let Some(password) = &password {
            open_session(&root, &url, &server_paths, password).await?;
        }
        if let Some(token) = token {
            let config =
                rampart_agent::config::enroll(&agent_paths, &url, &token.to_string(), false)
                    .await?;
            eprintln!("Local agent enrolled as {}", config.agent_id);
        }
        let mut agent = spawn(
            &binary,
            &root,
            AGENT,
            log_file(&agent_paths, "agent.log")?,
            args.detach,
        )?;
        wait_for(
            &mut agent,
            "the agent",
            "check in",
            &agent_paths.log_dir.join("agent.log"),
            Duration::from_millis(100),
            || {
                AgentStatus::load(&agent_paths)
                    .is_some_and(|s| s.last_checkin_ms > 0 && s.pid != 0)
                    .then_some(())
            },
        )
        .await?;
        Ok::<_, anyhow::Error>((url, agent))
    }
    .await;
    let (url, mut agent) = match started {
        Ok(v) => v,
        Err(e) => {
            give_back(&root, &server_paths, password.as_deref()).await;
            return Err(e);
        }
    };
    println!();
    println!("Rampart is up.");
    println!("  Console         {url}/");
    match &password {
        Some(p) => println!("  Administrator   {FIRST_ADMIN} / {p}   (one-time: shown only now, stored only as an argon2 hash)"),
        None => println!("  Administrator   {FIRST_ADMIN} (password as shown at the first start)"),
    }
    println!("  Server CA       {}", server_paths.ca_pem().display());
    println!("  Server data     {}", server_paths.data_dir.display());
    println!("  Agent config    {}", agent_paths.config_dir.display());
    println!("  Agent state     {}", agent_paths.state_dir.display());
    println!("  Logs            {}", agent_paths.log_dir.display());
    println!(
        "  CLI session     rampart --root {} agents list",
        root.display()
    );

    if args.detach {
        println!("  Stop with       rampart --root {} down", root.display());
        std::mem::forget(server);
        std::mem::forget(agent);
        return Ok(());
    }
    println!("Press Ctrl-C to stop the server and the agent.");
    // either may die: its supervisor starts it again at once; if neither runs, this does
    let mut stop = std::pin::pin!(super::stop_signal());
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let _ = server.try_wait();
        let _ = agent.try_wait();
        if running(&root, SERVER).is_none() {
            eprintln!("the server is not running; starting it again");
            server = spawn(
                &binary,
                &root,
                &server_args,
                log_file(&agent_paths, "server.log")?,
                false,
            )?;
        }
        if running(&root, AGENT).is_none() {
            eprintln!("the agent is not running; starting it again");
            agent = spawn(
                &binary,
                &root,
                AGENT,
                log_file(&agent_paths, "agent.log")?,
                false,
            )?;
        }
    }
    stop_all(&root).await;
    let _ = server.try_wait();
    let _ = agent.try_wait();
    println!("Stopped.");
    Ok(())
}

/// After `up` failed half-way: lifts the self-protection of what it started and stops it,
/// through the administrator session (saved, or opened now with the first administrator's
/// password). When even that fails, says how to do it by hand — with the password, shown once
/// here, since nothing else could unload the server it started.
async fn give_back(root: &Path, server_paths: &ServerPaths, password: Option<&str>) {
    if Session::load(root).is_err() {
        if let Some(password) = password {
            let opened = match listen_address(server_paths) {
                Some(address) => {
                    let url = format!("https://{address}");
                    open_session(root, &url, server_paths, password).await
                }
                None => Err(anyhow::anyhow!("the server's address is not known")),
            };
            if let Err(e) = opened {
                eprintln!("warning: could not log in to the server this started: {e:#}");
                eprintln!(
                    "  it keeps running, self-protected: log in with `rampart --root {} login --server https://ADDRESS` (ADDRESS as in {}) as {FIRST_ADMIN} / {password} (one-time password: shown only now), then run `rampart --root {} down`",
                    root.display(),
                    server_paths.listen_address_file().display(),
                    root.display()
                );
                return;
            }
        }
    }
    stop_all(root).await;
}

/// The address the server listens on, once it has written it whole (a server of an older
/// build wrote the file in place).
fn listen_address(server_paths: &ServerPaths) -> Option<SocketAddr> {
    std::fs::read_to_string(server_paths.listen_address_file())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Logs in to the server at `url` as the first administrator and saves the session `down`
/// uses.
async fn open_session(
    root: &Path,
    url: &str,
    server_paths: &ServerPaths,
    password: &str,
) -> Result<()> {
    let ca_pem = std::fs::read_to_string(server_paths.ca_pem())?;
    let client = AdminClient::new(url, &ca_pem, None)?;
    let (_, login) = client.login(FIRST_ADMIN, password).await?;
    Session {
        server_url: url.to_owned(),
        ca_pem,
        token: login.token,
    }
    .save(root)?;
    Ok(())
}

/// Waits up to 30 s for `ready` to give a value, checking every `every`, while `child` (`who`)
/// runs; its log's tail or path goes into the error.
async fn wait_for<T>(
    child: &mut tokio::process::Child,
    who: &str,
    what: &str,
    log: &Path,
    every: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = ready() {
            return Ok(v);
        }
        if let Some(status) = child.try_wait()? {
            bail!("{who} exited ({status}) while starting:\n{}", tail(log));
        }
        if Instant::now() > deadline {
            bail!("{who} did not {what} within 30 s; see {}", log.display());
        }
        tokio::time::sleep(every).await;
    }
}

/// Lifts self-protection and stops the agent, then the server (so the agent's last events
/// reach the server).
async fn stop_all(root: &Path) {
    // self-protection refuses to be stopped: lift it first, through the local server (each on
    // its own: an agent that cannot be reached does not keep the server protected)
    if let Err(e) = unload_local_agent(root).await {
        eprintln!("warning: could not lift the agent's self-protection: {e:#}");
    }
    if let Err(e) = unload_local_server(root).await {
        eprintln!("warning: could not lift the server's self-protection: {e:#}");
    }
    for words in [AGENT, SERVER] {
        let Some(pid) = running(root, words) else {
            continue;
        };
        terminate(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(root, words).is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if running(root, words).is_some() {
            eprintln!(
                "warning: rampart {} (pid {pid}) did not stop within 10 s",
                words.join(" ")
            );
        }
    }
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) {
    // SAFETY: kill(2) with a pid we started and a valid signal number has no memory effects.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// Lifts the local agent's self-protection with a maintenance token from the local server,
/// through the administrator session `up` saved.
async fn unload_local_agent(root: &Path) -> Result<()> {
    let paths = AgentPaths::new(root);
    let enrollment = rampart_agent::config::Enrollment::load(&paths)?;
    let admin = AdminClient::from_session(&Session::load(root)?)?;
    let token = admin
        .maintenance_token(&enrollment.config.agent_id, 300)
        .await?
        .token;
    let request = rampart_agent::control::Request::UnloadWithToken { token };
    match rampart_agent::control::request(&paths.control_socket(), &request).await? {
        Some(reply) if !reply.ok => anyhow::bail!("{}", reply.message),
        _ => {}
    }
    Ok(())
}

/// Lifts the local server's self-protection through the administrator session `up` saved.
async fn unload_local_server(root: &Path) -> Result<()> {
    let admin = AdminClient::from_session(&Session::load(root)?)?;
    admin.unload_server().await?;
    Ok(())
}

/// `rampart down`: stops what `rampart up --detach` started.
pub async fn down(root: &Path) -> Result<()> {
    let root = std::path::absolute(root)?;
    if running(&root, SERVER).is_none() && running(&root, AGENT).is_none() {
        println!(
            "Nothing to stop: no Rampart server or agent runs for root {}",
            root.display()
        );
        return Ok(());
    }
    stop_all(&root).await;
    println!("Stopped.");
    Ok(())
}
