//! `rampart server`: run the management server.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Result;
use rampart_server::{ServerOptions, FIRST_ADMIN};

/// Options of `rampart server`.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443", env = "RAMPART_LISTEN")]
    pub listen: SocketAddr,
    /// Database URL: sqlite://PATH (default: the embedded store below the root) or
    /// postgres://USER:PASSWORD@HOST/DB.
    #[arg(long, env = "RAMPART_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// More names (DNS or IP) for the server certificate, for agents reaching it by those.
    #[arg(long = "san")]
    pub extra_names: Vec<String>,
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(root: &Path, args: Args) -> Result<()> {
    let options = ServerOptions {
        root: root.to_path_buf(),
        listen: args.listen,
        database_url: args.database,
        extra_names: args.extra_names,
    };
    let prepared = rampart_server::prepare(&options).await?;
    if let Some(password) = &prepared.first_admin_password {
        // to the terminal only, never to the log
        println!(
            "First start: administrator {FIRST_ADMIN:?} has the one-time password {password}\n\
             (it is shown only now; the server keeps only its argon2 hash)"
        );
    }
    println!("Data folder: {}", prepared.paths.data_dir.display());
    rampart_server::serve(prepared, &options, super::stop_signal()).await
}
