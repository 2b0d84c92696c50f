//! A transaction: one request (and its response) evaluated phase by phase
//! against a compiled rule set.
//!
//! The caller fills in the request, then calls the phase methods in order;
//! each returns the intervention the rules decided on, if any. In
//! `DetectionOnly` the rules run and are logged but never intervene.
//!
//! Actions of a matching rule run once per rule (after its whole chain
//! matched), in order: captures as the operator matches (so later links of
//! a chain can use them), then `setvar`, `setenv`, `ctl`, the log entry,
//! and last the disruptive action. The exception: a link followed by more
//! of its chain runs its `setvar`s for each value it matches, before the
//! next link is tested, whether or not the chain matches in the end.

mod gate;
use gate::Gate;
pub(crate) use gate::admits_gate;
mod matches;
use matches::Matches;
mod memo;
mod multi;
pub mod request;
mod varmap;
mod vars;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::collections::{CollectionStore, StoredVar, expiry};
use super::macros::{Reference, Resolve};
use super::operator::{Captures, atoi};
use super::rule::{AllowScope, CompiledRule, Disruptive, RuleSet, SetVar, Step};
use super::seclang::ast::{EngineMode, LimitAction, Selector, Var, VarSpec};
use request::{Pair, RequestData, ResponseData, parse_cookies, parse_urlencoded};
pub(super) use varmap::VarMap;
use varmap::{VarName, VarValue, name_text, push_i64};

/// What the rules decided to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intervention {
    pub status: u16,
    pub redirect: Option<String>,
    /// Close the connection without an answer.
    pub drop: bool,
    pub rule_id: u64,
}

/// A rule that matched, for the log.
#[derive(Debug, Clone)]
pub struct RuleMatch {
    pub id: u64,
    pub phase: u8,
    pub msg: String,
    pub data: String,
    pub severity: Option<u8>,
    pub tags: Vec<String>,
}

/// A rule removed for this transaction by `ctl`.
#[derive(Debug, Clone)]
enum RuleFilter {
    Id(u64, u64),
    Tag(String),
}

impl RuleFilter {
    fn matches(&self, rule: &CompiledRule) -> bool {
        match self {
            RuleFilter::Id(lo, hi) => (*lo..=*hi).contains(&rule.id),
            RuleFilter::Tag(tag) => rule.tags.iter().any(|t| t.eq_ignore_ascii_case(tag)),
        }
    }
}

pub struct Transaction {
    rules: Arc<RuleSet>,
    mode: EngineMode,
    /// The request as the transaction started with it; the memo knows
    /// its values by position, so only the body may grow afterwards.
    pub request: RequestData,
    pub response: ResponseData,
    /// REQUEST_LINE, made once: rules read it as a value the memo keeps.
    request_line: Vec<u8>,
    unique_id: String,
    started: Instant,
    args_get: Vec<Pair>,
    args_post: Vec<Pair>,
    cookies: Vec<Pair>,
    body_processor: String,
    body_error: Option<String>,
    request_body_access: bool,
    force_body_variable: bool,
    /// The request body went past its limit; no more is kept.
    body_truncated: bool,
    /// TX, IP, GLOBAL, ... : names lower-cased.
    collections: Collections,
    matched_var: Vec<u8>,
    /// Text (see `Matches`), kept as bytes as it is read as a value.
    matched_var_name: Vec<u8>,
    matched_vars: Matches,
    /// An empty buffer for the next rule's matches (see `evaluate_one`).
    spare_matches: Matches,
    /// The operator's captures of the value being tested, reused.
    spare_captures: Captures,
    /// `set_var`'s buffer for the variable's expanded name.
    name_buf: Vec<u8>,
    /// The same for a `setvar`'s value.
    value_buf: Vec<u8>,
    removed_rules: Vec<RuleFilter>,
    removed_targets: Vec<(RuleFilter, VarSpec)>,
    allowed: Option<AllowScope>,
    intervention: Option<Intervention>,
    highest_severity: Option<u8>,
    /// Where persistent collections live across transactions.
    store: Option<Arc<CollectionStore>>,
    /// Persistent collections opened by `initcol`, with their keys.
    opened: Vec<(Var, String)>,
    /// Variables of persistent collections with an expiry.
    expiries: HashMap<(Var, String), Instant>,
    /// The rule whose actions are running (for `%{rule.*}`).
    current: Option<Arc<CompiledRule>>,
    /// Transformed forms and prefilter scans of request and response
    /// values, computed once per transaction.
    memo: RefCell<memo::ValueMemo>,
    pub matches: Vec<RuleMatch>,
}

/// TX, IP, GLOBAL, ...: one map per collection, found by position.
#[derive(Default)]
struct Collections {
    maps: [VarMap; COLLECTIONS.len()],
}

impl Collections {
    /// TX as the rules folded at load left it (see `fold`), the rest empty.
    fn starting_with(tx: &VarMap) -> Collections {
        let mut collections = Collections::default();
        collections.map_mut(Var::Tx).clone_from(tx);
        collections
    }

    fn get(&self, var: &Var) -> Option<&VarMap> {
        COLLECTIONS
            .iter()
            .position(|c| c == var)
            .map(|i| &self.maps[i])
    }

    /// The map of `var`; a variable that is no collection gets TX's
    /// (the parser accepts `setvar` only on collections).
    fn map_mut(&mut self, var: Var) -> &mut VarMap {
        let i = COLLECTIONS.iter().position(|c| *c == var).unwrap_or(0);
        &mut self.maps[i]
    }
}

const COLLECTIONS: [Var; 8] = [
    Var::Tx,
    Var::Ip,
    Var::Global,
    Var::Session,
    Var::User,
    Var::Resource,
    Var::Env,
    Var::Geo,
];

/// Whether `var` is a collection rules set and read by name (TX, IP, ...),
/// whose names are kept lower-cased.
pub(crate) fn is_collection(var: Var) -> bool {
    COLLECTIONS.contains(&var)
}

impl Transaction {
    pub fn new(rules: Arc<RuleSet>, request: RequestData, unique_id: String) -> Transaction {
        let mode = rules.settings.mode;
        let request_body_access = rules.settings.request_body_access;
        let collections = Collections::starting_with(&rules.initial_tx);
        let mut tx = Transaction {
            rules,
            mode,
            request_line: request.request_line(),
            request,
            response: ResponseData::default(),
            unique_id,
            started: Instant::now(),
            args_get: Vec::new(),
            args_post: Vec::new(),
            cookies: Vec::new(),
            body_processor: String::new(),
            body_error: None,
            request_body_access,
            force_body_variable: false,
            body_truncated: false,
            collections,
            matched_var: Vec::new(),
            matched_var_name: Vec::new(),
            matched_vars: Matches::default(),
            spare_matches: Matches::default(),
            spare_captures: Captures::new(),
            name_buf: Vec::new(),
            value_buf: Vec::new(),
            removed_rules: Vec::new(),
            removed_targets: Vec::new(),
            allowed: None,
            intervention: None,
            highest_severity: None,
            store: None,
            opened: Vec::new(),
            expiries: HashMap::new(),
            current: None,
            memo: RefCell::default(),
            matches: Vec::new(),
        };
        let separator = tx.rules.settings.argument_separator;
        tx.args_get = parse_urlencoded(tx.request.query(), separator);
        tx.cookies = tx
            .request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
            .flat_map(|(_, v)| parse_cookies(v))
            .collect();
        tx
    }

    /// Keeps persistent collections (`initcol`) in `store` across
    /// transactions.
    pub fn with_store(mut self, store: Arc<CollectionStore>) -> Transaction {
        self.store = Some(store);
        self
    }

    pub fn mode(&self) -> EngineMode {
        self.mode
    }

    /// For `fold`: evaluates a rule (and its chain) as `run_phase` would.
    pub(super) fn fold_evaluate(&mut self, rule: &Arc<CompiledRule>) -> bool {
        self.evaluate(rule, 0)
    }

    /// For `fold`: whether `rule`'s first link matches, alone. Only for a
    /// link that changes nothing while it is tested (no `capture`, no
    /// per-match `setvar`): a match leaves only the matched variables.
    pub(super) fn fold_first_link_matches(&mut self, rule: &CompiledRule) -> bool {
        self.evaluate_one(rule, 0)
    }

    /// For `fold`: runs a matched rule's actions.
    pub(super) fn fold_apply(&mut self, rule: &Arc<CompiledRule>) {
        self.run_actions(rule);
    }

    /// For `fold`: the TX variables the folded rules left.
    pub(super) fn into_tx(mut self) -> VarMap {
        std::mem::take(self.collections.map_mut(Var::Tx))
    }

    /// Phase 1: request headers.
    pub fn process_request_headers(&mut self) -> Option<Intervention> {
        self.run_phase(1)
    }

    /// Adds a chunk of the request body, up to the body limits
    /// (`SecRequestBodyLimit`, and `SecRequestBodyNoFilesLimit` for bodies
    /// that are not multipart). Past a limit: with `Reject`, a 413 when
    /// the engine is on (nothing more is kept either way); with
    /// `ProcessPartial`, the part within the limit is kept for inspection.
    /// The caller forwards the body itself; this copy is for the rules.
    pub fn append_request_body(&mut self, chunk: &[u8]) -> Option<Intervention> {
        if !self.request_body_access || self.body_truncated {
            return None;
        }
        let rules = Arc::clone(&self.rules);
        let settings = &rules.settings;
        let multipart = self
            .request
            .header("content-type")
            .is_some_and(|v| v.len() >= 19 && v[..19].eq_ignore_ascii_case(b"multipart/form-data"));
        let limit = if multipart {
            settings.request_body_limit
        } else {
            settings
                .request_body_limit
                .min(settings.request_body_no_files_limit)
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let room = limit.saturating_sub(self.request.body.len());
        if chunk.len() <= room {
            self.data_changed();
            self.request.body.extend_from_slice(chunk);
            return None;
        }
        self.data_changed();
        self.request.body.extend_from_slice(&chunk[..room]);
        self.body_truncated = true;
        if settings.request_body_limit_action == LimitAction::Reject && self.mode == EngineMode::On
        {
            self.intervention = Some(Intervention {
                status: 413,
                redirect: None,
                drop: false,
                rule_id: 0,
            });
        }
        self.intervention.clone()
    }

    /// Whether the response body is to be inspected: response body access
    /// on and its content type one of `SecResponseBodyMimeType`.
    pub fn inspects_response_body(&self) -> bool {
        let settings = &self.rules.settings;
        if !settings.response_body_access || self.mode == EngineMode::Off {
            return false;
        }
        let Some((_, value)) = self
            .response
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
        else {
            return false;
        };
        let mime = String::from_utf8_lossy(value);
        let mime = mime
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        settings.response_body_mime_types.contains(&mime)
    }

    /// Adds a chunk of the response body for phase 4, up to
    /// `SecResponseBodyLimit`; past it, `ProcessPartial` keeps the first
    /// part and `Reject` answers 500 when the engine is on.
    pub fn append_response_body(&mut self, chunk: &[u8]) -> Option<Intervention> {
        if !self.inspects_response_body() {
            return None;
        }
        let rules = Arc::clone(&self.rules);
        let settings = &rules.settings;
        let limit = usize::try_from(settings.response_body_limit).unwrap_or(usize::MAX);
        let room = limit.saturating_sub(self.response.body.len());
        if chunk.len() <= room {
            self.data_changed();
            self.response.body.extend_from_slice(chunk);
            return None;
        }
        self.data_changed();
        self.response.body.extend_from_slice(&chunk[..room]);
        if settings.response_body_limit_action == LimitAction::Reject
            && self.mode == EngineMode::On
            && self.intervention.is_none()
        {
            self.intervention = Some(Intervention {
                status: 500,
                redirect: None,
                drop: false,
                rule_id: 0,
            });
        }
        self.intervention.clone()
    }

    /// Phase 2: the request body (appended, or already in `request.body`), parsed by
    /// the body processor the content type (or `ctl`) names.
    pub fn process_request_body(&mut self) -> Option<Intervention> {
        if self.request_body_access && !self.request.body.is_empty() {
            let content_type = self
                .request
                .header("content-type")
                .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
                .unwrap_or_default();
            if self.body_processor.is_empty()
                && content_type.starts_with("application/x-www-form-urlencoded")
            {
                self.body_processor = "URLENCODED".into();
            }
            if self.body_processor == "URLENCODED" {
                let separator = self.rules.settings.argument_separator;
                self.data_changed();
                self.args_post = parse_urlencoded(&self.request.body, separator);
            }
        }
        self.run_phase(2)
    }

    /// Forgets what the memo knows: it names values by position, and the
    /// request or response data is about to be replaced or grown.
    fn data_changed(&mut self) {
        self.memo.get_mut().clear();
    }

    /// Phase 3: response headers.
    pub fn process_response_headers(
        &mut self,
        status: u16,
        protocol: &[u8],
        headers: Vec<Pair>,
    ) -> Option<Intervention> {
        self.response.status = status;
        self.response.protocol = protocol.to_vec();
        self.data_changed();
        self.response.headers = headers;
        self.run_phase(3)
    }

    /// Phase 4: the response body (in `response.body`).
    pub fn process_response_body(&mut self) -> Option<Intervention> {
        self.run_phase(4)
    }

    /// Phase 5: logging. Never intervenes. Persistent collections opened
    /// during the transaction are written back afterwards.
    pub fn process_logging(&mut self) {
        let _ = self.run_phase(5);
        self.persist();
    }

    fn persist(&mut self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let timeout = std::time::Duration::from_secs(self.rules.settings.collection_timeout);
        let now = Instant::now();
        for (var, key) in std::mem::take(&mut self.opened) {
            let vars = self
                .collections
                .get(&var)
                .map(|map| {
                    map.iter()
                        .map(|(name, value)| {
                            let name = name_text(name);
                            let expires = self.expiries.get(&(var, name.clone())).copied();
                            (
                                name,
                                StoredVar {
                                    value: value.to_vec(),
                                    expires,
                                },
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            store.store(var, &key, vars, timeout, now);
        }
    }

    fn init_collection(&mut self, var: Var, key: &str) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let loaded = store.load(var, key, Instant::now());
        let map = self.collections.map_mut(var);
        map.clear();
        for (name, stored) in loaded {
            if let Some(expires) = stored.expires {
                self.expiries.insert((var, name.clone()), expires);
            }
            map.insert(
                VarName::from_slice(name.as_bytes()),
                VarValue::from_vec(stored.value),
            );
        }
        self.opened.retain(|(v, _)| *v != var);
        self.opened.push((var, key.to_string()));
    }

    /// Every TX variable, sorted by name (names lower-cased).
    pub fn tx_vars(&self) -> Vec<(String, Vec<u8>)> {
        let mut vars: Vec<(String, Vec<u8>)> = self
            .collections
            .get(&Var::Tx)
            .into_iter()
            .flatten()
            .map(|(k, v)| (name_text(k), v.to_vec()))
            .collect();
        vars.sort();
        vars
    }

    /// A TX variable's value (names without case).
    pub fn tx_var(&self, name: &str) -> Option<&[u8]> {
        self.collections
            .get(&Var::Tx)
            .and_then(|m| m.get(name.to_ascii_lowercase().as_bytes()))
            .map(|v| v.as_slice())
    }

    fn expose_request_body(&self) -> bool {
        self.request_body_access
            && (self.force_body_variable
                || self.body_processor.is_empty()
                || self.body_processor == "URLENCODED")
    }

    fn run_phase(&mut self, phase: u8) -> Option<Intervention> {
        if self.mode == EngineMode::Off || self.intervention.is_some() {
            return self.intervention.clone();
        }
        match self.allowed {
            Some(AllowScope::All) => return None,
            Some(AllowScope::Request) if phase <= 2 => return None,
            _ => {}
        }
        let rules = Arc::clone(&self.rules);
        let steps = &rules.phases[usize::from(phase) - 1];
        let records = rules.gate_records.get(usize::from(phase) - 1);
        let mut skip_to: Option<&str> = None;
        let mut skip_rules = 0u32;
        for (at, step) in steps.iter().enumerate() {
            let rule = match step {
                Step::Marker(name) => {
                    if skip_to.is_some_and(|s| s == &**name) {
                        skip_to = None;
                    }
                    continue;
                }
                Step::Rule(rule) => rule,
            };
            if skip_to.is_some() {
                continue;
            }
            if skip_rules > 0 {
                skip_rules -= 1;
                continue;
            }
            if self.removed_rules.iter().any(|f| f.matches(rule)) {
                continue;
            }
            let Gate::Open(settled) = self.gate(records.and_then(|r| r.get(at))) else {
                continue;
            };
            if !self.evaluate(rule, settled) {
                continue;
            }
            self.run_actions(rule);
            if let Some(marker) = &rule.skip_after {
                skip_to = Some(marker.as_str());
            }
            skip_rules = rule.skip;
            match self.disrupt(rule) {
                Flow::Continue => {}
                Flow::StopPhase => break,
                Flow::Stop => return self.intervention.clone(),
            }
        }
        self.intervention.clone()
    }

    /// Evaluates a rule and its chain; true when all of it matched.
    /// `settled`: targets of the first link the gate proved cannot match
    /// (see `Gate::Open`).
    fn evaluate(&mut self, rule: &Arc<CompiledRule>, settled: u64) -> bool {
        let mut link: &CompiledRule = rule;
        let mut settled = settled;
        loop {
            if !(link.always_passes || self.evaluate_one(link, settled)) {
                return false;
            }
            settled = 0;
            match &link.chain {
                Some(next) => link = next,
                None => return true,
            }
        }
    }

    fn evaluate_one(&mut self, rule: &CompiledRule, settled: u64) -> bool {
        let expanded;
        let param: &[u8] = match &rule.param_static {
            Some(text) => text,
            None => {
                expanded = rule.param.expand(self);
                &expanded
            }
        };
        // SecAction and the like: no targets, one unconditional test.
        if rule.variables.is_empty() {
            let mut caps = Captures::new();
            let matched = rule.operator.matches(b"", param, Some(&mut caps)) != rule.negated;
            return matched;
        }
        let mut matched_any = false;
        // The last rule's matches lend their buffer: most rules that match
        // match once, and an allocation per match showed in profiles.
        let mut found = std::mem::take(&mut self.spare_matches);
        let mut caps = std::mem::take(&mut self.spare_captures);
        let removed = &self.removed_targets;
        let excluded = |var: Var, key: Option<&[u8]>| {
            rule.variables
                .iter()
                .filter(|v| v.exclude)
                .any(|ex| Self::excluded_by(var, key, ex))
                || removed
                    .iter()
                    .any(|(f, spec)| f.matches(rule) && Self::excluded_by(var, key, spec))
        };
        // A link followed by more of its chain runs its `setvar`s for each
        // value it matches, with that value's captures, before the next
        // link is tested (ModSecurity's and Coraza's order; CRS 920450
        // tests in its chain the variables its starter sets).
        let per_match = rule.chain.is_some() && !rule.set_vars.is_empty();
        // Captures are kept with each match when the chain's `setvar`s run
        // per match, else with the first only (they become TX:0-9).
        let mut record = |var: Var, key: Option<&[u8]>, value: &[u8], caps: &Captures| {
            matched_any = true;
            let keep = rule.capture && (per_match || found.is_empty());
            found.push(var, key, value, keep.then_some(caps));
        };
        for (i, spec) in rule.variables.iter().filter(|v| !v.exclude).enumerate() {
            if settled & 1u64.checked_shl(i as u32).unwrap_or(0) != 0 {
                continue;
            }
            // The request or response lists the target reads (not counted).
            let lists = if spec.count {
                None
            } else {
                self.lists(spec.var)
            };
            // A list none of whose values, however the chain transforms
            // them, can hold what the operator needs: passed over whole.
            // (A chain with a transformation that may output any byte, a
            // hash or a base64 decoder, puts every byte within reach.)
            if !rule.needs.is_empty()
                && self.rules.chain_is_bounded(rule.chain_id)
                && let Some(lists) = lists
            {
                let mut memo = self.memo.borrow_mut();
                let mut reaches = lists.into_iter().flatten().map(|list| {
                    memo.list_reach(list, &self.rules, rule.chain_id, &rule.transforms)
                });
                if reaches.all(|reach| !rule.may_reach_needs(&reach)) {
                    continue;
                }
            }
            // The common case, kept tight: a rule over a request or response
            // list walks it with the list's slots fetched once. Most values
            // of a prefiltered rule are turned away by a few bit tests on
            // what the memo already knows of them.
            if (rule.prefilter.is_some() || self.rules.optimised)
                && let Some(lists) = lists
            {
                let mut memo = self.memo.borrow_mut();
                for of in lists.into_iter().flatten() {
                    let (list, group, names) = of;
                    if rule.prefilter.is_some()
                        && !rule.multi_match
                        && !rule.negated
                        && memo.rule_cannot_match_list(&self.rules, rule, spec, of)
                    {
                        continue;
                    }
                    let slots = memo.group(group, list.len());
                    for ((k, v), slot) in list.iter().zip(slots.iter_mut()) {
                        if !vars::accepts(&spec.selector, k) {
                            continue;
                        }
                        let value: &[u8] = if names { k } else { v };
                        caps.clear();
                        let excluded = || excluded(spec.var, Some(k));
                        let hit = if rule.multi_match {
                            judge_each_step(
                                rule,
                                &self.rules,
                                slot,
                                value,
                                param,
                                &mut caps,
                                excluded,
                            )
                        } else {
                            judge(rule, &self.rules, slot, value, param, &mut caps, excluded)
                        };
                        if hit {
                            record(spec.var, Some(k), value, &caps);
                        }
                    }
                }
                continue;
            }
            self.visit(spec, &mut |key, value, slot| {
                caps.clear();
                let hit = match slot {
                    Some(id) if !rule.multi_match => {
                        let mut memo = self.memo.borrow_mut();
                        let excluded = || excluded(spec.var, key);
                        judge(
                            rule,
                            &self.rules,
                            memo.slot(id),
                            value,
                            param,
                            &mut caps,
                            excluded,
                        )
                    }
                    Some(id)
                        if rule.prefilter.is_some()
                            && !self.memo.borrow_mut().slot(id).could_match_any_step(
                                value,
                                &self.rules,
                                rule.chain_id,
                                rule.prefilter,
                            ) =>
                    {
                        if !rule.negated || excluded(spec.var, key) {
                            return;
                        }
                        true
                    }
                    // multiMatch over a value its chain may change: the
                    // memo knows which steps leave it alone.
                    Some(id) if !rule.negated && self.rules.optimised => {
                        if excluded(spec.var, key) {
                            return;
                        }
                        let mut memo = self.memo.borrow_mut();
                        multi::each_step(
                            rule,
                            &self.rules,
                            memo.slot(id),
                            value,
                            param,
                            rule.capture.then_some(&mut caps),
                        )
                    }
                    _ => {
                        if excluded(spec.var, key) {
                            return;
                        }
                        test_value(
                            rule,
                            value,
                            param,
                            rule.capture.then_some(&mut caps),
                            &mut |_| true,
                        )
                    }
                };
                if hit {
                    record(spec.var, key, value, &caps);
                }
            });
        }
        if matched_any && per_match {
            for at in 0..found.len() {
                let Some(one) = found.get(at) else {
                    continue;
                };
                if rule.capture {
                    self.set_captures(one.groups());
                }
                self.set_matched(one.name, one.value);
                for sv in &rule.set_vars {
                    self.set_var(sv);
                }
            }
        }
        if matched_any {
            if rule.capture
                && let Some(first) = found.get(0)
            {
                self.set_captures(first.groups());
            }
            if let Some(last) = found.last() {
                self.set_matched(last.name, last.value);
            }
            std::mem::swap(&mut self.matched_vars, &mut found);
        }
        found.clear();
        self.spare_matches = found;
        caps.clear();
        self.spare_captures = caps;
        matched_any
    }

    /// MATCHED_VAR_NAME and MATCHED_VAR.
    fn set_matched(&mut self, name: &[u8], value: &[u8]) {
        self.matched_var_name.clear();
        self.matched_var_name.extend_from_slice(name);
        self.matched_var.clear();
        self.matched_var.extend_from_slice(value);
    }

    /// `capture`: the operator's groups into TX:0–TX:9.
    fn set_captures<'g>(&mut self, groups: impl Iterator<Item = &'g [u8]>) {
        const NAMES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
        let tx = self.collections.map_mut(Var::Tx);
        for (name, group) in NAMES.iter().zip(groups) {
            match tx.get_mut(name.as_bytes()) {
                Some(slot) => {
                    slot.clear();
                    slot.extend_from_slice(group);
                }
                None => {
                    tx.insert(
                        VarName::from_slice(name.as_bytes()),
                        VarValue::from_slice(group),
                    );
                }
            }
        }
    }

    fn run_actions(&mut self, rule: &Arc<CompiledRule>) {
        self.current = Some(Arc::clone(rule));
        let mut link: &CompiledRule = rule;
        loop {
            for (var, key) in &link.init_cols {
                let key = into_text(key.expand(self));
                self.init_collection(*var, &key);
            }
            // A link with more chain after it ran its own per match.
            if link.chain.is_none() {
                for sv in &link.set_vars {
                    self.set_var(sv);
                }
            }
            for (name, value) in &link.set_env {
                let value = value.expand(self);
                self.collections.map_mut(Var::Env).insert(
                    VarName::from_slice(name.to_ascii_lowercase().as_bytes()),
                    VarValue::from_vec(value),
                );
            }
            for (var, name, secs) in &link.expire_vars {
                let name = String::from_utf8_lossy(&name.expand(self)).to_ascii_lowercase();
                let secs = u64::try_from(atoi(&secs.expand(self))).unwrap_or(0);
                self.expiries.insert(
                    (*var, name),
                    expiry(Instant::now(), std::time::Duration::from_secs(secs)),
                );
            }
            for ctl in &link.ctls {
                let value = into_text(ctl.value.expand(self));
                self.ctl(&ctl.option, &value);
            }
            match &link.chain {
                Some(next) => link = next,
                None => break,
            }
        }
        if rule.log || rule.msg.is_some() {
            if let Some(sev) = rule.severity {
                self.highest_severity = Some(self.highest_severity.map_or(sev, |h| h.min(sev)));
            }
            // The message and data are only for the log: a `nolog` rule
            // (CRS's setup rules) does not pay for expanding them.
            if rule.log {
                let msg = rule
                    .msg
                    .as_ref()
                    .map(|m| into_text(m.expand(self)))
                    .unwrap_or_default();
                let data = rule
                    .logdata
                    .as_ref()
                    .map(|m| into_text(m.expand(self)))
                    .unwrap_or_default();
                self.matches.push(RuleMatch {
                    id: rule.id,
                    phase: rule.phase,
                    msg,
                    data,
                    severity: rule.severity,
                    tags: rule.tags.clone(),
                });
            }
        }
        self.current = None;
    }

    fn disrupt(&mut self, rule: &CompiledRule) -> Flow {
        // No disruptive action, or `block`: the phase's default decides.
        let action = match &rule.disruptive {
            None | Some(Disruptive::Block) => &rule.default_disruptive,
            Some(d) => d,
        };
        if self.mode != EngineMode::On {
            return Flow::Continue;
        }
        let intervention = |status: u16, redirect: Option<String>, drop: bool| Intervention {
            status,
            redirect,
            drop,
            rule_id: rule.id,
        };
        match action {
            Disruptive::Pass | Disruptive::Block => Flow::Continue,
            Disruptive::Deny => {
                self.intervention = Some(intervention(rule.status.unwrap_or(403), None, false));
                Flow::Stop
            }
            Disruptive::Drop => {
                self.intervention = Some(intervention(rule.status.unwrap_or(403), None, true));
                Flow::Stop
            }
            Disruptive::Redirect(target) => {
                let location = into_text(target.expand(self));
                let status = rule
                    .status
                    .filter(|s| (300..400).contains(s))
                    .unwrap_or(302);
                self.intervention = Some(intervention(status, Some(location), false));
                Flow::Stop
            }
            Disruptive::Allow(scope) => {
                self.allowed = Some(*scope);
                Flow::StopPhase
            }
        }
    }

    fn set_var(&mut self, sv: &SetVar) {
        let (collection, name) = match sv {
            SetVar::Set {
                collection, name, ..
            }
            | SetVar::Add {
                collection, name, ..
            }
            | SetVar::Sub {
                collection, name, ..
            }
            | SetVar::Delete { collection, name } => (collection, name),
        };
        let Some(key) = COLLECTIONS.iter().copied().find(|c| c == collection) else {
            return;
        };
        // CRS runs a few dozen setvars per request, most on variables that
        // already exist: the name is looked up borrowed and the value
        // rewritten in place, with no allocation for either.
        let mut name_buf = std::mem::take(&mut self.name_buf);
        name_buf.clear();
        name.expand_into(self, &mut name_buf);
        // Collections key names in lower case; invalid UTF-8 is replaced,
        // as ModSecurity's names are text.
        name_buf.make_ascii_lowercase();
        let lossy = as_text(&name_buf);
        let var: &str = &lossy;
        match sv {
            SetVar::Delete { .. } => {
                self.collections.map_mut(key).remove(var.as_bytes());
            }
            SetVar::Set { value, .. } => {
                let mut new_value = std::mem::take(&mut self.value_buf);
                new_value.clear();
                value.expand_into(self, &mut new_value);
                let map = self.collections.map_mut(key);
                match map.get_mut(var.as_bytes()) {
                    Some(slot) => {
                        slot.clear();
                        slot.extend_from_slice(&new_value);
                    }
                    None => {
                        map.insert(
                            VarName::from_slice(var.as_bytes()),
                            VarValue::from_slice(&new_value),
                        );
                    }
                }
                self.value_buf = new_value;
            }
            SetVar::Add { value, .. } | SetVar::Sub { value, .. } => {
                let delta = atoi(&value.expand(self));
                let map = self.collections.map_mut(key);
                let add = matches!(sv, SetVar::Add { .. });
                let combine = |current: i64| {
                    if add {
                        current.saturating_add(delta)
                    } else {
                        current.saturating_sub(delta)
                    }
                };
                match map.get_mut(var.as_bytes()) {
                    Some(slot) => {
                        let result = combine(atoi(slot));
                        slot.clear();
                        push_i64(slot, result);
                    }
                    None => {
                        let mut value = VarValue::new();
                        push_i64(&mut value, combine(0));
                        map.insert(VarName::from_slice(var.as_bytes()), value);
                    }
                }
            }
        }
        drop(lossy);
        self.name_buf = name_buf;
    }

    fn ctl(&mut self, option: &str, value: &str) {
        let id_range = |text: &str| -> Option<RuleFilter> {
            let text = text.trim();
            match text.split_once('-') {
                Some((lo, hi)) => Some(RuleFilter::Id(
                    lo.trim().parse().ok()?,
                    hi.trim().parse().ok()?,
                )),
                None => text.parse().ok().map(|id| RuleFilter::Id(id, id)),
            }
        };
        match option.to_ascii_lowercase().as_str() {
            "ruleengine" => {
                self.mode = match value.to_ascii_lowercase().as_str() {
                    "on" => EngineMode::On,
                    "off" => EngineMode::Off,
                    "detectiononly" => EngineMode::DetectionOnly,
                    _ => self.mode,
                }
            }
            "ruleremovebyid" => {
                for part in value.split([' ', ',']).filter(|p| !p.is_empty()) {
                    if let Some(f) = id_range(part) {
                        self.removed_rules.push(f);
                    }
                }
            }
            "ruleremovebytag" => self.removed_rules.push(RuleFilter::Tag(value.to_string())),
            "ruleremovetargetbyid" | "ruleremovetargetbytag" => {
                let Some((which, target)) = value.split_once(';') else {
                    return;
                };
                let filter = if option.eq_ignore_ascii_case("ruleRemoveTargetById") {
                    id_range(which)
                } else {
                    Some(RuleFilter::Tag(which.to_string()))
                };
                if let (Some(filter), Ok(specs)) =
                    (filter, super::seclang::parse::parse_variables(target))
                {
                    for spec in specs {
                        self.removed_targets.push((filter.clone(), spec));
                    }
                }
            }
            "requestbodyprocessor" => self.body_processor = value.to_ascii_uppercase(),
            "requestbodyaccess" => self.request_body_access = value.eq_ignore_ascii_case("on"),
            "forcerequestbodyvariable" => {
                self.force_body_variable = value.eq_ignore_ascii_case("on")
            }
            // Audit logging is Palisade's own; these have nothing to change.
            _ => {}
        }
    }
}

enum Flow {
    Continue,
    StopPhase,
    Stop,
}

/// A rule's verdict on a value the memo keeps (`slot`), `multiMatch` aside:
/// the prefilter first (a value without the operator's literals cannot
/// match, so the operator's answer is known: false), then exclusions,
/// then the operator on the memo's transformed form.
fn judge(
    rule: &CompiledRule,
    rules: &RuleSet,
    slot: &mut memo::Slot,
    value: &[u8],
    param: &[u8],
    caps: &mut Captures,
    excluded: impl FnOnce() -> bool,
) -> bool {
    let could = !rule.prefilter.is_some()
        || slot.could_match(
            value,
            rules,
            rule.chain_id,
            &rule.transforms,
            rule.prefilter,
        );
    if (!could && !rule.negated) || excluded() {
        return false;
    }
    !could || {
        // `t:none` alone: the value itself, with no entry in the memo.
        let input = if rule.transforms.is_empty() {
            value
        } else {
            slot.transformed(value, rule.chain_id, &rule.transforms)
                .unwrap_or(value)
        };
        rule.operator
            .matches(input, param, rule.capture.then_some(caps))
            != rule.negated
    }
}

/// [`judge`] for a `multiMatch` link: the operator on the value and on
/// every output its chain makes of it on the way.
fn judge_each_step(
    rule: &CompiledRule,
    rules: &RuleSet,
    slot: &mut memo::Slot,
    value: &[u8],
    param: &[u8],
    caps: &mut Captures,
    excluded: impl FnOnce() -> bool,
) -> bool {
    if rule.prefilter.is_some()
        && !slot.could_match_any_step(value, rules, rule.chain_id, rule.prefilter)
    {
        return rule.negated && !excluded();
    }
    if excluded() {
        return false;
    }
    let caps = rule.capture.then_some(caps);
    if !rule.negated && rules.optimised {
        multi::each_step(rule, rules, slot, value, param, caps)
    } else {
        test_value(rule, value, param, caps, &mut |_| true)
    }
}

/// `bytes` as text, invalid UTF-8 replaced (ModSecurity's names and
/// messages are text). Checks the whole at once first: the lossy
/// conversion walks byte by byte even when nothing needs replacing.
fn as_text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// [`as_text`] for an owned buffer, which it reuses when it is valid.
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned())
}

/// Runs the transformation chain over `value` and tests the operator;
/// with `multiMatch`, after every step as well. `admits(v)` false proves
/// the operator cannot match `v` (the prefilter), which spares the call.
fn test_value(
    rule: &CompiledRule,
    value: &[u8],
    param: &[u8],
    mut caps: Option<&mut Captures>,
    admits: &mut dyn FnMut(&[u8]) -> bool,
) -> bool {
    let mut test = |v: &[u8], caps: Option<&mut Captures>| {
        if !admits(v) {
            return rule.negated;
        }
        rule.operator.matches(v, param, caps) != rule.negated
    };
    if rule.multi_match && test(value, caps.as_deref_mut()) {
        return true;
    }
    let mut current: Option<Vec<u8>> = None;
    for t in &rule.transforms {
        let input = current.as_deref().unwrap_or(value);
        if let Some(next) = t.apply(input) {
            current = Some(next);
            if rule.multi_match && test(current.as_deref().unwrap_or(value), caps.as_deref_mut()) {
                return true;
            }
        }
    }
    if rule.multi_match {
        return false;
    }
    test(current.as_deref().unwrap_or(value), caps)
}

impl Resolve for Transaction {
    fn resolve_into(&self, reference: &Reference, out: &mut Vec<u8>) {
        if reference.collection == "RULE" {
            let Some(rule) = self.current.as_ref() else {
                return;
            };
            match reference.key_lower.as_deref() {
                Some("id") => out.extend_from_slice(rule.id.to_string().as_bytes()),
                Some("phase") => out.extend_from_slice(rule.phase.to_string().as_bytes()),
                Some("severity") => {
                    if let Some(s) = rule.severity {
                        out.extend_from_slice(s.to_string().as_bytes());
                    }
                }
                Some("msg") => {
                    if let Some(m) = &rule.msg {
                        out.extend_from_slice(&m.static_text());
                    }
                }
                _ => {}
            }
            return;
        }
        let Some(var) = reference.var else {
            return;
        };
        // `%{tx.name}`, the common case: one lookup by the name lower-cased
        // at load.
        if let Some(key) = &reference.key_lower
            && let Some(map) = self.collections.get(&var)
        {
            if let Some(v) = map.get(key.as_bytes()) {
                out.extend_from_slice(v);
            }
            return;
        }
        let spec = VarSpec {
            var,
            selector: reference
                .key
                .as_ref()
                .map_or(Selector::All, |k| Selector::Key(k.clone())),
            exclude: false,
            count: false,
        };
        let mut first = true;
        self.visit(&spec, &mut |_, value, _| {
            if std::mem::take(&mut first) {
                out.extend_from_slice(value);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{as_text, into_text};

    #[test]
    fn text_conversions_replace_invalid_utf8_as_the_lossy_one_does() {
        for bytes in [
            &b"plain"[..],
            b"caf\xc3\xa9",
            b"bad\xff\xfeend",
            b"\xc3",
            b"",
        ] {
            let lossy = String::from_utf8_lossy(bytes);
            assert_eq!(as_text(bytes), lossy);
            assert_eq!(into_text(bytes.to_vec()), lossy);
        }
    }

    /// The proxy holds a transaction across awaits on multi-threaded
    /// runtimes.
    #[test]
    fn transaction_is_send() {
        fn send<T: Send>() {}
        send::<super::Transaction>();
    }
}
