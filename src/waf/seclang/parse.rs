//! Directives to rules and settings. Every problem is collected with its
//! file and line and parsing goes on, so one run reports all of them.
//!
//! Directives that change earlier rules (`SecRuleRemove*`,
//! `SecRuleUpdate*`) apply to the rules loaded before them, as in
//! ModSecurity; `SecDefaultAction` applies to the rules after it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::ast::*;
use super::lines::Directive;
use super::names::{self, canonical};
use crate::waf::transform;

/// A problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub origin: Origin,
    pub message: String,
}

impl std::fmt::Display for Diag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// Rules and settings as they build up over the files of a rule set.
#[derive(Debug, Default)]
pub struct Parser {
    pub items: Vec<Item>,
    pub settings: EngineSettings,
    pub errors: Vec<Diag>,
    pub warnings: Vec<Diag>,
    /// SecDefaultAction per phase.
    defaults: HashMap<u8, Vec<Action>>,
    ids: HashSet<u64>,
    /// The last rule ended with `chain`: the next SecRule joins it.
    chain_open: Option<Origin>,
}

impl Parser {
    fn error(&mut self, origin: &Origin, message: impl Into<String>) {
        self.errors.push(Diag {
            origin: origin.clone(),
            message: message.into(),
        });
    }

    fn warn(&mut self, origin: &Origin, message: impl Into<String>) {
        self.warnings.push(Diag {
            origin: origin.clone(),
            message: message.into(),
        });
    }

    /// Handles one directive other than `Include`.
    pub fn directive(&mut self, d: &Directive, file: &Arc<Path>) {
        let origin = Origin {
            file: Arc::clone(file),
            line: d.line,
        };
        let name = d.name.as_str();
        if self.chain_open.is_some() && !name.eq_ignore_ascii_case("SecRule") {
            let open = self.chain_open.take();
            if let Some(open) = open {
                self.error(&open, "rule ends with `chain` but no SecRule follows");
            }
        }
        match name.to_ascii_lowercase().as_str() {
            "secrule" => self.sec_rule(d, origin),
            "secaction" => self.sec_action(d, origin),
            "secmarker" => match d.args.as_slice() {
                [marker] => self.items.push(Item::Marker {
                    name: marker.clone(),
                    origin,
                }),
                _ => self.error(&origin, "SecMarker takes one name"),
            },
            "secdefaultaction" => self.default_action(d, &origin),
            "secruleengine" => {
                if let Some(v) = self.one_arg(d, &origin) {
                    match v.to_ascii_lowercase().as_str() {
                        "on" => self.settings.mode = EngineMode::On,
                        "off" => self.settings.mode = EngineMode::Off,
                        "detectiononly" => self.settings.mode = EngineMode::DetectionOnly,
                        _ => self.error(
                            &origin,
                            format!("SecRuleEngine {v:?}: use On, Off or DetectionOnly"),
                        ),
                    }
                }
            }
            "secrequestbodyaccess" => {
                if let Some(b) = self.on_off(d, &origin) {
                    self.settings.request_body_access = b;
                }
            }
            "secresponsebodyaccess" => {
                if let Some(b) = self.on_off(d, &origin) {
                    self.settings.response_body_access = b;
                }
            }
            "secrequestbodylimit" => {
                if let Some(n) = self.number(d, &origin) {
                    self.settings.request_body_limit = n;
                }
            }
            "secrequestbodynofileslimit" => {
                if let Some(n) = self.number(d, &origin) {
                    self.settings.request_body_no_files_limit = n;
                }
            }
            "secresponsebodylimit" => {
                if let Some(n) = self.number(d, &origin) {
                    self.settings.response_body_limit = n;
                }
            }
            "secrequestbodylimitaction" => {
                if let Some(a) = self.limit_action(d, &origin) {
                    self.settings.request_body_limit_action = a;
                }
            }
            "secresponsebodylimitaction" => {
                if let Some(a) = self.limit_action(d, &origin) {
                    self.settings.response_body_limit_action = a;
                }
            }
            "secresponsebodymimetype" => {
                self.settings.response_body_mime_types = d
                    .args
                    .iter()
                    .flat_map(|a| a.split_whitespace())
                    .map(|m| m.to_ascii_lowercase())
                    .collect();
            }
            "secresponsebodymimetypesclear" => self.settings.response_body_mime_types.clear(),
            "seccomponentsignature" => {
                if let Some(v) = self.one_arg(d, &origin) {
                    self.settings.component_signatures.push(v);
                }
            }
            "secargumentseparator" => {
                if let Some(v) = self.one_arg(d, &origin) {
                    match v.as_bytes() {
                        [b] => self.settings.argument_separator = *b,
                        _ => self.error(&origin, "SecArgumentSeparator takes one character"),
                    }
                }
            }
            "seccollectiontimeout" => {
                if let Some(n) = self.number(d, &origin) {
                    self.settings.collection_timeout = n;
                }
            }
            "secruleremovebyid" => self.remove_by_id(d, &origin),
            "secruleremovebytag" => {
                self.remove_by(d, &origin, |rule, re| rule.tags().any(|t| re.is_match(t)))
            }
            "secruleremovebymsg" => self.remove_by(d, &origin, |rule, re| {
                rule.msg().is_some_and(|m| re.is_match(m))
            }),
            "secruleupdatetargetbyid" => self.update_target(d, &origin, Target::Id),
            "secruleupdatetargetbytag" => self.update_target(d, &origin, Target::Tag),
            "secruleupdatetargetbymsg" => self.update_target(d, &origin, Target::Msg),
            "secruleupdateactionbyid" => self.update_action(d, &origin),
            _ => {
                if let Some(known) = names::LOGGING_DIRECTIVES
                    .iter()
                    .find(|n| n.eq_ignore_ascii_case(name))
                {
                    self.warn(
                        &origin,
                        format!("{known} ignored: Palisade writes its own logs"),
                    );
                } else {
                    self.error(&origin, format!("unsupported directive {name:?}"));
                }
            }
        }
    }

    /// Reports a chain still open at the end of the rule set.
    pub fn finish(&mut self) {
        if let Some(open) = self.chain_open.take() {
            self.error(&open, "rule ends with `chain` but no SecRule follows");
        }
    }

    fn one_arg(&mut self, d: &Directive, origin: &Origin) -> Option<String> {
        match d.args.as_slice() {
            [v] => Some(v.clone()),
            _ => {
                self.error(origin, format!("{} takes one argument", d.name));
                None
            }
        }
    }

    fn on_off(&mut self, d: &Directive, origin: &Origin) -> Option<bool> {
        let v = self.one_arg(d, origin)?;
        match v.to_ascii_lowercase().as_str() {
            "on" => Some(true),
            "off" => Some(false),
            _ => {
                self.error(origin, format!("{} {v:?}: use On or Off", d.name));
                None
            }
        }
    }

    fn number(&mut self, d: &Directive, origin: &Origin) -> Option<u64> {
        let v = self.one_arg(d, origin)?;
        match v.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(origin, format!("{} {v:?}: not a number", d.name));
                None
            }
        }
    }

    fn limit_action(&mut self, d: &Directive, origin: &Origin) -> Option<LimitAction> {
        let v = self.one_arg(d, origin)?;
        match v.to_ascii_lowercase().as_str() {
            "reject" => Some(LimitAction::Reject),
            "processpartial" => Some(LimitAction::ProcessPartial),
            _ => {
                self.error(
                    origin,
                    format!("{} {v:?}: use Reject or ProcessPartial", d.name),
                );
                None
            }
        }
    }

    fn sec_rule(&mut self, d: &Directive, origin: Origin) {
        let (vars, op, actions) = match d.args.as_slice() {
            [v, o] => (v, o, None),
            [v, o, a] => (v, o, Some(a)),
            _ => {
                self.error(&origin, "SecRule takes VARIABLES OPERATOR [ACTIONS]");
                return;
            }
        };
        let variables = match parse_variables(vars) {
            Ok(v) => v,
            Err(e) => {
                self.error(&origin, e);
                Vec::new()
            }
        };
        let operator = match parse_operator(op) {
            Ok(o) => o,
            Err(e) => {
                self.error(&origin, e);
                return;
            }
        };
        let actions = match actions.map(|a| parse_actions(a)).transpose() {
            Ok(a) => a.unwrap_or_default(),
            Err(e) => {
                self.error(&origin, e);
                return;
            }
        };
        self.add_rule(origin, variables, operator, actions);
    }

    fn sec_action(&mut self, d: &Directive, origin: Origin) {
        let actions = match d.args.as_slice() {
            [] => Vec::new(),
            [a] => match parse_actions(a) {
                Ok(a) => a,
                Err(e) => {
                    self.error(&origin, e);
                    return;
                }
            },
            _ => {
                self.error(&origin, "SecAction takes one action list");
                return;
            }
        };
        let operator = OperatorSpec {
            name: "unconditionalMatch".into(),
            negated: false,
            param: String::new(),
            compiled: Compiled::default(),
        };
        self.add_rule(origin, Vec::new(), operator, actions);
    }

    fn add_rule(
        &mut self,
        origin: Origin,
        variables: Vec<VarSpec>,
        operator: OperatorSpec,
        actions: Vec<Action>,
    ) {
        for message in check_actions(&actions) {
            self.error(&origin, message);
        }
        let chained = actions.iter().any(|a| a.name == "chain");
        let rule = RuleAst {
            origin: origin.clone(),
            variables,
            operator,
            actions,
            chain: Vec::new(),
            defaults: Vec::new(),
        };
        if self.chain_open.take().is_some() {
            if rule.action("id").is_some() || rule.action("phase").is_some() {
                self.error(&origin, "a chained rule cannot have `id` or `phase`");
            }
            if let Some(d) = rule
                .actions
                .iter()
                .find(|a| names::DISRUPTIVE.contains(&a.name.as_str()))
            {
                self.error(
                    &origin,
                    format!(
                        "a chained rule cannot have the disruptive action `{}`",
                        d.name
                    ),
                );
            }
            if let Some(Item::Rule(head)) = self.items.last_mut() {
                head.chain.push(rule);
            }
        } else {
            match rule
                .action("id")
                .and_then(|a| a.value.as_deref())
                .map(str::parse::<u64>)
            {
                None => self.error(&origin, "rule has no `id`"),
                Some(Err(_)) => self.error(&origin, "`id` must be a positive number"),
                Some(Ok(0)) => self.error(&origin, "`id` must be a positive number"),
                Some(Ok(id)) => {
                    if !self.ids.insert(id) {
                        self.error(&origin, format!("rule id {id} is used twice"));
                    }
                }
            }
            if let Some(p) = rule.action("phase")
                && p.value.as_deref().and_then(parse_phase).is_none()
            {
                self.error(&origin, format!("phase {:?} is not 1 to 5", p.value));
            }
            let phase = rule.phase().unwrap_or(2);
            let mut rule = rule;
            rule.defaults = self.defaults.get(&phase).cloned().unwrap_or_default();
            self.items.push(Item::Rule(rule));
        }
        if chained {
            self.chain_open = Some(origin);
        }
    }

    fn default_action(&mut self, d: &Directive, origin: &Origin) {
        let Some(text) = self.one_arg(d, origin) else {
            return;
        };
        let actions = match parse_actions(&text) {
            Ok(a) => a,
            Err(e) => return self.error(origin, e),
        };
        for message in check_actions(&actions) {
            self.error(origin, message);
        }
        let Some(phase) = actions
            .iter()
            .find(|a| a.name == "phase")
            .and_then(|a| a.value.as_deref())
            .and_then(parse_phase)
        else {
            return self.error(origin, "SecDefaultAction needs a `phase`");
        };
        if !actions
            .iter()
            .any(|a| names::DISRUPTIVE.contains(&a.name.as_str()))
        {
            self.error(origin, "SecDefaultAction needs a disruptive action");
        }
        for a in &actions {
            if matches!(
                a.name.as_str(),
                "id" | "chain" | "skip" | "skipAfter" | "msg" | "tag" | "logdata"
            ) {
                self.error(
                    origin,
                    format!("`{}` is not allowed in SecDefaultAction", a.name),
                );
            }
        }
        self.defaults.insert(phase, actions);
    }

    fn remove_by_id(&mut self, d: &Directive, origin: &Origin) {
        let mut ranges = Vec::new();
        for arg in d
            .args
            .iter()
            .flat_map(|a| a.split([' ', ',']))
            .filter(|a| !a.is_empty())
        {
            match parse_id_range(arg) {
                Some(r) => ranges.push(r),
                None => self.error(origin, format!("{arg:?} is not a rule id or id range")),
            }
        }
        self.items.retain(|item| match item {
            Item::Rule(rule) => !rule
                .id()
                .is_some_and(|id| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&id))),
            Item::Marker { .. } => true,
        });
    }

    fn remove_by(
        &mut self,
        d: &Directive,
        origin: &Origin,
        matches: fn(&RuleAst, &regex::Regex) -> bool,
    ) {
        let Some(pattern) = self.one_arg(d, origin) else {
            return;
        };
        let re = match regex::Regex::new(&pattern) {
            Ok(re) => re,
            Err(e) => return self.error(origin, format!("{}: bad regex: {e}", d.name)),
        };
        self.items.retain(|item| match item {
            Item::Rule(rule) => !matches(rule, &re),
            Item::Marker { .. } => true,
        });
    }

    fn update_target(&mut self, d: &Directive, origin: &Origin, by: Target) {
        let (which, vars, replaced) = match d.args.as_slice() {
            [w, v] => (w, v, None),
            [w, v, r] => (w, v, Some(r)),
            _ => {
                return self.error(
                    origin,
                    format!("{} takes WHICH VARIABLES [REPLACED]", d.name),
                );
            }
        };
        let variables = match parse_variables(vars) {
            Ok(v) => v,
            Err(e) => return self.error(origin, e),
        };
        let replaced = match replaced.map(|r| parse_variables(r)).transpose() {
            Ok(r) => r.and_then(|mut r| r.pop()),
            Err(e) => return self.error(origin, e),
        };
        let select = match self.selector(which, by, origin) {
            Some(s) => s,
            None => return,
        };
        let mut found = false;
        for item in &mut self.items {
            if let Item::Rule(rule) = item
                && select(rule)
            {
                found = true;
                match &replaced {
                    Some(old) => {
                        if let Some(pos) = rule.variables.iter().position(|v| v == old) {
                            rule.variables.splice(pos..=pos, variables.iter().cloned());
                        }
                    }
                    None => rule.variables.extend(variables.iter().cloned()),
                }
            }
        }
        if !found {
            self.warn(
                origin,
                format!("{} {which}: no rule loaded so far matches", d.name),
            );
        }
    }

    fn update_action(&mut self, d: &Directive, origin: &Origin) {
        let [which, text] = d.args.as_slice() else {
            return self.error(origin, "SecRuleUpdateActionById takes ID ACTIONS");
        };
        let actions = match parse_actions(text) {
            Ok(a) => a,
            Err(e) => return self.error(origin, e),
        };
        for message in check_actions(&actions) {
            self.error(origin, message);
        }
        if actions
            .iter()
            .any(|a| matches!(a.name.as_str(), "id" | "phase" | "chain"))
        {
            return self.error(
                origin,
                "SecRuleUpdateActionById cannot change `id`, `phase` or `chain`",
            );
        }
        let Some(select) = self.selector(which, Target::Id, origin) else {
            return;
        };
        for item in &mut self.items {
            if let Item::Rule(rule) = item
                && select(rule)
            {
                update_actions(&mut rule.actions, &actions);
            }
        }
    }

    fn selector(&mut self, which: &str, by: Target, origin: &Origin) -> Option<RulePredicate> {
        match by {
            Target::Id => {
                let mut ranges = Vec::new();
                for part in which.split([' ', ',']).filter(|p| !p.is_empty()) {
                    match parse_id_range(part) {
                        Some(r) => ranges.push(r),
                        None => {
                            self.error(origin, format!("{part:?} is not a rule id or id range"));
                            return None;
                        }
                    }
                }
                Some(Box::new(move |rule: &RuleAst| {
                    rule.id()
                        .is_some_and(|id| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&id)))
                }))
            }
            Target::Tag | Target::Msg => match regex::Regex::new(which) {
                Ok(re) => Some(Box::new(move |rule: &RuleAst| match by {
                    Target::Tag => rule.tags().any(|t| re.is_match(t)),
                    _ => rule.msg().is_some_and(|m| re.is_match(m)),
                })),
                Err(e) => {
                    self.error(origin, format!("bad regex {which:?}: {e}"));
                    None
                }
            },
        }
    }
}

type RulePredicate = Box<dyn Fn(&RuleAst) -> bool>;

#[derive(Clone, Copy)]
enum Target {
    Id,
    Tag,
    Msg,
}

/// `SecRuleUpdateActionById`: disruptive and single-valued actions replace
/// the rule's own; list actions (`t`, `setvar`, `tag`, `ctl`, ...) are
/// added, with `t:none` clearing the transformations first.
fn update_actions(actions: &mut Vec<Action>, updates: &[Action]) {
    const LISTS: &[&str] = &[
        "t",
        "setvar",
        "tag",
        "ctl",
        "setenv",
        "initcol",
        "expirevar",
        "sanitiseArg",
        "sanitiseMatched",
        "sanitiseMatchedBytes",
        "sanitiseRequestHeader",
        "sanitiseResponseHeader",
    ];
    for update in updates {
        if update.name == "t"
            && update
                .value
                .as_deref()
                .is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            actions.retain(|a| a.name != "t");
        } else if names::DISRUPTIVE.contains(&update.name.as_str()) {
            actions.retain(|a| !names::DISRUPTIVE.contains(&a.name.as_str()));
        } else if !LISTS.contains(&update.name.as_str()) {
            actions.retain(|a| a.name != update.name);
        }
        actions.push(update.clone());
    }
}

/// `123` or `100-199`.
fn parse_id_range(text: &str) -> Option<(u64, u64)> {
    match text.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
            (lo <= hi).then_some((lo, hi))
        }
        None => {
            let id = text.trim().parse().ok()?;
            Some((id, id))
        }
    }
}

/// `ARGS|!ARGS:pwd|&TX:x|REQUEST_HEADERS:/^x-/|XML:/*`.
pub fn parse_variables(text: &str) -> Result<Vec<VarSpec>, String> {
    let mut out = Vec::new();
    for part in split_variables(text)? {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("empty variable in {text:?}"));
        }
        let (exclude, rest) = match part.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, part),
        };
        let (count, rest) = match rest.strip_prefix('&') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (name, key) = match rest.split_once(':') {
            Some((n, k)) => (n, Some(k)),
            None => (rest, None),
        };
        let Some(var) = Var::from_name(name) else {
            return Err(format!("unsupported variable {name:?}"));
        };
        let selector = match key {
            None => Selector::All,
            Some(k) if var == Var::Xml => Selector::XPath(k.to_string()),
            Some(k) if k.len() >= 2 && k.starts_with('/') && k.ends_with('/') => {
                let pattern = &k[1..k.len() - 1];
                match KeyRegex::new(pattern) {
                    Ok(re) => Selector::Regex(re),
                    Err(e) => return Err(format!("variable {name}: bad regex {pattern:?}: {e}")),
                }
            }
            Some(k) => {
                let k = k
                    .strip_prefix('\'')
                    .and_then(|k| k.strip_suffix('\''))
                    .unwrap_or(k);
                if k.is_empty() {
                    return Err(format!("variable {name}: empty key"));
                }
                Selector::Key(k.to_string())
            }
        };
        out.push(VarSpec {
            var,
            selector,
            exclude,
            count,
        });
    }
    Ok(out)
}

/// Splits at `|` outside `/regex/` and `'quoted'` keys.
fn split_variables(text: &str) -> Result<Vec<&str>, String> {
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'|' => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            // A key that starts with `/` or `'` runs to the matching one.
            // XPath keys (`XML:/*`) are not regexes: they run to `|`.
            b':' if matches!(bytes.get(i + 1), Some(b'/' | b'\''))
                && !text[start..i]
                    .trim_start_matches(['!', '&'])
                    .eq_ignore_ascii_case("XML") =>
            {
                let close = bytes[i + 1];
                let mut j = i + 2;
                while j < bytes.len() && bytes[j] != close {
                    if bytes[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                if j >= bytes.len() && close == b'\'' {
                    return Err(format!("unterminated quote in {text:?}"));
                }
                i = j;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&text[start.min(text.len())..]);
    Ok(parts)
}

/// `@name param`, `!@name param`, or a bare regex.
pub fn parse_operator(text: &str) -> Result<OperatorSpec, String> {
    let (negated, rest) = match text.trim_start().strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, text.trim_start()),
    };
    let Some(rest) = rest.strip_prefix('@') else {
        return Ok(OperatorSpec {
            name: "rx".into(),
            negated,
            param: rest.to_string(),
            compiled: Compiled::default(),
        });
    };
    let (name, param) = match rest.split_once(|c: char| c.is_whitespace()) {
        Some((n, p)) => (n, p.trim_start()),
        None => (rest, ""),
    };
    let Some(canon) = canonical(name, names::OPERATORS, names::OPERATOR_ALIASES) else {
        return Err(format!("unsupported operator @{name}"));
    };
    Ok(OperatorSpec {
        name: canon.to_string(),
        negated,
        param: param.to_string(),
        compiled: Compiled::default(),
    })
}

/// `id:1,phase:2,t:none,msg:'a, b',setvar:'tx.x=1'`.
pub fn parse_actions(text: &str) -> Result<Vec<Action>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ':' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let name = name.trim().to_string();
        let mut value = None;
        if chars.peek() == Some(&':') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            let mut v = String::new();
            if chars.peek() == Some(&'\'') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == '\\' && chars.peek() == Some(&'\'') {
                        v.push('\'');
                        chars.next();
                    } else if c == '\'' {
                        closed = true;
                        break;
                    } else {
                        v.push(c);
                    }
                }
                if !closed {
                    return Err(format!("action {name}: unterminated quote"));
                }
                while chars.peek().is_some_and(|c| *c != ',') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                v = v.trim_end().to_string();
            }
            value = Some(v);
        }
        let Some(canon) = canonical(&name, names::ACTIONS, names::ACTION_ALIASES) else {
            return Err(format!("unsupported action {name:?}"));
        };
        out.push(Action {
            name: canon.to_string(),
            value,
        });
    }
}

/// What the actions' values must look like.
fn check_actions(actions: &[Action]) -> Vec<String> {
    let mut problems = Vec::new();
    for a in actions {
        let value = a.value.as_deref();
        let needs_value = !matches!(
            a.name.as_str(),
            "allow"
                | "auditlog"
                | "block"
                | "capture"
                | "chain"
                | "deny"
                | "drop"
                | "log"
                | "multiMatch"
                | "noauditlog"
                | "nolog"
                | "pass"
                | "sanitiseMatched"
                | "sanitiseMatchedBytes"
        );
        if needs_value && value.is_none_or(str::is_empty) && a.name != "allow" {
            problems.push(format!("action `{}` needs a value", a.name));
            continue;
        }
        match (a.name.as_str(), value) {
            ("t", Some(t))
                if !t.eq_ignore_ascii_case("none") && transform::by_name(t).is_none() =>
            {
                problems.push(format!("unsupported transformation {t:?}"));
            }
            ("ctl", Some(c)) => {
                let option = c.split('=').next().unwrap_or("").trim();
                if !names::CTL_OPTIONS
                    .iter()
                    .any(|o| o.eq_ignore_ascii_case(option))
                {
                    problems.push(format!("unsupported ctl option {option:?}"));
                }
            }
            ("setvar", Some(s)) => {
                let target = s
                    .split('=')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_start_matches('!');
                if !target.contains('.') {
                    problems.push(format!("setvar {s:?}: expected collection.name"));
                }
            }
            ("severity", Some(s)) if severity_level(s).is_none() => {
                problems.push(format!(
                    "severity {s:?}: use 0-7 or a name such as CRITICAL"
                ));
            }
            ("allow", Some(v)) if !matches!(v, "phase" | "request") => {
                problems.push(format!(
                    "allow:{v}: use allow, allow:phase or allow:request"
                ));
            }
            ("status", Some(s)) if !s.parse::<u16>().is_ok_and(|n| (100..=599).contains(&n)) => {
                problems.push(format!("status {s:?} is not an HTTP status"));
            }
            ("skip", Some(s)) if s.parse::<u32>().is_err() => {
                problems.push(format!("skip {s:?} is not a number"));
            }
            _ => {}
        }
    }
    problems
}

/// `severity:2` or `severity:'CRITICAL'`.
pub fn severity_level(text: &str) -> Option<u8> {
    const NAMES: [&str; 8] = [
        "EMERGENCY",
        "ALERT",
        "CRITICAL",
        "ERROR",
        "WARNING",
        "NOTICE",
        "INFO",
        "DEBUG",
    ];
    text.parse::<u8>().ok().filter(|n| *n <= 7).or_else(|| {
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(text))
            .map(|p| p as u8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_with_keys_regexes_exclusions_and_counts() {
        let v = parse_variables("ARGS|!ARGS:pwd|&TX:x|REQUEST_HEADERS:/^(?:a|b)$/|XML:/*|XML://@*")
            .unwrap();
        assert_eq!(v.len(), 6);
        assert!(v[1].exclude && v[1].selector == Selector::Key("pwd".into()));
        assert!(v[2].count);
        assert!(matches!(&v[3].selector, Selector::Regex(re) if re.pattern == "^(?:a|b)$"));
        assert_eq!(v[4].selector, Selector::XPath("/*".into()));
        assert_eq!(v[5].selector, Selector::XPath("//@*".into()));
        assert!(parse_variables("NOPE").is_err());
        assert!(parse_variables("ARGS:/(/").is_err());
    }

    #[test]
    fn actions_with_quotes_and_commas() {
        let a =
            parse_actions("id:1, phase:2,msg:'a, b \\'c\\'',t:none,setvar:'tx.x=%{tx.y}',block")
                .unwrap();
        let pairs: Vec<(&str, Option<&str>)> = a
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_deref()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("id", Some("1")),
                ("phase", Some("2")),
                ("msg", Some("a, b 'c'")),
                ("t", Some("none")),
                ("setvar", Some("tx.x=%{tx.y}")),
                ("block", None)
            ]
        );
        assert!(parse_actions("nosuch:1").is_err());
        assert!(parse_actions("msg:'open").is_err());
    }

    #[test]
    fn operators_bare_negated_and_aliased() {
        assert_eq!(parse_operator("abc").unwrap().name, "rx");
        let o = parse_operator("!@pmf words.txt").unwrap();
        assert!(o.negated && o.name == "pmFromFile" && o.param == "words.txt");
        assert!(parse_operator("@nosuch x").is_err());
    }
}
