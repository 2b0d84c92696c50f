//! The decoding transformations, lenient the way ModSecurity's are: an
//! escape that does not decode is kept as written (or its marker dropped,
//! where ModSecurity drops it), never an error, and output is never longer
//! than input.

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_hex(b: u8) -> bool {
    hex_value(b).is_some()
}

/// Two hex digits to a byte; callers check they are hex.
fn x2c(hi: u8, lo: u8) -> u8 {
    (hex_value(hi).unwrap_or(0) << 4) | hex_value(lo).unwrap_or(0)
}

/// ModSecurity's unchecked digit conversion, for `hexDecode`, which
/// decodes any pair of characters.
fn loose_digit(c: u8) -> u8 {
    if c >= b'A' {
        ((c & 0xdf).wrapping_sub(b'A')).wrapping_add(10)
    } else {
        c.wrapping_sub(b'0')
    }
}

/// The low byte of a `%uHHHH` / `\uHHHH` code, with full-width ASCII
/// (U+FF01–U+FF5E) folded onto ASCII as ModSecurity does without a
/// unicode map.
fn unicode_low_byte(digits: &[u8]) -> u8 {
    let mut c = x2c(digits[2], digits[3]);
    if c > 0 && c < 0x5f && matches!(digits[0], b'f' | b'F') && matches!(digits[1], b'f' | b'F') {
        c += 0x20;
    }
    c
}

/// Where the next `%` or `+` is. Form text has a `+` every few bytes,
/// and below a few dozen bytes memchr's setup costs more than a plain walk.
fn next_escape(rest: &[u8]) -> Option<usize> {
    if rest.len() < 32 {
        rest.iter().position(|b| matches!(b, b'%' | b'+'))
    } else {
        memchr::memchr2(b'%', b'+', rest)
    }
}

/// `urlDecode` (`uni`: also `%uHHHH`). `+` is a space.
pub fn url(input: &[u8], uni: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    url_into(input, uni, &mut out);
    out
}

/// [`url`] into `out` (its contents replaced): `multiMatch` steps reuse
/// one buffer across values instead of allocating per step.
pub fn url_into(input: &[u8], uni: bool, out: &mut Vec<u8>) {
    out.clear();
    // Most values hold no `%`: a copy with each `+` made a space, in one
    // pass that compiles to vector code, beats copying the runs between.
    if memchr::memchr(b'%', input).is_none() {
        out.extend_from_slice(input);
        for b in out.iter_mut() {
            if *b == b'+' {
                *b = b' ';
            }
        }
        return;
    }
    let mut i = 0;
    while i < input.len() {
        // Runs without an escape are copied whole: most of a value is one.
        let Some(run) = next_escape(&input[i..]) else {
            out.extend_from_slice(&input[i..]);
            break;
        };
        out.extend_from_slice(&input[i..i + run]);
        i += run;
        let (byte, width) = match input[i] {
            b'%' => percent(input, i, uni),
            _ => (b' ', 1),
        };
        out.push(byte);
        i += width;
    }
}

/// The byte a `%` at `at` decodes to and how many input bytes it takes:
/// `%HH`, with `uni` also `%uHHHH`; anything else leaves the `%` as is.
fn percent(input: &[u8], at: usize, uni: bool) -> (u8, usize) {
    let digits = |from: usize, n: usize| {
        input
            .get(from..from + n)
            .filter(|d| d.iter().all(|b| is_hex(*b)))
    };
    if uni
        && matches!(input.get(at + 1), Some(b'u' | b'U'))
        && let Some(d) = digits(at + 2, 4)
    {
        return (unicode_low_byte(d), 6);
    }
    match digits(at + 1, 2) {
        Some(d) => (x2c(d[0], d[1]), 3),
        None => (b'%', 1),
    }
}

/// `htmlEntityDecode`: `&#DDD;`, `&#xHH;`, and `&quot; &amp; &lt; &gt;
/// &nbsp;`, with or without the semicolon. Numeric entities give one byte.
pub fn html_entities(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let Some(run) = memchr::memchr(b'&', &input[i..]) else {
            out.extend_from_slice(&input[i..]);
            break;
        };
        out.extend_from_slice(&input[i..i + run]);
        i += run;
        if i + 1 < input.len() {
            if input[i + 1] == b'#' {
                let hex = matches!(input.get(i + 2), Some(b'x' | b'X'));
                let start = if hex { i + 3 } else { i + 2 };
                let mut j = start;
                let mut value: u32 = 0;
                while j < input.len() {
                    let digit = if hex {
                        hex_value(input[j]).map(u32::from)
                    } else {
                        input[j]
                            .is_ascii_digit()
                            .then(|| u32::from(input[j] - b'0'))
                    };
                    let Some(d) = digit else { break };
                    value = value
                        .saturating_mul(if hex { 16 } else { 10 })
                        .saturating_add(d);
                    j += 1;
                }
                if j > start {
                    out.push(value as u8);
                    i = j;
                    if input.get(i) == Some(&b';') {
                        i += 1;
                    }
                    continue;
                }
            } else {
                let start = i + 1;
                let mut j = start;
                while j < input.len() && input[j].is_ascii_alphanumeric() {
                    j += 1;
                }
                let decoded = match input[start..j].to_ascii_lowercase().as_slice() {
                    b"quot" => Some(b'"'),
                    b"amp" => Some(b'&'),
                    b"lt" => Some(b'<'),
                    b"gt" => Some(b'>'),
                    b"nbsp" => Some(0xa0),
                    _ => None,
                };
                if let Some(c) = decoded {
                    out.push(c);
                    i = j;
                    if input.get(i) == Some(&b';') {
                        i += 1;
                    }
                    continue;
                }
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn simple_escape(c: u8) -> Option<u8> {
    Some(match c {
        b'a' => 0x07,
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'v' => 0x0b,
        _ => return None,
    })
}

fn is_octal(b: u8) -> bool {
    (b'0'..=b'7').contains(&b)
}

/// Up to three octal digits from `input[at..]`: value and digit count.
fn octal(input: &[u8], at: usize, clamp: bool) -> (u8, usize) {
    let mut n = 0;
    while n < 3 && at + n < input.len() && is_octal(input[at + n]) {
        n += 1;
    }
    // JavaScript's \OOO stops before a value over 0377.
    if clamp && n == 3 && input[at] > b'3' {
        n = 2;
    }
    let value = input[at..at + n]
        .iter()
        .fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
    (value as u8, n)
}

/// `jsDecode`: `\uHHHH` (low byte, full-width folded), `\xHH`, `\OOO`, the
/// one-letter escapes, and `\c` for any other `c`.
pub fn js(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    js_into(input, &mut out);
    out
}

/// [`js`] into `out` (its contents replaced).
pub fn js_into(input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < input.len() {
        let Some(run) = memchr::memchr(b'\\', &input[i..]) else {
            out.extend_from_slice(&input[i..]);
            break;
        };
        out.extend_from_slice(&input[i..i + run]);
        i += run;
        if i + 5 < input.len()
            && input[i + 1] == b'u'
            && input[i + 2..i + 6].iter().all(|b| is_hex(*b))
        {
            out.push(unicode_low_byte(&input[i + 2..i + 6]));
            i += 6;
        } else if i + 3 < input.len()
            && input[i + 1] == b'x'
            && is_hex(input[i + 2])
            && is_hex(input[i + 3])
        {
            out.push(x2c(input[i + 2], input[i + 3]));
            i += 4;
        } else if i + 1 < input.len() && is_octal(input[i + 1]) {
            let (value, n) = octal(input, i + 1, true);
            out.push(value);
            i += 1 + n;
        } else if i + 1 < input.len() {
            let c = input[i + 1];
            out.push(simple_escape(c).unwrap_or(c));
            i += 2;
        } else {
            out.push(b'\\');
            i += 1;
        }
    }
}

/// `escapeSeqDecode`: ANSI C escapes (`\n`, `\xHH`, `\OOO`, ...); an
/// escape that does not decode keeps its character and loses the `\`.
pub fn escape_seq(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let c = input[i + 1];
        if let Some(decoded) = simple_escape(c).or(match c {
            b'\\' | b'?' | b'\'' | b'"' => Some(c),
            _ => None,
        }) {
            out.push(decoded);
            i += 2;
        } else if matches!(c, b'x' | b'X')
            && i + 3 < input.len()
            && is_hex(input[i + 2])
            && is_hex(input[i + 3])
        {
            out.push(x2c(input[i + 2], input[i + 3]));
            i += 4;
        } else if is_octal(c) {
            let (value, n) = octal(input, i + 1, false);
            out.push(value);
            i += 1 + n;
        } else {
            out.push(c);
            i += 2;
        }
    }
    out
}

/// `cssDecode`: `\` and 1–6 hex digits (the last two make the byte;
/// full-width ASCII folded), one blank after them swallowed; `\` and a
/// newline removed; `\` and any other character gives the character.
pub fn css(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        i += 1;
        if i >= input.len() {
            break;
        }
        let mut j = 0;
        while j < 6 && i + j < input.len() && is_hex(input[i + j]) {
            j += 1;
        }
        if j == 0 {
            if input[i] != b'\n' {
                out.push(input[i]);
            }
            i += 1;
            continue;
        }
        let digits = &input[i..i + j];
        let (mut c, full_width_check) = match j {
            1 => (hex_value(digits[0]).unwrap_or(0), false),
            2 | 3 => (x2c(digits[j - 2], digits[j - 1]), false),
            4 => (x2c(digits[2], digits[3]), true),
            5 => (x2c(digits[3], digits[4]), digits[0] == b'0'),
            _ => (
                x2c(digits[4], digits[5]),
                digits[0] == b'0' && digits[1] == b'0',
            ),
        };
        if full_width_check
            && c > 0
            && c < 0x5f
            && matches!(digits[j - 3], b'f' | b'F')
            && matches!(digits[j - 4], b'f' | b'F')
        {
            c += 0x20;
        }
        out.push(c);
        i += j;
        if i < input.len() && input[i].is_ascii_whitespace() {
            i += 1;
        }
    }
    out
}

/// `hexDecode`: pairs of characters to bytes, a trailing odd one dropped.
pub fn hex(input: &[u8]) -> Vec<u8> {
    input
        .chunks_exact(2)
        .map(|pair| (loose_digit(pair[0]) << 4).wrapping_add(loose_digit(pair[1])))
        .collect()
}

/// `sqlHexDecode`: `0xHHHH...` runs decoded in place.
pub fn sql_hex(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'0'
            && matches!(input.get(i + 1), Some(b'x' | b'X'))
            && input.get(i + 2).is_some_and(|b| is_hex(*b))
            && input.get(i + 3).is_some_and(|b| is_hex(*b))
        {
            i += 2;
            while i + 1 < input.len() && is_hex(input[i]) && is_hex(input[i + 1]) {
                out.push(x2c(input[i], input[i + 1]));
                i += 2;
            }
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// Each byte's base64 value; `NOT_BASE64` outside the alphabet.
const BASE64_VALUES: [u8; 256] = {
    let mut table = [NOT_BASE64; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const NOT_BASE64: u8 = 0xff;
const NOT_BASE64_BIT: u8 = 0x80;

/// `base64Decode` stops at the first character outside the alphabet;
/// `base64DecodeExt` (`forgiving`) skips such characters. Both stop at `=`.
pub fn base64(input: &[u8], forgiving: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    base64_into(input, forgiving, &mut out);
    out
}

/// [`base64`] into `out` (its contents replaced).
pub fn base64_into(input: &[u8], forgiving: bool, out: &mut Vec<u8>) {
    out.clear();
    // Whole groups of four alphabet characters first, three bytes each;
    // `base64_by_character` takes over at the first `=` or stranger.
    let mut rest = input;
    while let [a, b, c, d, tail @ ..] = rest {
        let values = [a, b, c, d].map(|x| BASE64_VALUES[usize::from(*x)]);
        // Alphabet values are below 64; `NOT_BASE64` has the top bit. One
        // test for the four (`contains` is a memchr call per group).
        if (values[0] | values[1] | values[2] | values[3]) & NOT_BASE64_BIT != 0 {
            break;
        }
        let group = values
            .iter()
            .fold(0u32, |acc, v| (acc << 6) | u32::from(*v));
        out.extend_from_slice(&group.to_be_bytes()[1..]);
        rest = tail;
    }
    base64_by_character(rest, forgiving, out);
}

/// One character at a time, as ModSecurity's decoder reads them.
fn base64_by_character(input: &[u8], forgiving: bool, out: &mut Vec<u8>) {
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in input {
        if b == b'=' {
            break;
        }
        let v = BASE64_VALUES[usize::from(b)];
        if v == NOT_BASE64 {
            if forgiving {
                continue;
            }
            break;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_by_groups_decodes_as_by_character_wherever_the_alphabet_ends() {
        let alphabet = b"QWxhZGRpbjpvcGVuIHNlc2FtZQ+/09az";
        for len in 0..alphabet.len() {
            for stop in [
                &b"="[..],
                b"==",
                b" ",
                b"\n",
                b"%",
                b"\xff",
                b"=QUJD",
                b"!QUJD",
            ] {
                let mut input = alphabet[..len].to_vec();
                input.extend_from_slice(stop);
                input.extend_from_slice(&alphabet[..len / 2]);
                for forgiving in [false, true] {
                    let mut by_character = Vec::new();
                    base64_by_character(&input, forgiving, &mut by_character);
                    assert_eq!(
                        base64(&input, forgiving),
                        by_character,
                        "{:?} forgiving={forgiving}",
                        String::from_utf8_lossy(&input)
                    );
                }
            }
        }
    }

    #[test]
    fn escapes_at_the_edges_of_plain_runs_decode() {
        assert_eq!(url(b"a%41b+c%", true), b"aAb c%");
        assert_eq!(url(b"%u0041%4", true), b"A%4");
        assert_eq!(js(br"ab\x41\u0042c\",), br"abABc\");
        assert_eq!(html_entities(b"x&lt;y&#65&"), b"x<yA&");
    }
}
