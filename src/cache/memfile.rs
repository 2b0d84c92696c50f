//! Large stored bodies kept in sealed memory files (`memfd`), so that a
//! plain HTTP/1 connection can hand a cache hit to the kernel with
//! `sendfile`: the body goes from the file's pages to the socket without
//! being copied through user space, as nginx serves its cache from tmpfs.
//! Everything else (TLS, HTTP/2, ranges, compression) reads the same pages
//! as `Bytes`, through a read-only mapping of the file.
//!
//! A body is put in a file only when it is large enough for the copy to
//! matter, and only while the process has file descriptors to spare: each
//! such body holds one descriptor for as long as the store (or a response
//! still being sent) holds it. Anything that fails on the way leaves the
//! body where it was, on the heap.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// Bodies smaller than this stay on the heap: the copy they would save
/// costs less than the extra system call sending from a file takes.
pub const MIN_FILE_BODY: usize = 32 * 1024;

/// Memory files alive now (stored bodies and responses still sending one).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A sealed memory file holding one body, and its read-only mapping.
pub struct BodyFile {
    fd: OwnedFd,
    map: *const u8,
    len: usize,
}

// The mapping is read-only and the file sealed against writes, so the
// bytes behind `map` never change while the file lives.
unsafe impl Send for BodyFile {}
unsafe impl Sync for BodyFile {}

impl std::fmt::Debug for BodyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyFile").field("len", &self.len).finish()
    }
}

impl BodyFile {
    /// `body` moved into a memory file: the same bytes, now read from the
    /// file's mapping, and the file. `None` (keep `body` as it is) when
    /// the body is small, descriptors are scarce, or the system refuses.
    pub fn hold(body: &Bytes) -> Option<(Bytes, Arc<BodyFile>)> {
        if body.len() < MIN_FILE_BODY || !reserve_descriptor() {
            return None;
        }
        let Some(made) = Self::create(body) else {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            return None;
        };
        let file = Arc::new(made);
        let bytes = Bytes::from_owner(Mapped(Arc::clone(&file)));
        Some((bytes, file))
    }

    #[cfg(target_os = "linux")]
    fn create(body: &[u8]) -> Option<BodyFile> {
        use rustix::fs::{MemfdFlags, SealFlags};
        use rustix::mm::{MapFlags, ProtFlags};

        let fd = rustix::fs::memfd_create(
            c"palisade-cached-body",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .ok()?;
        rustix::fs::ftruncate(&fd, body.len() as u64).ok()?;
        let mut written = 0;
        while written < body.len() {
            match rustix::io::pwrite(&fd, &body[written..], written as u64) {
                Ok(0) | Err(_) => return None,
                Ok(n) => written += n,
            }
        }
        // Sealed: no one, us included, can change or resize it from here.
        rustix::fs::fcntl_add_seals(
            &fd,
            SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
        )
        .ok()?;
        // SAFETY: a fresh read-only shared mapping of a file of exactly
        // `len` bytes that cannot shrink; it is unmapped in `Drop`, after
        // the last `Bytes` over it (each holds an `Arc` of this file).
        let map = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                body.len(),
                ProtFlags::READ,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .ok()?;
        Some(BodyFile {
            fd,
            map: map.cast::<u8>().cast_const(),
            len: body.len(),
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn create(_: &[u8]) -> Option<BodyFile> {
        None
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `map` is a live read-only mapping of `len` bytes that
        // nothing writes (see `create`).
        unsafe { std::slice::from_raw_parts(self.map, self.len) }
    }

    /// Where `data` lies in the file (offset, length), when it is a part
    /// of the file's own mapping, such as the whole body or a range of it.
    pub fn region(&self, data: &[u8]) -> Option<(u64, usize)> {
        let start = (data.as_ptr() as usize).checked_sub(self.map as usize)?;
        let end = start.checked_add(data.len())?;
        (end <= self.len).then_some((start as u64, data.len()))
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        // SAFETY: the mapping made in `create`; no `Bytes` over it is
        // left, as each holds an `Arc` of this file.
        unsafe {
            let _ = rustix::mm::munmap(self.map.cast_mut().cast(), self.len);
        }
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The owner a `Bytes` over a file's mapping keeps alive.
struct Mapped(Arc<BodyFile>);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Counts one more memory file, unless that would take more than a
/// quarter of the descriptors the process may open: connections need
/// them more.
fn reserve_descriptor() -> bool {
    let budget = *descriptor_budget();
    LIVE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
        (live < budget).then_some(live + 1)
    })
    .is_ok()
}

fn descriptor_budget() -> &'static usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    BUDGET.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
            let soft = limit.current.unwrap_or(u64::MAX).min(1 << 20);
            usize::try_from(soft / 4).unwrap_or(0)
        }
        #[cfg(not(target_os = "linux"))]
        {
            0
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(len: usize) -> Bytes {
        (0..len)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    #[test]
    fn a_large_body_reads_back_the_same_from_its_file() {
        let original = body(100_000);
        let (mapped, file) = BodyFile::hold(&original).expect("memfd on Linux");
        assert_eq!(mapped, original);
        assert_eq!(file.as_slice(), &original[..]);
        // The file itself holds the bytes sendfile will send.
        let mut read = vec![0u8; original.len()];
        let n = rustix::io::pread(file.fd(), &mut read, 0).expect("pread");
        assert_eq!(&read[..n], &original[..n]);
        assert!(n > 0);
    }

    #[test]
    fn a_small_body_stays_on_the_heap() {
        assert!(BodyFile::hold(&body(MIN_FILE_BODY - 1)).is_none());
    }

    #[test]
    fn the_file_is_sealed_against_writes() {
        let (_, file) = BodyFile::hold(&body(MIN_FILE_BODY)).expect("memfd on Linux");
        assert!(rustix::io::pwrite(file.fd(), b"poison", 0).is_err());
        assert!(rustix::fs::ftruncate(file.fd(), 1).is_err());
    }

    #[test]
    fn region_finds_slices_of_the_mapping_only() {
        let (mapped, file) = BodyFile::hold(&body(MIN_FILE_BODY * 2)).expect("memfd on Linux");
        assert_eq!(file.region(&mapped), Some((0, mapped.len())));
        let part = mapped.slice(100..5000);
        assert_eq!(file.region(&part), Some((100, 4900)));
        let elsewhere = body(MIN_FILE_BODY * 2);
        assert_eq!(file.region(&elsewhere), None);
    }

    #[test]
    fn the_file_lives_until_its_last_bytes_go() {
        let (mapped, file) = BodyFile::hold(&body(MIN_FILE_BODY)).expect("memfd on Linux");
        let weak = Arc::downgrade(&file);
        drop(file);
        // The bytes still read: the mapping is theirs too.
        assert!(weak.upgrade().is_some());
        assert_eq!(mapped[1], 7);
        drop(mapped);
        assert!(weak.upgrade().is_none());
    }
}
