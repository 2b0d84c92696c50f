//! The IP filter stage, the first gate of the request path: the client
//! address (after trusted-proxy resolution) against `[ipfilter]`'s lists.

use std::net::IpAddr;
use std::sync::Arc;

use http::request;
use prometheus_client::metrics::counter::Counter;

use super::cidr::{CidrMap, Listed};
use crate::admin::metrics::Metrics;
use crate::config::{IpFilterConfig, IpFilterMode};
use crate::pipeline::{RequestCtx, Stage, Verdict};
use crate::server::respond::ProxyError;

pub struct IpFilter {
    mode: IpFilterMode,
    map: Arc<CidrMap>,
    denied_by_cidr: Counter,
}

impl IpFilter {
    pub fn new(config: &IpFilterConfig, metrics: &Metrics) -> IpFilter {
        IpFilter {
            mode: config.mode,
            map: Arc::clone(&config.map),
            denied_by_cidr: metrics.ipfilter_denied("cidr"),
        }
    }

    /// Whether `ip` gets through: the most specific listed block decides;
    /// an unlisted address gets through unless the mode is `allowlist`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        match self.map.lookup(ip) {
            Some(Listed::Allow) => true,
            Some(Listed::Deny) => false,
            None => self.mode == IpFilterMode::Denylist,
        }
    }
}

impl Stage for IpFilter {
    fn name(&self) -> &'static str {
        "ipfilter"
    }

    /// Denied clients get our 403 page; nothing of the request is read
    /// beyond its head.
    fn on_request(&self, ctx: &mut RequestCtx, _head: &request::Parts) -> Verdict {
        if self.allows(ctx.client_ip) {
            return Verdict::Continue;
        }
        ctx.ipfilter_denied = Some("cidr");
        self.denied_by_cidr.inc();
        Verdict::Reject(ProxyError::Forbidden("address"))
    }
}
