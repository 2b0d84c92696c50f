//! A shortcut that clears the commonest benign values (words and numbers)
//! without tokenizing them: CRS runs `@detectSQLi` on every argument,
//! name and cookie.
//!
//! The shortcut is a proof, not a guess. libinjection flags a value only
//! when the token types of its first five folded tokens spell a
//! fingerprint on its blacklist. For a value of ASCII letters, digits, `_`
//! and spaces the tokens are easy to bound: each word is a bareword, a
//! number or its entry in libinjection's keyword table (a digit-led word is
//! a number followed by a word, any of its tails). Folding only drops
//! tokens, except in cases this alphabet cannot reach (parentheses,
//! semicolons, backslashes, braces) and three that are checked: adjacent
//! words merging into a multi-word keyword (`ORDER BY`: the proof gives up
//! when all words of one are present), `IN` (a keyword or a bareword) and a
//! SQL type, which folds into the token after it unless that token is a
//! keyword-like one or there is none. When no blacklisted fingerprint is
//! spelled by the resulting set of types alone, no order of those tokens
//! can be flagged. The tests check the premises against the table the
//! crate ships (an upgrade that changes it fails loudly) and the verdicts
//! against the crate over random values.

use std::collections::HashMap;

use foldhash::fast::FixedState;
use std::sync::OnceLock;

use libinjectionrs::sqli::sqli_data::SQL_KEYWORDS;

type Map<V> = HashMap<&'static [u8], V, FixedState>;

/// Builds the proof's tables (once per process).
pub fn prepare() {
    table();
}

/// What the proof needs from libinjection's table.
struct Table {
    /// Word (upper-case) to its token type, fingerprints left out, and
    /// whether it is part of a multi-word keyword: one lookup per word.
    words: Map<Entry>,
    /// The same for words of up to eight bytes of the proof's alphabet,
    /// keyed by the word packed into a `u64` (see `packed_upper`): most
    /// keywords, looked up without a copy or a byte-wise hash.
    short: ShortWords,
    /// The multi-word keywords, as the numbers of their words (see
    /// `Entry::component`).
    phrases: Vec<Vec<u16>>,
    /// Indexed by a set of types (see `type_bit`): whether the set spells
    /// some blacklisted fingerprint.
    spells_blacklisted: Vec<bool>,
    /// Per word length, a bit per `filter_bit` of the words in `words`:
    /// a clear bit proves a word is not there without hashing it (most
    /// words of ordinary text are not keywords).
    filter: Vec<[u64; FILTER_WORDS]>,
}

const FILTER_WORDS: usize = 16;

/// A word's bit in its length's filter, from three of its bytes, without
/// ASCII case.
fn filter_bit(word: &[u8]) -> Option<usize> {
    let (first, last) = (*word.first()?, *word.last()?);
    let middle = word[word.len() / 2];
    let [first, middle, last] = [first, middle, last].map(|b| b.to_ascii_uppercase());
    Some(
        (usize::from(first) * 31 + usize::from(middle) * 7 + usize::from(last))
            % (FILTER_WORDS * 64),
    )
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    token_type: Option<u8>,
    /// Its number among the words of multi-word keywords, if it is one.
    component: Option<u16>,
}

/// The token types this alphabet can produce, case folded as
/// libinjection folds fingerprints before looking them up (so a SQL type
/// `t` and T-SQL `T` are one).
const REACHABLE: &[u8] = b"KUBETFN1VO&A";

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut words: Map<Entry> = Map::default();
        let mut phrases = Vec::new();
        let mut components: u16 = 0;
        let mut sets: Vec<u16> = Vec::new();
        for k in SQL_KEYWORDS {
            if k.token_type == b'F' {
                // Fingerprints are kept with a leading '0'; one with a type
                // no word here produces can never be spelled.
                let set = k.word.bytes().skip(1).try_fold(0, |set, t| {
                    REACHABLE
                        .contains(&t.to_ascii_uppercase())
                        .then(|| set | type_bit(t))
                });
                sets.extend(set);
                continue;
            }
            words.entry(k.word.as_bytes()).or_default().token_type = Some(k.token_type);
            if k.word.contains(' ') {
                let mut phrase = Vec::new();
                for w in k.word.split(' ').map(str::as_bytes) {
                    let entry = words.entry(w).or_default();
                    let number = *entry.component.get_or_insert(components);
                    if number == components {
                        components += 1;
                    }
                    phrase.push(number);
                }
                phrases.push(phrase);
            }
        }
        let spells_blacklisted = (0..1u32 << REACHABLE.len())
            .map(|have| sets.iter().any(|set| u32::from(*set) & !have == 0))
            .collect();
        let mut filter = vec![[0u64; FILTER_WORDS]; 33];
        for word in words.keys() {
            if let (Some(bits), Some(bit)) = (filter.get_mut(word.len()), filter_bit(word)) {
                bits[bit / 64] |= 1 << (bit % 64);
            }
        }
        let short = ShortWords::new(&words);
        Table {
            words,
            short,
            phrases,
            spells_blacklisted,
            filter,
        }
    })
}

/// One bit per reachable token type (see `REACHABLE`).
fn type_bit(token_type: u8) -> u16 {
    TYPE_BITS[usize::from(token_type)]
}

/// `type_bit` for every byte, made at compile time: it is asked per word.
const TYPE_BITS: [u16; 256] = {
    let mut bits = [0u16; 256];
    let mut i = 0;
    while i < REACHABLE.len() {
        let t = REACHABLE[i];
        bits[t as usize] = 1 << i;
        bits[t.to_ascii_lowercase() as usize] = 1 << i;
        i += 1;
    }
    bits
};

/// The word's type in the table (upper-cased lookup), if it has one;
/// a word that is part of a multi-word keyword is noted in `present`.
fn word_type(word: &[u8], present: &mut Present) -> Option<u8> {
    let table = table();
    let bits = table.filter.get(word.len())?;
    // The filter first, from the three bytes it reads: most words of
    // ordinary text are turned away before they are copied.
    let bit = filter_bit(word)?;
    if bits[bit / 64] & (1 << (bit % 64)) == 0 {
        return None;
    }
    let entry = match packed_upper(word) {
        Some(key) => table.short.get(key)?,
        None => {
            let mut upper = [0u8; 32];
            // Longer than any entry: a plain bareword.
            let buf = upper.get_mut(..word.len())?;
            buf.copy_from_slice(word);
            buf.make_ascii_uppercase();
            table.words.get(&*buf).copied()?
        }
    };
    if let Some(number) = entry.component {
        present.note(number);
    }
    entry.token_type
}

/// A word of one to eight bytes of the proof's alphabet (ASCII letters,
/// digits, `_`: no zero byte, so the packing keeps the length), upper-cased
/// and packed little-endian into a `u64`; `None` for any other word.
fn packed_upper(word: &[u8]) -> Option<u64> {
    if word.is_empty() || word.len() > 8 {
        return None;
    }
    let mut bytes = [0u8; 8];
    bytes[..word.len()].copy_from_slice(word);
    let packed = u64::from_le_bytes(bytes);
    // In this alphabet exactly the lower-case letters have both 0x40 and
    // 0x20 set; clearing 0x20 wherever 0x40 is set upper-cases them and
    // leaves `_`, digits and capitals as they are.
    Some(packed & !((packed & 0x4040_4040_4040_4040) >> 1))
}

/// Open addressing over packed words (see `packed_upper`), at most half
/// full; the empty key is 0, which no word packs to.
struct ShortWords {
    keys: Vec<u64>,
    entries: Vec<Entry>,
    shift: u32,
}

impl ShortWords {
    fn new(words: &Map<Entry>) -> ShortWords {
        let alphabet = |w: &[u8]| w.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
        let short: Vec<(u64, Entry)> = words
            .iter()
            .filter(|(w, _)| alphabet(w) && w.iter().all(|b| !b.is_ascii_lowercase()))
            .filter_map(|(w, e)| Some((packed_upper(w)?, *e)))
            .collect();
        let size = (short.len() * 2).next_power_of_two().max(16);
        let mut table = ShortWords {
            keys: vec![0; size],
            entries: vec![Entry::default(); size],
            shift: 64 - size.trailing_zeros(),
        };
        for (key, entry) in short {
            let mut at = table.home(key);
            while table.keys[at] != 0 {
                at = (at + 1) & (size - 1);
            }
            table.keys[at] = key;
            table.entries[at] = entry;
        }
        table
    }

    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    fn get(&self, key: u64) -> Option<Entry> {
        let mask = self.keys.len() - 1;
        let mut at = self.home(key);
        loop {
            match *self.keys.get(at)? {
                0 => return None,
                k if k == key => return self.entries.get(at).copied(),
                _ => at = (at + 1) & mask,
            }
        }
    }
}

/// The words of multi-word keywords a value holds, a bit per word's
/// number: the proof runs on every argument, and a list per value showed
/// in profiles. A number past its room makes the proof give up (sound:
/// it only ever answers "not proven").
#[derive(Default)]
struct Present {
    words: [u64; 4],
    overflowed: bool,
}

impl Present {
    fn note(&mut self, number: u16) {
        let number = usize::from(number);
        match self.words.get_mut(number / 64) {
            Some(word) => *word |= 1 << (number % 64),
            None => self.overflowed = true,
        }
    }

    fn has(&self, number: u16) -> bool {
        let number = usize::from(number);
        self.words
            .get(number / 64)
            .is_some_and(|word| word & (1 << (number % 64)) != 0)
    }

    fn count(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }
}

/// Tokens a SQL type folds into (it is dropped before them).
const ABSORBS_SQL_TYPE: &[u8] = b"n1tfv";

/// True when `input` provably cannot be flagged (see the module doc).
/// False means only "not proven".
pub fn cannot_be_sqli(input: &[u8]) -> bool {
    if input.is_empty() || input.len() > 512 {
        return false;
    }
    let mut words = Words::default();
    // One pass: the alphabet is checked as the words are cut (a byte
    // outside it ends the proof, whatever the words before it said).
    let mut start = None;
    for (i, &b) in input.iter().enumerate() {
        match BYTE_CLASS[usize::from(b)] {
            WORD => {
                start.get_or_insert(i);
            }
            SPACE => {
                if let Some(from) = start.take()
                    && !words.add(&input[from..i])
                {
                    return false;
                }
            }
            _ => return false,
        }
    }
    if let Some(from) = start
        && !words.add(&input[from..])
    {
        return false;
    }
    words.cannot_be_flagged()
}

/// The proof's alphabet: word bytes (ASCII letters, digits, `_`), the
/// space between words, and the rest, which it does not cover.
const BYTE_CLASS: [u8; 256] = {
    let mut class = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        if byte.is_ascii_alphanumeric() || byte == b'_' {
            class[b] = WORD;
        }
        b += 1;
    }
    class[b' ' as usize] = SPACE;
    class
};
const OTHER: u8 = 0;
const WORD: u8 = 1;
const SPACE: u8 = 2;

/// What the words of a value seen so far make of its fingerprint.
#[derive(Default)]
struct Words {
    types: u16,
    present: Present,
    /// A SQL type ended the previous word and may survive folding.
    pending_sql_type: bool,
}

impl Words {
    /// Takes in the next word; false gives the proof up.
    fn add(&mut self, word: &[u8]) -> bool {
        if word[0].is_ascii_digit() {
            // A number (or `0x`, `1e`: barewords) first, which absorbs a
            // SQL type before it; then perhaps a word: any of its tails.
            self.types |= type_bit(b'1') | type_bit(b'n');
            self.pending_sql_type = false;
            // A tail word starts with a letter or `_` (digits continue
            // the number).
            for i in (1..word.len()).filter(|i| !word[*i].is_ascii_digit()) {
                let tail = &word[i..];
                match word_type(tail, &mut self.present) {
                    Some(b'A') => return false,
                    Some(b't') => self.pending_sql_type = true,
                    Some(t) => self.types |= type_bit(t) | in_as_bareword(t, tail),
                    None => {}
                }
            }
        } else {
            let t = word_type(word, &mut self.present).unwrap_or(b'n');
            if t == b'A' {
                // COLLATE: turns the next bareword into a SQL type.
                return false;
            }
            if self.pending_sql_type && !ABSORBS_SQL_TYPE.contains(&t) {
                self.types |= type_bit(b't');
            }
            self.pending_sql_type = t == b't';
            if t != b't' {
                self.types |= type_bit(t) | in_as_bareword(t, word);
            }
        }
        true
    }

    fn cannot_be_flagged(mut self) -> bool {
        if self.pending_sql_type {
            // The last token: nothing to fold into.
            self.types |= type_bit(b't');
        }
        let present = &self.present;
        if present.overflowed || (present.count() >= 2 && could_merge(present)) {
            return false;
        }
        !table().spells_blacklisted[usize::from(self.types)]
    }
}

/// `IN` is a keyword folded into a bareword when no `(` follows.
fn in_as_bareword(token_type: u8, word: &[u8]) -> u16 {
    if token_type == b'k' && word.eq_ignore_ascii_case(b"IN") {
        type_bit(b'n')
    } else {
        0
    }
}

/// Whether every word of some multi-word keyword is among `present`.
fn could_merge(present: &Present) -> bool {
    table()
        .phrases
        .iter()
        .any(|words| words.iter().all(|w| present.has(*w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed table answers as the map does, for every keyword in any
    /// case and for random words of the alphabet.
    #[test]
    fn short_words_answer_as_the_keyword_map_does() {
        let table = table();
        let lookup = |word: &[u8]| {
            let upper = word.to_ascii_uppercase();
            table
                .words
                .get(&*upper)
                .map(|e| (e.token_type, e.component))
        };
        let mut checked = 0;
        for word in table.words.keys() {
            let Some(key) = packed_upper(&word.to_ascii_lowercase()) else {
                continue;
            };
            if !word.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_') {
                continue;
            }
            let got = table.short.get(key).map(|e| (e.token_type, e.component));
            assert_eq!(got, lookup(word), "{}", String::from_utf8_lossy(word));
            checked += 1;
        }
        assert!(checked > 100, "the table has short keywords to check");
        let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_";
        let mut next = crate::test_rng::xorshift(0x0dd5_eed5_1234_5678);
        for _ in 0..50_000 {
            let len = 1 + (next() % 8) as usize;
            let word: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let key = packed_upper(&word).unwrap();
            let got = table.short.get(key).map(|e| (e.token_type, e.component));
            assert_eq!(got, lookup(&word), "{}", String::from_utf8_lossy(&word));
        }
        assert_eq!(packed_upper(b""), None);
        assert_eq!(packed_upper(b"NINEBYTES"), None);
    }

    /// The premises about the table: fingerprints are '0' and up to five
    /// token types; every word's type is one whose folding the proof
    /// accounts for.
    #[test]
    fn the_table_holds_only_what_the_proof_accounts_for() {
        let mut fingerprints = 0;
        for k in SQL_KEYWORDS {
            if k.token_type == b'F' {
                fingerprints += 1;
                assert!(k.word.starts_with('0') && (2..=6).contains(&k.word.len()));
            } else {
                assert!(
                    REACHABLE.contains(&k.token_type.to_ascii_uppercase()),
                    "{} has type {}, new to the proof",
                    k.word,
                    char::from(k.token_type)
                );
            }
        }
        assert!(fingerprints > 1000, "the table has fingerprints");
        // Every word of a multi-word keyword has its bit in `Present`
        // (one past its room would make the proof give up on the word).
        let room = 64 * Present::default().words.len();
        assert!(
            table()
                .phrases
                .iter()
                .flatten()
                .all(|n| usize::from(*n) < room)
        );
        // Barewords and numbers alone spell nothing: the base case.
        let plain = type_bit(b'n') | type_bit(b'1');
        assert!(!table().spells_blacklisted[usize::from(plain)]);
        assert!(table().spells_blacklisted[usize::from(plain | type_bit(b'U'))]);
    }

    /// Differential: every value the shortcut clears, libinjection clears
    /// too; and the shortcut does clear ordinary values. Words are drawn
    /// type by type from the table, so every kind of token is exercised.
    #[test]
    fn the_shortcut_never_clears_what_libinjection_flags() {
        let plain = [
            "blue",
            "shoes",
            "field12",
            "price",
            "42",
            "0x1f",
            "1e5",
            "12abc",
            "_id",
            "x",
            "0",
            "007",
            "e",
            "1",
            "99problems",
            "0x",
            "0b2",
            "1e",
            "1fu",
            "3f9a8c7d6e5b4a39",
        ];
        let mut by_type: HashMap<u8, Vec<String>> = HashMap::new();
        for k in SQL_KEYWORDS {
            if k.token_type != b'F'
                && k.word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b' ')
            {
                by_type
                    .entry(k.token_type)
                    .or_default()
                    .push(k.word.to_ascii_lowercase());
            }
        }
        let mut kinds: Vec<u8> = by_type.keys().copied().collect();
        kinds.sort_unstable();
        let mut next = super::super::super::random_below(0x2545_f491_4f6c_dd1du64);
        let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_";
        let word = |next: &mut dyn FnMut(usize) -> usize| -> String {
            let keyword = |next: &mut dyn FnMut(usize) -> usize| {
                let list = &by_type[&kinds[next(kinds.len())]];
                list[next(list.len())].clone()
            };
            match next(10) {
                0..=3 => keyword(next),
                4 => format!("{}{}", next(100), keyword(next)),
                5..=7 => plain[next(plain.len())].to_string(),
                _ => (0..1 + next(9))
                    .map(|_| char::from(alphabet[next(alphabet.len())]))
                    .collect(),
            }
        };
        let (mut cleared, mut flagged) = (0, 0);
        for _ in 0..60_000 {
            let words = 1 + next(7);
            let value: Vec<String> = (0..words).map(|_| word(&mut next)).collect();
            let value = value.join(if next(3) == 0 { "  " } else { " " });
            let verdict = libinjectionrs::detect_sqli(value.as_bytes()).is_injection();
            flagged += usize::from(verdict);
            if cannot_be_sqli(value.as_bytes()) {
                cleared += 1;
                assert!(!verdict, "cleared {value:?}, which libinjection flags");
            }
        }
        assert!(cleared > 10_000, "the shortcut cleared only {cleared}");
        assert!(
            flagged > 200,
            "only {flagged} values flagged: the words no longer exercise libinjection"
        );
        assert!(cannot_be_sqli(b"field123"));
        assert!(cannot_be_sqli(b"blue shoes"));
        assert!(cannot_be_sqli(b"some ordinary form text value 12"));
        assert!(!cannot_be_sqli(b"1 union select 2"));
        assert!(!cannot_be_sqli(b"1' or '1'='1"));
    }
}
