//! Test harness: real origins (hyper servers on 127.0.0.1:0), the proxy
//! started in-process from a TOML string, and two clients: a hyper one for
//! well-formed requests and a raw TCP one for hostile bytes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade::config::Config;
use palisade::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What the origin answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A real HTTP origin on 127.0.0.1:0 that records what it receives.
pub struct Origin {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Set to false to make `/health` answer 503.
    pub healthy: Arc<AtomicBool>,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
}

impl Origin {
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let healthy = Arc::new(AtomicBool::new(true));
        let handler: Handler = Arc::new(handler);
        let (seen2, healthy2) = (Arc::clone(&seen), Arc::clone(&healthy));
        let connections = Arc::new(AtomicUsize::new(0));
        let connections2 = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                connections2.fetch_add(1, Ordering::SeqCst);
                let (seen, healthy, handler) = (
                    Arc::clone(&seen2),
                    Arc::clone(&healthy2),
                    Arc::clone(&handler),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (seen, healthy, handler) = (
                            Arc::clone(&seen),
                            Arc::clone(&healthy),
                            Arc::clone(&handler),
                        );
                        async move { Ok::<_, Infallible>(answer(req, &seen, &healthy, &handler).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin {
            addr,
            seen,
            healthy,
            connections,
        }
    }

    /// An origin that answers 200 with its name as the body.
    pub async fn named(name: &'static str) -> Origin {
        Origin::start(move |_| Reply::ok(name)).await
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// Requests seen, not counting health checks.
    pub fn hits(&self) -> usize {
        self.requests()
            .iter()
            .filter(|s| s.path != "/health")
            .count()
    }
}

async fn answer(
    req: Request<Incoming>,
    seen: &Mutex<Vec<Seen>>,
    healthy: &AtomicBool,
    handler: &Handler,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let request = Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or("/".into(), |p| p.to_string()),
        headers: parts.headers,
        body,
    };
    seen.lock().expect("seen lock").push(request.clone());
    if request.path == "/health" {
        let status = if healthy.load(Ordering::SeqCst) {
            200
        } else {
            503
        };
        return Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"health")))
            .expect("health response");
    }
    let reply = handler(&request);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut builder = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        builder = builder.header(*name, value.as_str());
    }
    builder
        .body(Full::new(Bytes::from(reply.body)))
        .expect("origin response")
}

/// A port with nothing listening on it.
pub async fn dead_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

/// A "backend" that accepts, reads the request, and writes `answer` raw
/// (possibly nothing) before closing. Counts connections.
pub async fn raw_backend(answer: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let count2 = Arc::clone(&count);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            count2.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(answer).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, count)
}

/// The proxy, in-process, on 127.0.0.1:0 with its admin listener.
pub struct Proxy {
    /// Held so the server lives as long as the test (admin holds a Weak).
    #[allow(dead_code)]
    pub server: Arc<Server>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Proxy {
    /// Starts the proxy from TOML text. `[server] listen`/`admin_listen` are
    /// added when the text does not set them.
    pub async fn start(toml: &str) -> Proxy {
        let text = if toml.contains("[server]") {
            toml.to_string()
        } else {
            format!("[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n{toml}")
        };
        let text = if text.contains("[log]") {
            text
        } else {
            format!("{text}\n[log]\naccess = \"off\"\n")
        };
        let config = Config::from_str_at(Path::new("test.toml"), &text)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{text}"));
        Proxy::from_config(config).await
    }

    /// Starts the proxy from a validated config (one read from a file, so
    /// reloads re-read that file).
    pub async fn from_config(config: Config) -> Proxy {
        let server = Server::start(config).await.expect("proxy starts");
        let addr = server.listen_addrs[0];
        let admin = server.admin_addr.expect("admin listener");
        Proxy {
            server,
            addr,
            admin,
        }
    }
}

/// A response as a client saw it.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends one request on a new HTTP/1.1 connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Got {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let response = sender.send_request(req).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// An HTTP/2 client on `stream` (prior knowledge, or after ALPN), its
/// connection driven in the background.
pub async fn h2_client<S>(stream: S) -> hyper::client::conn::http2::SendRequest<Full<Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

/// A GET of `uri` with no body.
pub fn empty_get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// GET `path` with `Host: host` and extra headers.
pub async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut builder = Request::get(path).header("host", host);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    send(
        addr,
        builder.body(Full::new(Bytes::new())).expect("request"),
    )
    .await
}

/// Writes raw bytes and reads until the server closes (or `wait` passes).
/// Returns what was read and whether the connection was closed.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// Counts how many responses each origin name answered.
pub fn tally(bodies: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for b in bodies {
        *counts.entry(b.clone()).or_insert(0) += 1;
    }
    counts
}

/// The OWASP CRS folder: `PALISADE_CRS_DIR`, or `../shared/crs`.
pub fn crs_dir() -> std::path::PathBuf {
    std::env::var_os("PALISADE_CRS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/crs")
        })
}

/// CRS in load order: crs-setup.conf.example, then rules/*.conf sorted.
pub fn crs_files() -> Vec<std::path::PathBuf> {
    let dir = crs_dir();
    let mut rules: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("rules"))
        .unwrap_or_else(|e| panic!("{}: {e} (set PALISADE_CRS_DIR)", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    rules.sort();
    let mut files = vec![dir.join("crs-setup.conf.example")];
    files.extend(rules);
    files
}

/// The MaxMind test databases and their JSON sources.
pub fn geoip_dir() -> std::path::PathBuf {
    std::env::var_os("PALISADE_GEOIP_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/geoip")
        })
}

/// Runs `palisade check -c path`, requires it to fail, and requires each
/// of `expected` in what it printed; returns that output.
pub fn check_fails_with(path: &std::path::Path, expected: &[String]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["check", "-c"])
        .arg(path)
        .output()
        .expect("run palisade check");
    assert_eq!(out.status.code(), Some(1), "check must fail");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for line in expected {
        assert!(
            stderr.contains(line.as_str()),
            "missing {line:?} in:\n{stderr}"
        );
    }
    stderr
}

/// Asks the admin listener to reload the config file.
pub async fn reload(admin: SocketAddr) -> Got {
    let req = Request::post("/reload")
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .expect("reload request");
    send(admin, req).await
}

/// The access log's lines once it has at least `n` (or what it has after
/// a second).
pub async fn log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        if lines.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lines
}

/// Whether a Redis server (not just anything) listens on `port`.
async fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_millis(200), stream.read_exact(&mut reply)).await,
        Ok(Ok(_))
    ) && &reply == b"+PONG\r\n"
}

/// A real `redis-server` on a loopback port of its own, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: std::process::Child,
}

impl RedisServer {
    /// Starts redis-server on a free loopback port and waits until it
    /// answers. `.ci/run` installs it; without it the test fails loudly.
    /// The port is free when chosen but may be taken before redis binds it
    /// (tests start listeners on port 0 all the time): then redis exits
    /// and another port is tried.
    pub async fn start() -> RedisServer {
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if let Some(server) = RedisServer::try_on_port(port).await {
                return server;
            }
        }
        panic!("redis-server did not start on any of 10 ports");
    }

    /// Starts redis-server on `port` (to bring a stopped one back).
    pub async fn on_port(port: u16) -> RedisServer {
        match RedisServer::try_on_port(port).await {
            Some(server) => server,
            None => panic!("redis-server did not start on port {port}"),
        }
    }

    /// Starts redis-server on `port`; `None` when it does not come up
    /// answering PING (the port was taken, say).
    async fn try_on_port(port: u16) -> Option<RedisServer> {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (bash .ci/run installs it)");
        // Owned at once, so a failed start still kills it.
        let mut server = RedisServer { port, child };
        for _ in 0..200 {
            if matches!(server.child.try_wait(), Ok(Some(_))) {
                return None;
            }
            if answers_ping(port).await {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Pauses the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Stops the server and waits until it is gone.
    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused server too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
