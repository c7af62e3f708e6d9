//! `deploy/garage/init.sh`, which docker-compose.yml's `garage-init` runs,
//! against a real Garage node as an operator finds it after installing it
//! (no layout, no key, no bucket): after it, driftless's key reads, writes
//! and sets the bucket's CORS rule, and a second run changes nothing.

use std::time::Duration;

use driftless_store::{BlobConfig, BlobStore};
use driftless_tests::{GARAGE_REGION, GarageCluster};

const KEY: &str = "GK00112233445566778899aabb";
const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn init(admin_port: u16, token: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg(super::root().join("deploy/garage/init.sh"))
        .env("GARAGE_ADMIN", format!("http://127.0.0.1:{admin_port}"))
        .env("GARAGE_ADMIN_TOKEN", token)
        .env("S3_ACCESS_KEY", KEY)
        .env("S3_SECRET_KEY", SECRET)
        .env("S3_BUCKET", "driftless")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "init.sh failed: {text}");
    text
}

#[test]
fn the_garage_init_script_prepares_a_fresh_node_and_can_run_again() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let token = "an admin token for this test only";
        let node = GarageCluster::bare(token).await;
        let admin = node.nodes[0].admin_port;
        let first = init(admin, token);
        for step in [
            "layout version 1",
            "imported",
            "created",
            "may read, write and own",
        ] {
            assert!(first.contains(step), "{step}: {first}");
        }
        let again = init(admin, token);
        assert!(
            !again.contains("imported") && !again.contains("created"),
            "{again}"
        );

        let store = BlobStore::new(&BlobConfig {
            endpoint: format!("http://127.0.0.1:{}", node.nodes[0].s3_port),
            region: GARAGE_REGION.into(),
            bucket: "driftless".into(),
            access_key: KEY.into(),
            secret_key: SECRET.into(),
            path_style: true,
            presign_ttl: Duration::from_secs(300),
            read_timeout: driftless_store::blob::READ_TIMEOUT,
        });
        // The layout takes a moment to reach the S3 API.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while let Err(e) = store
            .put("probe", bytes::Bytes::from_static(b"hello"))
            .await
        {
            assert!(std::time::Instant::now() < deadline, "{e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(store.size("probe").await.unwrap(), Some(5));
        store.create_multipart("packs/probe").await.unwrap();
        // The owner right lets the server set the CORS rule itself.
        store
            .ensure_cors(&["https://files.example".into()])
            .await
            .unwrap();
    });
}
