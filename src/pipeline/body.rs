//! The response body type handed to hyper: either bytes we made (error pages,
//! admin answers) or the origin's body streamed through. It counts the bytes
//! it yields and runs the log phase exactly once, when the body ends or is
//! dropped (the client went away).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::cache::memfile::BodyFile;
use crate::framing::OriginFields;
use crate::upstream::h1::UpstreamBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::{LocalRuntime, RequestCtx, Summary};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct ResponseBody {
    inner: Inner,
    log: Option<Box<LogOnEnd>>,
    /// The origin's header fields, when they were passed through without a
    /// header map (see `OriginFields`). They belong to the response head:
    /// writers send them with the fields of the head's map.
    origin_fields: Option<OriginFields>,
    /// Sees every data frame as it passes (the cache storing a response
    /// while it streams to the client).
    sink: Option<Box<dyn BodySink>>,
    /// The memory file the body's bytes are read from (a large cache
    /// hit): a plain HTTP/1 writer sends them from it with `sendfile`.
    file: Option<Arc<BodyFile>>,
}

/// A listener on a streaming body. `data` sees each chunk in order; `end`
/// runs once the last byte has passed. A body dropped before its end
/// drops the sink without calling `end`.
pub trait BodySink: Send + Sync {
    fn data(&mut self, data: &Bytes);
    fn end(self: Box<Self>);
}

enum Inner {
    Full(Option<Bytes>),
    /// Another body, content-coded as it streams: each chunk is encoded and
    /// flushed, so a slow stream (SSE) keeps flowing.
    Encoding {
        source: Box<ResponseBody>,
        /// Taken when the source ends and its last bytes are emitted.
        encoder: Option<Box<crate::compress::encoder::Encoder>>,
    },
    /// The origin's body; `first` is a frame already read from it.
    Upstream {
        first: Option<Frame<Bytes>>,
        // Boxed: only streamed responses pay for the allocation, and the
        // common small response stays a small value.
        body: Box<UpstreamBody>,
    },
}

/// Carries the request context to the end of the response.
pub(crate) struct LogOnEnd {
    pub runtime: LocalRuntime,
    pub ctx: RequestCtx,
    pub status: u16,
    pub bytes_out: u64,
    pub complete: bool,
}

impl Drop for LogOnEnd {
    fn drop(&mut self) {
        let summary = Summary {
            status: self.status,
            bytes_out: self.bytes_out,
            duration: self.ctx.started.elapsed(),
            aborted: !self.complete,
        };
        for stage in &self.runtime.stages {
            stage.on_log(&self.ctx, &summary);
        }
    }
}

impl ResponseBody {
    pub fn full(bytes: Bytes) -> Self {
        ResponseBody {
            inner: Inner::Full(Some(bytes)),
            log: None,
            origin_fields: None,
            sink: None,
            file: None,
        }
    }

    pub fn empty() -> Self {
        ResponseBody {
            inner: Inner::Full(None),
            log: None,
            origin_fields: None,
            sink: None,
            file: None,
        }
    }

    pub fn upstream(body: UpstreamBody) -> Self {
        ResponseBody {
            inner: Inner::Upstream {
                first: None,
                body: Box::new(body),
            },
            log: None,
            origin_fields: None,
            sink: None,
            file: None,
        }
    }

    /// `source`, encoded by `encoder` as it is sent.
    pub fn encoding(source: ResponseBody, encoder: crate::compress::encoder::Encoder) -> Self {
        ResponseBody {
            inner: Inner::Encoding {
                source: Box::new(source),
                encoder: Some(Box::new(encoder)),
            },
            log: None,
            origin_fields: None,
            sink: None,
            file: None,
        }
    }

    /// The origin's body of which `first` was already read.
    pub fn upstream_after(first: Frame<Bytes>, body: UpstreamBody) -> Self {
        ResponseBody {
            inner: Inner::Upstream {
                first: Some(first),
                body: Box::new(body),
            },
            log: None,
            origin_fields: None,
            sink: None,
            file: None,
        }
    }

    /// Runs the log phase now, as if the body had been dropped: for a
    /// writer that has taken the last frame and is about to send it.
    pub fn end_log(&mut self) {
        if self.is_end_stream() {
            self.mark_complete();
        }
        drop(self.log.take());
    }

    /// The body as read from `file` (see `file`).
    pub fn with_file(mut self, file: Option<Arc<BodyFile>>) -> Self {
        self.file = file;
        self
    }

    /// The memory file this body's bytes lie in, if they do: a writer
    /// that finds a frame's bytes in it (`BodyFile::region`) may send them
    /// from the file instead.
    pub fn file(&self) -> Option<&Arc<BodyFile>> {
        self.file.as_ref()
    }

    /// Lets `sink` see the rest of this body as it is sent.
    pub fn attach_sink(&mut self, sink: Box<dyn BodySink>) {
        self.sink = Some(sink);
        if self.is_end_stream()
            && let Some(sink) = self.sink.take()
        {
            sink.end();
        }
    }

    pub fn set_origin_fields(&mut self, fields: OriginFields) {
        self.origin_fields = Some(fields);
    }

    /// The origin's fields that still belong to the head, if any.
    pub fn origin_fields(&self) -> Option<&OriginFields> {
        self.origin_fields.as_ref()
    }

    pub fn take_origin_fields(&mut self) -> Option<OriginFields> {
        self.origin_fields.take()
    }

    /// The whole body, when it is already in memory (our own pages, small
    /// origin bodies read at once, answers from the cache).
    pub fn peek_full(&self) -> Option<&Bytes> {
        match &self.inner {
            Inner::Full(b) => b.as_ref(),
            Inner::Upstream { .. } | Inner::Encoding { .. } => None,
        }
    }

    pub(crate) fn attach_log(&mut self, log: LogOnEnd) {
        let mut log = Box::new(log);
        if self.is_end_stream() {
            log.complete = true;
        }
        self.log = Some(log);
    }

    fn count(&mut self, frame: &Frame<Bytes>) {
        if let (Some(log), Some(data)) = (self.log.as_mut(), frame.data_ref()) {
            log.bytes_out += data.len() as u64;
        }
    }

    fn mark_complete(&mut self) {
        if let Some(log) = self.log.as_mut() {
            log.complete = true;
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream { first, .. } if first.is_some() => Poll::Ready(first.take().map(Ok)),
            Inner::Upstream { body, .. } => match Pin::new(body.as_mut()).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e) as BoxError))),
            },
            Inner::Encoding { source, encoder } => poll_encoding(source, encoder, cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.count(frame);
                if let (Some(sink), Some(data)) = (this.sink.as_mut(), frame.data_ref()) {
                    sink.data(data);
                }
            }
            Poll::Ready(None) => {
                this.mark_complete();
                if let Some(sink) = this.sink.take() {
                    sink.end();
                }
            }
            Poll::Ready(Some(Err(_))) => this.sink = None,
            Poll::Pending => {}
        }
        if this.is_end_stream() {
            this.mark_complete();
            if !matches!(polled, Poll::Ready(Some(Err(_))))
                && let Some(sink) = this.sink.take()
            {
                sink.end();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Upstream { first, body } => first.is_none() && body.is_end_stream(),
            Inner::Encoding { encoder, .. } => encoder.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Encoding { encoder: None, .. } => SizeHint::with_exact(0),
            Inner::Encoding { .. } => SizeHint::new(),
            Inner::Upstream { first, body } => {
                let pending = first
                    .as_ref()
                    .and_then(|f| f.data_ref())
                    .map_or(0, |d| d.len() as u64);
                let hint = body.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower() + pending);
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper + pending);
                }
                sum
            }
        }
    }
}

/// One step of an encoding body: encodes the source's next data, skipping
/// chunks the encoder kept entirely to itself, and emits the encoder's tail
/// when the source ends. Trailers are dropped: they describe the
/// unencoded body.
fn poll_encoding(
    source: &mut Box<ResponseBody>,
    encoder: &mut Option<Box<crate::compress::encoder::Encoder>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    loop {
        let Some(active) = encoder.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(source.as_mut()).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                match active.push(&data) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                    Err(e) => return Poll::Ready(Some(Err(Box::new(e) as BoxError))),
                }
            }
            Poll::Ready(None) => {
                let Some(done) = encoder.take() else {
                    return Poll::Ready(None);
                };
                return match done.finish() {
                    Ok(tail) if tail.is_empty() => Poll::Ready(None),
                    Ok(tail) => Poll::Ready(Some(Ok(Frame::data(tail)))),
                    Err(e) => Poll::Ready(Some(Err(Box::new(e) as BoxError))),
                };
            }
        }
    }
}
