//! Builds the tracepoints that announce process creations (src/bpf/lineage.bpf.c) and their
//! libbpf-rs skeleton.

fn main() {
    rampart_bpf_build::build(&["lineage"]);
}
