//! A global allocator that backs large buffers with transparent huge pages.
//!
//! A checkout or an add works through buffers of a chunk's size (4 MiB by default), a few per
//! thread, and touches every page of them. In 4 KiB pages each touch is a page fault: on the
//! real bf16 pair they were a fifth of a checkout's CPU (about 9,000 faults for a 45 MB file,
//! `perf record`). This allocator maps each allocation of at least [`LARGE`] bytes on its
//! own, aligned to 2 MiB, and asks the kernel for huge pages there (`MADV_HUGEPAGE`, which
//! works when `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`, the
//! common defaults); touching 32 MiB then took 1.6 ms instead of 13 (docs/PERFORMANCE.md).
//! Everything smaller goes to the system allocator. Where the kernel gives no huge pages the
//! mappings are ordinary ones, and off Linux everything goes to the system allocator.
//!
//! Freed mappings of up to [`CACHED_MAX`] bytes are kept, [`CACHED`] at most, and handed to
//! the next allocation of the same length, as the system allocator reuses its heap: `add`
//! codes each chunk into a fresh buffer, and mapping (and clearing) a new one each time made
//! it 5-9% slower on the generated family.
//!
//! The `sparse` binary installs it (`src/main.rs`); a program using the library chooses its
//! own allocator, and may install this one the same way.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

/// The size of a huge page on x86-64 and of the alignment of every large mapping.
const HUGE: usize = 2 << 20;

/// Allocations of at least this many bytes get a mapping of their own. Smaller ones would
/// waste most of a huge page.
pub const LARGE: usize = 1 << 20;

/// The most freed mappings kept for reuse.
pub const CACHED: usize = 8;

/// The largest mapping kept for reuse, so that the cache holds at most `CACHED` times this.
pub const CACHED_MAX: usize = 8 << 20;

/// Freed mappings kept for reuse: address and length, 0 for an empty slot.
static FREED: Mutex<[(usize, usize); CACHED]> = Mutex::new([(0, 0); CACHED]);

/// The allocator: see the module documentation.
pub struct HugePages;

/// Whether `layout` gets a mapping of its own.
fn large(layout: &Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= LARGE && layout.align() <= HUGE
}

/// `size` rounded up to whole huge pages, or `None` where that overflows.
fn mapped_len(size: usize) -> Option<usize> {
    size.checked_next_multiple_of(HUGE)
}

// SAFETY: large blocks are private anonymous mappings of at least `layout.size()` bytes
// (fresh, or freed ones of the same length, which no one else holds once taken from the
// cache; zeroed blocks are always fresh), aligned to HUGE (which satisfies any alignment
// `large` lets through), unmapped with the same length they were mapped with (the length
// depends only on the layout's size, which GlobalAlloc hands back unchanged); everything else
// is the system allocator's. Nothing here panics: an allocator must not unwind.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if large(&layout) {
            reuse(layout.size()).unwrap_or_else(|| map(layout.size()))
        } else {
            // SAFETY: the caller's layout, passed on.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if large(&layout) {
            map(layout.size()) // anonymous mappings start zeroed: no page is touched here
        } else {
            // SAFETY: the caller's layout, passed on.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if large(&layout) {
            if !keep(ptr, layout.size()) {
                unmap(ptr, layout.size());
            }
        } else {
            // SAFETY: a small block came from the system allocator with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // GlobalAlloc's contract makes this layout valid; were it not, the reallocation fails.
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        match (large(&layout), large(&new)) {
            // SAFETY: a small block of the system allocator, staying small.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            // The same huge pages hold both sizes.
            (true, true) if mapped_len(layout.size()) == mapped_len(new_size) => ptr,
            _ => {
                // SAFETY: `new` is valid (above); the old block holds `layout.size()` bytes,
                // and is freed with its own layout once copied.
                unsafe {
                    let moved = self.alloc(new);
                    if !moved.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    moved
                }
            }
        }
    }
}

/// A freed mapping of the length `size` needs, taken from the cache.
fn reuse(size: usize) -> Option<*mut u8> {
    let len = mapped_len(size)?;
    // A panic elsewhere while holding the lock cannot leave the slots inconsistent (each is
    // written whole), so a poisoned lock is used as it is.
    let mut freed = FREED.lock().unwrap_or_else(|e| e.into_inner());
    let slot = freed.iter_mut().find(|(at, l)| *at != 0 && *l == len)?;
    let at = std::mem::take(slot).0;
    Some(at as *mut u8)
}

/// Keeps the mapping at `ptr`, made for `size` bytes, for reuse; false where it is too large
/// or the cache is full, and the caller unmaps it.
fn keep(ptr: *mut u8, size: usize) -> bool {
    let Some(len) = mapped_len(size).filter(|&len| len <= CACHED_MAX) else {
        return false;
    };
    let mut freed = FREED.lock().unwrap_or_else(|e| e.into_inner());
    match freed.iter_mut().find(|(at, _)| *at == 0) {
        Some(slot) => {
            *slot = (ptr as usize, len);
            true
        }
        None => false,
    }
}

/// A fresh private anonymous mapping of `size` bytes rounded up to whole huge pages, aligned
/// to a huge page and advised to use them; null where the kernel refuses.
#[cfg(target_os = "linux")]
fn map(size: usize) -> *mut u8 {
    let Some(len) = mapped_len(size) else {
        return std::ptr::null_mut();
    };
    let Some(reserve) = len.checked_add(HUGE) else {
        return std::ptr::null_mut();
    };
    // SAFETY: a new anonymous mapping, touching no existing memory; the parts of it unmapped
    // again lie inside it (the aligned start is at most HUGE - 1 bytes past its start, and
    // `len` bytes from there end at most HUGE bytes before its end).
    unsafe {
        let at = libc::mmap(
            std::ptr::null_mut(),
            reserve,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if at == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let at = at.cast::<u8>();
        let head = at.align_offset(HUGE);
        if head > 0 {
            libc::munmap(at.cast(), head);
        }
        let start = at.add(head);
        libc::munmap(start.add(len).cast(), HUGE - head);
        // Advice only: where the kernel has no huge pages to give, ordinary ones serve.
        libc::madvise(start.cast(), len, libc::MADV_HUGEPAGE);
        start
    }
}

/// Unmaps what [`map`] returned for `size`.
#[cfg(target_os = "linux")]
fn unmap(ptr: *mut u8, size: usize) {
    // A mapping was made for this size, so its length did not overflow.
    if let Some(len) = mapped_len(size) {
        // SAFETY: `ptr` and `len` are those of a mapping made by `map` for this size.
        unsafe {
            libc::munmap(ptr.cast(), len);
        }
    }
}

/// Off Linux `large` is false and nothing is mapped.
#[cfg(not(target_os = "linux"))]
fn map(_size: usize) -> *mut u8 {
    std::ptr::null_mut()
}

#[cfg(not(target_os = "linux"))]
fn unmap(_ptr: *mut u8, _size: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the first `n` bytes at `p` are the pattern [`fill`] writes.
    fn filled(p: *const u8, n: usize) -> bool {
        // SAFETY: callers pass blocks of at least `n` bytes.
        unsafe { std::slice::from_raw_parts(p, n) }
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 251) as u8)
    }

    fn fill(p: *mut u8, n: usize) {
        // SAFETY: callers pass blocks of at least `n` bytes.
        for (i, b) in unsafe { std::slice::from_raw_parts_mut(p, n) }.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
    }

    #[test]
    fn freed_mappings_are_reused_and_zeroed_blocks_are_fresh() {
        let a = HugePages;
        // A length no other test uses, so that a test running beside this one cannot take it.
        let layout = Layout::from_size_align(3 * HUGE - 11, 8).expect("a valid layout");
        // SAFETY: valid layouts; every block is used within its size and freed once.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            fill(p, layout.size());
            a.dealloc(p, layout);
            let q = a.alloc(layout);
            if cfg!(target_os = "linux") {
                assert_eq!(q, p, "the freed mapping is reused");
            }
            a.dealloc(q, layout);
            let z = a.alloc_zeroed(layout);
            assert!(std::slice::from_raw_parts(z, layout.size()).iter().all(|&b| b == 0));
            a.dealloc(z, layout);
        }
    }

    #[test]
    fn large_blocks_are_aligned_zeroed_and_keep_their_bytes_when_resized() {
        let a = HugePages;
        let layout = |size| Layout::from_size_align(size, 8).expect("a valid layout");
        for size in [LARGE, LARGE + 1, HUGE, 3 * HUGE + 5] {
            // SAFETY: valid layouts; every block is used within its size and freed once, with
            // the layout it was made or last resized with.
            unsafe {
                let mut p = a.alloc_zeroed(layout(size));
                assert!(!p.is_null());
                if cfg!(target_os = "linux") {
                    assert_eq!(p.align_offset(HUGE), 0, "{size} bytes");
                }
                assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                fill(p, size);
                // Within the same huge pages, down to a small block, up to a larger mapping.
                for new_size in [size + 7, 4096, 5 * HUGE, 5 * HUGE - 3] {
                    let q = a.realloc(p, layout(size), new_size);
                    assert!(!q.is_null());
                    assert!(filled(q, size.min(new_size)), "{size} -> {new_size}");
                    p = a.realloc(q, layout(new_size), size);
                    assert!(!p.is_null());
                    assert!(filled(p, size.min(new_size)), "{new_size} -> {size}");
                    fill(p, size);
                }
                a.dealloc(p, layout(size));
            }
        }
    }
}
