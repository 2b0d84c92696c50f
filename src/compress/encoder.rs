//! Streaming encoders behind one interface: feed a chunk, get what the
//! encoder can emit for it (flushed, so a streaming response keeps
//! flowing), then the end of the stream. Output goes to a buffer the
//! caller drains, so memory stays one chunk's worth whatever the body's
//! size.

use std::io::Write;

use bytes::Bytes;

use super::Coding;

pub struct Encoder {
    inner: Inner,
}

enum Inner {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

/// Brotli's window: 4 MiB, the format's common default (lgwin 22).
const BROTLI_WINDOW: u32 = 22;
const BROTLI_BUFFER: usize = 16 * 1024;

impl Encoder {
    /// A fresh encoder for `coding` at `level` (each coding's own scale).
    pub fn new(coding: Coding, level: u32) -> std::io::Result<Encoder> {
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.min(9)),
            )),
            Coding::Brotli => Inner::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                level.min(11),
                BROTLI_WINDOW,
            ))),
            Coding::Zstd => Inner::Zstd(zstd::stream::write::Encoder::new(
                Vec::new(),
                i32::try_from(level.min(22)).unwrap_or(3),
            )?),
        };
        Ok(Encoder { inner })
    }

    /// Encodes `data` and flushes, returning the bytes ready to send.
    pub fn push(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        match &mut self.inner {
            Inner::Gzip(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(Bytes::from(std::mem::take(e.get_mut())))
            }
            Inner::Brotli(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(Bytes::from(std::mem::take(e.get_mut())))
            }
            Inner::Zstd(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(Bytes::from(std::mem::take(e.get_mut())))
            }
        }
    }

    /// Ends the stream, returning its last bytes.
    pub fn finish(self) -> std::io::Result<Bytes> {
        match self.inner {
            Inner::Gzip(e) => e.finish().map(Bytes::from),
            Inner::Brotli(mut e) => {
                e.flush()?;
                Ok(Bytes::from(e.into_inner()))
            }
            Inner::Zstd(e) => e.finish().map(Bytes::from),
        }
    }
}

/// Encodes a whole body at once (for a stored response).
pub fn encode_all(coding: Coding, level: u32, data: &[u8]) -> std::io::Result<Bytes> {
    let mut encoder = Encoder::new(coding, level)?;
    match &mut encoder.inner {
        // One write and no intermediate flush: the best ratio.
        Inner::Gzip(e) => e.write_all(data)?,
        Inner::Brotli(e) => e.write_all(data)?,
        Inner::Zstd(e) => e.write_all(data)?,
    }
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decode(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Coding::Brotli => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Coding::Zstd => {
                zstd::stream::read::Decoder::new(data)
                    .unwrap()
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        // Text-like and a little varied, so every coding has work to do.
        (0..len)
            .map(|i| {
                b"the quick brown fox jumps over the lazy dog "[i % 44] ^ ((i / 997) as u8 & 1)
            })
            .collect()
    }

    #[test]
    fn streamed_round_trips_at_every_size_and_coding() {
        for coding in [Coding::Gzip, Coding::Brotli, Coding::Zstd] {
            for len in [
                0,
                1,
                4095,
                4096,
                4097,
                16 * 1024,
                64 * 1024 + 1,
                1024 * 1024,
            ] {
                let input = sample(len);
                let mut encoder = Encoder::new(coding, 5).unwrap();
                let mut out = Vec::new();
                for chunk in input.chunks(7919) {
                    out.extend_from_slice(&encoder.push(chunk).unwrap());
                }
                out.extend_from_slice(&encoder.finish().unwrap());
                assert_eq!(decode(coding, &out), input, "{coding:?} at {len} bytes");
                let whole = encode_all(coding, 5, &input).unwrap();
                assert_eq!(decode(coding, &whole), input, "{coding:?} whole at {len}");
            }
        }
    }

    #[test]
    fn each_push_emits_what_was_fed_so_far() {
        for coding in [Coding::Gzip, Coding::Brotli, Coding::Zstd] {
            let mut encoder = Encoder::new(coding, 5).unwrap();
            let first = encoder.push(b"data: hello\n\n").unwrap();
            // A decoder given only the first flush already yields the event.
            let mut partial = Vec::new();
            let readable = match coding {
                Coding::Gzip => flate2::read::GzDecoder::new(&first[..]).read_to_end(&mut partial),
                Coding::Brotli => {
                    brotli::Decompressor::new(&first[..], 4096).read_to_end(&mut partial)
                }
                Coding::Zstd => zstd::stream::read::Decoder::new(&first[..])
                    .unwrap()
                    .read_to_end(&mut partial),
            };
            let _ = readable;
            assert!(
                partial.starts_with(b"data: hello"),
                "{coding:?}: {partial:?}"
            );
        }
    }
}
