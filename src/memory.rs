//! A global allocator that backs large allocations with transparent huge pages: see
//! [`HugePages`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// The huge page size this allocator aligns to.
const HUGE: usize = 2 << 20;

/// The page size it assumes; on a system with larger pages it leaves everything to
/// [`System`].
const PAGE: usize = 4096;

/// A global allocator: [`System`], except that allocations of 512 KiB or more are mapped
/// in whole 2 MiB pages on a 2 MiB boundary and advised to be backed by transparent huge
/// pages, where those pay.
///
/// Fresh memory is dear: the kernel zeroes every page on first touch, and on a virtual
/// machine each 4 KiB page fault costs microseconds of its own (3 to 4 µs each on the
/// 2-core machine of `docs/PERFORMANCE.md`, so a 40 MB array costs about 38 ms before
/// anything is written to it; the same array in 2 MiB pages, about 6 ms). The system
/// allocator hands out large blocks at no particular alignment, so at best their aligned
/// middle can be huge pages, and not at all for a block under a few megabytes. The advice
/// (`MADV_HUGEPAGE`) works whenever transparent huge pages are `always` or `madvise`, the
/// usual default. A process that forks also copies one entry per 2 MiB of such memory
/// instead of 512, and its children read it without faults. Smaller allocations go to the
/// system allocator unchanged.
///
/// Huge pages do not pay on a virtual machine that hands its free memory back to the host
/// (a virtio balloon with free page reporting): there, after a few idle seconds, each huge
/// page faults in the host again 512 times over, and 4 KiB pages, which come from memory
/// the host still backs, fill several times faster. The allocator then asks for none.
/// `RINGLEADER_HUGE_PAGES=1` in the environment asks for them anyway, and `0` never does.
///
/// With glibc, it also tunes the system allocator once, as it is first used: every block
/// under 512 KiB comes from glibc's heap, and the heap keeps up to 32 MiB free at its top
/// rather than giving it back to the kernel at every free. Otherwise a block of a few
/// hundred KiB that comes and goes (`ipc-channel` allocates 208 KiB for every message it
/// receives) grows and shrinks the heap each time: two system calls and a fresh page fault
/// per message, about 48 µs a step for a coordinator that hears from two worker processes
/// every step on that machine. A coordinator that hears from 16 workers at once holds 16
/// such buffers, 3.3 MiB, before it frees any: a smaller margin let it trim and regrow the
/// heap 11 times a step. What is kept costs address space, and memory only for the pages
/// that were touched: a receive buffer's first few.
///
/// Each large block is a mapping of its own, returned to the kernel when freed: right for
/// arrays that live for a run, as the simulator's do. A program that allocates and frees
/// a large block in a loop would pay a fresh mapping each time, where the system allocator
/// may keep and reuse one.
///
/// Use it in a program:
///
/// ```
/// #[global_allocator]
/// static ALLOC: ringleader::HugePages = ringleader::HugePages;
///
/// fn main() {
///     let big = vec![0u8; 8 << 20];
///     assert!(big.iter().all(|&b| b == 0));
/// }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct HugePages;

impl HugePages {
    /// Which pages this process asks for its large blocks, and why (see [`HugePages`]):
    /// for saying, beside a measurement, which pages it ran on.
    pub fn pages() -> Pages {
        if !supported() {
            Pages::System
        } else if huge_pages_pay() {
            Pages::Huge
        } else if setting() == Some(false) {
            Pages::Refused
        } else {
            Pages::HostReclaims
        }
    }

    /// Faults in every page of `memory` at once, in one system call
    /// (`MADV_POPULATE_WRITE`), where writing it would take a page fault per page: for fresh
    /// memory that is about to be written whole. On the 2-core development machine that took a fresh 40 MB of 4 KiB
    /// pages from 11 to 6 ms back to back, and from 16.5 to 11.3 ms after an idle spell.
    /// The contents do not change. Where the kernel cannot (before Linux 5.14), nothing
    /// happens, and the pages fault in as they are written.
    ///
    /// The kernel holds the process's memory-map lock meanwhile, and another thread of the
    /// process that maps memory (starting up, allocating a large block) waits for all of
    /// it. Call it where no other thread of the process maps memory meanwhile: page faults
    /// taken as the memory is written hold no such lock (on Linux 6.4 and later), and two
    /// threads that populated 20 MB each at once took longer than two that let their
    /// pages fault in.
    pub fn populate<T>(memory: &mut [T]) {
        populate(memory.as_mut_ptr() as usize, size_of_val(memory));
    }

    /// Asks the kernel to back the whole 2 MiB pages inside `memory` with huge pages, as
    /// this allocator does for its large blocks, and where they pay in the same way: for
    /// large arrays that another allocator made. Their contents do not change, and where
    /// the kernel has no huge pages nothing does.
    pub fn advise<T>(memory: &[T]) {
        if supported() {
            advise(memory.as_ptr() as usize, size_of_val(memory));
        }
    }
}

/// Which pages [`HugePages`] asks for its large blocks: [`HugePages::pages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pages {
    /// Huge pages, where the kernel has them.
    Huge,
    /// The kernel's small pages: `RINGLEADER_HUGE_PAGES=0` said so.
    Refused,
    /// The kernel's small pages: the machine is a guest that hands its free memory back to
    /// its host, where huge pages cost more (`RINGLEADER_HUGE_PAGES=1` asks for them
    /// anyway).
    HostReclaims,
    /// The system's own pages, which are not 4 KiB: the allocator leaves every block to the
    /// system allocator.
    System,
}

/// Whether this process's pages are the size the allocator assumes; asked once.
fn supported() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: not asked yet, 1: yes, 2: no. Allocating here would recurse, so no OnceLock.
    static ANSWER: AtomicU8 = AtomicU8::new(0);
    match ANSWER.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let yes = page == PAGE as libc::c_long;
            ANSWER.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Whether large blocks are worth backing with huge pages here; asked once, and then
/// inherited by forked workers. Yes, unless the kernel hands its free memory back to a
/// hypervisor; `RINGLEADER_HUGE_PAGES=1` in the environment says yes anyway, and `0` says
/// no.
///
/// A guest whose balloon device has free page reporting gives every free 2 MiB block back
/// to its host within a second or two. A huge page is such a block, so after a few idle
/// seconds each one faults in the host again on first touch, 512 times over: on one such
/// machine 2 MiB pages filled at 0.3 to 0.56 GB/s, where 4 KiB pages, which come from
/// the smaller free blocks the host still backs, filled at 1.6 to 2.2 GB/s every time.
/// Huge pages are faster there only when another process freed the memory a moment ago.
pub(crate) fn huge_pages_pay() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: not asked yet, 1: yes, 2: no. Allocating here would recurse, so no OnceLock.
    static ANSWER: AtomicU8 = AtomicU8::new(0);
    match ANSWER.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let yes = decide(setting(), free_pages_go_to_host);
            ANSWER.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

/// The answer of [`huge_pages_pay`] given the variable's setting and, when it has none,
/// whether free memory goes back to a hypervisor.
fn decide(setting: Option<bool>, free_pages_go_to_host: impl FnOnce() -> bool) -> bool {
    setting.unwrap_or_else(|| !free_pages_go_to_host())
}

/// `RINGLEADER_HUGE_PAGES`: `Some(true)` for `1`, `Some(false)` for `0`, `None` when it is
/// unset or anything else. Read without allocating, as an allocator must.
fn setting() -> Option<bool> {
    // SAFETY: the name is a NUL-terminated string. The value getenv returns is read at
    // once, before anything could change the environment: changing it while other threads
    // run is itself unsafe (`std::env::set_var`).
    let value = unsafe { libc::getenv(c"RINGLEADER_HUGE_PAGES".as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: getenv returned a NUL-terminated string (above).
    match unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() {
        b"1" => Some(true),
        b"0" => Some(false),
        _ => None,
    }
}

/// Where the virtio balloon driver lists its devices, and the bit of a device's features
/// that says it reports free pages to the host (`VIRTIO_BALLOON_F_REPORTING`).
const BALLOONS: &[u8] = b"/sys/bus/virtio/drivers/virtio_balloon";
const REPORTING: usize = 5;

/// Whether a virtio balloon device with free page reporting is bound: the kernel then hands
/// its free memory back to the hypervisor. Reads sysfs without allocating.
fn free_pages_go_to_host() -> bool {
    let mut path = [0u8; 80];
    path[..BALLOONS.len()].copy_from_slice(BALLOONS);
    // SAFETY: `path` holds the directory's name and then zeros: a C string.
    if unsafe { libc::access(path.as_ptr().cast(), libc::F_OK) } != 0 {
        return false;
    }
    // The driver's directory holds a link per device bound to it, `virtio<N>`, numbered
    // among all virtio devices.
    (0..100u8).any(|device| {
        let mut at = BALLOONS.len();
        let tens = [b'0' + device / 10];
        let tens: &[u8] = if device >= 10 { &tens } else { &[] };
        for part in [b"/virtio", tens, &[b'0' + device % 10], b"/features\0"] {
            path[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        let mut features = [0u8; 8];
        read_start(&path, &mut features).is_some_and(|len| reports_free_pages(&features[..len]))
    })
}

/// Whether a virtio device's `features` file (one `0` or `1` per feature bit, bit 0 first)
/// has the free page reporting bit.
fn reports_free_pages(features: &[u8]) -> bool {
    features.get(REPORTING) == Some(&b'1')
}

/// Reads the first bytes of the file at `path` (a C string) into `buf`: how many, or `None`
/// if it cannot be read.
fn read_start(path: &[u8], buf: &mut [u8]) -> Option<usize> {
    debug_assert!(path.contains(&0));
    // SAFETY: `path` is NUL-terminated (the caller's), and the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `buf` is writable for its length.
    let len = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: `fd` is the descriptor opened above, closed once.
    unsafe { libc::close(fd) };
    usize::try_from(len).ok()
}

/// The smallest block this allocator maps itself.
const LARGE: usize = HUGE / 4;

/// How much free memory the system allocator keeps at the top of its heap (see
/// [`tune_system`]).
const KEEP: usize = 16 * HUGE;

/// Tunes the system allocator, once, before this allocator first hands it a block (glibc
/// only): blocks under [`LARGE`] all come from its heap, which it trims only when more
/// than [`KEEP`] is free at the top. By default glibc maps a block of 128 KiB or more on
/// its own and raises that threshold to the largest such block freed, so a block of a few
/// hundred KiB freed and allocated again (a receive buffer, say) sits at the top of the
/// heap, and each free trims the heap and each allocation grows it back into fresh pages.
fn tune_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static TUNED: AtomicBool = AtomicBool::new(false);
        if !TUNED.load(Ordering::Relaxed) && !TUNED.swap(true, Ordering::Relaxed) {
            // SAFETY: mallopt only sets the allocator's parameters; both values are in
            // range, and a call that fails leaves the defaults.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE as libc::c_int);
                libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP as libc::c_int);
            }
        }
    }
}

/// Whether a block of `layout` is one this allocator maps itself.
fn mapped(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= HUGE && supported()
}

/// The length of the mapping that holds `size` bytes: whole huge pages, so that the last
/// one is a huge page too. What the block does not use stays untouched, and costs nothing
/// until its huge page is touched; at worst a block of 512 KiB takes 2 MiB.
fn mapping_len(size: usize) -> usize {
    size.next_multiple_of(HUGE)
}

/// The smallest range [`populate`] faults in: sixteen pages. Arrays under a megabyte pay
/// too: at 10⁵ particles between two processes, the coordinator writes the final state into
/// four arrays of 800 KB whose pages the workers shared; populated, the end took 2.5 ms
/// rather than 3.3 (medians of twenty runs taking turns).
const POPULATE_FROM: usize = 16 * PAGE;

/// Faults in the pages of `[start, start + len)` now: see [`HugePages::populate`]. Below
/// [`POPULATE_FROM`] the faults cost too little to matter.
///
/// The kernel holds the process's memory-map lock while it populates, and every other
/// thread that maps, unmaps or protects memory meanwhile waits: a thread starting up (its
/// signal stack), a large allocation or free. The range goes [`HUGE`] at a time, but that
/// does not let such a thread in between the pieces: the kernel lets the next piece's
/// read lock go ahead of a waiting writer for some milliseconds. Populating the 20 MB
/// strip of one of two threads held the other thread's start back until it was done, 4
/// to 7 ms, in pieces or whole.
pub(crate) fn populate(start: usize, len: usize) {
    if len < POPULATE_FROM || !supported() {
        return;
    }
    let first = start / PAGE * PAGE;
    let end = (start + len).next_multiple_of(PAGE);
    let mut from = first;
    while from < end {
        let to = end.min((from + 1).next_multiple_of(HUGE));
        // SAFETY: the range is within `[start, start + len)`, memory the caller may write,
        // and at most the rest of its first and last pages. Populating maps pages without
        // changing any byte of them; a range the kernel cannot populate fails and changes
        // nothing.
        unsafe {
            libc::madvise(
                from as *mut libc::c_void,
                to - from,
                libc::MADV_POPULATE_WRITE,
            );
        }
        from = to;
    }
}

/// Hands the system allocator's free memory back to the kernel (glibc only): called just
/// before workers are forked. A page of the heap that is free but still mapped, kept for
/// the next allocation ([`tune_system`] keeps up to [`KEEP`] at the top), is shared with
/// every worker by the fork, so the first write to it, in the coordinator or in a worker,
/// copies it; a page given back costs only a fresh zeroed one. A process that launches
/// more than once (a bench that runs every row in one process, say) has such pages from
/// the runs before: on two worker processes at 10⁵ particles, allocating the coordinator's
/// buffers at the end of a later run took 2.5 ms rather than 0.7, and the end 4.9 ms
/// rather than 3.2 (medians of twenty runs, each the second to sixth in its process). It
/// costs 0.1 to 0.2 ms there, and about nothing in a process's first launch.
pub(crate) fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; it changes no byte of any
    // live block.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Asks for huge pages over the whole 2 MiB runs inside `[start, start + len)`, where
/// they pay ([`huge_pages_pay`]).
pub(crate) fn advise(start: usize, len: usize) {
    if !huge_pages_pay() {
        return;
    }
    let first = start.next_multiple_of(HUGE);
    let end = (start + len) / HUGE * HUGE;
    if end > first {
        // SAFETY: the advice changes only how the kernel backs the pages, never their
        // contents; on a range that is not mapped the call fails and changes nothing.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

/// Maps `size` bytes, zeroed, at a 2 MiB boundary; null on failure.
fn map(size: usize) -> *mut u8 {
    let len = mapping_len(size);
    let Some(span) = len.checked_add(HUGE) else {
        return ptr::null_mut();
    };
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
    // no memory of ours.
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return ptr::null_mut();
    }
    let raw = raw as usize;
    let start = raw.next_multiple_of(HUGE);
    let (head, tail) = (start - raw, raw + span - (start + len));
    // SAFETY: both pieces lie inside the mapping just made and outside `[start, start +
    // len)`, which is what the caller gets; a failed unmap only leaves them mapped.
    unsafe {
        if head > 0 {
            libc::munmap(raw as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
    }
    advise(start, len);
    start as *mut u8
}

// SAFETY: every block is either the system allocator's, or a private anonymous mapping of
// `mapping_len(size)` bytes at a 2 MiB boundary (so aligned for any layout `mapped`
// accepts), zeroed by the kernel, and unmapped whole on deallocation. Which of the two a
// block is depends only on its layout, and `GlobalAlloc` passes the layout it was
// allocated (or last reallocated) with to `dealloc` and `realloc`.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            map(layout.size())
        } else {
            tune_system();
            // SAFETY: the caller's contract is passed on unchanged.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            // A fresh mapping is zeroed already, and stays untouched until used.
            map(layout.size())
        } else {
            tune_system();
            // SAFETY: the caller's contract is passed on unchanged.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if mapped(layout) {
            // SAFETY: `block` is a mapping of this length that `map` (or `realloc`) made.
            unsafe {
                libc::munmap(block.cast(), mapping_len(layout.size()));
            }
        } else {
            // SAFETY: the caller's contract is passed on unchanged.
            unsafe { System.dealloc(block, layout) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (for the layout): the caller guarantees that `new_size`, rounded up to
        // the alignment, does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (mapped(layout), mapped(new_layout)) {
            (false, false) => {
                tune_system();
                // SAFETY: the caller's contract is passed on unchanged.
                unsafe { System.realloc(block, layout, new_size) }
            }
            (true, true) => {
                let (old_len, new_len) = (mapping_len(layout.size()), mapping_len(new_size));
                if old_len == new_len {
                    return block;
                }
                // The kernel moves the pages rather than copying them. The new place may
                // not be at a 2 MiB boundary, which costs only huge pages at its ends;
                // page alignment is all the layout needs.
                // SAFETY: `block` is a mapping of `old_len` bytes that this allocator made.
                let moved =
                    unsafe { libc::mremap(block.cast(), old_len, new_len, libc::MREMAP_MAYMOVE) };
                if moved == libc::MAP_FAILED {
                    return ptr::null_mut();
                }
                advise(moved as usize, new_len);
                moved.cast()
            }
            _ => {
                // SAFETY: `new_layout` is valid (above) and not zero-sized: one of the two
                // sizes is at least LARGE, and a smaller one is the caller's non-zero size.
                let fresh = unsafe { self.alloc(new_layout) };
                if !fresh.is_null() {
                    // SAFETY: both blocks are live and distinct, and each holds at least
                    // the smaller of the two sizes.
                    unsafe {
                        ptr::copy_nonoverlapping(block, fresh, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                fresh
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates with `HugePages` directly (the test binary keeps the system allocator).
    fn with_block(size: usize, align: usize, f: impl FnOnce(*mut u8, Layout)) {
        let layout = Layout::from_size_align(size, align).unwrap();
        let block = unsafe { HugePages.alloc_zeroed(layout) };
        assert!(!block.is_null());
        f(block, layout);
    }

    #[test]
    fn large_blocks_sit_on_huge_page_boundaries_and_come_zeroed() {
        for size in [LARGE, HUGE, HUGE + 1, 5 * HUGE + 123] {
            with_block(size, 8, |block, layout| {
                assert_eq!(block as usize % HUGE, 0, "{size}");
                let bytes = unsafe { std::slice::from_raw_parts_mut(block, size) };
                assert!(bytes.iter().all(|&b| b == 0));
                bytes.fill(7);
                unsafe { HugePages.dealloc(block, layout) };
            });
        }
    }

    /// The value of the `field` line of the mapping that holds `at`, from
    /// `/proc/self/smaps`.
    fn smaps_field(at: usize, field: &str) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let range = line
                .split_whitespace()
                .next()
                .and_then(|r| r.split_once('-'));
            if let Some((from, to)) = range
                && let (Ok(from), Ok(to)) = (
                    usize::from_str_radix(from, 16),
                    usize::from_str_radix(to, 16),
                )
            {
                inside = (from..to).contains(&at);
            } else if inside
                && let Some(value) = line.strip_prefix(field).and_then(|l| l.strip_prefix(':'))
            {
                return Some(value.trim().to_owned());
            }
        }
        None
    }

    /// The `THPeligible` line of the mapping that holds `at`.
    fn huge_page_eligible(at: usize) -> Option<bool> {
        smaps_field(at, "THPeligible").map(|value| value == "1")
    }

    /// How many KiB of the mapping that holds `at` are in memory.
    fn resident_kib(at: usize) -> Option<usize> {
        smaps_field(at, "Rss")?.strip_suffix(" kB")?.parse().ok()
    }

    #[test]
    fn populating_faults_the_pages_in_and_keeps_the_bytes() {
        with_block(3 * HUGE, 8, |block, layout| {
            let bytes = unsafe { std::slice::from_raw_parts_mut(block, layout.size()) };
            bytes[..5000].fill(7);
            let before = resident_kib(block as usize);
            HugePages::populate(bytes);
            let after = resident_kib(block as usize);
            // Where the kernel can populate (Linux 5.14 on: asked of one more page) and
            // says what is resident.
            let mut page = vec![0u8; 2 * PAGE];
            let at = (page.as_mut_ptr() as usize).next_multiple_of(PAGE);
            let can = unsafe {
                libc::madvise(at as *mut libc::c_void, PAGE, libc::MADV_POPULATE_WRITE) == 0
            };
            if can && let (Some(before), Some(after)) = (before, after) {
                assert!(
                    before < 1024 && after >= 3 * HUGE / 1024,
                    "{before} {after}"
                );
            }
            assert!(bytes[..5000].iter().all(|&b| b == 7));
            assert!(bytes[5000..].iter().all(|&b| b == 0));
            unsafe { HugePages.dealloc(block, layout) };
        });
    }

    /// Whether the kernel backs memory with huge pages only where a process asks
    /// (`madvise`), and whether it does at all: `None` when it says nothing.
    fn transparent_huge_pages() -> Option<(bool, bool)> {
        let enabled =
            std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
        Some((enabled.contains("[madvise]"), !enabled.contains("[never]")))
    }

    #[test]
    fn large_blocks_are_eligible_for_huge_pages_where_the_kernel_has_them_and_they_pay() {
        with_block(3 * HUGE, 8, |block, layout| {
            if let Some((on_advice, offered)) = transparent_huge_pages()
                && let Some(eligible) = huge_page_eligible(block as usize)
            {
                // Asked for exactly when they pay; without asking only when the kernel
                // backs all memory so.
                let want = offered && (huge_pages_pay() || !on_advice);
                assert_eq!(eligible, want, "a block of {} bytes", layout.size());
            }
            unsafe { HugePages.dealloc(block, layout) };
        });
    }

    #[test]
    fn another_allocators_array_is_advised_as_the_allocators_own_blocks_are() {
        let array = vec![1u64; 3 * HUGE / 8];
        HugePages::advise(&array);
        let middle = array.as_ptr() as usize + HUGE;
        if let Some((true, true)) = transparent_huge_pages()
            && let Some(eligible) = huge_page_eligible(middle)
        {
            assert_eq!(eligible, huge_pages_pay());
        }
        assert!(array.iter().all(|&x| x == 1));
    }

    /// Run by the test below, in a process of its own whose environment sets
    /// `RINGLEADER_HUGE_PAGES`: a large block is advised exactly when it says `1`.
    #[test]
    #[ignore = "run by the_variable_decides_in_a_process_of_its_own"]
    fn probe_the_variable() {
        let said = std::env::var("RINGLEADER_HUGE_PAGES").expect("run with the variable set");
        assert_eq!(huge_pages_pay(), said == "1");
        if supported() {
            let want = if said == "1" {
                Pages::Huge
            } else {
                Pages::Refused
            };
            assert_eq!(HugePages::pages(), want);
        }
        with_block(3 * HUGE, 8, |block, layout| {
            if let Some((true, true)) = transparent_huge_pages() {
                assert_eq!(huge_page_eligible(block as usize), Some(said == "1"));
            }
            unsafe { HugePages.dealloc(block, layout) };
        });
    }

    #[test]
    fn the_variable_decides_in_a_process_of_its_own() {
        let me = std::env::current_exe().unwrap();
        for said in ["0", "1"] {
            let out = std::process::Command::new(&me)
                .args(["--exact", "memory::tests::probe_the_variable", "--ignored"])
                .env("RINGLEADER_HUGE_PAGES", said)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "RINGLEADER_HUGE_PAGES={said}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn the_environment_decides_over_the_host() {
        let asked = std::cell::Cell::new(0);
        let asked = &asked;
        let host = |reports: bool| {
            move || {
                asked.set(asked.get() + 1);
                reports
            }
        };
        assert!(decide(Some(true), host(true)));
        assert!(!decide(Some(false), host(false)));
        assert_eq!(
            asked.get(),
            0,
            "the host is not asked when the variable says"
        );
        assert!(!decide(None, host(true)));
        assert!(decide(None, host(false)));
        assert_eq!(asked.get(), 2);
    }

    #[test]
    fn pages_says_what_advise_does() {
        // This process's choice, whatever the machine: huge pages exactly where advised.
        let pages = HugePages::pages();
        assert_eq!(
            pages == Pages::Huge,
            supported() && huge_pages_pay(),
            "{pages:?}"
        );
        if std::env::var_os("RINGLEADER_HUGE_PAGES").is_none() && supported() {
            let want = if free_pages_go_to_host() {
                Pages::HostReclaims
            } else {
                Pages::Huge
            };
            assert_eq!(pages, want);
        }
    }

    #[test]
    fn the_reporting_bit_is_the_sixth_feature() {
        assert!(reports_free_pages(b"01100101000000"));
        assert!(reports_free_pages(b"000001"));
        assert!(!reports_free_pages(b"011000110000"));
        assert!(!reports_free_pages(b"01100"));
        assert!(!reports_free_pages(b""));
    }

    #[test]
    fn this_machines_balloon_is_read_as_its_sysfs_says() {
        // The same question, asked with the standard library.
        let dir = std::path::Path::new("/sys/bus/virtio/drivers/virtio_balloon");
        let want = std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|entry| {
                entry.file_name().to_string_lossy().starts_with("virtio")
                    && std::fs::read(entry.path().join("features"))
                        .is_ok_and(|f| reports_free_pages(&f))
            })
        });
        assert_eq!(free_pages_go_to_host(), want);
    }

    #[test]
    fn small_blocks_are_the_system_allocators() {
        with_block(100, 16, |block, layout| {
            assert_eq!(block as usize % 16, 0);
            unsafe { HugePages.dealloc(block, layout) };
        });
    }

    #[test]
    fn growing_and_shrinking_across_the_threshold_keeps_the_bytes() {
        // Small to large, large to larger (moved by the kernel), large to small.
        let sizes = [1000, 3 * HUGE, 7 * HUGE + 5, 3 * HUGE, 512];
        let mut layout = Layout::from_size_align(sizes[0], 8).unwrap();
        let mut block = unsafe { HugePages.alloc(layout) };
        assert!(!block.is_null());
        let pattern = |i: usize| (i % 251) as u8;
        for (i, byte) in
            (0..sizes[0]).zip(unsafe { std::slice::from_raw_parts_mut(block, sizes[0]) })
        {
            *byte = pattern(i);
        }
        for pair in sizes.windows(2) {
            let (old, new) = (pair[0], pair[1]);
            block = unsafe { HugePages.realloc(block, layout, new) };
            assert!(!block.is_null(), "{old} to {new}");
            assert_eq!(block as usize % 8, 0);
            layout = Layout::from_size_align(new, 8).unwrap();
            let bytes = unsafe { std::slice::from_raw_parts_mut(block, new) };
            let kept = old.min(new).min(sizes[0]);
            assert!(
                bytes[..kept]
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == pattern(i)),
                "{old} to {new}"
            );
        }
        unsafe { HugePages.dealloc(block, layout) };
    }

    #[test]
    fn an_alignment_beyond_a_huge_page_is_left_to_the_system() {
        let layout = Layout::from_size_align(HUGE, 2 * HUGE).unwrap();
        assert!(!mapped(layout));
        let block = unsafe { HugePages.alloc(layout) };
        assert!(!block.is_null());
        assert_eq!(block as usize % (2 * HUGE), 0);
        unsafe { HugePages.dealloc(block, layout) };
    }
}
