//! IP-based decisions. For now: who the client really is when the request
//! came through trusted proxies. The CIDR and MaxMind filters join later.

pub mod client_ip;
