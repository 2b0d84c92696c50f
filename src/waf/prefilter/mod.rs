//! The prefilter: which rules could possibly match a value, answered for
//! all rules at once, so the engine runs an operator only on the values
//! that carry what the operator needs.
//!
//! Most CRS operators require a literal: `@pm` needs one of its phrases, and
//! nearly every `@rx` pattern needs one of a small set of strings (found by
//! [`literals::necessary_literals`]). Each such rule gets a *slot*; one
//! Aho-Corasick automaton over every rule's literals (compared without
//! ASCII case) scans a value once and sets the slot bit of every rule whose
//! literal it found. A clear bit proves the operator cannot match.
//!
//! Rules test transformed values, and the prefilter must see what the
//! operator would see. Transforming every value through every chain is what
//! the prefilter exists to avoid, so each transformation names the bytes
//! without which it leaves a value unchanged but for ASCII case (a value
//! without `%` or `+` is its own `urlDecodeUni`); [`Transparency`]
//! works out, per value, which transformations leave it so, and a
//! chain made of those only is scanned on the raw value, once for all such
//! chains. Only the rest are transformed first.

pub mod literals;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::{Anchored, MatchKind, dfa, nfa};

use super::operator::Operator;
use super::transform::Transform;

/// A set of bytes, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    pub const ALL: ByteSet = ByteSet([u64::MAX; 4]);
    pub const EMPTY: ByteSet = ByteSet([0; 4]);

    // `const` so that the transformations' trigger table is built at
    // compile time (see `BY_BIT`).
    pub const fn of(bytes: &[u8]) -> ByteSet {
        // Four sets, each filled from every fourth byte, joined at the end:
        // an insert waits for the last one into the same set (text keeps
        // hitting the same word of it), and four chains wait a quarter as
        // long as one.
        let mut sets = [[0u64; 4]; 4];
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            sets[i % 4][(b >> 6) as usize] |= 1 << (b & 63);
            i += 1;
        }
        let mut set = ByteSet::EMPTY;
        let mut k = 0;
        while k < 4 {
            set.0[k] = sets[0][k] | sets[1][k] | sets[2][k] | sets[3][k];
            k += 1;
        }
        set
    }

    /// The bytes `value` holds, as `of` finds them; a long value is
    /// marked in a table first, one store per byte with none waiting on
    /// another, and the table folded into the set.
    #[inline]
    pub fn in_value(value: &[u8]) -> ByteSet {
        if value.len() < TABLE_FROM {
            return ByteSet::of(value);
        }
        // A mark is the byte's top bit, which is what `movemask` gathers.
        let mut seen = [0u8; 256];
        for &b in value {
            seen[usize::from(b)] = 0x80;
        }
        fold_marks(&seen)
    }

    pub const fn range(from: u8, to: u8) -> ByteSet {
        let mut set = ByteSet::EMPTY;
        let mut b = from;
        loop {
            set.insert(b);
            if b >= to {
                return set;
            }
            b += 1;
        }
    }

    #[inline]
    pub const fn insert(&mut self, b: u8) {
        self.0[(b >> 6) as usize] |= 1 << (b & 63);
    }

    pub fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    pub const fn union(self, other: ByteSet) -> ByteSet {
        let mut out = self;
        let mut i = 0;
        while i < 4 {
            out.0[i] |= other.0[i];
            i += 1;
        }
        out
    }

    /// How many bytes the set holds.
    pub fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// The set with every ASCII letter in both cases.
    pub fn case_closed(self) -> ByteSet {
        // Bits 65..=90 (A-Z) and 97..=122 (a-z) sit in word 1, 32 apart.
        const UPPER: u64 = 0x07ff_fffe;
        let mut out = self;
        let letters = (self.0[1] | (self.0[1] >> 32)) & UPPER;
        out.0[1] |= letters | (letters << 32);
        out
    }

    #[inline]
    pub fn intersects(&self, other: &ByteSet) -> bool {
        (self.0[0] & other.0[0])
            | (self.0[1] & other.0[1])
            | (self.0[2] & other.0[2])
            | (self.0[3] & other.0[3])
            != 0
    }
}

/// From this length on, `ByteSet::in_value` marks a table rather than
/// setting bits: the table's fixed cost is then paid back.
const TABLE_FROM: usize = 24;

/// The set of the bytes marked (0x80) in `seen`, sixteen marks at a time.
#[cfg(target_arch = "x86_64")]
fn fold_marks(seen: &[u8; 256]) -> ByteSet {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_movemask_epi8};
    let mut set = ByteSet::EMPTY;
    for (w, word) in set.0.iter_mut().enumerate() {
        for q in 0..4 {
            let at = w * 64 + q * 16;
            // SAFETY: SSE2 is part of every x86_64 CPU, and the sixteen
            // bytes read, `at..at + 16`, lie within the 256 of `seen`.
            let marks = unsafe {
                _mm_movemask_epi8(_mm_loadu_si128(seen.as_ptr().add(at).cast::<__m128i>()))
            };
            *word |= u64::from(marks as u16) << (16 * q);
        }
    }
    set
}

#[cfg(not(target_arch = "x86_64"))]
use fold_marks_by_multiplying as fold_marks;

/// The set of the bytes marked (0x80) in `seen`, eight marks at a time:
/// `fold_marks` where there is no `movemask`.
#[cfg(any(not(target_arch = "x86_64"), test))]
fn fold_marks_by_multiplying(seen: &[u8; 256]) -> ByteSet {
    let mut set = ByteSet::EMPTY;
    for (word, marks) in set.0.iter_mut().zip(seen.chunks_exact(64)) {
        for (k, eight) in marks.chunks_exact(8).enumerate() {
            let mut group = [0u8; 8];
            group.copy_from_slice(eight);
            // Eight marks, now 0 or 1 a byte, gathered into the top byte
            // (each partial product lands on a bit of its own).
            let ones = u64::from_le_bytes(group) >> 7;
            *word |= (ones.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * k);
        }
    }
    set
}

/// What `htmlEntityDecode`'s named entities decode to.
const NAMED_ENTITIES: ByteSet = ByteSet::of(b"\"&<>\xa0");

/// The whitespace the whitespace transformations act on.
const fn whitespace() -> ByteSet {
    ByteSet::of(b" \t\n\x0b\x0c\r\xa0")
}

impl Transform {
    /// Bytes without which this transformation returns its input unchanged
    /// but for ASCII case; `None` when no such set exists (hashes, length,
    /// encoders: their output never resembles their input).
    pub const fn prefilter_triggers(self) -> Option<ByteSet> {
        Some(match self {
            Transform::Lowercase | Transform::Uppercase => ByteSet::EMPTY,
            Transform::UrlDecode | Transform::UrlDecodeUni => ByteSet::of(b"%+"),
            Transform::HtmlEntityDecode => ByteSet::of(b"&"),
            Transform::JsDecode | Transform::CssDecode | Transform::EscapeSeqDecode => {
                ByteSet::of(b"\\")
            }
            Transform::Utf8ToUnicode => ByteSet::range(0x80, 0xff),
            Transform::RemoveNulls | Transform::ReplaceNulls => ByteSet::of(b"\0"),
            Transform::RemoveWhitespace
            | Transform::CompressWhitespace
            | Transform::Trim
            | Transform::TrimLeft
            | Transform::TrimRight => whitespace(),
            // Lower-cases, drops `"'\^`, folds `,;` and blanks into one
            // space, drops a space before `/` or `(`.
            Transform::CmdLine => whitespace().union(ByteSet::of(b"\"'\\^,;")),
            Transform::RemoveCommentsChar => ByteSet::of(b"/*-#<"),
            Transform::ReplaceComments => ByteSet::of(b"/"),
            Transform::RemoveComments => ByteSet::of(b"/-#<"),
            Transform::SqlHexDecode => ByteSet::of(b"0"),
            Transform::NormalisePath => ByteSet::of(b"./"),
            Transform::NormalisePathWin => ByteSet::of(b"./\\"),
            Transform::Base64Decode
            | Transform::Base64DecodeExt
            | Transform::Base64Encode
            | Transform::HexDecode
            | Transform::HexEncode
            | Transform::Length
            | Transform::Md5
            | Transform::Sha1
            | Transform::ParityEven7bit
            | Transform::ParityOdd7bit
            | Transform::ParityZero7bit
            | Transform::PhpArgsNames
            | Transform::UrlEncode => return None,
        })
    }
}

impl Transform {
    /// Bytes the output may hold when the input's bytes are `input` (a
    /// case-closed set, see [`ByteSet::case_closed`]): what a list of
    /// values can become without transforming any of them. Removing,
    /// blanking and case-folding transformations stay within their input
    /// (and a blank); decoders that meet their escape byte, and encoders,
    /// may produce anything.
    pub fn reach(self, input: ByteSet) -> ByteSet {
        let blank = || {
            let mut out = input;
            out.insert(b' ');
            out
        };
        match by_bit()[self as usize] {
            Some((_, triggers)) if !input.intersects(&triggers) => input,
            Some(_) => match self {
                Transform::RemoveNulls
                | Transform::RemoveWhitespace
                | Transform::Trim
                | Transform::TrimLeft
                | Transform::TrimRight
                | Transform::RemoveCommentsChar => input,
                Transform::ReplaceNulls
                | Transform::CompressWhitespace
                | Transform::ReplaceComments
                | Transform::CmdLine => blank(),
                // `+` alone decodes to a blank.
                Transform::UrlDecode | Transform::UrlDecodeUni if !input.contains(b'%') => blank(),
                // Without `#` only the named entities decode (a form body
                // has `&` between every field, and rarely a `#`).
                Transform::HtmlEntityDecode if !input.contains(b'#') => input.union(NAMED_ENTITIES),
                _ => ByteSet::ALL,
            },
            None => ByteSet::ALL,
        }
    }
}

/// The bytes in the presence of which some transformation of `chain` may
/// act (`None` when one may act on anything): input holding none of them
/// comes out of the chain unchanged but for case.
pub fn chain_triggers(chain: &[Transform]) -> Option<ByteSet> {
    chain.iter().try_fold(ByteSet::EMPTY, |all, t| {
        t.prefilter_triggers().map(|triggers| all.union(triggers))
    })
}

/// Bytes the output of `chain` (and, since every step's reach holds its
/// input, of each step on the way) may hold, for input bytes `input`.
pub fn chain_reach(chain: &[Transform], input: ByteSet) -> ByteSet {
    chain
        .iter()
        .fold(input.case_closed(), |bytes, t| t.reach(bytes))
}

impl Transform {
    /// Whether this transformation returns `input` unchanged but for ASCII
    /// case: the exact check behind the trigger bytes, for values that do
    /// hold some (most form text holds blanks, which `cmdLine` and
    /// `compressWhitespace` leave alone when single). Looks only at
    /// punctuation and blanks, so the answer holds for `input` in any case.
    /// `presence`: the bytes of `input`, which settle most values before
    /// any walk over them.
    pub fn unchanged_but_case(self, input: &[u8], presence: &ByteSet) -> bool {
        match self {
            Transform::Lowercase | Transform::Uppercase => true,
            Transform::CompressWhitespace | Transform::CmdLine => {
                let cmd_line = self == Transform::CmdLine;
                let acted_on = if cmd_line {
                    OTHER_BLANKS.union(CMD_LINE_BYTES)
                } else {
                    OTHER_BLANKS
                };
                if presence.intersects(&acted_on) {
                    return false;
                }
                if !presence.contains(b' ') {
                    return true;
                }
                // Spaces only: left alone when single, and, for `cmdLine`,
                // when none comes before a `/` or `(`.
                if cmd_line && (presence.contains(b'/') || presence.contains(b'(')) {
                    return blanks_and_punctuation(input) == 0;
                }
                !crate::waf::transform::text::has_double_space(input)
            }
            Transform::Trim | Transform::TrimLeft | Transform::TrimRight => {
                let edge =
                    |b: Option<&u8>| b.is_none_or(|b| BYTE_CLASS[usize::from(*b)] & BLANK == 0);
                (self == Transform::TrimRight || edge(input.first()))
                    && (self == Transform::TrimLeft || edge(input.last()))
            }
            _ => by_bit()[self as usize].is_some() && self.leaves_unchanged(input),
        }
    }
}

impl Transform {
    /// Whether this transformation may change the case of letters.
    /// Without its triggers, every other one returns its input exactly.
    pub fn changes_case(self) -> bool {
        matches!(
            self,
            Transform::Lowercase | Transform::Uppercase | Transform::CmdLine
        )
    }
}

/// Byte classes for `unchanged_but_case`: a blank (what the whitespace
/// transformations act on), and what `cmdLine` drops or folds.
const BLANK: u8 = 1;
const CMD_LINE: u8 = 2;
const BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let blanks = b" \t\n\x0b\x0c\r\xa0";
    let mut i = 0;
    while i < blanks.len() {
        table[blanks[i] as usize] |= BLANK;
        i += 1;
    }
    let cmd = b"\"'\\^,;";
    let mut i = 0;
    while i < cmd.len() {
        table[cmd[i] as usize] |= CMD_LINE;
        i += 1;
    }
    table
};

/// The blanks other than the space, and the bytes `cmdLine` drops or
/// turns into a space: any of them, and the transformation acts.
const OTHER_BLANKS: ByteSet = ByteSet::of(b"\t\n\x0b\x0c\r\xa0");
const CMD_LINE_BYTES: ByteSet = ByteSet::of(b"\"'\\^,;");

/// What `blanks_and_punctuation` found: a blank other than a space, two
/// blanks in a row, a space before `/` or `(`, a `cmdLine` character.
const OTHER_BLANK: u8 = 1;
const DOUBLE_BLANK: u8 = 2;
const SPACE_BEFORE_SLASH_OR_PAREN: u8 = 4;
const CMD_LINE_BYTE: u8 = 8;

/// One pass over `input` for everything that makes `compressWhitespace`
/// or `cmdLine` change more than case.
fn blanks_and_punctuation(input: &[u8]) -> u8 {
    let mut found = 0;
    let mut previous_blank = false;
    for &b in input {
        let class = BYTE_CLASS[usize::from(b)];
        let blank = class & BLANK != 0;
        if blank && b != b' ' {
            found |= OTHER_BLANK;
        }
        if previous_blank && blank {
            found |= DOUBLE_BLANK;
        }
        if previous_blank && (b == b'/' || b == b'(') {
            found |= SPACE_BEFORE_SLASH_OR_PAREN;
        }
        if class & CMD_LINE != 0 {
            found |= CMD_LINE_BYTE;
        }
        previous_blank = blank;
    }
    found
}

/// A transformation's bit in the masks below.
pub fn transform_bit(t: Transform) -> u64 {
    1u64 << (t as u32)
}

/// A chain as a mask of its transformations; `None` when one of them has
/// no triggers (its output never resembles its input).
pub fn chain_mask(chain: &[Transform]) -> Option<u64> {
    chain.iter().try_fold(0u64, |mask, t| {
        t.prefilter_triggers().map(|_| mask | transform_bit(*t))
    })
}

/// The transformations of `chain` that have triggers, as a mask (all of
/// them when `chain_mask` has one): the steps whose effect on a value its
/// bytes can tell.
pub fn steps_with_triggers(chain: &[Transform]) -> u64 {
    chain
        .iter()
        .filter(|t| t.prefilter_triggers().is_some())
        .fold(0, |mask, t| mask | transform_bit(*t))
}

/// Each transformation with triggers, with them, at its bit's index.
/// Built at compile time: the lookups sit on the hottest paths, where a
/// lazily built table's check showed.
static BY_BIT: [Option<(Transform, ByteSet)>; 64] = {
    let mut table = [None; 64];
    let names = crate::waf::transform::NAMES;
    let mut i = 0;
    while i < names.len() {
        let t = names[i].1;
        if let Some(triggers) = t.prefilter_triggers() {
            table[t as usize] = Some((t, triggers));
        }
        i += 1;
    }
    table
};

#[inline]
fn by_bit() -> &'static [Option<(Transform, ByteSet)>; 64] {
    &BY_BIT
}

/// [`Transform::prefilter_triggers`] from the table built at compile
/// time: for the hot paths, where the `const fn` would build the set anew.
#[inline]
pub fn triggers_of(t: Transform) -> Option<ByteSet> {
    by_bit()[t as usize].map(|(_, triggers)| triggers)
}

/// The transformations of `mask` that may change a value whose bytes are
/// `presence` (those with no triggers always may); the rest leave it
/// unchanged but for case.
pub fn triggered_by(mask: u64, presence: &ByteSet) -> u64 {
    let mut rest = mask;
    let mut triggered = 0;
    while rest != 0 {
        let index = rest.trailing_zeros();
        rest &= rest - 1;
        match by_bit()[index as usize] {
            Some((_, triggers)) if !presence.intersects(&triggers) => {}
            _ => triggered |= 1u64 << index,
        }
    }
    triggered
}

/// Which transformations leave a value unchanged but for ASCII case,
/// worked out lazily, one transformation at a time, as chains ask.
#[derive(Debug, Default, Clone, Copy)]
pub struct Transparency {
    known: u64,
    transparent: u64,
}

impl Transparency {
    /// [`Self::of`] when every transformation of `mask` has been learnt.
    #[inline]
    pub fn known(&self, mask: u64) -> Option<u64> {
        (mask & !self.known == 0).then_some(mask & self.transparent)
    }

    /// Whether every transformation of chain `mask` leaves `value` (whose
    /// bytes are `presence`) unchanged but for case.
    #[inline]
    pub fn chain(&mut self, mask: u64, value: &[u8], presence: &ByteSet) -> bool {
        self.of(mask, value, presence) == mask
    }

    /// Which of the transformations in `mask` leave `value` unchanged but
    /// for case, as a mask.
    #[inline]
    pub fn of(&mut self, mask: u64, value: &[u8], presence: &ByteSet) -> u64 {
        if mask & !self.known != 0 {
            self.learn(mask & !self.known, value, presence);
        }
        mask & self.transparent
    }

    fn learn(&mut self, unknown: u64, value: &[u8], presence: &ByteSet) {
        let mut unknown = unknown;
        while unknown != 0 {
            let index = unknown.trailing_zeros();
            unknown &= unknown - 1;
            let bit = 1u64 << index;
            self.known |= bit;
            let Some((t, triggers)) = by_bit()[index as usize] else {
                continue;
            };
            let leaves = !presence.intersects(&triggers) || t.unchanged_but_case(value, presence);
            if leaves {
                self.transparent |= bit;
            }
        }
    }
}

/// What a value's scan found: one bit per slot.
pub type Hits = Box<[u64]>;

/// An automaton the scan walks itself: the DFA, or, should the DFA not
/// build, the contiguous NFA.
#[derive(Debug, Clone)]
enum Scanner {
    Dfa(dfa::DFA),
    Nfa(nfa::contiguous::NFA),
}

/// The automaton over every prefiltered rule's literals.
#[derive(Debug, Clone)]
pub struct Prefilter {
    automaton: Option<Scanner>,
    /// Per literal (the automaton's pattern id), the slots that need it,
    /// as bits to set: (word of the scan result, bits in it).
    masks_of: Vec<Box<[(u32, u64)]>>,
    slot_count: usize,
    /// Per slot, bytes of which a value must hold one before a scan can
    /// set the slot: the rarest byte of each of its literals, both cases.
    required: Vec<ByteSet>,
}

/// Collects literals while rules compile.
#[derive(Default)]
pub struct PrefilterBuilder {
    literals: std::collections::HashMap<Vec<u8>, usize>,
    slots_of: Vec<Vec<u32>>,
    slot_count: u32,
    required: Vec<ByteSet>,
}

/// How common a byte is in ordinary text, roughly: blanks and common
/// letters most, punctuation least.
fn commonness(b: u8) -> u8 {
    match b.to_ascii_lowercase() {
        b' ' | b'e' | b't' | b'a' | b'o' | b'i' | b'n' | b's' | b'r' | b'h' | b'l' => 5,
        b'd' | b'c' | b'u' | b'm' | b'f' | b'p' | b'g' | b'w' | b'y' | b'b' => 4,
        b'v' | b'k' | b'x' | b'j' | b'q' | b'z' | b'_' | b'.' | b'-' | b'/' | b',' => 3,
        b'0'..=b'9' => 3,
        // What every form body and query string is made of.
        b'=' | b'&' | b'+' => 2,
        _ => 1,
    }
}

/// The rarest byte of `literal`, in both cases.
fn rarest(literal: &[u8]) -> ByteSet {
    let mut set = ByteSet::default();
    if let Some(&b) = literal.iter().min_by_key(|b| commonness(**b)) {
        set.insert(b.to_ascii_lowercase());
        set.insert(b.to_ascii_uppercase());
    }
    set
}

/// The slots of one operator: `any` holds on every value, `plain` only on
/// values made of [`plain_bytes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slots {
    pub any: Option<u32>,
    pub plain: Option<u32>,
}

impl Slots {
    pub fn is_some(&self) -> bool {
        self.any.is_some() || self.plain.is_some()
    }
}

/// Letters, digits, blank and the punctuation of ordinary form text.
pub fn plain_bytes() -> ByteSet {
    let mut set = ByteSet::range(b'a', b'z')
        .union(ByteSet::range(b'A', b'Z'))
        .union(ByteSet::range(b'0', b'9'));
    for &b in b" .,-_:/@" {
        set.insert(b);
    }
    set
}

impl PrefilterBuilder {
    /// Slots for `operator`'s necessary literals, if it has usable ones.
    pub fn add(&mut self, operator: &Operator) -> Slots {
        let any = necessary(operator).map(|set| self.slot(set));
        let plain = match (any, operator) {
            (None, Operator::Rx(re) | Operator::RxGlobal(re)) => {
                let allowed = plain_bytes();
                let class = regex_syntax::hir::ClassBytes::new(
                    (0..=255u8)
                        .filter(|b| allowed.contains(*b))
                        .map(|b| regex_syntax::hir::ClassBytesRange::new(b, b)),
                );
                literals::necessary_literals_within(re.as_str(), &class)
                    .filter(|set| selective(set))
                    .map(|set| self.slot(set))
            }
            _ => None,
        };
        Slots { any, plain }
    }

    /// Bytes of which a value must hold one before a scan can set `slot`.
    pub fn required(&self, slot: u32) -> Option<ByteSet> {
        self.required.get(slot as usize).copied()
    }

    fn slot(&mut self, needed: Vec<Vec<u8>>) -> u32 {
        let slot = self.slot_count;
        self.slot_count += 1;
        self.required.push(
            needed
                .iter()
                .fold(ByteSet::default(), |set, l| set.union(rarest(l))),
        );
        for literal in needed {
            let next = self.slots_of.len();
            let id = *self.literals.entry(literal).or_insert(next);
            if id == next {
                self.slots_of.push(Vec::new());
            }
            self.slots_of[id].push(slot);
        }
        slot
    }

    /// The automaton: a DFA, since it scans every value and transformed
    /// form, so speed beats size. It looks for each literal's first
    /// `PREFIX` bytes only: wherever a literal occurs its prefix does, so
    /// a slot is still set whenever one of its literals is there (it may
    /// now also be set by a prefix alone, which only costs running the
    /// rule). Cut short, the 6,000-odd CRS literals share about 4,100
    /// prefixes and the DFA stays near 7 MB, built in a few milliseconds;
    /// whole, it would take 0.15 s more to build. Should no automaton
    /// build, every scan reports every slot: rules then simply run
    /// unfiltered.
    pub fn build(self) -> Prefilter {
        let mut by_prefix: std::collections::HashMap<Vec<u8>, usize> = Default::default();
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut slots_of: Vec<Vec<u32>> = Vec::new();
        let mut literals: Vec<(Vec<u8>, usize)> = self.literals.into_iter().collect();
        // In id order, so the same rules always give the same automaton.
        literals.sort_unstable_by_key(|(_, id)| *id);
        for (literal, id) in literals {
            let prefix = literal[..literal.len().min(PREFIX)].to_ascii_lowercase();
            let next = patterns.len();
            let at = *by_prefix.entry(prefix).or_insert(next);
            if at == next {
                patterns.push(literal[..literal.len().min(PREFIX)].to_vec());
                slots_of.push(Vec::new());
            }
            slots_of[at].extend_from_slice(&self.slots_of[id]);
        }
        let masks_of = slots_of
            .into_iter()
            .map(|mut slots| {
                slots.sort_unstable();
                let mut masks: Vec<(u32, u64)> = Vec::new();
                for slot in slots {
                    let (word, bit) = (slot / 64, 1u64 << (slot % 64));
                    match masks.last_mut() {
                        Some((w, mask)) if *w == word => *mask |= bit,
                        _ => masks.push((word, bit)),
                    }
                }
                masks.into_boxed_slice()
            })
            .collect();
        let automaton = dfa::DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .map(Scanner::Dfa)
            .or_else(|_| {
                nfa::contiguous::NFA::builder()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&patterns)
                    .map(Scanner::Nfa)
            })
            .ok();
        Prefilter {
            automaton,
            masks_of,
            slot_count: self.slot_count as usize,
            required: self.required,
        }
    }
}

/// How much of each literal the automaton looks for (see `build`).
const PREFIX: usize = 8;

/// How many match states a long scan remembers as done (see `scan_with`).
const DONE_STATES: usize = 64;

/// From this length on, a scan remembers which literals it has met (see
/// `scan_with`); shorter values meet too few twice to pay for the set.
const SEEN_FROM: usize = 256;

impl Prefilter {
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Whether a value whose bytes are `presence` may set `slot` at all;
    /// false spares the scan.
    #[inline]
    pub fn may_hit(&self, presence: &ByteSet, slot: u32) -> bool {
        self.required
            .get(slot as usize)
            .is_none_or(|required| presence.intersects(required))
    }

    /// The slots whose literals occur in `value` (without ASCII case).
    pub fn scan(&self, value: &[u8]) -> Hits {
        let words = self.slot_count.div_ceil(64);
        let mut hits = vec![0u64; words].into_boxed_slice();
        let found = match &self.automaton {
            Some(Scanner::Dfa(dfa)) => self.scan_with(dfa, value, &mut hits),
            Some(Scanner::Nfa(nfa)) => self.scan_with(nfa, value, &mut hits),
            None => None,
        };
        if found.is_none() {
            hits.fill(u64::MAX);
        }
        hits
    }

    /// Walks `automaton` over `value` by hand, setting the slots of every
    /// pattern that ends at each position: the crate's overlapping
    /// iterator costs several times more per byte, and only which slots
    /// hit matters here, not where. `None` if the automaton cannot search.
    #[inline]
    fn scan_with(&self, automaton: &impl Automaton, value: &[u8], hits: &mut [u64]) -> Option<()> {
        let mut state = automaton.start_state(Anchored::No).ok()?;
        if value.len() > SEEN_FROM {
            self.scan_long(automaton, state, value, hits);
            return Some(());
        }
        for &byte in value {
            state = automaton.next_state(Anchored::No, state, byte);
            if automaton.is_special(state) && automaton.is_match(state) {
                for index in 0..automaton.match_len(state) {
                    let pattern = automaton.match_pattern(state, index).as_usize();
                    for &(word, mask) in &self.masks_of[pattern] {
                        hits[word as usize] |= mask;
                    }
                }
            }
        }
        Some(())
    }

    /// `scan_with` for a long value (a form body), from `start`.
    ///
    /// Each step waits for the one before it (the next state is read from
    /// the last): the value is walked as two halves side by side, whose
    /// steps do not wait for each other. The first half runs on past the
    /// middle by a literal's length less one, so a literal across the
    /// middle lies whole in one of the halves.
    ///
    /// The same short literals turn up again and again (`or`, `=`, `&` in
    /// a form body), each needed by many slots: a literal's slots are set
    /// the first time only.
    fn scan_long(
        &self,
        automaton: &impl Automaton,
        start: StateID,
        value: &[u8],
        hits: &mut [u64],
    ) {
        let mut seen = vec![0u64; self.masks_of.len().div_ceil(64)];
        // The match states already been through, every literal of theirs
        // then seen: asking the automaton for a state's literals costs
        // several times the step to it, and a form body meets the same few
        // states thousands of times. Direct-mapped; a state pushed out is
        // only asked again.
        let mut done = [usize::MAX; DONE_STATES];
        let mut on_match = |state: StateID| {
            let id = state.as_usize();
            let at = (id ^ (id >> 7)) % DONE_STATES;
            if done[at] == id {
                return;
            }
            done[at] = id;
            for index in 0..automaton.match_len(state) {
                let pattern = automaton.match_pattern(state, index).as_usize();
                if let Some(word) = seen.get_mut(pattern / 64) {
                    let bit = 1u64 << (pattern % 64);
                    if *word & bit != 0 {
                        continue;
                    }
                    *word |= bit;
                }
                for &(word, mask) in &self.masks_of[pattern] {
                    hits[word as usize] |= mask;
                }
            }
        };
        let middle = value.len() / 2;
        let first = &value[..(middle + PREFIX - 1).min(value.len())];
        let second = &value[middle..];
        let (mut state, mut other) = (start, start);
        for (&a, &b) in first.iter().zip(second) {
            state = automaton.next_state(Anchored::No, state, a);
            other = automaton.next_state(Anchored::No, other, b);
            if automaton.is_special(state) && automaton.is_match(state) {
                on_match(state);
            }
            if automaton.is_special(other) && automaton.is_match(other) {
                on_match(other);
            }
        }
        let paired = first.len().min(second.len());
        for &byte in &first[paired..] {
            state = automaton.next_state(Anchored::No, state, byte);
            if automaton.is_special(state) && automaton.is_match(state) {
                on_match(state);
            }
        }
        for &byte in &second[paired..] {
            other = automaton.next_state(Anchored::No, other, byte);
            if automaton.is_special(other) && automaton.is_match(other) {
                on_match(other);
            }
        }
    }
}

/// Whether `slot` is set in `hits`.
#[inline]
pub fn hit(hits: &[u64], slot: u32) -> bool {
    hits.get(slot as usize / 64)
        .is_some_and(|w| w & (1 << (slot % 64)) != 0)
}

/// A test of one operator's literals alone, for values only that operator
/// sees: the outputs of the steps of a `multiMatch` chain, which the memo
/// does not keep and no other rule shares. Walking a DFA of a few dozen
/// literals, stopping at the first, costs a fraction of the full scan,
/// which sets every rule's slots.
#[derive(Debug, Clone)]
pub struct StepGate {
    dfa: dfa::DFA,
    /// The rarest byte of each literal, both cases: a value holding none
    /// holds no literal.
    required: ByteSet,
}

/// Per byte, for one `multiMatch` link: bit `j` when the byte is among the
/// triggers of step `j` of its chain (without one, the step leaves a value
/// unchanged), bit [`StepClasses::LITERAL`] when it is the rarest byte of
/// one of the operator's literals (without one, no literal is there). Each
/// step output is read once for these, where a `ByteSet` of it would cost
/// several times that. Steps past the fifteenth are never skipped.
#[derive(Debug, Clone)]
pub struct StepClasses {
    table: [u16; 256],
    /// The steps that a value lacking their bit leaves unchanged.
    skippable: u16,
}

impl StepClasses {
    pub const LITERAL: u16 = 1 << 15;

    /// The classes for a link with transformations `chain` whose literals
    /// need one of `required` (a link without a step gate: none).
    pub fn new(required: Option<ByteSet>, chain: &[Transform]) -> StepClasses {
        let mut sets = Vec::with_capacity(chain.len() + 1);
        let mut skippable = 0u16;
        for (j, &t) in chain.iter().enumerate().take(15) {
            match triggers_of(t) {
                Some(triggers) if !t.changes_case() => {
                    skippable |= 1 << j;
                    sets.push((1u16 << j, triggers));
                }
                _ => {}
            }
        }
        sets.extend(required.map(|required| (Self::LITERAL, required)));
        let mut table = [0u16; 256];
        for (b, classes) in table.iter_mut().enumerate() {
            for (bit, set) in &sets {
                if set.contains(b as u8) {
                    *classes |= bit;
                }
            }
        }
        StepClasses { table, skippable }
    }

    /// The classes of the bytes of `value`, together.
    #[inline]
    pub fn of(&self, value: &[u8]) -> u16 {
        value
            .iter()
            .fold(0, |all, &b| all | self.table[usize::from(b)])
    }

    /// Whether step `j` may change a value whose classes are `classes`.
    #[inline]
    pub fn may_change(&self, j: usize, classes: u16) -> bool {
        let bit = 1u16.checked_shl(j as u32).unwrap_or(0);
        self.skippable & bit == 0 || classes & bit != 0
    }
}

impl StepGate {
    /// The gate for `operator`, if it has literals worth a slot.
    pub fn new(operator: &Operator) -> Option<StepGate> {
        let literals = necessary(operator)?;
        let dfa = dfa::DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&literals)
            .ok()?;
        let required = literals
            .iter()
            .fold(ByteSet::EMPTY, |set, l| set.union(rarest(l)));
        Some(StepGate { dfa, required })
    }

    /// Bytes of which a value must hold one to hold a literal.
    pub fn required(&self) -> ByteSet {
        self.required
    }

    /// False proves the operator cannot match a value whose classes are
    /// `classes` (see [`StepClasses::of`]).
    #[inline]
    pub fn admits_classed(&self, classes: u16, value: &[u8]) -> bool {
        classes & StepClasses::LITERAL != 0 && self.admits(value)
    }

    /// False proves the operator cannot match `value`.
    #[inline]
    pub fn admits(&self, value: &[u8]) -> bool {
        let dfa = &self.dfa;
        let Ok(mut state) = dfa.start_state(Anchored::No) else {
            return true;
        };
        for &byte in value {
            state = dfa.next_state(Anchored::No, state, byte);
            if dfa.is_special(state) && dfa.is_match(state) {
                return true;
            }
        }
        false
    }
}

/// Strings one of which every match of `operator` contains (lower-cased),
/// if they are selective enough to be worth a slot.
fn necessary(operator: &Operator) -> Option<Vec<Vec<u8>>> {
    let set = match operator {
        Operator::Rx(re) | Operator::RxGlobal(re) => literals::necessary_literals(re.as_str())?,
        Operator::Pm(_, phrases) => phrases.iter().map(|p| p.to_ascii_lowercase()).collect(),
        _ => return None,
    };
    selective(&set).then_some(set)
}

/// A lone letter, digit or blank is in nearly every value: a slot needing
/// one would be set all the time and only cost its bookkeeping.
fn selective(set: &[Vec<u8>]) -> bool {
    let weak = |l: &Vec<u8>| {
        l.is_empty() || (l.len() == 1 && (l[0].is_ascii_alphanumeric() || l[0] == b' '))
    };
    !set.is_empty() && !set.iter().any(weak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_values_bytes_from_the_table_are_those_bit_by_bit() {
        let mut next = crate::test_rng::xorshift(0x5851_f42d_4c95_7f2d);
        for len in (0..300).chain([1024, 4096]) {
            // Narrow alphabets too, so that whole groups of eight stay
            // unmarked or all marked.
            let span = [256u64, 64, 8, 1][len % 4];
            let low = next() % 256;
            let value: Vec<u8> = (0..len)
                .map(|_| ((low + next() % span) % 256) as u8)
                .collect();
            assert_eq!(ByteSet::in_value(&value), ByteSet::of(&value), "len {len}");
        }
        let every: Vec<u8> = (0..=255u8).collect();
        assert_eq!(ByteSet::in_value(&every), ByteSet::ALL);
    }

    #[test]
    fn both_ways_of_folding_marks_agree() {
        let mut next = crate::test_rng::xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..200 {
            let mut seen = [0u8; 256];
            let mut expected = ByteSet::EMPTY;
            for _ in 0..next() % 300 {
                let b = (next() % 256) as u8;
                seen[usize::from(b)] = 0x80;
                expected.insert(b);
            }
            assert_eq!(fold_marks(&seen), expected);
            assert_eq!(fold_marks_by_multiplying(&seen), expected);
        }
    }

    #[test]
    fn every_transformation_has_a_bit() {
        let all = crate::waf::transform::all();
        assert!(all.len() <= 64);
        let mut seen = 0u64;
        for t in all {
            assert_eq!(seen & transform_bit(t), 0, "{} shares a bit", t.name());
            seen |= transform_bit(t);
        }
    }

    #[test]
    fn chains_without_their_triggers_are_transparent() {
        let chain = [Transform::Lowercase, Transform::UrlDecodeUni];
        let mask = chain_mask(&chain).unwrap();
        let transparent =
            |value: &[u8]| Transparency::default().chain(mask, value, &ByteSet::of(value));
        for value in [&b"Plain Text"[..], b"abc", b""] {
            assert!(transparent(value));
            let mut out = value.to_vec();
            for t in chain {
                if let Some(next) = t.apply(&out) {
                    out = next;
                }
            }
            assert!(out.eq_ignore_ascii_case(value));
        }
        assert!(!transparent(b"a%41"));
        assert!(chain_mask(&[Transform::Md5]).is_none());
    }

    /// Each transformation, on values holding none of its triggers, leaves
    /// them unchanged but for case: checked over every byte pair.
    /// What `multiMatch` relies on to skip steps (see `tx::multi`): a
    /// transformation that does not change case, given input without its
    /// triggers, returns it byte for byte.
    #[test]
    fn without_triggers_only_case_changers_touch_their_input() {
        for t in crate::waf::transform::all() {
            let Some(triggers) = t.prefilter_triggers() else {
                continue;
            };
            if t.changes_case() {
                continue;
            }
            for a in 0..=255u8 {
                let value = [b'A', a, b'z', a, b'Q'];
                if ByteSet::of(&value).intersects(&triggers) {
                    continue;
                }
                let out = t.apply(&value).unwrap_or_else(|| value.to_vec());
                assert_eq!(out, value, "{} changed {value:?}", t.name());
            }
        }
    }

    #[test]
    fn triggers_are_complete() {
        let all = crate::waf::transform::all();
        for t in all {
            let Some(triggers) = t.prefilter_triggers() else {
                continue;
            };
            for a in 0..=255u8 {
                for b in [b'a', b'Z', b'0', b'x', b'.', a] {
                    let value = [b, a, b, b'q', a];
                    if ByteSet::of(&value).intersects(&triggers) {
                        continue;
                    }
                    let out = t.apply(&value).unwrap_or_else(|| value.to_vec());
                    assert!(
                        out.eq_ignore_ascii_case(&value),
                        "{}: {value:?} became {out:?}",
                        t.name()
                    );
                }
            }
        }
    }

    /// The shortcut `RuleSet::chain_reach` takes: input holding none of a chain's
    /// triggers reaches only itself (case closed), as the full fold says.
    #[test]
    fn chains_reach_only_their_input_without_their_triggers() {
        let all = crate::waf::transform::all();
        let inputs = [
            ByteSet::of(b"Host User-Agent accept_language 0123456789"),
            ByteSet::of(b"plain words"),
            ByteSet::of(b"a%41+b\\x&lt;/*--#\0 \t"),
            ByteSet::EMPTY,
        ];
        for (i, first) in all.iter().enumerate() {
            for second in &all[i..] {
                let chain = [*first, *second];
                let Some(triggers) = chain_triggers(&chain) else {
                    continue;
                };
                for input in inputs {
                    if input.case_closed().intersects(&triggers) {
                        continue;
                    }
                    assert_eq!(
                        chain_reach(&chain, input),
                        input.case_closed(),
                        "{} then {}",
                        first.name(),
                        second.name()
                    );
                }
            }
        }
        assert_eq!(
            chain_triggers(&[Transform::Lowercase, Transform::Md5]),
            None
        );
    }

    /// `reach` bounds what each transformation outputs: over random values
    /// rich in every transformation's escape and trigger bytes, each
    /// output byte is in the reach of the input's bytes.
    #[test]
    fn reach_holds_every_output_byte() {
        let alphabet: &[u8] = b"aZ09 \t\n\x0b\x0c\r\xa0\xc3\xa9\0%+&#;\\x/*-<.'\",^u()";
        let mut next = crate::test_rng::xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let mut value: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            // Whole escapes now and then, so decoders really decode.
            if next().is_multiple_of(3) {
                let escapes: [&[u8]; 10] = [
                    b"%41", b"%u0041", b"&lt;", b"&quot;", b"&nbsp", b"&#65;", b"&#x41", b"\\x41",
                    b"0x41", b"/*c*/",
                ];
                value.extend_from_slice(escapes[(next() % 10) as usize]);
            }
            let input = ByteSet::of(&value).case_closed();
            for t in crate::waf::transform::all() {
                let out = t.apply(&value).unwrap_or_else(|| value.clone());
                let reach = t.reach(input);
                for b in out {
                    assert!(
                        reach.contains(b),
                        "{}: {:?} gave byte {b:#04x} outside its reach",
                        t.name(),
                        String::from_utf8_lossy(&value)
                    );
                }
            }
        }
    }

    #[test]
    fn case_closed_adds_the_other_case_of_letters_only() {
        let closed = ByteSet::of(b"aZ1[").case_closed();
        for b in b"aAzZ1[" {
            assert!(closed.contains(*b));
        }
        for b in b"bB{@`" {
            assert!(!closed.contains(*b));
        }
    }

    /// `unchanged_but_case` never claims a value is left alone when the
    /// transformation changes more than its case.
    #[test]
    fn unchanged_but_case_is_exact_where_it_says_yes() {
        let samples: [&[u8]; 9] = [
            b"some ordinary text",
            b"two  blanks",
            b"tab\there",
            b" lead",
            b"trail ",
            b"cmd /c dir",
            b"call (x)",
            b"a,b;c",
            b"Mixed Case Words",
        ];
        // And random values over blanks and the punctuation that matters.
        let alphabet: &[u8] = b" \t\xa0/(aZ,;'\"^\\x";
        let mut next = crate::test_rng::xorshift(0x51_7cc1_b727_220a);
        let mut random: Vec<Vec<u8>> = Vec::new();
        for _ in 0..5_000 {
            let state = next();
            let len = (state % 7) as usize;
            random.push(
                (0..len)
                    .map(|i| alphabet[((state >> (8 * i)) % alphabet.len() as u64) as usize])
                    .collect(),
            );
        }
        let mut said_yes = 0;
        for t in crate::waf::transform::all() {
            for value in samples
                .iter()
                .copied()
                .chain(random.iter().map(Vec::as_slice))
            {
                if t.unchanged_but_case(value, &ByteSet::of(value)) {
                    said_yes += 1;
                    let out = t.apply(value).unwrap_or_else(|| value.to_vec());
                    assert!(
                        out.eq_ignore_ascii_case(value),
                        "{}: {:?} became {:?}",
                        t.name(),
                        String::from_utf8_lossy(value),
                        String::from_utf8_lossy(&out)
                    );
                }
            }
        }
        assert!(said_yes > 1_000, "the check has cases to hold on");
    }

    #[test]
    fn a_step_gate_admits_exactly_the_values_holding_a_literal() {
        let base = std::path::Path::new("");
        let op = Operator::compile("rx", "(?:child_process|eval\\()", base).unwrap();
        let gate = StepGate::new(&op).unwrap();
        for value in [
            &b"x require('CHILD_PROCESS')"[..],
            b"EVAL(1)",
            b"child_process",
        ] {
            assert!(gate.admits(value), "{value:?}");
        }
        for value in [&b"child process"[..], b"evaluate", b"", b"\xff\x00eval"] {
            assert!(!gate.admits(value), "{value:?}");
        }
        let no_literals = Operator::compile("rx", "\\d+", base).unwrap();
        assert!(StepGate::new(&no_literals).is_none());
    }

    #[test]
    fn step_classes_say_which_steps_may_change_an_output_and_whether_a_literal_may_be_in_it() {
        let base = std::path::Path::new("");
        let op = Operator::compile("rx", "(?:child_process|eval\\()", base).unwrap();
        let chain = [
            Transform::UrlDecodeUni,
            Transform::Lowercase,
            Transform::RemoveWhitespace,
        ];
        let gate = StepGate::new(&op).unwrap();
        let classes = &StepClasses::new(Some(gate.required()), &chain);
        let plain = classes.of(b"ab c");
        assert!(
            !classes.may_change(0, plain),
            "no % or +: urlDecodeUni idles"
        );
        assert!(
            classes.may_change(1, plain),
            "a case change is never ruled out"
        );
        assert!(
            classes.may_change(2, plain),
            "a blank: removeWhitespace acts"
        );
        assert!(classes.may_change(0, classes.of(b"a%41")));
        assert!(!classes.may_change(2, classes.of(b"abc")));
        // Against the step gate itself, over values with and without the
        // literals' rarest bytes.
        for value in [
            &b"EVAL(1)"[..],
            b"child_process",
            b"child process",
            b"evaluate",
            b"",
        ] {
            let held = classes.of(value);
            assert_eq!(
                gate.admits_classed(held, value),
                gate.admits(value),
                "{value:?}"
            );
        }
        // A chain longer than the table's bits: its later steps are never
        // skipped, its earlier ones still are.
        let long = StepClasses::new(Some(gate.required()), &[Transform::UrlDecodeUni; 20]);
        assert!(long.may_change(15, long.of(b"abc")) && long.may_change(19, 0));
        assert!(!long.may_change(14, long.of(b"abc")));
    }

    #[test]
    fn scan_sets_the_slots_of_found_literals() {
        let mut builder = PrefilterBuilder::default();
        let union = builder
            .add(&Operator::compile("rx", "(?i)union\\s+select", std::path::Path::new("")).unwrap())
            .any
            .unwrap();
        let script = builder
            .add(&Operator::compile("pm", "<script javascript:", std::path::Path::new("")).unwrap())
            .any
            .unwrap();
        assert!(
            !builder
                .add(&Operator::compile("rx", "\\d+", std::path::Path::new("")).unwrap())
                .is_some()
        );
        let filter = builder.build();
        let hits = filter.scan(b"1 UNION SELECT <SCRIPT>");
        assert!(hit(&hits, union) && hit(&hits, script));
        let hits = filter.scan(b"blue shoes");
        assert!(!hit(&hits, union) && !hit(&hits, script));
    }

    /// A long value meets the same match states again and again, and the
    /// scan skips those it has been through: what it finds must still be
    /// what short scans of all its windows find (a literal is at most
    /// `PREFIX` long, so each lies whole in some window twice that).
    #[test]
    fn long_scans_find_what_short_windows_find() {
        let path = std::path::Path::new("");
        let mut builder = PrefilterBuilder::default();
        for (op, param) in [
            ("rx", "(?i)union\\s+select"),
            ("pm", "<script javascript: select"),
            ("rx", "(?i)\\bor\\s+1=1"),
            ("pm", "passwd etc/ ../"),
            ("rx", "eval\\("),
        ] {
            builder.add(&Operator::compile(op, param, path).unwrap());
        }
        let filter = builder.build();
        let pieces: [&[u8]; 8] = [
            b"union select",
            b"<SCRIPT>",
            b"or 1=1",
            b"plain words",
            b"../etc/passwd",
            b"javascript:",
            b"eval(x)",
            b"select 1",
        ];
        let mut next = crate::test_rng::xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..100 {
            let mut value = Vec::new();
            while value.len() <= SEEN_FROM * 2 {
                // The longer pieces only now and then, late in the value too.
                let piece = pieces[(next() % pieces.len() as u64) as usize];
                if piece.len() > 8 && !next().is_multiple_of(4) {
                    continue;
                }
                value.extend_from_slice(piece);
                value.push(b' ');
            }
            let mut expected = vec![0u64; filter.slot_count().div_ceil(64)];
            for window in value.windows(2 * PREFIX) {
                for (e, h) in expected.iter_mut().zip(filter.scan(window).iter()) {
                    *e |= h;
                }
            }
            assert_eq!(
                &*filter.scan(&value),
                &expected[..],
                "{}",
                String::from_utf8_lossy(&value)
            );
        }
        // A long value is walked as two halves: a literal across the
        // middle, at every offset, is still found.
        for length in [SEEN_FROM + 1, SEEN_FROM + 2, 4 * SEEN_FROM + 1] {
            for shift in 0..16 {
                let mut value = vec![b' '; length];
                let at = length / 2 + 4 - shift;
                value[at..at + 12].copy_from_slice(b"union select");
                assert_eq!(
                    filter.scan(&value),
                    filter.scan(b"union select"),
                    "length {length}, literal at {at}"
                );
            }
        }
    }
}
