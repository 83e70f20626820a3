//! Micro-workloads for `bench/selfprotect-overhead.sh`: each runs a tight loop of one kind of
//! system activity on files Rampart does not protect, and prints the seconds it took, so the
//! script can compare the same work with the agent's protection on and off.
//!
//! ```text
//! rampart-bench-overhead open-close N FILE   N × open(O_RDONLY) + close
//! rampart-bench-overhead write N FILE        N × open(O_WRONLY|O_TRUNC) + write 4 KiB + close
//! rampart-bench-overhead fork-exec N         N × spawn /bin/true and wait
//! ```

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = match args.get(2).and_then(|s| s.parse().ok()) {
        Some(n) => n,
        None => return usage(),
    };
    let start = Instant::now();
    let result = match (args.get(1).map(String::as_str), args.get(3)) {
        (Some("open-close"), Some(file)) => {
            (0..n).try_for_each(|_| std::fs::File::open(file).map(drop))
        }
        (Some("write"), Some(file)) => {
            let block = [0x5au8; 4096];
            (0..n).try_for_each(|_| std::fs::File::create(file)?.write_all(&block))
        }
        (Some("fork-exec"), _) => {
            (0..n).try_for_each(|_| std::process::Command::new("/bin/true").status().map(drop))
        }
        _ => return usage(),
    };
    if let Err(e) = result {
        eprintln!("rampart-bench-overhead: {e}");
        return ExitCode::FAILURE;
    }
    println!("{:.6}", start.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: rampart-bench-overhead open-close|write N FILE | fork-exec N");
    ExitCode::from(2)
}
