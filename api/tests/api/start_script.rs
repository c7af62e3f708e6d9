//! The README's first command, `scripts/start.sh DIR` (issue 14.14): it
//! signs the device in only to the server it started. With another program
//! answering on the port it stops with a clear error and signs in nowhere;
//! with the ports free it starts its own server and syncs the folder.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The built binaries (`cargo test --workspace` builds every one).
fn bin_dir() -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_driftless-server"));
    let dir = server.parent().unwrap().to_owned();
    assert!(
        dir.join("driftless").exists(),
        "the daemon binary is not built next to the server: run the tests with --workspace"
    );
    dir
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/start.sh")
}

fn start(folder: &Path, data: &Path, config: &Path, api: u16, s3: u16) -> Command {
    let mut c = Command::new("bash");
    c.arg(script())
        .arg(folder)
        .env("DRIFTLESS_BIN_DIR", bin_dir())
        .env("DRIFTLESS_LISTEN", format!("127.0.0.1:{api}"))
        .env("DRIFTLESS_EMBEDDED_S3_LISTEN", format!("127.0.0.1:{s3}"))
        .env("DRIFTLESS_DATA_DIR", data)
        .env("DRIFTLESS_CONFIG_DIR", config)
        .env_remove("DRIFTLESS_S3_ENDPOINT")
        .env_remove("DRIFTLESS_DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

/// Another program answers every request on the server's port with 200:
/// the script refuses to start, and no device signs in anywhere.
#[test]
fn another_program_on_the_port_is_an_error_not_a_server_to_sign_in_to() {
    let impostor = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = impostor.local_addr().unwrap().port();
    let answered = std::thread::spawn(move || {
        let mut n = 0;
        impostor.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            match impostor.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let mut buf = [0u8; 4096];
                    let got = s.read(&mut buf).unwrap_or(0);
                    if got > 0 {
                        n += 1;
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
                        );
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        n
    });
    let tmp = tempfile::tempdir().unwrap();
    let (folder, data, config) = (
        tmp.path().join("folder"),
        tmp.path().join("data"),
        tmp.path().join("config"),
    );
    let started = Instant::now();
    let out = start(&folder, &data, &config, port, free_port())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port} is already in use")),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // Signed in nowhere: no credentials were written.
    let creds: Vec<_> = std::fs::read_dir(&config)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(creds.is_empty(), "config folder holds {creds:?}");
    // The impostor was never asked anything (the port probe sends nothing).
    drop(answered);
}

/// With the ports free the script starts its own server, signs in and
/// syncs: a file in the folder reaches the server. Ctrl-C (SIGINT to the
/// script) stops the daemon and the server.
#[test]
fn with_free_ports_it_starts_its_own_server_and_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let (folder, data, config) = (
        tmp.path().join("folder"),
        tmp.path().join("data"),
        tmp.path().join("config"),
    );
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("hello.txt"), b"hello from start.sh").unwrap();
    let port = free_port();
    let mut child = start(&folder, &data, &config, port, free_port())
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ls = || {
        Command::new(bin_dir().join("driftless"))
            .arg("ls")
            .env("DRIFTLESS_CONFIG_DIR", &config)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ls().contains("hello.txt") {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "start.sh ended ({status}); server log:\n{}",
                std::fs::read_to_string(data.join("server.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "hello.txt never reached the server"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(data.join("server.log")).unwrap();
    assert!(log.contains("driftless server up"), "{log}");
    // Ctrl-C (to the terminal's process group): the daemon stops, and the
    // script's trap stops the server.
    let group = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process_group(group, rustix::process::Signal::INT).unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "the server outlived its script");
        std::thread::sleep(Duration::from_millis(100));
    }
}
