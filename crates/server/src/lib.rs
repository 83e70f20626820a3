//! The Rampart management server: the API agents and administrators talk to over HTTPS, its
//! store (embedded SQLite, or PostgreSQL shared by several stateless replicas), its own CA, and
//! the browser console.
//!
//! [`prepare`] opens the store, brings its schema up to date, and creates what a first start
//! needs (the default agent group, the CA, the first administrator); [`serve`] then listens
//! until told to stop. The `rampart server` command is a thin wrapper around the two.

pub mod api;
mod listener;
pub mod paths;
pub mod secrets;
pub mod store;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};

pub use paths::ServerPaths;
use store::Store;
use tls::CaMaterial;

/// The first administrator's user name.
pub const FIRST_ADMIN: &str = "admin";

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Root prefix of every path the server uses.
    pub root: PathBuf,
    /// Address to listen on (port 0: any free port, written to the listen-address file).
    pub listen: SocketAddr,
    /// Database URL; the embedded SQLite store below the root when absent.
    pub database_url: Option<String>,
    /// Extra names (DNS or IP) the server certificate should carry.
    pub extra_names: Vec<String>,
}

/// A server ready to serve.
#[derive(Debug)]
pub struct Prepared {
    /// The store, migrated.
    pub store: Store,
    /// The server's paths.
    pub paths: ServerPaths,
    /// The CA.
    pub ca: CaMaterial,
    /// The first administrator's password, when this start created it; shown once, never
    /// stored in clear.
    pub first_admin_password: Option<String>,
}

/// Opens the store and creates what a first start needs.
pub async fn prepare(options: &ServerOptions) -> Result<Prepared> {
    let paths = ServerPaths::new(&options.root);
    create_private_dir(&paths.data_dir)?;
    let url = options
        .database_url
        .clone()
        .unwrap_or_else(|| paths.default_database_url());
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening the store at {}", store::redact_url(&url)))?;
    store.ensure_default_group().await?;
    let ca = CaMaterial::load_or_create(&store).await?;
    std::fs::write(paths.ca_pem(), &ca.cert_pem)
        .with_context(|| format!("writing {}", paths.ca_pem().display()))?;
    let password = secrets::random_password();
    let first_admin_password = store
        .create_first_admin(FIRST_ADMIN, &secrets::hash_password(&password))
        .await?
        .then_some(password);
    Ok(Prepared {
        store,
        paths,
        ca,
        first_admin_password,
    })
}

/// Serves the API on `options.listen` until `shutdown` completes.
pub async fn serve(
    prepared: Prepared,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = hostname() {
        names.push(host);
    }
    names.extend(options.extra_names.iter().cloned());
    names.dedup();
    let (chain, key) = prepared.ca.issue_server_certificate(&names)?;
    let tls = tls::server_config(&chain, &key)?;
    let signing_key = signing_key(&prepared.store).await?;
    let state = api::AppState::new(prepared.store.clone(), prepared.ca.clone(), signing_key)?;
    let flusher = state.checkins.clone().spawn_flusher(prepared.store.clone());
    let app = api::router(state.clone());
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let local = listener.local_addr()?;
    // protected from here on; a supervisor that starts it again uses the address it got
    let reporter = start_self_protection(&prepared, &state, local);
    // written whole or not at all: `rampart up` reads it as soon as it exists
    let address_file = prepared.paths.listen_address_file();
    let partial = address_file.with_extension("partial");
    std::fs::write(&partial, local.to_string())?;
    std::fs::rename(&partial, &address_file)?;
    tracing::info!(address = %local, store = ?prepared.store.backend(), "server listening");
    listener::run(listener, tls, app, shutdown).await;
    flusher.abort();
    state.checkins.flush(&prepared.store).await;
    // lift self-protection before the process goes, so nothing outlives it
    let guardian = state.guardian.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(g) = guardian.lock().expect("guardian lock").as_mut() {
            g.unload();
        }
        *guardian.lock().expect("guardian lock") = None;
    })
    .await;
    let _ = reporter.join();
    prepared.store.close().await;
    Ok(())
}

/// Puts the server's own self-protection in force (its data folder, the install folder when it
/// runs from there, its service unit) and records its tamper reports as events of the server
/// itself (agent id `server:HOST`).
fn start_self_protection(
    prepared: &Prepared,
    state: &api::AppState,
    listening: std::net::SocketAddr,
) -> std::thread::JoinHandle<()> {
    use rampart_selfprotect::guardian::{Guardian, Supervision, Target};
    let paths = &prepared.paths;
    let install = paths.install_dir();
    let runs_installed = std::env::current_exe()
        .ok()
        .and_then(|e| e.canonicalize().ok())
        .zip(install.canonicalize().ok())
        .is_some_and(|(exe, dir)| exe.starts_with(dir));
    let mut target = Target {
        trees: vec![paths.data_dir.clone()],
        files: paths.unit_files(),
        immutable_trees: Vec::new(),
        supervision: Some(Supervision {
            restart_args: restart_args(std::env::args().collect(), listening),
            ..Supervision::of_this_process(&paths.root)
        }),
    };
    if runs_installed {
        target.trees.push(install.clone());
        target.immutable_trees.push(install);
    }
    let (guardian, reports) = Guardian::start(target);
    tracing::info!(state = %guardian.status().describe(), "server self-protection");
    *state.guardian.lock().expect("guardian lock") = Some(guardian);
    let store = prepared.store.clone();
    let runtime = tokio::runtime::Handle::current();
    let source = format!(
        "server:{}",
        hostname().unwrap_or_else(|_| "localhost".into())
    );
    std::thread::spawn(move || report_tampering(reports, store, runtime, source))
}

/// This process's command line with `--listen` set to the address it listens on (a server on
/// port 0 comes back on the same port when its supervisor starts it again).
fn restart_args(mut args: Vec<String>, listening: std::net::SocketAddr) -> Vec<String> {
    let address = listening.to_string();
    if let Some(i) = args.iter().position(|a| a == "--listen") {
        if i + 1 < args.len() {
            args[i + 1] = address;
            return args;
        }
    }
    if let Some(i) = args.iter().position(|a| a.starts_with("--listen=")) {
        args[i] = format!("--listen={address}");
        return args;
    }
    args.push("--listen".to_owned());
    args.push(address);
    args
}

/// Stores the server's own tamper reports, aggregated per second, as events.
fn report_tampering(
    reports: std::sync::mpsc::Receiver<rampart_protocol::tamper::TamperAttempt>,
    store: Store,
    runtime: tokio::runtime::Handle,
    source: String,
) {
    use rampart_selfprotect::report::{Aggregator, WINDOW};
    let mut next_seq = 1;
    let mut agg = Aggregator::new();
    let mut window_end = std::time::Instant::now() + WINDOW;
    loop {
        let wait = window_end.saturating_duration_since(std::time::Instant::now());
        let (closed, attempts) = match reports.recv_timeout(wait) {
            Ok(a) => {
                tracing::warn!(action = ?a.action, outcome = ?a.outcome, actor = %a.actor.comm, "tamper attempt on the server");
                match agg.add(a) {
                    Some(first) => (false, vec![first]),
                    None => continue,
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                window_end = std::time::Instant::now() + WINDOW;
                (false, agg.take())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => (true, agg.take()),
        };
        if !attempts.is_empty() {
            // after what is stored (another replica on this host may have written since)
            if let Ok(last) = runtime.block_on(store.last_seq(&source)) {
                next_seq = next_seq.max(last + 1);
            }
        }
        let events: Vec<rampart_protocol::events::Event> = attempts
            .into_iter()
            .map(|a| {
                let e = rampart_protocol::events::Event {
                    seq: next_seq,
                    kind: rampart_protocol::events::TAMPER.to_owned(),
                    time_ms: store::now_ms(),
                    body: serde_json::to_value(a).expect("attempts serialize"),
                };
                next_seq += 1;
                e
            })
            .collect();
        if !events.is_empty() {
            if let Err(e) = runtime.block_on(store.ingest_events(&source, &events, store::now_ms()))
            {
                tracing::error!(error = %e, "could not store the server's tamper events");
            }
        }
        if closed {
            return;
        }
    }
}

/// The server's maintenance-token signing key, created on the first start and kept in the store
/// (shared by every replica).
async fn signing_key(store: &Store) -> Result<ed25519_dalek::SigningKey> {
    let fresh = secrets::random_hex(32);
    let stored = store.meta_put_if_absent("signing_key", &fresh).await?;
    let bytes = hex::decode(stored.trim()).context("reading the stored signing key")?;
    let secret: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the stored signing key is not 32 bytes"))?;
    Ok(rampart_protocol::maintenance::signing_key(secret))
}

fn hostname() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_owned())
}

/// Creates `dir` (and parents) readable by its owner only.
fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}
