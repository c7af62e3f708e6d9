//! The `driftless-server` command line, in the library so that tests can
//! parse what deployments run (docker-compose.yml's commands) with it.

use clap::{Parser, Subcommand};

/// The `driftless-server` command line.
#[derive(Parser)]
#[command(
    name = "driftless-server",
    version,
    about = "The driftless sync server"
)]
pub struct Cli {
    /// A TOML configuration file (also `DRIFTLESS_CONFIG`); the
    /// environment overrides it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    /// What to do (default: serve).
    pub command: Option<Command>,
}

/// Its subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Create a user with a home folder and a first device; prints the device token.
    CreateUser {
        /// User name.
        name: String,
        /// Read a password for `driftless login` from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Name of the first device.
        #[arg(long, default_value = "admin-created")]
        device: String,
    },
    /// Find and repair drift between the database, object storage and the
    /// event stream (one run, for cron; `--every` to loop).
    Reconcile(crate::reconcile::ReconcileArgs),
    /// Print the settings in force and where each came from (environment,
    /// file, default), secrets redacted; checks them as the server would.
    Config {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}
