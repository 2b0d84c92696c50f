//! The byte streams a client connection runs over: plain TCP, or TLS on
//! top of it. The HTTP/1 loop is generic over `Transport`, so both share
//! one implementation and plain TCP keeps its direct write path.

use std::future::Future;
use std::io::{self, IoSlice};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::cache::memfile::BodyFile;

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

    /// Writes `head`, then the `len` bytes of `file` from `offset`, as
    /// `write_parts` would. By default the bytes go from the file's
    /// mapping like any others; plain TCP has the kernel send them from
    /// the file.
    fn write_file(
        &mut self,
        head: &[u8],
        file: &BodyFile,
        offset: u64,
        len: usize,
        stall: Duration,
    ) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            let body = mapped(file, offset, len)?;
            self.write_parts([head, body, &[], &[]], stall).await
        }
    }
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

    /// The head is sent with `MSG_MORE`, so that it leaves in one segment
    /// with the start of the body; the body goes from the file's pages
    /// to the socket with `sendfile`, never copied through user space.
    async fn write_file(
        &mut self,
        head: &[u8],
        file: &BodyFile,
        offset: u64,
        len: usize,
        stall: Duration,
    ) -> io::Result<()> {
        use rustix::net::SendFlags;
        let end = offset
            .checked_add(len as u64)
            .filter(|&end| end <= file.len() as u64)
            .ok_or(io::ErrorKind::InvalidInput)?;
        // Held back for the body only when a body follows: a head sent
        // with `MSG_MORE` and nothing after it would wait in the socket.
        let flags = if len > 0 {
            SendFlags::MORE | SendFlags::NOSIGNAL
        } else {
            SendFlags::NOSIGNAL
        };
        let mut head = head;
        while !head.is_empty() {
            let sent = self.try_io(Interest::WRITABLE, || {
                rustix::net::send(&*self, head, flags).map_err(io::Error::from)
            });
            match sent {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => head = &head[n.min(head.len())..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable(self, stall).await?,
                Err(e) => return Err(e),
            }
        }
        let mut at = offset;
        while at < end {
            let want = usize::try_from(end - at).unwrap_or(usize::MAX);
            let sent = self.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&*self, file.fd(), Some(&mut at), want)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                // `sendfile` moved `at` past what it sent.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable(self, stall).await?,
                // A kernel or file system that cannot: the rest as bytes.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                    let rest_len =
                        usize::try_from(end - at).map_err(|_| io::ErrorKind::InvalidInput)?;
                    let rest = mapped(file, at, rest_len)?;
                    return self.write_parts([rest, &[], &[], &[]], stall).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Waits until the socket takes bytes again, for at most `stall`.
async fn writable(stream: &TcpStream, stall: Duration) -> io::Result<()> {
    match tokio::time::timeout(stall, stream.writable()).await {
        Ok(ready) => ready,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// `len` bytes of `file` from `offset`, read through its mapping.
fn mapped(file: &BodyFile, offset: u64, len: usize) -> io::Result<&[u8]> {
    usize::try_from(offset)
        .ok()
        .and_then(|start| file.as_slice().get(start..start.checked_add(len)?))
        .ok_or_else(|| io::ErrorKind::InvalidInput.into())
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
