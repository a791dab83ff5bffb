//! TLS on the gateway, end to end: `herd serve --tls-cert --tls-key` on the
//! real model, certificates made here with rcgen, real handshakes with a
//! rustls client and with `curl --cacert`: the right CA passes (h2 and
//! http/1.1 by ALPN), another CA fails, plain HTTP to the TLS port fails
//! cleanly, and the pair is reloaded when the files change — an expired
//! certificate is then refused, a fresh one accepted — while a connection
//! opened before the reload keeps working.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{MODEL, model_path, spawn_until_ready};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, date_time_ymd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// A test CA.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A server certificate for localhost and 127.0.0.1, signed by this
    /// CA; expired when `expired`. Returns (cert PEM, key PEM).
    fn issue(&self, expired: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.cert.pem()).unwrap();
        path
    }
}

/// Writes the pair over the served files (key first, then cert, each
/// renamed into place), with a modification time that differs from the
/// last one however coarse the clock.
fn install(dir: &Path, (cert, key): &(String, String), generation: u64) {
    let stamp = std::time::SystemTime::now() + Duration::from_secs(10 * generation);
    for (name, text) in [("key.pem", key), ("cert.pem", cert)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(stamp)
            .unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

fn client_config(ca: &Ca, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(addr: SocketAddr, ca: &Ca, alpn: &[&[u8]]) -> std::io::Result<Tls> {
    let connector = tokio_rustls::TlsConnector::from(client_config(ca, alpn));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("handshake hangs")
}

/// One HTTP/1.1 GET on a kept-alive connection; returns the status line.
async fn get(tls: &mut Tls, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read the head and a Content-Length body.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk))
            .await
            .expect("no answer")
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return head.lines().next().unwrap().to_owned();
            }
        }
    }
}

/// `curl --cacert` over TLS; returns (exit code, stdout).
fn curl(ca: &Path, url: &str, extra: &[&str]) -> (i32, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn tls_handshakes_alpn_wrong_ca_plain_http_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let ca = Ca::new("Herd test CA");
    let other = Ca::new("Another CA");
    let ca_pem = ca.write(dir.path(), "ca.pem");
    let other_pem = other.write(dir.path(), "other.pem");
    install(dir.path(), &ca.issue(false), 0);
    let model = model_path();
    let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
    command
        .args(["serve", "--threads", "1", "--parallel", "1"])
        .args(["--listen", "127.0.0.1:0", "--name", MODEL])
        .arg("--model")
        .arg(&model)
        .arg("--store")
        .arg(store.path())
        .arg("--tls-cert")
        .arg(dir.path().join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("key.pem"));
    let (_child, rest) = spawn_until_ready(command, "Herd is serving ").await;
    let url = rest
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .expect("an https URL")
        .trim_end_matches("/v1")
        .to_owned();
    let addr: SocketAddr = url.trim_start_matches("https://").parse().unwrap();
    let local = format!("https://localhost:{}", addr.port());

    // A rustls client: h2 preferred by ALPN, http/1.1 when only it is offered.
    let tls = connect(addr, &ca, &[b"h2", b"http/1.1"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut kept = connect(addr, &ca, &[b"http/1.1"]).await.unwrap();
    assert_eq!(kept.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get(&mut kept, "/healthz").await, "HTTP/1.1 200 OK");

    // curl: the right CA, both protocols, a real completion.
    let (code, out) = curl(
        &ca_pem,
        &format!("{local}/healthz"),
        &["-w", " %{http_version}", "--http2"],
    );
    assert_eq!((code, out.as_str()), (0, r#"{"status":"ok"} 2"#));
    let (code, out) = curl(
        &ca_pem,
        &format!("{url}/healthz"),
        &["-w", " %{http_version}", "--http1.1"],
    );
    assert_eq!((code, out.as_str()), (0, r#"{"status":"ok"} 1.1"#));
    let body = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"Hi"}}],"max_tokens":3}}"#
    );
    let (code, out) = curl(
        &ca_pem,
        &format!("{local}/v1/chat/completions"),
        &["-H", "content-type: application/json", "-d", &body],
    );
    assert_eq!(code, 0);
    assert!(out.contains("chat.completion"), "{out}");

    // Another CA: refused (curl 60: peer certificate cannot be verified).
    let (code, _) = curl(&other_pem, &format!("{local}/healthz"), &[]);
    assert_eq!(code, 60);
    assert!(connect(addr, &other, &[b"http/1.1"]).await.is_err());

    // Plain HTTP to the TLS port: no answer an HTTP client would take,
    // promptly, and the server goes on serving.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await;
    match plain {
        Err(e) => assert!(!e.is_timeout(), "plain HTTP hung: {e}"),
        Ok(resp) => assert!(!resp.status().is_success(), "{resp:?}"),
    }

    // An expired certificate: once the files change it is served, and
    // refused by clients.
    install(dir.path(), &ca.issue(true), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _) = curl(&ca_pem, &format!("{local}/healthz"), &[]);
        if code == 60 {
            break;
        }
        assert_eq!(code, 0);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired cert was never loaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(connect(addr, &ca, &[b"http/1.1"]).await.is_err());
    // A connection made before the reload keeps working.
    assert_eq!(get(&mut kept, "/healthz").await, "HTTP/1.1 200 OK");

    // A fresh certificate: accepted again.
    install(dir.path(), &ca.issue(false), 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _) = curl(&ca_pem, &format!("{local}/healthz"), &[]);
        if code == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fresh cert was never loaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(&mut kept, "/healthz").await, "HTTP/1.1 200 OK");

    // Renewal under load: clients keep connecting while a new certificate
    // replaces the old one; none of their requests fails.
    let before = served_cert(addr, &ca).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ca = Arc::new(ca);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ca) = (stop.clone(), ca.clone());
            tokio::spawn(async move {
                let mut served = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut tls = connect(addr, &ca, &[b"http/1.1"]).await.unwrap();
                    assert_eq!(get(&mut tls, "/healthz").await, "HTTP/1.1 200 OK");
                    served += 1;
                }
                served
            })
        })
        .collect();
    install(dir.path(), &ca.issue(false), 3);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while served_cert(addr, &ca).await == before {
        assert!(tokio::time::Instant::now() < deadline, "never renewed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        assert!(client.await.unwrap() > 0);
    }
}

/// The leaf certificate a new connection is served.
async fn served_cert(addr: SocketAddr, ca: &Ca) -> Vec<u8> {
    let tls = connect(addr, ca, &[b"http/1.1"]).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}
