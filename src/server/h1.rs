//! HTTP/1.1 towards clients: our own connection loop, reading request heads
//! with httparse straight from the socket buffer and writing each response
//! head and its first body bytes in one vectored write.
//!
//! It owns the client side of RFC 9112 that a security proxy cannot leave
//! to chance: request framing is strict (a request with both
//! `Content-Length` and `Transfer-Encoding`, conflicting lengths, `chunked`
//! twice or not last, or a transfer coding we do not know is refused and the
//! connection closed), the head must arrive whole within
//! `header_read_timeout`, and a connection whose request body was not read
//! to the end is closed rather than reused.
//!
//! One per-connection ticker does all the timing (idle keep-alive, head
//! timeout, stalled writes); a request costs no timer of its own, and a
//! timer armed per request is what made hyper's server wake its own runtime
//! through the eventfd on most requests.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version, request};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

use super::respond::{ProxyError, error_response};
use super::transport::Transport;
use crate::config::Limits;
use crate::framing::{BodyState, Step, parse_decimal, step};
use crate::pipeline::{ConnInfo, RequestBody, ResponseBody, SharedRuntime, handle, request_id};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Heads with at most this many fields are parsed without a heap array.
const STACK_HEADERS: usize = 128;
const READ_CHUNK: usize = 16 * 1024;
const MAX_BODY_READ: usize = 256 * 1024;
/// How long and how much a closing connection keeps reading what the
/// client still sends, so our answer is not destroyed by a TCP reset.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// The per-connection timing settings, from `[server.limits]`.
#[derive(Debug, Clone, Copy)]
pub struct H1Limits {
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Bytes per second a body must average after `header_read_timeout`.
    pub min_body_rate: u64,
}

impl H1Limits {
    pub fn from_limits(limits: &Limits) -> H1Limits {
        H1Limits {
            header_read_timeout: limits.header_read_timeout,
            keepalive_timeout: limits.keepalive_timeout,
            max_header_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
            min_body_rate: limits.min_body_rate,
        }
    }

    /// The ticker period: fine enough that no timeout overshoots by more
    /// than a quarter.
    fn tick(&self) -> Duration {
        (self.header_read_timeout.min(self.keepalive_timeout) / 4).max(Duration::from_millis(10))
    }
}

/// Why a request head could not be read.
#[derive(Debug)]
enum HeadError {
    /// The client closed, went idle past the timeout, or we are draining:
    /// close without an answer.
    Close,
    /// Broken or hostile input: answer with this error, then close.
    Reject(ProxyError),
}

/// The client socket and the bytes read from it but not consumed yet.
pub struct ClientIo<S> {
    stream: S,
    buf: BytesMut,
    /// Set while a request's body is still (partly) on the wire.
    body_pending: bool,
}

impl<S: Transport> ClientIo<S> {
    pub fn new(stream: S, buf: BytesMut) -> ClientIo<S> {
        ClientIo {
            stream,
            buf,
            body_pending: false,
        }
    }

    /// The socket and the bytes read from it but not consumed.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.stream, self.buf)
    }

    async fn read_more(&mut self, want: usize) -> io::Result<usize> {
        self.buf.reserve(want);
        self.stream.read_buf(&mut self.buf).await
    }
}

/// Reads the first bytes of a connection, enough to tell HTTP/2 prior
/// knowledge from HTTP/1. `Ok(true)` means the connection starts with the
/// HTTP/2 preface; the bytes read stay in `io.buf` either way.
pub async fn sniff_h2<S: Transport>(io: &mut ClientIo<S>, limits: &H1Limits) -> io::Result<bool> {
    let deadline = tokio::time::Instant::now() + limits.header_read_timeout;
    loop {
        let n = io.buf.len().min(H2_PREFACE.len());
        if io.buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        match tokio::time::timeout_at(deadline, io.read_more(READ_CHUNK)).await {
            Ok(Ok(0)) | Err(_) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Serves HTTP/1.x requests on `io` until the client or a timeout closes it,
/// or the server drains.
pub async fn serve<S: Transport>(
    mut io: ClientIo<S>,
    info: ConnInfo,
    runtime: &SharedRuntime,
    limits: H1Limits,
    shutdown: watch::Receiver<bool>,
) {
    // One wait for the drain signal for the whole connection: a fresh
    // `changed()` per request would lock the channel's waiter list, shared
    // by every connection on every thread, twice per request.
    let drain = Drain::new(shutdown);
    let drain_signal = drain.signal();
    tokio::pin!(drain_signal);
    let mut ticker = tokio::time::interval(limits.tick());
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.reset();
    let mut out = Vec::with_capacity(512);
    let mut first = true;
    loop {
        let (head, framing) =
            match read_head(&mut io, &limits, &mut ticker, drain_signal.as_mut(), first).await {
                Ok(parsed) => parsed,
                Err(HeadError::Close) => return,
                Err(HeadError::Reject(e)) => {
                    let id = request_id::generate();
                    crate::pipeline::log_rejected_head(runtime, &info, &e, id.clone());
                    let response = error_response(&e, &id, None);
                    let _ = write_response(
                        &mut io,
                        &mut out,
                        response,
                        &ResponseMode::closing(limits.keepalive_timeout),
                    )
                    .await;
                    linger_close(io).await;
                    return;
                }
            };
        first = false;
        let is_head = head.method == Method::HEAD;
        let client_version = head.version;
        io.body_pending = !matches!(framing.body, RequestBodyKind::Empty);
        let body = H1Body {
            io: &mut io,
            kind: framing.body,
            expect_continue: framing.expect_continue,
            stall: limits.keepalive_timeout,
            pace: Pace::new(limits.header_read_timeout, limits.min_body_rate),
        };
        let mut response = handle(runtime, info.clone(), head, body).await;
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS
            && let Some(tunnel) = response
                .extensions_mut()
                .remove::<crate::upstream::Tunnel>()
        {
            tunnel_to(io, &response, &tunnel, drain_signal.as_mut()).await;
            return;
        }
        let closing = drain.started();
        let keep_alive =
            framing.keep_alive && !io.body_pending && !closing && !wants_close(response.headers());
        let mode = ResponseMode {
            is_head,
            stall: limits.keepalive_timeout,
            keep_alive,
            http10: client_version == Version::HTTP_10,
        };
        let wrote = write_response(&mut io, &mut out, response, &mode).await;
        match wrote {
            Ok(()) if keep_alive => {}
            Ok(()) => {
                linger_close(io).await;
                return;
            }
            Err(_) => return,
        }
    }
}

/// Answers 101 and relays bytes both ways between the client and the
/// backend that switched protocols, until either side closes or the
/// server drains. Neither side's bytes are parsed from here on.
async fn tunnel_to<S: Transport, R>(
    io: ClientIo<S>,
    response: &Response<R>,
    tunnel: &crate::upstream::Tunnel,
    drain: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) {
    let Some((mut backend, leftover)) = tunnel.take() else {
        return;
    };
    let mut head = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
    for (name, value) in response.headers() {
        push_field(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let (mut client, early) = io.into_parts();
    let relay = async {
        client.write_all(&head).await?;
        client.write_all(&leftover).await?;
        // Bytes the client sent right behind its request head.
        backend.write_all(&early).await?;
        tokio::io::copy_bidirectional(&mut client, &mut backend).await
    };
    tokio::select! {
        _ = relay => {}
        _ = drain => {}
    }
}

/// The server's drain signal as one connection sees it.
struct Drain {
    rx: watch::Receiver<bool>,
    /// Draining had begun before the connection started.
    already: bool,
}

impl Drain {
    fn new(rx: watch::Receiver<bool>) -> Drain {
        let already = *rx.borrow();
        Drain { rx, already }
    }

    /// Whether the drain has begun. Only reads the channel's version, so
    /// asking on every request shares no cache line for writing.
    fn started(&self) -> bool {
        self.already || self.rx.has_changed().unwrap_or(true)
    }

    /// Completes when the drain begins (at once if it already has).
    fn signal(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut rx = self.rx.clone();
        let already = self.already;
        async move {
            if already {
                return;
            }
            loop {
                if rx.changed().await.is_err() || *rx.borrow() {
                    return;
                }
            }
        }
    }
}

fn wants_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v.as_bytes(), b"close"))
}

fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestBodyKind {
    Empty,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, Copy)]
struct RequestFraming {
    body: RequestBodyKind,
    keep_alive: bool,
    expect_continue: bool,
}

/// Waits for a complete request head and parses it. The first request of a
/// connection, and every head once its first byte arrived, must be complete
/// within `header_read_timeout`; between requests an empty connection may
/// idle for `keepalive_timeout`.
async fn read_head<S: Transport>(
    io: &mut ClientIo<S>,
    limits: &H1Limits,
    ticker: &mut Interval,
    mut drain_signal: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    first: bool,
) -> Result<(request::Parts, RequestFraming), HeadError> {
    // Time is counted in ticks of the connection's ticker, not read from
    // the clock: a request then costs no clock read here. The first tick
    // seen may come at once, so a limit of n ticks waits n + 1.
    let tick = limits.tick().as_nanos().max(1);
    let ticks_for = |limit: Duration| (limit.as_nanos() / tick) as u64 + 1;
    let mut ticks_waiting = 0u64;
    let mut ticks_in_head = (!io.buf.is_empty()).then_some(0u64);
    let mut draining = false;
    loop {
        if !io.buf.is_empty() {
            if let Some(parsed) = parse_request(&mut io.buf, limits)? {
                return Ok(parsed);
            }
            if io.buf.len() >= limits.max_header_bytes {
                return Err(HeadError::Reject(ProxyError::HeadersTooLarge));
            }
        } else if draining {
            return Err(HeadError::Close);
        }
        tokio::select! {
            biased;
            read = io.read_more(READ_CHUNK) => match read {
                Ok(0) | Err(_) => return Err(HeadError::Close),
                Ok(_) => {
                    ticks_in_head.get_or_insert(0);
                }
            },
            _ = ticker.tick() => {
                ticks_waiting += 1;
                if let Some(ticks) = ticks_in_head.as_mut() {
                    *ticks += 1;
                }
                let limit_passed = match ticks_in_head {
                    Some(ticks) => ticks >= ticks_for(limits.header_read_timeout),
                    None if first => ticks_waiting >= ticks_for(limits.header_read_timeout),
                    None => ticks_waiting >= ticks_for(limits.keepalive_timeout),
                };
                if limit_passed {
                    return Err(HeadError::Close);
                }
            }
            () = drain_signal.as_mut(), if !draining => {
                draining = true;
            }
        }
    }
}

/// Parses a complete request head at the start of `buf` and splits it off;
/// `None` while it is incomplete.
fn parse_request(
    buf: &mut BytesMut,
    limits: &H1Limits,
) -> Result<Option<(request::Parts, RequestFraming)>, HeadError> {
    let scanned = if limits.max_headers <= STACK_HEADERS {
        let mut headers =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
        scan_head(buf, &mut headers[..limits.max_headers], limits)?
    } else {
        let mut headers = Vec::new();
        headers.resize_with(limits.max_headers, std::mem::MaybeUninit::uninit);
        scan_head(buf, &mut headers, limits)?
    };
    let Some(scanned) = scanned else {
        return Ok(None);
    };
    let bad = |why| HeadError::Reject(ProxyError::BadRequest(why));
    // Field values and the target keep pointing into the head's bytes:
    // one shared buffer instead of a copy per field.
    let head = buf.split_to(scanned.head_len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(scanned.target))
        .map_err(|_| bad("bad request target"))?;
    // Room for the forwarding fields the pipeline adds.
    let mut map = HeaderMap::with_capacity(scanned.fields.len() + 6);
    for (name, start, end) in scanned.fields {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| bad("bad field value"))?;
        map.append(name, value);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = scanned.method;
    parts.uri = uri;
    parts.version = scanned.version;
    parts.headers = map;
    Ok(Some((parts, scanned.framing)))
}

/// How a parsed request's body is framed, as the fuzz targets and
/// property tests see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Parses one request head at the start of `bytes` with the default limits,
/// as a connection would: `Ok(None)` while incomplete, `Err` with the
/// answer the client would get. For the fuzz targets and property tests,
/// which check what a parsed head can never hold.
pub fn parse_head(bytes: &[u8]) -> Result<Option<(request::Parts, BodyFraming)>, ProxyError> {
    let limits = H1Limits::from_limits(&Limits::default());
    let mut buf = BytesMut::from(bytes);
    match parse_request(&mut buf, &limits) {
        Ok(Some((parts, framing))) => {
            let body = match framing.body {
                RequestBodyKind::Empty => BodyFraming::None,
                RequestBodyKind::Length(n) => BodyFraming::Length(n),
                RequestBodyKind::Chunked => BodyFraming::Chunked,
            };
            Ok(Some((parts, body)))
        }
        Ok(None) => Ok(None),
        Err(HeadError::Reject(e)) => Err(e),
        Err(HeadError::Close) => Err(ProxyError::BadRequest("closed")),
    }
}

/// A parsed head as positions in the read buffer.
struct ScannedHead {
    head_len: usize,
    method: Method,
    version: Version,
    target: std::ops::Range<usize>,
    fields: Vec<(HeaderName, usize, usize)>,
    framing: RequestFraming,
}

fn scan_head<'b>(
    buf: &'b [u8],
    headers: &mut [std::mem::MaybeUninit<httparse::Header<'b>>],
    limits: &H1Limits,
) -> Result<Option<ScannedHead>, HeadError> {
    let bad = |why| HeadError::Reject(ProxyError::BadRequest(why));
    let mut parsed = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        headers,
    );
    let head_len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::Reject(ProxyError::HeadersTooLarge));
        }
        Err(_) => return Err(bad("malformed request head")),
    };
    if head_len > limits.max_header_bytes {
        return Err(HeadError::Reject(ProxyError::HeadersTooLarge));
    }
    // httparse accepts a bare LF as a line end; a backend or a cache in
    // front of it may not, and the two would then see different requests.
    if memchr::memchr_iter(b'\n', &buf[..head_len]).any(|i| i == 0 || buf[i - 1] != b'\r') {
        return Err(bad("bare LF in the request head"));
    }
    let method = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(bad("bad method"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(bad("bad HTTP version")),
    };
    let framing = scan_framing(parsed.headers, version, &method)?;
    let mut hosts = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    if let Some(host) = hosts.next() {
        // RFC 9112 §3.2: more than one Host, or an invalid one, is a 400.
        if hosts.next().is_some() {
            return Err(bad("more than one Host"));
        }
        if !crate::pipeline::router::valid_host(host.value) {
            return Err(bad("invalid Host"));
        }
    }
    let base = buf.as_ptr() as usize;
    let path = parsed.path.ok_or(bad("no request target"))?;
    let start = path.as_ptr() as usize - base;
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("bad field name"))?;
        let at = h.value.as_ptr() as usize - base;
        fields.push((name, at, at + h.value.len()));
    }
    Ok(Some(ScannedHead {
        head_len,
        method,
        version,
        target: start..start + path.len(),
        fields,
        framing,
    }))
}

/// Request framing, RFC 9112 §6, strictly: anything a front end and a back
/// end could read differently is refused.
fn scan_framing(
    headers: &[httparse::Header<'_>],
    version: Version,
    method: &Method,
) -> Result<RequestFraming, HeadError> {
    let bad = |why| HeadError::Reject(ProxyError::BadRequest(why));
    let mut keep_alive = version == Version::HTTP_11;
    let mut expect_continue = false;
    let mut length: Option<u64> = None;
    let mut chunked_count = 0;
    let mut has_transfer_encoding = false;
    let mut last_coding_chunked = false;
    for h in headers {
        let value = h.value;
        if h.name.eq_ignore_ascii_case("content-length") {
            // One value, once. RFC 9110 §8.6 lets a recipient fold
            // `5, 5` or a repeated field into one length, but a backend
            // or cache along the way may not agree on which copy counts:
            // refused, as nginx refuses it.
            if length.is_some() || value.contains(&b',') {
                return Err(bad("duplicate Content-Length"));
            }
            length = Some(parse_decimal(value.trim_ascii()).ok_or(bad("bad Content-Length"))?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_transfer_encoding = true;
            for coding in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if coding.is_empty() {
                    continue;
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked_count += 1;
                    last_coding_chunked = true;
                } else {
                    // We could only pass such a body on undecoded, and the
                    // backend might frame it differently.
                    return Err(HeadError::Reject(ProxyError::NotImplemented(
                        "unsupported transfer coding",
                    )));
                }
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            if has_token(value, b"close") {
                keep_alive = false;
            } else if version == Version::HTTP_10 && has_token(value, b"keep-alive") {
                keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("expect")
            && value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
        {
            expect_continue = version == Version::HTTP_11;
        }
    }
    let body = if has_transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if length.is_some() {
            return Err(bad("both Content-Length and Transfer-Encoding"));
        }
        if chunked_count != 1 || !last_coding_chunked {
            return Err(bad("chunked must be applied exactly once"));
        }
        RequestBodyKind::Chunked
    } else {
        match length {
            None | Some(0) => RequestBodyKind::Empty,
            Some(n) => RequestBodyKind::Length(n),
        }
    };
    // CONNECT and Upgrade tunnels are not proxied; their bytes after the
    // head would be read as the next request.
    if *method == Method::CONNECT {
        return Err(HeadError::Reject(ProxyError::NotImplemented(
            "CONNECT is not supported",
        )));
    }
    Ok(RequestFraming {
        body,
        keep_alive,
        expect_continue: expect_continue && body != RequestBodyKind::Empty,
    })
}

/// The body of an HTTP/1.x request, read from the client connection when
/// the pipeline asks for it.
struct H1Body<'a, S> {
    io: &'a mut ClientIo<S>,
    kind: RequestBodyKind,
    expect_continue: bool,
    /// How long the client may take no bytes of the 100 Continue.
    stall: Duration,
    /// The least rate the body must keep up (slow-body attacks).
    pace: Option<Pace>,
}

/// A minimum body rate: by time `t` after the head, a client must have
/// sent `rate × (t − grace)` bytes. Averaged, so a pause is forgiven if
/// the bytes come; a client dribbling a byte now and then is not, however
/// long its body claims to be (`request_timeout` alone would let it hold
/// the connection for the whole of it).
#[derive(Debug, Clone, Copy)]
struct Pace {
    start: tokio::time::Instant,
    grace: Duration,
    rate: u64,
}

impl Pace {
    fn new(grace: Duration, rate: u64) -> Option<Pace> {
        (rate > 0).then(|| Pace {
            start: tokio::time::Instant::now(),
            grace,
            rate,
        })
    }

    /// When byte `received + 1` must have arrived.
    fn deadline(&self, received: usize) -> tokio::time::Instant {
        // Saturating: `grace` comes from the config, and a far deadline
        // is the same as none (`request_timeout` still holds).
        let owed = Duration::try_from_secs_f64((received as f64 + 1.0) / self.rate as f64)
            .unwrap_or(Duration::MAX);
        self.start
            .checked_add(self.grace.saturating_add(owed))
            .unwrap_or_else(|| self.start + Duration::from_secs(86_400 * 365))
    }
}

/// `read` (a read of more body bytes), held to `pace` given `received`
/// bytes so far: a client behind the minimum rate gets 408.
async fn paced(
    read: impl std::future::Future<Output = io::Result<usize>>,
    pace: Option<Pace>,
    received: usize,
) -> Result<usize, ProxyError> {
    let cut_short = || ProxyError::BadRequest("request body cut short");
    match pace {
        None => read.await.map_err(|_| cut_short()),
        Some(pace) => match tokio::time::timeout_at(pace.deadline(received), read).await {
            Err(_) => Err(ProxyError::RequestTimeout),
            Ok(read) => read.map_err(|_| cut_short()),
        },
    }
}

impl<S: Transport> RequestBody for H1Body<'_, S> {
    fn declared_length(&self) -> Option<u64> {
        match self.kind {
            RequestBodyKind::Empty => Some(0),
            RequestBodyKind::Length(n) => Some(n),
            RequestBodyKind::Chunked => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.kind == RequestBodyKind::Empty
    }

    async fn read_all(self, limit: u64) -> Result<Bytes, ProxyError> {
        let io = self.io;
        let cut_short = ProxyError::BadRequest("request body cut short");
        if self.expect_continue && io.buf.is_empty() {
            const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
            io.stream
                .write_parts([CONTINUE, &[], &[], &[]], self.stall)
                .await
                .map_err(|_| cut_short.clone())?;
        }
        let body = match self.kind {
            RequestBodyKind::Empty => Bytes::new(),
            RequestBodyKind::Length(n) => {
                if n > limit {
                    return Err(ProxyError::PayloadTooLarge);
                }
                let n = usize::try_from(n).map_err(|_| ProxyError::PayloadTooLarge)?;
                while io.buf.len() < n {
                    let want = (n - io.buf.len()).clamp(READ_CHUNK, MAX_BODY_READ);
                    let received = io.buf.len();
                    if paced(io.read_more(want), self.pace, received).await? == 0 {
                        return Err(cut_short);
                    }
                }
                io.buf.split_to(n).freeze()
            }
            RequestBodyKind::Chunked => {
                let mut state = BodyState::ChunkSize;
                let mut body = BytesMut::new();
                loop {
                    match step(&mut state, &mut io.buf) {
                        Ok(Step::Data(data) | Step::LastData(data)) => {
                            if (body.len() + data.len()) as u64 > limit {
                                return Err(ProxyError::PayloadTooLarge);
                            }
                            body.extend_from_slice(&data);
                        }
                        Ok(Step::Finished) => break,
                        Ok(Step::NeedMore) => {
                            let received = body.len() + io.buf.len();
                            if paced(io.read_more(READ_CHUNK), self.pace, received).await? == 0 {
                                return Err(cut_short);
                            }
                        }
                        Err(e) => return Err(ProxyError::BadRequest(e.0)),
                    }
                }
                body.freeze()
            }
        };
        io.body_pending = false;
        Ok(body)
    }
}

/// What the response must look like on this connection.
struct ResponseMode {
    is_head: bool,
    /// How long the client may take no bytes before we give up on it.
    stall: Duration,
    keep_alive: bool,
    /// The client spoke HTTP/1.0: no chunked encoding for it.
    http10: bool,
}

impl ResponseMode {
    fn closing(stall: Duration) -> ResponseMode {
        ResponseMode {
            is_head: false,
            stall,
            keep_alive: false,
            http10: false,
        }
    }
}

/// Writes the response head and body. The head goes out together with the
/// first body bytes. `Err` means the connection is unusable (client gone,
/// or the body failed halfway and only closing can tell the client).
async fn write_response<S: Transport>(
    io: &mut ClientIo<S>,
    out: &mut Vec<u8>,
    response: Response<ResponseBody>,
    mode: &ResponseMode,
) -> io::Result<()> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let bodiless = mode.is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = http_body::Body::size_hint(&body).exact();
    let chunked = !bodiless && length.is_none() && !mode.http10;
    let keep_alive = mode.keep_alive && (bodiless || length.is_some() || chunked);

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = parts.headers.contains_key(header::DATE);
    if let Some(fields) = body.origin_fields() {
        for (name, value) in fields.iter() {
            // Hop-by-hop fields were dropped when the head was parsed; the
            // length is ours to state (except for HEAD, where it is the
            // origin's statement about the GET body).
            if mode.is_head || !name.eq_ignore_ascii_case(b"content-length") {
                push_field(out, name, value);
            }
            has_date |= name.eq_ignore_ascii_case(b"date");
        }
    }
    for (name, value) in &parts.headers {
        let ours = *name == header::CONNECTION
            || *name == header::TRANSFER_ENCODING
            || (*name == header::CONTENT_LENGTH && !mode.is_head);
        if !ours {
            push_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if !has_date {
        push_field(out, b"date", &http_date());
    }
    if !bodiless {
        match length {
            Some(n) => {
                push_field(out, b"content-length", crate::decimal::digits(n).as_bytes());
            }
            None if chunked => push_field(out, b"transfer-encoding", b"chunked"),
            None => {}
        }
    }
    if !keep_alive {
        push_field(out, b"connection", b"close");
    } else if mode.http10 {
        push_field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");

    if bodiless {
        body.end_log();
        return io
            .stream
            .write_parts([out, &[], &[], &[]], mode.stall)
            .await;
    }
    let mut head_sent = false;
    let mut chunk_line = Vec::with_capacity(20);
    loop {
        let frame = match body.frame().await {
            None => None,
            Some(Ok(frame)) => frame.into_data().ok(),
            Some(Err(_)) => return Err(io::ErrorKind::BrokenPipe.into()),
        };
        let ended = frame.is_none() || http_body::Body::is_end_stream(&body);
        let data = frame.unwrap_or_default();
        if data.is_empty() && !ended {
            continue;
        }
        let head: &[u8] = if head_sent { &[] } else { out };
        let finish: &[u8] = if chunked && ended {
            if data.is_empty() {
                b"0\r\n\r\n"
            } else {
                b"\r\n0\r\n\r\n"
            }
        } else if chunked && !data.is_empty() {
            b"\r\n"
        } else {
            b""
        };
        chunk_line.clear();
        if chunked && !data.is_empty() {
            chunk_line.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if ended {
            // The log phase runs as the last bytes are handed to the
            // socket, so anything that reads the log or the metrics after
            // the client has its answer sees this request.
            body.end_log();
        }
        // A cache hit kept in a memory file goes from the file (the
        // transport decides how); anything else as bytes.
        let file = body
            .file()
            .filter(|_| !chunked)
            .and_then(|f| Some((Arc::clone(f), f.region(&data)?)));
        match file {
            Some((file, (offset, len))) if len > 0 => {
                io.stream
                    .write_file(head, &file, offset, len, mode.stall)
                    .await?
            }
            _ => {
                io.stream
                    .write_parts([head, &chunk_line, &data, finish], mode.stall)
                    .await?
            }
        }
        head_sent = true;
        if ended {
            return Ok(());
        }
    }
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Closes the connection after our last answer: stop sending, then read
/// and drop what the client still sends for a moment, so the kernel does
/// not answer it with a reset that could destroy the answer in flight.
async fn linger_close<S: Transport>(mut io: ClientIo<S>) {
    if io.stream.shutdown().await.is_err() {
        return;
    }
    let mut scratch = [0u8; 8192];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while left > 0 {
            match io.stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// The current time as an HTTP date, formatted once per second per thread.
fn http_date() -> [u8; 29] {
    thread_local! {
        static CACHED: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((0, [b' '; 29])) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let (at, text) = cached.get();
        if at == secs {
            return text;
        }
        let mut fresh = [b' '; 29];
        let formatted = httpdate::fmt_http_date(now);
        let n = formatted.len().min(29);
        fresh[..n].copy_from_slice(&formatted.as_bytes()[..n]);
        cached.set((secs, fresh));
        fresh
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> H1Limits {
        H1Limits {
            header_read_timeout: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
            max_header_bytes: 8192,
            max_headers: 16,
            min_body_rate: 500,
        }
    }

    fn parse(text: &str) -> Result<(request::Parts, RequestFraming), String> {
        let mut buf = BytesMut::from(text);
        match parse_request(&mut buf, &limits()) {
            Ok(Some(parsed)) => Ok(parsed),
            Ok(None) => Err("partial".into()),
            Err(HeadError::Reject(e)) => Err(e.to_string()),
            Err(HeadError::Close) => Err("close".into()),
        }
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let refused = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3 4\r\n\r\n",
            "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\n\n",
            "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
        ];
        for text in refused {
            assert!(parse(text).is_err(), "accepted {text:?}");
        }
    }

    #[test]
    fn framing_of_well_formed_requests() {
        let (_, f) = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(f.body, RequestBodyKind::Length(3));
        assert!(f.keep_alive);
        let (_, f) =
            parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(f.body, RequestBodyKind::Chunked);
        let (_, f) = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert_eq!(f.body, RequestBodyKind::Empty);
        assert!(f.keep_alive);
        let (_, f) = parse("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!f.keep_alive);
        let (_, f) = parse("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap();
        assert!(!f.keep_alive);
    }

    #[test]
    fn head_fields_and_target_survive_parsing() {
        let (parts, _) =
            parse("GET /a/b?q=1 HTTP/1.1\r\nHost: site.test\r\nX-One: 1\r\nX-One: 2\r\n\r\n")
                .unwrap();
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.uri.path(), "/a/b");
        assert_eq!(parts.uri.query(), Some("q=1"));
        assert_eq!(parts.headers["host"], "site.test");
        assert_eq!(parts.headers.get_all("x-one").iter().count(), 2);
    }

    #[test]
    fn incomplete_head_waits_and_too_many_fields_is_refused() {
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap_err(),
            "partial"
        );
        let many: String = (0..40).map(|i| format!("X-{i}: v\r\n")).collect();
        let err = parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err();
        assert!(err.contains("head"), "{err}");
    }

    /// Mutated requests never panic the parser, and whatever it accepts is
    /// framed unambiguously: chunked never beside a Content-Length, and a
    /// length only when every Content-Length agrees with it.
    #[test]
    fn mutated_requests_parse_unambiguously_or_not_at_all() {
        let seeds: [&[u8]; 3] = [
            b"POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        ];
        let alphabet = b"\r\n :,;0123456789-+chunkedContent-LengthTransfer-Encoding\x00\x7f\t";
        let mut next = crate::test_rng::xorshift(0x2545_f491_4f6c_dd1d);
        let mut lims = limits();
        lims.max_headers = 8;
        let mut accepted = 0;
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % (bytes.len() + 1);
                let b = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if at < bytes.len() => bytes[at] = b,
                    1 => bytes.insert(at, b),
                    _ => bytes.truncate(at.max(1)),
                }
            }
            let before = bytes.len();
            let mut buf = BytesMut::from(&bytes[..]);
            let Ok(Some((parts, framing))) = parse_request(&mut buf, &lims) else {
                continue;
            };
            accepted += 1;
            assert!(buf.len() < before, "the head was consumed");
            let lengths: Vec<&HeaderValue> =
                parts.headers.get_all("content-length").iter().collect();
            match framing.body {
                RequestBodyKind::Chunked => assert!(lengths.is_empty(), "{bytes:?}"),
                RequestBodyKind::Length(n) => {
                    for v in lengths {
                        for part in v.as_bytes().split(|b| *b == b',') {
                            assert_eq!(parse_decimal(part.trim_ascii()), Some(n), "{bytes:?}");
                        }
                    }
                    assert!(!parts.headers.contains_key("transfer-encoding"));
                }
                RequestBodyKind::Empty => {
                    assert!(!parts.headers.contains_key("transfer-encoding"));
                }
            }
        }
        // Enough mutants got through for the checks above to mean something.
        assert!(accepted > 2_000, "only {accepted} mutants parsed");
    }

    #[test]
    fn date_is_an_imf_fixdate() {
        let date = http_date();
        let text = std::str::from_utf8(&date).unwrap();
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
