//! Decoding request bodies for inspection (RFC 9110 §8.4): a body sent with
//! `Content-Encoding: gzip`, `deflate`, `br` or `zstd` is decoded so the
//! stages that read bodies (the WAF) see what the application will see.
//! The origin still gets the original bytes.
//!
//! Decoding is capped the same way for every coding: output stops at
//! `limit` bytes and at `max_ratio` times the input, so a small bomb costs
//! at most one cap's worth of memory and the CPU to produce it.

use std::io::Read;

use bytes::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("decoded request body over the limit")]
    TooLarge,
    #[error("request body does not decode as its Content-Encoding says")]
    Malformed,
    #[error("request Content-Encoding not supported")]
    Unsupported,
}

/// The caps on one decoded body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub limit: u64,
    pub max_ratio: u64,
}

/// Decodes `body` sent with the Content-Encoding field value `coding`
/// (one coding; `identity` is none). `Ok(None)`: nothing to decode.
pub fn decode(coding: &str, body: &[u8], caps: Caps) -> Result<Option<Bytes>, DecodeError> {
    let coding = coding.trim();
    if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
        return Ok(None);
    }
    if coding.contains(',') {
        // Stacked codings are legal but unheard of from real clients;
        // refusing them keeps one path to inspect.
        return Err(DecodeError::Unsupported);
    }
    let cap = caps
        .limit
        .min((body.len() as u64).saturating_mul(caps.max_ratio).max(1024));
    let lower = coding.to_ascii_lowercase();
    let out = match lower.as_str() {
        "gzip" | "x-gzip" => read_capped(flate2::read::GzDecoder::new(body), cap),
        // "deflate" is zlib-wrapped (RFC 9110 §8.4.1.2).
        "deflate" => read_capped(flate2::read::ZlibDecoder::new(body), cap),
        "br" => read_capped(brotli::Decompressor::new(body, 16 * 1024), cap),
        "zstd" => match zstd::stream::read::Decoder::new(body) {
            Ok(d) => read_capped(d, cap),
            Err(_) => Err(DecodeError::Malformed),
        },
        _ => Err(DecodeError::Unsupported),
    }?;
    Ok(Some(out))
}

/// Reads at most `cap` bytes; more is `TooLarge`.
fn read_capped(reader: impl Read, cap: u64) -> Result<Bytes, DecodeError> {
    let mut out = Vec::new();
    let mut limited = reader.take(cap.saturating_add(1));
    limited
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Malformed)?;
    if out.len() as u64 > cap {
        return Err(DecodeError::TooLarge);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Coding;
    use crate::compress::encoder::encode_all;
    use std::io::Write;

    const CAPS: Caps = Caps {
        limit: 1024 * 1024,
        max_ratio: 100,
    };

    #[test]
    fn every_coding_decodes_what_it_encoded() {
        let text = b"user=admin&password=' OR 1=1 --".repeat(40);
        for (name, coding) in [
            ("gzip", Coding::Gzip),
            ("br", Coding::Brotli),
            ("zstd", Coding::Zstd),
        ] {
            let encoded = encode_all(coding, 5, &text).unwrap();
            assert_eq!(decode(name, &encoded, CAPS).unwrap().unwrap(), &text[..]);
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        assert_eq!(
            decode("deflate", &z.finish().unwrap(), CAPS)
                .unwrap()
                .unwrap(),
            &text[..]
        );
    }

    #[test]
    fn bombs_are_refused_for_every_coding() {
        // 64 MiB of zeros: a few KiB encoded, far over both caps.
        let zeros = vec![0u8; 64 * 1024 * 1024];
        for (name, coding) in [
            ("gzip", Coding::Gzip),
            ("br", Coding::Brotli),
            ("zstd", Coding::Zstd),
        ] {
            let bomb = encode_all(coding, 1, &zeros).unwrap();
            assert!(bomb.len() < 1024 * 1024, "{name}: {}", bomb.len());
            assert_eq!(
                decode(name, &bomb, CAPS),
                Err(DecodeError::TooLarge),
                "{name}"
            );
        }
    }

    #[test]
    fn garbage_and_unknown_codings_are_errors() {
        assert_eq!(
            decode("gzip", b"not gzip", CAPS),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            decode("compress", b"x", CAPS),
            Err(DecodeError::Unsupported)
        );
        assert_eq!(
            decode("gzip, br", b"x", CAPS),
            Err(DecodeError::Unsupported)
        );
        assert_eq!(decode("identity", b"x", CAPS), Ok(None));
    }
}
