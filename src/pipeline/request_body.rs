//! Where a request body comes from. The pipeline reads every request body
//! whole (up to `max_request_body`) before anything goes upstream, so a
//! source only has to answer "all of it, or why not".
//!
//! HTTP/2 bodies come through hyper (`Incoming`); HTTP/1.1 bodies are read
//! straight off the client connection by `server::h1`.

use std::future::Future;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::server::respond::ProxyError;

/// A request body not read yet.
pub trait RequestBody: Send {
    /// The length the request declared, when it declared one.
    fn declared_length(&self) -> Option<u64>;

    /// Whether the request has no body at all.
    fn is_empty(&self) -> bool;

    /// Reads the whole body. More than `limit` bytes is `PayloadTooLarge`;
    /// broken framing or a client that went away is `BadRequest`.
    fn read_all(self, limit: u64) -> impl Future<Output = Result<Bytes, ProxyError>> + Send;
}

impl RequestBody for Incoming {
    fn declared_length(&self) -> Option<u64> {
        http_body::Body::size_hint(self).exact()
    }

    fn is_empty(&self) -> bool {
        http_body::Body::is_end_stream(self)
    }

    async fn read_all(self, limit: u64) -> Result<Bytes, ProxyError> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        match Limited::new(self, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(ProxyError::PayloadTooLarge)
            }
            Err(_) => Err(ProxyError::BadRequest(
                "malformed or interrupted request body",
            )),
        }
    }
}
