//! The small operators: string tests, numeric comparisons with C `atoi`
//! semantics, byte ranges, URL-encoding validation and the Luhn check.

use super::TextOp;

/// C `atoi`: leading blanks, a sign, digits; anything else ends it, and no
/// digits is 0. Saturates instead of overflowing.
pub fn atoi(text: &[u8]) -> i64 {
    let mut i = 0;
    while i < text.len() && text[i].is_ascii_whitespace() {
        i += 1;
    }
    let negative = match text.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut n: i64 = 0;
    while i < text.len() && text[i].is_ascii_digit() {
        n = n
            .saturating_mul(10)
            .saturating_add(i64::from(text[i] - b'0'));
        i += 1;
    }
    if negative { -n } else { n }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    memchr_find(haystack, needle, 0)
}

/// Haystacks up to this long are searched without building a searcher.
const SHORT_HAYSTACK: usize = 512;

/// The first `needle` in `haystack` at or after `from`. Long haystacks get
/// memchr's substring searcher; short ones (CRS's `@within` lists, a few
/// hundred bytes searched once per value) jump from one occurrence of the
/// needle's second byte to the next, since building the searcher cost more
/// than the search (and a compare at every position more still).
fn memchr_find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let rest = haystack.get(from..)?;
    let found = match needle {
        [] => Some(0),
        [only] => memchr::memchr(*only, rest),
        [_, second, ..] if rest.len() <= SHORT_HAYSTACK => {
            // `second` is at least as selective as the first byte in CRS's
            // lists, which open every entry with `/` or `.`.
            let mut at = 1;
            loop {
                let hit = at + memchr::memchr(*second, rest.get(at..)?)?;
                let start = hit - 1;
                if rest.get(start..start + needle.len()) == Some(needle) {
                    break Some(start);
                }
                at = hit + 1;
            }
        }
        _ => memchr::memmem::find(rest, needle),
    };
    found.map(|at| at + from)
}

pub fn text_op(op: TextOp, input: &[u8], param: &[u8]) -> bool {
    match op {
        TextOp::BeginsWith => input.starts_with(param),
        TextOp::EndsWith => input.ends_with(param),
        TextOp::Contains | TextOp::Strmatch => find(input, param).is_some(),
        TextOp::Streq => input == param,
        TextOp::Within => find(param, input).is_some(),
        TextOp::ContainsWord => {
            if param.is_empty() {
                return true;
            }
            let mut from = 0;
            while let Some(at) = memchr_find(input, param, from) {
                let end = at + param.len();
                let before_ok = at == 0 || !is_word(input[at - 1]);
                let after_ok = end == input.len() || !is_word(input[end]);
                if before_ok && after_ok {
                    return true;
                }
                from = at + 1;
            }
            false
        }
        TextOp::Eq => atoi(input) == atoi(param),
        TextOp::Ge => atoi(input) >= atoi(param),
        TextOp::Gt => atoi(input) > atoi(param),
        TextOp::Le => atoi(input) <= atoi(param),
        TextOp::Lt => atoi(input) < atoi(param),
    }
}

/// `@validateByteRange 10,13,32-126`: the allowed bytes. Numbers are read
/// as `atoi` reads them; a range out of 0–255 is clamped.
pub fn byte_ranges(param: &str) -> Box<[bool; 256]> {
    let mut allowed = Box::new([false; 256]);
    for part in param.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (atoi(lo.as_bytes()), atoi(hi.as_bytes())),
            None => {
                let n = atoi(part.as_bytes());
                (n, n)
            }
        };
        let (lo, hi) = (lo.clamp(0, 255) as usize, hi.clamp(0, 255) as usize);
        for slot in allowed.iter_mut().take(hi + 1).skip(lo) {
            *slot = true;
        }
    }
    allowed
}

/// Whether every `%` starts a valid `%HH` escape.
pub fn validate_url_encoding(input: &[u8]) -> bool {
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            if i + 2 >= input.len() {
                return false;
            }
            if !(input[i + 1].is_ascii_hexdigit() && input[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// The Luhn checksum over the digits of a candidate card number (13 to 19
/// digits; separators ignored).
pub fn luhn(candidate: &[u8]) -> bool {
    let digits: Vec<u8> = candidate
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| b - b'0')
        .collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The short-haystack search finds what memchr's searcher finds, at
    /// the same place, from every starting point.
    #[test]
    fn short_substring_search_agrees_with_memmem() {
        let mut next = super::super::random_below(0x5851_f42d_4c95_7f2d);
        for _ in 0..20_000 {
            let alphabet = b"/ab.-";
            let text = |next: &mut dyn FnMut(usize) -> usize, len: usize| -> Vec<u8> {
                (0..len).map(|_| alphabet[next(alphabet.len())]).collect()
            };
            let len = next(40);
            let haystack = text(&mut next, len);
            let len = next(5);
            let needle = text(&mut next, len);
            for from in 0..=haystack.len() + 1 {
                let expected = haystack
                    .get(from..)
                    .and_then(|rest| memchr::memmem::find(rest, &needle))
                    .map(|at| at + from);
                assert_eq!(
                    memchr_find(&haystack, &needle, from),
                    expected,
                    "{needle:?} in {haystack:?} from {from}"
                );
            }
        }
        let list = b"/content-encoding/ /proxy/ /lock-token/ /content-range/ /if/";
        assert!(text_op(TextOp::Within, b"/if/", list));
        assert!(!text_op(TextOp::Within, b"/host/", list));
    }

    #[test]
    fn atoi_like_c() {
        assert_eq!(atoi(b"  42abc"), 42);
        assert_eq!(atoi(b"-7"), -7);
        assert_eq!(atoi(b"xxx"), 0);
        assert_eq!(atoi(b""), 0);
        assert_eq!(atoi(b"99999999999999999999999"), i64::MAX);
    }

    #[test]
    fn url_encoding_validation() {
        assert!(validate_url_encoding(b"a%20b"));
        assert!(!validate_url_encoding(b"%"));
        assert!(!validate_url_encoding(b"%0"));
        assert!(!validate_url_encoding(b"%0z"));
    }

    #[test]
    fn luhn_checks_real_numbers() {
        assert!(luhn(b"4111 1111 1111 1111"));
        assert!(!luhn(b"4111 1111 1111 1112"));
    }
}
