//! Validation of `[compression]` and of a route's `compression` table.

use super::diag::Collector;
use super::raw::{RawCompression, RawRouteCompression, S};
use super::units::parse_size;
use crate::compress::decode::Caps;
use crate::compress::{Coding, CompressionConfig, DEFAULT_TYPES};

/// `[compression]` and whether routes compress by default.
pub fn compression(
    raw: Option<&S<RawCompression>>,
    diag: &mut Collector<'_>,
) -> Option<(CompressionConfig, bool)> {
    let raw = raw?.get_ref();
    let mut codings = Vec::new();
    match &raw.algorithms {
        None => codings.extend([Coding::Brotli, Coding::Zstd, Coding::Gzip]),
        Some(list) => {
            for name in list {
                match Coding::from_token(name.get_ref()) {
                    Some(c) if !codings.contains(&c) => codings.push(c),
                    Some(_) => {
                        diag.error(name.span(), format!("{:?} is listed twice", name.get_ref()))
                    }
                    None => diag.error(
                        name.span(),
                        format!(
                            "unknown algorithm {:?}: expected \"br\", \"zstd\" or \"gzip\"",
                            name.get_ref()
                        ),
                    ),
                }
            }
        }
    }
    let min_size = match &raw.min_size {
        None => 1024,
        Some(v) => parse_size(v.get_ref()).unwrap_or_else(|msg| {
            diag.error(v.span(), msg);
            1024
        }),
    };
    let types = match &raw.types {
        None => DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
        Some(list) => list
            .iter()
            .filter_map(|t| {
                let text = t.get_ref().trim().to_ascii_lowercase();
                if text.contains('/') && !text.contains(char::is_whitespace) {
                    Some(text)
                } else {
                    diag.error(
                        t.span(),
                        format!(
                            "{:?} is not a media type (e.g. \"text/\" or \"application/json\")",
                            t.get_ref()
                        ),
                    );
                    None
                }
            })
            .collect(),
    };
    let enabled = raw.enabled.as_ref().is_none_or(|e| *e.get_ref());
    Some((
        CompressionConfig {
            codings,
            min_size,
            types,
            gzip_level: level(&raw.gzip_level, 6, 9, diag),
            brotli_level: level(&raw.brotli_level, 4, 11, diag),
            zstd_level: level(&raw.zstd_level, 3, 19, diag),
            decode_requests: decode_caps(raw, diag),
        },
        enabled,
    ))
}

/// A route's compression: `None` when it does not compress.
pub fn route_compression(
    raw: Option<&S<RawRouteCompression>>,
    global: Option<&(CompressionConfig, bool)>,
    diag: &mut Collector<'_>,
) -> Option<CompressionConfig> {
    let Some((global, global_enabled)) = global else {
        if let Some(raw) = raw {
            diag.error(
                raw.span(),
                "route has a `compression` table but the file has no [compression] section",
            );
        }
        return None;
    };
    let enabled = raw
        .and_then(|r| r.get_ref().enabled.as_ref())
        .map_or(*global_enabled, |e| *e.get_ref());
    enabled.then(|| global.clone())
}

fn decode_caps(raw: &RawCompression, diag: &mut Collector<'_>) -> Option<Caps> {
    let limit = match &raw.max_decoded_body {
        None => 10 * 1024 * 1024,
        Some(v) => parse_size(v.get_ref()).unwrap_or_else(|msg| {
            diag.error(v.span(), msg);
            10 * 1024 * 1024
        }),
    };
    let max_ratio = match &raw.max_decode_ratio {
        None => 100,
        Some(v) => match u64::try_from(*v.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                diag.error(v.span(), "max_decode_ratio must be 1 or more");
                100
            }
        },
    };
    raw.decode_requests
        .as_ref()
        .is_none_or(|d| *d.get_ref())
        .then_some(Caps { limit, max_ratio })
}

fn level(raw: &Option<S<i64>>, default: u32, max: u32, diag: &mut Collector<'_>) -> u32 {
    match raw {
        None => default,
        Some(v) => match u32::try_from(*v.get_ref()) {
            Ok(n) if n <= max => n,
            _ => {
                diag.error(v.span(), format!("level must be between 0 and {max}"));
                default
            }
        },
    }
}
