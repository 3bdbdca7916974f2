//! Memory that every process of a run shares: a `MAP_SHARED` anonymous mapping made before
//! the fork, so the coordinator and the forked workers see the same bytes. With the threads
//! transport the mapping is simply shared by the threads.

use std::io;
use std::ops::Index;
use std::ptr::NonNull;

/// Types that may live in shared memory: valid when every byte is zero, and made of
/// atomics only, so any thread of any process may touch them through `&`.
///
/// # Safety
///
/// An implementor must be valid as all-zero bytes and must be `Sync` through atomics alone
/// (no pointers, no locks that live in one process).
pub(crate) unsafe trait SharedZeroed: Sync {}

/// A zeroed array of `T` in shared memory.
pub(crate) struct SharedArray<T: SharedZeroed> {
    base: NonNull<T>,
    len: usize,
    bytes: usize,
}

// SAFETY: `T: SharedZeroed` is `Sync` and holds only atomics; the mapping stays valid until
// the array is dropped.
unsafe impl<T: SharedZeroed> Send for SharedArray<T> {}
// SAFETY: as above: every access goes through `&T`, which is `Sync`.
unsafe impl<T: SharedZeroed> Sync for SharedArray<T> {}

impl<T: SharedZeroed> SharedArray<T> {
    /// Maps `len` zeroed elements (at least one).
    pub(crate) fn new(len: usize) -> io::Result<Self> {
        const { assert!(align_of::<T>() <= 4096, "a mapping is only page-aligned") };
        let len = len.max(1);
        let bytes = size_of::<T>()
            .checked_mul(len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?
            .max(1);
        // SAFETY: an anonymous mapping with no address hint touches no existing memory; the
        // result is checked for MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<T>()).ok_or_else(io::Error::last_os_error)?;
        Ok(SharedArray { base, len, bytes })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl<T: SharedZeroed> Index<usize> for SharedArray<T> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        assert!(index < self.len, "index {index} of {}", self.len);
        // SAFETY: the index is in bounds; the mapping is page-aligned and `T` needs no more
        // (checked in `new`), and a fresh mapping is zeroed, which `SharedZeroed` makes a
        // valid `T`. The reference cannot outlive `self`, which owns the mapping.
        unsafe { &*self.base.as_ptr().add(index) }
    }
}

impl<T: SharedZeroed> Drop for SharedArray<T> {
    fn drop(&mut self) {
        // SAFETY: `base` and `bytes` are exactly what mmap returned, and no reference into
        // the mapping outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[repr(C, align(64))]
    struct Counter(AtomicU64);

    // SAFETY: one atomic, valid at zero.
    unsafe impl SharedZeroed for Counter {}

    #[test]
    fn a_forked_child_writes_what_the_parent_reads() {
        let counters = SharedArray::<Counter>::new(3).unwrap();
        assert_eq!(counters.len(), 3);
        assert_eq!(counters[2].0.load(Ordering::Relaxed), 0);
        // SAFETY: the child only stores to shared memory and leaves with `_exit`. (The test
        // harness has other threads; the child touches no lock they might hold.)
        match unsafe { libc::fork() } {
            0 => {
                counters[2].0.store(7, Ordering::Release);
                unsafe { libc::_exit(0) }
            }
            -1 => panic!("fork: {}", io::Error::last_os_error()),
            child => {
                let mut status = 0;
                // SAFETY: waits for the child just made.
                assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
                assert_eq!(counters[2].0.load(Ordering::Acquire), 7);
                assert_eq!(counters[0].0.load(Ordering::Relaxed), 0);
            }
        }
    }
}
