//! Nobody gets in: a folder shared with someone is an invitation, never
//! their home; sharing does not tell who has an account; a folder keeps an
//! owner; names cannot hide or reverse text; devices can be listed and
//! signed out (their requests and long-polls end); tokens may expire
//! unused; sign-ins and long-polls are limited per caller.

use std::time::Duration;

use driftless_tests::{AppOptions, TestApp, TestDb};
use serde_json::{Value, json};

use crate::client::{Api, accept, prepare, share, upload};

fn homes(list: &Value) -> Vec<u64> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|n| n["home"] == true)
        .map(|n| n["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_shared_home_folder_is_an_invitation_and_never_the_invitees_home() {
    let app = TestApp::spawn().await;
    // The older account shares its own home with a newer one.
    let (mallory_token, mallory_home) = app.user("mallory", None).await;
    let (victim_token, victim_home) = app.user("victim", None).await;
    let mallory = Api::new(&app.url, &mallory_token);
    let victim = Api::new(&app.url, &victim_token);
    assert_eq!(share(&mallory, mallory_home, "victim", "editor").await, 202);

    // Nothing is imposed: the victim sees only an invitation.
    let (_, list) = victim.get("/v1/namespaces").await;
    assert_eq!(homes(&list), [victim_home], "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let (status, inv) = victim.get("/v1/invitations").await;
    assert_eq!(status, 200);
    assert_eq!(inv[0]["namespace"], mallory_home, "{inv}");
    assert_eq!(inv[0]["invited_by"], "mallory");
    assert_eq!(inv[0]["role"], "editor");
    // Even accepted, it is a shared folder: the victim has one home, theirs.
    let joined = accept(&victim, mallory_home).await;
    assert_eq!(joined["home"], false, "{joined}");
    let (_, list) = victim.get("/v1/namespaces").await;
    assert_eq!(homes(&list), [victim_home], "{list}");
    // The owner's own view is unchanged.
    let (_, list) = mallory.get("/v1/namespaces").await;
    assert_eq!(homes(&list), [mallory_home], "{list}");
    // The victim's uploads without a folder named go to the victim's home.
    let (r, _) = upload(
        &victim,
        victim_home,
        &[prepare("mine.txt", b"mine", None, "v-1")],
    )
    .await;
    assert!(matches!(
        r[0].outcome,
        driftless_protocol::Outcome::Committed { .. }
    ));
    assert_eq!(
        mallory
            .get(&format!(
                "/v1/namespaces/{mallory_home}/manifest?path=mine.txt"
            ))
            .await
            .0,
        404
    );
    // And they may leave.
    let resp = victim
        .http
        .delete(format!(
            "{}/v1/namespaces/{mallory_home}/members/victim",
            app.url
        ))
        .bearer_auth(&victim.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (_, list) = victim.get("/v1/namespaces").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn sharing_says_the_same_for_users_who_do_not_exist() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("alice", None).await;
    app.user("bob", None).await;
    let alice = Api::new(&app.url, &token);
    let answer = |user: &'static str| {
        let alice = &alice;
        async move {
            let resp = alice
                .http
                .put(format!("{}/v1/namespaces/{ns}/members/{user}", alice.url))
                .bearer_auth(&alice.token)
                .json(&json!({"role": "viewer"}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.bytes().await.unwrap())
        }
    };
    assert_eq!(answer("bob").await, answer("no-such-user").await);
}

#[tokio::test]
async fn a_folder_keeps_an_owner_and_names_cannot_hide_text() {
    let app = TestApp::spawn().await;
    let (alice_token, _) = app.user("alice", None).await;
    let (bob_token, _) = app.user("bob", None).await;
    let alice = Api::new(&app.url, &alice_token);
    let bob = Api::new(&app.url, &bob_token);
    let (_, v) = alice.post("/v1/namespaces", &json!({"name": "team"})).await;
    let team = v["id"].as_u64().unwrap();
    // The only owner cannot demote or remove themselves.
    assert_eq!(share(&alice, team, "alice", "editor").await, 403);
    let resp = alice
        .http
        .delete(format!("{}/v1/namespaces/{team}/members/alice", app.url))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // With a second owner, they can.
    assert_eq!(share(&alice, team, "bob", "owner").await, 202);
    accept(&bob, team).await;
    assert_eq!(share(&alice, team, "alice", "editor").await, 204);
    assert_eq!(
        share(&bob, team, "bob", "viewer").await,
        403,
        "bob is the last owner now"
    );

    for name in [
        "evil\u{202E}txt.exe",
        "\u{FEFF}team",
        "zero\u{200B}width",
        " padded",
    ] {
        let (status, v) = alice.post("/v1/namespaces", &json!({"name": name})).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (400, Some("invalid_request")),
            "{name:?} {v}"
        );
    }
    let login = reqwest::Client::new()
        .post(format!("{}/v1/login", app.url))
        .json(&json!({"user": "alice", "password": "x", "device_name": "lap\u{202E}pot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 400);
}

async fn status_of(api: &Api, path: &str) -> (u16, Value) {
    api.get(path).await
}

#[tokio::test]
async fn devices_are_listed_and_a_signed_out_device_is_refused_and_its_long_poll_ends() {
    let app = TestApp::spawn().await;
    let (laptop_token, ns) = app.user("ada", None).await;
    let phone_token = app.device("ada", "phone").await;
    let laptop = Api::new(&app.url, &laptop_token);
    let phone = Api::new(&app.url, &phone_token);
    let (status, devices) = status_of(&laptop, "/v1/devices").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["test-device", "phone"]);
    assert_eq!(devices[0]["current"], true);
    assert!(
        devices[0]["last_seen_at_ms"].as_i64().is_some(),
        "{devices}"
    );
    let phone_id = devices[1]["id"].as_u64().unwrap();

    // The phone waits on the changes feed; the laptop signs it out.
    let (_, page) = phone.get(&format!("/v1/namespaces/{ns}/changes")).await;
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    let waiting = {
        let phone = Api::new(&app.url, &phone_token);
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            let r = phone
                .get(&format!(
                    "/v1/namespaces/{ns}/changes/wait?cursor={cursor}&timeout=60"
                ))
                .await;
            (r, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = laptop
        .http
        .delete(format!("{}/v1/devices/{phone_id}", app.url))
        .bearer_auth(&laptop.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let ((status, v), took) = waiting.await.unwrap();
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the long-poll ended after {took:?}"
    );
    let (status, v) = phone.get("/v1/namespaces").await;
    assert_eq!(status, 401);
    assert!(v["detail"].as_str().unwrap().contains("signed out"), "{v}");
    // Another user's device cannot be signed out (nor seen).
    let (other, _) = app.user("bob", None).await;
    let bob = Api::new(&app.url, &other);
    let resp = bob
        .http
        .delete(format!("{}/v1/devices/1", app.url))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Logout signs the asking device out.
    let (status, _) = laptop.post("/v1/logout", &json!({})).await;
    assert_eq!(status, 204);
    assert_eq!(laptop.get("/v1/namespaces").await.0, 401);
    // Each 401 says why; none says more than that.
    let (_, v) = Api::new(&app.url, "dl_notatoken")
        .get("/v1/namespaces")
        .await;
    assert_eq!(v["detail"], "unknown token");
    let (_, v) = Api::new(&app.url, "garbage").get("/v1/namespaces").await;
    assert_eq!(v["detail"], "malformed token");
}

#[tokio::test]
async fn a_token_expires_unused_and_lives_on_while_used() {
    let app = TestApp::spawn_configured(
        TestDb::postgres().await,
        AppOptions {
            token_ttl: Some(Duration::from_secs(2)),
            ..AppOptions::default()
        },
    )
    .await;
    let (idle_token, _) = app.user("ada", None).await;
    let (busy_token, _) = app.user("bob", None).await;
    let idle = Api::new(&app.url, &idle_token);
    let busy = Api::new(&app.url, &busy_token);
    for _ in 0..8 {
        assert_eq!(
            busy.get("/v1/namespaces").await.0,
            200,
            "an active device renews"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let (status, v) = idle.get("/v1/namespaces").await;
    assert_eq!(status, 401, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("expired"), "{v}");
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn login(
    c: &reqwest::Client,
    url: &str,
    user: &str,
    password: &str,
) -> (u16, Option<String>) {
    let resp = c
        .post(format!("{url}/v1/login"))
        .json(&json!({"user": user, "password": password, "device_name": "d"}))
        .send()
        .await
        .unwrap();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), retry)
}

#[tokio::test]
async fn sign_ins_are_limited_per_address_and_per_user_and_bounded_in_memory() {
    let app = TestApp::spawn().await;
    app.user("ada", Some("right password")).await;
    app.user("bob", Some("bob's password")).await;
    // A guesser from one address: a few tries, then 429 with Retry-After.
    let guesser = client_from("127.0.0.2");
    let mut refused = 0;
    for _ in 0..30 {
        match login(&guesser, &app.url, "ada", "guess").await {
            (401, _) => {}
            (429, Some(_)) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(refused >= 15, "only {refused} of 30 guesses refused");
    // Someone else, from another address, signs in meanwhile.
    assert_eq!(
        login(&client_from("127.0.0.3"), &app.url, "bob", "bob's password")
            .await
            .0,
        200
    );
    // Guesses at one user spread over many addresses meet the user's limit.
    let mut refused = 0;
    for i in 0..30 {
        let c = client_from(&format!("127.0.1.{}", i + 1));
        if login(&c, &app.url, "ada", "guess").await.0 == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 10, "only {refused} of 30 spread guesses refused");

    // 128 sign-ins at once from 128 addresses: each is answered, soon,
    // and the password checks run a few at a time.
    let rss = || {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        let l = s
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .to_owned();
        l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
    };
    let before = rss();
    let t = std::time::Instant::now();
    let all: Vec<_> = (0..128)
        .map(|i| {
            let url = app.url.clone();
            tokio::spawn(async move {
                let c = client_from(&format!("127.0.2.{}", i + 1));
                login(&c, &url, "bob", "bob's password").await.0
            })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    for a in all {
        *codes.entry(a.await.unwrap()).or_insert(0) += 1;
    }
    let took = t.elapsed();
    let grew = rss().saturating_sub(before);
    eprintln!("128 concurrent sign-ins: {codes:?} in {took:?}, the server grew {grew} MiB");
    assert!(codes.keys().all(|c| [200, 429].contains(c)), "{codes:?}");
    assert!(codes.get(&200).copied().unwrap_or(0) >= 2, "{codes:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(grew < 400, "the server grew {grew} MiB");
}

#[tokio::test]
async fn one_device_cannot_hold_every_long_poll() {
    let app = TestApp::spawn().await;
    let (greedy_token, ns) = app.user("ada", None).await;
    let other_token = app.device("ada", "desk").await;
    let greedy = Api::new(&app.url, &greedy_token);
    let (_, page) = greedy.get(&format!("/v1/namespaces/{ns}/changes")).await;
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    let path = format!("/v1/namespaces/{ns}/changes/wait?cursor={cursor}&timeout=30");
    let mut held = Vec::new();
    for _ in 0..16 {
        let (url, token, path) = (app.url.clone(), greedy_token.clone(), path.clone());
        held.push(tokio::spawn(async move {
            Api::new(&url, &token).get(&path).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, v) = greedy.get(&path).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (429, Some("rate_limited")),
        "{v}"
    );
    // Another device of the same user still gets its long-poll, and it
    // returns when something changes.
    let other = Api::new(&app.url, &other_token);
    let waiting = {
        let (other, path) = (Api::new(&app.url, &other_token), path.clone());
        tokio::spawn(async move { other.get(&path).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    upload(&other, ns, &[prepare("x.txt", b"x", None, "x-1")]).await;
    let (status, v) = waiting.await.unwrap();
    assert_eq!(status, 200, "{v}");
    for h in held {
        h.abort();
    }
}

#[tokio::test]
async fn metrics_ask_for_their_token() {
    let app = TestApp::spawn_configured(
        TestDb::postgres().await,
        AppOptions {
            metrics_token: Some("scrape-secret".into()),
            ..AppOptions::default()
        },
    )
    .await;
    let c = reqwest::Client::new();
    let url = format!("{}/metrics", app.url);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(&url)
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("driftless_shed_total"));
}

/// One user's requests that never finish (a body that trickles) hold only
/// that user's slots: their next request gets 429 with Retry-After, another
/// user is served as usual, and the user is served again once theirs end.
#[tokio::test]
async fn one_user_cannot_hold_every_request_slot() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_configured(
        TestDb::postgres().await,
        AppOptions {
            max_in_flight_per_user: 4,
            ..AppOptions::default()
        },
    )
    .await;
    let (greedy_token, ns) = app.user("hog", None).await;
    let (other_token, _) = app.user("fair", None).await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut stuck = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /v1/namespaces/{ns}/uploads HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {greedy_token}\r\n\
             content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"files\": ["
        );
        s.write_all(head.as_bytes()).await.unwrap();
        stuck.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let greedy = Api::new(&app.url, &greedy_token);
    let resp = greedy
        .http
        .get(format!("{}/v1/namespaces", app.url))
        .bearer_auth(&greedy_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "rate_limited", "{v}");
    let other = Api::new(&app.url, &other_token);
    assert_eq!(other.get("/v1/namespaces").await.0, 200);
    drop(stuck);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while greedy.get("/v1/namespaces").await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "slots never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
