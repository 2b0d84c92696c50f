//! `multiMatch`: the operator tested on the value and on the output of
//! every transformation that changes it.
//!
//! Most steps of CRS's long `multiMatch` chains leave most values alone
//! (`urlDecodeUni` on text without `%` or `+`), and the memo already knows
//! which (see `Transparency`), so those steps cost a bit test, not a
//! search. A step that does change the value is followed by the byte
//! classes of its output (`StepClasses`), which settle the next steps the
//! same way and say whether the rule's literals may be in it; an output
//! that may hold them goes through the rule's own literal test before the
//! operator. Outputs are written into two buffers kept per thread, not
//! allocated per step.

use super::memo::{self, Slot};
use super::test_value;
use crate::waf::operator::Captures;
use crate::waf::prefilter::{StepClasses, StepGate, transform_bit};
use crate::waf::rule::{CompiledRule, RuleSet};
use crate::waf::transform::Transform;

/// Whether `rule`'s operator matches `value` (the memo keeps it in
/// `slot`) or any output its transformation chain makes of it on the way.
/// Captures are those of the first output that matched.
pub(super) fn each_step(
    rule: &CompiledRule,
    rules: &RuleSet,
    slot: &mut Slot,
    value: &[u8],
    param: &[u8],
    mut caps: Option<&mut Captures>,
) -> bool {
    let slots = rule.prefilter;
    if (!slots.is_some() || slot.raw_admits(value, rules, slots))
        && rule.operator.matches(value, param, caps.as_deref_mut())
    {
        return true;
    }
    // Given to every `multiMatch` link of an optimised rule set; without
    // them, the plain walk.
    let Some(classes) = rule.step_classes.as_deref() else {
        return test_value(rule, value, param, caps, &mut |_| true);
    };
    let steps = rules
        .step_masks
        .get(rule.chain_id as usize)
        .copied()
        .unwrap_or(0);
    let unchanged_raw = slot.transparent_steps(value, steps);
    // Every step idle on the value (most of CRS's `detectSQLi` chain on
    // plain text): no output, no buffers.
    let idle = |t: &Transform| !t.changes_case() && unchanged_raw & transform_bit(*t) != 0;
    if rule.transforms.iter().all(idle) {
        return false;
    }
    let link = Link {
        rule,
        rules,
        gate: rule.step_gate.as_deref(),
        classes,
        param,
        unchanged_raw,
    };
    STEP_BUFFERS.with(|buffers| match buffers.try_borrow_mut() {
        Ok(mut buffers) => {
            let (current, scratch) = &mut *buffers;
            let matched = link.walk(value, caps, current, scratch);
            // A huge value's buffers are not kept for the thread's life.
            for buffer in [current, scratch] {
                if buffer.capacity() > KEPT_BUFFER {
                    *buffer = Vec::new();
                }
            }
            matched
        }
        // Never nested; should it be, fresh buffers.
        Err(_) => link.walk(value, caps, &mut Vec::new(), &mut Vec::new()),
    })
}

/// The largest step buffer a thread keeps between values.
const KEPT_BUFFER: usize = 64 * 1024;

thread_local! {
    static STEP_BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// A `multiMatch` link as [`each_step`] walks it past the value itself.
struct Link<'a> {
    rule: &'a CompiledRule,
    rules: &'a RuleSet,
    gate: Option<&'a StepGate>,
    classes: &'a StepClasses,
    param: &'a [u8],
    /// The steps the memo proves leave the value itself unchanged.
    unchanged_raw: u64,
}

impl Link<'_> {
    /// The steps past `value`, each output written to `current` by way of
    /// `scratch`.
    fn walk(
        &self,
        value: &[u8],
        mut caps: Option<&mut Captures>,
        current: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
    ) -> bool {
        // The classes of `current`, once a step has written an output to it.
        let mut held: Option<u16> = None;
        for (j, &t) in self.rule.transforms.iter().enumerate() {
            let changed = match held {
                None => {
                    if !t.changes_case() && self.unchanged_raw & transform_bit(t) != 0 {
                        continue;
                    }
                    t.apply_into(value, scratch)
                }
                Some(held) => {
                    if !self.classes.may_change(j, held) {
                        continue;
                    }
                    t.apply_into(current, scratch)
                }
            };
            if !changed {
                continue;
            }
            std::mem::swap(current, scratch);
            let now = self.classes.of(current);
            held = Some(now);
            if self.admits(now, current)
                && self
                    .rule
                    .operator
                    .matches(current, self.param, caps.as_deref_mut())
            {
                return true;
            }
        }
        false
    }

    /// False proves the operator cannot match `output`, whose classes are
    /// `held`: from the link's own literal test, else from the prefilter.
    fn admits(&self, held: u16, output: &[u8]) -> bool {
        match self.gate {
            Some(gate) => gate.admits_classed(held, output),
            None => memo::admits_step(self.rules, self.rule.prefilter, output),
        }
    }
}
