//! Where `driftless login` keeps the server, the token and the device name
//! (the environment overrides them), written private to the user.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// What `login` stores.
#[derive(Serialize, Deserialize)]
pub(crate) struct Credentials {
    pub(crate) server: String,
    pub(crate) token: String,
    pub(crate) device_name: String,
}

pub(crate) fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DRIFTLESS_CONFIG_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(d).join("driftless");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".config").join("driftless")
}

pub(crate) fn credentials() -> anyhow::Result<Credentials> {
    let stored: Option<Credentials> = std::fs::read(config_dir().join("credentials.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let server = std::env::var("DRIFTLESS_SERVER")
        .ok()
        .or_else(|| stored.as_ref().map(|c| c.server.clone()));
    let token = std::env::var("DRIFTLESS_TOKEN")
        .ok()
        .or_else(|| stored.as_ref().map(|c| c.token.clone()));
    match (server, token) {
        (Some(server), Some(token)) => Ok(Credentials {
            server,
            token,
            device_name: stored.map(|c| c.device_name).unwrap_or_else(default_device),
        }),
        _ => bail!("not signed in: run `driftless login --server URL --user NAME` first"),
    }
}

pub(crate) fn default_device() -> String {
    std::env::var("DRIFTLESS_DEVICE")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "this device".into())
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
