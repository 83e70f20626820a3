//! One file per subcommand.

pub mod agent;
pub mod agents;
pub mod enroll_token;
pub mod events;
pub mod groups;
pub mod login;
pub mod policy;
pub mod ransomware;
pub mod server;
pub mod up;

use std::path::Path;

use anyhow::Result;
use rampart_cli::admin_client::{AdminClient, Session};

/// A client for the saved administrator session.
pub fn admin(root: &Path) -> Result<AdminClient> {
    AdminClient::from_session(&Session::load(root)?)
}

/// Completes on SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// A time in ms since the epoch, as `YYYY-MM-DD HH:MM:SS UTC`, or `never` for 0.
pub fn format_time(ms: i64) -> String {
    if ms <= 0 {
        return "never".to_owned();
    }
    let secs = ms / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil-from-days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_times() {
        assert_eq!(super::format_time(0), "never");
        assert_eq!(
            super::format_time(1_700_000_000_000),
            "2023-11-14 22:13:20 UTC"
        );
    }
}
