//! The parsed form of SecLang: what each rule and directive says, with
//! names checked against what the engine supports but nothing compiled yet.

use std::path::Path;
use std::sync::Arc;

pub use super::var::Var;

/// Where something was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<Path>,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// How a variable's members are selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The whole collection (or the scalar).
    All,
    /// One member by name (compared without case where the collection's
    /// names have none, such as headers).
    Key(String),
    /// Members whose names match the regex (compiled once, at load).
    Regex(KeyRegex),
    /// An XPath expression (XML only).
    XPath(String),
}

/// A key regex, compiled case-insensitively as ModSecurity matches
/// collection keys; compared by its pattern.
#[derive(Debug, Clone)]
pub struct KeyRegex {
    pub pattern: String,
    pub regex: Arc<regex::bytes::Regex>,
    /// For `^literal` (as in CRS's `TX:/^header_name_920450_/`, tried on
    /// every TX variable), the literal: a prefix test without the regex.
    prefix: Option<Box<[u8]>>,
    /// Literals (lower-cased ASCII) one of which every matching key holds
    /// in some case (CRS's `TX:/MULTIPART_HEADERS_CONTENT_TYPES_*/`): most
    /// keys are turned away by a substring test.
    required: Option<Box<[Box<[u8]>]>>,
}

impl KeyRegex {
    pub fn new(pattern: &str) -> Result<KeyRegex, regex::Error> {
        let regex = regex::bytes::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .size_limit(crate::waf::operator::REGEX_SIZE_LIMIT)
            .build()?;
        let prefix = pattern
            .strip_prefix('^')
            .filter(|lit| {
                lit.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            })
            .map(|lit| lit.to_ascii_lowercase().into_bytes().into());
        // An anchored regex turns a key away at its first bytes already;
        // an unanchored one without case walks every key whole. Non-ASCII
        // literals are left to the regex: its case folding is Unicode's,
        // the substring test's only ASCII's.
        let required = (!pattern.starts_with('^'))
            .then(|| crate::waf::prefilter::literals::necessary_literals(pattern))
            .flatten()
            .filter(|set| set.iter().all(|l| !l.is_empty() && l.is_ascii()))
            .map(|set| set.into_iter().map(Vec::into_boxed_slice).collect());
        Ok(KeyRegex {
            pattern: pattern.to_string(),
            regex: Arc::new(regex),
            prefix,
            required,
        })
    }

    /// The literal (lower-cased) every matching key starts with in any
    /// case, when the pattern is `^literal`.
    pub fn literal_prefix(&self) -> Option<&[u8]> {
        self.prefix.as_deref()
    }

    /// Whether `key` matches, without case. The literal tests answer for
    /// ASCII keys only: the regex folds case as Unicode does, where `ſ`
    /// is an `s`.
    pub fn is_match(&self, key: &[u8]) -> bool {
        if let Some(lit) = &self.prefix {
            // The first byte alone turns most keys away (TX names differ
            // early): an ASCII byte folds to its other case only.
            if let (Some(k), Some(l)) = (key.first(), lit.first())
                && k.is_ascii()
                && k.to_ascii_lowercase() != *l
            {
                return false;
            }
            if key.is_ascii() {
                return key
                    .get(..lit.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(lit));
            }
        } else if key.is_ascii()
            && let Some(required) = &self.required
            && !required.iter().any(|lit| holds_ignoring_case(key, lit))
        {
            return false;
        }
        self.regex.is_match(key)
    }
}

/// Whether `haystack` holds `needle` (lower-case) in any ASCII case.
fn holds_ignoring_case(haystack: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    haystack.len() >= needle.len()
        && haystack.windows(needle.len()).any(|w| {
            w.first().map(u8::to_ascii_lowercase) == Some(first) && w.eq_ignore_ascii_case(needle)
        })
}

impl PartialEq for KeyRegex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for KeyRegex {}

/// One entry of a rule's variable list: `ARGS`, `ARGS:id`, `!ARGS:pwd`,
/// `&ARGS`, `REQUEST_HEADERS:/^x-/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarSpec {
    pub var: Var,
    pub selector: Selector,
    /// `!`: removes matching members from what the other entries select.
    pub exclude: bool,
    /// `&`: the number of members instead of their values.
    pub count: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSpec {
    /// The canonical name (`rx`, `pmFromFile`, ...).
    pub name: String,
    pub negated: bool,
    /// The parameter, before macro expansion.
    pub param: String,
    /// The operator compiled when the rule set was checked at load, kept
    /// so that building the engine does not compile it again.
    pub compiled: Compiled,
}

/// A compiled operator riding along in the syntax tree; not part of the
/// rule's identity (two specs are equal by name, negation and parameter).
#[derive(Debug, Clone, Default)]
pub struct Compiled(pub Option<Arc<crate::waf::operator::Operator>>);

impl PartialEq for Compiled {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Compiled {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// The canonical name (`setvar`, `t`, `ctl`, ...).
    pub name: String,
    pub value: Option<String>,
}

/// A `SecRule` or `SecAction` (which has no variables and the
/// `unconditionalMatch` operator), with the rules chained to it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleAst {
    pub origin: Origin,
    pub variables: Vec<VarSpec>,
    pub operator: OperatorSpec,
    pub actions: Vec<Action>,
    /// Rules chained after this one (`chain`), in order.
    pub chain: Vec<RuleAst>,
    /// The `SecDefaultAction` in force for the rule's phase when it was
    /// loaded; the rule's own actions override these.
    pub defaults: Vec<Action>,
}

impl RuleAst {
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.name == name)
    }

    pub fn id(&self) -> Option<u64> {
        self.action("id")
            .and_then(|a| a.value.as_deref())
            .and_then(|v| v.parse().ok())
    }

    pub fn phase(&self) -> Option<u8> {
        self.action("phase")
            .and_then(|a| a.value.as_deref())
            .and_then(parse_phase)
    }

    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.actions
            .iter()
            .filter(|a| a.name == "tag")
            .filter_map(|a| a.value.as_deref())
    }

    pub fn msg(&self) -> Option<&str> {
        self.action("msg").and_then(|a| a.value.as_deref())
    }
}

/// `phase:2`, or the names ModSecurity accepts for 2 and 4.
pub fn parse_phase(value: &str) -> Option<u8> {
    match value.trim() {
        "request" => Some(2),
        "response" => Some(4),
        "logging" => Some(5),
        v => v.parse().ok().filter(|p| (1..=5).contains(p)),
    }
}

/// One item of a rule set, in load order.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Rule(RuleAst),
    Marker { name: String, origin: Origin },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineMode {
    On,
    Off,
    DetectionOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitAction {
    Reject,
    ProcessPartial,
}

/// The engine settings the directives set (last one wins).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    pub mode: EngineMode,
    pub request_body_access: bool,
    pub response_body_access: bool,
    pub request_body_limit: u64,
    pub request_body_no_files_limit: u64,
    pub request_body_limit_action: LimitAction,
    pub response_body_limit: u64,
    pub response_body_limit_action: LimitAction,
    pub response_body_mime_types: Vec<String>,
    pub component_signatures: Vec<String>,
    pub argument_separator: u8,
    pub collection_timeout: u64,
}

impl Default for EngineSettings {
    /// ModSecurity's own defaults.
    fn default() -> Self {
        EngineSettings {
            mode: EngineMode::Off,
            request_body_access: false,
            response_body_access: false,
            request_body_limit: 134_217_728,
            request_body_no_files_limit: 1_048_576,
            request_body_limit_action: LimitAction::Reject,
            response_body_limit: 524_288,
            response_body_limit_action: LimitAction::Reject,
            response_body_mime_types: vec!["text/plain".into(), "text/html".into()],
            component_signatures: Vec::new(),
            argument_separator: b'&',
            collection_timeout: 3600,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeyRegex;

    #[test]
    fn a_literal_key_regex_matches_as_its_regex_does() {
        // The tests below take the literal paths for these.
        assert!(KeyRegex::new("^x-").unwrap().prefix.is_some());
        let multipart = KeyRegex::new("MULTIPART_HEADERS_CONTENT_TYPES_*").unwrap();
        assert!(multipart.required.is_some());
        for pattern in [
            "^header_name_920450_",
            "^x-",
            "^a",
            "^ab-c",
            "^ab.c",
            "^a$",
            "id",
            "MULTIPART_HEADERS_CONTENT_TYPES_*",
            "(?:foo|bar)_[0-9]+",
            "^s",
            "k$",
        ] {
            let key = KeyRegex::new(pattern).unwrap();
            for name in [
                "header_name_920450_host",
                "HEADER_NAME_920450_HOST",
                "header_name_92045",
                "x-forwarded",
                "X-Real-Ip",
                "ab-cd",
                "abxc",
                "a",
                "",
                "bid",
                "xheader_name_920450_",
                "multipart_headers_content_types_a",
                "x_Multipart_Headers_Content_Type",
                "tx.MULTIPART_HEADERS_CONTENT_TYPES",
                "FOO_12",
                "bar_",
                "xbAr_9y",
                // Unicode case folding: ſ is an s, K (Kelvin) a k.
                "\u{17f}omething",
                "wor\u{212a}",
                "\u{17f}",
            ] {
                assert_eq!(
                    key.is_match(name.as_bytes()),
                    key.regex.is_match(name.as_bytes()),
                    "{pattern} on {name}"
                );
            }
        }
    }
}
