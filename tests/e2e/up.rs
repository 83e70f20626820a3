//! `rampart up`: the main job on one machine, end to end.

use rampart_tests::run_cli;

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops what `up --detach` started, also when the test fails.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = run_cli(&self.0, &["down"]);
        // and if that could not stop them (a test that failed half-way), the cgroup goes
        rampart_tests::kill_all_below(&self.0);
    }
}

#[test]
fn up_starts_a_server_and_an_enrolled_agent_and_down_stops_them() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let _down = Down(root.path().to_path_buf());
    let listen = format!("127.0.0.1:{port}");
    let out = rampart_tests::rampart_command(root.path(), &["up", "--detach", "--listen", &listen])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("Console         https://127.0.0.1:{port}/")),
        "{stdout}"
    );
    assert!(stdout.contains("admin / "), "{stdout}");
    assert!(stdout.contains("Server data"), "{stdout}");

    // installed into its own folder below the root; the build tree is not where it runs from
    let installed = root.path().join("opt/rampart/bin/rampart");
    assert!(installed.exists());
    let processes = rampart_tests::processes_below(root.path());
    // the server, the agent and (in the userspace tier) their supervisors
    assert!(processes.len() >= 2, "{processes:?}");
    for (pid, args) in &processes {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(
            exe,
            installed,
            "process {pid} ({args:?}) runs {}",
            exe.display()
        );
    }

    let (ok, status, err) = run_cli(root.path(), &["agent", "status", "--json"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["applied_policy_version"], 1);
    // on the server's host the agent protects the server's data folder against ransomware too
    let data = root.path().join("var/lib/rampart/server");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (ok, out, err) = run_cli(root.path(), &["ransomware", "status", "--json"]);
        assert!(ok, "{err}");
        let s: serde_json::Value = serde_json::from_str(&out).unwrap();
        let protected = s["protected"].as_array().cloned().unwrap_or_default();
        if protected.iter().any(|f| f.as_str() == data.to_str()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server's data folder is not protected: {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // the CLI session `up` saved works
    let (ok, list, err) = run_cli(root.path(), &["agents", "list", "--json"]);
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], status["agent_id"]);

    // a second `up` on the same root refuses
    let (ok, _, err) = run_cli(
        root.path(),
        &["up", "--detach", "--listen", &format!("127.0.0.1:{port}")],
    );
    assert!(!ok && err.contains("already running"), "{err}");

    let (ok, out, err) = run_cli(root.path(), &["down"]);
    assert!(ok, "{out}{err}");
    // nothing starts again either (a supervisor restarts a server that was only killed)
    std::thread::sleep(std::time::Duration::from_secs(2));
    let left = rampart_tests::processes_below(root.path());
    let log =
        std::fs::read_to_string(root.path().join("var/log/rampart/agent.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    assert!(
        left.is_empty(),
        "still running after down: {left:?}\n--- down said:\n{out}{err}\n--- agent log (last lines, newest first):\n{}",
        tail.join("\n")
    );
}

/// `up` that fails after it started the server (here the agent's configuration folder is a
/// file, so the local agent cannot be enrolled) stops the self-protected server it started: it
/// never leaves one that nobody can unload.
#[test]
fn up_that_fails_half_way_stops_the_server_it_started() {
    let root = tempfile::tempdir().unwrap();
    let _down = Down(root.path().to_path_buf());
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/rampart"), "not a folder").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let out = rampart_tests::rampart_command(root.path(), &["up", "--detach", "--listen", &listen])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("etc/rampart"),
        "the error names the folder: {stderr}"
    );
    // nothing starts again either (a supervisor restarts a server that was only killed)
    std::thread::sleep(std::time::Duration::from_secs(2));
    let left = rampart_tests::processes_below(root.path());
    assert!(left.is_empty(), "left running: {left:?}\n{stderr}");
}
