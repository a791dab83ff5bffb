//! Test fixtures (feature `testing`): a real OCI registry — Debian's
//! `docker-registry`, the CNCF distribution registry — on a free loopback
//! port with its storage in a temp dir, and a TCP proxy that can cut
//! transfers halfway.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `docker-registry` process; killed on drop.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// The user [`TestRegistry::start_with_basic_auth`] accepts.
pub const TEST_USER: &str = "herd";
/// Its password.
pub const TEST_PASSWORD: &str = "herd-test-password";
/// bcrypt (cost 4) of [`TEST_PASSWORD`], for the registry's htpasswd file.
const TEST_PASSWORD_BCRYPT: &str = "$2a$04$2rIzooBjlAaG8JqZ.ByUOOC1sUQzUF41HZuV4q7RzQT1aEwxr5Lve";

impl TestRegistry {
    /// Starts an open registry and waits until it listens.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// Starts a registry that demands HTTP basic auth as
    /// [`TEST_USER`]/[`TEST_PASSWORD`] for every request.
    pub fn start_with_basic_auth() -> Self {
        Self::launch(true)
    }

    fn launch(basic_auth: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
            dir.path().join("data").display()
        );
        if basic_auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{TEST_USER}:{TEST_PASSWORD_BCRYPT}\n"))
                .expect("write htpasswd");
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: herd-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, text).expect("write registry config");
        let binary = std::env::var("HERD_TEST_REGISTRY_BIN")
            .unwrap_or_else(|_| "docker-registry".to_owned());
        let mut child = Command::new(&binary)
            .arg("serve")
            .arg(&config)
            .env("REGISTRY_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} (scripts/setup installs docker-registry): {e}")
            });
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split(['"', ' ']).next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the registry did not report its address within 20 s");
        let addr = addr.parse().expect("registry address");
        Self { child, addr, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>`: the registry part of references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Where the registry keeps the blob `sha256:<hex>`.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP proxy to `upstream` that forwards at most `budget` bytes
/// from upstream to clients in total, then either cuts every connection (a
/// transfer broken halfway) or holds them open without sending more (a
/// transfer hanging halfway, until the client is killed).
/// [`CuttingProxy::unlimit`] lifts the budget.
#[derive(Debug, Clone)]
pub struct CuttingProxy {
    addr: SocketAddr,
    budget: Arc<AtomicU64>,
    forwarded: Arc<AtomicU64>,
}

impl CuttingProxy {
    /// Cuts connections once `budget` bytes have been forwarded.
    pub async fn start(upstream: SocketAddr, budget: u64) -> Self {
        Self::spawn(upstream, budget, false).await
    }

    /// Stalls connections once `budget` bytes have been forwarded.
    pub async fn start_stalling(upstream: SocketAddr, budget: u64) -> Self {
        Self::spawn(upstream, budget, true).await
    }

    async fn spawn(upstream: SocketAddr, budget: u64, stall: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let budget = Arc::new(AtomicU64::new(budget));
        let forwarded = Arc::new(AtomicU64::new(0));
        let proxy = Self {
            addr,
            budget: budget.clone(),
            forwarded: forwarded.clone(),
        };
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (budget, forwarded) = (budget.clone(), forwarded.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_rx, mut client_tx) = client.into_split();
                    let (mut server_rx, mut server_tx) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
                    });
                    let mut buf = vec![0u8; 64 << 10];
                    'relay: while let Ok(n) = server_rx.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let mut offset = 0;
                        while offset < n {
                            let allowed = budget
                                .load(Ordering::SeqCst)
                                .saturating_sub(forwarded.load(Ordering::SeqCst));
                            if allowed == 0 {
                                if !stall {
                                    break 'relay;
                                }
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                            let k = (allowed.min((n - offset) as u64)) as usize;
                            forwarded.fetch_add(k as u64, Ordering::SeqCst);
                            if client_tx.write_all(&buf[offset..offset + k]).await.is_err() {
                                break 'relay;
                            }
                            offset += k;
                        }
                    }
                    up.abort();
                });
            }
        });
        proxy
    }

    /// `127.0.0.1:<port>`: use as the registry part of references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Bytes the proxy has passed on so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }

    /// Lets everything through from now on.
    pub fn unlimit(&self) {
        self.budget.store(u64::MAX, Ordering::SeqCst);
    }
}

/// Pushes an artifact through the registry's plain HTTP API, as a client
/// other than Herd would: each blob by monolithic upload, then the
/// manifest. Returns the manifest's digest.
pub async fn push_by_hand(
    registry: &str,
    repository: &str,
    tag: &str,
    config: (&str, &[u8]),
    layers: &[(&str, &[u8])],
) -> String {
    let http = reqwest::Client::new();
    let base = format!("http://{registry}/v2/{repository}");
    let mut descriptors = Vec::new();
    for (media_type, bytes) in std::iter::once(&config).chain(layers) {
        let digest = crate::sha256_digest(bytes);
        let start = http
            .post(format!("{base}/blobs/uploads/"))
            .send()
            .await
            .expect("start upload");
        assert_eq!(start.status(), 202, "upload start");
        let location = start.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{registry}{location}")
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = http
            .put(format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("upload blob");
        assert_eq!(put.status(), 201, "blob upload");
        descriptors.push(serde_json::json!({
            "mediaType": media_type, "digest": digest, "size": bytes.len()
        }));
    }
    let config_descriptor = descriptors.remove(0);
    // Pretty-printed, unlike Herd's own manifests: the ID is the digest of
    // these exact bytes.
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::artifact::MANIFEST_MEDIA_TYPE,
        "config": config_descriptor,
        "layers": descriptors,
        "annotations": {"org.opencontainers.image.created": "2025-01-01T00:00:00Z"},
    }))
    .unwrap();
    let put = http
        .put(format!("{base}/manifests/{tag}"))
        .header("content-type", crate::artifact::MANIFEST_MEDIA_TYPE)
        .body(manifest.clone())
        .send()
        .await
        .expect("put manifest");
    assert_eq!(put.status(), 201, "manifest upload");
    crate::sha256_digest(&manifest)
}

/// The test model's path: `HERD_TEST_MODEL`, else what
/// `scripts/fetch-test-model` prints (it downloads once, then is offline).
pub fn test_model_path() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        if let Ok(p) = std::env::var("HERD_TEST_MODEL") {
            return PathBuf::from(p);
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-test-model");
        let out = Command::new(&script)
            .output()
            .expect("run scripts/fetch-test-model");
        assert!(
            out.status.success(),
            "fetch-test-model failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// Splits the GGUF at `source` into `count` shards in `dir`, named
/// `<prefix>-0000N-of-0000M.gguf`, the way `llama-gguf-split` does: every
/// shard carries `split.no`, `split.count` and `split.tensors.count`; the
/// first also all of the source's metadata; the tensors are divided in
/// header order. Returns the shards' paths.
pub fn split_gguf(source: &Path, dir: &Path, prefix: &str, count: usize) -> Vec<PathBuf> {
    use crate::gguf::GgufLayout;
    let layout = GgufLayout::read(source).expect("read the GGUF to split");
    assert_eq!(
        layout.alignment, 32,
        "the fixture assumes the default alignment"
    );
    let bytes = std::fs::read(source).expect("read the GGUF");
    // Each tensor's extent (to the next tensor's start, padding included).
    let mut starts: Vec<u64> = layout.tensors.iter().map(|t| t.offset).collect();
    starts.sort_unstable();
    let data_len = layout.file_len - layout.data_start;
    let extent = |offset: u64| {
        let next = starts
            .iter()
            .find(|&&s| s > offset)
            .copied()
            .unwrap_or(data_len);
        next - offset
    };
    let total = layout.tensors.len();
    let per_shard = total.div_ceil(count);
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    };
    let mut paths = Vec::new();
    for (shard, tensors) in layout.tensors.chunks(per_shard).enumerate() {
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(layout.version.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        let kv_count = if shard == 0 { layout.kv_count + 3 } else { 3 };
        out.extend(kv_count.to_le_bytes());
        if shard == 0 {
            out.extend(&bytes[layout.kv_bytes.start as usize..layout.kv_bytes.end as usize]);
        }
        string(&mut out, "split.no");
        out.extend(2u32.to_le_bytes()); // u16
        out.extend((shard as u16).to_le_bytes());
        string(&mut out, "split.count");
        out.extend(2u32.to_le_bytes()); // u16
        out.extend((count as u16).to_le_bytes());
        string(&mut out, "split.tensors.count");
        out.extend(5u32.to_le_bytes()); // i32
        out.extend((total as i32).to_le_bytes());
        let mut data: Vec<u8> = Vec::new();
        for tensor in tensors {
            string(&mut out, &tensor.name);
            out.extend((tensor.dims.len() as u32).to_le_bytes());
            for dim in &tensor.dims {
                out.extend(dim.to_le_bytes());
            }
            out.extend(tensor.ggml_type.to_le_bytes());
            out.extend((data.len() as u64).to_le_bytes());
            let start = (layout.data_start + tensor.offset) as usize;
            data.extend(&bytes[start..start + extent(tensor.offset) as usize]);
        }
        while out.len() % 32 != 0 {
            out.push(0);
        }
        out.extend(data);
        let path = dir.join(crate::package::shard_name(prefix, shard + 1, count));
        std::fs::write(&path, out).expect("write a shard");
        paths.push(path);
    }
    assert_eq!(paths.len(), count, "fewer tensors than shards");
    paths
}
