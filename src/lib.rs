//! Palisade: a security edge proxy. See DESIGN.md for the request path.
//!
//! The binary (`src/main.rs`) only parses arguments and calls `app`.

pub mod admin;
pub mod alloc;
pub mod app;
pub mod cache;
pub mod compress;
pub mod config;
pub mod decimal;
pub mod demo;
pub mod framing;
pub mod ipgeo;
pub mod pipeline;
pub mod ratelimit;
pub mod server;
pub mod upstream;
pub mod waf;

#[cfg(test)]
mod test_rng;
