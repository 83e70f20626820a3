//! The results of one run: a human-readable summary, the machine-readable `RESULT` line, and
//! Markdown tables built from many `RESULT` lines.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkin::CheckinResult;
use crate::events::EventsResult;
use crate::setup::EnrollResult;
use crate::stats;

/// The prefix of the machine-readable line.
pub const RESULT_PREFIX: &str = "RESULT ";

/// What the server process used, from `/proc`, and what its log says.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerResult {
    /// Its process id.
    pub pid: u32,
    /// CPU time (user + system) since it started, seconds.
    pub cpu_s: Option<f64>,
    /// Peak resident memory (`VmHWM`), MiB.
    pub peak_rss_mib: Option<f64>,
    /// Lines of its log at level ERROR.
    pub log_errors: Option<u64>,
    /// Lines of its log at level WARN.
    pub log_warnings: Option<u64>,
    /// A few distinct ERROR and WARN lines, without their time stamps.
    pub log_examples: Vec<String>,
}

impl ServerResult {
    /// Reads process `pid` and, when given, its log file.
    pub fn collect(pid: u32, log: Option<&Path>) -> ServerResult {
        let p = pid.to_string();
        let mut result = ServerResult {
            pid,
            cpu_s: stats::cpu_seconds(&p),
            peak_rss_mib: stats::peak_rss_mib(&p),
            ..ServerResult::default()
        };
        if let Some(text) = log.and_then(|l| std::fs::read(l).ok()) {
            let text = String::from_utf8_lossy(&text);
            let (mut errors, mut warnings) = (0, 0);
            for line in text.lines() {
                let level_at = [" ERROR ", " WARN "]
                    .iter()
                    .filter_map(|l| line.find(l))
                    .min();
                let Some(at) = level_at else { continue };
                if line[at..].starts_with(" ERROR ") {
                    errors += 1;
                } else {
                    warnings += 1;
                }
                let message: String = line[at + 1..].chars().take(240).collect();
                if result.log_examples.len() < 5 && !result.log_examples.contains(&message) {
                    result.log_examples.push(message);
                }
            }
            result.log_errors = Some(errors);
            result.log_warnings = Some(warnings);
        }
        result
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunResult {
    /// A name for the run (`--label`, else the server's store).
    pub label: String,
    /// The server's store, as its health check says (`sqlite`, `postgres`).
    pub store: String,
    /// The server's version.
    pub server_version: String,
    /// Connection mode (`keep-alive`, `keep-alive-http1`, `new-connection`).
    pub mode: String,
    /// Connections (keep-alive) or simultaneous connections at most (new-connection).
    pub connections: u64,
    /// HTTP version the server chose.
    pub http_version: String,
    /// Simulated agents asked for.
    pub agents: u64,
    /// Enrollment.
    pub enroll: EnrollResult,
    /// The check-in phase, unless skipped.
    pub checkin: Option<CheckinResult>,
    /// The events phase, unless skipped.
    pub events: Option<EventsResult>,
    /// The server process, when its pid was given.
    pub server: Option<ServerResult>,
    /// CPU time the simulator used, seconds.
    pub client_cpu_s: Option<f64>,
    /// The simulator's peak resident memory, MiB.
    pub client_peak_rss_mib: Option<f64>,
    /// Every agent enrolled and, with events, every event is stored exactly once.
    pub passed: bool,
}

fn opt(v: Option<f64>, unit: &str, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}{unit}"))
}

/// `12345` as `12,345`.
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

impl RunResult {
    /// The summary for people.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "== Rampart check-in benchmark: {} ==", self.label);
        let _ = writeln!(
            o,
            "server: store {}, version {}; connections: {} × {} ({})",
            self.store, self.server_version, self.connections, self.mode, self.http_version
        );
        let e = &self.enroll;
        let _ = writeln!(
            o,
            "enrollment: {}/{} agents in {:.1} s ({:.0}/s, each with its first check-in); failures: {}",
            e.enrolled,
            e.requested,
            e.seconds,
            e.per_s,
            e.errors.summary()
        );
        for (kind, message) in &e.errors.examples {
            let _ = writeln!(o, "  {kind}: {message}");
        }
        if let Some(c) = &self.checkin {
            let _ = writeln!(
                o,
                "check-ins: {} agents every {:.0} s ±10 %, window {:.0} s after {:.0} s warm-up",
                c.agents, c.interval_s, c.window_s, c.warmup_s
            );
            let _ = writeln!(
                o,
                "  offered {:.1}/s, achieved {:.1}/s (= a fleet of {} agents at a 60 s interval)",
                c.offered_per_s,
                c.achieved_per_s,
                thousands(c.fleet_at_60s)
            );
            let _ = writeln!(
                o,
                "  scheduled {}, ok {} (304: {}, 200: {}), failed {}, not sent {}",
                c.scheduled,
                c.ok,
                c.not_modified,
                c.changed,
                c.errors.total(),
                c.not_sent
            );
            let l = &c.latency;
            let _ = writeln!(
                o,
                "  latency: p50 {}, p90 {}, p99 {}, max {}, mean {}",
                ms(l.p50_ms),
                ms(l.p90_ms),
                ms(l.p99_ms),
                ms(l.max_ms),
                ms(l.mean_ms)
            );
            let _ = writeln!(
                o,
                "  late (sent > {:.1} s after schedule): {} ({} of them due while the agent's \
                 previous check-in was unanswered: slow answers; {} due that way in all)",
                c.late_after_s, c.late, c.late_behind, c.behind
            );
            let _ = writeln!(
                o,
                "  send lag p99 {}, max {}; simulator timer lag max {}; wait for a connection max {}",
                ms(c.send_lag.p99_ms),
                ms(c.send_lag.max_ms),
                ms(c.timer_lag_max_ms),
                ms(c.connection_wait_max_ms)
            );
            let _ = writeln!(o, "  errors: {}", c.errors.summary());
            for (kind, message) in &c.errors.examples {
                let _ = writeln!(o, "    {kind}: {message}");
            }
            let _ = writeln!(
                o,
                "  CPU during the window: server {} ({} cores), simulator {} ({} cores), \
                 whole machine {} cores busy; connections held: {}",
                opt(c.server_cpu_s, " s", 1),
                opt(c.server_cores, "", 2),
                opt(c.client_cpu_s, " s", 1),
                opt(c.client_cores, "", 2),
                opt(c.machine_busy_cores, "", 2),
                c.client_connections
                    .map_or_else(|| "n/a".to_owned(), |n| n.to_string())
            );
        }
        if let Some(ev) = &self.events {
            let _ = writeln!(
                o,
                "events: {} agents × {} events in batches of {}: {} events in {:.1} s = {:.0} events/s",
                ev.agents, ev.per_agent, ev.batch, ev.sent, ev.seconds, ev.per_s
            );
            let l = &ev.batch_latency;
            let _ = writeln!(
                o,
                "  upload latency: p50 {}, p99 {}, max {}; upload errors (retried): {}",
                ms(l.p50_ms),
                ms(l.p99_ms),
                ms(l.max_ms),
                ev.upload_errors.summary()
            );
            let _ = writeln!(
                o,
                "  stored {} (+{} reported as duplicates on retried uploads); re-sent {}: {} reported as duplicates, {} stored again",
                ev.accepted, ev.first_upload_duplicates, ev.resent, ev.resent_duplicates, ev.resent_accepted
            );
            let _ = writeln!(
                o,
                "  read back {} in {:.1} s: lost: {}, duplicated: {}, unexpected: {}, read errors: {} => {}",
                ev.read_back,
                ev.read_seconds,
                ev.lost,
                ev.duplicated,
                ev.unexpected,
                ev.read_errors.summary(),
                if ev.verified { "VERIFIED" } else { "FAILED" }
            );
        }
        if let Some(s) = &self.server {
            let _ = writeln!(
                o,
                "server process {}: CPU {} total, peak RSS {}; log: {} errors, {} warnings",
                s.pid,
                opt(s.cpu_s, " s", 1),
                opt(s.peak_rss_mib, " MiB", 0),
                s.log_errors
                    .map_or_else(|| "n/a".to_owned(), |n| n.to_string()),
                s.log_warnings
                    .map_or_else(|| "n/a".to_owned(), |n| n.to_string())
            );
            for line in &s.log_examples {
                let _ = writeln!(o, "  {line}");
            }
        }
        let _ = writeln!(
            o,
            "simulator: CPU {}, peak RSS {}",
            opt(self.client_cpu_s, " s", 1),
            opt(self.client_peak_rss_mib, " MiB", 0)
        );
        let _ = writeln!(
            o,
            "result: {}",
            if self.passed { "PASSED" } else { "FAILED" }
        );
        o
    }

    /// The machine-readable line: `RESULT {json}`.
    pub fn result_line(&self) -> String {
        format!(
            "{RESULT_PREFIX}{}",
            serde_json::to_string(self).expect("results serialize")
        )
    }
}

fn server_cells(s: Option<&ServerResult>) -> (String, String) {
    match s {
        Some(s) => (opt(s.cpu_s, " s", 1), opt(s.peak_rss_mib, " MiB", 0)),
        None => ("n/a".to_owned(), "n/a".to_owned()),
    }
}

/// Late check-ins, with those due to slow answers and those never sent named.
fn late_cell(c: &CheckinResult) -> String {
    let mut cell = c.late.to_string();
    if c.late_behind > 0 {
        let _ = write!(cell, " ({} behind slow answers)", c.late_behind);
    }
    if c.not_sent > 0 {
        let _ = write!(cell, " + {} not sent", c.not_sent);
    }
    cell
}

/// Markdown tables of check-in and event runs.
pub fn markdown(results: &[RunResult]) -> String {
    let mut o = String::new();
    let checkins: Vec<&RunResult> = results.iter().filter(|r| r.checkin.is_some()).collect();
    if !checkins.is_empty() {
        o.push_str(
            "| store | agents | interval | connections | offered/s | achieved/s | fleet @ 60 s | p50 | p90 | p99 | max | errors | late | server CPU in window | simulator / machine CPU in window | server CPU total | server peak RSS |\n",
        );
        o.push_str(
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in checkins {
            let Some(c) = &r.checkin else { continue };
            let (cpu, rss) = server_cells(r.server.as_ref());
            let _ = writeln!(
                o,
                "| {} | {} | {:.0} s | {} × {} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} cores | {} | {} |",
                r.label,
                thousands(c.agents as f64),
                c.interval_s,
                r.connections,
                r.mode,
                c.offered_per_s,
                c.achieved_per_s,
                thousands(c.fleet_at_60s),
                ms(c.latency.p50_ms),
                ms(c.latency.p90_ms),
                ms(c.latency.p99_ms),
                ms(c.latency.max_ms),
                if c.errors.total() == 0 {
                    "0".to_owned()
                } else {
                    c.errors.summary()
                },
                late_cell(c),
                match (c.server_cpu_s, c.server_cores) {
                    (Some(s), Some(k)) => format!("{s:.1} s ({k:.2} cores)"),
                    _ => "n/a".to_owned(),
                },
                opt(c.client_cores, "", 2),
                opt(c.machine_busy_cores, "", 2),
                cpu,
                rss
            );
        }
    }
    let events: Vec<&RunResult> = results.iter().filter(|r| r.events.is_some()).collect();
    if !events.is_empty() {
        if !o.is_empty() {
            o.push('\n');
        }
        o.push_str(
            "| store | agents × events | batch | events/s | upload p50 | upload p99 | re-sent batches | read back | verification | server CPU total | server peak RSS |\n",
        );
        o.push_str("|---|---:|---:|---:|---:|---:|---|---:|---|---:|---:|\n");
        for r in events {
            let Some(e) = &r.events else { continue };
            let (cpu, rss) = server_cells(r.server.as_ref());
            let _ = writeln!(
                o,
                "| {} | {} × {} | {} | {} | {} | {} | {} sent, {} duplicates, {} stored | {} | {}lost: {}, duplicated: {} | {} | {} |",
                r.label,
                thousands(e.agents as f64),
                thousands(e.per_agent as f64),
                e.batch,
                thousands(e.per_s),
                ms(e.batch_latency.p50_ms),
                ms(e.batch_latency.p99_ms),
                thousands(e.resent as f64),
                thousands(e.resent_duplicates as f64),
                e.resent_accepted,
                thousands(e.read_back as f64),
                if e.verified { "" } else { "FAILED: " },
                e.lost,
                e.duplicated,
                cpu,
                rss
            );
        }
    }
    o
}

/// The results found in `text`: every line that starts with [`RESULT_PREFIX`] (or is a bare
/// JSON object).
pub fn parse_results(text: &str) -> anyhow::Result<Vec<RunResult>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let json = match line.strip_prefix(RESULT_PREFIX) {
            Some(j) => j,
            None if line.trim_start().starts_with('{') => line,
            None => continue,
        };
        out.push(serde_json::from_str(json)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }

    #[test]
    fn result_line_round_trips_into_tables() {
        let run = RunResult {
            label: "sqlite".into(),
            store: "sqlite".into(),
            mode: "keep-alive".into(),
            connections: 64,
            agents: 1000,
            checkin: Some(CheckinResult {
                agents: 1000,
                interval_s: 60.0,
                offered_per_s: 16.7,
                achieved_per_s: 16.5,
                fleet_at_60s: 990.0,
                ..CheckinResult::default()
            }),
            events: Some(EventsResult {
                agents: 10,
                per_agent: 100,
                batch: 500,
                verified: true,
                ..EventsResult::default()
            }),
            passed: true,
            ..RunResult::default()
        };
        let text = format!("noise\n{}\n", run.result_line());
        let parsed = parse_results(&text).unwrap();
        assert_eq!(parsed.len(), 1);
        let table = markdown(&parsed);
        assert!(
            table.contains("| sqlite | 1,000 | 60 s | 64 × keep-alive | 16.7 | 16.5 | 990 |"),
            "{table}"
        );
        assert!(table.contains("lost: 0, duplicated: 0"), "{table}");
        assert!(run.human().contains("PASSED"));
    }

    #[test]
    fn log_scan_counts_levels() {
        let dir = std::env::temp_dir().join(format!("bench-log-{}", std::process::id()));
        std::fs::write(
            &dir,
            "2026-01-01T00:00:00Z  INFO x: fine\n2026-01-01T00:00:01Z ERROR rampart: request failed detail=locked\n2026-01-01T00:00:02Z  WARN y: slow\n",
        )
        .unwrap();
        let s = ServerResult::collect(std::process::id(), Some(&dir));
        let _ = std::fs::remove_file(&dir);
        assert_eq!(s.log_errors, Some(1));
        assert_eq!(s.log_warnings, Some(1));
        assert_eq!(
            s.log_examples[0],
            "ERROR rampart: request failed detail=locked"
        );
    }
}
