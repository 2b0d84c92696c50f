//! Validation of `[ipfilter]`: the mode, inline lists and list files, built
//! into one `CidrMap`. A bad entry in a list file is reported as
//! `file:line`, every one of them at once.

use std::path::Path;
use std::sync::Arc;

use super::diag::Collector;
use super::raw::{RawIpFilter, S};
use super::validate::resolve;
use super::{IpFilterConfig, IpFilterMode};
use crate::ipgeo::cidr::{CidrMap, Listed};
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
    Some(IpFilterConfig {
        mode,
        map: Arc::new(CidrMap::new(blocks)),
    })
}
