//! Builds the tracepoint programs and their libbpf-rs skeletons: those that announce process
//! creations (src/bpf/lineage.bpf.c) and lease breaks (src/bpf/breakers.bpf.c).

fn main() {
    rampart_bpf_build::build(&["lineage", "breakers"]);
}
