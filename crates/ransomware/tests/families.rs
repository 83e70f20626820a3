//! The monitor against every family of the simulator (`rampart-ransim`), on this machine's
//! kernel: the actor is stopped, every document is back as it was (checksums), the incident
//! lists what it touched. Needs root and fanotify permission events; with `CI=true` a missing
//! feature fails the test, elsewhere it is skipped with the reason.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rampart_protocol::policy::{DocumentFamily, RansomwareMode};
use rampart_protocol::ransomware::{BlockedFile, FileOutcome, Incident};
use rampart_ransomware::doctype::DocumentTypes;
use rampart_ransomware::monitor::{Monitor, Settings};
use rampart_ransomware::vault::Vault;

mod common;
use common::{snapshot, Running};

/// A tree of documents in real formats: 60 in four folders.
fn corpus(dir: &Path) {
    let text = "Quarterly report. Revenue grew in every region; costs stayed flat. ".repeat(120);
    for (i, sub) in ["", "projects", "projects/2026", "photos"]
        .iter()
        .enumerate()
    {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..5 {
            std::fs::write(d.join(format!("report-{i}-{k}.txt")), format!("{k}{text}")).unwrap();
            let mut pdf = b"%PDF-1.4\n".to_vec();
            pdf.extend(text.as_bytes());
            pdf.extend(format!("{i}{k}").as_bytes());
            std::fs::write(d.join(format!("contract-{i}-{k}.pdf")), &pdf).unwrap();
            std::fs::write(
                d.join(format!("budget-{i}-{k}.csv")),
                (0..400)
                    .map(|r| format!("{r},north,{},{}\n", r * 3 + k, r * 7))
                    .collect::<String>(),
            )
            .unwrap();
        }
    }
}

struct Scene {
    _dir: tempfile::TempDir,
    docs: PathBuf,
    monitor: Option<Monitor>,
    incidents: mpsc::Receiver<Incident>,
}

impl Drop for Scene {
    fn drop(&mut self) {
        self.monitor = None;
    }
}

fn scene(mode: RansomwareMode, trusted: Vec<(PathBuf, String)>, canaries: bool) -> Option<Scene> {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    scene_in(dir, mode, trusted, canaries, Vec::new())
}

/// A scene in `dir`, with the programs `blocked` by an earlier run (what the agent keeps).
fn scene_in(
    dir: tempfile::TempDir,
    mode: RansomwareMode,
    trusted: Vec<(PathBuf, String)>,
    canaries: bool,
    blocked: Vec<BlockedFile>,
) -> Option<Scene> {
    common::log();
    let docs = dir.path().join("home");
    corpus(&docs);
    let vault = Vault::open(&dir.path().join("vault"), 64 << 20).unwrap();
    let settings = Settings {
        folders: vec![docs.clone()],
        types: DocumentTypes::new(DocumentFamily::ALL, &[]),
        exclusions: vec![".git".into()],
        trusted,
        mode,
        canaries,
        quarantine: dir.path().join("quarantine"),
        blocked,
    };
    let (tx, incidents) = mpsc::channel();
    let monitor = match Monitor::start(settings, vault, vec![std::process::id()], tx) {
        Ok(m) => m,
        Err(e) => {
            common::skip_or_fail(&format!("fanotify is unavailable: {e}"));
            return None;
        }
    };
    let creations = monitor.status().creations;
    if creations != rampart_ransomware::creations::Source::Tracepoints {
        let why = format!("process creations are read from: {creations}, not the tracepoints");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("note: {why}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !monitor.status().ready {
        assert!(Instant::now() < deadline, "the monitor did not get ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    if mode != RansomwareMode::Strict {
        common::wait_calm(&monitor);
    }
    Some(Scene {
        _dir: dir,
        docs,
        monitor: Some(monitor),
        incidents,
    })
}

/// Starts the simulator in a session of its own, as an attacker's program would run: the
/// monitor never stops anything in its own session (here, the test's). It runs from a copy of
/// its own, beside the tree: the same program in two tests running at once would be one actor
/// (convicted in one, stopped in both).
fn attack(family: &str, dir: &Path) -> Child {
    let copy = dir.with_file_name(format!("ransim-{family}"));
    common::simulator_copy(&copy, &copy.display().to_string());
    Command::new("setsid")
        .arg(&copy)
        .arg(family)
        .arg(dir)
        .args(["--delay-ms", if family == "drip" { "300" } else { "0" }])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs `family` against a fresh tree. Families that only delete or only drop notes do their
/// work in microseconds, before any response can come: for them the assertion is that nothing
/// is lost and the program is blocked, not that it was stopped.
fn run_family(family: &str, canaries: bool) -> Option<Incident> {
    let s = scene(RansomwareMode::Block, Vec::new(), canaries)?;
    let before = snapshot(&s.docs);
    let started = Instant::now();
    let mut sim = attack(family, &s.docs);
    let incident = s
        .incidents
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            let running = sim.try_wait().ok().flatten().is_none();
            let _ = sim.kill();
            let after = snapshot(&s.docs);
            let changed = before.iter().filter(|(p, c)| after.get(*p) != Some(c)).count();
            panic!(
                "{family}: no incident within 30 s (simulator {}; {changed} of {} files changed; {:?})",
                if running { "still running" } else { "finished" },
                before.len(),
                s.monitor.as_ref().map(|m| m.status())
            )
        });
    let status = sim.wait().unwrap();
    let quick = matches!(family, "wipe-delete" | "notes" | "copies-first");
    assert!(
        quick || !status.success(),
        "{family}: the simulator finished its work instead of being stopped\n{incident:#?}"
    );
    // blocked, unless it was gone before it could be named
    assert!(
        incident.program_blocked || incident.actor.program.is_empty(),
        "{family}: {incident:#?}"
    );
    // and what is blocked is the simulator, not a tool of the system
    if incident.program_blocked {
        let copy = s.docs.with_file_name(format!("ransim-{family}"));
        assert_eq!(
            incident.blocked_program.as_deref(),
            Some(copy.to_str().unwrap()),
            "{family}: {incident:#?}"
        );
    }
    let after = snapshot(&s.docs);
    let changed: Vec<&PathBuf> = before
        .iter()
        .filter(|(p, c)| after.get(*p) != Some(c))
        .map(|(p, _)| p)
        .collect();
    let extra: Vec<&PathBuf> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    assert!(
        changed.is_empty() && extra.is_empty(),
        "{family}: not restored: changed {changed:?}, left {extra:?}\n{incident:#?}"
    );
    assert!(
        incident.files.iter().all(|f| matches!(
            f.outcome,
            FileOutcome::Restored | FileOutcome::Quarantined | FileOutcome::Unchanged
        )),
        "{family}: {incident:#?}"
    );
    eprintln!(
        "{family}: convicted after {} changed document(s), {} ms from the first change; {} files in the incident ({:?} total); evidence: {:?}",
        incident.changed_before_conviction,
        incident.convicted_ms - incident.first_change_ms,
        incident.files.len(),
        started.elapsed(),
        incident.evidence
    );
    Some(incident)
}

macro_rules! families {
    ($($name:ident: $family:literal,)*) => {
        /// With decoys placed (the default): most families touch one early.
        mod with_decoys {
            $(
                #[test]
                fn $name() {
                    super::run_family($family, true);
                }
            )*
        }
        /// Without decoys: what the content and behaviour of the changes give away.
        mod without_decoys {
            $(
                #[test]
                fn $name() {
                    super::run_family($family, false);
                }
            )*
        }
    };
}

families! {
    in_place_encryption: "inplace",
    encrypted_copy_and_delete: "new-file",
    encrypt_and_rename: "rename",
    first_four_kib_only: "head",
    every_sixteenth_block: "blocks",
    one_process_per_file: "per-process",
    eighteen_workers: "workers",
    through_a_memory_map: "mmap",
    slow_drip: "drip",
    base64_of_ciphertext: "base64",
    bit_flip_and_rename: "xor",
    wiper_truncating: "wipe-truncate",
    wiper_deleting: "wipe-delete",
    ransom_notes: "notes",
}

/// Encrypted copies of every document made first, under names nothing pairs with a document
/// (`00017.bin`), then every original deleted. An actor under no suspicion has the new files it
/// closes under such names left unread (rsync's temporary files, a build's objects); its first
/// deletion of a document puts it under suspicion, and every copy is read then and counted: it
/// is convicted at that deletion, not at the fortieth (deletions alone convict a wiper).
#[test]
fn copies_made_first_are_counted_once_their_maker_deletes_a_document() {
    let Some(incident) = run_family("copies-first", false) else {
        return;
    };
    assert!(
        incident.changed_before_conviction <= 2,
        "convicted after {} changed documents\n{incident:#?}",
        incident.changed_before_conviction
    );
    assert!(
        incident
            .evidence
            .iter()
            .any(|e| e.contains("encrypted") && e.contains(".bin")),
        "the copies did not count\n{incident:#?}"
    );
}

/// An attacker's script that does its damage with a tool of the system (`openssl enc`, then
/// `rm`): the tool is everyone's and is not blocked, the script leading the process group is —
/// running it again is refused — and every document is back.
#[test]
fn a_script_encrypting_with_a_system_tool_is_blocked_as_the_script() {
    if !common::needs(&["openssl"]) {
        return;
    }
    let Some(s) = scene(RansomwareMode::Block, Vec::new(), false) else {
        return;
    };
    let before = snapshot(&s.docs);
    let script = s.docs.with_file_name("lock-everything.sh");
    let body = "for f in \"$1\"/*.txt \"$1\"/*/*.txt; do\n  \
         openssl enc -aes-256-cbc -pbkdf2 -pass pass:k -in \"$f\" -out \"$f.locked\" && rm \"$f\"\n\
         done\n";
    std::fs::write(&script, body).unwrap();
    let run = || {
        Command::new("setsid")
            .arg("sh")
            .arg(&script)
            .arg(&s.docs)
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    let started = run();
    let incident = s
        .incidents
        .recv_timeout(Duration::from_secs(30))
        .expect("the script was not convicted");
    assert!(!started.success(), "the script ran to its end");
    // the shell (`sh`, or what it links to) with the script
    let blocked = incident.blocked_program.clone().unwrap_or_default();
    assert!(
        blocked.ends_with(&format!("sh {}", script.display())),
        "{incident:#?}"
    );
    // restored: every document as it was, nothing the script made left behind
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshot(&s.docs) != before {
        assert!(
            Instant::now() < deadline,
            "not restored\n{incident:#?}\n{:?}",
            snapshot(&s.docs).keys().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!run().success(), "the blocked script ran again");
    assert!(
        snapshot(&s.docs) == before,
        "the blocked script changed documents"
    );
    // and a copy of the script under another name is stopped as it starts
    let copy = s.docs.with_file_name("tidy-up.sh");
    std::fs::write(&copy, body).unwrap();
    let copied = Command::new("setsid")
        .arg("sh")
        .arg(&copy)
        .arg(&s.docs)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!copied.success(), "a copy of the blocked script ran");
    blocked_copy_incident(&s, "the script's copy");
    wait_restored(&s.docs, &before, "after the script's copy");
}

/// A document another program has open for writing is left unguarded, its folder calm (see the
/// monitor's `calm`): an attacker that rewrites it meanwhile is not seen opening it. Its change
/// is judged, and undone, against the original of the program the document was left loose for
/// — the content before that program's first write (what it wrote since is not kept: a known
/// limit).
#[test]
fn a_document_another_program_is_writing_is_restored_after_an_attack() {
    attack_a_loose_document(false);
}

/// The same, the attacker's writer gone before anyone could name it: nothing saw it open the
/// document, and its change is read once it has exited (the judge starved meanwhile). The
/// change is kept aside for the group that started it, and restored when that group is
/// convicted.
#[test]
fn a_document_another_program_is_writing_is_restored_also_when_its_writer_is_gone_unnamed() {
    attack_a_loose_document(true);
}

fn attack_a_loose_document(unnamed: bool) {
    if !common::needs(&["openssl", "chrt"]) {
        return;
    }
    let Some(s) = scene(RansomwareMode::Block, Vec::new(), false) else {
        return;
    };
    let m = s.monitor.as_ref().unwrap();
    let before = snapshot(&s.docs);
    let calm = m.status();
    // a program of its own writes a line (its original kept, given to it when its close is
    // judged), then keeps the document open for writing
    let _writer = Running(
        Command::new("setsid")
            .args([
                "sh",
                "-c",
                "printf 'a line\\n' >>report-0-0.txt; exec 3>>report-0-0.txt; sleep 60",
            ])
            .current_dir(&s.docs)
            .spawn()
            .unwrap(),
    );
    let doc = s.docs.join("report-0-0.txt");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read(&doc).unwrap().ends_with(b"a line\n") {
        assert!(Instant::now() < deadline, "the writer did not write");
        std::thread::sleep(Duration::from_millis(20));
    }
    // its folder is calm, the document unguarded (open for writing)
    std::thread::sleep(Duration::from_millis(1500));
    let loose = m.status();
    assert!(
        loose.lease_breaks > calm.lease_breaks
            && loose.calm_folders >= calm.calm_folders
            && loose.guarded < calm.guarded,
        "the document is not left unguarded in a calm folder: {calm:?} then {loose:?}"
    );
    // the attacker rewrites that document first, in place, with a process of its own (its
    // ciphertext made outside the protected folder: nothing it does is seen before that write).
    // Each test's script has bytes of its own: a convicted one is stopped wherever a copy runs
    let script = s.docs.with_file_name("overwrite.sh");
    std::fs::write(
        &script,
        format!("# unnamed: {unnamed}\n").to_owned()
            + "x=\"$1/../x\"\nfor f in \"$1\"/report-0-0.txt; do\n  \
         openssl enc -aes-256-cbc -pbkdf2 -pass pass:k -in \"$f\" -out \"$x\" && sh -c 'cat \"$1\" > \"$2\"' - \"$x\" \"$f\"\n\
         done\nsleep \"$2\"\nfor f in \"$1\"/*/*.txt; do\n  \
         openssl enc -aes-256-cbc -pbkdf2 -pass pass:k -in \"$f\" -out \"$x\" && cat \"$x\" > \"$f\"\n\
         done\n",
    )
    .unwrap();
    let attacker = Command::new("setsid")
        .arg("sh")
        .arg(&script)
        .arg(&s.docs)
        .arg(if unnamed { "1" } else { "0" })
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if unnamed {
        // the judge gets no CPU while the first document is written and its writer exits
        let starved = common::StarvedJudge::new(m);
        std::thread::sleep(Duration::from_millis(600));
        drop(starved);
    }
    let mut attacker = Running(attacker);
    let incident = s
        .incidents
        .recv_timeout(Duration::from_secs(30))
        .expect("the attacker was not convicted");
    assert!(
        !attacker.0.wait().unwrap().success(),
        "the attacker ran to its end"
    );
    assert!(
        incident
            .files
            .iter()
            .any(|f| f.path == doc.to_string_lossy() && f.outcome == FileOutcome::Restored),
        "{incident:#?}"
    );
    wait_restored(&s.docs, &before, "the attack on a document being written");
}

/// The next incident, which must be the conviction of a copy of a blocked program (`what`).
fn blocked_copy_incident(s: &Scene, what: &str) -> Incident {
    let incident = s
        .incidents
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what} was not convicted"));
    assert!(
        incident
            .evidence
            .iter()
            .any(|e| e.contains("blocked on this host")),
        "{incident:#?}"
    );
    incident
}

/// Waits until the tree under `docs` is as `before` again.
fn wait_restored(docs: &Path, before: &std::collections::BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = snapshot(docs);
        if now == *before {
            return;
        }
        if Instant::now() >= deadline {
            let changed: Vec<&PathBuf> = before
                .iter()
                .filter(|(p, c)| now.get(*p) != Some(c))
                .map(|(p, _)| p)
                .collect();
            let left: Vec<&PathBuf> = now.keys().filter(|p| !before.contains_key(*p)).collect();
            panic!("{what}: not restored: changed or gone {changed:?}, left {left:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `program` against `docs` as an attacker would (a session of its own, a file every
/// 20 ms), to its end.
fn run_encryptor(program: &Path, docs: &Path) -> ExitStatus {
    Command::new("setsid")
        .arg(program)
        .args([
            "inplace".as_ref(),
            docs.as_os_str(),
            "--delay-ms".as_ref(),
            "20".as_ref(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
}

/// A copy of a blocked program (another path, another inode, the same bytes) is stopped as it
/// starts — convicted on the spot, its own file blocked too, what it changed restored — and a
/// second run of the copy is refused.
fn assert_copy_stopped(
    s: &Scene,
    before: &std::collections::BTreeMap<PathBuf, Vec<u8>>,
    blocked: &Path,
) {
    let copy = s.docs.with_file_name("innocent-looking-tool");
    common::simulator_copy(&copy, &blocked.display().to_string());
    let status = run_encryptor(&copy, &s.docs);
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the copy ran: {status:?}"
    );
    let incident = blocked_copy_incident(s, "the copy");
    assert_eq!(
        incident.blocked_program.as_deref(),
        Some(copy.to_str().unwrap()),
        "{incident:#?}"
    );
    wait_restored(&s.docs, before, "after the copy");
    eprintln!(
        "the copy was stopped after {} changed document(s)",
        incident.changed_before_conviction
    );
    let again = run_encryptor(&copy, &s.docs);
    assert!(!again.success(), "the copy ran again: {again:?}");
    assert!(snapshot(&s.docs) == *before, "the copy changed documents");
}

#[test]
fn a_copy_of_a_blocked_program_is_stopped_as_it_starts() {
    let Some(s) = scene(RansomwareMode::Block, Vec::new(), false) else {
        return;
    };
    let before = snapshot(&s.docs);
    let mut first = attack("inplace", &s.docs);
    let incident = s
        .incidents
        .recv_timeout(Duration::from_secs(30))
        .expect("the simulator was not convicted");
    let _ = first.wait();
    let blocked = incident.blocked_file.clone().expect("no file blocked");
    let attacker = s.docs.with_file_name("ransim-inplace");
    assert_eq!(blocked.path, attacker.display().to_string());
    assert_eq!(
        Some(blocked.sha256),
        rampart_ransomware::monitor::sha256_of(&attacker)
    );
    wait_restored(&s.docs, &before, "after the first attack");
    assert_copy_stopped(&s, &before, &attacker);
}

/// A wiper that removes whole folders (`rm -rf` from a script): the folders come back with
/// every document in them (a restore into a folder that is gone put nothing back). Decoys on:
/// plain deletions by a shell's `rm` are judged slowly without them.
#[test]
fn folders_removed_whole_come_back_with_their_documents() {
    let Some(s) = scene(RansomwareMode::Block, Vec::new(), true) else {
        return;
    };
    let before = snapshot(&s.docs);
    let projects = s.docs.join("projects");
    let wiper = s.docs.with_file_name("wipe-folders.sh");
    std::fs::write(&wiper, format!("rm -rf '{}'\n", projects.display())).unwrap();
    let _ = Command::new("setsid")
        .arg("sh")
        .arg(&wiper)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let incident = s
        .incidents
        .recv_timeout(Duration::from_secs(30))
        .expect("the folder wiper was not convicted");
    assert!(
        incident
            .files
            .iter()
            .any(|f| f.path.starts_with(&projects.display().to_string())),
        "the incident lists none of the removed folder's documents: {incident:#?}"
    );
    wait_restored(&s.docs, &before, "after rm -rf of a folder tree");
}

/// A wiper that only deletes, slowly: 39 documents (not quite a conviction: deletions alone
/// need forty), then a pause longer than a deleted document is held for, then the rest one by
/// one. It is convicted minutes after its first deletion, and every document it deleted comes
/// back — the first ones too, held because their deletion counted against it.
#[test]
fn a_slow_wiper_loses_nothing_it_deleted_before_its_conviction() {
    slow_actor_loses_nothing("a slow wiper", |pause| {
        format!(
            "find . -type f ! -name '.*' | sort | head -n 39 | xargs rm\n\
             sleep {pause}\n\
             find . -type f ! -name '.*' | sort | while read -r f; do rm \"$f\"; sleep 0.2; done\n"
        )
    });
}

/// An encryptor that writes each document's ciphertext beside it and renames it over the
/// document, slowly: its second document comes after a pause longer than a replaced document is
/// held for. The first original, alive only in its hold, still comes back.
#[test]
fn a_slow_encryptor_renaming_over_documents_loses_nothing() {
    slow_actor_loses_nothing("a slow encryptor renaming over documents", |pause| {
        format!(
            "for f in report-0-0.txt report-0-1.txt report-0-2.txt; do\n\
               head -c 6000 /dev/urandom > .next && mv .next $f && sleep {pause}\n\
             done\n"
        )
    });
}

/// Runs the shell script `script(PAUSE)` (seconds, longer than a hold lasts) in the documents'
/// folder, as an attacker would, until it is convicted — after its pause — and checks that
/// nothing it deleted or replaced was lost.
fn slow_actor_loses_nothing(what: &str, script: impl Fn(u64) -> String) {
    let Some(s) = scene(RansomwareMode::Block, Vec::new(), true) else {
        return;
    };
    let before = snapshot(&s.docs);
    let pause = rampart_ransomware::holds::HOLD_FOR + Duration::from_secs(8);
    let file = s.docs.with_file_name("slow-actor.sh");
    std::fs::write(
        &file,
        format!("cd '{}'\n{}", s.docs.display(), script(pause.as_secs())),
    )
    .unwrap();
    let started = Instant::now();
    let _actor = Running(
        Command::new("setsid")
            .arg("sh")
            .arg(&file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let incident = s
        .incidents
        .recv_timeout(pause + Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what} was not convicted"));
    assert!(
        started.elapsed() > rampart_ransomware::holds::HOLD_FOR,
        "convicted before its pause ({:?}): this test shows nothing",
        started.elapsed()
    );
    let lost: Vec<&str> = incident
        .files
        .iter()
        .filter(|f| f.outcome == FileOutcome::NotPreserved)
        .map(|f| f.path.as_str())
        .collect();
    assert!(
        lost.is_empty(),
        "{what}: deleted or replaced and not preserved: {lost:?}"
    );
    wait_restored(&s.docs, &before, &format!("after {what}"));
}

/// An encryptor in a long-lived process group, on documents whose inode numbers were its own
/// documents' before: it appended to fifty documents (a copy kept for it under each number), a
/// program the policy trusts deleted them, and once their holds were let go another program
/// made fifty new documents in the folder, which a journaled ext4 gives the freed numbers. The
/// group then overwrites the new documents with random bytes. Before the monitor wrote down
/// each number's file by its birth time, the group was taken to have their originals already
/// (no copy was kept) and the restore plan merged each with the document that had its number
/// before: the new documents stayed encrypted (checked). Now each is restored byte for byte.
#[test]
fn an_encryptor_on_reused_inode_numbers_loses_nothing() {
    if !common::needs(&["dd", "rm", "mkfs.ext4", "mount"]) {
        return;
    }
    let Some(ext4) = common::Ext4::new() else {
        return;
    };
    let tools = tempfile::tempdir_in("/var/tmp").unwrap();
    let (cleanup, hash) = common::trusted_remover(tools.path());
    let dir = tempfile::tempdir_in(ext4.path()).unwrap();
    let text = "Minutes of the meeting. Nothing was decided; everyone agreed.";
    let work = dir.path().join("home/work");
    std::fs::create_dir_all(&work).unwrap();
    for k in 0..50 {
        std::fs::write(work.join(format!("a-{k}.txt")), format!("{k} {text}\n")).unwrap();
    }
    let Some(s) = scene_in(
        dir,
        RansomwareMode::Block,
        vec![(cleanup.clone(), hash)],
        false,
        Vec::new(),
    ) else {
        return;
    };
    let wait = rampart_ransomware::holds::HOLD_FOR.as_secs() + 10;
    let script = work.with_file_name("reusing.sh");
    std::fs::write(
        &script,
        format!(
            "cd '{work}'
             for k in $(seq 0 49); do echo more >> a-$k.txt; done
             numbers=\" $(stat -c %i a-*.txt | tr '\\n' ' ') \"
             '{cleanup}' a-*.txt
             sleep {wait}
             setsid sh -c 'for k in $(seq 0 49); do yes \"$k {text}\" | head -n 40 > c-$k.txt; done'
             reused=0
             for n in $(stat -c %i c-*.txt); do
               case \"$numbers\" in *\" $n \"*) reused=$((reused + 1));; esac
             done
             echo reused $reused > '{count}'
             sleep 3
             for k in $(seq 0 49); do
               dd if=/dev/urandom of=c-$k.txt bs=4096 count=1 conv=notrunc status=none
             done",
            work = work.display(),
            cleanup = cleanup.display(),
            count = tools.path().join("reused").display(),
        ),
    )
    .unwrap();
    let _actor = Running(
        Command::new("setsid")
            .arg("sh")
            .arg(&script)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let incident = s
        .incidents
        .recv_timeout(Duration::from_secs(wait + 60))
        .expect("the encryptor was not convicted");
    let reused =
        common::reused(&std::fs::read_to_string(tools.path().join("reused")).unwrap_or_default());
    eprintln!("{reused} of 50 new documents took a freed number");
    assert!(
        reused >= 45,
        "the numbers were not reused ({reused} of 50): this test shows nothing"
    );
    let changed = incident
        .files
        .iter()
        .filter(|f| f.path.contains("/work/c-"))
        .count();
    assert!(
        changed > 0,
        "none of the new documents is in the incident: {incident:#?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let wrong: Vec<String> = (0..50)
            .filter(|k| {
                std::fs::read_to_string(work.join(format!("c-{k}.txt")))
                    .ok()
                    .as_deref()
                    != Some(format!("{k} {text}\n").repeat(40).as_str())
            })
            .map(|k| format!("c-{k}.txt"))
            .collect();
        if wrong.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not restored: {wrong:?}\n{:#?}",
            incident
                .files
                .iter()
                .filter(|f| f.path.contains("/work/"))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(s);
    drop(ext4);
}

/// A block-mode scene started with a copy of the simulator (`locker`, beside the documents)
/// blocked by an earlier run, as an agent restarts with its incident records.
fn scene_with_a_blocked_program(canaries: bool) -> Option<(Scene, PathBuf)> {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let locker = dir.path().join("locker");
    common::simulator_copy(&locker, &locker.display().to_string());
    let blocked = rampart_ransomware::blocklist::blocked_file(&locker).unwrap();
    let s = scene_in(
        dir,
        RansomwareMode::Block,
        Vec::new(),
        canaries,
        vec![blocked],
    )?;
    Some((s, locker))
}

/// A blocked program is refused by its inode. Once it is deleted, ext4 gives its inode number
/// to the next file or folder made near it, which must not be refused in its stead (the bench
/// met that: a trusted `rm -rf` could not open a folder of a tree unpacked after a conviction).
#[test]
fn a_folder_given_a_deleted_blocked_programs_inode_is_not_refused() {
    use std::os::unix::fs::MetadataExt;
    let Some((s, locker)) = scene_with_a_blocked_program(false) else {
        return;
    };
    let refused = run_encryptor(&locker, &s.docs);
    assert!(!refused.success(), "the blocked program ran: {refused:?}");
    let ino = std::fs::metadata(&locker).unwrap().ino();
    // ext4 without a journal (this VM's root filesystem) gives out no inode deleted in an
    // earlier second of the last minute (`recently_deleted`: its deletion time, in whole
    // seconds, must not be before now): the deletion and the folders made after it happen in
    // one second, at its start (a search that crossed a second failed this test once)
    let into_second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::thread::sleep(
        Duration::from_nanos(u64::from(1_000_000_000 - into_second)) + Duration::from_millis(5),
    );
    std::fs::remove_file(&locker).unwrap();
    let taken = (0..200)
        .map(|k| s.docs.join(format!("unpacked-{k}")))
        .find(|d| {
            std::fs::create_dir(d).unwrap();
            std::fs::metadata(d).unwrap().ino() == ino
        })
        .expect("none of 200 new folders was given the deleted program's inode number");
    // listed by another process (this one, the monitor's, is spared)
    let listed = Command::new("ls").arg(&taken).output().unwrap();
    assert!(
        listed.status.success(),
        "a new folder with the deleted program's inode number was refused: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
}

/// What the agent keeps across a restart (its incident records): a monitor started with a
/// program blocked before refuses that program where it is, and stops its copies.
#[test]
fn a_program_blocked_before_a_restart_stays_blocked() {
    let Some((s, locker)) = scene_with_a_blocked_program(false) else {
        return;
    };
    let before = snapshot(&s.docs);
    let refused = run_encryptor(&locker, &s.docs);
    assert!(!refused.success(), "the blocked program ran: {refused:?}");
    assert!(
        snapshot(&s.docs) == before,
        "the blocked program changed documents"
    );
    assert_copy_stopped(&s, &before, &locker);
}

/// A copy of a blocked program whose start the monitor did not see (it was running before the
/// monitor started, as the agent restarts; or its start is read on the next tick, after it
/// touched a decoy) is convicted for what it does, and its incident still says what it is: a
/// copy of the program blocked here (the e2e test met this on a CI run).
#[test]
fn a_copy_of_a_blocked_program_convicted_for_something_else_is_named_as_a_copy() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let locker = dir.path().join("locker");
    common::simulator_copy(&locker, &locker.display().to_string());
    let blocked = rampart_ransomware::blocklist::blocked_file(&locker).unwrap();
    let copy = dir.path().join("innocent-looking-tool");
    common::simulator_copy(&copy, &locker.display().to_string());
    // started before the monitor, waiting for a line to go
    let docs = dir.path().join("home");
    let mut attacker = Running(
        Command::new("setsid")
            .arg(&copy)
            .args(["inplace".as_ref(), docs.as_os_str(), "--on-a-line".as_ref()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let Some(s) = scene_in(dir, RansomwareMode::Block, Vec::new(), true, vec![blocked]) else {
        return;
    };
    let before = snapshot(&s.docs);
    writeln!(attacker.0.stdin.take().unwrap()).unwrap();
    let incident = blocked_copy_incident(&s, "the copy started before the monitor");
    assert!(
        !attacker.0.wait().unwrap().success(),
        "the copy ran to its end"
    );
    assert!(
        incident.evidence.iter().any(|e| e.contains("decoy")),
        "{incident:#?}"
    );
    wait_restored(
        &s.docs,
        &before,
        "after the copy started before the monitor",
    );
}
