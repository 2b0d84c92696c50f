//! The rule gate: whether a rule can be turned away before it is
//! evaluated, from what the memo knows of the values it reads.
//!
//! On a benign request most CRS rules read values none of which holds
//! their literals; evaluation (`Transaction::evaluate`) would find that
//! out too, one list at a time, but only after setting up a match (its
//! buffers, its exclusions, the visitor). The gate asks the same
//! questions first, of what load made shared (`rule::GateTarget`):
//!
//! - a *selection* (a variable and a selector) knows its values' bytes,
//!   which transformations leave all of them alone, their scans;
//! - a *target* (a selection through one chain) knows the bytes its values
//!   may reach, then its outputs' bytes, then their scans, each learnt
//!   when a rule first needs it; a chain that leaves every value alone
//!   takes its selection's;
//! - a *read set* (the targets of a family of rules, such as CRS's XSS
//!   rules) knows the bytes all its values may reach, so that a rule
//!   needing none of them costs one test.
//!
//! Each rule then pays a few bit tests per target, against its own
//! literals. The gate only ever says "cannot match" when evaluation would
//! say so; anything it cannot settle cheaply is left to evaluation, which
//! skips the targets the gate did settle.

use std::borrow::Cow;

use super::Transaction;
use super::memo::{
    Learnt, SelectionSummary, SlotId, StepsKnown, TargetSummary, ValueMemo, not_plain,
};
use super::vars::{self, ListRef, group};
use crate::waf::prefilter::{ByteSet, Hits, Slots, hit};
use crate::waf::rule::{CompiledRule, GateRecord, GateSelection, GateTarget, RuleSet, may_reach};
use crate::waf::seclang::ast::{Selector, Var};

/// Whether a rule may go through the gate at all: it is set at load (see
/// `rule::assign_slots`) for rules whose first link has a prefilter or
/// needed bytes, tests each value once (no `multiMatch`), is not negated
/// (a negated operator matches values without its literals) and reads
/// only request and response data (not TX, nor the matched variables,
/// which change from rule to rule).
pub fn admits_gate(rule: &CompiledRule) -> bool {
    let mut targets = rule.variables.iter().filter(|v| !v.exclude).peekable();
    !rule.negated
        && !rule.multi_match
        && (rule.prefilter.is_some() || !rule.needs.is_empty())
        && targets.peek().is_some()
        && targets.all(|spec| !spec.count && reads_request_or_response(spec.var))
}

fn reads_request_or_response(var: Var) -> bool {
    !super::is_collection(var)
        && !matches!(
            var,
            Var::MatchedVar | Var::MatchedVarName | Var::MatchedVars | Var::MatchedVarsNames
        )
}

/// What the gate says of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The rule (its first link, so its chain too) cannot match.
    Shut,
    /// It may: evaluation decides. Bit `i` set proves the rule's `i`-th
    /// target (exclusions not counted) cannot match, so evaluation need
    /// not read it.
    Open(u64),
}

/// A part of what a target reads: a whole list, or one value the memo
/// keeps.
enum Part<'a> {
    List(ListRef<'a>),
    Value(SlotId, &'a [u8]),
}

impl Transaction {
    /// The gate's verdict, in this transaction as it stands, on the rule
    /// whose record (`RuleSet::gate_records`) is `record`.
    pub(super) fn gate(&self, record: Option<&GateRecord>) -> Gate {
        let Some(rule) = record.filter(|r| r.gated) else {
            return Gate::Open(0);
        };
        let rules = &*self.rules;
        let (needs, reads) = (rules.gate_needs(rule), rules.gate_reads(rule));
        let mut memo = self.memo.borrow_mut();
        memo.size_gate(rules);
        // Rules with the same targets (CRS has families of them) share
        // what their values may reach: a rule needing none of those bytes
        // is turned away in one test.
        if !needs.is_empty()
            && !may_reach(
                needs,
                &self.read_set_reach(&mut memo, rules, rule.set, reads),
            )
        {
            return Gate::Shut;
        }
        let mut settled = 0u64;
        let mut open = false;
        for (i, &id) in reads.iter().enumerate() {
            if self.target_cannot_match(&mut memo, rules, needs, rule.prefilter, id) {
                settled |= 1u64.checked_shl(i as u32).unwrap_or(0);
            } else {
                open = true;
            }
        }
        if open {
            Gate::Open(settled)
        } else {
            Gate::Shut
        }
    }

    /// The bytes the values of all of `rule`'s targets may hold once
    /// through its chain.
    fn read_set_reach(
        &self,
        memo: &mut ValueMemo,
        rules: &RuleSet,
        set: u32,
        reads: &[u32],
    ) -> ByteSet {
        if let Some(Some(reach)) = memo.read_set(set) {
            return *reach;
        }
        let reach = reads.iter().fold(ByteSet::EMPTY, |all, &id| {
            all.union(
                self.target(memo, rules, id)
                    .map_or(ByteSet::ALL, |t| t.reach),
            )
        });
        if let Some(known) = memo.read_set(set) {
            *known = Some(reach);
        }
        reach
    }

    /// True proves `rule`'s first link cannot match a value of gate
    /// target `id`: from what its chain can make of the values' bytes,
    /// then from its outputs' bytes, then from their scans, each learnt
    /// once, when a rule first needs it.
    fn target_cannot_match(
        &self,
        memo: &mut ValueMemo,
        rules: &RuleSet,
        needs: &[ByteSet],
        prefilter: Slots,
        id: u32,
    ) -> bool {
        let Some(summary) = self.target(memo, rules, id) else {
            return false;
        };
        if !may_reach(needs, &summary.reach) {
            return true;
        }
        if !prefilter.is_some() {
            return false;
        }
        if summary.learnt == Learnt::Reach {
            self.learn_outputs(memo, rules, id);
        }
        let Some(summary) = memo.target(id) else {
            return false;
        };
        let needed = match needed_slots(rules, prefilter, &summary.outputs) {
            Needed::Untestable => return false,
            Needed::Proved => return true,
            Needed::Scan(needed) => needed,
        };
        if memo.target_hits(id).is_none() {
            self.learn_hits(memo, rules, id);
        }
        let Some(hits) = memo.target_hits(id) else {
            return false;
        };
        needed.iter().flatten().any(|slot| !hit(hits, *slot))
    }

    /// Gate target `id` as the gate knows it, with at least the bytes
    /// its values may reach; `None` when the gate cannot judge it.
    fn target<'m>(
        &self,
        memo: &'m mut ValueMemo,
        rules: &RuleSet,
        id: u32,
    ) -> Option<&'m mut TargetSummary> {
        if memo.target(id)?.learnt == Learnt::Nothing {
            self.learn_reach(memo, rules, id);
        }
        memo.target(id).filter(|t| t.learnt != Learnt::Unreadable)
    }

    /// Learns what target `id`'s values may reach: their bytes (known per
    /// selection), as they are when the chain leaves each unchanged but
    /// for case, else as far as the chain can take them.
    #[cold]
    fn learn_reach(&self, memo: &mut ValueMemo, rules: &RuleSet, id: u32) {
        let Some((target, selection)) = rules.gate_target(id) else {
            return;
        };
        let known = self.selection_summary(memo, target.selection, selection);
        let empty = memo.selection(target.selection).is_some_and(|s| s.empty);
        let learnt = match known {
            None => TargetSummary {
                learnt: Learnt::Unreadable,
                ..TargetSummary::default()
            },
            // No value, so no output, whatever the chain.
            Some(_) if empty => TargetSummary {
                learnt: Learnt::Outputs,
                transparent: true,
                reach: ByteSet::EMPTY,
                outputs: ByteSet::EMPTY,
            },
            Some(presence) => match self.chain_transparent(memo, rules, target, selection) {
                true => TargetSummary {
                    learnt: Learnt::Outputs,
                    transparent: true,
                    reach: presence.case_closed(),
                    outputs: presence,
                },
                false => TargetSummary {
                    learnt: Learnt::Reach,
                    transparent: false,
                    // All bytes, for a chain that may output any.
                    reach: rules.chain_reach(target.chain_id, &target.transforms, presence),
                    outputs: ByteSet::ALL,
                },
            },
        };
        if let Some(summary) = memo.target(id) {
            *summary = learnt;
        }
    }

    /// Learns the bytes of target `id`'s outputs, transforming the values
    /// its chain changes (each once per transaction, in the memo).
    #[cold]
    fn learn_outputs(&self, memo: &mut ValueMemo, rules: &RuleSet, id: u32) {
        let Some((target, selection)) = rules.gate_target(id) else {
            return;
        };
        let (chain_id, chain) = (target.chain_id, &*target.transforms);
        let mut outputs = ByteSet::EMPTY;
        self.each_part(selection, &mut |part| {
            outputs = outputs.union(match part {
                Part::List(list) => memo.list_outputs(list, rules, chain_id, chain),
                Part::Value(id, value) => {
                    memo.slot(id).output_presence(value, rules, chain_id, chain)
                }
            });
        });
        if let Some(summary) = memo.target(id) {
            summary.outputs = outputs;
            summary.learnt = Learnt::Outputs;
        }
    }

    /// Learns the union of the scans of target `id`'s outputs (for a
    /// chain that changes nothing, its selection's, shared).
    #[cold]
    fn learn_hits(&self, memo: &mut ValueMemo, rules: &RuleSet, id: u32) {
        let Some((target, selection)) = rules.gate_target(id) else {
            return;
        };
        let transparent = memo.target(id).is_some_and(|t| t.transparent);
        let shared = transparent
            .then(|| {
                memo.selection(target.selection)
                    .and_then(|s| s.hits.clone())
            })
            .flatten();
        let hits = shared.unwrap_or_else(|| {
            let (chain_id, chain) = (target.chain_id, &*target.transforms);
            let mut all = vec![0u64; rules.prefilter.slot_count().div_ceil(64)];
            self.each_part(selection, &mut |part| {
                let one = match part {
                    Part::List(list) if transparent => memo.raw_hits(list, rules),
                    Part::Value(id, value) if transparent => memo.slot(id).raw_scan(value, rules),
                    Part::List(list) => memo.list_hits(list, rules, chain_id, chain),
                    Part::Value(id, value) => {
                        memo.slot(id).output_hits(value, rules, chain_id, chain)
                    }
                };
                for (a, b) in all.iter_mut().zip(one) {
                    *a |= b;
                }
            });
            let hits: Hits = all.into_boxed_slice();
            if transparent && let Some(summary) = memo.selection(target.selection) {
                summary.hits = Some(hits.clone());
            }
            hits
        });
        memo.set_target_hits(id, hits);
    }

    /// The bytes of selection `id`'s values, learnt once; `None` when the
    /// gate cannot judge the selection.
    fn selection_summary(
        &self,
        memo: &mut ValueMemo,
        id: u32,
        selection: &GateSelection,
    ) -> Option<ByteSet> {
        if !memo.selection(id)?.learnt {
            let mut presence = ByteSet::EMPTY;
            let mut empty = true;
            let readable = self.each_part(selection, &mut |part| {
                presence = presence.union(match part {
                    Part::List(list) => {
                        empty &= list.0.is_empty();
                        memo.list_presence(list)
                    }
                    Part::Value(id, value) => {
                        empty = false;
                        memo.slot(id).presence(value)
                    }
                });
            });
            *memo.selection(id)? = SelectionSummary {
                learnt: true,
                unreadable: !readable,
                presence,
                empty,
                steps: StepsKnown::default(),
                hits: None,
            };
        }
        memo.selection(id)
            .filter(|s| !s.unreadable)
            .map(|s| s.presence)
    }

    /// Whether `target`'s chain leaves every value of its selection
    /// unchanged but for case, learnt per transformation once per
    /// selection (from the selection's bytes where they settle it).
    fn chain_transparent(
        &self,
        memo: &mut ValueMemo,
        rules: &RuleSet,
        target: &GateTarget,
        selection: &GateSelection,
    ) -> bool {
        let Some(mask) = rules
            .chain_masks
            .get(target.chain_id as usize)
            .copied()
            .flatten()
        else {
            return false;
        };
        let Some(summary) = memo.selection(target.selection) else {
            return false;
        };
        // Copied out: the values are asked through the memo that keeps it.
        let (mut steps, presence) = (summary.steps, summary.presence);
        let transparent = steps.of(mask, &presence, |undecided| {
            let mut all = undecided;
            self.each_part(selection, &mut |part| {
                all &= match part {
                    Part::List(list) => memo.list_transparent_steps(list, undecided),
                    Part::Value(id, value) => memo.slot(id).transparent_steps(value, undecided),
                };
            });
            all
        });
        if let Some(summary) = memo.selection(target.selection) {
            summary.steps = steps;
        }
        transparent == mask
    }

    /// Calls `f` with each part of what `selection` reads: whole lists, or
    /// the values its selector picks; false when it reads a value the
    /// memo does not keep.
    fn each_part(&self, selection: &GateSelection, f: &mut dyn FnMut(Part<'_>)) -> bool {
        if let Some(lists) = self.lists(selection.var) {
            for (list, group, names) in lists.into_iter().flatten() {
                if matches!(selection.selector, Selector::All) {
                    f(Part::List((list, group, names)));
                    continue;
                }
                for (index, (k, v)) in list.iter().enumerate() {
                    if vars::accepts(&selection.selector, k) {
                        let id = SlotId {
                            group,
                            index: index as u32,
                        };
                        f(Part::Value(id, if names { k } else { v }));
                    }
                }
            }
            return true;
        }
        if vars::holds_nothing(selection.var) {
            return true;
        }
        match self.scalar(selection.var) {
            None => true,
            Some(Cow::Borrowed(value)) => {
                let id = SlotId {
                    group: group::SCALARS,
                    index: selection.var as u32,
                };
                f(Part::Value(id, value));
                true
            }
            // Made for the asking (a count, the time): not kept by the memo.
            Some(Cow::Owned(_)) => false,
        }
    }
}

/// What the bytes of a target's values say of an operator's prefilter
/// slots (see [`needed_slots`]).
enum Needed {
    /// The operator has no slot that holds for these values.
    Untestable,
    /// The bytes alone prove it cannot match.
    Proved,
    /// It cannot match unless the scans hit these slots.
    Scan([Option<u32>; 2]),
}

fn needed_slots(rules: &RuleSet, slots: Slots, presence: &ByteSet) -> Needed {
    // The plain slot holds only for plain values: usable when every
    // value is plain.
    let plain = slots.plain.filter(|_| !presence.intersects(not_plain()));
    let needed = [slots.any, plain];
    if needed.iter().flatten().next().is_none() {
        return Needed::Untestable;
    }
    if needed
        .iter()
        .flatten()
        .any(|slot| !rules.prefilter.may_hit(presence, *slot))
    {
        return Needed::Proved;
    }
    Needed::Scan(needed)
}
