//! Small statistics helpers: latency percentiles over sorted samples, error tallies, and what
//! `/proc` says about a process (CPU time, peak memory) and about open TCP connections.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of `samples_us` (microseconds); sorts the slice.
    pub fn from_micros(samples_us: &mut [u64]) -> Latency {
        if samples_us.is_empty() {
            return Latency::default();
        }
        samples_us.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        let sum: u128 = samples_us.iter().map(|&v| u128::from(v)).sum();
        Latency {
            count: samples_us.len() as u64,
            mean_ms: sum as f64 / samples_us.len() as f64 / 1000.0,
            p50_ms: ms(percentile(samples_us, 0.50)),
            p90_ms: ms(percentile(samples_us, 0.90)),
            p99_ms: ms(percentile(samples_us, 0.99)),
            max_ms: ms(*samples_us.last().unwrap_or(&0)),
        }
    }
}

/// The `q` quantile (0 < q ≤ 1) of sorted `sorted`, by the nearest-rank method; 0 when empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds of `d`, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Failures counted by kind, with the first message seen for each kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorTally {
    /// Count per kind (`timeout`, `connect`, `http 500`, …).
    pub counts: BTreeMap<String, u64>,
    /// The first message seen per kind, to tell what happened.
    pub examples: BTreeMap<String, String>,
}

impl ErrorTally {
    /// Counts one failure of `kind` described by `message`.
    pub fn add(&mut self, kind: &str, message: &str) {
        *self.counts.entry(kind.to_owned()).or_default() += 1;
        self.examples
            .entry(kind.to_owned())
            .or_insert_with(|| message.chars().take(300).collect());
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ErrorTally) {
        for (kind, n) in &other.counts {
            *self.counts.entry(kind.clone()).or_default() += n;
        }
        for (kind, m) in &other.examples {
            self.examples
                .entry(kind.clone())
                .or_insert_with(|| m.clone());
        }
    }

    /// All failures.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// `kind: n, kind: n`, or `none`.
    pub fn summary(&self) -> String {
        if self.counts.is_empty() {
            return "none".to_owned();
        }
        self.counts
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The kind of a transport failure, for [`ErrorTally`].
pub fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else if e.is_request() {
        "request"
    } else {
        "transport"
    }
}

/// A reqwest error with its chain of causes, which is where the useful part is.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system) process `pid` has used, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name (field 2) may hold spaces and parentheses: fields resume after the last ')'
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// CPU seconds the whole machine has spent busy (every state but idle and I/O wait), from the
/// first line of `/proc/stat`.
pub fn machine_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let busy: f64 = ticks.iter().take(8).sum::<f64>() - ticks.get(3)? - ticks.get(4)?;
    Some(busy / USER_HZ)
}

/// Peak resident memory (`VmHWM`) of process `pid`, in MiB, from `/proc/PID/status`.
pub fn peak_rss_mib(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Established TCP connections (IPv4 and IPv6) whose remote port is `port`: on loopback, the
/// client ends of connections to a server listening on that port.
pub fn established_to_port(port: u16) -> u64 {
    let mut n = 0;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state)) = (fields.get(2), fields.get(3)) else {
                continue;
            };
            let remote_port = remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // state 01 is ESTABLISHED
            if *state == "01" && remote_port == Some(port) {
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().map(|x| x * 1000).collect();
        let l = Latency::from_micros(&mut v);
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p90_ms, 90.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert!((l.mean_ms - 50.5).abs() < 1e-9);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(Latency::from_micros(&mut []), Latency::default());
    }

    #[test]
    fn tally_counts_and_keeps_first_example() {
        let mut t = ErrorTally::default();
        t.add("http 500", "first");
        t.add("http 500", "second");
        t.add("timeout", "slow");
        let mut u = ErrorTally::default();
        u.add("timeout", "other");
        t.merge(&u);
        assert_eq!(t.total(), 4);
        assert_eq!(t.examples["http 500"], "first");
        assert_eq!(t.summary(), "http 500: 2, timeout: 2");
        assert_eq!(ErrorTally::default().summary(), "none");
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id().to_string();
        assert!(cpu_seconds(&pid).is_some());
        assert!(peak_rss_mib(&pid).unwrap() > 0.0);
        assert!(machine_busy_seconds().unwrap() > 0.0);
    }
}
