//! Rules compiled for evaluation: operators built, transformation chains
//! resolved (with `SecDefaultAction` merged in), actions parsed into what
//! the engine does with them, and rules sorted into their phases with the
//! markers `skipAfter` jumps to.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::fold;
use super::macros::Template;
use super::operator::Operator;
use super::prefilter::{
    ByteSet, Prefilter, PrefilterBuilder, Slots, StepClasses, StepGate, chain_mask,
};
use super::seclang::ast::{Action, Item, Origin, RuleAst, Selector, Var, VarSpec};
use super::seclang::parse::{Diag, severity_level};
use super::seclang::{EngineSettings, RuleSource};
use super::transform::{self, Transform};
use super::tx::request::RequestData;
use super::tx::{Transaction, VarMap};

/// What stops (or settles) a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disruptive {
    Pass,
    Deny,
    Drop,
    Redirect(Template),
    /// `allow`: the rest of the transaction (`None`), this phase, or the
    /// request phases.
    Allow(AllowScope),
    /// `block`: whatever the phase's default action says.
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowScope {
    All,
    Phase,
    Request,
}

#[derive(Debug, Clone)]
pub enum SetVar {
    Set {
        collection: Var,
        name: Template,
        value: Template,
    },
    Add {
        collection: Var,
        name: Template,
        value: Template,
    },
    Sub {
        collection: Var,
        name: Template,
        value: Template,
    },
    Delete {
        collection: Var,
        name: Template,
    },
}

#[derive(Debug, Clone)]
pub struct Ctl {
    pub option: String,
    pub value: Template,
}

#[derive(Debug)]
// Declared in this order, the fields evaluation reads of a rule the gate
// let through come first, most within a cache line or two: a rule is
// over half a kilobyte, and the compiler's own order left them lines
// apart. The gate itself reads none of a rule (see `GateRecord`).
#[repr(C)]
pub struct CompiledRule {
    /// The test is known at load to pass in every transaction (see
    /// `fold`): evaluation takes it as passed. Only for rules without a
    /// chain.
    pub always_passes: bool,
    pub negated: bool,
    pub multi_match: bool,
    pub capture: bool,
    /// Rules with equal transformation chains share this number (the key
    /// of the per-transaction transformation cache).
    pub chain_id: u32,
    /// This rule's bits in the prefilter's scan results, when its operator
    /// needs one of a set of literals (see `prefilter`).
    pub prefilter: Slots,
    /// Byte sets the operator's input must hold a member of, each of them,
    /// for this link to match: the bytes its literals need (see
    /// `Operator::needed_bytes`, `Prefilter::may_hit`), then those every
    /// match of its regex passes through (see
    /// `literals::required_byte_sets`). Set with the prefilter, never on a
    /// negated operator.
    pub needs: Box<[ByteSet]>,
    pub variables: Vec<VarSpec>,
    /// The parameter's text when it has no macros (most rules).
    pub param_static: Option<Vec<u8>>,
    pub transforms: Vec<Transform>,
    pub chain: Option<Box<CompiledRule>>,
    pub set_vars: Vec<SetVar>,
    /// For a `multiMatch` link, what the bytes of a step's output say of
    /// the next steps and of its literals (see `StepClasses`).
    pub step_classes: Option<Box<StepClasses>>,
    /// For a `multiMatch` link with literals, its own literal test for
    /// the outputs its chain's steps make (see `StepGate`).
    pub step_gate: Option<Box<StepGate>>,
    pub operator: Operator,
    pub id: u64,
    pub phase: u8,
    pub origin: Origin,
    /// The operator's parameter, for operators that expand macros.
    pub param: Template,
    pub disruptive: Option<Disruptive>,
    /// The default disruptive action of the phase (what `block` means).
    pub default_disruptive: Disruptive,
    pub status: Option<u16>,
    pub ctls: Vec<Ctl>,
    pub set_env: Vec<(String, Template)>,
    /// `initcol:ip=%{remote_addr}`: a persistent collection and its key.
    pub init_cols: Vec<(Var, Template)>,
    /// `expirevar:ip.blocked=60`: variable (collection, name) and seconds.
    pub expire_vars: Vec<(Var, Template, Template)>,
    pub skip: u32,
    pub skip_after: Option<String>,
    pub log: bool,
    pub msg: Option<Template>,
    pub logdata: Option<Template>,
    pub severity: Option<u8>,
    pub tags: Vec<String>,
    /// Whether the rule gate may turn this rule away before evaluation
    /// (see `tx::gate`); set with the prefilter. What the gate reads of
    /// it is in `RuleSet::gate_records`.
    pub gated: bool,
}

impl CompiledRule {
    /// Whether values that may hold the bytes `reach` may hold what the
    /// operator needs: a member of each of its needed sets.
    pub fn may_reach_needs(&self, reach: &ByteSet) -> bool {
        may_reach(&self.needs, reach)
    }
}

/// Whether `reach` holds a member of each of `needs` (see
/// `CompiledRule::needs`).
#[inline]
pub fn may_reach(needs: &[ByteSet], reach: &ByteSet) -> bool {
    needs.iter().all(|set| reach.intersects(set))
}

/// One step of a phase: a rule or a marker.
#[derive(Debug, Clone)]
pub enum Step {
    Rule(Arc<CompiledRule>),
    Marker(Arc<str>),
}

/// What the rule gate (`tx::gate`) reads of a gated rule, kept per phase
/// apart from the rules: the gate looks at every rule of a phase in turn
/// and turns most away, and three dense arrays read in order (these
/// records, the needs, the targets) cost far fewer cache misses than a
/// walk through each rule's own memory and its two boxes.
#[derive(Debug, Clone, Copy, Default)]
pub struct GateRecord {
    pub gated: bool,
    /// The number rules with the same targets share (below
    /// `RuleSet::gate_read_set_count`).
    pub set: u32,
    pub prefilter: Slots,
    /// Ranges in `RuleSet::gate_needs` (`CompiledRule::needs`) and
    /// `RuleSet::gate_read_ids` (the targets the rule reads, its entries
    /// but the exclusions, in order, as indexes into
    /// `RuleSet::gate_targets`).
    needs: (u32, u32),
    reads: (u32, u32),
}

/// A compiled rule set: settings and, per phase 1–5, its steps in order.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub settings: EngineSettings,
    pub phases: [Vec<Step>; 5],
    pub rule_count: usize,
    pub prefilter: Prefilter,
    /// Per chain number, its transformations as a mask (see
    /// `prefilter::chain_mask`).
    pub chain_masks: Vec<Option<u64>>,
    /// Per chain number, its transformations that have triggers, as a
    /// mask (see `prefilter::steps_with_triggers`).
    pub step_masks: Vec<u64>,
    /// Per chain number, the bytes that may make one of its
    /// transformations act (see `prefilter::chain_triggers`).
    pub chain_triggers: Vec<Option<ByteSet>>,
    /// The transformations any chain uses.
    pub used_transforms: u64,
    /// Every target a gated rule reads, once (see `tx::gate`).
    pub gate_targets: Vec<GateTarget>,
    /// What those targets select, once.
    pub gate_selections: Vec<GateSelection>,
    /// How many different lists of targets gated rules read.
    pub gate_read_set_count: usize,
    /// Per phase, one per step, the gate's copy of the step's rule.
    pub gate_records: [Vec<GateRecord>; 5],
    /// The records' needs (`CompiledRule::needs`), one after another.
    gate_needs: Vec<ByteSet>,
    /// The records' targets, the same.
    gate_read_ids: Vec<u32>,
    /// TX as the rules folded at load leave it (see `fold`): where every
    /// transaction starts.
    pub initial_tx: VarMap,
    /// Rules evaluated at load (and rules they skip), gone from `phases`.
    pub folded_rules: usize,
    /// Compiled with the optimisations on (see `compile_with`).
    pub optimised: bool,
}

impl RuleSet {
    /// Compiles loaded rules; every error is returned with its rule's
    /// file and line.
    pub fn compile(source: RuleSource) -> Result<RuleSet, Vec<Diag>> {
        RuleSet::compile_with(source, true)
    }

    /// `compile`, with its optimisations off when `optimise` is false:
    /// no prefilter (every operator runs on every value) and no folding
    /// (every rule runs in every transaction; see `fold`). The verdicts
    /// must not differ (both only skip what cannot change them); this is
    /// how that is checked.
    pub fn compile_with(source: RuleSource, optimise: bool) -> Result<RuleSet, Vec<Diag>> {
        let mut phases: [Vec<Step>; 5] = Default::default();
        let mut errors = Vec::new();
        let mut rule_count = 0;
        let mut chains: HashMap<Vec<Transform>, u32> = HashMap::new();
        for item in source.items {
            match item {
                Item::Marker { name, .. } => {
                    let name: Arc<str> = Arc::from(name.as_str());
                    for phase in &mut phases {
                        phase.push(Step::Marker(Arc::clone(&name)));
                    }
                }
                Item::Rule(ast) => match compile_rule(&ast, None) {
                    Ok(mut rule) => {
                        number_chains(&mut rule, &mut chains);
                        rule_count += 1;
                        let phase = usize::from(rule.phase) - 1;
                        phases[phase].push(Step::Rule(Arc::new(rule)));
                    }
                    Err(message) => errors.push(Diag {
                        origin: ast.origin.clone(),
                        message,
                    }),
                },
            }
        }
        let mut chain_masks = vec![None; chains.len()];
        let mut chain_triggers = vec![None; chains.len()];
        let mut step_masks = vec![0; chains.len()];
        let mut used_transforms = 0;
        for (chain, id) in &chains {
            chain_masks[*id as usize] = chain_mask(chain);
            chain_triggers[*id as usize] = super::prefilter::chain_triggers(chain);
            step_masks[*id as usize] = super::prefilter::steps_with_triggers(chain);
            used_transforms |= chain_mask(chain).unwrap_or(0);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let rules = RuleSet {
            settings: source.settings,
            phases,
            rule_count,
            prefilter: PrefilterBuilder::default().build(),
            chain_masks,
            step_masks,
            chain_triggers,
            used_transforms,
            gate_targets: Vec::new(),
            gate_selections: Vec::new(),
            gate_read_set_count: 0,
            gate_records: Default::default(),
            gate_needs: Vec::new(),
            gate_read_ids: Vec::new(),
            initial_tx: VarMap::default(),
            folded_rules: 0,
            optimised: optimise,
        };
        Ok(if optimise {
            rules.folded().prefiltered()
        } else {
            rules
        })
    }

    /// The bytes chain `chain_id` (`chain`) may output for input bytes
    /// `input` (see `prefilter::chain_reach`). Input holding none of the
    /// bytes that make the chain act, as most header names and values
    /// hold none, reaches only itself: no fold over the chain.
    pub fn chain_reach(&self, chain_id: u32, chain: &[Transform], input: ByteSet) -> ByteSet {
        let closed = input.case_closed();
        match self.chain_triggers.get(chain_id as usize) {
            Some(Some(triggers)) if !closed.intersects(triggers) => closed,
            _ => super::prefilter::chain_reach(chain, input),
        }
    }

    /// Whether chain `chain_id` keeps its output within reach of its
    /// input's bytes (see `prefilter::chain_reach`): no transformation of
    /// it may output any byte.
    pub fn chain_is_bounded(&self, chain_id: u32) -> bool {
        self.chain_masks
            .get(chain_id as usize)
            .is_some_and(Option::is_some)
    }

    /// Gate target `id` and what it selects.
    pub fn gate_target(&self, id: u32) -> Option<(&GateTarget, &GateSelection)> {
        let target = self.gate_targets.get(id as usize)?;
        Some((target, self.gate_selections.get(target.selection as usize)?))
    }

    /// This rule set with its constant rules evaluated (see `fold`).
    fn folded(self) -> RuleSet {
        let rules = Arc::new(self);
        let dummy = Transaction::new(Arc::clone(&rules), RequestData::default(), String::new());
        let folded = fold::fold(&rules.phases, dummy);
        // Nothing else holds it now (the transaction is gone), so this
        // does not copy.
        let mut rules = Arc::unwrap_or_clone(rules);
        rules.phases = folded.phases;
        // The unfolded phases are gone, so each rule is held once here.
        for (phase, at) in folded.always_pass {
            if let Some(Step::Rule(rule)) = rules.phases.get_mut(phase).and_then(|p| p.get_mut(at))
                && let Some(rule) = Arc::get_mut(rule)
            {
                rule.always_passes = true;
            }
        }
        rules.initial_tx = folded.tx;
        // Each transaction's TX is a clone of this, capacity and all:
        // room for the variables requests add (CRS's 920450 adds one per
        // header) spares most transactions a rehash of the whole map.
        rules.initial_tx.reserve(TX_ROOM);
        rules.folded_rules = folded.folded + folded.dropped;
        rules
    }

    /// Gives the rules left after folding their prefilter slots and gate
    /// targets. Done after folding, so that the literals of the rules it
    /// dropped (CRS's paranoia levels above the one set) stay out of the
    /// automaton every value is scanned with, and out of the gate.
    fn prefiltered(mut self) -> RuleSet {
        let mut prefilter = PrefilterBuilder::default();
        let mut gate_targets = GateTargets::default();
        let mut records: [Vec<GateRecord>; 5] = Default::default();
        for (steps, records) in self.phases.iter_mut().zip(records.iter_mut()) {
            for step in steps.iter_mut() {
                let mut record = GateRecord::default();
                // Held once each here (see `folded`); a rule held
                // elsewhere would only go without the prefilter, which is
                // never wrong.
                if let Step::Rule(rule) = step
                    && let Some(rule) = Arc::get_mut(rule)
                {
                    assign_slots(rule, &mut prefilter);
                    if rule.gated {
                        let reads = gate_targets.of(rule);
                        let set = gate_targets.read_set(&reads);
                        let needs = append(&mut self.gate_needs, &rule.needs);
                        let reads = append(&mut self.gate_read_ids, &reads);
                        // Past 4 G entries: not gated, never wrong.
                        if let (Some(needs), Some(reads)) = (needs, reads) {
                            record = GateRecord {
                                gated: true,
                                set,
                                prefilter: rule.prefilter,
                                needs,
                                reads,
                            };
                        }
                    }
                }
                records.push(record);
            }
        }
        self.prefilter = prefilter.build();
        self.gate_targets = gate_targets.targets;
        self.gate_selections = gate_targets.selections;
        self.gate_read_set_count = gate_targets.read_set_numbers.len();
        self.gate_records = records;
        self
    }

    /// `CompiledRule::needs` of the rule behind `record`.
    #[inline]
    pub fn gate_needs(&self, record: &GateRecord) -> &[ByteSet] {
        self.gate_needs
            .get(record.needs.0 as usize..record.needs.1 as usize)
            .unwrap_or_default()
    }

    /// The targets the rule behind `record` reads (see `GateRecord`).
    #[inline]
    pub fn gate_reads(&self, record: &GateRecord) -> &[u32] {
        self.gate_read_ids
            .get(record.reads.0 as usize..record.reads.1 as usize)
            .unwrap_or_default()
    }
}

/// Appends `items` to `pool`; their range in it.
fn append<T: Copy>(pool: &mut Vec<T>, items: &[T]) -> Option<(u32, u32)> {
    let start = u32::try_from(pool.len()).ok()?;
    pool.extend_from_slice(items);
    Some((start, u32::try_from(pool.len()).ok()?))
}

/// Variables a transaction may add to TX before its map grows.
const TX_ROOM: usize = 48;

/// Gives every rule of a chain the number of its transformation chain.
fn number_chains(rule: &mut CompiledRule, chains: &mut HashMap<Vec<Transform>, u32>) {
    let next = chains.len() as u32;
    rule.chain_id = *chains.entry(rule.transforms.clone()).or_insert(next);
    if let Some(link) = rule.chain.as_deref_mut() {
        number_chains(link, chains);
    }
}

/// What the rule gate reads (see `tx::gate`): the values of a
/// [`GateSelection`] through one transformation chain. Every rule with
/// the same entry and chain shares the one target, and with it what the
/// gate learns of it in a transaction.
#[derive(Debug, Clone)]
pub struct GateTarget {
    /// Its index in `RuleSet::gate_selections`.
    pub selection: u32,
    pub chain_id: u32,
    pub transforms: Vec<Transform>,
}

/// One variable's members, those a selector picks: what targets with
/// the same entry but different chains share (most chains leave most
/// values as they are).
#[derive(Debug, Clone)]
pub struct GateSelection {
    pub var: Var,
    pub selector: Selector,
}

/// Gives gate targets and selections their numbers while rules compile.
#[derive(Default)]
struct GateTargets {
    selection_numbers: HashMap<(Var, u8, String), u32>,
    selections: Vec<GateSelection>,
    numbers: HashMap<(u32, u32), u32>,
    targets: Vec<GateTarget>,
    read_set_numbers: HashMap<Box<[u32]>, u32>,
}

impl GateTargets {
    /// The numbers of `rule`'s targets, exclusions left out.
    fn of(&mut self, rule: &CompiledRule) -> Box<[u32]> {
        rule.variables
            .iter()
            .filter(|spec| !spec.exclude)
            .map(|spec| {
                let selection = self.selection(spec);
                let next = self.targets.len() as u32;
                let number = *self
                    .numbers
                    .entry((selection, rule.chain_id))
                    .or_insert(next);
                if number == next {
                    self.targets.push(GateTarget {
                        selection,
                        chain_id: rule.chain_id,
                        transforms: rule.transforms.clone(),
                    });
                }
                number
            })
            .collect()
    }

    /// The number of the read set `reads`.
    fn read_set(&mut self, reads: &[u32]) -> u32 {
        let next = self.read_set_numbers.len() as u32;
        *self.read_set_numbers.entry(reads.into()).or_insert(next)
    }

    fn selection(&mut self, spec: &VarSpec) -> u32 {
        // Names are compared without case (`vars::accepts`).
        let (kind, text) = match &spec.selector {
            Selector::All => (0, String::new()),
            Selector::Key(k) => (1, k.to_ascii_lowercase()),
            Selector::Regex(re) => (2, re.pattern.clone()),
            Selector::XPath(x) => (3, x.clone()),
        };
        let next = self.selections.len() as u32;
        let number = *self
            .selection_numbers
            .entry((spec.var, kind, text))
            .or_insert(next);
        if number == next {
            self.selections.push(GateSelection {
                var: spec.var,
                selector: spec.selector.clone(),
            });
        }
        number
    }
}

/// Gives every link whose operator needs literals its prefilter slots.
fn assign_slots(rule: &mut CompiledRule, prefilter: &mut PrefilterBuilder) {
    rule.prefilter = prefilter.add(&rule.operator);
    if rule.multi_match && rule.prefilter.any.is_some() {
        rule.step_gate = StepGate::new(&rule.operator).map(Box::new);
    }
    if rule.multi_match {
        let required = rule.step_gate.as_deref().map(StepGate::required);
        rule.step_classes = Some(Box::new(StepClasses::new(required, &rule.transforms)));
    }
    rule.needs = if rule.negated {
        Box::default()
    } else {
        let needed = match rule.prefilter.any {
            Some(slot) => prefilter.required(slot),
            None => rule.operator.needed_bytes(),
        };
        let required = match &rule.operator {
            Operator::Rx(re) | Operator::RxGlobal(re) => {
                crate::waf::prefilter::literals::required_byte_sets(re.as_str())
            }
            _ => Vec::new(),
        };
        needed.into_iter().chain(required).collect()
    };
    rule.gated = crate::waf::tx::admits_gate(rule);
    if let Some(link) = rule.chain.as_deref_mut() {
        assign_slots(link, prefilter);
    }
}

/// `spec`, with the name it picks from a collection lower-cased as the
/// collection keeps its names: read by name in most CRS rules
/// (`TX:DETECTION_PARANOIA_LEVEL`), it is then looked up as it is.
fn lowered_collection_key(spec: &VarSpec) -> VarSpec {
    let mut spec = spec.clone();
    if crate::waf::tx::is_collection(spec.var)
        && let Selector::Key(name) = &mut spec.selector
    {
        name.make_ascii_lowercase();
    }
    spec
}

fn values<'a>(actions: &'a [Action], name: &'a str) -> impl Iterator<Item = &'a str> {
    actions
        .iter()
        .filter(move |a| a.name == name)
        .filter_map(|a| a.value.as_deref())
}

fn compile_rule(ast: &RuleAst, head: Option<(u64, u8)>) -> Result<CompiledRule, String> {
    let base = ast.origin.file.parent().unwrap_or(Path::new(""));
    let operator = match &ast.operator.compiled.0 {
        Some(op) => Operator::clone(op),
        None => Operator::compile(&ast.operator.name, &ast.operator.param, base)?,
    };
    let (id, phase) = match head {
        Some(h) => h,
        None => (ast.id().unwrap_or(0), ast.phase().unwrap_or(2)),
    };
    // Defaults first, then the rule's own actions; `t:none` resets the
    // chain built so far (the default's transformations included).
    let all: Vec<&Action> = if head.is_none() {
        ast.defaults.iter().chain(ast.actions.iter()).collect()
    } else {
        ast.actions.iter().collect()
    };
    let mut transforms = Vec::new();
    for a in all.iter().filter(|a| a.name == "t") {
        let name = a.value.as_deref().unwrap_or("");
        if name.eq_ignore_ascii_case("none") {
            transforms.clear();
        } else if let Some(t) = transform::by_name(name) {
            transforms.push(t);
        }
    }
    let own = &ast.actions;
    let disruptive_of = |actions: &[Action]| -> Option<Disruptive> {
        actions.iter().rev().find_map(|a| {
            Some(match a.name.as_str() {
                "pass" => Disruptive::Pass,
                "deny" => Disruptive::Deny,
                "drop" => Disruptive::Drop,
                "block" => Disruptive::Block,
                "redirect" => {
                    Disruptive::Redirect(Template::parse(a.value.as_deref().unwrap_or("")))
                }
                "allow" => Disruptive::Allow(match a.value.as_deref() {
                    Some("phase") => AllowScope::Phase,
                    Some("request") => AllowScope::Request,
                    _ => AllowScope::All,
                }),
                _ => return None,
            })
        })
    };
    let default_disruptive = disruptive_of(&ast.defaults).unwrap_or(Disruptive::Pass);
    let disruptive = disruptive_of(own);
    let mut set_vars = Vec::new();
    for value in values(own, "setvar") {
        set_vars.push(parse_setvar(value)?);
    }
    let ctls = values(own, "ctl")
        .map(|v| {
            let (option, value) = v.split_once('=').unwrap_or((v, ""));
            Ctl {
                option: option.trim().to_string(),
                value: Template::parse(value.trim()),
            }
        })
        .collect();
    let set_env = values(own, "setenv")
        .map(|v| {
            let (k, val) = v.split_once('=').unwrap_or((v, "1"));
            (k.trim().to_string(), Template::parse(val))
        })
        .collect();
    let mut init_cols = Vec::new();
    for value in values(own, "initcol") {
        let (collection, key) = value.split_once('=').unwrap_or((value, ""));
        init_cols.push((persistent(collection, value)?, Template::parse(key.trim())));
    }
    let mut expire_vars = Vec::new();
    for value in values(own, "expirevar") {
        let (target, secs) = value.split_once('=').unwrap_or((value, "0"));
        let Some((collection, name)) = target.split_once('.') else {
            return Err(format!(
                "expirevar {value:?}: expected collection.name=seconds"
            ));
        };
        expire_vars.push((
            persistent(collection, value)?,
            Template::parse(name),
            Template::parse(secs),
        ));
    }
    let flag = |name: &str| all.iter().any(|a| a.name == name);
    let log = all
        .iter()
        .rev()
        .find(|a| a.name == "log" || a.name == "nolog")
        .is_none_or(|a| a.name != "nolog");
    let chain = match ast.chain.first() {
        None => None,
        Some(first) => {
            // A chain is a list in the source; evaluation links each rule
            // to the next.
            let mut link = RuleAst {
                chain: ast.chain[1..].to_vec(),
                ..first.clone()
            };
            link.defaults = Vec::new();
            Some(Box::new(compile_rule(&link, Some((id, phase)))?))
        }
    };
    Ok(CompiledRule {
        id,
        phase,
        origin: ast.origin.clone(),
        variables: ast.variables.iter().map(lowered_collection_key).collect(),
        operator,
        negated: ast.operator.negated,
        param: Template::parse(&ast.operator.param),
        param_static: Some(Template::parse(&ast.operator.param))
            .filter(Template::is_static)
            .map(|t| t.static_text()),
        chain_id: 0,
        prefilter: Slots::default(),
        needs: Box::default(),
        step_gate: None,
        step_classes: None,
        gated: false,
        always_passes: false,
        transforms,
        multi_match: flag("multiMatch"),
        capture: own.iter().any(|a| a.name == "capture"),
        disruptive,
        default_disruptive,
        status: all
            .iter()
            .rev()
            .find(|a| a.name == "status")
            .and_then(|a| a.value.as_deref())
            .and_then(|s| s.parse().ok()),
        set_vars,
        ctls,
        set_env,
        init_cols,
        expire_vars,
        skip: values(own, "skip")
            .last()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        skip_after: values(own, "skipAfter").last().map(str::to_string),
        log,
        msg: values(own, "msg").last().map(Template::parse),
        logdata: values(own, "logdata").last().map(Template::parse),
        severity: values(own, "severity").last().and_then(severity_level),
        tags: values(own, "tag").map(str::to_string).collect(),
        chain,
    })
}

/// A collection `initcol` and `expirevar` can name.
fn persistent(name: &str, action: &str) -> Result<Var, String> {
    match Var::from_name(name.trim()) {
        Some(v @ (Var::Ip | Var::Global | Var::Session | Var::User | Var::Resource)) => Ok(v),
        _ => Err(format!(
            "{action:?}: {name} is not a persistent collection (IP, GLOBAL, SESSION, USER, RESOURCE)"
        )),
    }
}

/// `tx.score=+%{tx.critical_anomaly_score}`, `!tx.x`, `ip.hits=1`.
fn parse_setvar(text: &str) -> Result<SetVar, String> {
    let (target, value) = match text.split_once('=') {
        Some((t, v)) => (t.trim(), Some(v)),
        None => (text.trim(), None),
    };
    let (delete, target) = match target.strip_prefix('!') {
        Some(t) => (true, t),
        None => (false, target),
    };
    let Some((collection, name)) = target.split_once('.') else {
        return Err(format!("setvar {text:?}: expected collection.name"));
    };
    let collection = match Var::from_name(collection) {
        Some(
            v @ (Var::Tx
            | Var::Ip
            | Var::Global
            | Var::Session
            | Var::User
            | Var::Resource
            | Var::Env),
        ) => v,
        _ => {
            return Err(format!(
                "setvar {text:?}: {collection} is not a collection setvar can write"
            ));
        }
    };
    let name = Template::parse(name);
    if delete {
        return Ok(SetVar::Delete { collection, name });
    }
    let value = value.unwrap_or("1");
    Ok(match value.as_bytes().first() {
        Some(b'+') => SetVar::Add {
            collection,
            name,
            value: Template::parse(&value[1..]),
        },
        Some(b'-') => SetVar::Sub {
            collection,
            name,
            value: Template::parse(&value[1..]),
        },
        _ => SetVar::Set {
            collection,
            name,
            value: Template::parse(value),
        },
    })
}
