//! HTTP/1.1 message body framing (RFC 9112 §6, §7.1), shared by the client
//! side (`server::h1`) and the backend side (`upstream::h1`): the decoder
//! for fixed-length, chunked and close-delimited bodies, and the strict
//! number parsers both sides use for lengths and chunk sizes.

use bytes::{Buf, BytesMut};

pub use bytes::Bytes;

/// The longest chunk-size line (with extensions) we accept.
pub const MAX_CHUNK_LINE: usize = 4096;
/// The most trailer bytes we skip before calling the body malformed.
pub const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// A body that breaks the framing rules; the connection cannot be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FramingError(pub &'static str);

/// Where the decoder stands in a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyState {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilClose,
    Done,
}

/// What one step of body decoding produced.
pub enum Step {
    Data(Bytes),
    /// Data that ends the body.
    LastData(Bytes),
    NeedMore,
    Finished,
}

/// Advances the body state machine over the buffered bytes.
pub fn step(state: &mut BodyState, buf: &mut BytesMut) -> Result<Step, FramingError> {
    loop {
        match *state {
            BodyState::Done => return Ok(Step::Finished),
            BodyState::Length(0) => return Ok(Step::Finished),
            BodyState::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = (buf.len() as u64).min(left) as usize;
                *state = BodyState::Length(left - take as u64);
                let data = buf.split_to(take).freeze();
                return Ok(if left == take as u64 {
                    Step::LastData(data)
                } else {
                    Step::Data(data)
                });
            }
            BodyState::UntilClose => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                return Ok(Step::Data(buf.split().freeze()));
            }
            BodyState::ChunkSize => {
                let Some(line_end) = find_crlf(buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(FramingError("chunk size line too long"));
                    }
                    return Ok(Step::NeedMore);
                };
                let size = parse_chunk_size(&buf[..line_end])?;
                buf.advance(line_end + 2);
                *state = if size == 0 {
                    BodyState::Trailers
                } else {
                    BodyState::ChunkData(size)
                };
            }
            BodyState::ChunkData(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = (buf.len() as u64).min(left) as usize;
                let data = buf.split_to(take).freeze();
                *state = if left == take as u64 {
                    BodyState::ChunkDataEnd
                } else {
                    BodyState::ChunkData(left - take as u64)
                };
                return Ok(Step::Data(data));
            }
            BodyState::ChunkDataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(FramingError("chunk not followed by CRLF"));
                }
                buf.advance(2);
                *state = BodyState::ChunkSize;
            }
            BodyState::Trailers => {
                // Trailer fields are dropped: passing them on would need a
                // trailer-aware client on the other side.
                let Some(line_end) = find_crlf(buf) else {
                    if buf.len() > MAX_TRAILER_BYTES {
                        return Err(FramingError("trailer section too large"));
                    }
                    return Ok(Step::NeedMore);
                };
                buf.advance(line_end + 2);
                if line_end == 0 {
                    return Ok(Step::Finished);
                }
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

pub fn parse_chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let digits_len = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let digits = &line[..digits_len];
    if digits.is_empty() || digits.len() > 15 {
        return Err(FramingError("bad chunk size"));
    }
    // Extensions are ignored, but only well-formed ones: a peer that
    // reads a malformed one differently would frame the body differently.
    if !valid_chunk_extensions(&line[digits_len..]) {
        return Err(FramingError("bad chunk extension"));
    }
    let text = std::str::from_utf8(digits).map_err(|_| FramingError("bad chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| FramingError("bad chunk size"))
}

/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`
/// (RFC 9112 §7.1.1).
fn valid_chunk_extensions(mut rest: &[u8]) -> bool {
    fn skip_ws(b: &[u8]) -> &[u8] {
        let n = b.iter().take_while(|c| matches!(c, b' ' | b'\t')).count();
        &b[n..]
    }
    fn token_len(b: &[u8]) -> usize {
        b.iter()
            .take_while(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(c))
            .count()
    }
    loop {
        rest = skip_ws(rest);
        let Some((&b';', after)) = rest.split_first() else {
            return rest.is_empty();
        };
        rest = skip_ws(after);
        let name = token_len(rest);
        if name == 0 {
            return false;
        }
        rest = skip_ws(&rest[name..]);
        let Some((&b'=', after)) = rest.split_first() else {
            continue;
        };
        rest = skip_ws(after);
        if let Some((&b'"', quoted)) = rest.split_first() {
            let mut i = 0;
            loop {
                match quoted.get(i) {
                    None => return false,
                    Some(b'"') => break,
                    Some(b'\\')
                        if quoted
                            .get(i + 1)
                            .is_some_and(|c| *c != b'\r' && *c != b'\n') =>
                    {
                        i += 2
                    }
                    Some(c)
                        if *c == b'\t' || (0x20..0x7f).contains(c) && *c != b'\\' || *c >= 0x80 =>
                    {
                        i += 1
                    }
                    Some(_) => return false,
                }
            }
            rest = &quoted[i + 1..];
        } else {
            let value = token_len(rest);
            if value == 0 {
                return false;
            }
            rest = &rest[value..];
        }
    }
}

/// A non-empty run of ASCII digits as a u64 (no sign, no spaces, no overflow).
pub fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// The header fields of an origin's response, kept as the origin sent them:
/// the head's bytes and where each field's name and value lie in them.
///
/// Passing a response through needs no header map: the fields are written
/// back out as they came (httparse already checked their syntax). A map is
/// built only when a stage asks to read the response head
/// (`OriginFields::move_into`), so the common pass-through pays for neither
/// the hashing nor the name and value checks of `http::HeaderMap`.
#[derive(Debug, Clone, Default)]
pub struct OriginFields {
    head: Bytes,
    spans: Vec<[u32; 4]>,
}

impl OriginFields {
    pub fn new(head: Bytes, capacity: usize) -> OriginFields {
        OriginFields {
            head,
            spans: Vec::with_capacity(capacity),
        }
    }

    /// The fields at these (name, value) byte ranges of `head`, in order.
    /// Ranges outside the head are ignored.
    pub fn from_spans(
        head: Bytes,
        spans: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    ) -> OriginFields {
        let mut fields = OriginFields::new(head, spans.len());
        for (name, value) in spans {
            fields.push(name, value);
        }
        fields
    }

    /// Adds the field whose name and value lie at these byte ranges of the
    /// head. Ranges outside the head are ignored.
    pub fn push(&mut self, name: std::ops::Range<usize>, value: std::ops::Range<usize>) {
        let fits = |r: &std::ops::Range<usize>| r.start <= r.end && r.end <= self.head.len();
        if !fits(&name) || !fits(&value) {
            return;
        }
        let as32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.spans.push([
            as32(name.start),
            as32(name.end),
            as32(value.start),
            as32(value.end),
        ]);
    }

    /// The fields in order, as (name, value) bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|[ns, ne, vs, ve]| {
            (
                &self.head[*ns as usize..*ne as usize],
                &self.head[*vs as usize..*ve as usize],
            )
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Whether a field of this name (compared without case) is present.
    pub fn contains(&self, name: &str) -> bool {
        self.iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// Keeps the fields whose name passes `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let head = &self.head;
        self.spans
            .retain(|[ns, ne, _, _]| keep(&head[*ns as usize..*ne as usize]));
    }

    /// Moves the fields into `map`, after the ones already there. A field
    /// the map cannot hold (not possible after httparse's checks) is
    /// dropped rather than passed on unchecked.
    pub fn move_into(self, map: &mut http::HeaderMap) {
        map.reserve(self.spans.len());
        for [ns, ne, vs, ve] in &self.spans {
            let name = http::HeaderName::from_bytes(&self.head[*ns as usize..*ne as usize]);
            let value =
                http::HeaderValue::from_maybe_shared(self.head.slice(*vs as usize..*ve as usize));
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_lengths() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"123"), Some(123));
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"99999999999999999999"), None);
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"1A;ext=1").unwrap(), 26);
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"-1").is_err());
        assert!(parse_chunk_size(b"ffffffffffffffffff").is_err());
        assert_eq!(parse_chunk_size(b"5 ; a=b ;c;d=\"x;\\\"y\"").unwrap(), 5);
        for bad in [
            &b" 5"[..],
            b"5;",
            b"5;a=",
            b"5;a=\"open",
            b"5 x",
            b"5;a b",
            b"5;=b",
            b"5\x00",
        ] {
            assert!(
                parse_chunk_size(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn decode_all(state: BodyState, wire: &[u8]) -> Result<(Vec<u8>, bool), FramingError> {
        let mut state = state;
        let mut buf = BytesMut::from(wire);
        let mut out = Vec::new();
        loop {
            match step(&mut state, &mut buf)? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::LastData(d) => {
                    out.extend_from_slice(&d);
                    return Ok((out, true));
                }
                Step::Finished => return Ok((out, true)),
                Step::NeedMore => return Ok((out, false)),
            }
        }
    }

    #[test]
    fn origin_fields_keep_order_and_move_into_a_map() {
        let head = Bytes::from_static(b"Server: x\r\nX-A: 1\r\nx-a: 2\r\n");
        let mut fields = OriginFields::new(head, 3);
        fields.push(0..6, 8..9);
        fields.push(11..14, 16..17);
        fields.push(19..22, 24..25);
        fields.push(0..99, 0..1);
        assert_eq!(fields.len(), 3, "out-of-range spans are ignored");
        assert!(fields.contains("SERVER"));
        fields.retain(|n| !n.eq_ignore_ascii_case(b"server"));
        let seen: Vec<_> = fields.iter().collect();
        assert_eq!(seen, [(&b"X-A"[..], &b"1"[..]), (&b"x-a"[..], &b"2"[..])]);
        let mut map = http::HeaderMap::new();
        fields.move_into(&mut map);
        let values: Vec<_> = map.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let wire = b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n";
        assert_eq!(
            decode_all(BodyState::ChunkSize, wire),
            Ok((b"abcde".to_vec(), true))
        );
        let partial = b"3\r\nab";
        assert_eq!(
            decode_all(BodyState::ChunkSize, partial),
            Ok((b"ab".to_vec(), false))
        );
        assert!(decode_all(BodyState::ChunkSize, b"3\r\nabcX\r\n").is_err());
        assert!(decode_all(BodyState::ChunkSize, b"zz\r\n").is_err());
    }
}
