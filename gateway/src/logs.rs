//! Logging: the `tracing` subscriber every Herd binary installs (human
//! text by default, JSON lines with `--log-format json`), and the ring of
//! recent lines the gateway serves on `GET /logs`.
//!
//! The ring is fed by a second formatting layer writing into memory: it
//! holds the last [`RING_LINES`] lines (each cut at [`MAX_LINE_BYTES`]) and
//! broadcasts new ones to `?follow=true` readers, who skip what they were
//! too slow to take rather than hold anything up.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::sync::broadcast;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Lines the ring keeps.
pub const RING_LINES: usize = 2000;
/// Longest line kept (longer ones are cut).
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// New lines a follower may fall behind by before it skips some.
const FOLLOW_BACKLOG: usize = 1024;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line per event, fields as `key=value`.
    #[default]
    Text,
    /// One JSON object per line, fields as keys.
    Json,
}

/// The recent log lines.
#[derive(Debug)]
pub struct LogRing {
    lines: Mutex<VecDeque<Arc<str>>>,
    new_lines: broadcast::Sender<Arc<str>>,
}

impl Default for LogRing {
    fn default() -> Self {
        Self {
            lines: Mutex::new(VecDeque::with_capacity(RING_LINES)),
            new_lines: broadcast::channel(FOLLOW_BACKLOG).0,
        }
    }
}

impl LogRing {
    /// Adds a line (without its newline).
    pub fn push(&self, line: &str) {
        let mut end = line.len().min(MAX_LINE_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let line: Arc<str> = Arc::from(&line[..end]);
        {
            let mut lines = self.lines.lock();
            if lines.len() == RING_LINES {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        let _ = self.new_lines.send(line);
    }

    /// The lines kept now, oldest first, and a receiver of those after.
    pub fn follow(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let lines = self.lines.lock();
        // Subscribed under the lock: no line is missed or seen twice.
        let receiver = self.new_lines.subscribe();
        (lines.iter().cloned().collect(), receiver)
    }

    pub fn recent(&self) -> Vec<Arc<str>> {
        self.lines.lock().iter().cloned().collect()
    }
}

/// The process's ring, once logging is set up with [`init`].
static RING: OnceLock<Arc<LogRing>> = OnceLock::new();

/// The process's ring of recent lines (empty until [`init`] ran).
pub fn ring() -> Arc<LogRing> {
    RING.get_or_init(Arc::default).clone()
}

/// A writer of one event's bytes into the ring.
#[derive(Debug)]
pub struct RingWriter {
    ring: Arc<LogRing>,
    buffer: Vec<u8>,
}

impl io::Write for RingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buffer);
        for line in text.lines().filter(|l| !l.is_empty()) {
            self.ring.push(line);
        }
    }
}

/// Makes a [`RingWriter`] per event.
#[derive(Debug, Clone)]
pub struct RingMakeWriter(Arc<LogRing>);

impl<'a> MakeWriter<'a> for RingMakeWriter {
    type Writer = RingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RingWriter {
            ring: self.0.clone(),
            buffer: Vec::with_capacity(256),
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` (else `default_filter`)
/// chooses what is logged; lines go to stderr in `format`, and to the ring
/// served on `/logs` in the same format. With `OTEL_EXPORTER_OTLP_ENDPOINT`
/// set, spans are also exported (see [`crate::traces`]): call it inside a
/// Tokio runtime then.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ring = RingMakeWriter(ring());
    let (stderr, kept) = match format {
        LogFormat::Text => (
            tracing_subscriber::fmt::layer()
                .with_writer(io::stderr)
                .boxed(),
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(ring)
                .boxed(),
        ),
        LogFormat::Json => (
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(io::stderr)
                .boxed(),
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(ring)
                .boxed(),
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(stderr.with_filter(filter()))
        .with(kept.with_filter(filter()))
        .with(crate::traces::layer("herd"))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_lines_cut_to_size() {
        let ring = LogRing::default();
        for i in 0..RING_LINES + 5 {
            ring.push(&format!("line {i}"));
        }
        let lines = ring.recent();
        assert_eq!(lines.len(), RING_LINES);
        assert_eq!(&*lines[0], "line 5");
        ring.push(&"é".repeat(MAX_LINE_BYTES));
        assert!(
            ring.recent()
                .last()
                .is_some_and(|l| l.len() <= MAX_LINE_BYTES)
        );
    }

    #[tokio::test]
    async fn a_follower_gets_the_lines_after_the_recent_ones() {
        let ring = LogRing::default();
        ring.push("old");
        let (recent, mut new) = ring.follow();
        ring.push("new");
        assert_eq!(recent.len(), 1);
        assert_eq!(&*new.recv().await.unwrap(), "new");
    }
}
