//! mTLS between gateway and worker, end to end: a real `herd-worker` on
//! the test model with `--tls-cert --tls-key --client-ca`, certificates
//! from a CA made here with rcgen. A gateway holding a client certificate
//! from that CA serves through it; a gateway without one, a gRPC client
//! without one and a plain-text client are all refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::pool::{Worker, gateway};
use common::{MODEL, chat, model_path};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Herd pool CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// Writes `{name}.pem` and `{name}.key` signed by this CA.
    fn issue(&self, dir: &Path, name: &str, usage: ExtendedKeyUsagePurpose) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

#[tokio::test]
async fn workers_accept_only_gateways_with_a_client_certificate() {
    let _ =
        rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    std::fs::write(d.join("ca.pem"), ca.cert.pem()).unwrap();
    ca.issue(d, "worker", ExtendedKeyUsagePurpose::ServerAuth);
    ca.issue(d, "gateway", ExtendedKeyUsagePurpose::ClientAuth);
    let p = |name: &str| d.join(name).to_str().unwrap().to_owned();
    let model = model_path();
    let mut worker = Worker::start(
        "w1",
        &[
            "--model",
            model.to_str().unwrap(),
            "--name",
            MODEL,
            "--parallel",
            "1",
            "--tls-cert",
            &p("worker.pem"),
            "--tls-key",
            &p("worker.key"),
            "--client-ca",
            &p("ca.pem"),
        ],
    )
    .await;
    let https = worker.endpoint.replacen("http://", "https://", 1);

    // A gRPC client without a client certificate: the handshake is refused.
    let ca_cert = Certificate::from_pem(std::fs::read(d.join("ca.pem")).unwrap());
    let anonymous = Endpoint::from_shared(https.clone())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(ca_cert.clone()))
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    let refused = match anonymous.connect().await {
        Err(_) => true,
        Ok(channel) => tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate was served");
    // With one, it is served.
    let identity = Identity::from_pem(
        std::fs::read(d.join("gateway.pem")).unwrap(),
        std::fs::read(d.join("gateway.key")).unwrap(),
    );
    let channel = Endpoint::from_shared(https.clone())
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(ca_cert)
                .identity(identity),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    // Plain text to the TLS port: refused.
    let plain = Endpoint::from_shared(worker.endpoint.clone())
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    let refused = match plain.connect().await {
        Err(_) => true,
        Ok(channel) => tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "plain text was served");

    // A gateway with the client certificate: the pool works.
    worker.endpoint = https;
    let with_cert = format!(
        "[worker_tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"",
        p("ca.pem"),
        p("gateway.pem"),
        p("gateway.key")
    );
    let (good, _config) = gateway(&[&worker], &with_cert).await;
    let (status, body) = good.post("/v1/chat/completions", &chat("Hi", 3)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");

    // A gateway that trusts the CA but has no client certificate: the
    // worker never tells it anything (no status, so no model), never
    // serves it.
    let without_cert = format!("[worker_tls]\nca = \"{}\"", p("ca.pem"));
    let (bad, _config) = gateway(&[&worker], &without_cert).await;
    let (status, body) = common::send_json(
        bad.http
            .post(format!("{}/v1/chat/completions", bad.url))
            .header("x-herd-timeout-ms", "5000")
            .json(&chat("Hi", 3)),
    )
    .await;
    assert!(status == 404 || status == 503, "{status} {body}");
    let (status, body) = bad.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
}
