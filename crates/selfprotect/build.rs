//! Builds the kernel tier's BPF programs (src/bpf/*.bpf.c) and their libbpf-rs skeletons.

fn main() {
    rampart_bpf_build::build(&["selfprotect", "observer"]);
}
