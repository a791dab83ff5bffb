//! A cluster of separate processes for the tests: a real etcd (Debian's
//! `etcd-server`) on free loopback ports, and `herd gateway` / `herd worker`
//! processes pointed at it. Workers run the **mock engine**. Addresses are
//! learned from the records the processes write in etcd; each process logs
//! to a file, shown when a test fails.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use herd_state::testing::EtcdServer;
use herd_state::{EtcdStore, GatewayRecord, Keys, StateStore, WorkerRecord, decode};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Polls `check` every 50 ms until it holds; panics after `secs`.
pub async fn eventually<F, Fut>(secs: f64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// etcd and the processes of one test.
pub struct Pool {
    pub etcd: EtcdServer,
    pub store: Arc<dyn StateStore>,
    pub keys: Keys,
    /// Lease TTL of every process, in seconds.
    pub ttl: u64,
    logs: tempfile::TempDir,
}

/// A child process, killed when dropped.
pub struct Process {
    child: Child,
    pub name: String,
    log: PathBuf,
}

pub struct Gateway {
    pub process: Process,
    pub id: String,
    pub url: String,
    pub http: reqwest::Client,
}

pub struct Worker {
    pub process: Process,
    pub id: String,
    pub endpoint: String,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200 and a whole answer (a stream: a finish reason, then `[DONE]`).
    Complete { worker: String },
    /// A stream that ended with an OpenAI-style error event.
    ErrorEvent { worker: String, error: String },
    /// An error status.
    Failed { status: u16, body: String },
}

impl Answer {
    pub fn worker(&self) -> Option<&str> {
        match self {
            Self::Complete { worker } | Self::ErrorEvent { worker, .. } => Some(worker),
            Self::Failed { .. } => None,
        }
    }
}

impl Pool {
    pub async fn start(ttl: u64) -> Self {
        let etcd = EtcdServer::start();
        let store: Arc<dyn StateStore> = Arc::new(EtcdStore::connect(&[etcd.url()]).await.unwrap());
        Self {
            etcd,
            store,
            keys: Keys::default(),
            ttl,
            logs: tempfile::tempdir().unwrap(),
        }
    }

    fn spawn(&self, name: &str, args: &[&str]) -> Process {
        let log = self.logs.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_herd"))
            .args(args)
            .env("RUST_LOG", "info,pingora_core=warn,h2=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Process {
            child,
            name: name.to_owned(),
            log,
        }
    }

    /// A mock worker registered in etcd as `id`, with `mock` flags.
    pub async fn worker(&self, id: &str, mock: &[&str]) -> Worker {
        let etcd = self.etcd.url();
        let ttl = self.ttl.to_string();
        let mut args = vec![
            "worker",
            "--engine",
            "mock",
            "--listen",
            "127.0.0.1:0",
            "--worker-id",
            id,
            "--etcd",
            &etcd,
            "--lease-ttl",
            &ttl,
        ];
        args.extend_from_slice(mock);
        let process = self.spawn(id, &args);
        let key = self.keys.worker(id);
        let value = self
            .await_record(&key, &format!("worker {id} registers"))
            .await;
        let record: WorkerRecord = decode(&key, &value).unwrap();
        let endpoint = record.endpoint;
        Worker {
            process,
            id: id.to_owned(),
            endpoint,
        }
    }

    /// A gateway following etcd as `id`.
    pub async fn gateway(&self, id: &str) -> Gateway {
        self.gateway_with(id, &[]).await
    }

    /// A gateway following etcd as `id`, with `extra` flags.
    pub async fn gateway_with(&self, id: &str, extra: &[&str]) -> Gateway {
        let etcd = self.etcd.url();
        let ttl = self.ttl.to_string();
        let mut args = vec![
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--gateway-id",
            id,
            "--etcd",
            &etcd,
            "--lease-ttl",
            &ttl,
        ];
        args.extend_from_slice(extra);
        let process = self.spawn(id, &args);
        let key = self.keys.gateway(id);
        let value = self
            .await_record(&key, &format!("gateway {id} registers"))
            .await;
        let record: GatewayRecord = decode(&key, &value).unwrap();
        let listen = record.listen;
        Gateway {
            process,
            id: id.to_owned(),
            url: format!("http://{listen}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// The record at `key`, once it is there (30 s at most).
    async fn await_record(&self, key: &str, what: &str) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let listing = self.store.list(key).await.unwrap_or_default();
            if let Some(kv) = listing.items.iter().find(|kv| kv.key == key) {
                return kv.value.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within 30 s: {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Worker ids registered in etcd now.
    pub async fn registered(&self) -> Vec<String> {
        let prefix = self.keys.workers();
        self.store
            .list(&prefix)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|kv| kv.key.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("process logs are in {}", self.logs.path().display());
            // Keep them for a look.
            let dir = std::mem::replace(&mut self.logs, tempfile::tempdir().unwrap());
            let _ = dir.keep();
        }
    }
}

impl Process {
    /// SIGKILL: no chance to deregister or drain.
    pub async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("running");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits (at most `secs`) for the process to exit.
    pub async fn wait(&mut self, secs: u64) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(secs), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {secs} s", self.name))
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!("--- last lines of {} ---", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Worker {
    /// The worker's `grpc.health.v1` status for `service` (`""` = overall).
    pub async fn health(&self, service: &str) -> i32 {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_client::HealthClient;
        let channel = tonic::transport::Endpoint::from_shared(self.endpoint.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
    }
}

impl Gateway {
    /// The status of `GET path` with `key` as `Authorization: Bearer`.
    pub async fn get_with_key(&self, path: &str, key: &str) -> u16 {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `/readyz`'s body.
    pub async fn readiness(&self) -> Value {
        self.get("/readyz").await.1
    }

    /// Waits until `/readyz` shows `healthy` of `total` workers.
    pub async fn wait_for_workers(&self, healthy: u64, total: u64, secs: f64) {
        eventually(
            secs,
            &format!("{} sees {healthy} healthy of {total} workers", self.id),
            || async {
                let r = self.readiness().await;
                r["workers"]["healthy"] == healthy && r["workers"]["total"] == total
            },
        )
        .await;
    }

    /// `/herd/v1/status`.
    pub async fn status(&self) -> Value {
        let (code, body) = self.get("/herd/v1/status").await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Worker ids in this gateway's view.
    pub async fn worker_ids(&self) -> Vec<String> {
        let status = self.status().await;
        let mut ids: Vec<String> = status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// A model's counter (`loads`, `running`, `served`…) in this gateway's
    /// scheduler.
    pub async fn model_stat(&self, model: &str, stat: &str) -> u64 {
        self.status().await["scheduler"]["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["model"] == model)
            .map(|m| m[stat].as_u64().unwrap_or(0))
            .sum()
    }

    /// A chat request; streamed or not.
    pub async fn chat(&self, model: &str, prompt: &str, max_tokens: u32, stream: bool) -> Answer {
        self.chat_with(model, &[("user", prompt)], max_tokens, stream)
            .await
    }

    /// A chat request with these `(role, content)` messages.
    pub async fn chat_with(
        &self,
        model: &str,
        messages: &[(&str, &str)],
        max_tokens: u32,
        stream: bool,
    ) -> Answer {
        let messages: Vec<Value> = messages
            .iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect();
        let body = json!({
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": stream,
        });
        let resp = match self
            .http
            .post(format!("{}/v1/chat/completions", self.url))
            .json(&body)
            .send()
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                return Answer::Failed {
                    status: 0,
                    body: e.to_string(),
                };
            }
        };
        let status = resp.status().as_u16();
        let worker = resp
            .headers()
            .get("x-herd-worker")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = match resp.text().await {
            Ok(text) => text,
            Err(e) => {
                return Answer::Failed {
                    status,
                    body: format!("body cut: {e}"),
                };
            }
        };
        if status != 200 {
            return Answer::Failed { status, body: text };
        }
        if !stream {
            let json: Value = serde_json::from_str(&text).unwrap();
            assert!(json["choices"][0]["finish_reason"].is_string(), "{text}");
            return Answer::Complete { worker };
        }
        let events: Vec<&str> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap_or(e))
            .collect();
        if let Some(error) = events.iter().find(|e| e.contains("\"error\"")) {
            return Answer::ErrorEvent {
                worker,
                error: (*error).to_owned(),
            };
        }
        let finished = events
            .iter()
            .any(|e| e.contains("\"finish_reason\":\"") && !e.contains("\"finish_reason\":null"));
        if events.last() == Some(&"[DONE]") && finished {
            Answer::Complete { worker }
        } else {
            Answer::Failed {
                status,
                body: format!("stream cut short: {text}"),
            }
        }
    }
}
