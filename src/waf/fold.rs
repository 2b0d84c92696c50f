//! Load-time evaluation of the rules that depend on nothing a request
//! brings: their work is done once, when the rule set is compiled, instead
//! of in every transaction.
//!
//! CRS spends a large share of a benign request on such rules: the setup
//! rules of REQUEST-901 (`SecRule &TX:x "@eq 0" "setvar:tx.x=..."`) and
//! the paranoia-level gates (`SecRule TX:DETECTION_PARANOIA_LEVEL "@lt 2"
//! "skipAfter:END-..."`) read only TX variables that other constant rules
//! set. Folding runs them once, in order, on a transaction without a
//! request; what they set becomes the TX every transaction starts with,
//! the rules they skip are dropped, and they themselves leave the phases.
//!
//! Moving a rule's effects to the start of the transaction is sound only
//! when no rule left in place could tell the difference. Walking the
//! rules in execution order, the pass keeps what the rules left in place
//! may read and write (TX names, exact or by prefix), and folds a rule
//! only when:
//! - it reads nothing but TX variables named outright (and constants);
//! - no rule left before it writes what it reads;
//! - if it changes TX: it runs in phase 1, and no rule left before it
//!   reads or writes those names or could stop the transaction;
//! - if it matches, nothing it does would show: no log entry, severity,
//!   `ctl`, collection or environment action, disruptive action other
//!   than `pass`, and no rule anywhere reads the previous rule's match;
//! - no rule left before it can remove rules or switch the engine (`ctl`),
//!   and it is not inside the range a rule left in place may skip.
//!
//! A rule that cannot be folded for what its actions read may still have
//! its test settled: when its first link tests only TX variables that no
//! rule left before it writes and changes nothing while tested, a test
//! that fails drops the rule (it fails in every transaction), and one that
//! passes is taken as passed where nothing could tell (CRS's 949 rules
//! summing the scores of the paranoia levels above, and up to, the one
//! set).
//!
//! `RuleSet::compile_with(.., false)` compiles without folding (and
//! without the prefilter); the tests compare the two on CRS.

use std::collections::HashSet;
use std::sync::Arc;

use super::macros::Template;
use super::rule::{CompiledRule, Disruptive, SetVar, Step};
use super::seclang::ast::{EngineMode, Selector, Var, VarSpec};
use super::tx::{Transaction, VarMap};

/// TX names, exact or by prefix; lower-cased.
#[derive(Default)]
struct Names {
    all: bool,
    exact: HashSet<String>,
    prefixes: Vec<String>,
}

impl Names {
    fn exact(&mut self, name: &str) {
        self.exact.insert(name.to_ascii_lowercase());
    }

    fn prefix(&mut self, prefix: &[u8]) {
        if prefix.is_empty() {
            self.all = true;
        } else {
            self.prefixes
                .push(String::from_utf8_lossy(prefix).to_ascii_lowercase());
        }
    }

    fn is_empty(&self) -> bool {
        !self.all && self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// Names written out in full only.
    fn is_exact(&self) -> bool {
        !self.all && self.prefixes.is_empty()
    }

    fn touches(&self, name: &str) -> bool {
        self.all || self.exact.contains(name) || self.prefixes.iter().any(|p| name.starts_with(p))
    }

    fn touches_any(&self, names: &Names) -> bool {
        // `names` (a foldable rule's) holds exact names only.
        names.exact.iter().any(|n| self.touches(n))
    }

    fn absorb(&mut self, other: Names) {
        self.all |= other.all;
        self.exact.extend(other.exact);
        self.prefixes.extend(other.prefixes);
    }
}

/// What one rule (all links of its chain) reads and writes of TX, and
/// whether it reads anything else.
#[derive(Default)]
struct Access {
    reads: Names,
    writes: Names,
    /// Reads a variable other than TX, a macro other than `%{tx.name}`,
    /// or TX without naming the variable.
    reads_other: bool,
    /// Reads `MATCHED_VAR` and the like as left by an earlier rule.
    reads_previous_match: bool,
    /// Reads `MATCHED_VAR` and the like in its actions or messages.
    reads_matched: bool,
    /// Has `ctl`, `setenv`, `initcol`, `expirevar` or `capture`.
    side_effects: bool,
    /// Its `ctl`s that remove rules or targets or switch the engine.
    steers: Vec<Steer>,
}

/// A `ctl` that changes which rules run, or on what.
#[derive(Debug, Clone)]
enum Steer {
    /// `ruleRemoveById` / `ruleRemoveByTag`.
    Remove(Filter),
    /// `ruleRemoveTargetById` / `ruleRemoveTargetByTag`.
    RemoveTargets(Filter),
    /// `ruleEngine`.
    Engine,
    /// One whose reach is not known at load (its value has macros).
    Unknown,
}

#[derive(Debug, Clone)]
enum Filter {
    Ids(Vec<(u64, u64)>),
    Tag(String),
}

impl Filter {
    /// As the transaction's `ctl` reads it; `None` when it cannot tell.
    fn by_ids(text: &str) -> Option<Filter> {
        let mut ids = Vec::new();
        for part in text.split([' ', ',']).filter(|p| !p.is_empty()) {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            ids.push((lo.trim().parse().ok()?, hi.trim().parse().ok()?));
        }
        Some(Filter::Ids(ids))
    }

    fn matches(&self, rule: &CompiledRule) -> bool {
        match self {
            Filter::Ids(ids) => ids.iter().any(|(lo, hi)| (*lo..=*hi).contains(&rule.id)),
            Filter::Tag(tag) => rule.tags.iter().any(|t| t.eq_ignore_ascii_case(tag)),
        }
    }
}

impl Steer {
    fn of(option: &str, value: &Template) -> Option<Steer> {
        let option = option.to_ascii_lowercase();
        let harmless = [
            "requestbodyprocessor",
            "requestbodyaccess",
            "forcerequestbodyvariable",
            "auditengine",
            "auditlogparts",
        ];
        if harmless.contains(&option.as_str()) {
            return None;
        }
        if !value.is_static() {
            return Some(Steer::Unknown);
        }
        let text = String::from_utf8_lossy(&value.static_text()).into_owned();
        let which = text.split_once(';').map_or(text.as_str(), |(w, _)| w);
        Some(match option.as_str() {
            "ruleengine" => Steer::Engine,
            "ruleremovebyid" => Filter::by_ids(&text).map_or(Steer::Unknown, Steer::Remove),
            "ruleremovebytag" => Steer::Remove(Filter::Tag(text.clone())),
            "ruleremovetargetbyid" => {
                Filter::by_ids(which).map_or(Steer::Unknown, Steer::RemoveTargets)
            }
            "ruleremovetargetbytag" => Steer::RemoveTargets(Filter::Tag(which.to_string())),
            _ => Steer::Unknown,
        })
    }
}

fn is_matched(var: Var) -> bool {
    matches!(
        var,
        Var::MatchedVar | Var::MatchedVars | Var::MatchedVarName | Var::MatchedVarsNames
    )
}

impl Access {
    fn of(rule: &CompiledRule) -> Access {
        let mut access = Access::default();
        let mut link = Some(rule);
        let mut first = true;
        while let Some(l) = link {
            access.link(l, first);
            first = false;
            link = l.chain.as_deref();
        }
        access
    }

    fn link(&mut self, rule: &CompiledRule, first: bool) {
        if rule.chain.is_some() && !rule.set_vars.is_empty() {
            // Runs while the rule is tested, matched in the end or not.
            self.side_effects = true;
        }
        for spec in &rule.variables {
            self.variable(spec);
            if first && is_matched(spec.var) {
                self.reads_previous_match = true;
            }
        }
        let mut templates: Vec<&Template> = vec![&rule.param];
        for sv in &rule.set_vars {
            let (collection, name, value) = match sv {
                SetVar::Set {
                    collection,
                    name,
                    value,
                }
                | SetVar::Add {
                    collection,
                    name,
                    value,
                }
                | SetVar::Sub {
                    collection,
                    name,
                    value,
                } => (collection, name, Some(value)),
                SetVar::Delete { collection, name } => (collection, name, None),
            };
            templates.push(name);
            templates.extend(value);
            if matches!(sv, SetVar::Add { .. } | SetVar::Sub { .. }) && *collection == Var::Tx {
                // `+=` reads the variable it writes.
                self.name_of(name, true);
            }
            if *collection == Var::Tx {
                self.name_of(name, false);
            } else {
                self.side_effects = true;
            }
        }
        templates.extend(rule.msg.iter());
        templates.extend(rule.logdata.iter());
        for ctl in &rule.ctls {
            templates.push(&ctl.value);
            self.side_effects = true;
            self.steers.extend(Steer::of(&ctl.option, &ctl.value));
        }
        for (_, value) in &rule.set_env {
            templates.push(value);
            self.side_effects = true;
        }
        for (_, key) in &rule.init_cols {
            templates.push(key);
            self.side_effects = true;
        }
        for (_, name, secs) in &rule.expire_vars {
            templates.push(name);
            templates.push(secs);
            self.side_effects = true;
        }
        if let Some(Disruptive::Redirect(target)) = &rule.disruptive {
            templates.push(target);
        }
        if rule.capture {
            self.side_effects = true;
            for i in 0..10 {
                self.writes.exact(&i.to_string());
            }
        }
        for template in templates {
            for (collection, key) in template.references() {
                match (collection, key) {
                    ("TX", Some(key)) => self.reads.exact(key),
                    (
                        "MATCHED_VAR" | "MATCHED_VARS" | "MATCHED_VAR_NAME" | "MATCHED_VARS_NAMES",
                        _,
                    ) => {
                        self.reads_other = true;
                        self.reads_matched = true;
                        // A rule without targets has no match of its own.
                        if first && rule.variables.is_empty() {
                            self.reads_previous_match = true;
                        }
                    }
                    _ => self.reads_other = true,
                }
            }
        }
        if first && !rule.variables.is_empty() {
            // The parameter is expanded before this rule matches anything.
            if rule
                .param
                .references()
                .any(|(c, _)| c.starts_with("MATCHED_VAR"))
            {
                self.reads_previous_match = true;
            }
        }
    }

    fn variable(&mut self, spec: &VarSpec) {
        if spec.var != Var::Tx {
            self.reads_other = true;
            return;
        }
        match &spec.selector {
            Selector::Key(name) => self.reads.exact(name),
            Selector::Regex(regex) => {
                self.reads_other = true;
                self.reads
                    .prefix(regex.literal_prefix().unwrap_or_default());
            }
            Selector::All | Selector::XPath(_) => {
                self.reads_other = true;
                self.reads.all = true;
            }
        }
    }

    /// A `setvar` name: read (`+=`) or written, exact or by the text
    /// before its first macro.
    fn name_of(&mut self, name: &Template, read: bool) {
        let names = if read {
            &mut self.reads
        } else {
            &mut self.writes
        };
        if name.is_static() {
            names.exact(&String::from_utf8_lossy(&name.static_text()));
        } else {
            names.prefix(&name.leading_text());
        }
    }
}

/// What the rules left in place so far may do.
#[derive(Default)]
struct Kept {
    reads: Names,
    writes: Names,
    /// A rule that may stop the transaction (or end a phase early).
    may_disrupt: bool,
    /// What rules left in place may do to the rules after them.
    steers: Vec<Steer>,
}

impl Kept {
    /// Whether a kept rule's `ctl` could change what folding `rule`
    /// assumes: that it runs, on all its targets. `writes`: it changes
    /// TX; `dropped`: the rules its skip drops.
    fn could_steer(&self, rule: &CompiledRule, writes: bool, dropped: &[&CompiledRule]) -> bool {
        self.steers.iter().any(|steer| match steer {
            Steer::Unknown => true,
            Steer::Engine => writes,
            Steer::RemoveTargets(filter) => filter.matches(rule),
            // Removed, the rule does nothing: harmless if it would have
            // done nothing but skip rules the same ctl removes anyway.
            Steer::Remove(filter) => {
                filter.matches(rule) && (writes || dropped.iter().any(|d| !filter.matches(d)))
            }
        })
    }
}

/// A skip a kept rule may take, whose range folding must leave alone.
#[derive(Default)]
struct Pins {
    markers: Vec<Arc<str>>,
    rules: u32,
}

/// The phases with constant rules evaluated, and the TX they leave.
pub struct Folded {
    pub phases: [Vec<Step>; 5],
    pub tx: VarMap,
    pub folded: usize,
    pub dropped: usize,
    /// Where in `phases` (phase index, step index) the rules whose test
    /// passes in every transaction are (see `may_skip_test`).
    pub always_pass: Vec<(usize, usize)>,
}

/// Folds what can be folded (see the module doc). `dummy` is a
/// transaction over the unfolded rule set, with no request.
pub fn fold(phases: &[Vec<Step>; 5], mut dummy: Transaction) -> Folded {
    let mut out: [Vec<Step>; 5] = Default::default();
    let mut folded = 0;
    let mut dropped = 0;
    if dummy.mode() == EngineMode::Off {
        return Folded {
            phases: phases.clone(),
            tx: VarMap::default(),
            folded,
            dropped,
            always_pass: Vec::new(),
        };
    }
    let previous_match_read = phases.iter().flatten().any(|step| match step {
        Step::Rule(rule) => Access::of(rule).reads_previous_match,
        Step::Marker(_) => false,
    });
    let mut kept = Kept::default();
    let mut always_pass = Vec::new();
    for (index, steps) in phases.iter().enumerate() {
        let phase = index + 1;
        let mut pins = Pins::default();
        // A folded rule's own skip, as run_phase would take it.
        let mut skip_to: Option<&str> = None;
        let mut skip_rules = 0u32;
        for (at, step) in steps.iter().enumerate() {
            let rule = match step {
                Step::Marker(name) => {
                    if skip_to.is_some_and(|s| s == &**name) {
                        skip_to = None;
                    }
                    pins.markers.retain(|m| m != name);
                    out[index].push(step.clone());
                    continue;
                }
                Step::Rule(rule) => rule,
            };
            if skip_to.is_some() {
                dropped += 1;
                continue;
            }
            if skip_rules > 0 {
                skip_rules -= 1;
                dropped += 1;
                continue;
            }
            let pinned = !pins.markers.is_empty() || pins.rules > 0;
            // A skip by count would skip another rule without this one; a
            // skip to a marker is the same with or without a rule that
            // does nothing.
            let counted = pins.rules > 0;
            pins.rules = pins.rules.saturating_sub(1);
            let settled = settled_test(rule, &kept, &mut dummy);
            if !counted && settled == Some(false) {
                folded += 1;
                continue;
            }
            let access = Access::of(rule);
            let candidate = !pinned
                && !access.reads_other
                && !access.side_effects
                && !kept.writes.touches_any(&access.reads)
                && !writes_state(rule);
            if candidate {
                if !dummy.fold_evaluate(rule) {
                    // It cannot match: it does nothing, in any transaction
                    // (and a ctl removing it or its targets changes that
                    // not).
                    folded += 1;
                    continue;
                }
                let writes = !access.writes.is_empty();
                let effect_free = !rule.log
                    && rule.severity.is_none()
                    && !previous_match_read
                    && matches!(effective(rule), Disruptive::Pass);
                let writes_ok = !writes
                    || (phase == 1
                        && !kept.may_disrupt
                        && !kept.writes.touches_any(&access.writes)
                        && !kept.reads.touches_any(&access.writes)
                        && access.writes.is_exact());
                if effect_free
                    && writes_ok
                    && !kept.could_steer(rule, writes, &skipped_by(rule, &steps[at + 1..]))
                {
                    dummy.fold_apply(rule);
                    if let Some(marker) = &rule.skip_after {
                        skip_to = Some(marker.as_str());
                    }
                    skip_rules = rule.skip;
                    folded += 1;
                    continue;
                }
            }
            // Left in place.
            if settled == Some(true) && !previous_match_read && may_skip_test(rule, &access, &kept)
            {
                always_pass.push((index, out[index].len()));
            }
            if rule.skip > 0 {
                pins.rules = pins.rules.max(rule.skip);
            }
            if let Some(marker) = &rule.skip_after {
                pins.markers.push(Arc::from(marker.as_str()));
            }
            kept.may_disrupt |= !matches!(effective(rule), Disruptive::Pass);
            kept.steers.extend(access.steers);
            kept.reads.absorb(access.reads);
            kept.writes.absorb(access.writes);
            out[index].push(step.clone());
        }
    }
    Folded {
        phases: out,
        tx: dummy.into_tx(),
        folded,
        dropped,
        always_pass,
    }
}

/// What `rule`'s first link comes to in every transaction, when that is
/// settled at load: it tests only TX variables no rule left in place
/// before it writes (see `first_link_is_constant`) and changes nothing
/// while tested (no `capture`, no per-match `setvar`). `Some(false)`: the
/// rule fails everywhere and a failed first link runs nothing, so it can
/// go, whatever its actions and chain read (CRS's 949 rules adding up the
/// scores of paranoia levels above the one set). `Some(true)`: see
/// `may_skip_test`.
fn settled_test(rule: &CompiledRule, kept: &Kept, dummy: &mut Transaction) -> Option<bool> {
    let testing_changes_nothing =
        !rule.capture && (rule.chain.is_none() || rule.set_vars.is_empty());
    (testing_changes_nothing && first_link_is_constant(rule, kept))
        .then(|| dummy.fold_first_link_matches(rule))
}

/// Whether `rule`, left in place with a test that passes in every
/// transaction, may take it as passed: a rule without a chain, where
/// nothing would tell the difference: no log entry, no message or action
/// reading what it matched, no `ctl` before it that may remove its
/// targets (CRS's 949 rules adding up the scores of the paranoia levels up
/// to the one set). Its TX reads are kept readers, so no rule folded after
/// it can change what it tests. The caller checks that no rule reads the
/// matched variables a previous rule left.
fn may_skip_test(rule: &CompiledRule, access: &Access, kept: &Kept) -> bool {
    rule.chain.is_none()
        && !rule.log
        && rule.msg.is_none()
        && rule.logdata.is_none()
        && !access.reads_matched
        && !kept.could_steer(rule, false, &[])
}

/// Whether `rule`'s first link tests something (not a `SecAction`) that
/// is the same in every transaction: TX variables named outright that no
/// rule left in place before it writes, through an operator that changes
/// nothing.
fn first_link_is_constant(rule: &CompiledRule, kept: &Kept) -> bool {
    if rule.variables.is_empty() || writes_state(rule) {
        return false;
    }
    let mut reads = Access::default();
    for spec in &rule.variables {
        reads.variable(spec);
    }
    for (collection, key) in rule.param.references() {
        match (collection, key) {
            ("TX", Some(key)) => reads.reads.exact(key),
            _ => reads.reads_other = true,
        }
    }
    !reads.reads_other && !kept.writes.touches_any(&reads.reads)
}

/// The rules `rule`'s skip would pass over, of the `rest` of its phase.
fn skipped_by<'a>(rule: &CompiledRule, rest: &'a [Step]) -> Vec<&'a CompiledRule> {
    let rules = rest.iter().map(|step| match step {
        Step::Rule(r) => Some(&**r),
        Step::Marker(_) => None,
    });
    match &rule.skip_after {
        Some(marker) => rest
            .iter()
            .take_while(|step| !matches!(step, Step::Marker(m) if **m == **marker))
            .filter_map(|step| match step {
                Step::Rule(r) => Some(&**r),
                Step::Marker(_) => None,
            })
            .collect(),
        None => rules.flatten().take(rule.skip as usize).collect(),
    }
}

/// The disruptive action a rule takes when it matches (`block` resolved).
fn effective(rule: &CompiledRule) -> &Disruptive {
    match &rule.disruptive {
        None | Some(Disruptive::Block) => &rule.default_disruptive,
        Some(d) => d,
    }
}

/// Whether an operator of the chain changes the transaction (`@geoLookup`
/// fills GEO): not a constant rule.
fn writes_state(rule: &CompiledRule) -> bool {
    let mut link = Some(rule);
    while let Some(l) = link {
        if l.operator.writes_state() {
            return true;
        }
        link = l.chain.as_deref();
    }
    false
}
