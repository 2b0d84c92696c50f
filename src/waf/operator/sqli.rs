//! `@detectSQLi`: libinjection (through the libinjectionrs port), with a
//! shortcut for the commonest benign values, which libinjectionrs spends
//! microseconds on (it is the costliest operator CRS runs on every
//! argument).
//!
//! The shortcut is a proof, not a guess. libinjection flags a value only
//! when its token fingerprint is on its blacklist. A value made of ASCII
//! letters, digits, `_` and blanks tokenizes into barewords and numbers
//! unless one of its words (or a digit-led word's tail, or two adjacent
//! words together) is in libinjection's keyword table; with none there,
//! every token is a bareword or a number, and no blacklisted fingerprint
//! is made of those alone (the test below checks that against the table
//! the crate ships, so an upgrade that changes it fails loudly).

use std::collections::HashSet;
use std::sync::OnceLock;

use libinjectionrs::sqli::sqli_data::SQL_KEYWORDS;

/// libinjection's verdict on `input`: the fingerprint when it is SQLi.
pub fn detect(input: &[u8]) -> Option<String> {
    if only_plain_words(input) {
        return None;
    }
    let result = libinjectionrs::detect_sqli(input);
    if result.is_injection() {
        Some(
            result
                .fingerprint
                .map(|fp| fp.to_string())
                .unwrap_or_default(),
        )
    } else {
        None
    }
}

/// Every word of libinjection's table (keywords, functions, operators,
/// fingerprints), upper-cased as the table keeps them.
fn table() -> &'static HashSet<&'static [u8]> {
    static TABLE: OnceLock<HashSet<&'static [u8]>> = OnceLock::new();
    TABLE.get_or_init(|| SQL_KEYWORDS.iter().map(|k| k.word.as_bytes()).collect())
}

fn in_table(word: &[u8]) -> bool {
    let mut upper = [0u8; 64];
    // Longer than any entry: a plain bareword.
    let Some(buf) = upper.get_mut(..word.len()) else {
        return false;
    };
    buf.copy_from_slice(word);
    buf.make_ascii_uppercase();
    table().contains(&*buf)
}

/// True when `input` provably tokenizes into barewords and numbers only
/// (see the module doc). False means only "not proven".
pub fn only_plain_words(input: &[u8]) -> bool {
    if input.is_empty()
        || input.len() > 512
        || !input
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b' ')
    {
        return false;
    }
    let mut previous: Option<&[u8]> = None;
    for word in input.split(|b| *b == b' ').filter(|w| !w.is_empty()) {
        if in_table(word) {
            return false;
        }
        // A number's parser may stop anywhere inside a digit-led word
        // (`0x1f`, `1e5`, `12abc`); whatever follows is a word of its own.
        if word[0].is_ascii_digit() && (1..word.len()).any(|i| in_table(&word[i..])) {
            return false;
        }
        // Two adjacent words may merge into one keyword (`ORDER BY`).
        if let Some(before) = previous {
            let mut pair = Vec::with_capacity(before.len() + 1 + word.len());
            pair.extend_from_slice(before);
            pair.push(b' ');
            pair.extend_from_slice(word);
            if in_table(&pair) {
                return false;
            }
        }
        previous = Some(word);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proof's premise: no blacklisted fingerprint is made of barewords
    /// (`n`) and numbers (`1`) only.
    #[test]
    fn no_blacklisted_fingerprint_is_barewords_and_numbers_only() {
        let fingerprints: Vec<&str> = SQL_KEYWORDS
            .iter()
            .filter(|k| k.token_type == b'F')
            .map(|k| k.word)
            .collect();
        assert!(fingerprints.len() > 1000, "the table has fingerprints");
        for fp in fingerprints {
            assert!(
                !fp[1..].bytes().all(|b| b == b'N' || b == b'1'),
                "fingerprint {fp} is barewords and numbers only"
            );
        }
    }

    /// Differential: every value the shortcut clears, libinjection clears
    /// too; and the shortcut does clear ordinary values.
    #[test]
    fn the_shortcut_never_clears_what_libinjection_flags() {
        let plain: Vec<&str> = vec![
            "blue",
            "shoes",
            "field12",
            "price",
            "42",
            "0x1f",
            "1e5",
            "12abc",
            "_id",
            "user_name",
            "x",
            "A1",
            "zz9",
            "0",
            "007",
            "Q",
            "ab_cd",
            "e",
            "1",
            "99problems",
        ];
        let keywords: Vec<String> = SQL_KEYWORDS
            .iter()
            .filter(|k| {
                k.token_type != b'F'
                    && k.word
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b' ')
            })
            .map(|k| k.word.to_ascii_lowercase())
            .collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_";
        let word = |next: &mut dyn FnMut(usize) -> usize| -> String {
            match next(8) {
                0 => keywords[next(keywords.len())].clone(),
                1 => format!("{}{}", next(100), keywords[next(keywords.len())]),
                2..=4 => plain[next(plain.len())].to_string(),
                _ => (0..1 + next(9))
                    .map(|_| char::from(alphabet[next(alphabet.len())]))
                    .collect(),
            }
        };
        let mut cleared = 0;
        for _ in 0..20_000 {
            let words = 1 + next(6);
            let value: Vec<String> = (0..words).map(|_| word(&mut next)).collect();
            let value = value.join(if next(3) == 0 { "  " } else { " " });
            if only_plain_words(value.as_bytes()) {
                cleared += 1;
                assert!(
                    !libinjectionrs::detect_sqli(value.as_bytes()).is_injection(),
                    "cleared {value:?}, which libinjection flags"
                );
            }
        }
        assert!(cleared > 1000, "the shortcut cleared only {cleared}");
        assert!(only_plain_words(b"field123"));
        assert!(only_plain_words(b"blue shoes"));
        assert!(!only_plain_words(b"1 union select 2"));
        assert!(!only_plain_words(b"1' or '1'='1"));
        assert!(detect(b"1' or '1'='1").is_some());
    }
}
