//! One client connection: the TLS handshake on HTTPS listeners (ALPN picks
//! the protocol), else HTTP/2 prior knowledge told from HTTP/1 by the first
//! bytes; then HTTP/1.x with our own loop (`h1.rs`) or HTTP/2 through
//! hyper, with the keep-alive idle timeout and graceful close when the
//! server drains.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::h1::{self, ClientIo, H1Limits};
use super::transport::Transport;
use crate::admin::metrics::Metrics;
use crate::config::Limits;
use crate::pipeline::{ConnInfo, SharedRuntime, handle};

/// What every connection of a listener shares.
pub struct ConnShared {
    pub runtime: SharedRuntime,
    pub h1: H1Limits,
    pub h2: http2::Builder<TokioExecutor>,
    pub keepalive_timeout: Duration,
    /// "https" on TLS listeners.
    pub scheme: &'static str,
    /// The port HTTPS is served on, for redirects from plain HTTP.
    pub https_port: Option<u16>,
    /// Set on TLS listeners.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub metrics: Arc<Metrics>,
}

pub fn h2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Serves one accepted connection until it closes. Holding `_admission`
/// counts it against the connection limits; holding `_drain` keeps the drain waiting.
pub async fn serve(
    stream: TcpStream,
    info: ConnInfo,
    shared: Arc<ConnShared>,
    shutdown: watch::Receiver<bool>,
    _admission: super::admission::Admission,
    _drain: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = &shared.tls else {
        return serve_plain(stream, info, &shared, shutdown).await;
    };
    // The handshake is held to the same limit as a request head: a client
    // that opens connections and never finishes a handshake must not keep
    // them.
    let handshake =
        tokio::time::timeout(shared.h1.header_read_timeout, acceptor.accept(stream)).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            shared.metrics.tls_handshake_failures.inc();
            tracing::debug!(peer = %info.peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.tls_handshake_failures.inc();
            tracing::debug!(peer = %info.peer, "TLS handshake timed out");
            return;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_h2(stream, BytesMut::new(), info, &shared, shutdown).await;
    } else {
        let io = ClientIo::new(stream, BytesMut::with_capacity(4096));
        h1::serve(io, info, &shared.runtime, shared.h1, shutdown).await;
    }
}

/// A plain-TCP connection: HTTP/2 with prior knowledge, or HTTP/1.x.
async fn serve_plain(
    stream: TcpStream,
    info: ConnInfo,
    shared: &ConnShared,
    shutdown: watch::Receiver<bool>,
) {
    let mut io = ClientIo::new(stream, BytesMut::with_capacity(4096));
    match h1::sniff_h2(&mut io, &shared.h1).await {
        Ok(false) => h1::serve(io, info, &shared.runtime, shared.h1, shutdown).await,
        Ok(true) => {
            let (stream, buf) = io.into_parts();
            serve_h2(stream, buf, info, shared, shutdown).await;
        }
        Err(_) => {}
    }
}

/// Serves an HTTP/2 connection whose first bytes, `read`, were already
/// taken off the socket.
async fn serve_h2<S: Transport>(
    stream: S,
    read: BytesMut,
    info: ConnInfo,
    shared: &ConnShared,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(CountingIo {
        inner: stream,
        read,
        activity: Arc::clone(&activity),
    });
    let peer = info.peer;
    let runtime = Arc::clone(&shared.runtime);
    let service = service_fn(move |req| {
        let runtime = Arc::clone(&runtime);
        let info = info.clone();
        async move {
            let (head, body) = req.into_parts();
            let mut response = handle(&runtime, info, head, body).await;
            // hyper writes only the header map.
            if let Some(fields) = response.body_mut().take_origin_fields() {
                let ours = std::mem::take(response.headers_mut());
                fields.move_into(response.headers_mut());
                for (name, value) in &ours {
                    response.headers_mut().append(name, value.clone());
                }
            }
            Ok::<_, Infallible>(response)
        }
    });
    let conn = shared.h2.serve_connection(io, service);
    tokio::pin!(conn);

    // The idle check runs four times per timeout: a connection with no
    // bytes moving for four ticks in a row has been idle for the timeout.
    let tick = (shared.keepalive_timeout / 4).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    let mut last_seen = 0;
    let mut idle_ticks = 0;
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            // The connection first: it is what wakes this task nearly always.
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    shared.metrics.h2_connection_errors.inc();
                    tracing::info!(peer = %peer, error = %e, "HTTP/2 connection ended with an error");
                }
                return;
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = ticker.tick(), if !closing => {
                let seen = activity.load(Ordering::Relaxed);
                if seen == last_seen {
                    idle_ticks += 1;
                    if idle_ticks >= 4 {
                        closing = true;
                        // Lets in-flight streams finish, then closes.
                        conn.as_mut().graceful_shutdown();
                    }
                } else {
                    last_seen = seen;
                    idle_ticks = 0;
                }
            }
        }
    }
}

/// Answers a connection over the limit with a 503 and closes it, without
/// spending a request task on it.
pub async fn refuse(mut stream: TcpStream, status: http::StatusCode) {
    use tokio::io::AsyncWriteExt;
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// A TCP stream that first replays the bytes already read from it, and
/// counts reads and writes that moved bytes, for the idle check.
struct CountingIo<S> {
    inner: S,
    read: BytesMut,
    activity: Arc<AtomicU64>,
}

impl<S> CountingIo<S> {
    fn bump(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.bump();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.bump();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.bump();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
