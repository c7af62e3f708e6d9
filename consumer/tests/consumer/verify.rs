//! The verifier settles each pending chunk by what storage really holds, and
//! only verified chunks are offered to other devices for deduplication.

use std::time::Duration;

use bytes::Bytes;
use driftless_consumer::Verifier;
use driftless_protocol::{ChunkHash, DeviceId, NamespaceId};
use driftless_store::meta::accounts;
use driftless_store::meta::chunks::{ChunkLocation, Usable, missing_in, record_chunks, state};
use driftless_store::meta::uploads::{self, Session};
use driftless_store::{Db, pack_key};
use driftless_tests::{TestDb, TestS3};
use sqlx::Row;

pub(crate) struct Stored {
    pub(crate) hash: ChunkHash,
    pub(crate) location: ChunkLocation,
}

/// Appends `raw` to `pack` (zstd-compressed if asked), returning its location.
pub(crate) fn add(pack: &mut Vec<u8>, raw: &[u8], zstd: bool) -> Stored {
    let hash = ChunkHash::from_bytes(*blake3::hash(raw).as_bytes());
    let stored = if zstd {
        zstd::bulk::compress(raw, 1).unwrap()
    } else {
        raw.to_vec()
    };
    let location = ChunkLocation {
        hash,
        raw_len: raw.len() as u32,
        offset: pack.len() as u64,
        stored_len: stored.len() as u32,
        codec: i64::from(zstd),
    };
    pack.extend_from_slice(&stored);
    Stored { hash, location }
}

/// A session by `device` whose pack holds `locations`, as a commit leaves it.
pub(crate) async fn committed_pack(
    db: &Db,
    ns: NamespaceId,
    device: DeviceId,
    user: i64,
    pack_id: &str,
    locations: &[ChunkLocation],
) {
    uploads::create_session(
        db,
        &Session {
            namespace: ns,
            id: format!("{ns}-{pack_id}"),
            user_id: user,
            device_id: device.0 as i64,
            pack_id: pack_id.into(),
            s3_upload_id: "u".into(),
            state: "open".into(),
            results: None,
            expires_at_ms: i64::MAX,
            committing_until_ms: None,
        },
        "[]",
        &[],
    )
    .await
    .unwrap();
    let mut tx = db.begin().await.unwrap();
    record_chunks(&mut tx, ns.0 as i64, pack_id, locations)
        .await
        .unwrap();
    uploads::complete_pack(&mut tx, ns, pack_id, 0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn state_of(db: &Db, ns: NamespaceId, h: ChunkHash) -> (i64, String) {
    let r = sqlx::query("SELECT state, pack_id FROM chunks WHERE namespace_id = $1 AND hash = $2")
        .bind(ns.0 as i64)
        .bind(h.as_bytes().to_vec())
        .fetch_one(db.pool())
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

async fn offered(
    db: &Db,
    ns: NamespaceId,
    device: DeviceId,
    hashes: &[ChunkHash],
) -> Vec<ChunkHash> {
    let mut conn = db.pool().acquire().await.unwrap();
    missing_in(
        &mut conn,
        ns.0 as i64,
        Usable::OfferedTo(device),
        hashes.iter().copied(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn settles_each_chunk_by_what_storage_holds_on_postgres() {
    settles_each_chunk(TestDb::postgres().await).await;
}

#[tokio::test]
async fn settles_each_chunk_by_what_storage_holds_on_sqlite() {
    settles_each_chunk(TestDb::sqlite().await).await;
}

async fn settles_each_chunk(t: TestDb) {
    let db = &t.db;
    let s3 = TestS3::start(Duration::from_secs(60)).await;
    let (user, ns) = accounts::create_user(db, "vera", None)
        .await
        .unwrap()
        .unwrap();
    let laptop = accounts::create_device(db, user, "laptop", &[1; 32], None)
        .await
        .unwrap();
    let phone = accounts::create_device(db, user, "phone", &[2; 32], None)
        .await
        .unwrap();

    // One pack: a raw chunk, a zstd chunk, a chunk whose stored bytes were
    // changed after hashing, a zstd frame that inflates past its declared
    // length, and a chunk beyond the end of the object.
    let mut pack = Vec::new();
    let good = add(&mut pack, &[7u8; 3000], false);
    let text = "a line of text that compresses well\n".repeat(500);
    let squeezed = add(&mut pack, text.as_bytes(), true);
    let flipped = add(&mut pack, &[9u8; 2000], false);
    pack[flipped.location.offset as usize + 1000] ^= 1;
    let mut bomb = add(&mut pack, &vec![0u8; 1 << 20], true);
    bomb.location.raw_len = 4096; // the frame declares far more
    let mut beyond = add(&mut pack, b"tail", false);
    pack.truncate(beyond.location.offset as usize);
    beyond.location.offset += 10; // not where anything is
    s3.store
        .put(&pack_key("p1"), Bytes::from(pack))
        .await
        .unwrap();
    let all = [&good, &squeezed, &flipped, &bomb, &beyond];
    let locations: Vec<_> = all.iter().map(|c| c.location).collect();
    committed_pack(db, ns, laptop, user.0, "p1", &locations).await;
    let hashes: Vec<_> = all.iter().map(|c| c.hash).collect();

    // Pending: the uploading device may reuse its own chunks, another may not.
    assert!(offered(db, ns, laptop, &hashes).await.is_empty());
    assert_eq!(offered(db, ns, phone, &hashes).await, hashes);

    let mut verifier = Verifier::new(db.clone(), s3.store.clone());
    let report = verifier.verify_pack(ns, "p1").await.unwrap();
    assert_eq!(report.verified, 2);
    assert_eq!(report.corrupt, vec![flipped.hash, bomb.hash, beyond.hash]);
    for (c, want) in [
        (&good, state::VERIFIED),
        (&squeezed, state::VERIFIED),
        (&flipped, state::CORRUPT),
        (&bomb, state::CORRUPT),
        (&beyond, state::CORRUPT),
    ] {
        assert_eq!(state_of(db, ns, c.hash).await.0, want);
    }
    // Verified chunks are offered to everyone; corrupt ones to nobody.
    let bad = vec![flipped.hash, bomb.hash, beyond.hash];
    assert_eq!(offered(db, ns, phone, &hashes).await, bad);
    assert_eq!(offered(db, ns, laptop, &hashes).await, bad);

    // Settling again changes nothing; a pack with nothing pending is a no-op.
    let again = verifier.verify_pack(ns, "p1").await.unwrap();
    assert_eq!(again, Default::default());

    // A re-upload of a corrupt chunk replaces its location; a verified chunk
    // keeps its first copy.
    let mut pack2 = Vec::new();
    let fixed = add(&mut pack2, &[9u8; 2000], false);
    let dup = add(&mut pack2, &[7u8; 3000], false);
    s3.store
        .put(&pack_key("p2"), Bytes::from(pack2))
        .await
        .unwrap();
    committed_pack(db, ns, phone, user.0, "p2", &[fixed.location, dup.location]).await;
    assert_eq!(
        state_of(db, ns, fixed.hash).await,
        (state::PENDING, "p2".into())
    );
    assert_eq!(
        state_of(db, ns, dup.hash).await,
        (state::VERIFIED, "p1".into())
    );
    let report = verifier.verify_pack(ns, "p2").await.unwrap();
    assert_eq!((report.verified, report.corrupt.len()), (1, 0));
    assert_eq!(state_of(db, ns, fixed.hash).await.0, state::VERIFIED);
}

#[tokio::test]
async fn a_missing_pack_object_settles_its_chunks_corrupt() {
    let t = TestDb::postgres().await;
    let s3 = TestS3::start(Duration::from_secs(60)).await;
    let (user, ns) = accounts::create_user(&t.db, "walt", None)
        .await
        .unwrap()
        .unwrap();
    let dev = accounts::create_device(&t.db, user, "d", &[3; 32], None)
        .await
        .unwrap();
    let mut pack = Vec::new();
    let c = add(&mut pack, b"never stored", false);
    committed_pack(&t.db, ns, dev, user.0, "gone", &[c.location]).await;
    let report = Verifier::new(t.db.clone(), s3.store.clone())
        .verify_pack(ns, "gone")
        .await
        .unwrap();
    assert_eq!(report.corrupt, vec![c.hash]);
}
