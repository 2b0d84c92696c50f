//! Palisade's integration tests: one binary, one module per area, each test
//! named after the behaviour (or the attack) it guards. Every test talks to
//! the proxy over real sockets, with real origins on 127.0.0.1:0.

mod backend_protocol;
mod balancing;
mod cache;
mod client_protocol;
mod compression;
mod h2_floods;
mod headers;
mod ipfilter;
mod lifecycle;
mod limits;
mod observability;
mod properties;
mod ratelimit;
mod ratelimit_redis;
mod routing;
mod seclang_sts;
mod tls;
mod upstream_failures;
mod util;
mod waf_engine;
mod waf_rules;
mod websocket;
