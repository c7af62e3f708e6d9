//! docker-compose.yml and the Dockerfile checked against the code, since
//! no Docker engine runs here to start them: every command parses with the
//! binaries' own argument parsers, every `DRIFTLESS_*` variable is one the
//! binaries read (and the list of those is the code's), the services that
//! need the production adapters get all of them, ports and health checks
//! match what the server listens on and serves, and the image builds the
//! binaries the services run.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod garage;

use clap::Parser;
use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut v: Value = serde_yaml::from_str(&text).unwrap();
    v.apply_merge().unwrap();
    v
}

/// A service's environment as name -> value (list or map form).
fn env_of(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
                };
                (k.as_str().unwrap().to_owned(), v)
            })
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                let (k, v) = i.as_str().unwrap().split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn command_of(service: &Value) -> Vec<String> {
    service["command"]
        .as_sequence()
        .expect("our services give their command as a list")
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// Every `"DRIFTLESS_…"` string literal in the server crates' sources.
fn names_in_code() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<PathBuf> = ["api/src", "consumer/src", "store/src"]
        .iter()
        .map(|d| root().join(d))
        .collect();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let mut text = std::fs::read_to_string(&path).unwrap();
            // The list itself does not count as reading a name.
            if let Some(start) = text.find("pub const ENV: &[&str] = &[") {
                let end = start + text[start..].find("];").unwrap();
                text.replace_range(start..end, "");
            }
            for (i, _) in text.match_indices("\"DRIFTLESS_") {
                let name: String = text[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                // (`"DRIFTLESS_"` alone is the prefix, not a setting.)
                if name.len() > "DRIFTLESS_".len() && text[i + 1 + name.len()..].starts_with('"') {
                    out.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn the_list_of_variables_is_the_code_s() {
    let listed: BTreeSet<String> = driftless_api::config::ENV
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(
        listed,
        names_in_code(),
        "config::ENV and the names the code reads differ"
    );
}

#[test]
fn the_sample_configuration_file_parses_and_documents_every_setting() {
    let text = std::fs::read_to_string(root().join("deploy/driftless.toml")).unwrap();
    let values = driftless_store::env::parse_file(&text).unwrap();
    // What it sets uncommented are the built-in defaults.
    assert_eq!(values["DRIFTLESS_LISTEN"], "127.0.0.1:8440");
    assert_eq!(values["DRIFTLESS_MAX_IN_FLIGHT"], "512");
    for name in driftless_api::config::ENV {
        if *name == "DRIFTLESS_CONFIG" {
            continue;
        }
        let key = driftless_store::env::file_key(name);
        assert!(
            text.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{key} ="))
            }),
            "deploy/driftless.toml does not document {key}"
        );
    }
}

#[test]
fn compose_runs_commands_the_binaries_accept() {
    let c = compose();
    let services = c["services"].as_mapping().unwrap();
    let mut ours = 0;
    for (name, s) in services {
        if s["image"].as_str() != Some("driftless:latest") {
            continue;
        }
        ours += 1;
        let argv = command_of(s);
        match argv[0].as_str() {
            "driftless-server" => {
                let cli = driftless_api::cli::Cli::try_parse_from(&argv)
                    .unwrap_or_else(|e| panic!("{name:?}: {argv:?}: {e}"));
                assert!(cli.command.is_some(), "{name:?}");
            }
            "driftless-consumer" => {
                driftless_consumer::cli::Cli::try_parse_from(&argv)
                    .unwrap_or_else(|e| panic!("{name:?}: {argv:?}: {e}"));
            }
            other => panic!("{name:?} runs {other:?}, which the image does not hold"),
        }
    }
    assert_eq!(ours, 3, "api, consumer and reconcile run our image");
    for want in [
        "postgres",
        "kafka",
        "minio",
        "minio-init",
        "garage",
        "garage-init",
        "api",
        "consumer",
        "reconcile",
    ] {
        assert!(services.contains_key(want), "no {want} service");
    }
    // The Kafka image is the official one, in KRaft mode.
    let kafka = &c["services"]["kafka"];
    assert!(
        kafka["image"]
            .as_str()
            .unwrap()
            .starts_with("apache/kafka:")
    );
    assert_eq!(env_of(kafka)["KAFKA_PROCESS_ROLES"], "broker,controller");
}

#[test]
fn compose_sets_only_variables_the_binaries_read_and_all_they_need() {
    let c = compose();
    let known: BTreeSet<&str> = driftless_api::config::ENV.iter().copied().collect();
    let required = [
        "DRIFTLESS_DATABASE_URL",
        "DRIFTLESS_S3_ENDPOINT",
        "DRIFTLESS_S3_BUCKET",
        "DRIFTLESS_S3_ACCESS_KEY",
        "DRIFTLESS_S3_SECRET_KEY",
        "DRIFTLESS_KAFKA_BROKERS",
        "DRIFTLESS_CURSOR_SECRET",
    ];
    for name in ["api", "consumer", "reconcile"] {
        let env = env_of(&c["services"][name]);
        for k in env.keys().filter(|k| k.starts_with("DRIFTLESS_")) {
            assert!(
                known.contains(k.as_str()),
                "{name}: {k} is read by no binary"
            );
        }
        for k in required {
            assert!(env.contains_key(k), "{name} lacks {k}");
        }
        // Production: PostgreSQL and Kafka, never the embedded stand-ins.
        assert!(
            env["DRIFTLESS_DATABASE_URL"].starts_with("postgres://"),
            "{name}"
        );
        assert_eq!(env["DRIFTLESS_KAFKA_BROKERS"], "kafka:9092", "{name}");
        // Secrets come from .env, not from this file.
        for k in ["DRIFTLESS_S3_SECRET_KEY", "DRIFTLESS_CURSOR_SECRET"] {
            assert!(
                env[k].starts_with("${"),
                "{name}: {k} is written into the file"
            );
        }
    }
    // The API leaves the workers to `consumer`.
    assert_eq!(
        env_of(&c["services"]["api"])["DRIFTLESS_RUN_CONSUMERS"],
        "false"
    );
}

#[test]
fn compose_ports_health_checks_and_start_order_match_the_server() {
    let c = compose();
    let api = &c["services"]["api"];
    let env = env_of(api);
    let listen: std::net::SocketAddr = env["DRIFTLESS_LISTEN"].parse().unwrap();
    let ports: Vec<&str> = api["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(ports, [format!("{0}:{0}", listen.port())]);
    let check: Vec<&str> = api["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let url = check.last().unwrap();
    assert_eq!(*url, format!("http://localhost:{}/readyz", listen.port()));
    // The route exists and a server with its stores up is ready: ask one.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let app = driftless_tests::TestApp::spawn_sqlite().await;
        let r = reqwest::get(format!("{}/readyz", app.url)).await.unwrap();
        assert_eq!(r.status(), 200);
    });
    // Docker's SIGKILL comes after the server's own shutdown grace.
    let grace: u64 = env["DRIFTLESS_SHUTDOWN_GRACE_SECS"].parse().unwrap();
    for name in ["api", "consumer"] {
        let stop = c["services"][name]["stop_grace_period"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} keeps docker's 10 s stop grace"));
        let stop: u64 = stop.trim_end_matches('s').parse().unwrap();
        assert!(
            stop > grace,
            "{name}: SIGKILL after {stop}s, grace {grace}s"
        );
    }
    assert_eq!(env["DRIFTLESS_LOG_FORMAT"], "json");
    // The presigned-URL endpoint clients use is the chosen store's
    // published port (S3_PORT in .env), and inside the network the same
    // name reaches that store. Each store is a profile, and .env's example
    // settings for each name its profile, port and region.
    let endpoint = &env["DRIFTLESS_S3_ENDPOINT"];
    assert!(endpoint.ends_with(":${S3_PORT:-9000}"), "{endpoint}");
    let example = std::fs::read_to_string(root().join("deploy/env.example")).unwrap();
    for (store, port, region) in [("minio", "9000", "us-east-1"), ("garage", "3900", "garage")] {
        let s = &c["services"][store];
        assert!(
            s["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|p| p.as_str() == Some(&format!("{port}:{port}"))),
            "{store}"
        );
        let aliases = &s["networks"]["default"]["aliases"];
        assert!(
            aliases
                .as_sequence()
                .unwrap()
                .iter()
                .any(|a| endpoint.contains(a.as_str().unwrap())),
            "{endpoint} vs {aliases:?}"
        );
        for service in [store.to_owned(), format!("{store}-init")] {
            assert_eq!(
                c["services"][service.as_str()]["profiles"][0].as_str(),
                Some(store),
                "{service}"
            );
        }
        for line in [
            format!("COMPOSE_PROFILES={store}"),
            format!("S3_PORT={port}"),
            format!("S3_REGION={region}"),
        ] {
            assert!(example.contains(&line), "env.example lacks {line}");
        }
    }
    // Garage answers in the region its configuration names.
    let garage_toml = std::fs::read_to_string(root().join("deploy/garage/garage.toml")).unwrap();
    assert!(garage_toml.contains("s3_region = \"garage\""));
    assert!(garage_toml.contains("api_bind_addr = \"[::]:3900\""));
    // garage-init runs the script tests/deploy/garage.rs runs on a real node.
    let init = &c["services"]["garage-init"];
    assert!(
        init["volumes"][0]
            .as_str()
            .unwrap()
            .starts_with("./deploy/garage/init.sh:")
    );
    let init_env = env_of(init);
    for k in [
        "GARAGE_ADMIN",
        "GARAGE_ADMIN_TOKEN",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "S3_BUCKET",
    ] {
        assert!(init_env.contains_key(k), "garage-init lacks {k}");
    }
    // Start order: the API after its stores, the workers after the API.
    let deps = |s: &str| -> BTreeMap<String, String> {
        c["services"][s]["depends_on"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_owned(),
                    v["condition"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(deps("api")["postgres"], "service_healthy");
    assert_eq!(deps("api")["kafka"], "service_healthy");
    // The API waits for whichever store's set-up ran (the other profile's
    // is not required).
    for init in ["minio-init", "garage-init"] {
        assert_eq!(deps("api")[init], "service_completed_successfully");
        assert_eq!(
            c["services"]["api"]["depends_on"][init]["required"].as_bool(),
            Some(false),
            "{init}"
        );
    }
    for w in ["consumer", "reconcile"] {
        assert_eq!(deps(w)["api"], "service_healthy", "{w}");
    }
    for s in ["postgres", "kafka", "minio", "garage"] {
        assert!(
            c["services"][s]["healthcheck"]["test"].is_sequence(),
            "{s} has no health check"
        );
        assert!(
            c["services"][s]["volumes"].is_sequence(),
            "{s} keeps no data"
        );
    }
}

#[test]
fn the_image_builds_the_binaries_compose_runs() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")) >= 2,
        "multi-stage"
    );
    assert!(
        dockerfile
            .contains("cargo build --release --locked -p driftless-api -p driftless-consumer")
    );
    for bin in ["driftless-server", "driftless-consumer"] {
        assert!(
            dockerfile.contains(&format!("target/release/{bin}")),
            "{bin} not copied out"
        );
    }
    // The health check's curl is in the runtime image.
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(runtime.contains("curl"));
    // The toolchain it builds with is the workspace's.
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let msrv = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        dockerfile.contains(&format!("FROM rust:{msrv}")),
        "builder is not rust:{msrv}"
    );
}
