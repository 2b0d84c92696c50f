//! IP-based decisions: who the client really is when the request came
//! through trusted proxies, and what the allow and deny lists say of it.

pub mod cidr;
pub mod client_ip;
pub mod filter;
pub mod geo;
pub mod lists;
