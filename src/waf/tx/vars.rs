//! Variables: what a rule's target list selects from the transaction, as
//! (name, value) pairs named the way ModSecurity names them in
//! MATCHED_VAR_NAME (`ARGS:id`, `REQUEST_HEADERS:Host`, `REQUEST_URI`).

use std::borrow::Cow;

use super::Transaction;
use super::request::Pair;
use crate::waf::seclang::ast::{Selector, VarSpec};

/// Whether a collection key is selected (names compared without case).
fn accepts(selector: &Selector, key: &[u8]) -> bool {
    match selector {
        Selector::All => true,
        Selector::Key(k) => key.eq_ignore_ascii_case(k.as_bytes()),
        Selector::Regex(re) => re.regex.is_match(key),
        Selector::XPath(_) => false,
    }
}

impl Transaction {
    /// Calls `f(key, value)` for each member of collection `name`; false
    /// when `name` is not a collection. Nothing is copied.
    fn members(&self, name: &str, f: &mut dyn FnMut(&[u8], &[u8])) -> bool {
        let pairs = |list: &[Pair], f: &mut dyn FnMut(&[u8], &[u8])| {
            for (k, v) in list {
                f(k, v);
            }
        };
        let keys = |list: &[Pair], f: &mut dyn FnMut(&[u8], &[u8])| {
            for (k, _) in list {
                f(k, k);
            }
        };
        match name {
            "ARGS" => {
                pairs(&self.args_get, f);
                pairs(&self.args_post, f);
            }
            "ARGS_GET" => pairs(&self.args_get, f),
            "ARGS_POST" => pairs(&self.args_post, f),
            "ARGS_NAMES" => {
                keys(&self.args_get, f);
                keys(&self.args_post, f);
            }
            "ARGS_GET_NAMES" => keys(&self.args_get, f),
            "ARGS_POST_NAMES" => keys(&self.args_post, f),
            "REQUEST_HEADERS" => pairs(&self.request.headers, f),
            "REQUEST_HEADERS_NAMES" => keys(&self.request.headers, f),
            "REQUEST_COOKIES" => pairs(&self.cookies, f),
            "REQUEST_COOKIES_NAMES" => keys(&self.cookies, f),
            "RESPONSE_HEADERS" => pairs(&self.response.headers, f),
            "RESPONSE_HEADERS_NAMES" => keys(&self.response.headers, f),
            "MATCHED_VARS" => {
                for (n, v) in &self.matched_vars {
                    f(n.as_bytes(), v);
                }
            }
            "MATCHED_VARS_NAMES" => {
                for (n, _) in &self.matched_vars {
                    f(n.as_bytes(), n.as_bytes());
                }
            }
            "TX" | "IP" | "GLOBAL" | "SESSION" | "USER" | "RESOURCE" | "ENV" | "GEO" => {
                if let Some(map) = self.collections.get(name) {
                    for (k, v) in map {
                        f(k.as_bytes(), v);
                    }
                }
            }
            "FILES" | "FILES_NAMES" | "FILES_SIZES" | "MULTIPART_PART_HEADERS" | "XML" => {}
            _ => return false,
        }
        true
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

    /// Calls `f(key, value)` for each value `spec` selects (`key` is
    /// `None` for scalars); a count (`&ARGS`) is one value. Exclusions are
    /// the caller's.
    pub fn visit(&self, spec: &VarSpec, f: &mut dyn FnMut(Option<&[u8]>, &[u8])) {
        let mut count = 0usize;
        let is_collection = self.members(&spec.name, &mut |k, v| {
            if accepts(&spec.selector, k) {
                if spec.count {
                    count += 1;
                } else {
                    f(Some(k), v);
                }
            }
        });
        if is_collection {
            if spec.count {
                f(None, count.to_string().as_bytes());
            }
            return;
        }
        let value = self.scalar(&spec.name);
        if spec.count {
            f(None, if value.is_some() { b"1" } else { b"0" });
        } else if let Some(value) = value {
            f(None, &value);
        }
    }

    /// The name ModSecurity reports for a value (`ARGS:id`, `REQUEST_URI`).
    pub fn value_name(collection: &str, key: Option<&[u8]>) -> String {
        match key {
            Some(k) => format!("{collection}:{}", String::from_utf8_lossy(k)),
            None => collection.to_string(),
        }
    }

    /// Whether the value (`collection`, `key`) is removed by the exclusion
    /// `spec` (`!ARGS:pwd`).
    pub fn excluded_by(collection: &str, key: Option<&[u8]>, spec: &VarSpec) -> bool {
        if collection != spec.name {
            return false;
        }
        match key {
            Some(k) => accepts(&spec.selector, k),
            None => spec.selector == Selector::All,
        }
    }
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
