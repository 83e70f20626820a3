//! `rampart login`: log in as an administrator and save the session.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result};
use rampart_cli::admin_client::{check_server_url, AdminClient, Session};
use rampart_server::ServerPaths;

/// Options of `rampart login`.
#[derive(clap::Args)]
pub struct Args {
    /// The server, e.g. https://127.0.0.1:8443.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    pub server: String,
    /// Administrator's user name.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// The server's CA certificate (PEM). Default: the local server's, below the root.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    /// Read the password from standard input (otherwise: RAMPART_PASSWORD, then a prompt).
    #[arg(long)]
    pub password_stdin: bool,
}

/// Logs in and saves the session below the root.
pub async fn run(root: &Path, args: Args) -> Result<()> {
    check_server_url(&args.server)?;
    let ca_path = args.ca.unwrap_or_else(|| ServerPaths::new(root).ca_pem());
    let ca_pem = std::fs::read_to_string(&ca_path).with_context(|| {
        format!(
            "reading the server CA {} (pass --ca FILE with the server's ca.pem)",
            ca_path.display()
        )
    })?;
    let password = if args.password_stdin {
        read_line()?
    } else if let Ok(p) = std::env::var("RAMPART_PASSWORD") {
        p
    } else {
        eprint!("Password for {}: ", args.user);
        read_line()?
    };
    let client = AdminClient::new(&args.server, &ca_pem, None)?;
    let (_, login) = client.login(&args.user, &password).await?;
    Session {
        server_url: args.server.clone(),
        ca_pem,
        token: login.token,
    }
    .save(root)?;
    println!(
        "Logged in to {} as {}; session saved to {}",
        args.server,
        args.user,
        Session::path(root).display()
    );
    Ok(())
}

fn read_line() -> Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
