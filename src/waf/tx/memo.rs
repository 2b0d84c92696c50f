//! What the engine learns about each request and response value during a
//! transaction, kept so that no rule pays for it twice: the bytes a value
//! holds, its prefilter scan, and its transformed forms per chain.
//!
//! CRS runs a few transformation chains over the same values in rule after
//! rule; with this memo each (value, chain) pair is transformed and scanned
//! once, and a rule whose literals a value lacks costs one bit test.
//! Values are named by [`SlotId`] (their list and position), which stays
//! true while the data does not change; the transaction clears the memo
//! when it does.

use super::super::prefilter::{ByteSet, Hits, Slots, Transparency, hit, triggered_by};
use super::super::rule::{CompiledRule, RuleSet};
use super::super::seclang::ast::{Selector, VarSpec};
use super::super::transform::Transform;
use super::request::Pair;
use super::vars::ListRef;

/// A value that stays put for the transaction: a member of one of the
/// request or response lists (`group`, `index`) or a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId {
    pub group: u16,
    pub index: u32,
}

#[derive(Default)]
pub struct ValueMemo {
    groups: Vec<Vec<Slot>>,
    /// Per list group, what holds for all its values at once.
    summaries: Vec<Option<Summary>>,
    /// Per list group, then per transformation chain, what holds for all
    /// the chain's outputs at once (see [`ChainSummary`]).
    chain_summaries: Vec<Vec<ChainSummary>>,
    /// Per list group and chain, what the list's values can become (see
    /// [`ValueMemo::list_reach`]): `reach_at[group * chains + chain]` is
    /// one past its index in `reaches`, or 0 when not yet known.
    reach_at: Vec<u16>,
    reaches: Vec<ByteSet>,
    /// Per gate selection and target (see `RuleSet::gate_selections`,
    /// `RuleSet::gate_targets`), what the gate has learnt of it.
    selections: Vec<SelectionSummary>,
    targets: Vec<TargetSummary>,
    /// The unions of gate targets' outputs' scans, as learnt; target `id`'s
    /// is at `target_hit_at[id]` less one (0: not learnt). A transaction
    /// learns a few dozen of the hundreds, and neither sizing the index
    /// nor dropping the memo then walks them all.
    target_hits: Vec<Hits>,
    target_hit_at: Vec<u32>,
    /// Per read set (see `GateRecord::set`), the bytes its values
    /// may reach, once known.
    read_sets: Vec<Option<ByteSet>>,
}

/// Which transformations leave every value of a list or selection
/// unchanged but for case, learnt per transformation as rules ask.
#[derive(Debug, Default, Clone, Copy)]
pub struct StepsKnown {
    known: u64,
    transparent: u64,
}

impl StepsKnown {
    /// Which transformations of `mask` leave every value (their bytes
    /// together: `presence`) unchanged but for case. A transformation none
    /// of whose trigger bytes any value holds is settled by `presence`;
    /// `per_value(undecided)` answers for the others, value by value.
    pub fn of(&mut self, mask: u64, presence: &ByteSet, per_value: impl FnOnce(u64) -> u64) -> u64 {
        let unknown = mask & !self.known;
        if unknown != 0 {
            let mut transparent = unknown & !triggered_by(unknown, presence);
            let undecided = unknown & !transparent;
            if undecided != 0 {
                transparent |= per_value(undecided);
            }
            self.known |= unknown;
            self.transparent |= transparent;
        }
        mask & self.transparent
    }
}

/// What the rule gate knows of the values of one of its selections, all
/// together: their bytes; which transformations leave every one of them
/// unchanged but for case (so that a target whose chain is made of those
/// reads the values as they are); the union of their scans.
#[derive(Default)]
pub struct SelectionSummary {
    pub learnt: bool,
    /// The selection holds a value the memo does not keep (one made for
    /// the asking): the gate cannot judge it.
    pub unreadable: bool,
    pub presence: ByteSet,
    /// It selects no value at all (XML of a request without a body, a
    /// header the request lacks): every chain's output is nothing.
    pub empty: bool,
    pub steps: StepsKnown,
    pub hits: Option<Hits>,
}

/// What the rule gate (`tx::gate`) knows of one of its targets: learnt
/// in steps, each only when a rule's question needs it, so a target most
/// rules settle from its bytes is never transformed or scanned.
#[derive(Default)]
pub struct TargetSummary {
    pub learnt: Learnt,
    /// The chain leaves every value unchanged but for case: what holds
    /// for the values holds for the outputs.
    pub transparent: bool,
    /// The bytes the values may hold once through the chain, known from
    /// their own bytes without transforming them.
    pub reach: ByteSet,
    /// The bytes the chain's outputs hold (from `Learnt::Outputs` on).
    pub outputs: ByteSet,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Learnt {
    #[default]
    Nothing,
    /// It reads a value the memo does not keep (one made for the
    /// asking): the gate cannot judge it.
    Unreadable,
    Reach,
    Outputs,
}

/// The union of the bytes, and lazily of the scans, of every value of a
/// list after one transformation chain. Rules sharing a chain over a list
/// (CRS has a few chains and dozens of rules per chain) then pay one bit
/// test for the whole list instead of one per value, whatever the chain
/// does to the values.
struct ChainSummary {
    chain: u32,
    presence: ByteSet,
    hits: Option<Hits>,
}

/// What holds for every value of a list, learnt only as rules ask: the
/// union of their bytes; which transformations leave all of them unchanged
/// but for case; the union of their raw scans. A rule whose chain is made
/// of such transformations and whose literal no value holds skips the
/// whole list in one test. The byte union alone settles most rules (a
/// literal's rarest byte is in no value), so the scans are often never
/// needed, and a transformation none of whose trigger bytes any value
/// holds is transparent without looking at a value.
struct Summary {
    presence: ByteSet,
    steps: StepsKnown,
    hits: Option<Hits>,
}

#[derive(Default)]
pub struct Slot {
    presence: Option<ByteSet>,
    raw_hits: Option<Hits>,
    chains: Vec<ChainEntry>,
    /// Which transformations leave the value unchanged but for case.
    transparency: Transparency,
}

struct ChainEntry {
    chain: u32,
    /// `None`: the chain leaves the value unchanged.
    output: Option<Vec<u8>>,
    /// The output's bytes and scan, when it has one.
    presence: Option<ByteSet>,
    hits: Option<Hits>,
}

/// Bytes outside `prefilter::plain_bytes`.
pub(super) fn not_plain() -> &'static ByteSet {
    use std::sync::OnceLock;
    static SET: OnceLock<ByteSet> = OnceLock::new();
    SET.get_or_init(|| {
        let plain = super::super::prefilter::plain_bytes();
        let mut set = ByteSet::default();
        for b in 0..=255u8 {
            if !plain.contains(b) {
                set.insert(b);
            }
        }
        set
    })
}

/// What the prefilter says of a value the memo does not keep (an
/// intermediate step of a `multiMatch` chain without a literal test of
/// its own): the full scan, after the rarest-byte check.
pub fn admits_step(rules: &RuleSet, slots: Slots, value: &[u8]) -> bool {
    if !slots.is_some() {
        return true;
    }
    let mut scan = None;
    admits(rules, slots, &ByteSet::in_value(value), || {
        &**scan.get_or_insert_with(|| rules.prefilter.scan(value))
    })
}

/// Whether a value with bytes `presence` could hold what the operator with
/// `slots` needs. The byte check comes first: `hits` (the scan) is asked
/// for only when the value holds a byte every literal of the slot needs
/// one of.
#[inline]
fn admits<'h>(
    rules: &RuleSet,
    slots: Slots,
    presence: &ByteSet,
    hits: impl FnOnce() -> &'h [u64],
) -> bool {
    let prefilter = &rules.prefilter;
    let plain = slots.plain.filter(|_| !presence.intersects(not_plain()));
    let needed = [slots.any, plain];
    if needed
        .iter()
        .flatten()
        .any(|slot| !prefilter.may_hit(presence, *slot))
    {
        return false;
    }
    let hits = hits();
    needed.iter().flatten().all(|slot| hit(hits, *slot))
}

impl ValueMemo {
    pub fn clear(&mut self) {
        self.groups.clear();
        self.summaries.clear();
        self.chain_summaries.clear();
        self.reach_at.clear();
        self.reaches.clear();
        self.selections.clear();
        self.targets.clear();
        self.target_hits.clear();
        self.target_hit_at.clear();
        self.read_sets.clear();
    }

    /// Room for what the gate learns of `rules`' targets (once per
    /// transaction: the lookups below then only index).
    #[inline]
    pub fn size_gate(&mut self, rules: &RuleSet) {
        if self.targets.len() < rules.gate_targets.len() {
            self.targets
                .resize_with(rules.gate_targets.len(), TargetSummary::default);
            self.target_hit_at.resize(rules.gate_targets.len(), 0);
            self.selections
                .resize_with(rules.gate_selections.len(), SelectionSummary::default);
            self.read_sets.resize(rules.gate_read_set_count, None);
        }
    }

    /// What the gate knows of read set `id`.
    #[inline]
    pub fn read_set(&mut self, id: u32) -> Option<&mut Option<ByteSet>> {
        self.read_sets.get_mut(id as usize)
    }

    /// What the gate knows of selection `id`.
    #[inline]
    pub fn selection(&mut self, id: u32) -> Option<&mut SelectionSummary> {
        self.selections.get_mut(id as usize)
    }

    /// What the gate knows of target `id`.
    #[inline]
    pub fn target(&mut self, id: u32) -> Option<&mut TargetSummary> {
        self.targets.get_mut(id as usize)
    }

    /// The union of target `id`'s outputs' scans, once learnt.
    #[inline]
    pub fn target_hits(&self, id: u32) -> Option<&[u64]> {
        let at = (*self.target_hit_at.get(id as usize)? as usize).checked_sub(1)?;
        self.target_hits.get(at).map(|h| &**h)
    }

    /// Keeps `hits` as target `id`'s (a target out of range keeps none:
    /// its rules are then evaluated, never wrongly turned away).
    pub fn set_target_hits(&mut self, id: u32, hits: Hits) {
        let Ok(at) = u32::try_from(self.target_hits.len() + 1) else {
            return;
        };
        if let Some(slot) = self.target_hit_at.get_mut(id as usize) {
            *slot = at;
            self.target_hits.push(hits);
        }
    }

    /// The bytes the values of list `group` may hold after chain
    /// `chain_id` (`chain`), without transforming any (see
    /// [`chain_reach`]). Dozens of rules ask this of the same list and
    /// chain; it is worked out once.
    #[inline]
    pub fn list_reach(
        &mut self,
        of: ListRef<'_>,
        rules: &RuleSet,
        chain_id: u32,
        chain: &[Transform],
    ) -> ByteSet {
        let (_, group, _) = of;
        let at = usize::from(group) * rules.chain_masks.len() + chain_id as usize;
        match self.reach_at.get(at).and_then(|i| i.checked_sub(1)) {
            // (Always there; ALL, "anything", would only cost a skip.)
            Some(index) => self
                .reaches
                .get(usize::from(index))
                .copied()
                .unwrap_or(ByteSet::ALL),
            None => self.learn_reach(at, of, rules, chain_id, chain),
        }
    }

    /// [`Self::list_reach`] the first time: apart, so that the lookup
    /// stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn learn_reach(
        &mut self,
        at: usize,
        of: ListRef<'_>,
        rules: &RuleSet,
        chain_id: u32,
        chain: &[Transform],
    ) -> ByteSet {
        if self.reach_at.len() <= at {
            // Room for every chain of the group at once: the others follow.
            let chains = rules.chain_masks.len().max(1);
            self.reach_at.resize((at / chains + 1) * chains, 0);
        }
        let reach = rules.chain_reach(chain_id, chain, self.list_presence(of));
        if let Ok(index) = u16::try_from(self.reaches.len() + 1) {
            self.reaches.push(reach);
            self.reach_at[at] = index;
        }
        reach
    }

    /// [`Self::list_cannot_match`] for `rule`'s first link reading list
    /// `group` through target `spec`. Only whole lists are asked: a keyed
    /// target reads a value or two, which `judge` settles from their own
    /// scans for less than the whole list's would cost.
    pub fn rule_cannot_match_list(
        &mut self,
        rules: &RuleSet,
        rule: &CompiledRule,
        spec: &VarSpec,
        of: ListRef<'_>,
    ) -> bool {
        matches!(spec.selector, Selector::All)
            && self.list_cannot_match(of, rules, rule.chain_id, &rule.transforms, rule.prefilter)
    }

    /// True proves that no value of list `group` (`list`; its keys when
    /// `names`) can match an operator with prefilter `slots` after chain
    /// `chain_id` (`chain`): no value holds the operator's literals once
    /// transformed.
    fn list_cannot_match(
        &mut self,
        of: ListRef<'_>,
        rules: &RuleSet,
        chain_id: u32,
        chain: &[Transform],
        slots: Slots,
    ) -> bool {
        let Some(any) = slots
            .any
            .filter(|_| self.list_transparent(of, rules, chain_id))
        else {
            return self.outputs_cannot_match(of, rules, chain_id, chain, slots);
        };
        if !rules.prefilter.may_hit(&self.list_presence(of), any) {
            return true;
        }
        !hit(self.raw_hits(of, rules), any)
    }

    /// Whether chain `chain_id` leaves every value of list `group`
    /// unchanged but for ASCII case.
    fn list_transparent(&mut self, of: ListRef<'_>, rules: &RuleSet, chain_id: u32) -> bool {
        rules
            .chain_masks
            .get(chain_id as usize)
            .copied()
            .flatten()
            .is_some_and(|mask| self.list_transparent_steps(of, mask) == mask)
    }

    /// Which transformations of `mask` leave every value of list `group`
    /// unchanged but for ASCII case; learnt per transformation, once for
    /// the list, and from the union of its bytes where that settles it.
    pub fn list_transparent_steps(&mut self, of: ListRef<'_>, mask: u64) -> u64 {
        let (list, _, names) = of;
        let (summary, values) = self.summary(of);
        let presence = summary.presence;
        summary.steps.of(mask, &presence, |undecided| {
            list.iter()
                .zip(values.iter_mut())
                .fold(undecided, |all, (pair, slot)| {
                    let v = value(pair, names);
                    let presence = slot.presence(v);
                    all & slot.transparency.of(undecided, v, &presence)
                })
        })
    }

    /// The union of the raw scans of list `group`'s values.
    pub fn raw_hits(&mut self, of: ListRef<'_>, rules: &RuleSet) -> &[u64] {
        let (list, _, names) = of;
        let (summary, values) = self.summary(of);
        summary.hits.get_or_insert_with(|| {
            union_of_scans(rules, list, values, |pair, slot| {
                let v = value(pair, names);
                &**slot.raw_hits.get_or_insert_with(|| rules.prefilter.scan(v))
            })
        })
    }

    /// The bytes the values of list `group` hold once through chain
    /// `chain_id` (`chain`), all together.
    pub fn list_outputs(
        &mut self,
        of: ListRef<'_>,
        rules: &RuleSet,
        chain_id: u32,
        chain: &[Transform],
    ) -> ByteSet {
        if self.list_transparent(of, rules, chain_id) {
            return self.list_presence(of);
        }
        self.chain_summary(of, rules, chain_id, chain).0.presence
    }

    /// The union of the scans of those outputs.
    pub fn list_hits(
        &mut self,
        of: ListRef<'_>,
        rules: &RuleSet,
        chain_id: u32,
        chain: &[Transform],
    ) -> &[u64] {
        let (list, _, names) = of;
        if self.list_transparent(of, rules, chain_id) {
            return self.raw_hits(of, rules);
        }
        let (summary, values) = self.chain_summary(of, rules, chain_id, chain);
        summary.hits.get_or_insert_with(|| {
            union_of_scans(rules, list, values, |pair, slot| {
                slot.output_hits(value(pair, names), rules, chain_id, chain)
            })
        })
    }

    /// The bytes the values of list `group` hold, all together.
    #[inline]
    pub fn list_presence(&mut self, of: ListRef<'_>) -> ByteSet {
        let (_, group, _) = of;
        match self.summaries.get(usize::from(group)) {
            Some(Some(summary)) => summary.presence,
            _ => self.summary(of).0.presence,
        }
    }

    /// The summary of list `group`, made on first use, and its slots.
    fn summary(&mut self, of: ListRef<'_>) -> (&mut Summary, &mut [Slot]) {
        let (list, group, names) = of;
        let index = usize::from(group);
        if self.summaries.len() <= index {
            self.summaries.resize_with(index + 1, || None);
        }
        let values = grown(&mut self.groups, group, list.len());
        let summary = self.summaries[index].get_or_insert_with(|| Summary {
            presence: list
                .iter()
                .zip(values.iter_mut())
                .fold(ByteSet::default(), |all, (pair, slot)| {
                    all.union(slot.presence(value(pair, names)))
                }),
            steps: StepsKnown::default(),
            hits: None,
        });
        (summary, values)
    }

    /// True proves that no value of list `group` can match an operator
    /// with prefilter `slots` once chain `chain_id` (`chain`) has run over
    /// it: no output holds the operator's literals. Each value's output is
    /// the one its slot keeps for later rules, so nothing is transformed
    /// or scanned twice.
    fn outputs_cannot_match(
        &mut self,
        of: ListRef<'_>,
        rules: &RuleSet,
        chain_id: u32,
        chain: &[Transform],
        slots: Slots,
    ) -> bool {
        let (list, _, names) = of;
        let (summary, values) = self.chain_summary(of, rules, chain_id, chain);
        // The plain slot holds only for plain values: usable when every
        // output is plain.
        let plain = slots
            .plain
            .filter(|_| !summary.presence.intersects(not_plain()));
        let needed = [slots.any, plain];
        if needed.iter().flatten().next().is_none() {
            return false;
        }
        let prefilter = &rules.prefilter;
        if needed
            .iter()
            .flatten()
            .any(|slot| !prefilter.may_hit(&summary.presence, *slot))
        {
            return true;
        }
        let hits = summary.hits.get_or_insert_with(|| {
            union_of_scans(rules, list, values, |pair, slot| {
                slot.output_hits(value(pair, names), rules, chain_id, chain)
            })
        });
        needed.iter().flatten().any(|slot| !hit(hits, *slot))
    }

    /// What holds for the outputs of chain `chain_id` (`chain`) over the
    /// values of list `group`, made on first use, and the list's slots.
    fn chain_summary(
        &mut self,
        of: ListRef<'_>,
        rules: &RuleSet,
        chain_id: u32,
        chain: &[Transform],
    ) -> (&mut ChainSummary, &mut [Slot]) {
        let (list, group, names) = of;
        let values = grown(&mut self.groups, group, list.len());
        let index = usize::from(group);
        if self.chain_summaries.len() <= index {
            self.chain_summaries.resize_with(index + 1, Vec::new);
        }
        let summaries = &mut self.chain_summaries[index];
        let at = match summaries.iter().position(|s| s.chain == chain_id) {
            Some(at) => at,
            None => {
                let presence = list.iter().zip(values.iter_mut()).fold(
                    ByteSet::default(),
                    |all, (pair, slot)| {
                        all.union(slot.output_presence(value(pair, names), rules, chain_id, chain))
                    },
                );
                summaries.push(ChainSummary {
                    chain: chain_id,
                    presence,
                    hits: None,
                });
                summaries.len() - 1
            }
        };
        (&mut summaries[at], values)
    }

    /// The slots of list `group`, at least `len` of them.
    pub fn group(&mut self, group: u16, len: usize) -> &mut [Slot] {
        grown(&mut self.groups, group, len)
    }

    pub fn slot(&mut self, id: SlotId) -> &mut Slot {
        let index = id.index as usize;
        &mut self.group(id.group, index + 1)[index]
    }
}

/// The union of the scans `scan` gives for each value of `list`.
fn union_of_scans(
    rules: &RuleSet,
    list: &[Pair],
    values: &mut [Slot],
    mut scan: impl for<'s> FnMut(&Pair, &'s mut Slot) -> &'s [u64],
) -> Hits {
    let mut all = vec![0u64; rules.prefilter.slot_count().div_ceil(64)];
    for (pair, slot) in list.iter().zip(values.iter_mut()) {
        for (a, one) in all.iter_mut().zip(scan(pair, slot)) {
            *a |= one;
        }
    }
    all.into_boxed_slice()
}

/// The value a list member stands for: its key for the `_NAMES` lists.
fn value(pair: &Pair, names: bool) -> &[u8] {
    if names { &pair.0 } else { &pair.1 }
}

/// The slots of list `group` in `groups`, grown to at least `len`.
fn grown(groups: &mut Vec<Vec<Slot>>, group: u16, len: usize) -> &mut [Slot] {
    let group = usize::from(group);
    if groups.len() <= group {
        groups.resize_with(group + 1, Vec::new);
    }
    let list = &mut groups[group];
    if list.len() < len {
        list.resize_with(len, Slot::default);
    }
    list
}

impl Slot {
    /// For `multiMatch` rules, which test the value after every step of
    /// their chain: false proves no step's output can match. Known only
    /// when the chain cannot change the value (but for case); otherwise
    /// true.
    pub fn could_match_any_step(
        &mut self,
        value: &[u8],
        rules: &RuleSet,
        chain_id: u32,
        slots: Slots,
    ) -> bool {
        !self.transparent(value, rules, chain_id) || self.raw_admits(value, rules, slots)
    }

    /// Whether the operator with prefilter `slots`, after transformation
    /// chain `chain_id` (`chain`), could match this slot's `value`; false
    /// proves it cannot.
    #[inline]
    pub fn could_match(
        &mut self,
        value: &[u8],
        rules: &RuleSet,
        chain_id: u32,
        chain: &[Transform],
        slots: Slots,
    ) -> bool {
        if !self.transparent(value, rules, chain_id) {
            // Before transforming (a whole body, say): whether the chain can
            // produce a byte the literals need at all. Once transformed,
            // the output's own bytes say more.
            let transformed = self.chains.iter().any(|e| e.chain == chain_id);
            if !transformed
                && let Some(any) = slots.any
                && rules.chain_is_bounded(chain_id)
                && !rules.prefilter.may_hit(
                    &rules.chain_reach(chain_id, chain, self.presence(value)),
                    any,
                )
            {
                return false;
            }
            let at = self.entry_index(chain_id, chain, value);
            if let Some((others, entry)) = split_entry(&mut self.chains, at)
                && let Some(output) = &entry.output
            {
                let presence = *entry
                    .presence
                    .get_or_insert_with(|| ByteSet::in_value(output));
                let hits = &mut entry.hits;
                return admits(rules, slots, &presence, || {
                    &**hits.get_or_insert_with(|| scan_output(others, output, rules))
                });
            }
        }
        self.raw_admits(value, rules, slots)
    }

    /// `value` through `chain`; `None` when the chain leaves it unchanged.
    pub fn transformed(
        &mut self,
        value: &[u8],
        chain_id: u32,
        chain: &[Transform],
    ) -> Option<&[u8]> {
        self.entry(chain_id, chain, value).output.as_deref()
    }

    /// The bytes of the value after chain `chain_id`, as [`Self::could_match`]
    /// reads them.
    pub fn output_presence(
        &mut self,
        value: &[u8],
        rules: &RuleSet,
        chain_id: u32,
        chain: &[Transform],
    ) -> ByteSet {
        if !self.transparent(value, rules, chain_id) {
            let entry = self.entry(chain_id, chain, value);
            if let Some(output) = &entry.output {
                return *entry
                    .presence
                    .get_or_insert_with(|| ByteSet::in_value(output));
            }
        }
        self.presence(value)
    }

    /// The scan of the value after chain `chain_id`, as
    /// [`Self::could_match`] reads it.
    pub fn output_hits(
        &mut self,
        value: &[u8],
        rules: &RuleSet,
        chain_id: u32,
        chain: &[Transform],
    ) -> &[u64] {
        if !self.transparent(value, rules, chain_id) {
            let at = self.entry_index(chain_id, chain, value);
            if let Some((others, entry)) = split_entry(&mut self.chains, at)
                && let Some(output) = &entry.output
            {
                return entry
                    .hits
                    .get_or_insert_with(|| scan_output(others, output, rules));
            }
        }
        self.raw_hits
            .get_or_insert_with(|| rules.prefilter.scan(value))
    }

    /// Which transformations of `mask` leave the value unchanged but for
    /// ASCII case, as a mask (learnt once per value and transformation).
    #[inline]
    pub fn transparent_steps(&mut self, value: &[u8], mask: u64) -> u64 {
        // Known already (every rule after the first asks the same): the
        // value's bytes are not needed.
        if let Some(known) = self.transparency.known(mask) {
            return known;
        }
        let presence = self.presence(value);
        self.transparency.of(mask, value, &presence)
    }

    /// The prefilter scan of the value itself.
    pub fn raw_scan(&mut self, value: &[u8], rules: &RuleSet) -> &[u64] {
        self.raw_hits
            .get_or_insert_with(|| rules.prefilter.scan(value))
    }

    pub fn presence(&mut self, value: &[u8]) -> ByteSet {
        *self
            .presence
            .get_or_insert_with(|| ByteSet::in_value(value))
    }

    /// What the prefilter says of the value itself (no transformation).
    #[inline]
    pub fn raw_admits(&mut self, value: &[u8], rules: &RuleSet, slots: Slots) -> bool {
        let presence = self.presence(value);
        let hits = &mut self.raw_hits;
        admits(rules, slots, &presence, || {
            &**hits.get_or_insert_with(|| rules.prefilter.scan(value))
        })
    }

    /// Whether chain `chain_id` leaves the value unchanged but for ASCII
    /// case: every transformation of it does, which is known per value
    /// from its bytes (and, for a few, one exact look) without
    /// transforming.
    #[inline]
    fn transparent(&mut self, value: &[u8], rules: &RuleSet, chain_id: u32) -> bool {
        let Some(chain) = rules.chain_masks.get(chain_id as usize).copied().flatten() else {
            return false;
        };
        let presence = self.presence(value);
        self.transparency.chain(chain, value, &presence)
    }

    fn entry(&mut self, chain_id: u32, chain: &[Transform], value: &[u8]) -> &mut ChainEntry {
        let at = self.entry_index(chain_id, chain, value);
        &mut self.chains[at]
    }

    fn entry_index(&mut self, chain_id: u32, chain: &[Transform], value: &[u8]) -> usize {
        match self.chains.iter().position(|e| e.chain == chain_id) {
            Some(at) => at,
            None => {
                self.chains.push(ChainEntry {
                    chain: chain_id,
                    output: apply_chain(chain, value),
                    presence: None,
                    hits: None,
                });
                self.chains.len() - 1
            }
        }
    }
}

/// Entry `at` of `chains` (in range: it comes from `entry_index`), and
/// the entries before and after it.
fn split_entry(chains: &mut [ChainEntry], at: usize) -> Option<(Others<'_>, &mut ChainEntry)> {
    let (before, rest) = chains.split_at_mut(at);
    let (entry, after) = rest.split_first_mut()?;
    Some((Others(before, after), entry))
}

/// The entries of a slot other than the one being scanned.
struct Others<'a>(&'a [ChainEntry], &'a [ChainEntry]);

/// The prefilter scan of a chain's `output`. Different chains often leave
/// a value alike (`blue+shoes` becomes `blue shoes` under every chain that
/// URL-decodes and finds nothing else to do): an output another chain of
/// the same value already scanned takes that scan.
fn scan_output(others: Others<'_>, output: &[u8], rules: &RuleSet) -> Hits {
    others
        .0
        .iter()
        .chain(others.1)
        .find(|e| e.hits.is_some() && e.output.as_deref() == Some(output))
        .and_then(|e| e.hits.clone())
        .unwrap_or_else(|| rules.prefilter.scan(output))
}

/// `value` through every transformation of `chain`; `None` if unchanged.
pub fn apply_chain(chain: &[Transform], value: &[u8]) -> Option<Vec<u8>> {
    let mut current: Option<Vec<u8>> = None;
    for t in chain {
        if let Some(next) = t.apply(current.as_deref().unwrap_or(value)) {
            current = Some(next);
        }
    }
    current.filter(|out| out.as_slice() != value)
}
