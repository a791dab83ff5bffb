use http::{HeaderMap, HeaderValue, StatusCode};

use super::*;

fn headers(name: &'static str, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(name, HeaderValue::from_str(value).unwrap());
    h
}

fn bearer(key: &str) -> HeaderMap {
    headers("authorization", &format!("Bearer {key}"))
}

/// A keys file with an admin key and a user key limited to `ai/smollm2`.
fn setup() -> (tempfile::TempDir, PathBuf, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    let admin = keys::generate();
    let user = keys::generate();
    let limits = Limits {
        requests_per_minute: Some(2),
        ..Limits::default()
    };
    KeysFile {
        keys: vec![
            KeyRecord::new("ops", Role::Admin, &admin, vec![], Limits::default()),
            KeyRecord::new(
                "team-a",
                Role::User,
                &user,
                vec!["ai/smollm2".into()],
                limits,
            ),
        ],
    }
    .save(&path)
    .unwrap();
    (dir, path, admin, user)
}

#[test]
fn keys_are_required_except_on_probes() {
    let (_dir, path, admin, user) = setup();
    let auth = Auth::from_file(&path, "docker.io").unwrap();
    let chat = Route::ChatCompletions;
    let err = auth.check(&chat, &HeaderMap::new()).unwrap_err();
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(err.body()["error"]["code"], "invalid_api_key");
    let err = auth.check(&chat, &bearer("sk-herd-wrong")).unwrap_err();
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
    assert!(
        !err.to_string().contains("wrong"),
        "never echo a key: {err}"
    );
    assert_eq!(
        auth.check(&chat, &bearer(&user)).unwrap().unwrap().name(),
        "team-a"
    );
    assert_eq!(
        auth.check(&chat, &headers("x-api-key", &admin))
            .unwrap()
            .unwrap()
            .name(),
        "ops"
    );
    assert_eq!(
        auth.check(
            &chat,
            &headers("authorization", &format!("bearer  {user} "))
        )
        .unwrap()
        .unwrap()
        .name(),
        "team-a"
    );
    for public in [Route::Health, Route::Ready] {
        assert_eq!(auth.check(&public, &HeaderMap::new()).unwrap(), None);
    }
    assert_eq!(Auth::off().check(&chat, &HeaderMap::new()).unwrap(), None);
}

#[test]
fn admin_routes_need_the_admin_role() {
    let (_dir, path, admin, user) = setup();
    let auth = Auth::from_file(&path, "docker.io").unwrap();
    for route in [
        Route::Unload,
        Route::Store(StoreRoute::Create),
        Route::Store(StoreRoute::Delete("m".into())),
        Route::Store(StoreRoute::Push("m".into())),
        Route::Store(StoreRoute::Tag("m".into())),
    ] {
        let err = auth.check(&route, &bearer(&user)).unwrap_err();
        assert_eq!(err.status(), StatusCode::FORBIDDEN, "{route:?}");
        assert_eq!(err.body()["error"]["code"], "permission_denied");
        assert!(auth.check(&route, &bearer(&admin)).unwrap().is_some());
    }
    assert!(
        auth.check(&Route::Store(StoreRoute::List), &bearer(&user))
            .is_ok()
    );
}

#[test]
fn allow_lists_match_names_as_given_and_normalised() {
    let (_dir, path, admin, user) = setup();
    let auth = Auth::from_file(&path, "docker.io").unwrap();
    let user = auth.check(&Route::Models, &bearer(&user)).unwrap().unwrap();
    for name in [
        "ai/smollm2",
        "ai/smollm2:latest",
        "docker.io/ai/smollm2",
        "smollm2",
    ] {
        assert!(user.may_use(name, "docker.io"), "{name}");
    }
    for name in ["ai/smollm2:other", "ai/qwen3", "other/smollm2", "*"] {
        assert!(!user.may_use(name, "docker.io"), "{name}");
    }
    let admin = auth
        .check(&Route::Models, &bearer(&admin))
        .unwrap()
        .unwrap();
    assert!(admin.may_use("anything/at:all", "docker.io"));
}

#[test]
fn limits_give_429_with_retry_after_and_survive_a_reload() {
    let (_dir, path, admin, user) = setup();
    let auth = Auth::from_file(&path, "docker.io").unwrap();
    let p = auth.check(&Route::Models, &bearer(&user)).unwrap().unwrap();
    drop(p.admit().unwrap());
    drop(p.admit().unwrap());
    let err = p.admit().unwrap_err();
    assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(err.body()["error"]["code"], "rate_limit_exceeded");
    assert!(err.retry_after().unwrap() > Duration::from_secs(50));

    // Rewrite the file (revoke the admin key): the user's count stays.
    let mut file = KeysFile::load(&path).unwrap();
    file.keys.retain(|k| k.name != "ops");
    std::thread::sleep(Duration::from_millis(20));
    file.save(&path).unwrap();
    // Make sure the modification time differs even on coarse clocks.
    let later = SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(auth.reload_if_changed());
    assert!(!auth.reload_if_changed(), "unchanged: not read again");
    let err = auth.check(&Route::Models, &bearer(&admin)).unwrap_err();
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED, "revoked");
    let p = auth.check(&Route::Models, &bearer(&user)).unwrap().unwrap();
    assert_eq!(
        p.admit().unwrap_err().status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // A broken file keeps the keys in force.
    std::fs::write(&path, "[[keys]]\nname = ").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later + Duration::from_secs(5))
        .unwrap();
    assert!(!auth.reload_if_changed());
    assert!(auth.check(&Route::Models, &bearer(&user)).is_ok());
}

#[test]
fn an_empty_keys_file_lets_nothing_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    KeysFile::default().save(&path).unwrap();
    let auth = Auth::from_file(&path, "docker.io").unwrap();
    assert!(auth.is_on());
    let err = auth
        .check(&Route::ChatCompletions, &bearer(&keys::generate()))
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
    assert!(Auth::from_file(&dir.path().join("missing.toml"), "docker.io").is_err());
}

#[tokio::test]
async fn keys_in_the_state_store_are_followed_and_a_bad_record_is_left_out() {
    let store: Arc<dyn herd_state::StateStore> = Arc::new(herd_state::MemoryStore::new());
    let names = herd_state::Keys::new("/pool/");
    let auth = Auth::from_etcd("/pool/", "docker.io");
    let (_stop, shutdown) = watch::channel(false);
    let chat = Route::ChatCompletions;
    let key = keys::generate();
    let passes = |auth: &Auth, key: &str| auth.check(&chat, &bearer(key)).is_ok();
    // Before any listing: nothing passes.
    assert!(!passes(&auth, &key));

    let record = KeyRecord::new("team-a", Role::User, &key, vec![], Limits::default());
    store
        .put(&names.api_key("team-a"), etcd::encode(&record), None)
        .await
        .unwrap();
    tokio::spawn(auth.clone().follow(store.clone(), shutdown));
    // The listing.
    let listed = tokio::time::timeout(Duration::from_secs(2), async {
        while !passes(&auth, &key) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(listed.is_ok(), "a listed key works");

    // A record that does not parse is left out; the others stay.
    store
        .put(&names.api_key("broken"), b"{not json".to_vec(), None)
        .await
        .unwrap();
    let other = keys::generate();
    let second = KeyRecord::new("team-b", Role::Admin, &other, vec![], Limits::default());
    store
        .put(&names.api_key("team-b"), etcd::encode(&second), None)
        .await
        .unwrap();
    let watched = tokio::time::timeout(Duration::from_secs(2), async {
        while !passes(&auth, &other) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(watched.is_ok(), "a key put later works");
    assert!(passes(&auth, &key), "the first key stays");
    // A field from a newer version is ignored, as by every reader.
    let mut newer = serde_json::to_value(&second).unwrap();
    newer["added_later"] = serde_json::json!(true);
    let decoded = etcd::decode("k", newer.to_string().as_bytes()).unwrap();
    assert_eq!(decoded, second);

    // Deleted: refused.
    store.delete(&names.api_key("team-a")).await.unwrap();
    let revoked = tokio::time::timeout(Duration::from_secs(2), async {
        while passes(&auth, &key) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(revoked.is_ok(), "a deleted key is refused");
    assert!(passes(&auth, &other));
}
