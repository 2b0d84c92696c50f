//! Storing a response while it streams to the client: a `BodySink` that
//! gathers the body and stores it once the last byte has passed. A body
//! that outgrows the object size limit, fails, or is dropped half-way is
//! not stored; its lead then ends, so waiting requests move on.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::Cache;
use super::coalesce::{Lead, Outcome};
use super::store::Stored;
use crate::pipeline::BodySink;

pub struct Fill {
    pub cache: Arc<Cache>,
    pub key: String,
    /// The response as it will be stored; its body comes from the stream.
    pub stored: Option<Stored>,
    pub body: BytesMut,
    pub limit: usize,
    pub lead: Option<Lead>,
}

impl BodySink for Fill {
    fn data(&mut self, data: &Bytes) {
        if self.stored.is_none() {
            return;
        }
        if self.body.len() + data.len() > self.limit {
            self.stored = None;
            self.body = BytesMut::new();
            if let Some(lead) = self.lead.take() {
                lead.finish(Outcome::Uncacheable);
            }
            return;
        }
        self.body.extend_from_slice(data);
    }

    fn end(mut self: Box<Self>) {
        let Some(mut stored) = self.stored.take() else {
            return;
        };
        stored.body = std::mem::take(&mut self.body).freeze();
        self.cache.insert(&self.key, stored);
        if let Some(lead) = self.lead.take() {
            lead.finish(Outcome::Stored);
        }
    }
}
