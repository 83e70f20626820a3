//! `rampart policy show|set|edit`: an agent group's policy.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rampart_protocol::admin::PolicyView;

/// `rampart policy` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Print a group's policy (TOML, or JSON with --json).
    Show {
        /// The agent group.
        #[arg(long, default_value = "default")]
        group: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a group's policy with a file (TOML or JSON; `-` reads standard input).
    Set {
        /// The agent group.
        #[arg(long, default_value = "default")]
        group: String,
        /// The policy file.
        file: PathBuf,
    },
    /// Edit a group's policy in $EDITOR; it is validated by the server when saved.
    Edit {
        /// The agent group.
        #[arg(long, default_value = "default")]
        group: String,
    },
}

/// Parses policy text: JSON if it looks like JSON, TOML otherwise.
pub fn policy_text_to_json(text: &str) -> Result<String> {
    if text.trim_start().starts_with('{') {
        return Ok(text.to_owned());
    }
    let value: toml::Value = toml::from_str(text).context("policy is not valid TOML")?;
    Ok(serde_json::to_string(&value)?)
}

fn print_view(view: &PolicyView, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&view.policy)?);
    } else {
        println!("# group {:?}, policy version {}", view.group, view.version);
        print!("{}", toml::to_string(&view.policy)?);
    }
    Ok(())
}

fn report_set(view: &PolicyView) {
    for w in &view.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "Policy of group {:?} is now version {}",
        view.group, view.version
    );
}

/// Runs a policy subcommand.
pub async fn run(root: &Path, command: Command) -> Result<()> {
    let admin = super::admin(root)?;
    match command {
        Command::Show { group, json } => print_view(&admin.policy(&group).await?, json),
        Command::Set { group, file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let view = admin
                .set_policy(&group, policy_text_to_json(&text)?)
                .await?;
            report_set(&view);
            Ok(())
        }
        Command::Edit { group } => {
            let current = admin.policy(&group).await?;
            let dir = std::env::temp_dir().join(format!("rampart-policy-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let file = dir.join(format!("{group}.toml"));
            std::fs::write(
                &file,
                format!(
                    "# Policy of agent group {:?}, version {}. Save and quit to apply.\n{}",
                    group,
                    current.version,
                    toml::to_string(&current.policy)?
                ),
            )?;
            let editor = std::env::var("VISUAL")
                .or_else(|_| std::env::var("EDITOR"))
                .unwrap_or_else(|_| "vi".to_owned());
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{editor} \"$1\""))
                .arg("sh")
                .arg(&file)
                .status()
                .with_context(|| format!("starting the editor {editor:?}"))?;
            let text = std::fs::read_to_string(&file)?;
            let _ = std::fs::remove_dir_all(&dir);
            if !status.success() {
                bail!("the editor exited with {status}; the policy is unchanged");
            }
            let json = policy_text_to_json(&text)?;
            let view = admin.set_policy(&group, json).await?;
            report_set(&view);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_json_policies() {
        let j = policy_text_to_json("[update]\ncomponents = \"pattern-files\"\n").unwrap();
        assert_eq!(j, r#"{"update":{"components":"pattern-files"}}"#);
        assert_eq!(policy_text_to_json(" {\"a\":1}").unwrap(), " {\"a\":1}");
        assert!(policy_text_to_json("update = [").is_err());
    }
}
