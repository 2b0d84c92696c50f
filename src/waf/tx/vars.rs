//! Variables: what a rule's target list selects from the transaction, as
//! (name, value) pairs named the way ModSecurity names them in
//! MATCHED_VAR_NAME (`ARGS:id`, `REQUEST_HEADERS:Host`, `REQUEST_URI`).

use std::borrow::Cow;

use regex::bytes::Regex;

use super::Transaction;
use super::request::Pair;
use crate::waf::seclang::ast::{Selector, VarSpec};

/// One selected value.
pub struct Selected<'t> {
    pub name: String,
    pub value: Cow<'t, [u8]>,
}

/// Key selection for collections: names compared without case.
struct KeyFilter<'s> {
    selector: &'s Selector,
    regex: Option<Regex>,
}

impl<'s> KeyFilter<'s> {
    fn new(selector: &'s Selector) -> KeyFilter<'s> {
        let regex = match selector {
            Selector::Regex(pattern) => regex::bytes::RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .ok(),
            _ => None,
        };
        KeyFilter { selector, regex }
    }

    fn accepts(&self, key: &[u8]) -> bool {
        match self.selector {
            Selector::All => true,
            Selector::Key(k) => key.eq_ignore_ascii_case(k.as_bytes()),
            Selector::Regex(_) => self.regex.as_ref().is_some_and(|re| re.is_match(key)),
            Selector::XPath(_) => false,
        }
    }
}

impl Transaction {
    /// The members of collection `name` as (key, value) pairs.
    fn collection(&self, name: &str) -> Option<Cow<'_, [Pair]>> {
        let r = &self.request;
        Some(match name {
            "ARGS" => Cow::Owned(
                self.args_get
                    .iter()
                    .chain(&self.args_post)
                    .cloned()
                    .collect(),
            ),
            "ARGS_GET" => Cow::Borrowed(&self.args_get),
            "ARGS_POST" => Cow::Borrowed(&self.args_post),
            "ARGS_NAMES" => names(self.args_get.iter().chain(&self.args_post)),
            "ARGS_GET_NAMES" => names(self.args_get.iter()),
            "ARGS_POST_NAMES" => names(self.args_post.iter()),
            "REQUEST_HEADERS" => Cow::Borrowed(&r.headers),
            "REQUEST_HEADERS_NAMES" => names(r.headers.iter()),
            "REQUEST_COOKIES" => Cow::Borrowed(&self.cookies),
            "REQUEST_COOKIES_NAMES" => names(self.cookies.iter()),
            "RESPONSE_HEADERS" => Cow::Borrowed(&self.response.headers),
            "RESPONSE_HEADERS_NAMES" => names(self.response.headers.iter()),
            "MATCHED_VARS" => Cow::Owned(
                self.matched_vars
                    .iter()
                    .map(|(n, v)| (n.as_bytes().to_vec(), v.clone()))
                    .collect(),
            ),
            "MATCHED_VARS_NAMES" => Cow::Owned(
                self.matched_vars
                    .iter()
                    .map(|(n, _)| (n.as_bytes().to_vec(), n.as_bytes().to_vec()))
                    .collect(),
            ),
            "TX" | "IP" | "GLOBAL" | "SESSION" | "USER" | "RESOURCE" | "ENV" | "GEO" => {
                let map = self.collections.get(name)?;
                Cow::Owned(
                    map.iter()
                        .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
                        .collect(),
                )
            }
            "FILES" | "FILES_NAMES" | "FILES_SIZES" | "MULTIPART_PART_HEADERS" | "XML" => {
                Cow::Owned(Vec::new())
            }
            _ => return None,
        })
    }

    /// A scalar variable's value, if `name` is one.
    pub(super) fn scalar(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        let r = &self.request;
        let b = |s: &'static str| Cow::Borrowed(s.as_bytes());
        let owned = |v: Vec<u8>| Cow::Owned(v);
        let num = |n: u64| Cow::Owned(n.to_string().into_bytes());
        Some(match name {
            "REQUEST_METHOD" => Cow::Borrowed(r.method.as_slice()),
            "REQUEST_PROTOCOL" => Cow::Borrowed(r.protocol.as_slice()),
            "REQUEST_URI" => Cow::Borrowed(r.uri()),
            "REQUEST_URI_RAW" => Cow::Borrowed(r.uri_raw.as_slice()),
            "REQUEST_FILENAME" => Cow::Borrowed(r.path()),
            "REQUEST_BASENAME" => Cow::Borrowed(r.basename()),
            "QUERY_STRING" => Cow::Borrowed(r.query()),
            "REQUEST_LINE" => owned(r.request_line()),
            "REQUEST_BODY" if self.expose_request_body() => Cow::Borrowed(r.body.as_slice()),
            "REQUEST_BODY" => return None,
            "REQUEST_BODY_LENGTH" => num(r.body.len() as u64),
            "REMOTE_ADDR" => Cow::Borrowed(r.remote_addr.as_bytes()),
            "REMOTE_PORT" => num(u64::from(r.remote_port)),
            "SERVER_NAME" => Cow::Borrowed(r.server_name.as_slice()),
            "SERVER_PORT" => num(u64::from(r.server_port)),
            "UNIQUE_ID" => Cow::Borrowed(self.unique_id.as_bytes()),
            "ARGS_COMBINED_SIZE" => num(self
                .args_get
                .iter()
                .chain(&self.args_post)
                .map(|(n, v)| (n.len() + v.len()) as u64)
                .sum()),
            "FILES_COMBINED_SIZE" => b("0"),
            "REQBODY_PROCESSOR" => Cow::Borrowed(self.body_processor.as_bytes()),
            "REQBODY_ERROR" | "REQBODY_PROCESSOR_ERROR" => {
                b(if self.body_error.is_some() { "1" } else { "0" })
            }
            "REQBODY_ERROR_MSG" => owned(self.body_error.clone().unwrap_or_default().into_bytes()),
            "URLENCODED_ERROR" | "INBOUND_DATA_ERROR" | "OUTBOUND_DATA_ERROR" => b("0"),
            "MULTIPART_STRICT_ERROR"
            | "MULTIPART_UNMATCHED_BOUNDARY"
            | "MULTIPART_BOUNDARY_QUOTED"
            | "MULTIPART_BOUNDARY_WHITESPACE"
            | "MULTIPART_CRLF_LF_LINES"
            | "MULTIPART_DATA_AFTER"
            | "MULTIPART_DATA_BEFORE"
            | "MULTIPART_FILE_LIMIT_EXCEEDED"
            | "MULTIPART_HEADER_FOLDING"
            | "MULTIPART_INVALID_HEADER_FOLDING"
            | "MULTIPART_INVALID_PART"
            | "MULTIPART_INVALID_QUOTING"
            | "MULTIPART_LF_LINE"
            | "MULTIPART_MISSING_SEMICOLON" => b("0"),
            "MULTIPART_FILENAME" | "MULTIPART_NAME" => b(""),
            "MATCHED_VAR" => Cow::Borrowed(self.matched_var.as_slice()),
            "MATCHED_VAR_NAME" => Cow::Borrowed(self.matched_var_name.as_bytes()),
            "RESPONSE_STATUS" => num(u64::from(self.response.status)),
            "RESPONSE_PROTOCOL" => Cow::Borrowed(self.response.protocol.as_slice()),
            "RESPONSE_BODY" => Cow::Borrowed(self.response.body.as_slice()),
            "RESPONSE_CONTENT_TYPE" => Cow::Borrowed(
                self.response
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
                    .map_or(&b""[..], |(_, v)| v.as_slice()),
            ),
            "RESPONSE_CONTENT_LENGTH" => Cow::Borrowed(
                self.response
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(b"content-length"))
                    .map_or(&b""[..], |(_, v)| v.as_slice()),
            ),
            "STATUS_LINE" => owned(
                format!(
                    "{} {}",
                    String::from_utf8_lossy(&self.response.protocol),
                    self.response.status
                )
                .into_bytes(),
            ),
            "DURATION" => num(self.started.elapsed().as_micros() as u64),
            "HIGHEST_SEVERITY" => num(u64::from(self.highest_severity.unwrap_or(255))),
            "FULL_REQUEST" => {
                let mut full = r.request_line();
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
            "FULL_REQUEST_LENGTH" => num(r.request_line().len() as u64 + r.body.len() as u64),
            "AUTH_TYPE" | "REMOTE_HOST" | "REMOTE_USER" | "PATH_INFO" | "SERVER_ADDR" => b(""),
            "TIME" | "TIME_DAY" | "TIME_EPOCH" | "TIME_HOUR" | "TIME_MIN" | "TIME_MON"
            | "TIME_SEC" | "TIME_WDAY" | "TIME_YEAR" => owned(time_var(name)),
            _ => return None,
        })
    }

    /// Appends what `spec` selects (exclusions are applied by the caller).
    pub fn select<'t>(&'t self, spec: &VarSpec, out: &mut Vec<Selected<'t>>) {
        if let Some(members) = self.collection(&spec.name) {
            let filter = KeyFilter::new(&spec.selector);
            if spec.count {
                let n = members.iter().filter(|(k, _)| filter.accepts(k)).count();
                out.push(Selected {
                    name: spec.name.clone(),
                    value: Cow::Owned(n.to_string().into_bytes()),
                });
                return;
            }
            match members {
                Cow::Borrowed(list) => {
                    for (k, v) in list.iter().filter(|(k, _)| filter.accepts(k)) {
                        out.push(Selected {
                            name: format!("{}:{}", spec.name, String::from_utf8_lossy(k)),
                            value: Cow::Borrowed(v.as_slice()),
                        });
                    }
                }
                Cow::Owned(list) => {
                    for (k, v) in list.into_iter().filter(|(k, _)| filter.accepts(k)) {
                        out.push(Selected {
                            name: format!("{}:{}", spec.name, String::from_utf8_lossy(&k)),
                            value: Cow::Owned(v),
                        });
                    }
                }
            }
            return;
        }
        let value = self.scalar(&spec.name);
        if spec.count {
            out.push(Selected {
                name: spec.name.clone(),
                value: Cow::Owned(if value.is_some() {
                    b"1".to_vec()
                } else {
                    b"0".to_vec()
                }),
            });
        } else if let Some(value) = value {
            out.push(Selected {
                name: spec.name.clone(),
                value,
            });
        }
    }

    /// Whether `selected` is removed by the exclusion `spec` (`!ARGS:pwd`).
    pub fn excluded(selected_name: &str, spec: &VarSpec) -> bool {
        let Some((collection, key)) = selected_name.split_once(':') else {
            return spec.selector == Selector::All && selected_name == spec.name;
        };
        collection == spec.name && KeyFilter::new(&spec.selector).accepts(key.as_bytes())
    }
}

fn names<'a>(pairs: impl Iterator<Item = &'a Pair>) -> Cow<'a, [Pair]> {
    Cow::Owned(pairs.map(|(k, _)| (k.clone(), k.clone())).collect())
}

fn time_var(name: &str) -> Vec<u8> {
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
    let value = match name {
        "TIME_EPOCH" => secs.to_string(),
        "TIME_YEAR" => year.to_string(),
        "TIME_MON" => format!("{:02}", month),
        "TIME_DAY" => format!("{:02}", day),
        "TIME_HOUR" => format!("{:02}", rem / 3600),
        "TIME_MIN" => format!("{:02}", rem % 3600 / 60),
        "TIME_SEC" => format!("{:02}", rem % 60),
        "TIME_WDAY" => ((days + 4) % 7).to_string(),
        _ => format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    };
    value.into_bytes()
}
