//! The `driftless-consumer` command line, in the library so that tests can
//! parse what deployments run (docker-compose.yml's commands) with it.

use clap::{Parser, Subcommand};

/// The `driftless-consumer` command line.
#[derive(Parser)]
#[command(
    name = "driftless-consumer",
    version,
    about = "driftless event-stream workers"
)]
pub struct Cli {
    #[command(subcommand)]
    /// What to do (default: run).
    pub command: Option<Command>,
}

/// Its subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the relay, the verifier and the sweepers until interrupted (the default).
    Run,
    /// Print the outbox backlog and the lag of the consumers and the devices.
    Lag {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}
