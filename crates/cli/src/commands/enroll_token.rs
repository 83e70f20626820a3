//! `rampart enroll-token create`.

use std::path::Path;

use anyhow::{bail, Result};

use super::format_time;

/// `rampart enroll-token` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a token agents enroll with (`rampart agent enroll --token`).
    Create {
        /// The group agents enrolled with it join.
        #[arg(long, default_value = "default")]
        group: String,
        /// Validity: a number with s, m, h or d (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h")]
        expires: String,
        /// How many agents may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u64,
    },
}

/// Parses `30s`, `10m`, `24h`, `7d` into seconds.
pub fn parse_duration(text: &str) -> Result<u64> {
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("duration {text:?} must end in s, m, h or d (e.g. 24h)"),
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n * factor),
        _ => bail!("duration {text:?} must be a positive number followed by s, m, h or d"),
    }
}

/// Runs an enroll-token subcommand.
pub async fn run(root: &Path, command: Command) -> Result<()> {
    let admin = super::admin(root)?;
    match command {
        Command::Create {
            group,
            expires,
            uses,
        } => {
            let created = admin
                .create_enrollment_token(&group, parse_duration(&expires)?, uses)
                .await?;
            eprintln!(
                "Enrollment token for group {group:?}, {uses} use(s), valid until {}:",
                format_time(created.expires_at_ms)
            );
            println!("{}", created.token);
            eprintln!(
                "On the host: rampart agent enroll --server {} --token <the token above>",
                admin.base()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("30m").unwrap(), 1800);
        assert_eq!(super::parse_duration("7d").unwrap(), 604_800);
        assert!(super::parse_duration("7").is_err());
        assert!(super::parse_duration("0h").is_err());
        assert!(super::parse_duration("").is_err());
    }
}
