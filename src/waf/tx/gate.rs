//! The rule gate: whether a rule can be turned away before it is
//! evaluated, from what the memo knows of the values it reads.
//!
//! On a benign request most CRS rules read values none of which holds
//! their literals; evaluation (`Transaction::evaluate`) would find that
//! out too, one list at a time, but only after setting up a match (its
//! buffers, its exclusions, the visitor). The gate asks the same
//! questions of the memo first, so a rule that cannot match costs a few
//! bit tests. It only ever
//! says "cannot match" when evaluation would say so; anything it cannot
//! settle cheaply is left to evaluation.

use std::borrow::Cow;

use super::Transaction;
use super::memo::{Slot, SlotId};
use super::vars::{self, group};
use crate::waf::rule::{CompiledRule, RuleSet};
use crate::waf::seclang::ast::{Selector, Var, VarSpec};

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
        && (rule.prefilter.is_some() || rule.needs.is_some())
        && targets.peek().is_some()
        && targets.all(|spec| !spec.count && reads_request_or_response(spec.var))
}

fn reads_request_or_response(var: Var) -> bool {
    !super::COLLECTIONS.contains(&var)
        && !matches!(
            var,
            Var::MatchedVar | Var::MatchedVarName | Var::MatchedVars | Var::MatchedVarsNames
        )
}

impl Transaction {
    /// True proves that `rule` (its first link, so its chain too) cannot
    /// match in this transaction as it stands: no value it reads could
    /// hold what its operator needs once transformed. False settles
    /// nothing.
    pub(super) fn cannot_match(&self, rule: &CompiledRule) -> bool {
        if !rule.gated {
            return false;
        }
        rule.variables
            .iter()
            .filter(|v| !v.exclude)
            .all(|spec| self.target_cannot_match(rule, spec))
    }

    fn target_cannot_match(&self, rule: &CompiledRule, spec: &VarSpec) -> bool {
        let rules = &*self.rules;
        let mut memo = self.memo.borrow_mut();
        let bounded = rules.chain_is_bounded(rule.chain_id);
        if let Some(lists) = self.lists(spec.var) {
            return lists.into_iter().flatten().all(|(list, group, names)| {
                if let Some(needs) = &rule.needs
                    && bounded
                    && !memo
                        .list_reach(group, list, names, rules, rule.chain_id, &rule.transforms)
                        .intersects(needs)
                {
                    return true;
                }
                if rule.prefilter.is_some()
                    && memo.rule_cannot_match_list(rules, rule, spec, group, list, names)
                {
                    return true;
                }
                // A keyed target reads a value or two: those alone.
                !matches!(spec.selector, Selector::All)
                    && memo
                        .group(group, list.len())
                        .iter_mut()
                        .zip(list)
                        .filter(|(_, (k, _))| vars::accepts(&spec.selector, k))
                        .all(|(slot, (k, v))| {
                            value_cannot_match(rules, rule, slot, if names { k } else { v })
                        })
            });
        }
        if vars::holds_nothing(spec.var) {
            return true;
        }
        match self.scalar(spec.var) {
            None => true,
            Some(Cow::Borrowed(value)) => {
                let slot = memo.slot(SlotId {
                    group: group::SCALARS,
                    index: spec.var as u32,
                });
                value_cannot_match(rules, rule, slot, value)
            }
            // Made for the asking (a count, the time): not kept by the memo.
            Some(Cow::Owned(_)) => false,
        }
    }
}

/// True proves the rule's first link cannot match `value`, the value the
/// memo keeps in `slot`.
fn value_cannot_match(rules: &RuleSet, rule: &CompiledRule, slot: &mut Slot, value: &[u8]) -> bool {
    // A prefiltered rule's needed bytes are its literals' (see
    // `rule::assign_slots`), which `could_match` tests itself, and only
    // while the value is not yet transformed.
    if !rule.prefilter.is_some() {
        return rule.needs.as_ref().is_some_and(|needs| {
            rules.chain_is_bounded(rule.chain_id)
                && !rules
                    .chain_reach(rule.chain_id, &rule.transforms, slot.presence(value))
                    .intersects(needs)
        });
    }
    !slot.could_match(
        value,
        rules,
        rule.chain_id,
        &rule.transforms,
        rule.prefilter,
    )
}
