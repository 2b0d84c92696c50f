//! SecLang operators (`@rx`, `@pm`, `@detectSQLi`, ...): compiled once from
//! their parameter, then matched against transformed values.
//!
//! Parameters with macros (`@ge %{tx.threshold}`) are kept as templates and
//! expanded per transaction by the engine; only the cheap operators
//! (comparisons and string tests) accept them, since compiling a regex or
//! an automaton per request would be a denial-of-service lever.

mod simple;
mod sqli;
mod xss;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use ipnet::IpNet;
use regex::bytes::{Regex, RegexBuilder};

use super::prefilter::ByteSet;

pub use simple::{atoi, validate_url_encoding};

/// Compiled regexes may take at most this much memory each.
pub const REGEX_SIZE_LIMIT: usize = 8 * 1024 * 1024;

/// What a successful match can hand to `capture`: the whole match and its
/// groups (up to TX.9), one after another in one buffer. A rule matching
/// many values (CRS's 920450 captures every header name) reuses one
/// buffer instead of allocating a vector per group per value.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Captures {
    bytes: Vec<u8>,
    /// Where each group ends in `bytes`.
    ends: [u32; MAX_GROUPS],
    count: u8,
}

/// TX:0 to TX:9.
const MAX_GROUPS: usize = 10;

impl Captures {
    pub const fn new() -> Self {
        Captures {
            bytes: Vec::new(),
            ends: [0; MAX_GROUPS],
            count: 0,
        }
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
    }

    /// Appends the next group; past the tenth, or past 4 GiB in all (no
    /// value the engine inspects is that long), groups are not kept.
    pub fn push(&mut self, group: &[u8]) {
        let at = usize::from(self.count);
        let Some(end) = self
            .bytes
            .len()
            .checked_add(group.len())
            .and_then(|end| u32::try_from(end).ok())
        else {
            return;
        };
        if let Some(slot) = self.ends.get_mut(at) {
            *slot = end;
            if self.bytes.capacity() == 0 {
                // One allocation for the groups of most matches.
                self.bytes.reserve(group.len().max(64));
            }
            self.bytes.extend_from_slice(group);
            self.count += 1;
        }
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Group `index` (0: the whole match).
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        if index >= self.len() {
            return None;
        }
        let end = *self.ends.get(index)? as usize;
        let start = match index {
            0 => 0,
            _ => *self.ends.get(index - 1)? as usize,
        };
        self.bytes.get(start..end)
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl Clone for Captures {
    fn clone(&self) -> Self {
        Captures {
            bytes: self.bytes.clone(),
            ends: self.ends,
            count: self.count,
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.bytes.clone_from(&source.bytes);
        self.ends = source.ends;
        self.count = source.count;
    }
}

/// A compiled operator.
#[derive(Debug, Clone)]
pub enum Operator {
    Rx(Regex),
    RxGlobal(Regex),
    /// The automaton and its phrases (which the prefilter reads).
    Pm(AhoCorasick, Arc<[Vec<u8>]>),
    DetectSqli,
    DetectXss,
    IpMatch(Vec<IpNet>),
    ValidateByteRange(Box<[bool; 256]>),
    ValidateUrlEncoding,
    ValidateUtf8Encoding,
    VerifyCc(Regex),
    /// Operators over a string parameter, which may hold macros (the
    /// rule expands it and passes it to `matches`).
    Text(TextOp),
    Unconditional,
    /// `@rx` with a pattern that matches every input, whole: `^.*$` and
    /// its kin (the dot matches newlines here). CRS 920450 uses it to
    /// capture each header name; the regex engine would only find what
    /// is already known.
    WholeInput,
    NoMatch,
    GeoLookup,
}

/// The operators whose parameter is plain text (or a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOp {
    BeginsWith,
    Contains,
    ContainsWord,
    EndsWith,
    Streq,
    Strmatch,
    Within,
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

impl Operator {
    /// Bytes of which an input must hold one for the operator to match:
    /// a list none of whose values can hold any (see
    /// `prefilter::chain_reach`) is passed over whole. `None`: no such
    /// set is known (any input may match).
    pub fn needed_bytes(&self) -> Option<ByteSet> {
        match self {
            // Only through a `<` or `=` (see `xss`).
            Operator::DetectXss => Some(ByteSet::of(b"<=")),
            Operator::ValidateUtf8Encoding => Some(ByteSet::range(0x80, 0xff)),
            Operator::ValidateUrlEncoding => Some(ByteSet::of(b"%")),
            Operator::ValidateByteRange(allowed) => {
                let mut outside = ByteSet::default();
                for b in 0..=255u8 {
                    if !allowed[usize::from(b)] {
                        outside.insert(b);
                    }
                }
                Some(outside)
            }
            _ => None,
        }
    }

    /// Whether evaluating it changes the transaction's state (GEO).
    pub fn writes_state(&self) -> bool {
        matches!(self, Operator::GeoLookup)
    }

    /// Compiles operator `name` (canonical) with `param`. Files named by
    /// `pmFromFile` and `ipMatchFromFile` are relative to `base`.
    pub fn compile(name: &str, param: &str, base: &Path) -> Result<Operator, String> {
        let has_macro = param.contains("%{");
        let text = |op| Ok(Operator::Text(op));
        let static_only = || {
            if has_macro {
                Err(format!("@{name} does not take macros ({param:?})"))
            } else {
                Ok(())
            }
        };
        match name {
            "beginsWith" => text(TextOp::BeginsWith),
            "contains" => text(TextOp::Contains),
            "containsWord" => text(TextOp::ContainsWord),
            "endsWith" => text(TextOp::EndsWith),
            "streq" => text(TextOp::Streq),
            "strmatch" => text(TextOp::Strmatch),
            "within" => text(TextOp::Within),
            "eq" => text(TextOp::Eq),
            "ge" => text(TextOp::Ge),
            "gt" => text(TextOp::Gt),
            "le" => text(TextOp::Le),
            "lt" => text(TextOp::Lt),
            "rx" => {
                static_only()?;
                Ok(if matches!(param, "^.*$" | "^.*" | ".*$" | ".*") {
                    Operator::WholeInput
                } else {
                    Operator::Rx(regex(param)?)
                })
            }
            "rxGlobal" => {
                static_only()?;
                Ok(Operator::RxGlobal(regex(param)?))
            }
            "verifyCC" => {
                static_only()?;
                Ok(Operator::VerifyCc(regex(param)?))
            }
            "pm" => {
                static_only()?;
                phrases(pm_phrases(param))
            }
            "pmFromFile" => {
                static_only()?;
                let mut all = Vec::new();
                for file in param.split_whitespace() {
                    all.extend(read_list(base, file)?);
                }
                phrases(all)
            }
            "ipMatch" => {
                static_only()?;
                Ok(Operator::IpMatch(ip_list(
                    param.split(',').map(str::to_string),
                )?))
            }
            "ipMatchFromFile" => {
                static_only()?;
                Ok(Operator::IpMatch(ip_list(
                    read_list(base, param.trim())?
                        .into_iter()
                        .map(|l| String::from_utf8_lossy(&l).into_owned()),
                )?))
            }
            "validateByteRange" => {
                static_only()?;
                Ok(Operator::ValidateByteRange(simple::byte_ranges(param)))
            }
            "validateUrlEncoding" => Ok(Operator::ValidateUrlEncoding),
            "validateUtf8Encoding" => Ok(Operator::ValidateUtf8Encoding),
            "detectSQLi" => {
                // Its tables are built now, not on the first request.
                sqli::prepare();
                Ok(Operator::DetectSqli)
            }
            "detectXSS" => Ok(Operator::DetectXss),
            "unconditionalMatch" => Ok(Operator::Unconditional),
            "noMatch" => Ok(Operator::NoMatch),
            "geoLookup" => Ok(Operator::GeoLookup),
            other => Err(format!("unsupported operator @{other}")),
        }
    }

    /// Whether `input` matches. `param` is the parameter with macros
    /// expanded (used by the text operators only). `captures`, when given,
    /// receives what `capture` would store.
    pub fn matches(&self, input: &[u8], param: &[u8], captures: Option<&mut Captures>) -> bool {
        match self {
            Operator::Rx(re) | Operator::RxGlobal(re) => match captures {
                None => re.is_match(input),
                // Without groups the whole match is all there is to keep,
                // and `find` gets it without the slower capture engine.
                Some(out) if re.captures_len() == 1 => match re.find(input) {
                    None => false,
                    Some(m) => {
                        out.clear();
                        out.push(m.as_bytes());
                        true
                    }
                },
                Some(out) => match re.captures(input) {
                    None => false,
                    Some(caps) => {
                        out.clear();
                        for group in caps.iter().take(MAX_GROUPS) {
                            out.push(group.map_or(&[][..], |m| m.as_bytes()));
                        }
                        true
                    }
                },
            },
            Operator::Pm(ac, _) => match ac.find(input) {
                None => false,
                Some(m) => {
                    if let Some(out) = captures {
                        out.clear();
                        out.push(input.get(m.range()).unwrap_or_default());
                    }
                    true
                }
            },
            Operator::DetectSqli => match sqli::detect(input) {
                Some(fingerprint) => {
                    if let Some(out) = captures {
                        out.clear();
                        out.push(fingerprint.as_bytes());
                    }
                    true
                }
                None => false,
            },
            Operator::DetectXss => xss::detect(input),
            Operator::IpMatch(nets) => std::str::from_utf8(input)
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
                .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
            Operator::ValidateByteRange(allowed) => input.iter().any(|b| !allowed[usize::from(*b)]),
            Operator::ValidateUrlEncoding => !validate_url_encoding(input),
            Operator::ValidateUtf8Encoding => std::str::from_utf8(input).is_err(),
            Operator::VerifyCc(re) => re.find_iter(input).any(|m| simple::luhn(m.as_bytes())),
            Operator::Text(op) => simple::text_op(*op, input, param),
            Operator::Unconditional => true,
            Operator::WholeInput => {
                if let Some(out) = captures {
                    out.clear();
                    out.push(input);
                }
                true
            }
            Operator::NoMatch => false,
            // Looks up the address in the GeoIP database and fills GEO;
            // without a database loaded it cannot match.
            Operator::GeoLookup => false,
        }
    }
}

/// A rule regex: bytes, no Unicode classes (as PCRE without UTF mode),
/// `.` matching newlines (PCRE_DOTALL, as ModSecurity compiles).
pub fn regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(&byte_escapes(pattern))
        .unicode(false)
        .dot_matches_new_line(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => {
                format!("regex is too large to compile (over {limit} bytes compiled)")
            }
            e => format!("bad regex: {}", e.to_string().lines().last().unwrap_or("")),
        })
}

/// PCRE's `\x{HH}` for a byte is the regex crate's `\xHH` (its `\x{..}`
/// names a Unicode scalar, which byte mode refuses).
fn byte_escapes(pattern: &str) -> std::borrow::Cow<'_, str> {
    if !pattern.contains("\\x{") {
        return std::borrow::Cow::Borrowed(pattern);
    }
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let braced = after.strip_prefix("x{").and_then(|r| {
            let close = r.find('}')?;
            let digits = &r[..close];
            let is_byte =
                (1..=2).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_hexdigit());
            is_byte.then_some((digits, close))
        });
        match braced {
            Some((digits, close)) => {
                out.push_str(&format!("\\x{digits:0>2}"));
                rest = &after[2 + close + 1..];
            }
            None => {
                // Any other escape, `\\` included, passes through whole.
                let next = after.chars().next().map_or(0, char::len_utf8);
                out.push('\\');
                out.push_str(&after[..next]);
                rest = &after[next..];
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// `@pm` phrases: separated by blanks.
fn pm_phrases(param: &str) -> Vec<Vec<u8>> {
    param
        .split_whitespace()
        .map(|p| p.as_bytes().to_vec())
        .collect()
}

fn phrases(list: Vec<Vec<u8>>) -> Result<Operator, String> {
    let list: Vec<Vec<u8>> = list.into_iter().filter(|p| !p.is_empty()).collect();
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .match_kind(aho_corasick::MatchKind::LeftmostFirst)
        .build(&list)
        .map(|ac| Operator::Pm(ac, list.into()))
        .map_err(|e| format!("cannot build the phrase matcher: {e}"))
}

/// A list file: one entry per line, blank lines and `#` comments skipped.
fn read_list(base: &Path, file: &str) -> Result<Vec<Vec<u8>>, String> {
    let path = if Path::new(file).is_absolute() {
        Path::new(file).to_path_buf()
    } else {
        base.join(file)
    };
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(bytes
        .split(|b| *b == b'\n')
        .map(|l| l.trim_ascii())
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .map(<[u8]>::to_vec)
        .collect())
}

fn ip_list(entries: impl Iterator<Item = String>) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    for entry in entries {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let net = entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("{entry:?} is not an IP address or CIDR"))?;
        nets.push(net);
    }
    Ok(nets)
}

/// A seeded xorshift: `next(n)` is below `n`. Repeatable random values for
/// the differential tests of the libinjection shortcuts.
#[cfg(test)]
fn random_below(mut seed: u64) -> impl FnMut(usize) -> usize {
    move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operator with needed bytes never matches an input holding none
    /// of them: random inputs over bytes that make each operator match
    /// (and its needed bytes), with the needed bytes taken out.
    #[test]
    fn operators_never_match_without_their_needed_bytes() {
        let base = Path::new("");
        let operators = [
            Operator::compile("detectXSS", "", base).unwrap(),
            Operator::compile("validateUtf8Encoding", "", base).unwrap(),
            Operator::compile("validateUrlEncoding", "", base).unwrap(),
            Operator::compile("validateByteRange", "1-255", base).unwrap(),
            Operator::compile("validateByteRange", "32-126,9,10,13", base).unwrap(),
        ];
        let pieces: [&[u8]; 14] = [
            b"<script>",
            b"onerror=alert(1)",
            b"%",
            b"%zz",
            b"%4",
            b"\xc3",
            b"\xff\xfe",
            b"\0",
            b"\x7f",
            b"\t",
            b"a",
            b"=",
            b"<",
            b" ",
        ];
        let mut next = crate::test_rng::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut matched_with = [0usize; 5];
        for _ in 0..5_000 {
            let value: Vec<u8> = (0..1 + next() % 5)
                .flat_map(|_| {
                    pieces[(next() % pieces.len() as u64) as usize]
                        .iter()
                        .copied()
                })
                .collect();
            for (i, op) in operators.iter().enumerate() {
                let needed = op.needed_bytes().unwrap();
                if op.matches(&value, b"", None) {
                    matched_with[i] += 1;
                }
                let without: Vec<u8> = value
                    .iter()
                    .copied()
                    .filter(|b| !needed.contains(*b))
                    .collect();
                assert!(
                    !op.matches(&without, b"", None),
                    "operator {i} matched {without:?}, which holds none of its needed bytes"
                );
            }
        }
        // The inputs do make every operator match, so the check has teeth.
        assert!(matched_with.iter().all(|n| *n > 100), "{matched_with:?}");
    }

    #[test]
    fn pcre_byte_escapes_become_regex_crate_ones() {
        assert_eq!(byte_escapes(r"[\x7f-\x{ff}]"), r"[\x7f-\xff]");
        assert_eq!(byte_escapes(r"\\x{41}\x{5}"), r"\\x{41}\x05");
        let re = regex(r"^[\x{c2}-\x{ff}]$").unwrap();
        assert!(re.is_match(&[0xe2]));
        assert!(!re.is_match(b"a"));
    }

    /// `^.*$` and its kin skip the regex engine: they must match and
    /// capture exactly what the regex would, newlines, NULs and invalid
    /// UTF-8 included.
    #[test]
    fn whole_input_patterns_capture_what_the_regex_would() {
        let inputs: [&[u8]; 6] = [b"", b"Host", b"a\nb\n", b"\0x\r\n", b"\xff\xfe\xc3(", b"  "];
        for pattern in ["^.*$", "^.*", ".*$", ".*"] {
            let op = Operator::compile("rx", pattern, Path::new("")).unwrap();
            assert!(matches!(op, Operator::WholeInput), "{pattern}");
            let re = regex(pattern).unwrap();
            for input in inputs {
                let mut caps = Captures::new();
                let matched = op.matches(input, b"", Some(&mut caps));
                let found = re.find(input).map(|m| m.as_bytes().to_vec());
                assert_eq!(matched, found.is_some(), "{pattern} on {input:?}");
                assert_eq!(
                    caps.get(0).map(<[u8]>::to_vec),
                    found,
                    "{pattern} on {input:?}"
                );
            }
        }
    }

    #[test]
    fn regex_size_limit_is_an_error_not_a_hang() {
        let huge = format!("(?:{}){{1000}}", "[a-z]{1000}");
        let err = regex(&huge).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }
}
