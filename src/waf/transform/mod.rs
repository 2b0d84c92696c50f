//! SecLang transformations (`t:`): byte-to-byte functions applied to a
//! value before the operator sees it, as ModSecurity defines them. Each
//! returns `None` when the value is unchanged, so a chain of them allocates
//! only where something changes.

mod decode;
/// `urlDecode` as a function, for the parsers of query strings and form
/// bodies (always a new buffer).
pub(crate) use decode::url as url_decode;
pub mod invariants;
pub(crate) mod text;

/// One transformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transform {
    Base64Decode,
    Base64DecodeExt,
    Base64Encode,
    CmdLine,
    CompressWhitespace,
    CssDecode,
    EscapeSeqDecode,
    HexDecode,
    HexEncode,
    HtmlEntityDecode,
    JsDecode,
    Length,
    Lowercase,
    Md5,
    NormalisePath,
    NormalisePathWin,
    ParityEven7bit,
    ParityOdd7bit,
    ParityZero7bit,
    PhpArgsNames,
    RemoveComments,
    RemoveCommentsChar,
    RemoveNulls,
    RemoveWhitespace,
    ReplaceComments,
    ReplaceNulls,
    Sha1,
    SqlHexDecode,
    Trim,
    TrimLeft,
    TrimRight,
    Uppercase,
    UrlDecode,
    UrlDecodeUni,
    UrlEncode,
    Utf8ToUnicode,
}

/// Names as rules write them (matched without case).
pub(crate) const NAMES: &[(&str, Transform)] = &[
    ("base64Decode", Transform::Base64Decode),
    ("base64DecodeExt", Transform::Base64DecodeExt),
    ("base64Encode", Transform::Base64Encode),
    ("cmdLine", Transform::CmdLine),
    ("compressWhitespace", Transform::CompressWhitespace),
    ("cssDecode", Transform::CssDecode),
    ("escapeSeqDecode", Transform::EscapeSeqDecode),
    ("hexDecode", Transform::HexDecode),
    ("hexEncode", Transform::HexEncode),
    ("htmlEntityDecode", Transform::HtmlEntityDecode),
    ("jsDecode", Transform::JsDecode),
    ("length", Transform::Length),
    ("lowercase", Transform::Lowercase),
    ("md5", Transform::Md5),
    ("normalisePath", Transform::NormalisePath),
    ("normalizePath", Transform::NormalisePath),
    ("normalisePathWin", Transform::NormalisePathWin),
    ("normalizePathWin", Transform::NormalisePathWin),
    ("parityEven7bit", Transform::ParityEven7bit),
    ("parityOdd7bit", Transform::ParityOdd7bit),
    ("parityZero7bit", Transform::ParityZero7bit),
    ("phpArgsNames", Transform::PhpArgsNames),
    ("removeComments", Transform::RemoveComments),
    ("removeCommentsChar", Transform::RemoveCommentsChar),
    ("removeNulls", Transform::RemoveNulls),
    ("removeWhitespace", Transform::RemoveWhitespace),
    ("replaceComments", Transform::ReplaceComments),
    ("replaceNulls", Transform::ReplaceNulls),
    ("sha1", Transform::Sha1),
    ("sqlHexDecode", Transform::SqlHexDecode),
    ("trim", Transform::Trim),
    ("trimLeft", Transform::TrimLeft),
    ("trimRight", Transform::TrimRight),
    ("uppercase", Transform::Uppercase),
    ("urlDecode", Transform::UrlDecode),
    ("urlDecodeUni", Transform::UrlDecodeUni),
    ("urlEncode", Transform::UrlEncode),
    ("utf8toUnicode", Transform::Utf8ToUnicode),
];

/// The transformation called `name` (any case), if supported. `none` is
/// not a transformation but a reset, handled by the rule compiler.
pub fn by_name(name: &str) -> Option<Transform> {
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, t)| *t)
}

/// Every transformation, once each.
pub fn all() -> Vec<Transform> {
    let mut all: Vec<Transform> = NAMES.iter().map(|(_, t)| *t).collect();
    all.dedup();
    all
}

impl Transform {
    /// The canonical name.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("?", |(n, _)| n)
    }

    /// Applies the transformation; `None` when the result equals `input`.
    pub fn apply(self, input: &[u8]) -> Option<Vec<u8>> {
        if self.leaves_unchanged(input) {
            return None;
        }
        self.compute(input)
    }

    /// [`Self::apply`] into `out` (its contents replaced), which holds the
    /// output when this returns true; false when the value is unchanged.
    /// The decoders `multiMatch` chains run on every value, `cmdLine` and
    /// `compressWhitespace` write into the caller's buffer; the rest
    /// allocate as `apply` does.
    pub fn apply_into(self, input: &[u8], out: &mut Vec<u8>) -> bool {
        if self.leaves_unchanged(input) {
            return false;
        }
        match self {
            Transform::Base64Decode => decode::base64_into(input, false, out),
            Transform::Base64DecodeExt => decode::base64_into(input, true, out),
            Transform::JsDecode => decode::js_into(input, out),
            Transform::UrlDecode => decode::url_into(input, false, out),
            Transform::UrlDecodeUni => decode::url_into(input, true, out),
            Transform::RemoveWhitespace => {
                if !input.iter().any(|b| text::is_space(*b)) {
                    return false;
                }
                text::remove_whitespace_into(input, out);
            }
            Transform::CmdLine => text::cmd_line_into(input, out),
            Transform::CompressWhitespace => text::compress_whitespace_into(input, out),
            _ => {
                return match self.compute(input) {
                    Some(output) => {
                        *out = output;
                        true
                    }
                    None => false,
                };
            }
        }
        out.as_slice() != input
    }

    /// The transformation without the quick unchanged-check.
    pub(crate) fn compute(self, input: &[u8]) -> Option<Vec<u8>> {
        let out = match self {
            Transform::Base64Decode => decode::base64(input, false),
            Transform::Base64DecodeExt => decode::base64(input, true),
            Transform::Base64Encode => text::base64_encode(input),
            Transform::CmdLine => text::cmd_line(input),
            Transform::CompressWhitespace => text::compress_whitespace(input),
            Transform::CssDecode => decode::css(input),
            Transform::EscapeSeqDecode => decode::escape_seq(input),
            Transform::HexDecode => decode::hex(input),
            Transform::HexEncode => text::hex_encode(input),
            Transform::HtmlEntityDecode => decode::html_entities(input),
            Transform::JsDecode => decode::js(input),
            Transform::Length => input.len().to_string().into_bytes(),
            Transform::Lowercase => {
                if !input.iter().any(u8::is_ascii_uppercase) {
                    return None;
                }
                input.to_ascii_lowercase()
            }
            Transform::Uppercase => {
                if !input.iter().any(u8::is_ascii_lowercase) {
                    return None;
                }
                input.to_ascii_uppercase()
            }
            Transform::Md5 => text::md5(input),
            Transform::Sha1 => text::sha1(input),
            Transform::NormalisePath => text::normalise_path(input, false),
            Transform::NormalisePathWin => text::normalise_path(input, true),
            Transform::ParityEven7bit => text::parity(input, text::Parity::Even),
            Transform::ParityOdd7bit => text::parity(input, text::Parity::Odd),
            Transform::ParityZero7bit => text::parity(input, text::Parity::Zero),
            Transform::PhpArgsNames => text::php_args_names(input),
            Transform::RemoveComments => text::remove_comments(input),
            Transform::RemoveCommentsChar => text::remove_comment_chars(input),
            Transform::ReplaceComments => text::replace_comments(input),
            Transform::RemoveNulls => {
                if !input.contains(&0) {
                    return None;
                }
                input.iter().copied().filter(|b| *b != 0).collect()
            }
            Transform::ReplaceNulls => {
                if !input.contains(&0) {
                    return None;
                }
                input
                    .iter()
                    .map(|b| if *b == 0 { b' ' } else { *b })
                    .collect()
            }
            Transform::RemoveWhitespace => {
                if !input.iter().any(|b| text::is_space(*b)) {
                    return None;
                }
                text::remove_whitespace(input)
            }
            Transform::SqlHexDecode => decode::sql_hex(input),
            Transform::Trim => text::trim(input, true, true),
            Transform::TrimLeft => text::trim(input, true, false),
            Transform::TrimRight => text::trim(input, false, true),
            Transform::UrlDecode => decode::url(input, false),
            Transform::UrlDecodeUni => decode::url(input, true),
            Transform::UrlEncode => text::url_encode(input),
            Transform::Utf8ToUnicode => text::utf8_to_unicode(input),
        };
        (out != input).then_some(out)
    }
}

impl Transform {
    /// A quick scan that proves the transformation would return its input
    /// unchanged: most values carry no escape, comment or path marker, and
    /// finding that out costs a byte scan instead of a copy and a compare.
    /// `false` means only "not proven"; `apply` then does the work.
    pub(crate) fn leaves_unchanged(self, input: &[u8]) -> bool {
        // memchr's vector search: these checks run on every value of
        // every chain, and a byte loop over a set showed in profiles.
        let none_of = |set: &[u8]| match *set {
            [a] => memchr::memchr(a, input).is_none(),
            [a, b] => memchr::memchr2(a, b, input).is_none(),
            [a, b, c] => memchr::memchr3(a, b, c, input).is_none(),
            _ => !input.iter().any(|b| set.contains(b)),
        };
        match self {
            Transform::UrlDecode | Transform::UrlDecodeUni => none_of(b"%+"),
            Transform::HtmlEntityDecode => none_of(b"&"),
            Transform::JsDecode | Transform::CssDecode | Transform::EscapeSeqDecode => {
                none_of(b"\\")
            }
            Transform::Utf8ToUnicode => input.is_ascii(),
            Transform::RemoveCommentsChar => none_of(b"/*-") && none_of(b"#<"),
            Transform::ReplaceComments => memchr::memmem::find(input, b"/*").is_none(),
            Transform::RemoveComments => none_of(b"/-#") && none_of(b"<") && !input.is_empty(),
            Transform::SqlHexDecode => !input
                .windows(2)
                .any(|w| w[0] == b'0' && (w[1] | 0x20) == b'x'),
            Transform::NormalisePath => none_of(b"./"),
            Transform::NormalisePathWin => none_of(b"./\\"),
            Transform::CompressWhitespace => {
                !input.iter().any(|b| *b != b' ' && text::is_space(*b))
                    && !text::has_double_space(input)
            }
            Transform::Trim => {
                input
                    .first()
                    .is_none_or(|b| !b.is_ascii_whitespace() && *b != 0x0b)
                    && input
                        .last()
                        .is_none_or(|b| !b.is_ascii_whitespace() && *b != 0x0b)
            }
            Transform::CmdLine => false,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apply_into` with one buffer reused across values and
    /// transformations must give what `apply` gives, whatever the buffer
    /// held before.
    #[test]
    fn apply_into_a_reused_buffer_matches_apply() {
        let inputs: [&[u8]; 11] = [
            b"",
            b"CMD  /c \"a\",b;^c (x)\t\r\n end",
            b"plain",
            b"a+b%20c%u0041",
            b"cmVxdWlyZSgnY2hpbGRf cHJvY2Vzcycp",
            b"\\x41\\u0042\\101 tail",
            b"  spaced\tout\n ",
            b"QUJD==extra",
            b"%zz%2",
            b"MiXeD CaSe",
            b"\x00\xff%00",
        ];
        let mut buffer = b"left over from before".to_vec();
        for t in all() {
            for input in inputs {
                let expected = t.apply(input);
                let changed = t.apply_into(input, &mut buffer);
                assert_eq!(changed, expected.is_some(), "{t:?} on {input:?}");
                if let Some(expected) = expected {
                    assert_eq!(buffer, expected, "{t:?} on {input:?}");
                }
            }
        }
    }

    #[test]
    fn every_name_resolves_back_to_itself() {
        for (name, t) in NAMES {
            assert_eq!(by_name(name), Some(*t));
            assert_eq!(by_name(&name.to_ascii_uppercase()), Some(*t));
        }
        assert!(by_name("nosuch").is_none());
    }

    #[test]
    fn unchanged_values_are_not_copied() {
        assert!(Transform::Lowercase.apply(b"abc").is_none());
        assert_eq!(
            Transform::Lowercase.apply(b"aBc").as_deref(),
            Some(&b"abc"[..])
        );
        assert!(Transform::UrlDecode.apply(b"plain").is_none());
    }
}
