//! Validation of `[ipfilter]`: the mode, inline lists and list files, built
//! into one `CidrMap`. A bad entry in a list file is reported as
//! `file:line`, every one of them at once.

use std::path::Path;
use std::sync::Arc;

use super::diag::Collector;
use super::raw::{RawIpFilter, S};
use super::validate::resolve;
use super::{GeoRules, IpFilterConfig, IpFilterMode};
use crate::ipgeo::cidr::{CidrMap, Listed};
use crate::ipgeo::geo::{CountryCode, GeoDb};
use crate::ipgeo::lists::{parse_entry, parse_list};

pub fn ipfilter(
    raw: Option<&S<RawIpFilter>>,
    base: &Path,
    diag: &mut Collector<'_>,
) -> Option<IpFilterConfig> {
    let raw = raw?.get_ref();
    let mode = match raw.mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
        None | Some((_, "denylist")) => IpFilterMode::Denylist,
        Some((_, "allowlist")) => IpFilterMode::Allowlist,
        Some((m, other)) => {
            diag.error(
                m.span(),
                format!("ipfilter.mode {other:?}: expected \"denylist\" or \"allowlist\""),
            );
            IpFilterMode::Denylist
        }
    };
    let mut blocks = Vec::new();
    let inline = [(&raw.allow, Listed::Allow), (&raw.deny, Listed::Deny)];
    for (list, listed) in inline {
        for entry in list.iter().flatten() {
            match parse_entry(entry.get_ref()) {
                Ok(net) => blocks.push((net, listed)),
                Err(message) => diag.error(entry.span(), message),
            }
        }
    }
    let files = [
        (&raw.allow_files, Listed::Allow),
        (&raw.deny_files, Listed::Deny),
    ];
    for (list, listed) in files {
        for file in list.iter().flatten() {
            let path = resolve(base, file.get_ref());
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    diag.error(file.span(), format!("{}: {e}", path.display()));
                    continue;
                }
            };
            match parse_list(&text) {
                Ok(nets) => blocks.extend(nets.into_iter().map(|n| (n, listed))),
                Err(bad) => {
                    for b in bad {
                        diag.error_in(&path, b.line, b.message);
                    }
                }
            }
        }
    }
    let geo = geo_rules(raw, base, diag);
    Some(IpFilterConfig {
        mode,
        map: Arc::new(CidrMap::new(blocks)),
        geo: geo.map(Arc::new),
    })
}

/// The country and ASN rules, when there are any; their databases are
/// opened here, so a missing or broken file is a config error.
fn geo_rules(raw: &RawIpFilter, base: &Path, diag: &mut Collector<'_>) -> Option<GeoRules> {
    let codes = |list: &Option<Vec<S<String>>>, diag: &mut Collector<'_>| -> Vec<CountryCode> {
        list.iter()
            .flatten()
            .filter_map(|c| {
                let code = CountryCode::parse(c.get_ref());
                if code.is_none() {
                    diag.error(
                        c.span(),
                        format!("{:?} is not a two-letter ISO country code", c.get_ref()),
                    );
                }
                code
            })
            .collect()
    };
    let deny_countries = codes(&raw.deny_countries, diag);
    let allow_countries = codes(&raw.allow_countries, diag);
    let deny_asns: Vec<u32> = raw
        .deny_asns
        .iter()
        .flatten()
        .filter_map(|a| match u32::try_from(*a.get_ref()) {
            Ok(n) => Some(n),
            Err(_) => {
                diag.error(a.span(), format!("{} is not an AS number", a.get_ref()));
                None
            }
        })
        .collect();
    let deny_unknown_country = match raw.unknown_country.as_ref() {
        None => false,
        Some(v) => match v.get_ref().as_str() {
            "allow" => false,
            "deny" => true,
            other => {
                diag.error(
                    v.span(),
                    format!("ipfilter.unknown_country {other:?}: expected \"allow\" or \"deny\""),
                );
                false
            }
        },
    };
    let open = |db: &Option<S<String>>, diag: &mut Collector<'_>| {
        let db = db.as_ref()?;
        GeoDb::open(&resolve(base, db.get_ref()))
            .map_err(|message| diag.error(db.span(), message))
            .ok()
    };
    let countries = open(&raw.geoip_db, diag);
    let asns = open(&raw.asn_db, diag);
    let country_rules = !deny_countries.is_empty() || !allow_countries.is_empty();
    if country_rules && raw.geoip_db.is_none() {
        diag.error(
            raw.deny_countries
                .iter()
                .chain(&raw.allow_countries)
                .flatten()
                .next()
                .map_or(0..0, |c| c.span()),
            "country rules need ipfilter.geoip_db",
        );
    }
    if !deny_asns.is_empty() && raw.asn_db.is_none() {
        let span = raw
            .deny_asns
            .iter()
            .flatten()
            .next()
            .map_or(0..0, |a| a.span());
        diag.error(span, "deny_asns needs ipfilter.asn_db");
    }
    (country_rules || !deny_asns.is_empty()).then_some(GeoRules {
        countries,
        asns,
        deny_countries,
        allow_countries,
        deny_asns,
        deny_unknown_country,
    })
}
