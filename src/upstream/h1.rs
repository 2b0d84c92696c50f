//! The HTTP/1.1 client side towards backends, driven inside the request's own
//! task: the request is written in one vectored write, the response head is
//! parsed with httparse, and the body is read by `UpstreamBody` as the client
//! side consumes it. No connection task and no channel sit in between, which
//! is what made the upstream half of a proxied request cost more than the
//! client half.
//!
//! Framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304;
//! `Transfer-Encoding` ending in `chunked` is decoded; any other
//! `Transfer-Encoding`, or no length at all, reads to connection close; else
//! one valid `Content-Length`. Conflicting lengths are an error (502), never
//! a guess.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::HeaderMap;
use http::{Method, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::InFlight;
use super::pool::IdleSlot;
use super::stream::BackendStream;
use crate::framing::parse_decimal;
use crate::framing::{BodyState, FramingError, OriginFields, Step, step};

const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
const READ_CHUNK: usize = 16 * 1024;
/// See `UpstreamConn::poll_read_more`.
const READ_OFFSET: usize = 320;
/// The most one read of a body asks for: a body of known length up to this
/// size arrives in one read when the backend sent it all.
const MAX_READ: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("backend closed the connection before a complete response head")]
    ClosedBeforeHead,
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("backend closed the connection in the middle of the body")]
    Truncated,
    #[error("backend sent nothing for the read timeout in the middle of the body")]
    Stalled,
}

impl From<FramingError> for H1Error {
    fn from(e: FramingError) -> H1Error {
        H1Error::Malformed(e.0)
    }
}

/// A connection to a backend with the bytes already read past the last
/// response.
pub struct UpstreamConn {
    stream: BackendStream,
    buf: BytesMut,
    /// How much the next read for a response head asks for: sized after
    /// the last response on this connection, so a backend that serves 64 KiB
    /// objects has head and body arrive in one read, and one serving small
    /// pages keeps small buffers.
    head_read: usize,
    /// Reused for serialising request heads.
    head_buf: Vec<u8>,
    /// The pool slot of the thread whose reactor the socket is registered
    /// with (see `pool::ConnPool::take_idle`).
    pub(super) home: usize,
}

impl UpstreamConn {
    pub fn new(stream: BackendStream, home: usize) -> UpstreamConn {
        UpstreamConn {
            stream,
            buf: BytesMut::new(),
            head_read: READ_CHUNK,
            head_buf: Vec::new(),
            home,
        }
    }

    /// Moves the socket's registration to the calling thread's reactor.
    /// A socket stays registered where it was made; used from another
    /// worker thread, each readiness event would wake this thread through
    /// the other one (an eventfd write and a cross-core wake per I/O).
    pub(super) fn rehome(self, home: usize) -> io::Result<UpstreamConn> {
        Ok(UpstreamConn {
            stream: self.stream.rehome()?,
            home,
            ..self
        })
    }

    /// Whether the connection looks usable: no bytes and no EOF arrived
    /// while it sat idle. Costs no syscall unless the poller saw something.
    pub fn looks_alive(&mut self) -> bool {
        self.buf.is_empty() && self.stream.idle_and_open()
    }

    /// Writes the request head and body.
    pub async fn send(
        &mut self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> io::Result<()> {
        // The head buffer is kept with the connection and reused.
        let mut head = std::mem::take(&mut self.head_buf);
        head.clear();
        head.extend_from_slice(method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let written = write_all_vectored(&mut self.stream, &head, body).await;
        if head.capacity() <= 16 * 1024 {
            self.head_buf = head;
        }
        written
    }

    /// Reads the response head (skipping interim 1xx responses other than
    /// 101) and says how its body is framed.
    pub async fn read_head(
        &mut self,
        request_method: &Method,
    ) -> Result<(ResponseHead, Framing), H1Error> {
        let (parts, framing) = self.read_final_head(request_method).await?;
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            // We asked for no upgrade (Upgrade is hop-by-hop).
            return Err(H1Error::Malformed("unrequested 101 Switching Protocols"));
        }
        Ok((parts, framing))
    }

    /// Reads the answer to an upgrade request: the 101 that switches
    /// protocols, or the final response of a backend that declined.
    pub async fn read_upgrade_head(
        &mut self,
        request_method: &Method,
    ) -> Result<(ResponseHead, Framing), H1Error> {
        self.read_final_head(request_method).await
    }

    /// The first response head that is not an interim 1xx (101 counts as
    /// final: after it the connection speaks another protocol).
    async fn read_final_head(
        &mut self,
        request_method: &Method,
    ) -> Result<(ResponseHead, Framing), H1Error> {
        loop {
            if let Some((parts, framing)) = parse_head(&mut self.buf, request_method)? {
                if parts.status.is_informational()
                    && parts.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    continue;
                }
                return Ok((parts, framing));
            }
            if self.buf.len() >= MAX_HEAD_BYTES {
                return Err(H1Error::HeadTooLarge);
            }
            if self.read_more().await? == 0 {
                return Err(H1Error::ClosedBeforeHead);
            }
        }
    }

    /// The socket and the bytes the backend sent past the 101: where a
    /// tunnel starts.
    pub fn into_tunnel(self) -> (BackendStream, BytesMut) {
        (self.stream, self.buf)
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        let want = self.head_read;
        std::future::poll_fn(|cx| self.poll_read_more(cx, want)).await
    }

    /// Reads into the buffer with room for at least `want` bytes.
    fn poll_read_more(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            // A fresh buffer is read into from a few hundred bytes past its
            // start. Page-aligned read buffers made the kernel's copies into
            // and out of them measurably slower on the 64 KiB bench (about
            // 10% more CPU per request); the likely cause is the copy's
            // source and destination sitting at the same offset in their
            // 4 KiB pages (4K aliasing), which an odd offset avoids.
            let mut fresh = BytesMut::with_capacity(want + READ_OFFSET);
            fresh.resize(READ_OFFSET, 0);
            let _ = fresh.split_to(READ_OFFSET);
            self.buf = fresh;
        }
        self.buf.reserve(want);
        let spare = self.buf.spare_capacity_mut();
        let mut read_buf = ReadBuf::uninit(spare);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut read_buf))?;
        let n = read_buf.filled().len();
        // SAFETY: poll_read initialised the first `n` spare bytes.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        Poll::Ready(Ok(n))
    }
}

async fn write_all_vectored(
    stream: &mut BackendStream,
    head: &[u8],
    body: &[u8],
) -> io::Result<()> {
    let (mut head, mut body) = (head, body);
    while !head.is_empty() || !body.is_empty() {
        let slices = [IoSlice::new(head), IoSlice::new(body)];
        let n = std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_write_vectored(cx, &slices))
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    // TLS may hold the last record back; plain TCP has nothing to flush.
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_flush(cx)).await
}

/// Parses a complete response head at the start of `buf`, splits it off,
/// and works out the body's framing; `None` while the head is incomplete.
///
/// Public for benches and fuzz targets; the proxy calls it through
/// `UpstreamConn::read_head`.
///
/// Hop-by-hop fields, the fields `Connection` names, and a `Content-Length`
/// that the framing overrides never enter the header map: they describe
/// this connection, not the message the client will get. Header values share
/// the head's buffer instead of being copied one by one.
pub fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<(ResponseHead, Framing)>, H1Error> {
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let head_len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(H1Error::Malformed("too many headers")),
        Err(_) => return Err(H1Error::Malformed("not an HTTP/1.x response head")),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(H1Error::Malformed("bad status code"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let wire = WireFraming::scan(parsed.headers, version);
    let framing = wire.framing(method, status)?;
    let drops_length = matches!(framing.body, BodyKind::Chunked | BodyKind::UntilClose);

    let base = buf.as_ptr() as usize;
    let mut spans = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        if crate::upstream::headers::is_hop_by_hop_name(name)
            || wire
                .connection_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
            // The length the client sees must be the one we send: a stale
            // Content-Length next to chunked framing is how responses get
            // smuggled.
            || (drops_length && name.eq_ignore_ascii_case(b"content-length"))
        {
            continue;
        }
        let name_at = h.name.as_ptr() as usize - base;
        let value_at = h.value.as_ptr() as usize - base;
        spans.push((
            name_at..name_at + name.len(),
            value_at..value_at + h.value.len(),
        ));
    }
    let head = buf.split_to(head_len).freeze();
    let fields = OriginFields::from_spans(head, spans);
    Ok(Some((
        ResponseHead {
            status,
            version,
            fields,
        },
        framing,
    )))
}

/// A response head from a backend: status, version, and its end-to-end
/// fields (hop-by-hop ones already dropped) as received.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub fields: OriginFields,
}

/// How a response body is delimited, and whether the connection can carry
/// another request afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub body: BodyKind,
    pub keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the framing fields of a response head say, read straight from the
/// parsed fields.
struct WireFraming<'a> {
    keep_alive: bool,
    has_transfer_encoding: bool,
    last_transfer_coding: &'a [u8],
    length: Option<u64>,
    length_error: Option<&'static str>,
    /// Field names listed in `Connection` (other than its options).
    connection_names: Vec<&'a [u8]>,
}

impl<'a> WireFraming<'a> {
    fn scan(headers: &[httparse::Header<'a>], version: Version) -> WireFraming<'a> {
        let mut wire = WireFraming {
            keep_alive: version == Version::HTTP_11,
            has_transfer_encoding: false,
            last_transfer_coding: b"",
            length: None,
            length_error: None,
            connection_names: Vec::new(),
        };
        for h in headers {
            if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        wire.keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        if version == Version::HTTP_10 {
                            wire.keep_alive = true;
                        }
                    } else if !token.is_empty() {
                        wire.connection_names.push(token);
                    }
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                wire.has_transfer_encoding = true;
                for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if !token.is_empty() {
                        wire.last_transfer_coding = token;
                    }
                }
            } else if h.name.eq_ignore_ascii_case("content-length") {
                for part in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    match parse_decimal(part) {
                        None => wire.length_error = Some("bad Content-Length"),
                        Some(n) if wire.length.is_some_and(|l| l != n) => {
                            wire.length_error = Some("conflicting Content-Length");
                        }
                        Some(n) => wire.length = Some(n),
                    }
                }
            }
        }
        wire
    }

    /// RFC 9112 §6.3, in order: bodiless responses, Transfer-Encoding,
    /// Content-Length, then read-to-close.
    fn framing(&self, method: &Method, status: StatusCode) -> Result<Framing, H1Error> {
        let keep_alive = self.keep_alive;
        if *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok(Framing {
                body: BodyKind::Empty,
                keep_alive,
            });
        }
        if self.has_transfer_encoding {
            return Ok(
                if self.last_transfer_coding.eq_ignore_ascii_case(b"chunked") {
                    Framing {
                        body: BodyKind::Chunked,
                        keep_alive,
                    }
                } else {
                    Framing {
                        body: BodyKind::UntilClose,
                        keep_alive: false,
                    }
                },
            );
        }
        if let Some(error) = self.length_error {
            return Err(H1Error::Malformed(error));
        }
        Ok(match self.length {
            Some(0) => Framing {
                body: BodyKind::Empty,
                keep_alive,
            },
            Some(n) => Framing {
                body: BodyKind::Length(n),
                keep_alive,
            },
            None => Framing {
                body: BodyKind::UntilClose,
                keep_alive: false,
            },
        })
    }
}

/// The response body, read from the backend connection as it is polled.
/// At the end of a reusable body the connection goes back to its pool;
/// dropped early, the connection is closed.
pub struct UpstreamBody {
    conn: Option<UpstreamConn>,
    state: BodyState,
    keep_alive: bool,
    /// Size of the next read of a body of unknown length (grows when reads
    /// come back full).
    next_read: usize,
    /// Body bytes handed out so far.
    body_bytes: usize,
    /// Longest silence allowed between two reads of the body.
    read_timeout: Duration,
    /// Armed only once a read had to wait: a body that is already buffered
    /// costs no timer.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    pool: Arc<IdleSlot>,
    /// Released with the body: counts the request against its server.
    in_flight: Option<InFlight>,
}

impl UpstreamBody {
    pub(crate) fn new(
        conn: UpstreamConn,
        framing: Framing,
        pool: Arc<IdleSlot>,
        in_flight: InFlight,
        read_timeout: Duration,
    ) -> UpstreamBody {
        let state = match framing.body {
            BodyKind::Empty => BodyState::Done,
            BodyKind::Length(n) => BodyState::Length(n),
            BodyKind::Chunked => BodyState::ChunkSize,
            BodyKind::UntilClose => BodyState::UntilClose,
        };
        let mut body = UpstreamBody {
            conn: Some(conn),
            state,
            keep_alive: framing.keep_alive,
            next_read: READ_CHUNK,
            body_bytes: 0,
            read_timeout,
            stall: None,
            pool,
            in_flight: Some(in_flight),
        };
        if body.state == BodyState::Done {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(mut conn) = self.conn.take()
            && self.keep_alive
        {
            conn.head_read = (self.body_bytes + 1024).clamp(READ_CHUNK, MAX_READ);
            if conn.buf.is_empty() {
                // Let the read buffer go back to the allocator once the
                // client has the body: the next read, on whichever
                // connection, then gets the most recently freed (cache-warm)
                // block instead of this connection's own, long cold one.
                conn.buf = BytesMut::new();
            }
            self.pool.put_back(conn);
        }
        self.in_flight = None;
    }

    fn fail(&mut self) {
        self.state = BodyState::Done;
        self.conn = None;
        self.in_flight = None;
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match step(&mut this.state, &mut conn.buf) {
                Err(e) => {
                    this.fail();
                    return Poll::Ready(Some(Err(e.into())));
                }
                Ok(Step::Data(data)) => {
                    this.body_bytes += data.len();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::LastData(data)) => {
                    this.body_bytes += data.len();
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Finished) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
            }
            let want = match this.state {
                BodyState::Length(left) => (left as usize).clamp(READ_CHUNK, MAX_READ),
                _ => this.next_read,
            };
            let read = match conn.poll_read_more(cx, want) {
                Poll::Ready(read) => {
                    if let Some(stall) = this.stall.as_mut() {
                        stall
                            .as_mut()
                            .reset(tokio::time::Instant::now() + this.read_timeout);
                    }
                    read
                }
                Poll::Pending => {
                    let timeout = this.read_timeout;
                    let stall = this
                        .stall
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if stall.as_mut().poll(cx).is_ready() {
                        this.fail();
                        return Poll::Ready(Some(Err(H1Error::Stalled)));
                    }
                    return Poll::Pending;
                }
            };
            if let Ok(n) = read
                && n >= this.next_read
            {
                // The read filled what was asked: ask for more next time.
                this.next_read = (this.next_read * 2).min(MAX_READ);
            }
            match read {
                Ok(0) if this.state == BodyState::UntilClose => {
                    // The end of a close-delimited body: a normal end, but
                    // the connection is spent.
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.fail();
                    return Poll::Ready(Some(Err(H1Error::Truncated)));
                }
                Ok(_) => {}
                Err(e) => {
                    this.fail();
                    return Poll::Ready(Some(Err(H1Error::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == BodyState::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing_of(method: &Method, text: &str) -> Result<Framing, H1Error> {
        parse_head(&mut BytesMut::from(text), method).map(|r| r.expect("complete head").1)
    }

    #[test]
    fn framing_follows_rfc9112() {
        let get = Method::GET;
        let f = |t: &str| framing_of(&get, t);
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
                .unwrap()
                .body,
            BodyKind::Length(5)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n")
                .unwrap()
                .body,
            BodyKind::Chunked
        );
        let identity = f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap();
        assert_eq!(
            (identity.body, identity.keep_alive),
            (BodyKind::UntilClose, false)
        );
        assert_eq!(
            f("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
                .unwrap()
                .body,
            BodyKind::Empty
        );
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").is_err());
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(
            !f("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !f("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        let head_req = framing_of(
            &Method::HEAD,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(head_req.unwrap().body, BodyKind::Empty);
    }

    #[test]
    fn connection_fields_never_reach_the_client() {
        let text = "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n\
                    Transfer-Encoding: chunked\r\nContent-Length: 9\r\nX-Kept: 1\r\n\r\n";
        let (parts, framing) = parse_head(&mut BytesMut::from(text), &Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(
            framing,
            Framing {
                body: BodyKind::Chunked,
                keep_alive: false
            }
        );
        let names: Vec<&[u8]> = parts.fields.iter().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"X-Kept"[..]]);
    }
}
