//! The process allocator: mimalloc, asked through its plain entry points
//! wherever they already give the alignment Rust asks for.
//!
//! The `mimalloc` crate hands every request to `mi_malloc_aligned`, whose
//! alignment handling cost about a third of each allocation in profiles of
//! the WAF (which makes a few hundred small, short-lived buffers per
//! request). Every mimalloc block is aligned to 8 bytes at least (block
//! sizes are multiples of the word size and pages start 16-aligned), so a
//! layout asking for no more goes to `mi_malloc` and its kin; the rest
//! (hash tables aligned for SIMD, say) keep the aligned calls. Freeing
//! needs no layout in mimalloc, whichever call made the block.
//!
//! Layouts aligned to 16 (hash tables, large futures) are nearly always
//! served 16-aligned by the plain calls too, since their sizes are
//! multiples of 16 and so are the block sizes they land in; but that is
//! not a documented promise, so the block is checked, and the rare one
//! that is not aligned is swapped for one from the aligned call. For a
//! future of several KiB, the aligned call costs about 200 instructions
//! where the plain one costs 30. (Reallocation keeps the aligned call: a
//! plain one that came back misaligned would already have let the old
//! block go, and a failure then could not leave it intact.)

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has.
const WORD_ALIGN: usize = 8;
/// The alignment the plain calls nearly always give layouts of a size that
/// is a multiple of it (every Rust layout's size is a multiple of its
/// alignment); checked on each block.
const CHECKED_ALIGN: usize = 16;

/// mimalloc as the global allocator (`#[global_allocator]`).
pub struct Mimalloc;

// SAFETY: each method forwards to the mimalloc call with the same contract
// (size, and alignment when the plain call would not guarantee it); a null
// return is passed on as the allocation failure it means.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl's note.
        unsafe { allocate(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl's note.
        unsafe { allocate(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from one of this allocator's calls.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`'s alignment,
        // which the reallocated block keeps.
        unsafe {
            if layout.align() <= WORD_ALIGN {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// A block for `layout` from `plain` (mimalloc's `malloc` or `zalloc`)
/// where its alignment will do, else from `aligned`, its aligned twin.
///
/// # Safety
/// `layout` has a non-zero size (the `GlobalAlloc` contract); `plain` and
/// `aligned` are a matching pair of mimalloc's entry points.
#[inline(always)]
unsafe fn allocate(
    layout: Layout,
    plain: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: forwarded under the caller's contract; a block this function
    // frees came from `plain` just above and is not handed out.
    unsafe {
        if layout.align() <= WORD_ALIGN {
            return plain(layout.size()).cast();
        }
        if layout.align() == CHECKED_ALIGN {
            let ptr = plain(layout.size());
            if is_aligned(ptr) {
                return ptr.cast();
            }
            mi::mi_free(ptr);
        }
        aligned(layout.size(), layout.align()).cast()
    }
}

/// Whether a block from a plain call may stand for a 16-aligned one. A
/// null is passed on as the failure it is.
#[inline]
fn is_aligned(ptr: *mut c_void) -> bool {
    (ptr as usize).is_multiple_of(CHECKED_ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The premise: plain allocations of every small size, and a few large
    /// ones, come back word-aligned; aligned layouts get their alignment.
    #[test]
    fn blocks_have_the_alignment_their_layout_asks_for() {
        let allocator = Mimalloc;
        let mut kept = Vec::new();
        for size in (1..=1024).chain([4096, 4104, 65_536, 1 << 20]) {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: a non-zero size; the block is freed below with
                // the same layout.
                let ptr = unsafe { allocator.alloc(layout) };
                assert!(!ptr.is_null(), "size {size} align {align}");
                assert_eq!(ptr as usize % align, 0, "size {size} align {align}");
                kept.push((ptr, layout));
            }
        }
        for (ptr, layout) in kept {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { allocator.dealloc(ptr, layout) };
        }
    }

    /// Zeroed blocks through the checked path: aligned and all zero, also
    /// when they reuse freed, written blocks of the same size.
    #[test]
    fn zeroed_sixteen_aligned_blocks_are_zero() {
        let allocator = Mimalloc;
        for size in [16, 24, 48, 112, 4096, 10_000] {
            let Ok(layout) = Layout::from_size_align(size, CHECKED_ALIGN) else {
                continue;
            };
            for _ in 0..3 {
                // SAFETY: a non-zero size; written within it, then freed
                // with the same layout.
                unsafe {
                    let ptr = allocator.alloc_zeroed(layout);
                    assert!(!ptr.is_null());
                    assert_eq!(ptr as usize % CHECKED_ALIGN, 0, "size {size}");
                    assert!((0..size).all(|i| *ptr.add(i) == 0), "size {size}");
                    ptr.write_bytes(0xAB, size);
                    allocator.dealloc(ptr, layout);
                }
            }
        }
    }

    #[test]
    fn reallocation_keeps_contents_and_alignment() {
        let allocator = Mimalloc;
        for align in [1, 8, 16, 64] {
            let Ok(layout) = Layout::from_size_align(24, align) else {
                continue;
            };
            // SAFETY: a non-zero size; the block is written within its
            // size, reallocated and freed with matching layouts.
            unsafe {
                let ptr = allocator.alloc_zeroed(layout);
                assert!(!ptr.is_null());
                assert!((0..24).all(|i| *ptr.add(i) == 0));
                ptr.write_bytes(7, 24);
                let grown = allocator.realloc(ptr, layout, 4000);
                assert!(!grown.is_null());
                assert_eq!(grown as usize % align, 0);
                assert!((0..24).all(|i| *grown.add(i) == 7));
                let Ok(grown_layout) = Layout::from_size_align(4000, align) else {
                    continue;
                };
                allocator.dealloc(grown, grown_layout);
            }
        }
    }
}
