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

use super::super::prefilter::{ByteSet, Hits, hit};
use super::super::rule::RuleSet;
use super::super::transform::Transform;

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
}

#[derive(Default)]
struct Slot {
    presence: Option<ByteSet>,
    raw_hits: Option<Hits>,
    chains: Vec<ChainEntry>,
}

struct ChainEntry {
    chain: u32,
    /// `None`: the chain leaves the value unchanged.
    output: Option<Vec<u8>>,
    hits: Option<Hits>,
}

impl ValueMemo {
    pub fn clear(&mut self) {
        self.groups.clear();
    }

    fn slot(&mut self, id: SlotId) -> &mut Slot {
        let group = usize::from(id.group);
        if self.groups.len() <= group {
            self.groups.resize_with(group + 1, Vec::new);
        }
        let list = &mut self.groups[group];
        let index = id.index as usize;
        if list.len() <= index {
            list.resize_with(index + 1, Slot::default);
        }
        &mut list[index]
    }

    /// Whether the operator in prefilter slot `slot`, after transformation
    /// chain `chain_id` (`chain`), could match `value`; false proves it
    /// cannot.
    pub fn could_match(
        &mut self,
        id: SlotId,
        value: &[u8],
        rules: &RuleSet,
        chain_id: u32,
        chain: &[Transform],
        slot: u32,
    ) -> bool {
        let memo = self.slot(id);
        let presence = *memo.presence.get_or_insert_with(|| ByteSet::of(value));
        let transparent = rules
            .chain_triggers
            .get(chain_id as usize)
            .copied()
            .flatten()
            .is_some_and(|triggers| !presence.intersects(&triggers));
        if !transparent {
            let entry = memo.entry(chain_id, chain, value);
            if let Some(output) = &entry.output {
                let hits = entry
                    .hits
                    .get_or_insert_with(|| rules.prefilter.scan(output));
                return hit(hits, slot);
            }
        }
        let hits = memo
            .raw_hits
            .get_or_insert_with(|| rules.prefilter.scan(value));
        hit(hits, slot)
    }

    /// `value` through `chain`; `None` when the chain leaves it unchanged.
    pub fn transformed(
        &mut self,
        id: SlotId,
        value: &[u8],
        chain_id: u32,
        chain: &[Transform],
    ) -> Option<&[u8]> {
        self.slot(id)
            .entry(chain_id, chain, value)
            .output
            .as_deref()
    }
}

impl Slot {
    fn entry(&mut self, chain_id: u32, chain: &[Transform], value: &[u8]) -> &mut ChainEntry {
        let at = match self.chains.iter().position(|e| e.chain == chain_id) {
            Some(at) => at,
            None => {
                self.chains.push(ChainEntry {
                    chain: chain_id,
                    output: apply_chain(chain, value),
                    hits: None,
                });
                self.chains.len() - 1
            }
        };
        &mut self.chains[at]
    }
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
