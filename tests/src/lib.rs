//! The end-to-end harness: starts real `rampart` server and agent processes, each below its
//! own temporary root, on loopback, and stops every one of them when the test ends, also when
//! it fails (the guards kill on drop).
//!
//! The binary under test is `target/<profile>/rampart` (next to the test binary's folder), or
//! `RAMPART_BIN`. PostgreSQL tests use `RAMPART_TEST_POSTGRES_URL` (a server the test may create
//! databases in; `scripts/test-postgres.sh start` gives one). With `CI=true` a missing PostgreSQL
//! fails the test instead of skipping it.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rampart_cli::admin_client::AdminClient;
use sqlx::Connection;

/// Path of the `rampart` binary under test.
pub fn rampart_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RAMPART_BIN") {
        return PathBuf::from(p);
    }
    // inside the QEMU guest of vm/run.sh
    if Path::new("/test/rampart").exists() {
        return PathBuf::from("/test/rampart");
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/e2e-HASH -> target/debug/rampart
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target folder")
        .join("rampart");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p rampart-cli) or set RAMPART_BIN",
        bin.display()
    );
    bin
}

/// Whether the test runs in CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Which store a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Embedded SQLite below the server's root.
    Sqlite,
    /// A fresh database on the test PostgreSQL server.
    Postgres,
}

/// The stores to run a scenario on: SQLite always, PostgreSQL when available (always in CI).
pub fn stores() -> Vec<StoreKind> {
    let mut v = vec![StoreKind::Sqlite];
    if postgres_admin_url().is_some() {
        v.push(StoreKind::Postgres);
    }
    v
}

/// The PostgreSQL server for tests, if any.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("RAMPART_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if in_ci() => panic!(
            "CI=true but RAMPART_TEST_POSTGRES_URL is not set: the PostgreSQL store must be tested"
        ),
        _ => {
            eprintln!("skipping PostgreSQL: RAMPART_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// A database created for one test on the test PostgreSQL server, dropped afterwards.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    /// URL of the database.
    pub url: String,
}

impl PgDatabase {
    /// Creates a fresh, empty database.
    pub async fn create() -> PgDatabase {
        let admin_url = postgres_admin_url().expect("PostgreSQL for tests");
        let name = format!("rampart_e2e_{}", random_suffix());
        let mut c = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connecting to the test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .expect("creating a test database");
        let url = format!(
            "{}/{name}",
            admin_url.rsplit_once('/').expect("URL with a database").0
        );
        PgDatabase {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // a runtime of its own: Drop may run inside or outside one
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// How many events of `kind` the server holds (up to 10,000).
pub async fn count_events(admin: &AdminClient, kind: &str) -> usize {
    admin
        .events(&rampart_protocol::admin::EventsQuery {
            kind: Some(kind.to_owned()),
            ..Default::default()
        })
        .await
        .expect("listing events")
        .len()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends SIGTERM to a process.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

pub use rampart_selfprotect::procinfo::{processes_below, running_below as process_running};

/// Where this machine's cgroup v2 hierarchy is mounted, if it is.
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
}

/// The cgroup that holds every process started below `root`.
fn cgroup_of(root: &Path) -> Option<PathBuf> {
    let name = root.file_name()?.to_string_lossy().replace('.', "");
    Some(cgroup2_root()?.join("rampart-tests").join(name))
}

/// `rampart --root ROOT ARGS…`, started inside the cgroup of `root` when the machine has cgroup
/// v2: a protected agent or server cannot be stopped by signals from the test (the userspace
/// tier's pair starts a killed process again, and stops whoever kills it until it has), but the
/// kernel's own `cgroup.kill` ends every process of the pair at once. That is how a test that
/// failed half-way, or one that simulates a crash, stops them.
pub fn rampart_command(root: &Path, args: &[&str]) -> Command {
    let mut cmd = match cgroup_of(root) {
        Some(cg) if std::fs::create_dir_all(&cg).is_ok() => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
                .arg(&cg)
                .arg(rampart_bin());
            c
        }
        _ => Command::new(rampart_bin()),
    };
    cmd.arg("--root").arg(root).args(args);
    cmd
}

/// Kills every process below `root`: the whole cgroup at once, then SIGKILL to whatever else
/// names the root, again until none is left (the supervisor starts a killed process again).
pub fn kill_all_below(root: &Path) {
    if let Some(cg) = cgroup_of(root).filter(|c| c.exists()) {
        let _ = std::fs::write(cg.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir(&cg);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut quiet = 0;
    while quiet < 3 && Instant::now() < deadline {
        let found = processes_below(root);
        if found.is_empty() {
            quiet += 1;
        } else {
            quiet = 0;
            for (pid, _) in found {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills everything below its root when dropped (a harness step that fails half-way).
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        kill_all_below(&self.0);
        clear_immutable(&self.0);
    }
}

/// Waits until no process below `root` runs `words`; false after `timeout`.
fn wait_gone(root: &Path, words: &[&str], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if process_running(root, words).is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A client of its own for `server`'s administrator session (its connections belong to the
/// runtime that uses it, so it works from [`block_on`] while the test's runtime is blocked).
fn fresh_admin(server_url: &str, ca_pem: &str, admin: &AdminClient) -> AdminClient {
    AdminClient::new(server_url, ca_pem, admin.token().map(str::to_owned)).expect("client")
}

/// Runs `future` to completion on a runtime of its own (for the harness's synchronous parts,
/// which may be called inside or outside a runtime).
fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    })
    .join()
    .expect("harness thread")
}

/// Runs `rampart --root ROOT ARGS…` to completion; returns (success, stdout, stderr).
pub fn run_cli(root: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(rampart_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running rampart");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A management server process below its own temporary root.
pub struct TestServer {
    root: tempfile::TempDir,
    database: Option<PgDatabase>,
    child: Option<Child>,
    /// Where it listens (kept across restarts).
    pub address: SocketAddr,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The server's CA.
    pub ca_pem: String,
    /// The first administrator's password.
    pub password: String,
    /// An administrator session.
    pub admin: AdminClient,
}

impl TestServer {
    /// Starts a server on `store`, logs in as the first administrator.
    pub async fn start(store: StoreKind) -> TestServer {
        let database = match store {
            StoreKind::Sqlite => None,
            StoreKind::Postgres => Some(PgDatabase::create().await),
        };
        let url = database.as_ref().map(|d| d.url.clone());
        Self::start_on(url, database).await
    }

    /// Starts a server on the database at `database_url` (another replica's, say).
    pub async fn start_on(database_url: Option<String>, owned: Option<PgDatabase>) -> TestServer {
        let root = tempfile::tempdir().expect("temporary root");
        // whatever fails from here on, nothing started below this root outlives the test
        let reaper = Reaper(root.path().to_path_buf());
        let (child, address) = spawn_server(root.path(), "127.0.0.1:0", database_url.as_deref());
        let stdout = std::fs::read_to_string(root.path().join("server.stdout")).unwrap_or_default();
        let password = stdout
            .split("one-time password ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_owned)
            .unwrap_or_default();
        let url = format!("https://{address}");
        let ca_pem = std::fs::read_to_string(root.path().join("var/lib/rampart/server/ca.pem"))
            .unwrap_or_else(|e| {
                panic!(
                    "reading the server CA: {e}\n--- server log:\n{}",
                    std::fs::read_to_string(root.path().join("server.stderr")).unwrap_or_default()
                )
            });
        let anonymous = AdminClient::new(&url, &ca_pem, None).expect("client");
        let admin = if password.is_empty() {
            anonymous
        } else {
            anonymous
                .login("admin", &password)
                .await
                .expect("admin login")
                .0
        };
        std::mem::forget(reaper);
        TestServer {
            root,
            database: owned,
            child: Some(child),
            address,
            url,
            ca_pem,
            password,
            admin,
        }
    }

    /// The server's root folder.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The database URL when on PostgreSQL.
    pub fn database_url(&self) -> Option<String> {
        self.database.as_ref().map(|d| d.url.clone())
    }

    /// Kills the server with SIGKILL, as a crash would (its supervisor too, so that nothing
    /// starts it again).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_all_below(self.root.path());
            let _ = c.try_wait();
        }
    }

    /// Stops the server as an operator would: an administrator lifts its self-protection,
    /// then SIGTERM.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let admin = fresh_admin(&self.url, &self.ca_pem, &self.admin);
        let _ = block_on(async move { admin.unload_server().await });
        if let Some(pid) = process_running(self.root.path(), &["server"]) {
            terminate(pid);
        }
        if !wait_gone(self.root.path(), &["server"], Duration::from_secs(10)) {
            kill_all_below(self.root.path());
        }
        let _ = c.wait();
    }

    /// The server's process id right now (a supervisor may have started it again).
    pub fn pid(&self) -> Option<u32> {
        process_running(self.root.path(), &["server"])
    }

    /// Starts the server again, on the same root, store and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() of a running server");
        let (child, _) = spawn_server(
            self.root.path(),
            &self.address.to_string(),
            self.database_url().as_deref(),
        );
        self.child = Some(child);
    }

    /// A token for `uses` enrollments into `group`.
    pub async fn enrollment_token(&self, group: &str, uses: u64) -> String {
        self.admin
            .create_enrollment_token(group, 600, uses)
            .await
            .expect("enrollment token")
            .token
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("server.stderr")).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // everything below its root, also when a test failed half-way through a stop
        kill_all_below(self.root.path());
        if let Some(mut c) = self.child.take() {
            let _ = c.try_wait();
        }
        clear_immutable(self.root.path());
        if std::thread::panicking() {
            eprintln!("--- server log ({}):\n{}", self.url, tail(&self.log(), 40));
        }
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn spawn_server(root: &Path, listen: &str, database: Option<&str>) -> (Child, SocketAddr) {
    let address_file = root.join("var/lib/rampart/server/listen-address");
    let _ = std::fs::remove_file(&address_file);
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join(name))
            .expect("log file")
    };
    let mut cmd = rampart_command(root, &["server", "--listen", listen]);
    cmd.stdin(Stdio::null())
        .stdout(open("server.stdout"))
        .stderr(open("server.stderr"))
        .env("RAMPART_LOG", "info,sqlx=warn")
        .process_group(0);
    if let Some(db) = database {
        cmd.args(["--database", db]);
    }
    let mut child = cmd.spawn().expect("starting rampart server");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(a) = std::fs::read_to_string(&address_file) {
            if let Ok(addr) = a.trim().parse() {
                return (child, addr);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "server exited ({status}) while starting:\n{}",
                std::fs::read_to_string(root.join("server.stderr")).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("server did not listen within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An agent below its own temporary root (a host of its own, as far as Rampart can tell).
pub struct TestAgent {
    root: tempfile::TempDir,
    child: Option<Child>,
    /// The server's administrator, who issues maintenance tokens to stop the agent (a client
    /// used only from [`block_on`]).
    admin: AdminClient,
    /// The policy's unload password, for stopping the agent while the server is away.
    pub unload_password: Option<String>,
    /// The agent id, after enrollment.
    pub id: String,
}

impl TestAgent {
    /// Enrolls a new agent with `server` using `token` (the CLI, as an operator would).
    pub fn enroll(server: &TestServer, token: &str) -> TestAgent {
        let root = tempfile::tempdir().expect("temporary root");
        let (ok, stdout, stderr) = run_cli(
            root.path(),
            &["agent", "enroll", "--server", &server.url, "--token", token],
        );
        assert!(ok, "enrollment failed: {stdout}{stderr}");
        let id = stdout
            .split("as agent ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("agent id in the output")
            .to_owned();
        TestAgent {
            root,
            child: None,
            admin: fresh_admin(&server.url, &server.ca_pem, &server.admin),
            unload_password: None,
            id,
        }
    }

    /// The agent's root folder.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Starts the daemon.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.path().join(name))
                .expect("log file")
        };
        let child = rampart_command(self.root.path(), &["agent", "run"])
            .stdin(Stdio::null())
            .stdout(open("agent.stdout"))
            .stderr(open("agent.stderr"))
            .env(
                "RAMPART_LOG",
                std::env::var("RAMPART_TEST_AGENT_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()),
            )
            .process_group(0)
            .spawn()
            .expect("starting rampart agent");
        self.child = Some(child);
        // ready once its control socket answers: local commands then reach the running agent
        let socket = self.root.path().join("var/lib/rampart/agent/control.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "agent did not start within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon as an operator would: a maintenance token from the server lifts its
    /// self-protection, then SIGTERM (it writes `agent.stopped`).
    pub fn stop(&mut self) {
        let running = self.pid();
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Some(pid) = running {
            let (admin, id) = (self.admin.clone(), self.id.clone());
            match block_on(async move { admin.maintenance_token(&id, 600).await }) {
                // refused when protection is off already: SIGTERM works then
                Ok(t) => drop(self.unload_with_token(&t.token)),
                // the server is away: the policy's unload password, if the test set one
                Err(_) => {
                    if let Some(p) = self.unload_password.clone() {
                        let _ = self.unload(&p);
                    }
                }
            }
            terminate(pid);
            assert!(
                wait_gone(self.root.path(), &["agent", "run"], Duration::from_secs(15)),
                "agent did not stop on SIGTERM within 15 s"
            );
        }
        kill_all_below(self.root.path());
        let _ = c.wait();
    }

    /// The agent daemon's process id right now (its supervisor may have started it again).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?;
        process_running(self.root.path(), &["agent", "run"])
    }

    /// `rampart agent unload --token TOKEN`; returns (success, output).
    pub fn unload_with_token(&self, token: &str) -> (bool, String) {
        self.unload_with(&["--token", token], "")
    }

    /// `rampart agent unload` with `password`; returns (success, output).
    pub fn unload(&self, password: &str) -> (bool, String) {
        self.unload_with(&[], password)
    }

    fn unload_with(&self, args: &[&str], password: &str) -> (bool, String) {
        let out = Command::new(rampart_bin())
            .arg("--root")
            .arg(self.root.path())
            .args(["agent", "unload"])
            .args(args)
            .env("RAMPART_UNLOAD_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .expect("running rampart agent unload");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Writes `count` numbered notes into the agent's outbox.
    pub fn note(&self, text: &str, count: u32) {
        let (ok, out, err) = run_cli(
            self.root.path(),
            &["agent", "note", text, "--count", &count.to_string()],
        );
        assert!(ok, "agent note failed: {out}{err}");
    }

    /// `rampart agent status --json`.
    pub fn status(&self) -> serde_json::Value {
        let (ok, out, err) = run_cli(self.root.path(), &["agent", "status", "--json"]);
        assert!(ok, "agent status failed: {out}{err}");
        serde_json::from_str(&out).expect("status JSON")
    }

    /// The agent's credential, as stored in its configuration store.
    pub fn credential(&self) -> String {
        std::fs::read_to_string(self.root.path().join("etc/rampart/agent.credential"))
            .expect("credential")
            .trim()
            .to_owned()
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("agent.stderr")).unwrap_or_default()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent {} log:\n{}", self.id, tail(&self.log(), 40));
        }
        // everything below its root, also when a test failed half-way through a stop (a
        // self-protected agent in the kernel tier refuses SIGKILL: this gives up after a while)
        kill_all_below(self.root.path());
        if let Some(mut c) = self.child.take() {
            let _ = c.try_wait();
        }
        // an agent killed without an unload leaves its immutable attributes behind
        clear_immutable(self.root.path());
    }
}

/// Clears the immutable attribute below `root`, so the temporary folder can be removed.
fn clear_immutable(root: &Path) {
    let _ = Command::new("chattr")
        .args(["-R", "-f", "-i"])
        .arg(root)
        .stderr(Stdio::null())
        .status();
}
