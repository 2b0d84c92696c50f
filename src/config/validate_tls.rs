//! Validation of the TLS parts of the config: `[[server.tls]]` entries,
//! HSTS, and the `tls_*` settings of upstreams with `https://` servers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::HeaderValue;
use rustls::pki_types::ServerName;

use super::diag::Collector;
use super::raw::{RawServer, RawTls, RawUpstream, S};
use super::tls::{client_config, load_cert_and_key, load_roots};
use super::validate::{duration, resolve, socket_addr};
use super::{TlsCertConfig, UpstreamServer, UpstreamTls};

/// The checked `[[server.tls]]` entries and every HTTPS address.
pub fn tls_entries(
    raw: Option<&[S<RawTls>]>,
    plain_listen: &[SocketAddr],
    base: &Path,
    diag: &mut Collector<'_>,
) -> (Vec<TlsCertConfig>, Vec<SocketAddr>) {
    let raw = raw.unwrap_or_default();
    let mut all_listen: Vec<SocketAddr> = Vec::new();
    for entry in raw {
        for addr in entry.get_ref().listen.iter().flatten() {
            if let Some(addr) = socket_addr(addr, diag) {
                if addr.port() != 0 && plain_listen.contains(&addr) {
                    diag.error(
                        entry.span(),
                        format!("{addr} is both a plain-HTTP and an HTTPS listener"),
                    );
                }
                if !all_listen.contains(&addr) {
                    all_listen.push(addr);
                }
            }
        }
    }
    if !raw.is_empty() && all_listen.is_empty() {
        diag.error(
            raw[0].span(),
            "no [[server.tls]] entry has `listen`: nothing would serve HTTPS",
        );
    }
    let entries: Vec<TlsCertConfig> = raw
        .iter()
        .filter_map(|entry| tls_entry(entry, &all_listen, base, diag))
        .collect();
    for addr in &all_listen {
        let defaults = entries
            .iter()
            .filter(|e| e.default && e.listen.contains(addr))
            .count();
        if defaults > 1
            && let Some(entry) = raw.first()
        {
            diag.error(
                entry.span(),
                format!("{addr} has {defaults} certificates marked `default = true`"),
            );
        }
    }
    (entries, all_listen)
}

fn tls_entry(
    entry: &S<RawTls>,
    all_listen: &[SocketAddr],
    base: &Path,
    diag: &mut Collector<'_>,
) -> Option<TlsCertConfig> {
    let span = entry.span();
    let raw = entry.get_ref();
    let (Some(cert), Some(key)) = (&raw.cert, &raw.key) else {
        diag.error(span, "[[server.tls]] needs both `cert` and `key`");
        return None;
    };
    let configured_names: Option<Vec<String>> = raw.names.as_ref().map(|list| {
        list.iter()
            .filter_map(|n| match sni_pattern(n.get_ref()) {
                Ok(name) => Some(name),
                Err(message) => {
                    diag.error(n.span(), message);
                    None
                }
            })
            .collect()
    });
    let cert_path = resolve(base, cert.get_ref());
    let key_path = resolve(base, key.get_ref());
    let loaded = match load_cert_and_key(&cert_path, &key_path) {
        Ok(loaded) => loaded,
        Err(message) => {
            // Point at the key when the key is what is wrong.
            let at = if message.starts_with("private key") {
                key.span()
            } else {
                cert.span()
            };
            diag.error(at, message);
            return None;
        }
    };
    let listen = match &raw.listen {
        Some(list) => list
            .iter()
            .filter_map(|a| a.get_ref().parse::<SocketAddr>().ok())
            .collect(),
        None => all_listen.to_vec(),
    };
    let names = configured_names.unwrap_or_else(|| loaded.names.clone());
    Some(TlsCertConfig {
        cert_path,
        key_path,
        listen,
        names,
        default: raw.default.as_ref().is_some_and(|d| *d.get_ref()),
        loaded,
    })
}

/// A configured SNI name: a host name, or `*.` and one.
fn sni_pattern(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let host = lower.strip_prefix("*.").unwrap_or(&lower);
    let valid = !host.is_empty()
        && !host.starts_with('.')
        && !host.ends_with('.')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(lower)
    } else {
        Err(format!(
            "{text:?} is not a host name or `*.domain` (for SNI)"
        ))
    }
}

/// The Strict-Transport-Security value, when `hsts_max_age` is set.
pub fn hsts(raw: &RawServer, diag: &mut Collector<'_>) -> Option<HeaderValue> {
    let max_age = raw.hsts_max_age.as_ref()?;
    let age = duration(&raw.hsts_max_age, Default::default(), diag).as_secs();
    let mut value = format!("max-age={age}");
    if raw
        .hsts_include_subdomains
        .as_ref()
        .is_some_and(|b| *b.get_ref())
    {
        value.push_str("; includeSubDomains");
    }
    if raw.tls.as_ref().is_none_or(|t| t.is_empty()) {
        diag.error(
            max_age.span(),
            "hsts_max_age is set but there is no HTTPS listener ([[server.tls]])",
        );
    }
    HeaderValue::from_str(&value).ok()
}

/// TLS settings for an upstream with `https://` servers.
pub fn upstream_tls(
    raw: &RawUpstream,
    servers: &[UpstreamServer],
    base: &Path,
    diag: &mut Collector<'_>,
) -> Option<UpstreamTls> {
    let any_tls = servers.iter().any(|s| s.tls);
    if !any_tls {
        for span in [
            raw.tls_ca.as_ref().map(|v| v.span()),
            raw.tls_server_name.as_ref().map(|v| v.span()),
            raw.tls_insecure_skip_verify.as_ref().map(|v| v.span()),
        ]
        .into_iter()
        .flatten()
        {
            diag.error(span, "TLS setting on an upstream with no https:// server");
        }
        return None;
    }
    let skip_verify = raw
        .tls_insecure_skip_verify
        .as_ref()
        .is_some_and(|b| *b.get_ref());
    let server_name = match &raw.tls_server_name {
        None => None,
        Some(name) => match ServerName::try_from(name.get_ref().clone()) {
            Ok(n) => Some(n),
            Err(_) => {
                diag.error(
                    name.span(),
                    format!("{:?} is not a DNS name or IP address", name.get_ref()),
                );
                None
            }
        },
    };
    let ca_path = raw.tls_ca.as_ref().map(|p| resolve(base, p.get_ref()));
    let roots = if skip_verify {
        rustls::RootCertStore::empty()
    } else {
        match load_roots(ca_path.as_deref()) {
            Ok(roots) => roots,
            Err(message) => {
                let span = raw.tls_ca.as_ref().map_or(0..0, |p| p.span());
                diag.error(span, message);
                return None;
            }
        }
    };
    match client_config(roots, skip_verify) {
        Ok(client) => Some(UpstreamTls {
            client: Arc::new(client),
            server_name,
            skip_verify,
        }),
        Err(message) => {
            diag.error(0..0, message);
            None
        }
    }
}
