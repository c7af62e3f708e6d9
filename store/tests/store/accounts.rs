//! Users, devices, namespaces and roles behave the same on both databases.

use driftless_store::meta::accounts::{self, Role};

use driftless_tests::TestDb;

#[tokio::test]
async fn users_devices_and_roles() {
    for t in TestDb::both().await {
        let db = &t.db;
        let (alice, home) = accounts::create_user(db, "alice", Some("$argon2id$fake"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            accounts::create_user(db, "alice", None).await.unwrap(),
            None,
            "names are unique"
        );
        let (bob, bob_home) = accounts::create_user(db, "bob", None)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(home, bob_home);

        assert_eq!(
            accounts::role_in(db, alice, home).await.unwrap(),
            Some(Role::Owner)
        );
        assert_eq!(
            accounts::role_in(db, bob, home).await.unwrap(),
            None,
            "not a member"
        );

        let shared = accounts::create_shared_namespace(db, alice, "team")
            .await
            .unwrap();
        accounts::set_membership(db, shared, bob, Role::Viewer)
            .await
            .unwrap();
        assert_eq!(
            accounts::role_in(db, bob, shared).await.unwrap(),
            Some(Role::Viewer)
        );
        accounts::set_membership(db, shared, bob, Role::Editor)
            .await
            .unwrap();
        assert!(
            accounts::role_in(db, bob, shared)
                .await
                .unwrap()
                .unwrap()
                .can_write()
        );
        let bobs: Vec<_> = accounts::namespaces_of(db, bob)
            .await
            .unwrap()
            .into_iter()
            .map(|n| (n.id, n.is_home, n.role))
            .collect();
        assert_eq!(
            bobs,
            vec![(bob_home, true, Role::Owner), (shared, false, Role::Editor)]
        );

        let token_hash = [7u8; 32];
        let device = accounts::create_device(db, alice, "laptop", &token_hash, None)
            .await
            .unwrap();
        let auth = accounts::device_by_token_hash(db, &token_hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((auth.device_id, auth.user_id), (device, alice));
        assert_eq!(
            accounts::device_by_token_hash(db, &[8u8; 32])
                .await
                .unwrap(),
            None
        );
        assert!(accounts::revoke_device(db, device).await.unwrap());
        assert_eq!(
            accounts::device_by_token_hash(db, &token_hash)
                .await
                .unwrap(),
            None
        );
        let (_, hash) = accounts::user_by_name(db, "alice").await.unwrap().unwrap();
        assert_eq!(hash.as_deref(), Some("$argon2id$fake"));
    }
}
