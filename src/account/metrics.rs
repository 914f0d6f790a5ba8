//! `--metrics ADDR:PORT`: the run's figures as Prometheus text on `GET /metrics`, served by a small
//! synchronous HTTP server on a thread of its own (no async runtime), for a follow that runs for days.
//! The listener is bound at preflight (an address in use is exit 2); the thread answers one request at a
//! time and ends when the run is over. Nothing here talks to Redis.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};

use super::Snapshot;

/// How long the server waits for a request before it looks whether the run is over.
const POLL: Duration = Duration::from_millis(50);

/// A bound `--metrics` listener.
pub struct Listener {
    /// The HTTP server.
    server: tiny_http::Server,
}

impl Listener {
    /// Binds `addr`; the error names the flag.
    pub fn bind(addr: SocketAddr) -> Result<Listener, String> {
        tiny_http::Server::http(addr)
            .map(|server| Listener { server })
            .map_err(|e| format!("--metrics {addr}: cannot listen there: {e}"))
    }

    /// Answers requests until `done` is disconnected: `/metrics` (and `/`) get `body()`, anything else
    /// 404.
    pub fn serve(self, body: &dyn Fn() -> String, done: Receiver<()>) {
        while let Err(TryRecvError::Empty) = done.try_recv() {
            let request = match self.server.recv_timeout(POLL) {
                Ok(Some(request)) => request,
                Ok(None) => continue,
                Err(e) => {
                    log::warn!("--metrics: {e}; no more metrics are served");
                    return;
                }
            };
            let path = request.url().split('?').next().unwrap_or("");
            let response = if path == "/metrics" || path == "/" {
                let header =
                    tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/plain; version=0.0.4"[..])
                        .expect("a valid header");
                tiny_http::Response::from_string(body()).with_header(header)
            } else {
                tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404)
            };
            if let Err(e) = request.respond(response) {
                log::debug!("--metrics: a reply could not be sent: {e}");
            }
        }
    }
}

/// The copy's counters as Prometheus text, followed by `own` (a follow's figures).
pub fn copy_text(c: &Snapshot, own: &str) -> String {
    let mut out = String::new();
    out.push_str("# HELP redis_ferry_keys_total Keys by bucket: scanned, and where each ended.\n");
    out.push_str("# TYPE redis_ferry_keys_total counter\n");
    for (bucket, n) in [
        ("scanned", c.scanned),
        ("copied", c.copied),
        ("skipped", c.skipped),
        ("expired", c.expired),
        ("failed", c.failed),
        ("deleted", c.deleted),
    ] {
        let _ = writeln!(out, "redis_ferry_keys_total{{bucket=\"{bucket}\"}} {n}");
    }
    out.push_str("# HELP redis_ferry_target_evicted_keys_total Keys the target evicted during the run.\n");
    out.push_str("# TYPE redis_ferry_target_evicted_keys_total counter\n");
    let _ = writeln!(out, "redis_ferry_target_evicted_keys_total {}", c.evicted);
    out.push_str(own);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_as_prometheus_text() {
        let c = Snapshot { scanned: 3, copied: 2, failed: 1, ..Snapshot::default() };
        let text = copy_text(&c, "x 1\n");
        assert!(text.contains("redis_ferry_keys_total{bucket=\"copied\"} 2\n"));
        assert!(text.contains("redis_ferry_keys_total{bucket=\"failed\"} 1\n"));
        assert!(text.ends_with("x 1\n"));
    }
}
