//! The configuration file under the environment, and `driftless-server
//! config`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::ops::server_bin;

#[tokio::test]
async fn the_configuration_file_sets_what_the_environment_does_not_and_config_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("driftless.toml");
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             data_dir = \"{}\"\n\
             embedded_s3_listen = \"127.0.0.1:0\"\n\
             database_url = \"postgres://app:hunter2@db.internal/driftless\"\n\
             s3_bucket = \"from-file\"\n\
             s3_secret_key = \"file-secret-key\"\n\
             cors_origins = [\"https://a.example\", \"https://b.example\"]\n\
             max_in_flight = 64\n",
            data.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(server_bin());
        c.args(args);
        for (k, _) in
            std::env::vars().filter(|(k, _)| driftless_api::config::ENV.contains(&k.as_str()))
        {
            c.env_remove(k);
        }
        c.envs(env.iter().copied());
        c.output().unwrap()
    };
    let out = run(
        &["--config", file.to_str().unwrap(), "config", "--json"],
        &[("DRIFTLESS_S3_BUCKET", "from-env")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["DRIFTLESS_S3_BUCKET"],
        json!({"value": "from-env", "source": "env"})
    );
    assert_eq!(
        v["DRIFTLESS_MAX_IN_FLIGHT"],
        json!({"value": "64", "source": "file"})
    );
    assert_eq!(
        v["DRIFTLESS_CORS_ORIGINS"]["value"],
        "https://a.example,https://b.example"
    );
    assert_eq!(v["DRIFTLESS_S3_SECRET_KEY"]["value"], "<redacted>");
    assert_eq!(
        v["DRIFTLESS_DATABASE_URL"]["value"],
        "postgres://app:<redacted>@db.internal/driftless"
    );
    assert_eq!(
        v["DRIFTLESS_KAFKA_BROKERS"],
        json!({"value": null, "source": "default"})
    );
    let all =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!all.contains("hunter2") && !all.contains("file-secret-key"));
    // The file holds secrets and others may read it: a warning.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A typo is refused by name, listing what is known.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:1\"\nmax_inflight = 3\n").unwrap();
    let out = run(&["--config", bad.to_str().unwrap(), "config"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown setting \"max_inflight\"") && err.contains("max_in_flight"),
        "{err}"
    );
    // A bad value is refused before anything starts.
    let out = run(
        &["--config", file.to_str().unwrap(), "config"],
        &[("DRIFTLESS_MAX_IN_FLIGHT", "lots")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DRIFTLESS_MAX_IN_FLIGHT"));

    // The server runs on what the file says (the embedded default, no
    // database URL, listening where the file says).
    let served = dir.path().join("served.toml");
    std::fs::write(
        &served,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nembedded_s3_listen = \"127.0.0.1:0\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut c = std::process::Command::new(server_bin());
    for (k, _) in std::env::vars().filter(|(k, _)| driftless_api::config::ENV.contains(&k.as_str()))
    {
        c.env_remove(k);
    }
    let mut child = c
        .args(["serve"])
        .env("DRIFTLESS_CONFIG", &served)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "no server on the file's port");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(data.join("meta.db").exists(), "the file's data_dir is used");
    child.kill().unwrap();
    child.wait().unwrap();
}
