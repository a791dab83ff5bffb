//! The store against a real OCI registry (Debian's `docker-registry` on a
//! free loopback port) with the real SmolLM2 GGUF.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use herd_store::artifact::{CONFIG_MEDIA_TYPE, GGUF_MEDIA_TYPE, LICENSE_MEDIA_TYPE};
use herd_store::testing::{
    CuttingProxy, TEST_PASSWORD, TEST_USER, TestRegistry, push_by_hand, test_model_path,
};
use herd_store::{
    Credentials, ErrorKind, PackageRequest, Progress, ProgressFn, Registry, RegistryOptions, Store,
    StoreError, sha256_digest,
};

fn store(dir: &Path) -> Store {
    Store::open(dir, "docker.io").unwrap()
}

fn registry() -> Registry {
    Registry::new(RegistryOptions::default())
}

fn recorder() -> (ProgressFn, Arc<Mutex<Vec<Progress>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (Arc::new(move |p| sink.lock().unwrap().push(p)), seen)
}

fn quiet() -> ProgressFn {
    Arc::new(|_| {})
}

/// Files under `dir` (recursively), for "the store did not change".
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn package_smollm2(store: &Store, tag: &str) -> herd_store::StoredModel {
    let license = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(license.path(), "Apache-2.0 (test)").unwrap();
    store
        .package(
            &PackageRequest {
                gguf: test_model_path(),
                licenses: vec![license.path().to_owned()],
                chat_template: None,
                context_size: None,
                created_unix: Some(1_790_000_000),
            },
            &store.parse_ref(tag).unwrap(),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_push_remove_pull_by_tag_and_by_digest() {
    let registry_process = TestRegistry::start();
    let host = registry_process.host();
    let dir = tempfile::tempdir().unwrap();
    let local = store(dir.path());
    let tag = format!("{host}/test/smollm2:v1");
    let packaged = package_smollm2(&local, &tag);

    // The config is filled from the GGUF, as Docker's packager does.
    let config = &packaged.config.config;
    assert_eq!(config.format, "gguf");
    assert_eq!(config.architecture, "llama");
    assert_eq!(config.quantization, "MOSTLY_Q4_1");
    assert!(config.parameters.ends_with(" M"), "{}", config.parameters);
    assert!(config.size.ends_with(" MiB"), "{}", config.size);
    assert_eq!(config.context_size, Some(8192));
    assert_eq!(config.gguf["general.architecture"], "llama");
    let layers = &packaged.manifest.layers;
    assert_eq!(layers[0].media_type, GGUF_MEDIA_TYPE);
    assert_eq!(layers[1].media_type, LICENSE_MEDIA_TYPE);
    assert_eq!(
        packaged.config.rootfs.diff_ids,
        layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()
    );
    // The GGUF is in the store under its digest, byte for byte.
    let gguf = local.gguf_path(&packaged).unwrap();
    assert_eq!(
        std::fs::metadata(&gguf).unwrap().len(),
        std::fs::metadata(test_model_path()).unwrap().len()
    );
    assert_eq!(
        packaged.id,
        sha256_digest(&local.manifest_bytes(&packaged.id).unwrap())
    );

    // Push, with progress up to the whole size.
    let (progress, seen) = recorder();
    let reference = local.parse_ref(&tag).unwrap();
    registry()
        .push(&local, &packaged, &reference, progress)
        .await
        .unwrap();
    let total = packaged.manifest.total_size();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().all(|p| p.total == total && p.current <= p.size));
    for blob in packaged.manifest.blobs() {
        assert!(
            seen.iter()
                .any(|p| p.digest == blob.digest && p.current == blob.size)
        );
    }

    // Remove locally: nothing is left of it, nor of failed pulls — except
    // a partial download a pull is writing (it holds the file's lock).
    let blobs = gguf.parent().unwrap().to_owned();
    let left = blobs.join(format!("{}.partial", "a".repeat(64)));
    let busy = blobs.join(format!("{}.partial", "b".repeat(64)));
    std::fs::write(&left, b"half").unwrap();
    std::fs::write(&busy, b"half").unwrap();
    let writer = std::fs::File::open(&busy).unwrap();
    writer.lock().unwrap();
    let removal = local.remove(&tag, false).unwrap();
    assert!(!left.exists(), "a failed pull's partial file is removed");
    assert!(busy.exists(), "a pull in progress keeps its partial file");
    drop(writer);
    assert_eq!(removal.deleted.as_deref(), Some(packaged.id.as_str()));
    assert!(local.list().unwrap().is_empty());
    assert!(!gguf.exists(), "the GGUF blob is collected");
    assert!(matches!(local.resolve(&tag), Err(StoreError::NotFound(_))));

    // Pull by tag: the same model ID (the manifest is kept byte for byte).
    let pulled = registry().pull(&local, &reference, quiet()).await.unwrap();
    assert!(!pulled.cached);
    assert_eq!(pulled.transferred, total);
    assert_eq!(pulled.model.id, packaged.id);
    assert_eq!(pulled.model.tags, vec![reference.full()]);
    assert_eq!(local.gguf_path(&pulled.model).unwrap(), gguf);

    // Again: nothing crosses the network; a second tag only adds the tag.
    let again = registry().pull(&local, &reference, quiet()).await.unwrap();
    assert!(again.cached);
    assert_eq!(again.transferred, 0);

    // By digest, into another store.
    let other_dir = tempfile::tempdir().unwrap();
    let other = store(other_dir.path());
    let by_digest = reference.with_digest(&packaged.id);
    let pulled = registry().pull(&other, &by_digest, quiet()).await.unwrap();
    assert_eq!(pulled.model.id, packaged.id);
    assert!(pulled.model.tags.is_empty(), "a digest pull adds no tag");
    assert_eq!(other.resolve(&packaged.id).unwrap().id, packaged.id);
    assert_eq!(
        other.resolve(pulled.model.short_id()).unwrap().id,
        packaged.id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_pushed_by_another_client_is_pulled() {
    let registry_process = TestRegistry::start();
    let host = registry_process.host();
    let gguf = std::fs::read(test_model_path()).unwrap();
    // A config as another tool might write it: different key order, extra
    // fields, no `gguf` map.
    let config = br#"{"rootfs":{"diff_ids":[],"type":"rootfs"},"config":{"size":"93 MiB","format":"gguf","architecture":"llama","extra":true},"descriptor":{"created":"2025-04-01T10:00:00.123Z"}}"#;
    let id = push_by_hand(
        &host,
        "other/smol",
        "hand",
        (CONFIG_MEDIA_TYPE, config),
        &[(GGUF_MEDIA_TYPE, &gguf), (LICENSE_MEDIA_TYPE, b"MIT")],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let local = store(dir.path());
    let reference = local.parse_ref(&format!("{host}/other/smol:hand")).unwrap();
    let pulled = registry().pull(&local, &reference, quiet()).await.unwrap();
    assert_eq!(pulled.model.id, id);
    assert_eq!(pulled.model.config.created_unix(), 1_743_501_600);
    let path = local.gguf_path(&pulled.model).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), gguf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_blob_fails_the_pull_and_leaves_the_store_unchanged() {
    let registry_process = TestRegistry::start();
    let host = registry_process.host();
    let dir = tempfile::tempdir().unwrap();
    let local = store(dir.path());
    let tag = format!("{host}/test/tampered:v1");
    let packaged = package_smollm2(&local, &tag);
    let reference = local.parse_ref(&tag).unwrap();
    registry()
        .push(&local, &packaged, &reference, quiet())
        .await
        .unwrap();
    local.remove(&tag, false).unwrap();
    let before = files(dir.path());

    // Flip one byte in the middle of the GGUF as the registry stores it.
    let blob = registry_process.blob_file(&packaged.manifest.layers[0].digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();

    let err = registry()
        .pull(&local, &reference, quiet())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DigestMismatch { .. }),
        "expected a digest error, got {err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Upstream);
    assert!(local.list().unwrap().is_empty());
    // No blob, no index change, nothing of the tampered blob. A sibling
    // blob whose download the failure cancelled may keep its `.partial`
    // file for a later pull to resume (it is verified when completed).
    let gguf = &packaged.manifest.layers[0].digest["sha256:".len()..];
    let after: Vec<String> = files(dir.path())
        .into_iter()
        .filter(|f| !f.ends_with(".partial") || f.contains(gguf))
        .collect();
    assert_eq!(after, before, "no blob, index change or tampered partial");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_cut_halfway_resumes_where_it_stopped() {
    let registry_process = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let local = store(dir.path());
    // Push straight to the registry, pull through a proxy that cuts the
    // transfer after 40 MB.
    let direct = format!("{}/test/resume:v1", registry_process.host());
    let packaged = package_smollm2(&local, &direct);
    registry()
        .push(
            &local,
            &packaged,
            &local.parse_ref(&direct).unwrap(),
            quiet(),
        )
        .await
        .unwrap();
    local.remove(&direct, true).unwrap();
    let proxy = CuttingProxy::start(registry_process.addr(), 40_000_000).await;
    let via_proxy = local
        .parse_ref(&format!("{}/test/resume:v1", proxy.host()))
        .unwrap();

    let err = registry()
        .pull(&local, &via_proxy, quiet())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Upstream, "{err:?}");
    assert!(local.list().unwrap().is_empty(), "no half model is visible");
    let gguf = &packaged.manifest.layers[0];
    let partial = dir.path().join("blobs/sha256").join(format!(
        "{}.partial",
        gguf.digest.trim_start_matches("sha256:")
    ));
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < gguf.size, "kept {kept} of {}", gguf.size);

    proxy.unlimit();
    let pulled = registry().pull(&local, &via_proxy, quiet()).await.unwrap();
    assert_eq!(pulled.model.id, packaged.id);
    assert!(
        pulled.transferred < packaged.manifest.total_size(),
        "resumed: {} of {} bytes transferred",
        pulled.transferred,
        packaged.manifest.total_size()
    );
    // What the first attempt kept was not fetched again.
    assert!(pulled.transferred <= packaged.manifest.total_size() - kept);
    assert!(!partial.exists());
    let stored = std::fs::read(local.gguf_path(&pulled.model).unwrap()).unwrap();
    assert_eq!(sha256_digest(&stored), gguf.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_media_type_unknown_model_and_bad_reference_are_told_apart() {
    let registry_process = TestRegistry::start();
    let host = registry_process.host();
    push_by_hand(
        &host,
        "test/image",
        "v1",
        ("application/vnd.oci.image.config.v1+json", b"{}"),
        &[("application/vnd.oci.image.layer.v1.tar", b"not a model")],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let local = store(dir.path());
    let pull = |text: String| {
        let local = local.clone();
        async move {
            let reference = local.parse_ref(&text)?;
            registry().pull(&local, &reference, quiet()).await
        }
    };
    let err = pull(format!("{host}/test/image:v1")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedMediaType { .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    let err = pull(format!("{host}/test/missing:v1")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    let err = pull(format!("{host}/Test/Bad:v1")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err:?}");
    assert!(local.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_is_sent_and_refusals_are_unauthorized() {
    let registry_process = TestRegistry::start_with_basic_auth();
    let dir = tempfile::tempdir().unwrap();
    let local = store(dir.path());
    let tag = format!("{}/private/smollm2:v1", registry_process.host());
    let packaged = package_smollm2(&local, &tag);
    let reference = local.parse_ref(&tag).unwrap();
    let with = |username: &str, password: &str| {
        Registry::new(RegistryOptions {
            credentials: Credentials::Basic {
                username: username.into(),
                password: password.into(),
            },
            credentials_registry: registry_process.host(),
            insecure: Vec::new(),
        })
    };
    let err = registry()
        .push(&local, &packaged, &reference, quiet())
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Unauthorized,
        "anonymous push: {err:?}"
    );
    with(TEST_USER, TEST_PASSWORD)
        .push(&local, &packaged, &reference, quiet())
        .await
        .unwrap();
    local.remove(&tag, false).unwrap();
    for (name, registry) in [
        ("anonymous", registry()),
        ("wrong password", with(TEST_USER, "nope")),
    ] {
        let err = registry
            .pull(&local, &reference, quiet())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthorized, "{name}: {err:?}");
    }
    let pulled = with(TEST_USER, TEST_PASSWORD)
        .pull(&local, &reference, quiet())
        .await
        .unwrap();
    assert_eq!(pulled.model.id, packaged.id);

    // Credentials for another registry are not sent to this one.
    local.remove(&tag, false).unwrap();
    let elsewhere = Registry::new(RegistryOptions {
        credentials: Credentials::Basic {
            username: TEST_USER.into(),
            password: TEST_PASSWORD.into(),
        },
        credentials_registry: "registry.example.com".into(),
        insecure: Vec::new(),
    });
    let err = elsewhere
        .pull(&local, &reference, quiet())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err:?}");
}

/// A "registry" on a loopback port: `/v2/` answers 200, every manifest
/// request gets `manifest` (`None`: an endless one), anything else 404.
/// Returns its host and the bytes of manifest it managed to send.
async fn fake_registry(manifest: Option<Vec<u8>>) -> (String, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let manifest = Arc::new(manifest);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (counter, manifest) = (counter.clone(), manifest.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = |status: &str, body: &[u8]| {
                    let mut out = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    out.extend_from_slice(body);
                    out
                };
                let is_manifest =
                    head.starts_with(b"GET /v2/") && head.windows(11).any(|w| w == b"/manifests/");
                if head.starts_with(b"GET /v2/ ") {
                    let _ = socket.write_all(&reply("200 OK", b"{}")).await;
                } else if !is_manifest {
                    let _ = socket.write_all(&reply("404 Not Found", b"{}")).await;
                } else if let Some(manifest) = manifest.as_ref() {
                    let _ = socket.write_all(&reply("200 OK", manifest)).await;
                    counter.fetch_add(manifest.len() as u64, Ordering::Relaxed);
                } else {
                    let header = "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\nconnection: close\r\n\r\n{\"x\":\"";
                    if socket.write_all(header.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'a'; 64 << 10];
                    // Bounded, so that a client without a cap fails the
                    // test instead of exhausting memory: 1 GiB.
                    for _ in 0..(1 << 14) {
                        if socket.write_all(&chunk).await.is_err() {
                            return;
                        }
                        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    (host, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_larger_than_the_free_disk_is_refused_before_any_download() {
    let huge = 1u64 << 60;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": format!("sha256:{}", "a".repeat(64)),
            "size": 100,
        },
        "layers": [{
            "mediaType": GGUF_MEDIA_TYPE,
            "digest": format!("sha256:{}", "b".repeat(64)),
            "size": huge,
        }],
    });
    let (host, _) = fake_registry(Some(serde_json::to_vec(&manifest).unwrap())).await;
    let dir = tempfile::tempdir().unwrap();
    let local = store(dir.path());
    let before = files(dir.path());
    let reference = local.parse_ref(&format!("{host}/big/model:v1")).unwrap();
    let err = registry()
        .pull(&local, &reference, quiet())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InsufficientStorage { needed, .. } if needed == huge + 100),
        "{err:?}"
    );
    assert_eq!(err.code(), "insufficient_storage");
    assert_eq!(files(dir.path()), before, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_manifest_is_refused_without_filling_memory() {
    let (host, sent) = fake_registry(None).await;
    let dir = tempfile::tempdir().unwrap();
    let local = store(dir.path());
    let reference = local.parse_ref(&format!("{host}/evil/model:v1")).unwrap();
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        registry().pull(&local, &reference, quiet()),
    )
    .await
    .expect("the pull gave up in time")
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidArtifact { reason, .. } if reason.contains("larger than")),
        "{err:?}"
    );
    // The client stopped reading at the cap (plus what the sockets buffer),
    // far below the 1 GiB on offer.
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent < 64 << 20, "{sent} bytes were sent");
    assert!(local.list().unwrap().is_empty());
}

/// A "registry" whose `/v2/` asks for a bearer token from its own
/// `/token`, which streams without end (1 GiB at most). Returns its host
/// and the token bytes it managed to send.
async fn endless_token_registry() -> (String, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let realm = format!("http://{host}/token");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (counter, realm) = (counter.clone(), realm.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"GET /token") {
                    let header = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"token\":\"";
                    if socket.write_all(header.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'a'; 64 << 10];
                    for _ in 0..(1 << 14) {
                        if socket.write_all(&chunk).await.is_err() {
                            return;
                        }
                        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                } else {
                    let reply = format!(
                        "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm=\"{realm}\",service=\"evil\"\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                }
            });
        }
    });
    (host, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_token_response_is_refused_without_filling_memory() {
    let (host, sent) = endless_token_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let local = store(dir.path());
    let reference = local.parse_ref(&format!("{host}/evil/model:v1")).unwrap();
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        registry().pull(&local, &reference, quiet()),
    )
    .await
    .expect("the pull gave up in time")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err:?}");
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent < 64 << 20, "{sent} bytes were sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_config_is_refused_before_it_is_fetched() {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": format!("sha256:{}", "a".repeat(64)),
            "size": 17_000_000,
        },
        "layers": [{
            "mediaType": GGUF_MEDIA_TYPE,
            "digest": format!("sha256:{}", "b".repeat(64)),
            "size": 100,
        }],
    });
    let (host, _) = fake_registry(Some(serde_json::to_vec(&manifest).unwrap())).await;
    let dir = tempfile::tempdir().unwrap();
    let local = store(dir.path());
    let before = files(dir.path());
    let reference = local.parse_ref(&format!("{host}/big/config:v1")).unwrap();
    let err = registry()
        .pull(&local, &reference, quiet())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidArtifact { reason, .. } if reason.contains("config")),
        "{err:?}"
    );
    assert_eq!(files(dir.path()), before, "nothing was written");
}
