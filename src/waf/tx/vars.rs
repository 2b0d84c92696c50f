//! Variables: what a rule's target list selects from the transaction, as
//! (name, value) pairs named the way ModSecurity names them in
//! MATCHED_VAR_NAME (`ARGS:id`, `REQUEST_HEADERS:Host`, `REQUEST_URI`).

use std::borrow::Cow;

use super::Transaction;
use super::memo::SlotId;
use super::request::Pair;
use crate::waf::seclang::ast::{Selector, Var, VarSpec};

/// Receives each selected value: its key (`None` for scalars), its bytes,
/// and, for values that stay put for the transaction (request and response
/// data; not TX values or counts), the slot the memo knows it by.
pub type ValueVisitor<'f> = dyn FnMut(Option<&[u8]>, &[u8], Option<SlotId>) + 'f;

type MemberVisitor<'f> = dyn FnMut(&[u8], &[u8], Option<SlotId>) + 'f;

/// Memo groups of the request and response lists; scalars follow, one
/// group per variable.
pub(super) mod group {
    pub const ARGS_GET: u16 = 0;
    pub const ARGS_POST: u16 = 1;
    pub const ARGS_GET_NAMES: u16 = 2;
    pub const ARGS_POST_NAMES: u16 = 3;
    pub const REQUEST_HEADERS: u16 = 4;
    pub const REQUEST_HEADERS_NAMES: u16 = 5;
    pub const COOKIES: u16 = 6;
    pub const COOKIES_NAMES: u16 = 7;
    pub const RESPONSE_HEADERS: u16 = 8;
    pub const RESPONSE_HEADERS_NAMES: u16 = 9;
    pub const SCALARS: u16 = 10;
}

/// Whether a collection key is selected (names compared without case).
// Inlined: most calls ask of `All` and are answered at once.
#[inline(always)]
pub(super) fn accepts(selector: &Selector, key: &[u8]) -> bool {
    match selector {
        Selector::All => true,
        Selector::Key(k) => key.eq_ignore_ascii_case(k.as_bytes()),
        Selector::Regex(re) => re.is_match(key),
        Selector::XPath(_) => false,
    }
}

/// Collections this engine never fills (it parses neither multipart nor
/// XML bodies into variables): always empty.
pub(super) fn holds_nothing(var: Var) -> bool {
    matches!(
        var,
        Var::Files | Var::FilesNames | Var::FilesSizes | Var::MultipartPartHeaders | Var::Xml
    )
}

/// A list a list variable reads: its pairs, its memo group, and whether
/// the variable's values are the keys (`ARGS_NAMES`).
pub(super) type ListRef<'a> = (&'a [Pair], u16, bool);

impl Transaction {
    /// The lists behind `var`, if it is one of the request or response
    /// lists (ARGS reads two).
    pub(super) fn lists(&self, var: Var) -> Option<[Option<ListRef<'_>>; 2]> {
        fn one(list: &[Pair], group: u16, names: bool) -> Option<[Option<ListRef<'_>>; 2]> {
            Some([Some((list, group, names)), None])
        }
        match var {
            Var::Args => Some([
                Some((self.args_get.as_slice(), group::ARGS_GET, false)),
                Some((self.args_post.as_slice(), group::ARGS_POST, false)),
            ]),
            Var::ArgsGet => one(&self.args_get, group::ARGS_GET, false),
            Var::ArgsPost => one(&self.args_post, group::ARGS_POST, false),
            Var::ArgsNames => Some([
                Some((self.args_get.as_slice(), group::ARGS_GET_NAMES, true)),
                Some((self.args_post.as_slice(), group::ARGS_POST_NAMES, true)),
            ]),
            Var::ArgsGetNames => one(&self.args_get, group::ARGS_GET_NAMES, true),
            Var::ArgsPostNames => one(&self.args_post, group::ARGS_POST_NAMES, true),
            Var::RequestHeaders => one(&self.request.headers, group::REQUEST_HEADERS, false),
            Var::RequestHeadersNames => {
                one(&self.request.headers, group::REQUEST_HEADERS_NAMES, true)
            }
            Var::RequestCookies => one(&self.cookies, group::COOKIES, false),
            Var::RequestCookiesNames => one(&self.cookies, group::COOKIES_NAMES, true),
            Var::ResponseHeaders => one(&self.response.headers, group::RESPONSE_HEADERS, false),
            Var::ResponseHeadersNames => {
                one(&self.response.headers, group::RESPONSE_HEADERS_NAMES, true)
            }
            _ => None,
        }
    }

    /// Calls `f(key, value)` for each member of collection `name`; false
    /// when `name` is not a collection. Nothing is copied.
    fn members(&self, var: Var, f: &mut MemberVisitor<'_>) -> bool {
        let pairs = |list: &[Pair], group: u16, f: &mut MemberVisitor<'_>| {
            for (index, (k, v)) in list.iter().enumerate() {
                f(
                    k,
                    v,
                    Some(SlotId {
                        group,
                        index: index as u32,
                    }),
                );
            }
        };
        let keys = |list: &[Pair], group: u16, f: &mut MemberVisitor<'_>| {
            for (index, (k, _)) in list.iter().enumerate() {
                f(
                    k,
                    k,
                    Some(SlotId {
                        group,
                        index: index as u32,
                    }),
                );
            }
        };
        match var {
            Var::Args => {
                pairs(&self.args_get, group::ARGS_GET, f);
                pairs(&self.args_post, group::ARGS_POST, f);
            }
            Var::ArgsGet => pairs(&self.args_get, group::ARGS_GET, f),
            Var::ArgsPost => pairs(&self.args_post, group::ARGS_POST, f),
            Var::ArgsNames => {
                keys(&self.args_get, group::ARGS_GET_NAMES, f);
                keys(&self.args_post, group::ARGS_POST_NAMES, f);
            }
            Var::ArgsGetNames => keys(&self.args_get, group::ARGS_GET_NAMES, f),
            Var::ArgsPostNames => keys(&self.args_post, group::ARGS_POST_NAMES, f),
            Var::RequestHeaders => pairs(&self.request.headers, group::REQUEST_HEADERS, f),
            Var::RequestHeadersNames => {
                keys(&self.request.headers, group::REQUEST_HEADERS_NAMES, f)
            }
            Var::RequestCookies => pairs(&self.cookies, group::COOKIES, f),
            Var::RequestCookiesNames => keys(&self.cookies, group::COOKIES_NAMES, f),
            Var::ResponseHeaders => pairs(&self.response.headers, group::RESPONSE_HEADERS, f),
            Var::ResponseHeadersNames => {
                keys(&self.response.headers, group::RESPONSE_HEADERS_NAMES, f)
            }
            Var::MatchedVars => {
                for m in self.matched_vars.iter() {
                    f(m.name, m.value, None);
                }
            }
            Var::MatchedVarsNames => {
                for m in self.matched_vars.iter() {
                    f(m.name, m.name, None);
                }
            }
            Var::Tx
            | Var::Ip
            | Var::Global
            | Var::Session
            | Var::User
            | Var::Resource
            | Var::Env
            | Var::Geo => {
                if let Some(map) = self.collections.get(&var) {
                    for (k, v) in map {
                        f(k, v, None);
                    }
                }
            }
            _ if holds_nothing(var) => {}
            _ => return false,
        }
        true
    }

    /// A scalar variable's value, if `name` is one.
    pub(super) fn scalar(&self, var: Var) -> Option<Cow<'_, [u8]>> {
        let r = &self.request;
        let b = |s: &'static str| Cow::Borrowed(s.as_bytes());
        let owned = |v: Vec<u8>| Cow::Owned(v);
        let num = |n: u64| Cow::Owned(n.to_string().into_bytes());
        Some(match var {
            Var::RequestMethod => Cow::Borrowed(r.method.as_slice()),
            Var::RequestProtocol => Cow::Borrowed(r.protocol.as_slice()),
            Var::RequestUri => Cow::Borrowed(r.uri()),
            Var::RequestUriRaw => Cow::Borrowed(r.uri_raw.as_slice()),
            Var::RequestFilename => Cow::Borrowed(r.path()),
            Var::RequestBasename => Cow::Borrowed(r.basename()),
            Var::QueryString => Cow::Borrowed(r.query()),
            Var::RequestLine => Cow::Borrowed(self.request_line.as_slice()),
            Var::RequestBody if self.expose_request_body() => Cow::Borrowed(r.body.as_slice()),
            Var::RequestBody => return None,
            Var::RequestBodyLength => num(r.body.len() as u64),
            Var::RemoteAddr => Cow::Borrowed(r.remote_addr.as_bytes()),
            Var::RemotePort => num(u64::from(r.remote_port)),
            Var::ServerName => Cow::Borrowed(r.server_name.as_slice()),
            Var::ServerPort => num(u64::from(r.server_port)),
            Var::UniqueId => Cow::Borrowed(self.unique_id.as_bytes()),
            Var::ArgsCombinedSize => num(self
                .args_get
                .iter()
                .chain(&self.args_post)
                .map(|(n, v)| (n.len() + v.len()) as u64)
                .sum()),
            Var::FilesCombinedSize => b("0"),
            Var::ReqbodyProcessor => Cow::Borrowed(self.body_processor.as_bytes()),
            Var::ReqbodyError | Var::ReqbodyProcessorError => {
                b(if self.body_error.is_some() { "1" } else { "0" })
            }
            Var::ReqbodyErrorMsg => owned(self.body_error.clone().unwrap_or_default().into_bytes()),
            Var::UrlencodedError | Var::InboundDataError | Var::OutboundDataError => b("0"),
            Var::MultipartStrictError
            | Var::MultipartUnmatchedBoundary
            | Var::MultipartBoundaryQuoted
            | Var::MultipartBoundaryWhitespace
            | Var::MultipartCrlfLfLines
            | Var::MultipartDataAfter
            | Var::MultipartDataBefore
            | Var::MultipartFileLimitExceeded
            | Var::MultipartHeaderFolding
            | Var::MultipartInvalidHeaderFolding
            | Var::MultipartInvalidPart
            | Var::MultipartInvalidQuoting
            | Var::MultipartLfLine
            | Var::MultipartMissingSemicolon => b("0"),
            Var::MultipartFilename | Var::MultipartName => b(""),
            Var::MatchedVar => Cow::Borrowed(self.matched_var.as_slice()),
            Var::MatchedVarName => Cow::Borrowed(self.matched_var_name.as_slice()),
            Var::ResponseStatus => num(u64::from(self.response.status)),
            Var::ResponseProtocol => Cow::Borrowed(self.response.protocol.as_slice()),
            Var::ResponseBody => Cow::Borrowed(self.response.body.as_slice()),
            Var::ResponseContentType => Cow::Borrowed(
                self.response
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
                    .map_or(&b""[..], |(_, v)| v.as_slice()),
            ),
            Var::ResponseContentLength => Cow::Borrowed(
                self.response
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(b"content-length"))
                    .map_or(&b""[..], |(_, v)| v.as_slice()),
            ),
            Var::StatusLine => owned(
                format!(
                    "{} {}",
                    String::from_utf8_lossy(&self.response.protocol),
                    self.response.status
                )
                .into_bytes(),
            ),
            Var::Duration => num(self.started.elapsed().as_micros() as u64),
            Var::HighestSeverity => num(u64::from(self.highest_severity.unwrap_or(255))),
            Var::FullRequest => {
                let mut full = self.request_line.clone();
                full.extend_from_slice(b"\r\n");
                for (n, v) in &r.headers {
                    full.extend_from_slice(n);
                    full.extend_from_slice(b": ");
                    full.extend_from_slice(v);
                    full.extend_from_slice(b"\r\n");
                }
                full.extend_from_slice(b"\r\n");
                full.extend_from_slice(&r.body);
                owned(full)
            }
            Var::FullRequestLength => num(self.request_line.len() as u64 + r.body.len() as u64),
            Var::AuthType | Var::RemoteHost | Var::RemoteUser | Var::PathInfo | Var::ServerAddr => {
                b("")
            }
            Var::Time
            | Var::TimeDay
            | Var::TimeEpoch
            | Var::TimeHour
            | Var::TimeMin
            | Var::TimeMon
            | Var::TimeSec
            | Var::TimeWday
            | Var::TimeYear => owned(time_var(var)),
            _ => return None,
        })
    }

    /// Calls `f(key, value)` for each value `spec` selects (`key` is
    /// `None` for scalars); a count (`&ARGS`) is one value. Exclusions are
    /// the caller's.
    pub fn visit(&self, spec: &VarSpec, f: &mut ValueVisitor<'_>) {
        // `TX:name` and the like: one lookup, not a walk of the collection
        // (CRS reads TX by name in most of its rules).
        if let Selector::Key(key) = &spec.selector
            && super::is_collection(spec.var)
            && let Some(map) = self.collections.get(&spec.var)
        {
            // Names are kept lower-cased, as are the names compiled rules
            // pick (`rule::lowered_collection_key`): looked up as they are,
            // and lowered here only when that misses.
            let found = map.get_key_value(key.as_bytes()).or_else(|| {
                if !key.bytes().any(|b| b.is_ascii_uppercase()) {
                    return None;
                }
                map.get_key_value(key.to_ascii_lowercase().as_bytes())
            });
            if spec.count {
                f(None, if found.is_some() { b"1" } else { b"0" }, None);
            } else if let Some((k, v)) = found {
                f(Some(k), v, None);
            }
            return;
        }
        let mut count = 0usize;
        let is_collection = self.members(spec.var, &mut |k, v, slot| {
            if accepts(&spec.selector, k) {
                if spec.count {
                    count += 1;
                } else {
                    f(Some(k), v, slot);
                }
            }
        });
        if is_collection {
            if spec.count {
                f(None, count.to_string().as_bytes(), None);
            }
            return;
        }
        let value = self.scalar(spec.var);
        if spec.count {
            f(None, if value.is_some() { b"1" } else { b"0" }, None);
        } else if let Some(value) = value {
            // Borrowed scalars are request or response data, which stay
            // put; the matched variables change from rule to rule.
            let stable = matches!(value, Cow::Borrowed(_))
                && !matches!(spec.var, Var::MatchedVar | Var::MatchedVarName);
            let slot = stable.then_some(SlotId {
                group: group::SCALARS,
                index: spec.var as u32,
            });
            f(None, &value, slot);
        }
    }

    /// Whether the value (`collection`, `key`) is removed by the exclusion
    /// `spec` (`!ARGS:pwd`).
    pub fn excluded_by(var: Var, key: Option<&[u8]>, spec: &VarSpec) -> bool {
        if var != spec.var {
            return false;
        }
        match key {
            Some(k) => accepts(&spec.selector, k),
            None => spec.selector == Selector::All,
        }
    }
}

fn time_var(var: Var) -> Vec<u8> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let value = match var {
        Var::TimeEpoch => secs.to_string(),
        Var::TimeYear => year.to_string(),
        Var::TimeMon => format!("{:02}", month),
        Var::TimeDay => format!("{:02}", day),
        Var::TimeHour => format!("{:02}", rem / 3600),
        Var::TimeMin => format!("{:02}", rem % 3600 / 60),
        Var::TimeSec => format!("{:02}", rem % 60),
        Var::TimeWday => ((days + 4) % 7).to_string(),
        _ => format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    };
    value.into_bytes()
}
