//! The IP filter stage, the first gate of the request path: the client
//! address (after trusted-proxy resolution) against `[ipfilter]`'s lists.

use std::net::IpAddr;
use std::sync::Arc;

use http::request;
use prometheus_client::metrics::counter::Counter;

use super::cidr::{CidrMap, Listed};
use super::geo::CountryCode;
use crate::admin::metrics::Metrics;
use crate::config::{Config, GeoRules, IpFilterConfig, IpFilterMode};
use crate::pipeline::{RequestCtx, Stage, Verdict};
use crate::server::respond::ProxyError;

/// The stage: the global policy and the routes' own.
pub struct IpFilter {
    global: Option<Policy>,
    /// Per route (by index): its own policy, in place of the global one.
    per_route: Vec<Option<Policy>>,
    metrics: Arc<Metrics>,
    denied_by_cidr: Counter,
    denied_by_asn: Counter,
    denied_by_country: Counter,
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    Cidr,
    Asn,
    /// The country, when the database knows it.
    Country(Option<CountryCode>),
}

impl Denial {
    pub fn reason(self) -> &'static str {
        match self {
            Denial::Cidr => "cidr",
            Denial::Asn => "asn",
            Denial::Country(_) => "country",
        }
    }
}

/// One `[ipfilter]` table, global or a route's.
pub struct Policy {
    mode: IpFilterMode,
    map: Arc<CidrMap>,
    geo: Option<Arc<GeoRules>>,
}

impl IpFilter {
    /// The stage for `config`, if it filters anything: a global
    /// `[ipfilter]` or one on a route.
    pub fn new(config: &Config, metrics: &Arc<Metrics>) -> Option<IpFilter> {
        let policy = |c: &IpFilterConfig| Policy {
            mode: c.mode,
            map: Arc::clone(&c.map),
            geo: c.geo.clone(),
        };
        let global = config.ipfilter.as_ref().map(policy);
        let per_route: Vec<Option<Policy>> = config
            .routes
            .iter()
            .map(|r| r.ipfilter.as_ref().map(policy))
            .collect();
        if global.is_none() && per_route.iter().all(Option::is_none) {
            return None;
        }
        Some(IpFilter {
            global,
            per_route,
            metrics: Arc::clone(metrics),
            denied_by_cidr: metrics.ipfilter_denied("cidr"),
            denied_by_asn: metrics.ipfilter_denied("asn"),
            denied_by_country: metrics.ipfilter_denied("country"),
        })
    }

    /// The policy for a request on `route`: the route's own, else the
    /// global one, else none (everyone passes).
    fn policy(&self, route: Option<usize>) -> Option<&Policy> {
        route
            .and_then(|r| self.per_route.get(r))
            .and_then(Option::as_ref)
            .or(self.global.as_ref())
    }
}

impl Policy {
    /// The verdict on `ip`, in this order: a listed block (the most
    /// specific) decides outright; then a denied AS; then the country
    /// rules; last the mode (`allowlist` refuses the unlisted).
    pub fn judge(&self, ip: IpAddr) -> Result<(), Denial> {
        match self.map.lookup(ip) {
            Some(Listed::Allow) => return Ok(()),
            Some(Listed::Deny) => return Err(Denial::Cidr),
            None => {}
        }
        if let Some(geo) = &self.geo {
            if let Some(db) = &geo.asns
                && !geo.deny_asns.is_empty()
                && db.asn(ip).is_some_and(|asn| geo.deny_asns.contains(&asn))
            {
                return Err(Denial::Asn);
            }
            if let Some(db) = &geo.countries
                && (!geo.deny_countries.is_empty() || !geo.allow_countries.is_empty())
            {
                match db.country(ip) {
                    Some(cc) if geo.deny_countries.contains(&cc) => {
                        return Err(Denial::Country(Some(cc)));
                    }
                    Some(cc) if !geo.allow_countries.is_empty() => {
                        return if geo.allow_countries.contains(&cc) {
                            Ok(())
                        } else {
                            Err(Denial::Country(Some(cc)))
                        };
                    }
                    Some(_) => {}
                    None if geo.deny_unknown_country => return Err(Denial::Country(None)),
                    None => {}
                }
            }
        }
        match self.mode {
            IpFilterMode::Denylist => Ok(()),
            IpFilterMode::Allowlist => Err(Denial::Cidr),
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
        let Some(policy) = self.policy(ctx.route) else {
            return Verdict::Continue;
        };
        let Err(denial) = policy.judge(ctx.client_ip) else {
            return Verdict::Continue;
        };
        ctx.ipfilter_denied = Some(denial.reason());
        match denial {
            Denial::Cidr => self.denied_by_cidr.inc(),
            Denial::Asn => self.denied_by_asn.inc(),
            Denial::Country(cc) => {
                self.metrics
                    .ipfilter_denied_country(cc.as_ref().map_or("unknown", CountryCode::as_str));
                self.denied_by_country.inc()
            }
        };
        Verdict::Reject(ProxyError::Forbidden("address"))
    }
}
