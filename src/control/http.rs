//! The metrics listener (`mpwg up --metrics ADDR:PORT`): a small read-only HTTP server.
//!
//! * `GET /metrics`: Prometheus metrics ([`crate::control::metrics`]); OpenMetrics when
//!   the `Accept` header asks for it, else the Prometheus text format.
//! * `GET /status.json`: the device's [`Status`], the object `mpwg show NAME --json`
//!   prints.
//! * `GET /`: the live status page, one self-contained HTML file compiled into the
//!   binary (`status.html`), which polls `/status.json`.
//!
//! It listens only where `--metrics` says, serves nothing secret (public keys, counters,
//! states), and changes nothing. Requests are answered by two threads of their own; a
//! status is a copy of atomics (see [`crate::control::status`]), so a scrape or a slow
//! client never holds up a packet. HTTP itself is tiny_http's.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use crate::control::metrics::{self, Format};
use crate::control::status::Status;
use crate::datapath;

/// The status page.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// What the listener asks for a fresh status, on each request.
pub type StatusSource = Arc<dyn Fn() -> Status + Send + Sync>;

/// Threads answering requests.
const THREADS: usize = 2;

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("cannot listen for --metrics on {addr}: {source}{hint}", hint = bind_hint(source))]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// The HTTP server could not be set up on the bound socket.
    #[error("cannot serve HTTP for --metrics on {addr}: {message}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// What tiny_http said.
        message: String,
    },
}

fn bind_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrInUse => " (another program listens there: pick another port)",
        io::ErrorKind::AddrNotAvailable => {
            " (no interface here has that address: use 127.0.0.1, or an address of this host)"
        }
        _ => "",
    }
}

/// The running listener. Dropping it stops it.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and starts answering requests with what `source` reports, on threads
    /// of the tunnel `life` belongs to.
    pub fn start(
        addr: SocketAddr,
        source: StatusSource,
        life: &Arc<datapath::Lifecycle>,
    ) -> Result<MetricsServer, HttpError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| HttpError::Bind { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let server =
            tiny_http::Server::from_listener(listener, None).map_err(|e| HttpError::Serve {
                addr,
                message: e.to_string(),
            })?;
        let server = Arc::new(server);
        for i in 0..THREADS {
            let server = server.clone();
            let source = source.clone();
            datapath::spawn(format!("mpwg-http-{i}"), life, move || {
                // recv() fails only once the server is unblocked (dropped).
                while let Ok(request) = server.recv() {
                    answer(request, &source);
                }
            });
        }
        tracing::info!(%addr, "metrics and status page on http://{addr}/");
        Ok(MetricsServer { server, addr })
    }

    /// The address it listens on (with the port chosen, if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// The SHA-256 of what lies between `open` and `close` in the page, as CSP writes it.
fn csp_hash(open: &str, close: &str) -> String {
    use base64::Engine;
    let body = STATUS_PAGE
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map_or("", |(inside, _)| inside);
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

/// The Content-Security-Policy of every response: nothing may be loaded from anywhere
/// but this server's `/status.json`, and only the page's own script and style (by hash)
/// may run.
fn content_security_policy() -> &'static str {
    static CSP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            csp_hash("<script>", "</script>"),
            csp_hash("<style>", "</style>")
        )
    })
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    // Every name and value passed here is ASCII made in this file.
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .unwrap_or_else(|()| unreachable!("header {name} is ASCII"))
}

/// The response to one request: status code, content type, body.
fn route(
    method: &tiny_http::Method,
    url: &str,
    accept: Option<&str>,
    source: &StatusSource,
) -> (u16, &'static str, String) {
    use tiny_http::Method::{Get, Head};
    if !matches!(method, Get | Head) {
        return (
            405,
            "text/plain; charset=utf-8",
            "only GET is served here\n".into(),
        );
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    match path {
        "/" | "/index.html" => (200, "text/html; charset=utf-8", STATUS_PAGE.to_string()),
        "/status.json" => (200, "application/json", source().to_json()),
        // Browsers ask for it: no icon, and no error in their console.
        "/favicon.ico" => (204, "image/x-icon", String::new()),
        "/metrics" => {
            let format = Format::from_accept(accept);
            (
                200,
                format.content_type(),
                metrics::encode(&source(), format),
            )
        }
        _ => (
            404,
            "text/plain; charset=utf-8",
            "not found: this server has /, /status.json and /metrics\n".into(),
        ),
    }
}

fn answer(request: tiny_http::Request, source: &StatusSource) {
    let accept = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Accept"))
        .map(|h| h.value.as_str().to_string());
    let (code, content_type, body) =
        route(request.method(), request.url(), accept.as_deref(), source);
    let mut response = tiny_http::Response::from_string(body)
        .with_status_code(code)
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-store"))
        .with_header(header("X-Content-Type-Options", "nosniff"))
        // The page may load nothing from elsewhere, and run no script but its own.
        .with_header(header("Content-Security-Policy", content_security_policy()));
    if code == 405 {
        response.add_header(header("Allow", "GET, HEAD"));
    }
    // A client that went away is its own problem.
    let _ = request.respond(response);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::status::tests::sample;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_status_and_page_and_nothing_else() {
        let source: StatusSource = Arc::new(sample);
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), source, &Default::default())
                .unwrap();
        let a = server.addr();
        let close = "Connection: close\r\n\r\n";

        let r = get(a, &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{close}"));
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        assert!(
            r.contains(r#"mpwg_path_up{device="mp0",path="eth0"} 1"#),
            "{r}"
        );

        let r = get(
            a,
            &format!("GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n{close}"),
        );
        assert!(
            r.contains("Content-Type: application/openmetrics-text"),
            "{r}"
        );
        assert!(r.trim_end().ends_with("# EOF"), "{r}");

        let r = get(a, &format!("GET /status.json?x=1 HTTP/1.1\r\n{close}"));
        assert!(r.contains("Content-Type: application/json"), "{r}");
        let body = &r[r.find("\r\n\r\n").unwrap() + 4..];
        let st: Status = serde_json::from_str(body).unwrap();
        assert_eq!(st, sample());

        let r = get(a, &format!("GET / HTTP/1.1\r\n{close}"));
        assert!(r.contains("Content-Type: text/html"), "{r}");
        assert!(
            r.contains("Content-Security-Policy: default-src 'none'"),
            "{r}"
        );
        assert!(r.contains("status.json"));

        let r = get(a, &format!("GET /nope HTTP/1.1\r\n{close}"));
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = get(
            a,
            &format!("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n{close}"),
        );
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        assert!(r.contains("Allow: GET, HEAD"), "{r}");
    }

    #[test]
    fn a_taken_port_is_an_error_that_says_so() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = MetricsServer::start(addr, Arc::new(sample), &Default::default())
            .err()
            .expect("the port is taken");
        let msg = e.to_string();
        assert!(msg.contains(&addr.to_string()), "{msg}");
        assert!(msg.contains("--metrics"), "{msg}");
        assert!(msg.contains("pick another port"), "{msg}");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let p = STATUS_PAGE;
        for bad in [
            "<script src",
            "<link",
            "@import",
            "url(",
            "http://",
            "https://",
        ] {
            assert!(!p.contains(bad), "the status page contains {bad:?}");
        }
        assert!(p.contains("fetch(\"status.json\""));
    }
}
