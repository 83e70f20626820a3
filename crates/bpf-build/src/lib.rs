//! Builds a crate's BPF programs for its `build.rs`: `src/bpf/NAME.bpf.c` is compiled with clang
//! and its libbpf-rs skeleton written to `OUT_DIR/NAME.skel.rs` (included with
//! `include!(concat!(env!("OUT_DIR"), "/NAME.skel.rs"))`). `vmlinux.h` comes from the build
//! machine's kernel BTF through bpftool (`RAMPART_VMLINUX_BTF` names another BTF file); CO-RE
//! relocations make the objects load on other kernels (Debian 6.1 was checked).

use std::path::PathBuf;
use std::process::Command;

/// Builds `src/bpf/{name}.bpf.c` for each of `names`, with `src/bpf` on the include path.
pub fn build(names: &[&str]) {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let include = out.join("include");
    std::fs::create_dir_all(&include).expect("include folder");
    let vmlinux = include.join("vmlinux.h");
    if !vmlinux.exists() {
        let btf = std::env::var("RAMPART_VMLINUX_BTF")
            .unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".into());
        let output = Command::new("bpftool")
            .args(["btf", "dump", "file", &btf, "format", "c"])
            .output()
            .unwrap_or_else(|e| panic!("running bpftool (Debian package bpftool; scripts/install-deps.sh installs it): {e}"));
        assert!(
            output.status.success(),
            "bpftool could not dump {btf}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(&vmlinux, output.stdout).expect("writing vmlinux.h");
    }
    for name in names {
        let source = format!("src/bpf/{name}.bpf.c");
        libbpf_cargo::SkeletonBuilder::new()
            .source(&source)
            .clang_args([
                format!("-I{}", include.display()),
                "-Isrc/bpf".to_owned(),
                "-Wall".to_owned(),
                "-O2".to_owned(),
            ])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {source} (needs clang and libelf-dev): {e:#}"));
    }
    println!("cargo:rerun-if-changed=src/bpf");
    println!("cargo:rerun-if-env-changed=RAMPART_VMLINUX_BTF");
}
