//! `driftless`: the desktop client.
//!
//! ```text
//! driftless login --server http://127.0.0.1:8440 --user alice --password-stdin
//! driftless sync ~/Driftless            # foreground: initial pass, then follow both sides
//! driftless status ~/Driftless          # pending changes, last pass, conflicts
//! driftless upload big.iso backups/big.iso   # resumable: run it again after a kill
//! driftless download backups/big.iso big.iso # resumable too
//! driftless ls backups/
//! driftless history notes/todo.md       # a file's versions
//! driftless restore notes/todo.md 42    # bring revision 42 back
//! ```
//!
//! Credentials live in `$DRIFTLESS_CONFIG_DIR` (default
//! `$XDG_CONFIG_HOME/driftless` or `~/.config/driftless`), file mode 0600;
//! `DRIFTLESS_SERVER` and `DRIFTLESS_TOKEN` override them.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use driftless_daemon::http::ApiClient;
use driftless_daemon::local::{Root, STATE_DIR};
use driftless_daemon::run::WAKE_FILE;
use driftless_daemon::run::{RunOptions, run};
use driftless_daemon::state::State;
use driftless_daemon::sync::{DeleteBrake, Syncer};
use driftless_protocol::{LoginRequest, NamespaceId, Outcome, RestoreRequest, Rev};

mod devices;
mod folders;
mod report;
mod signin;
mod transfer;

use report::print_status;
use signin::{Credentials, config_dir, credentials, default_device, write_private};

#[derive(Parser)]
#[command(
    name = "driftless",
    version,
    about = "Keep a folder in sync with a driftless server"
)]
struct Cli {
    /// Machine-readable output (JSON lines).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign this device in and store its token (mode 0600).
    Login {
        /// Server URL, e.g. http://127.0.0.1:8440.
        #[arg(long)]
        server: String,
        /// User name.
        #[arg(long)]
        user: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// This device's name (shown in conflicted copies).
        #[arg(long)]
        device: Option<String>,
    },
    /// Keep DIR in sync (foreground; Ctrl-C stops).
    Sync {
        /// The folder.
        dir: PathBuf,
        /// The folder's namespace on the server (default: your home).
        #[arg(long)]
        namespace: Option<u64>,
        /// One pass, then exit.
        #[arg(long)]
        once: bool,
        /// Send the deletions the brake held back (see `status`). With a
        /// daemon already running on DIR, it sends them at once.
        #[arg(long)]
        confirm_deletes: bool,
        /// The brake: more deletions than this in one pass wait for
        /// `--confirm-deletes`.
        #[arg(long, default_value_t = 500, env = "DRIFTLESS_MAX_DELETES")]
        max_deletes: usize,
        /// The brake: deleting more than this share of the folder (percent,
        /// once more than 10 files go) waits for `--confirm-deletes`.
        #[arg(long, default_value_t = 30.0, env = "DRIFTLESS_MAX_DELETE_PERCENT")]
        max_delete_percent: f64,
    },
    /// What is pending in DIR, when it last synced, and the conflicts.
    Status {
        /// The folder.
        dir: PathBuf,
    },
    /// Uploads FILE as REMOTE (replacing it); resumes after a kill.
    Upload {
        /// The local file.
        file: PathBuf,
        /// Its path in the folder on the server.
        remote: String,
        /// Namespace (default: your home).
        #[arg(long)]
        namespace: Option<u64>,
    },
    /// Downloads REMOTE to FILE; resumes after a kill.
    Download {
        /// The file's path in the folder on the server.
        remote: String,
        /// Where to write it.
        file: PathBuf,
        /// An earlier revision instead of the live one.
        #[arg(long)]
        rev: Option<u64>,
        /// Namespace (default: your home).
        #[arg(long)]
        namespace: Option<u64>,
    },
    /// Lists the files on the server (under PREFIX).
    Ls {
        /// A folder prefix, e.g. `photos/`.
        prefix: Option<String>,
        /// Namespace (default: your home).
        #[arg(long)]
        namespace: Option<u64>,
    },
    /// A file's versions on the server.
    History {
        /// The file's path in the folder.
        path: String,
        /// Namespace (default: your home).
        #[arg(long)]
        namespace: Option<u64>,
    },
    /// Folders: list, create, share, and invitations from others.
    Folder {
        #[command(subcommand)]
        command: folders::FolderCommand,
    },
    /// The devices signed in as you, with when each was last seen; `revoke
    /// NAME` signs one out on the server.
    Devices {
        #[command(subcommand)]
        command: Option<devices::DevicesCommand>,
    },
    /// Signs this device out on the server and forgets its token.
    Logout,
    /// Brings an earlier revision of a file back as its newest version.
    Restore {
        /// The file's path in the folder.
        path: String,
        /// The revision to bring back.
        rev: u64,
        /// Namespace (default: your home).
        #[arg(long)]
        namespace: Option<u64>,
    },
}

/// The API client of the stored credentials and the namespace to use.
async fn connect(namespace: Option<u64>) -> anyhow::Result<(ApiClient, NamespaceId)> {
    let creds = credentials()?;
    let api = ApiClient::new(&creds.server, &creds.token);
    let ns = home_namespace(&api, namespace).await?;
    Ok((api, ns))
}

async fn home_namespace(api: &ApiClient, given: Option<u64>) -> anyhow::Result<NamespaceId> {
    if let Some(n) = given {
        return Ok(NamespaceId(n));
    }
    api.namespaces()
        .await?
        .into_iter()
        .find(|n| n.home)
        .map(|n| n.id)
        .context("the server lists no home folder for this user")
}

/// Upload settings; `DRIFTLESS_PART_MIB` sets the part size (5 to 64 MiB,
/// default 16).
fn upload_options() -> anyhow::Result<driftless_daemon::UploadOptions> {
    let mut o = driftless_daemon::UploadOptions::default();
    if let Ok(v) = std::env::var("DRIFTLESS_PART_MIB") {
        let mib: u64 = v
            .parse()
            .ok()
            .filter(|m| (5..=64).contains(m))
            .context("DRIFTLESS_PART_MIB must be a number of MiB from 5 to 64")?;
        o.part_size = mib << 20;
    }
    Ok(o)
}

/// The journal of `upload` sessions, private to this user.
fn transfers_db() -> anyhow::Result<PathBuf> {
    let dir = config_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    Ok(dir.join("transfers.db"))
}

/// Holds the folder's lock for as long as the process runs: two daemons
/// on one folder would undo each other's work.
fn lock_folder(root: &Root) -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.dir().join(STATE_DIR).join("lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!(
                "another driftless is already syncing {}",
                root.dir().display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

fn open_state(root: &Root) -> anyhow::Result<Arc<State>> {
    let dir = root.dir().join(STATE_DIR);
    std::fs::create_dir_all(&dir)?;
    #[cfg(unix)]
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    Ok(Arc::new(State::open(&dir.join("state.db"))?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    {
        use tracing_subscriber::Layer;
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let filter =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
        // HTTP libraries' debug logs carry request lines: presigned URLs
        // are credentials, so theirs stop at info whatever RUST_LOG says.
        let quiet = tracing_subscriber::filter::filter_fn(|meta| {
            *meta.level() <= tracing::Level::INFO
                || !["reqwest", "hyper", "h2", "rustls"]
                    .iter()
                    .any(|t| meta.target().starts_with(t))
        });
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter)
                    .with_filter(quiet),
            )
            .init();
    }
    match cli.command {
        Command::Login {
            server,
            user,
            password_stdin,
            device,
        } => {
            let mut password = String::new();
            if !password_stdin && std::io::stdin().is_terminal() {
                eprint!("password for {user}: ");
            }
            std::io::stdin().read_to_string(&mut password)?;
            let device_name = device.unwrap_or_else(default_device);
            let r = ApiClient::login(
                &server,
                &LoginRequest {
                    user,
                    password: password.trim_end_matches(['\r', '\n']).to_owned(),
                    device_name: device_name.clone(),
                },
            )
            .await?;
            let file = config_dir().join("credentials.json");
            let creds = Credentials {
                server,
                token: r.token,
                device_name,
            };
            write_private(&file, &serde_json::to_vec_pretty(&creds)?)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"device_id": r.device_id, "credentials": file})
                );
            } else {
                println!(
                    "signed in as device {} (token in {})",
                    r.device_id,
                    file.display()
                );
            }
        }
        Command::Sync {
            dir,
            namespace,
            once,
            confirm_deletes,
            max_deletes,
            max_delete_percent,
        } => {
            let creds = credentials()?;
            let api = ApiClient::new(&creds.server, &creds.token);
            let root = Root::open(&dir)?;
            let state = open_state(&root)?;
            if confirm_deletes {
                state.set(driftless_daemon::sync::CONFIRM_DELETES_KEY, "1")?;
            }
            let _lock = match lock_folder(&root) {
                Ok(l) => l,
                Err(e) if confirm_deletes => {
                    // A daemon runs on the folder: wake it to send them.
                    std::fs::write(root.dir().join(STATE_DIR).join(WAKE_FILE), b"")?;
                    eprintln!("{e}: it sends the held deletions now");
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let ns = match (namespace, state.get("namespace")?) {
                (Some(n), _) => NamespaceId(n),
                (None, Some(n)) => NamespaceId(n.parse()?),
                (None, None) => home_namespace(&api, None).await?,
            };
            if let Some(prev) = state.get("namespace")?
                && prev != ns.0.to_string()
            {
                bail!("{} already syncs namespace {prev}", root.dir().display());
            }
            state.set("namespace", &ns.0.to_string())?;
            let syncer = Syncer::new(api, ns, root, state.clone(), &creds.device_name)
                .with_upload_options(upload_options()?)
                .with_delete_brake(DeleteBrake {
                    max_files: max_deletes,
                    max_fraction: max_delete_percent / 100.0,
                    ..DeleteBrake::default()
                });
            let json = cli.json;
            let report = move |r: &Result<driftless_daemon::sync::PassReport, _>| {
                let _ = state.set("last_pass_ms", &driftless_daemon::now_ms().to_string());
                match r {
                    Ok(rep) if json => {
                        println!("{}", serde_json::to_string(rep).unwrap_or_default())
                    }
                    Ok(rep) if rep.changed() || !rep.problems.is_empty() => eprintln!(
                        "synced: {} down, {} up, {} deleted here, {} deleted there, {} moved, {} conflicts{}",
                        rep.downloaded,
                        rep.uploaded,
                        rep.deleted_here,
                        rep.deleted_there,
                        rep.moved,
                        rep.conflicts,
                        if rep.problems.is_empty() {
                            String::new()
                        } else {
                            format!(", {} problems", rep.problems.len())
                        }
                    ),
                    Ok(_) => {}
                    Err(e) => eprintln!("sync failed: {e}"),
                }
                if let Ok(rep) = r
                    && rep.deletes_held > 0
                {
                    eprintln!(
                        "holding back {} deletions (more than the brake allows in one pass): check the folder, then run `driftless sync --confirm-deletes`",
                        rep.deletes_held
                    );
                }
            };
            if once {
                let report = report;
                let r = syncer.pass().await;
                report(&r);
                if let Err(driftless_daemon::sync::SyncError::Client(e)) = &r
                    && e.signed_out()
                {
                    eprintln!("driftless: signed out on the server ({e}): run `driftless login`");
                    std::process::exit(3);
                }
                r?;
            } else {
                let stopped = run(
                    syncer,
                    RunOptions::default(),
                    async {
                        let _ = tokio::signal::ctrl_c().await;
                    },
                    report,
                )
                .await;
                if let driftless_daemon::run::Stopped::SignedOut(why) = stopped {
                    eprintln!("driftless: signed out on the server ({why}): run `driftless login`");
                    std::process::exit(3);
                }
            }
        }
        Command::Status { dir } => {
            let root = Root::open(&dir)?;
            let state = open_state(&root)?;
            let st = driftless_daemon::status::status(&root, &state)?;
            if cli.json {
                println!("{}", serde_json::to_string(&st)?);
            } else {
                print_status(&st);
            }
        }
        Command::Upload {
            file,
            remote,
            namespace,
        } => {
            let (api, ns) = connect(namespace).await?;
            let journal = Arc::new(State::open(&transfers_db()?)?);
            let opts = upload_options()?;
            transfer::upload(&api, ns, &file, &remote, journal, opts, cli.json).await?;
        }
        Command::Download {
            remote,
            file,
            rev,
            namespace,
        } => {
            let (api, ns) = connect(namespace).await?;
            transfer::download(&api, ns, &remote, rev, &file, cli.json).await?;
        }
        Command::Ls { prefix, namespace } => {
            let (api, ns) = connect(namespace).await?;
            transfer::ls(&api, ns, prefix.as_deref(), cli.json).await?;
        }
        Command::History { path, namespace } => {
            let (api, ns) = connect(namespace).await?;
            let versions = api.versions(ns, &path).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&versions)?);
            } else {
                for v in versions {
                    println!(
                        "rev {:>8}  {}  {:>12} bytes  device {}",
                        v.rev.0,
                        if v.deleted { "deleted" } else { "       " },
                        v.size,
                        v.device_id.map_or("-".into(), |d| d.0.to_string())
                    );
                }
            }
        }
        Command::Folder { command } => {
            let creds = credentials()?;
            let api = ApiClient::new(&creds.server, &creds.token);
            folders::run(&api, command, cli.json).await?;
        }
        Command::Devices { command } => {
            let creds = credentials()?;
            let api = ApiClient::new(&creds.server, &creds.token);
            devices::run(&api, command, cli.json).await?;
        }
        Command::Logout => {
            let creds = credentials()?;
            let api = ApiClient::new(&creds.server, &creds.token);
            match api.logout().await {
                Ok(()) => {}
                // Already signed out there: forgetting the token is all that is left.
                Err(e) if e.signed_out() => {}
                Err(e) => return Err(e.into()),
            }
            let file = config_dir().join("credentials.json");
            if file.exists() {
                std::fs::remove_file(&file)?;
            }
            if !cli.json {
                println!("signed out");
            }
        }
        Command::Restore {
            path,
            rev,
            namespace,
        } => {
            let (api, ns) = connect(namespace).await?;
            let current = api
                .versions(ns, &path)
                .await?
                .into_iter()
                .next()
                .filter(|v| !v.deleted)
                .map(|v| v.rev);
            let outcome = api
                .restore(
                    ns,
                    &RestoreRequest {
                        op_id: format!("restore-{:016x}", rand_u64())
                            .parse()
                            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
                        path: path.clone(),
                        rev: Rev(rev),
                        base_rev: current,
                    },
                )
                .await?;
            match outcome {
                Outcome::Committed { rev: new, .. } => {
                    if cli.json {
                        println!("{}", serde_json::json!({"restored": rev, "rev": new}));
                    } else {
                        println!("{path}: revision {rev} is back as revision {}", new.0);
                    }
                }
                other => bail!("not restored: {other:?}"),
            }
        }
    }
    Ok(())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
