//! Test fixtures (feature `testing`): a real etcd — Debian's `etcd-server`,
//! which `scripts/setup` installs — on free loopback ports with its data in
//! a temp dir. It can be stopped and started again on the same ports and
//! data, to test an outage.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An etcd process; killed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client: SocketAddr,
    peer: SocketAddr,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers `/health`.
    pub fn start() -> Self {
        // etcd cannot listen on port 0 and say where: take free ports. If
        // one is taken again before etcd binds it, try other ports.
        for _ in 0..5 {
            let mut server = Self {
                child: None,
                dir: tempfile::tempdir().expect("temp dir"),
                client: free_port(),
                peer: free_port(),
            };
            if server.launch() {
                return server;
            }
        }
        panic!("etcd did not start on free loopback ports (5 tries)");
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    pub fn addr(&self) -> SocketAddr {
        self.client
    }

    /// Kills etcd (SIGKILL), as a crash or a lost machine would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.launch(), "etcd did not start again on {}", self.client);
    }

    /// Prometheus text from etcd's `/metrics`.
    pub fn metrics(&self) -> String {
        http_get(self.client, "/metrics").unwrap_or_default()
    }

    fn launch(&mut self) -> bool {
        let binary = std::env::var("HERD_TEST_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
        let client = format!("http://{}", self.client);
        let peer = format!("http://{}", self.peer);
        let child = Command::new(&binary)
            .args(["--name", "herd-test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("herd-test={peer}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} (scripts/setup installs etcd-server): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false; // exited: a port was taken
            }
            if http_get(self.client, "/health").is_some_and(|b| b.contains("true")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        false
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// The body of a plain HTTP/1.0 GET, if it answered 200.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}
