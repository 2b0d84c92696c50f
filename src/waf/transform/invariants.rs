//! Properties every transformation keeps, whatever the input. The fuzz
//! target `fuzz_targets/transformations.rs` and the unit tests below check
//! them; a failure names the transformation and the property.

use super::{NAMES, Transform};

/// Transformations whose output is never longer than their input.
const SHRINKING: &[Transform] = &[
    Transform::UrlDecode,
    Transform::UrlDecodeUni,
    Transform::HtmlEntityDecode,
    Transform::JsDecode,
    Transform::CssDecode,
    Transform::EscapeSeqDecode,
    Transform::Base64Decode,
    Transform::Base64DecodeExt,
    Transform::HexDecode,
    Transform::SqlHexDecode,
    Transform::RemoveNulls,
    Transform::RemoveWhitespace,
    Transform::CompressWhitespace,
    Transform::Trim,
    Transform::TrimLeft,
    Transform::TrimRight,
    Transform::ReplaceComments,
    Transform::RemoveCommentsChar,
    Transform::CmdLine,
    Transform::NormalisePath,
    Transform::NormalisePathWin,
    Transform::Lowercase,
    Transform::Uppercase,
    Transform::ReplaceNulls,
];

/// Transformations for which applying twice equals applying once.
const IDEMPOTENT: &[Transform] = &[
    Transform::Lowercase,
    Transform::Uppercase,
    Transform::RemoveNulls,
    Transform::ReplaceNulls,
    Transform::RemoveWhitespace,
    Transform::CompressWhitespace,
    Transform::Trim,
    Transform::TrimLeft,
    Transform::TrimRight,
    Transform::NormalisePath,
    Transform::NormalisePathWin,
    Transform::ParityZero7bit,
];

/// Checks every property of every transformation on `input`.
pub fn check_all(input: &[u8]) -> Result<(), String> {
    for (_, t) in NAMES {
        check(*t, input)?;
    }
    Ok(())
}

fn apply(t: Transform, input: &[u8]) -> Vec<u8> {
    t.apply(input).unwrap_or_else(|| input.to_vec())
}

pub fn check(t: Transform, input: &[u8]) -> Result<(), String> {
    let fail = |what: &str| {
        Err(format!(
            "{}: {what} (input {:?})",
            t.name(),
            String::from_utf8_lossy(input)
        ))
    };
    if t.leaves_unchanged(input) && t.compute(input).is_some() {
        return fail("the quick check said unchanged, the transformation changes it");
    }
    let changed = t.apply(input);
    if changed.as_deref() == Some(input) {
        return fail("reported a change but returned the input");
    }
    let out = changed.unwrap_or_else(|| input.to_vec());
    if SHRINKING.contains(&t) && out.len() > input.len() {
        return fail("output longer than input");
    }
    if IDEMPOTENT.contains(&t) && apply(t, &out) != out {
        return fail("not idempotent");
    }
    let ok = match t {
        Transform::Lowercase => !out.iter().any(u8::is_ascii_uppercase),
        Transform::Uppercase => !out.iter().any(u8::is_ascii_lowercase),
        Transform::RemoveNulls => !out.contains(&0),
        Transform::ReplaceNulls => !out.contains(&0) && out.len() == input.len(),
        Transform::Length => out == input.len().to_string().as_bytes(),
        Transform::Md5 => out.len() == 16,
        Transform::Sha1 => out.len() == 20,
        Transform::HexEncode => out.len() == input.len() * 2,
        Transform::HexDecode => apply(Transform::HexEncode, &out).len() == input.len() / 2 * 2,
        Transform::Base64Encode => {
            apply(Transform::Base64Decode, &out) == input && out.len().is_multiple_of(4)
        }
        Transform::ParityZero7bit => out.iter().all(|b| *b < 0x80),
        Transform::ParityEven7bit => out.iter().all(|b| b.count_ones().is_multiple_of(2)),
        Transform::ParityOdd7bit => out.iter().all(|b| b.count_ones() % 2 == 1),
        Transform::NormalisePathWin => !out.contains(&b'\\'),
        _ => true,
    };
    if !ok {
        return fail("output breaks the transformation's definition");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of hostile inputs: escapes, NULs, high
    /// bytes, broken UTF-8, comment and path markers.
    fn corpus() -> Vec<Vec<u8>> {
        const PIECES: &[&[u8]] = &[
            b"%",
            b"%2",
            b"%2f",
            b"%u",
            b"%uff0",
            b"%uff01",
            b"+",
            b"\\",
            b"\\x4",
            b"\\x41",
            b"\\u00",
            b"\\u0041",
            b"\\0",
            b"\\777",
            b"&#",
            b"&#x",
            b"&#x41;",
            b"&amp",
            b"&nbsp;",
            b"/*",
            b"*/",
            b"<!--",
            b"-->",
            b"--",
            b"#",
            b"../",
            b"./",
            b"//",
            b"\\..\\",
            b"0x",
            b"0x41",
            b"=",
            b"==",
            b"QUJD",
            b" ",
            b"\t\n",
            b"\0",
            b"\xa0",
            b"\xff",
            b"\xc3",
            b"\xc3\xa9",
            b"\xe2\x82",
            b"A",
            b"z",
            b"^",
            b"\"",
            b"'",
            b",",
            b";",
            b"(",
            b"[",
            b"]",
            b".",
        ];
        let mut next = crate::test_rng::xorshift(0x9e37_79b9_7f4a_7c15);
        (0..3000)
            .map(|_| {
                let n = (next() % 12) as usize;
                (0..n)
                    .flat_map(|_| PIECES[(next() % PIECES.len() as u64) as usize].to_vec())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_transformation_keeps_its_invariants_on_hostile_input() {
        for input in corpus() {
            if let Err(e) = check_all(&input) {
                panic!("{e}");
            }
        }
    }
}
