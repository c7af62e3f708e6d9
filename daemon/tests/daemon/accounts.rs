//! Folders, invitations and devices from the command line: a folder shared
//! with you is an invitation you accept and never your home; a device
//! signed out on the server stops its daemon with a message to sign in
//! again; `logout` forgets the token.

use std::time::Duration;

use driftless_tests::TestApp;

use crate::cli::{Cli, until, write};

async fn signed_in(app: &TestApp, user: &str, device: &str, password: &str) -> Cli {
    let cli = Cli::new(&app.url, None, device);
    let out = cli
        .login(&app.url, user, format!("{password}\n").as_bytes())
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_shared_with_you_is_an_invitation_and_your_uploads_stay_in_your_home() {
    let app = TestApp::spawn().await;
    app.user("mallory", Some("mallory's password")).await;
    app.user("victim", Some("victim's password")).await;
    let mallory = signed_in(&app, "mallory", "m-laptop", "mallory's password").await;
    let victim = signed_in(&app, "victim", "v-laptop", "victim's password").await;

    let folders = mallory.json(&["folder", "list"]).await;
    let mallory_home = folders[0]["id"].as_u64().unwrap();
    assert_eq!(folders[0]["home"], true);
    // Mallory shares her home with the victim: an invitation, nothing more.
    mallory
        .ok(&[
            "folder",
            "share",
            &mallory_home.to_string(),
            "--with",
            "victim",
        ])
        .await;
    let invites = victim.json(&["folder", "invites"]).await;
    assert_eq!(invites[0]["namespace"], mallory_home);
    assert_eq!(invites[0]["invited_by"], "mallory");
    victim
        .ok(&["folder", "accept", &mallory_home.to_string()])
        .await;
    let mine = victim.json(&["folder", "list"]).await;
    let homes: Vec<u64> = mine
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["home"] == true)
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(homes.len(), 1);
    assert_ne!(homes[0], mallory_home, "the victim's home is their own");

    // The victim's upload and sync without --namespace go to their home.
    let work = tempfile::tempdir().unwrap();
    write(&work.path().join("diary.txt"), b"private");
    victim
        .ok(&[
            "upload",
            work.path().join("diary.txt").to_str().unwrap(),
            "diary.txt",
        ])
        .await;
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("photo.jpg"), b"private too");
    victim
        .ok(&["sync", dir.path().to_str().unwrap(), "--once"])
        .await;
    let seen = mallory.ok(&["--json", "ls"]).await;
    assert!(!seen.contains("diary") && !seen.contains("photo"), "{seen}");
    // A folder of their own, created, shared and synced by name.
    let created = victim.json(&["folder", "create", "Family"]).await;
    let family = created["namespace"].as_u64().unwrap();
    let shared = tempfile::tempdir().unwrap();
    write(&shared.path().join("recipe.md"), b"soup");
    victim
        .ok(&[
            "sync",
            shared.path().to_str().unwrap(),
            "--once",
            "--namespace",
            &family.to_string(),
        ])
        .await;
    let listed = victim
        .ok(&["--json", "ls", "--namespace", &family.to_string()])
        .await;
    assert!(listed.contains("recipe.md"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_signed_out_on_the_server_stops_and_says_to_sign_in_again() {
    let app = TestApp::spawn().await;
    app.user("ada", Some("ada's password")).await;
    let laptop = signed_in(&app, "ada", "laptop", "ada's password").await;
    let desk = signed_in(&app, "ada", "desk", "ada's password").await;
    let devices = laptop.json(&["devices"]).await;
    let names: Vec<&str> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"laptop") && names.contains(&"desk"),
        "{devices}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut daemon = desk
        .command(&["sync", dir.path().to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = std::time::Instant::now();
    laptop.ok(&["devices", "revoke", "desk"]).await;
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("the signed-out daemon kept running")
        .unwrap();
    eprintln!(
        "signed-out daemon stopped {:?} after the revoke",
        t.elapsed()
    );
    assert_eq!(status.code(), Some(3));
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    daemon
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("signed out on the server"), "{stderr}");
    assert!(stderr.contains("driftless login"), "{stderr}");
    // Every command of the desk says the same.
    let out = desk.run(&["ls"]).await;
    assert!(!out.status.success());

    // Logout: the laptop's token stops working and is forgotten.
    laptop.ok(&["logout"]).await;
    assert!(!laptop.config.path().join("credentials.json").exists());
    let out = laptop.run(&["ls"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("driftless login"));
    // The desk signs in again and syncs.
    let desk = signed_in(&app, "ada", "desk", "ada's password").await;
    write(&dir.path().join("after.txt"), b"back");
    desk.ok(&["sync", dir.path().to_str().unwrap(), "--once"])
        .await;
    until(Duration::from_secs(5), || true).await;
}
