//! What the agent says about the host it runs on.

use rampart_protocol::checkin::AgentIdentity;

/// The agent's build, reported at check-in.
pub const AGENT_BUILD: &str = env!("CARGO_PKG_VERSION");

/// Host name, OS, kernel and build of this host and agent.
pub fn current() -> AgentIdentity {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "Linux".to_owned());
    AgentIdentity {
        hostname: read("/proc/sys/kernel/hostname"),
        os,
        kernel: read("/proc/sys/kernel/osrelease"),
        agent_build: AGENT_BUILD.to_owned(),
    }
}
