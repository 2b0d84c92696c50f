//! The text-shaping transformations: whitespace, comments, paths, command
//! lines, case-free encodings and digests.

use md5::Digest;

/// C `isspace` plus the no-break space ModSecurity also counts.
pub fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

/// Whether two spaces stand side by side in `input`: what decides whether
/// `compressWhitespace` and `cmdLine` leave a value of words alone. Asked
/// of every argument of a form, so eight bytes at a time: each space
/// becomes a mark (exact, no false marks), and two marks side by side,
/// within a word or across two, are a double space.
pub fn has_double_space(input: &[u8]) -> bool {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const SPACES: u64 = 0x2020_2020_2020_2020;
    let mut chunks = input.chunks_exact(8);
    let mut last_was_space = false;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ SPACES;
        // The top bit of each byte of `x` that is zero, and of no other.
        let marks = !(((x & LOW7).wrapping_add(LOW7)) | x) & HIGH;
        if marks & (marks << 8) != 0 || (last_was_space && marks & 0x80 != 0) {
            return true;
        }
        last_was_space = marks >> 63 != 0;
    }
    for &b in chunks.remainder() {
        let space = b == b' ';
        if space && last_was_space {
            return true;
        }
        last_was_space = space;
    }
    false
}

/// `input` without its whitespace. Every byte is written and the cursor
/// moves past the kept ones only: no branch per byte (`extend` with a
/// filter checked the capacity at each one, and showed in profiles of
/// CRS's `multiMatch` chains).
pub fn remove_whitespace(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    remove_whitespace_into(input, &mut out);
    out
}

/// [`remove_whitespace`] into `out` (its contents replaced).
pub fn remove_whitespace_into(input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(input.len(), 0);
    let mut kept = 0;
    for &b in input {
        if let Some(slot) = out.get_mut(kept) {
            *slot = b;
        }
        kept += usize::from(!is_space(b));
    }
    out.truncate(kept);
}

pub fn compress_whitespace(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    compress_whitespace_into(input, &mut out);
    out
}

/// [`compress_whitespace`] into `out` (its contents replaced).
pub fn compress_whitespace_into(input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut in_space = false;
    for &b in input {
        if is_space(b) {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(b);
            in_space = false;
        }
    }
}

pub fn trim(input: &[u8], left: bool, right: bool) -> Vec<u8> {
    let ws = |b: &u8| matches!(*b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let start = if left {
        input.iter().position(|b| !ws(b)).unwrap_or(input.len())
    } else {
        0
    };
    let end = if right {
        input.iter().rposition(|b| !ws(b)).map_or(start, |p| p + 1)
    } else {
        input.len()
    };
    input[start..end.max(start)].to_vec()
}

/// `cmdLine`: what a Windows or Unix shell would make of a command, for
/// matching: `\ " ' ^` dropped, `,` `;` and blanks one space, no space
/// before `/` or `(`, lower case.
pub fn cmd_line(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    cmd_line_into(input, &mut out);
    out
}

/// [`cmd_line`] into `out` (its contents replaced).
pub fn cmd_line_into(input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut in_space = false;
    for &b in input {
        match b {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => {
                if !in_space {
                    out.push(b' ');
                    in_space = true;
                }
            }
            b'/' | b'(' => {
                if in_space && out.last() == Some(&b' ') {
                    out.pop();
                }
                in_space = false;
                out.push(b);
            }
            _ => {
                out.push(b.to_ascii_lowercase());
                in_space = false;
            }
        }
    }
}

/// `normalisePath`: `//` collapsed, `.` segments removed, `..` resolved
/// where there is something to go back over (never above the root of an
/// absolute path). `win`: backslashes are separators too.
pub fn normalise_path(input: &[u8], win: bool) -> Vec<u8> {
    let path: Vec<u8> = if win {
        input
            .iter()
            .map(|&b| if b == b'\\' { b'/' } else { b })
            .collect()
    } else {
        input.to_vec()
    };
    if path.is_empty() {
        return path;
    }
    let absolute = path[0] == b'/';
    let trailing = path.last() == Some(&b'/');
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in path.split(|b| *b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                if segments.last().is_some_and(|s| *s != b"..") {
                    segments.pop();
                } else if !absolute {
                    segments.push(segment);
                }
            }
            _ => segments.push(segment),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    if absolute {
        out.push(b'/');
    }
    out.extend_from_slice(&segments.join(&b'/'));
    if trailing && !segments.is_empty() {
        out.push(b'/');
    }
    out
}

/// `replaceComments`: each `/* ... */` becomes one space; an unterminated
/// one runs to the end.
pub fn replace_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i..].starts_with(b"/*") {
            out.push(b' ');
            match find(&input[i + 2..], b"*/") {
                Some(end) => i += 2 + end + 2,
                None => break,
            }
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// `removeComments`: `/* */` and `<!-- -->` removed (an unterminated one
/// leaves a space), and `--` or `#` ends the value. A value that was
/// nothing but a closed comment becomes a single NUL, as in ModSecurity
/// (v2 and v3 alike), so rules written against it see the same bytes.
pub fn remove_comments(input: &[u8]) -> Vec<u8> {
    let out = strip_comments(input);
    if out.is_empty() && !input.is_empty() {
        return vec![0];
    }
    out
}

fn strip_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        let (open, close): (usize, &[u8]) = if rest.starts_with(b"/*") {
            (2, b"*/")
        } else if rest.starts_with(b"<!--") {
            (4, b"-->")
        } else if rest.starts_with(b"--") || rest[0] == b'#' {
            break;
        } else {
            out.push(input[i]);
            i += 1;
            continue;
        };
        match find(&rest[open..], close) {
            Some(end) => i += open + end + close.len(),
            None => {
                out.push(b' ');
                break;
            }
        }
    }
    out
}

/// `removeCommentsChar`: the comment markers `/*`, `*/`, `<!--`, `-->`,
/// `--` and `#` removed, what they enclose kept.
pub fn remove_comment_chars(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        let skip = [&b"<!--"[..], b"-->", b"/*", b"*/", b"--", b"#"]
            .iter()
            .find(|m| rest.starts_with(m))
            .map(|m| m.len());
        match skip {
            Some(n) => i += n,
            None => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub enum Parity {
    Even,
    Odd,
    Zero,
}

pub fn parity(input: &[u8], parity: Parity) -> Vec<u8> {
    input
        .iter()
        .map(|&b| {
            let low = b & 0x7f;
            let odd_ones = low.count_ones() % 2 == 1;
            match parity {
                Parity::Zero => low,
                Parity::Even if odd_ones => low | 0x80,
                Parity::Odd if !odd_ones => low | 0x80,
                _ => low,
            }
        })
        .collect()
}

pub fn hex_encode(input: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(input.len() * 2);
    for &b in input {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
    out
}

/// `urlEncode`: letters, digits and `*` kept, space as `+`, the rest `%hh`.
pub fn url_encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3);
    for &b in input {
        if b.is_ascii_alphanumeric() || b == b'*' {
            out.push(b);
        } else if b == b' ' {
            out.push(b'+');
        } else {
            out.push(b'%');
            out.extend_from_slice(&hex_encode(&[b]));
        }
    }
    out
}

pub fn base64_encode(input: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (k, b)| acc | u32::from(*b) << (16 - 8 * k));
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * k)) & 0x3f) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

/// `utf8toUnicode`: each multi-byte UTF-8 character as `%uHHHH`; bytes
/// that are not valid UTF-8 are kept.
pub fn utf8_to_unicode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 2);
    let mut rest = input;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                push_unicode(&mut out, valid);
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                push_unicode(&mut out, std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(after.len());
                out.extend_from_slice(&after[..bad]);
                rest = &after[bad..];
            }
        }
    }
    out
}

fn push_unicode(out: &mut Vec<u8>, text: &str) {
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c as u8);
        } else {
            out.extend_from_slice(format!("%u{:04x}", u32::from(c)).as_bytes());
        }
    }
}

pub fn md5(input: &[u8]) -> Vec<u8> {
    md5::Md5::digest(input).to_vec()
}

pub fn sha1(input: &[u8]) -> Vec<u8> {
    sha1::Sha1::digest(input).to_vec()
}

/// `phpArgsNames`: the name PHP gives a request argument: leading blanks
/// dropped, blanks and dots in the base name as `_`, `[index]` parts kept
/// (blanks after `[` dropped) and anything after the last one cut; an
/// unclosed first `[` becomes `_` and the rest stays as written.
pub fn php_args_names(input: &[u8]) -> Vec<u8> {
    let start = input.iter().position(|b| *b != b' ').unwrap_or(input.len());
    let name = &input[start..];
    let mangle = |part: &[u8]| -> Vec<u8> {
        part.iter()
            .map(|&b| if b == b' ' || b == b'.' { b'_' } else { b })
            .collect()
    };
    let Some(open) = name.iter().position(|b| *b == b'[') else {
        return mangle(name);
    };
    if open == 0 {
        return Vec::new();
    }
    let mut out = mangle(&name[..open]);
    let mut rest = &name[open..];
    let mut first = true;
    while rest.first() == Some(&b'[') {
        let inner = &rest[1..];
        let skip = inner
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            .unwrap_or(inner.len());
        let trimmed = &inner[skip..];
        match trimmed.iter().position(|b| *b == b']') {
            Some(close) => {
                out.push(b'[');
                out.extend_from_slice(&trimmed[..close]);
                out.push(b']');
                rest = &trimmed[close + 1..];
                first = false;
            }
            None => {
                if first {
                    out.push(b'_');
                    out.extend_from_slice(inner);
                }
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    /// Against the plain definition, over values of spaces and other bytes
    /// at every length and offset (chunk edges included).
    #[test]
    fn has_double_space_finds_exactly_two_spaces_side_by_side() {
        let mut next = crate::test_rng::xorshift(0x51ce_5eed_0000_0001);
        let alphabet = b"  a\t\xa0!\x00\x20";
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let value: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let expected = value.windows(2).any(|w| w == b"  ");
            assert_eq!(has_double_space(&value), expected, "{value:?}");
        }
        assert!(has_double_space(b"1234567  "));
        assert!(has_double_space(b"1234567 8 ... x  "));
        assert!(!has_double_space(b"some ordinary form text value 12"));
    }

    use super::*;

    #[test]
    fn remove_whitespace_drops_every_space_byte_and_keeps_the_rest_in_order() {
        let all: Vec<u8> = (0..=255u8)
            .chain(b" a\tb\r\n c\xa0d ".iter().copied())
            .collect();
        let expected: Vec<u8> = all.iter().copied().filter(|b| !is_space(*b)).collect();
        assert_eq!(remove_whitespace(&all), expected);
        assert_eq!(remove_whitespace(b""), b"");
        assert_eq!(remove_whitespace(b" \t\n"), b"");
    }
}
