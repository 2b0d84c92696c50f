//! `multiMatch`: the operator tested on the value and on the output of
//! every transformation that changes it.
//!
//! Most steps of CRS's long `multiMatch` chains leave most values alone
//! (`urlDecodeUni` on text without `%` or `+`), and the memo already knows
//! which (see `Transparency`), so those steps cost a bit test, not a
//! search. A step that does change the value is followed by the bytes of
//! its output, which settle the next steps the same way. Each new output
//! goes through the rule's own literal test before the operator.

use super::memo::{self, Slot};
use crate::waf::operator::Captures;
use crate::waf::prefilter::{ByteSet, StepClasses, StepGate, transform_bit, triggers_of};
use crate::waf::rule::{CompiledRule, RuleSet};

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
    let gate = rule.step_gate.as_ref();
    if (!slots.is_some() || slot.raw_admits(value, rules, slots))
        && rule.operator.matches(value, param, caps.as_deref_mut())
    {
        return true;
    }
    let steps = rules
        .step_masks
        .get(rule.chain_id as usize)
        .copied()
        .unwrap_or(0);
    let unchanged_raw = slot.transparent_steps(value, steps);
    if let Some(gate) = gate
        && let Some(classes) = gate.classes()
    {
        return classed_steps(rule, gate, classes, unchanged_raw, value, param, caps);
    }
    let mut current: Option<Vec<u8>> = None;
    let mut presence: Option<ByteSet> = None;
    for &t in rule.transforms.iter() {
        let next = match &current {
            None => {
                if !t.changes_case() && unchanged_raw & transform_bit(t) != 0 {
                    continue;
                }
                t.apply(value)
            }
            Some(out) => {
                if !t.changes_case()
                    && let Some(triggers) = triggers_of(t)
                    && !presence
                        .get_or_insert_with(|| ByteSet::in_value(out))
                        .intersects(&triggers)
                {
                    continue;
                }
                t.apply(out)
            }
        };
        let Some(next) = next else { continue };
        let bytes = *presence.insert(ByteSet::in_value(&next));
        let output = current.insert(next);
        if memo::admits_step(rules, slots, gate, output, &bytes)
            && rule.operator.matches(output, param, caps.as_deref_mut())
        {
            return true;
        }
    }
    false
}

/// [`each_step`] past the value itself, for a link whose step gate knows
/// its chain's byte classes: each output is read once, for the classes of
/// its bytes, which say both which of the next steps may change it and
/// whether the operator's literals may be in it. Outputs are written into
/// two buffers kept per thread, not allocated per step.
fn classed_steps(
    rule: &CompiledRule,
    gate: &StepGate,
    classes: &StepClasses,
    unchanged_raw: u64,
    value: &[u8],
    param: &[u8],
    caps: Option<&mut Captures>,
) -> bool {
    let link = Link {
        rule,
        gate,
        classes,
        param,
    };
    STEP_BUFFERS.with(|buffers| match buffers.try_borrow_mut() {
        Ok(mut buffers) => {
            let (current, scratch) = &mut *buffers;
            let matched = link.walk(unchanged_raw, value, caps, current, scratch);
            // A huge value's buffers are not kept for the thread's life.
            for buffer in [current, scratch] {
                if buffer.capacity() > KEPT_BUFFER {
                    *buffer = Vec::new();
                }
            }
            matched
        }
        // Never nested; should it be, fresh buffers.
        Err(_) => link.walk(unchanged_raw, value, caps, &mut Vec::new(), &mut Vec::new()),
    })
}

/// The largest step buffer a thread keeps between values.
const KEPT_BUFFER: usize = 64 * 1024;

thread_local! {
    static STEP_BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// A `multiMatch` link with byte classes, as [`classed_steps`] walks it.
struct Link<'a> {
    rule: &'a CompiledRule,
    gate: &'a StepGate,
    classes: &'a StepClasses,
    param: &'a [u8],
}

impl Link<'_> {
    /// The steps past `value` (those `unchanged_raw` proves idle on it
    /// skipped), each output written to `current` by way of `scratch`.
    fn walk(
        &self,
        unchanged_raw: u64,
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
                    if !t.changes_case() && unchanged_raw & transform_bit(t) != 0 {
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
            if self.gate.admits_classed(now, current)
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
}
