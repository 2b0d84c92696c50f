//! The byte streams a client connection runs over: plain TCP, or TLS on
//! top of it. The HTTP/1 loop is generic over `Transport`, so both share
//! one implementation and plain TCP keeps its direct write path.

use std::future::Future;
use std::io::{self, IoSlice};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client connection's stream.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Writes all of `parts`, in order, and hands them to the kernel. A
    /// client that takes no bytes for `stall` is given up on (`TimedOut`):
    /// a reader that stops reading must not hold a connection and its
    /// backend for ever.
    fn write_parts(
        &mut self,
        parts: [&[u8]; 4],
        stall: Duration,
    ) -> impl Future<Output = io::Result<()>> + Send;
}

impl Transport for TcpStream {
    /// As few system calls as the socket allows; the timer is armed only
    /// when the socket is full.
    async fn write_parts(&mut self, parts: [&[u8]; 4], stall: Duration) -> io::Result<()> {
        let mut parts = parts;
        loop {
            let slices = slices_of(&parts);
            let pending = slices.iter().filter(|s| !s.is_empty()).count();
            if pending == 0 {
                return Ok(());
            }
            let written = match self.try_write_vectored(&slices[..pending]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match tokio::time::timeout(stall, self.writable()).await {
                        Ok(ready) => {
                            ready?;
                            continue;
                        }
                        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                    }
                }
                Err(e) => return Err(e),
            };
            advance(&mut parts, written)?;
        }
    }
}

impl Transport for TlsStream<TcpStream> {
    /// rustls seals what it is given into records and writes them out with
    /// one vectored write where it can; the flush makes sure no record is
    /// left in its buffer.
    async fn write_parts(&mut self, parts: [&[u8]; 4], stall: Duration) -> io::Result<()> {
        let mut parts = parts;
        let write = async {
            loop {
                let slices = slices_of(&parts);
                let pending = slices.iter().filter(|s| !s.is_empty()).count();
                if pending == 0 {
                    return self.flush().await;
                }
                let written = self.write_vectored(&slices[..pending]).await?;
                advance(&mut parts, written)?;
            }
        };
        // A TLS write is a whole record or nothing to the caller, so the
        // stall limit applies to the write as a whole. Writes are at most a
        // few hundred KiB: a client that cannot take that in `stall` is
        // stalled.
        tokio::time::timeout(stall, write)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }
}

/// The non-empty parts, first, as slices.
fn slices_of<'a>(parts: &[&'a [u8]; 4]) -> [IoSlice<'a>; 4] {
    let mut slices = [IoSlice::new(&[]); 4];
    for (slice, part) in slices
        .iter_mut()
        .zip(parts.iter().filter(|p| !p.is_empty()))
    {
        *slice = IoSlice::new(part);
    }
    slices
}

/// Drops `written` bytes from the front of `parts`.
fn advance(parts: &mut [&[u8]; 4], mut written: usize) -> io::Result<()> {
    if written == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    for part in parts.iter_mut() {
        let take = written.min(part.len());
        *part = &part[take..];
        written -= take;
    }
    Ok(())
}
