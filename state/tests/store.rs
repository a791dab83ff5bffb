//! The state seam's behaviour, checked against both implementations: a real
//! etcd (Debian's `etcd-server`, started on free loopback ports) and the
//! in-memory store. Then what is built on it — sessions, membership,
//! claims — including across an etcd restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use herd_state::testing::EtcdServer;
use herd_state::{
    Claim, Claims, Created, EtcdStore, EventKind, Keys, Membership, MemoryStore, Session,
    SessionStatus, StateError, StateStore, WorkerRecord, encode,
};
use tokio::sync::watch;

/// Polls `check` until it holds, for at most `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn etcd_store(etcd: &EtcdServer) -> Arc<dyn StateStore> {
    Arc::new(EtcdStore::connect(&[etcd.url()]).await.unwrap())
}

async fn keys_under(store: &dyn StateStore, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

/// Runs `scenario` against etcd and against memory.
async fn both<F, Fut>(scenario: F)
where
    F: Fn(Arc<dyn StateStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let etcd = EtcdServer::start();
    scenario(etcd_store(&etcd).await).await;
    scenario(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn leases_expire_with_their_keys_unless_renewed() {
    both(|store| async move {
        let lease = store.grant(Duration::from_secs(2)).await.unwrap();
        store.put("/t/a", b"1".to_vec(), Some(lease)).await.unwrap();
        store.put("/t/b", b"2".to_vec(), None).await.unwrap();
        assert!(store.keep_alive(lease).await.unwrap());
        assert_eq!(keys_under(&*store, "/t/").await, ["/t/a", "/t/b"]);
        eventually(6, "the unrenewed lease's key expires", || {
            let store = store.clone();
            async move { keys_under(&*store, "/t/").await == ["/t/b"] }
        })
        .await;
        assert!(!store.keep_alive(lease).await.unwrap());
        assert!(matches!(
            store.put("/t/c", b"3".to_vec(), Some(lease)).await,
            Err(StateError::LeaseNotFound(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn a_watch_from_a_listing_sees_every_later_change_in_order() {
    both(|store| async move {
        store.put("/w/a", b"1".to_vec(), None).await.unwrap();
        let listing = store.list("/w/").await.unwrap();
        assert_eq!(listing.items.len(), 1);
        // Changes between the listing and the watch are not missed.
        store.put("/w/b", b"2".to_vec(), None).await.unwrap();
        store.delete("/w/a").await.unwrap();
        store.put("/other", b"x".to_vec(), None).await.unwrap();
        let mut events = store.watch("/w/", listing.revision + 1).await.unwrap();
        let lease = store.grant(Duration::from_secs(30)).await.unwrap();
        store.put("/w/c", b"3".to_vec(), Some(lease)).await.unwrap();
        store.revoke(lease).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let batch = tokio::time::timeout(Duration::from_secs(5), events.next())
                .await
                .expect("events in time")
                .expect("the watch is open")
                .unwrap();
            seen.extend(batch.into_iter().map(|e| (e.kind, e.key)));
        }
        assert_eq!(
            seen,
            [
                (EventKind::Put, "/w/b".to_owned()),
                (EventKind::Delete, "/w/a".to_owned()),
                (EventKind::Put, "/w/c".to_owned()),
                (EventKind::Delete, "/w/c".to_owned()),
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn create_is_exclusive_and_delete_at_deletes_only_ones_own_value() {
    both(|store| async move {
        let Created::Created(revision) =
            store.create("/c/k", b"mine".to_vec(), None).await.unwrap()
        else {
            panic!("the key was absent");
        };
        match store
            .create("/c/k", b"theirs".to_vec(), None)
            .await
            .unwrap()
        {
            Created::Exists(held) => {
                assert_eq!(held.value, b"mine");
                assert_eq!(held.mod_revision, revision);
            }
            Created::Created(_) => panic!("created twice"),
        }
        assert!(!store.delete_at("/c/k", revision + 100).await.unwrap());
        assert!(store.delete_at("/c/k", revision).await.unwrap());
        assert!(matches!(
            store.create("/c/k", b"next".to_vec(), None).await.unwrap(),
            Created::Created(_)
        ));
    })
    .await;
}

#[tokio::test]
async fn a_session_writes_its_keys_again_after_losing_its_lease() {
    both(|store| async move {
        let session = Session::start(store.clone(), Duration::from_secs(3));
        let mut status = session.status();
        status
            .wait_for(|s| matches!(s, SessionStatus::Live(_)))
            .await
            .unwrap();
        session.put("/s/me", b"here".to_vec()).await.unwrap();
        assert_eq!(keys_under(&*store, "/s/").await, ["/s/me"]);
        // Someone revokes it (or it expired during an outage).
        let lease = session.lease().await.unwrap();
        store.revoke(lease).await.unwrap();
        assert!(keys_under(&*store, "/s/").await.is_empty());
        eventually(5, "the session registers again", || {
            let store = store.clone();
            async move { keys_under(&*store, "/s/").await == ["/s/me"] }
        })
        .await;
        assert_ne!(session.lease().await, Some(lease));
        session.close().await.unwrap();
        assert!(keys_under(&*store, "/s/").await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn one_claim_per_model_until_it_is_released() {
    both(|store| async move {
        let keys = Keys::new("/claims-test");
        let one = Arc::new(Session::start(store.clone(), Duration::from_secs(5)));
        let two = Arc::new(Session::start(store.clone(), Duration::from_secs(5)));
        for session in [&one, &two] {
            session
                .status()
                .wait_for(|s| matches!(s, SessionStatus::Live(_)))
                .await
                .unwrap();
        }
        let g1 = Claims::new(store.clone(), keys.clone(), one.clone(), "g1");
        let g2 = Claims::new(store.clone(), keys.clone(), two.clone(), "g2");
        let Claim::Won(guard) = g1.claim("sha256:m", "w1").await.unwrap() else {
            panic!("the first claim wins");
        };
        match g2.claim("sha256:m", "w2").await.unwrap() {
            Claim::Held(holder) => assert_eq!((&*holder.gateway, &*holder.worker), ("g1", "w1")),
            Claim::Won(_) => panic!("two claims on one model"),
        }
        assert!(matches!(
            g2.claim("sha256:other", "w2").await.unwrap(),
            Claim::Won(_)
        ));
        guard.release().await;
        assert!(matches!(
            g2.claim("sha256:m", "w2").await.unwrap(),
            Claim::Won(_)
        ));
    })
    .await;
}

#[tokio::test]
async fn a_claim_ends_with_its_gateways_lease() {
    both(|store| async move {
        let keys = Keys::new("/claims-lease");
        let dying = Arc::new(Session::start(store.clone(), Duration::from_secs(2)));
        dying
            .status()
            .wait_for(|s| matches!(s, SessionStatus::Live(_)))
            .await
            .unwrap();
        let claims = Claims::new(store.clone(), keys.clone(), dying.clone(), "g1");
        let Claim::Won(guard) = claims.claim("m", "w").await.unwrap() else {
            panic!("won");
        };
        // The gateway dies: no release, no more renewals.
        std::mem::forget(guard);
        drop(claims);
        let lease = dying.lease().await.unwrap();
        drop(Arc::try_unwrap(dying).unwrap());
        eventually(6, "the claim expires with the lease", || {
            let store = store.clone();
            let key = keys.placement("m");
            async move { keys_under(&*store, &key).await.is_empty() }
        })
        .await;
        assert!(!store.keep_alive(lease).await.unwrap());
    })
    .await;
}

fn worker(id: &str) -> Vec<u8> {
    encode(&WorkerRecord {
        id: id.into(),
        endpoint: format!("http://127.0.0.1:1/{id}"),
        ..WorkerRecord::default()
    })
}

fn ids(membership: &Membership) -> Vec<String> {
    membership.current().workers.keys().cloned().collect()
}

#[tokio::test]
async fn membership_follows_joins_and_leaves() {
    both(|store| async move {
        let keys = Keys::default();
        store
            .put(&keys.worker("a"), worker("a"), None)
            .await
            .unwrap();
        // Not a worker record: ignored.
        store
            .put(&keys.worker("junk"), b"{".to_vec(), None)
            .await
            .unwrap();
        let (_stop, stopped) = watch::channel(false);
        let (membership, _task) = Membership::follow(store.clone(), keys.clone(), stopped);
        assert!(membership.synced(Duration::from_secs(5)).await);
        assert_eq!(ids(&membership), ["a"]);
        let lease = store.grant(Duration::from_secs(30)).await.unwrap();
        store
            .put(&keys.worker("b"), worker("b"), Some(lease))
            .await
            .unwrap();
        let mut changes = membership.changes();
        tokio::time::timeout(
            Duration::from_secs(5),
            changes.wait_for(|m| m.workers.len() == 2),
        )
        .await
        .unwrap()
        .unwrap();
        store.revoke(lease).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            changes.wait_for(|m| m.workers.len() == 1),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(ids(&membership), ["a"]);
        assert!(membership.current().connected);
    })
    .await;
}

#[tokio::test]
async fn across_an_etcd_restart_the_view_stays_and_then_catches_up() {
    let mut etcd = EtcdServer::start();
    let store = etcd_store(&etcd).await;
    let keys = Keys::default();
    let session = Session::start(store.clone(), Duration::from_secs(3));
    session.put(&keys.worker("a"), worker("a")).await.ok();
    let (_stop, stopped) = watch::channel(false);
    let (membership, _task) = Membership::follow(store.clone(), keys.clone(), stopped);
    let mut changes = membership.changes();
    tokio::time::timeout(
        Duration::from_secs(5),
        changes.wait_for(|m| m.workers.contains_key("a")),
    )
    .await
    .unwrap()
    .unwrap();

    etcd.stop();
    tokio::time::timeout(Duration::from_secs(10), changes.wait_for(|m| !m.connected))
        .await
        .expect("the follower notices")
        .unwrap();
    assert_eq!(ids(&membership), ["a"], "the last view stays");
    let mut status = session.status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| *s == SessionStatus::Unreachable),
    )
    .await
    .expect("the session notices")
    .unwrap();
    // Longer than the lease's TTL.
    tokio::time::sleep(Duration::from_secs(4)).await;

    etcd.restart();
    // A worker that joins after the outage is seen, and the session's
    // worker is there (renewed, or registered again).
    let other = Session::start(store.clone(), Duration::from_secs(3));
    eventually(15, "the joiner is written", || {
        let other = &other;
        let key = keys.worker("b");
        async move { other.put(&key, worker("b")).await.is_ok() }
    })
    .await;
    tokio::time::timeout(
        Duration::from_secs(15),
        changes.wait_for(|m| m.connected && m.workers.len() == 2),
    )
    .await
    .expect("the view catches up")
    .unwrap();
    assert_eq!(ids(&membership), ["a", "b"]);
    status
        .wait_for(|s| matches!(s, SessionStatus::Live(_)))
        .await
        .unwrap();
}
