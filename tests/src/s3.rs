//! A fresh S3 bucket per test: on Garage (the integration tests' store), on
//! the embedded default's s3s-fs, or on a server named by the environment.

use super::*;

/// An S3 server and a fresh bucket on it.
pub struct TestS3 {
    pub config: BlobConfig,
    pub store: BlobStore,
    _server: Option<EmbeddedS3>,
    _dir: Option<tempfile::TempDir>,
    _garage: Option<std::sync::Arc<GarageCluster>>,
}

impl TestS3 {
    /// A fresh bucket on the integration tests' S3 store: Garage (one node
    /// shared by the test binary, which enforces signed checksums as real
    /// S3 does), or what `DRIFTLESS_TEST_S3` names (`garage`, `s3s-fs`), or
    /// the server `DRIFTLESS_TEST_S3_ENDPOINT` (with `_ACCESS_KEY` and
    /// `_SECRET_KEY`) points at.
    pub async fn start(presign_ttl: Duration) -> Self {
        if let Ok(endpoint) = std::env::var("DRIFTLESS_TEST_S3_ENDPOINT") {
            let config = BlobConfig {
                endpoint,
                region: "us-east-1".into(),
                bucket: unique("bucket-"),
                access_key: std::env::var("DRIFTLESS_TEST_S3_ACCESS_KEY")
                    .expect("DRIFTLESS_TEST_S3_ACCESS_KEY"),
                secret_key: std::env::var("DRIFTLESS_TEST_S3_SECRET_KEY")
                    .expect("DRIFTLESS_TEST_S3_SECRET_KEY"),
                path_style: true,
                presign_ttl,
                read_timeout: driftless_store::blob::READ_TIMEOUT,
            };
            return Self::ready(config, None, None, None).await;
        }
        match std::env::var("DRIFTLESS_TEST_S3").as_deref() {
            Err(_) | Ok("garage") => {
                Self::on_garage(GarageCluster::shared().await, presign_ttl).await
            }
            Ok("s3s-fs") => Self::embedded(presign_ttl).await,
            Ok(other) => panic!("DRIFTLESS_TEST_S3={other}: expected garage or s3s-fs"),
        }
    }

    /// Whether this store refuses a part whose bytes differ from its signed
    /// checksum (Garage does, as S3 does; s3s-fs does not).
    pub fn enforces_checksums(&self) -> bool {
        self._garage.is_some()
    }

    /// A fresh bucket on the embedded default's S3 endpoint (s3s-fs over a
    /// folder, in this process): for the tests of the embedded mode.
    pub async fn embedded(presign_ttl: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let secret = unique("secret");
        let server = EmbeddedS3::start(dir.path(), listener, "test-access", &secret)
            .await
            .unwrap();
        let config = server.blob_config(&unique("bucket-"), presign_ttl);
        Self::ready(config, Some(server), Some(dir), None).await
    }

    async fn ready(
        config: BlobConfig,
        server: Option<EmbeddedS3>,
        dir: Option<tempfile::TempDir>,
        garage: Option<std::sync::Arc<GarageCluster>>,
    ) -> Self {
        let store = BlobStore::new(&config);
        store
            .ensure_bucket()
            .await
            .unwrap_or_else(|e| panic!("S3 server at {} is not usable: {e}", config.endpoint));
        Self {
            config,
            store,
            _server: server,
            _dir: dir,
            _garage: garage,
        }
    }

    /// A fresh bucket on `cluster`.
    pub async fn on_garage(cluster: std::sync::Arc<GarageCluster>, presign_ttl: Duration) -> Self {
        let (config, store) = cluster.bucket(presign_ttl).await;
        Self::on(cluster, config, store)
    }

    /// A fresh bucket on `cluster`, made as an operator makes one (see
    /// [`GarageCluster::operator_bucket`]).
    pub async fn on_garage_by_operator(
        cluster: std::sync::Arc<GarageCluster>,
        presign_ttl: Duration,
    ) -> Self {
        let (config, store) = cluster.operator_bucket(presign_ttl).await;
        Self::on(cluster, config, store)
    }

    fn on(cluster: std::sync::Arc<GarageCluster>, config: BlobConfig, store: BlobStore) -> Self {
        Self {
            config,
            store,
            _server: None,
            _dir: None,
            _garage: Some(cluster),
        }
    }
}
