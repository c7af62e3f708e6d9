//! `driftless folder …`: the folders you have, new ones, sharing them, and
//! the invitations others sent you (a share is an invitation you accept,
//! never imposed on you).

use anyhow::{Context, bail};
use clap::Subcommand;
use driftless_daemon::http::ApiClient;
use driftless_protocol::NamespaceId;

/// `driftless folder` subcommands.
#[derive(Subcommand)]
pub(crate) enum FolderCommand {
    /// Your folders (your home and those shared with you), with your role.
    List,
    /// Makes a new folder you own; prints its id.
    Create {
        /// Its name.
        name: String,
    },
    /// Invites USER to folder ID (or changes a member's role).
    Share {
        /// The folder's id.
        id: u64,
        /// The user to invite.
        #[arg(long = "with")]
        user: String,
        /// viewer, editor or owner.
        #[arg(long, default_value = "editor")]
        role: String,
    },
    /// Removes USER from folder ID, or withdraws their invitation (leave a
    /// folder with your own user name).
    Unshare {
        /// The folder's id.
        id: u64,
        /// The user to remove.
        #[arg(long)]
        user: String,
    },
    /// The invitations waiting for you.
    Invites,
    /// Accepts the invitation to folder ID.
    Accept {
        /// The folder's id.
        id: u64,
    },
    /// Declines the invitation to folder ID.
    Decline {
        /// The folder's id.
        id: u64,
    },
}

pub(crate) async fn run(api: &ApiClient, cmd: FolderCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        FolderCommand::List => {
            let all = api.namespaces().await?;
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                for n in all {
                    println!(
                        "{:>8}  {:<7} {}{}",
                        n.id.0,
                        n.role,
                        n.name,
                        if n.home { "  (home)" } else { "" }
                    );
                }
            }
        }
        FolderCommand::Create { name } => {
            let n = api.create_namespace(&name).await?;
            if json {
                println!("{}", serde_json::json!({"namespace": n.id, "name": n.name}));
            } else {
                println!("{}", n.id.0);
            }
        }
        FolderCommand::Share { id, user, role } => {
            if !matches!(role.as_str(), "viewer" | "editor" | "owner") {
                bail!("--role is viewer, editor or owner");
            }
            api.share(NamespaceId(id), &user, &role).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"namespace": id, "user": user, "role": role})
                );
            } else {
                println!(
                    "{user} is invited to folder {id} as {role} (if that user exists); they accept with `driftless folder accept {id}`"
                );
            }
        }
        FolderCommand::Unshare { id, user } => {
            api.unshare(NamespaceId(id), &user).await?;
            if !json {
                println!("{user} is no longer in folder {id}");
            }
        }
        FolderCommand::Invites => {
            let all = api.invitations().await?;
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else if all.is_empty() {
                println!("no invitations");
            } else {
                for i in all {
                    println!(
                        "{:>8}  {:<7} {} (from {})",
                        i.namespace.0, i.role, i.name, i.invited_by
                    );
                }
            }
        }
        FolderCommand::Accept { id } => {
            let n = api
                .accept(NamespaceId(id))
                .await
                .with_context(|| format!("accepting the invitation to folder {id}"))?;
            if json {
                println!("{}", serde_json::to_string(&n)?);
            } else {
                println!(
                    "you are now {} of folder {} ({}); sync it with `driftless sync DIR --namespace {}`",
                    n.role, n.id.0, n.name, n.id.0
                );
            }
        }
        FolderCommand::Decline { id } => {
            api.decline(NamespaceId(id)).await?;
            if !json {
                println!("declined");
            }
        }
    }
    Ok(())
}
