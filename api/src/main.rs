//! `driftless-server`: the API server and its admin commands.
//!
//! With no configuration it runs the embedded default (SQLite + in-process S3
//! under `./driftless-data`); see `config.rs` for the environment variables.

use std::io::Read;

use anyhow::Context;
use clap::Parser;
use driftless_api::cli::{Cli, Command};
use driftless_api::config::{Config, S3Choice};
use driftless_api::{Server, create_user, run};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    driftless_consumer::cli::start(cli.config.as_deref())?;
    if let Some(Command::Config { json }) = &cli.command {
        // Checked as the server would read them, without starting anything.
        Config::check()?;
        print!("{}", driftless_consumer::cli::show_settings(*json));
        if *json {
            println!();
        }
        return Ok(());
    }
    let mut config = Config::from_env()?;
    if !matches!(cli.command, None | Some(Command::Serve)) {
        // An admin command beside a running server: the embedded S3 port is
        // the server's, and the command reaches the same folder on its own.
        if let S3Choice::Embedded { listen } = &mut config.s3 {
            listen.set_port(0);
        }
    }
    if let Some(Command::Reconcile(args)) = &cli.command {
        let status = driftless_api::reconcile::run(&config, args).await?;
        std::process::exit(status);
    }
    let server = Server::start(&config).await?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            let s3 = match &config.s3 {
                S3Choice::Embedded { listen } => format!("embedded S3 on {listen}"),
                S3Choice::External(c) => format!("S3 at {}", c.endpoint),
            };
            tracing::info!(listen = %config.listen, data = %config.data_dir.display(), "driftless server up ({s3})");
            run(
                listener,
                server.state,
                driftless_consumer::cli::terminated(),
            )
            .await?;
        }
        Command::CreateUser {
            name,
            password_stdin,
            device,
        } => {
            let password = if password_stdin {
                let mut p = String::new();
                std::io::stdin().read_to_string(&mut p)?;
                Some(p.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            let token = create_user(&server.state, &name, password.as_deref(), &device).await?;
            println!("{token}");
        }
        Command::Reconcile(_) | Command::Config { .. } => unreachable!("handled above"),
    }
    Ok(())
}
