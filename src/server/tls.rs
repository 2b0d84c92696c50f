//! TLS termination: one rustls server config per HTTPS address, whose
//! certificate is picked by SNI from a set that a reload swaps whole.
//!
//! New handshakes see the new set at once; connections already open keep
//! the session they negotiated. The choice for a client hello: an exact
//! name, then a wildcard one label up (`*.example.com` covers
//! `a.example.com`, not `a.b.example.com` nor `example.com`), then the
//! address's default certificate, which clients without SNI get too.
//! Where several certificates fit (say RSA and ECDSA for one name), the
//! first whose key suits the client's signature schemes wins.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SignatureScheme};
use tokio_rustls::TlsAcceptor;

use crate::admin::metrics::Metrics;
use crate::config::tls::{format_unix, now_unix, provider};
use crate::config::{Config, TlsCertConfig};

/// Certificates expiring sooner than this are warned about.
pub const EXPIRY_WARNING_SECS: i64 = 14 * 24 * 3600;

type Candidates = Vec<Arc<CertifiedKey>>;

/// The certificates one HTTPS address serves, by name.
#[derive(Debug, Default)]
struct CertSet {
    exact: HashMap<String, Candidates>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Candidates>,
    default: Candidates,
}

impl CertSet {
    fn build(entries: &[&TlsCertConfig]) -> CertSet {
        let mut set = CertSet::default();
        for entry in entries {
            for name in &entry.names {
                let map = match name.strip_prefix("*.") {
                    Some(parent) => set.wildcard.entry(parent.to_string()),
                    None => set.exact.entry(name.clone()),
                };
                map.or_default().push(Arc::clone(&entry.loaded.key));
            }
        }
        let default = entries
            .iter()
            .find(|e| e.default)
            .or_else(|| entries.first());
        set.default = default
            .map(|e| vec![Arc::clone(&e.loaded.key)])
            .unwrap_or_default();
        set
    }

    fn candidates(&self, sni: Option<&str>) -> &Candidates {
        let Some(name) = sni else {
            return &self.default;
        };
        // rustls hands SNI over lower-cased and without a trailing dot.
        if let Some(found) = self.exact.get(name) {
            return found;
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(found) = self.wildcard.get(parent)
        {
            return found;
        }
        &self.default
    }
}

/// Picks the certificate for each handshake from the current set.
#[derive(Debug)]
pub struct CertResolver {
    set: ArcSwap<CertSet>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.set.load();
        let candidates = set.candidates(hello.server_name());
        match candidates.as_slice() {
            [] => None,
            [only] => Some(Arc::clone(only)),
            several => {
                let offered: &[SignatureScheme] = hello.signature_schemes();
                several
                    .iter()
                    .find(|c| c.key.choose_scheme(offered).is_some())
                    .or(several.first())
                    .cloned()
            }
        }
    }
}

/// The HTTPS addresses with their live certificate sets.
pub struct TlsListeners {
    by_addr: Vec<(SocketAddr, Arc<CertResolver>, TlsAcceptor)>,
}

impl TlsListeners {
    /// One acceptor per configured HTTPS address: TLS 1.3 and 1.2 with
    /// rustls' default suites, ALPN h2 then http/1.1, stateless session
    /// tickets for resumption.
    pub fn new(config: &Config) -> Result<TlsListeners, rustls::Error> {
        let mut by_addr = Vec::new();
        for addr in &config.server.tls_listen {
            let resolver = Arc::new(CertResolver {
                set: ArcSwap::from_pointee(CertSet::build(&entries_for(config, addr))),
            });
            let mut server = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
            server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            server.ticketer = rustls::crypto::ring::Ticketer::new()?;
            server.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
            by_addr.push((*addr, resolver, TlsAcceptor::from(Arc::new(server))));
        }
        Ok(TlsListeners { by_addr })
    }

    /// The acceptor for a configured HTTPS address.
    pub fn acceptor(&self, addr: &SocketAddr) -> Option<TlsAcceptor> {
        self.by_addr
            .iter()
            .find(|(a, _, _)| a == addr)
            .map(|(_, _, acceptor)| acceptor.clone())
    }

    /// Swaps in the certificates of a new config. Addresses are fixed at
    /// start; one that a reload drops keeps its certificates until restart.
    pub fn update(&self, config: &Config) {
        for (addr, resolver, _) in &self.by_addr {
            let entries = entries_for(config, addr);
            if entries.is_empty() {
                tracing::warn!(%addr, "HTTPS listener left out of the new config keeps its certificates until restart");
                continue;
            }
            resolver.set.store(Arc::new(CertSet::build(&entries)));
        }
    }
}

fn entries_for<'c>(config: &'c Config, addr: &SocketAddr) -> Vec<&'c TlsCertConfig> {
    config
        .server
        .tls
        .iter()
        .filter(|e| e.listen.contains(addr))
        .collect()
}

/// Publishes each certificate's expiry as a metric and warns about those
/// that expire within `EXPIRY_WARNING_SECS`.
pub fn check_expiry(config: &Config, metrics: &Metrics) {
    metrics.tls_cert_not_after.clear();
    let now = now_unix();
    for entry in &config.server.tls {
        let not_after = entry.loaded.not_after;
        metrics.set_cert_expiry(&entry.cert_path.display().to_string(), not_after);
        if not_after - now < EXPIRY_WARNING_SECS {
            tracing::warn!(
                cert = %entry.cert_path.display(),
                expires = %format_unix(not_after),
                days_left = (not_after - now) / 86_400,
                "certificate expires within 14 days"
            );
        }
    }
}
