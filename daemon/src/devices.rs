//! `driftless devices` and `driftless logout`: the devices signed in as
//! you, signing one out on the server, and signing this one out.

use anyhow::bail;
use clap::Subcommand;
use driftless_daemon::http::ApiClient;

/// `driftless devices` subcommands.
#[derive(Subcommand)]
pub(crate) enum DevicesCommand {
    /// Signs the device NAME (or id) out on the server: its next request
    /// is refused and its daemon stops, asking to sign in again.
    Revoke {
        /// The device's name or id.
        name: String,
    },
}

fn when(ms: Option<i64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) => {
            let ago = (driftless_daemon::now_ms() - ms).max(0) / 1000;
            match ago {
                0..60 => "just now".into(),
                60..3600 => format!("{} min ago", ago / 60),
                3600..86_400 => format!("{} h ago", ago / 3600),
                _ => format!("{} days ago", ago / 86_400),
            }
        }
    }
}

pub(crate) async fn run(
    api: &ApiClient,
    cmd: Option<DevicesCommand>,
    json: bool,
) -> anyhow::Result<()> {
    let all = api.devices().await?;
    match cmd {
        None => {
            if json {
                println!("{}", serde_json::to_string(&all)?);
                return Ok(());
            }
            for d in all {
                println!(
                    "{:>6}  {:<24} last seen {:<14}{}{}",
                    d.id.0,
                    d.name,
                    when(d.last_seen_at_ms),
                    if d.current { "  (this device)" } else { "" },
                    if d.revoked_at_ms.is_some() {
                        "  signed out"
                    } else {
                        ""
                    },
                );
            }
        }
        Some(DevicesCommand::Revoke { name }) => {
            let live: Vec<_> = all
                .iter()
                .filter(|d| d.revoked_at_ms.is_none())
                .filter(|d| d.name == name || d.id.0.to_string() == name)
                .collect();
            let d = match live.as_slice() {
                [d] => *d,
                [] => bail!("no signed-in device is named {name:?} (see `driftless devices`)"),
                _ => bail!("several devices are named {name:?}: give the id instead"),
            };
            api.revoke_device(d.id).await?;
            if json {
                println!("{}", serde_json::json!({"revoked": d.id}));
            } else {
                println!("{} (device {}) is signed out on the server", d.name, d.id.0);
            }
        }
    }
    Ok(())
}
