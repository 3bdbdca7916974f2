//! What a worker sends up, lent: the coordinator copies a handed-over vector, or a large
//! bulk array in a report, straight out of the worker's memory.
//!
//! A vector a forked worker gives up ([`Ring::bulk_from_vec`](crate::Ring::bulk_from_vec))
//! has to reach the coordinator's memory somehow. As a shared-memory region it costs a
//! copy into fresh pages in the worker and a page fault for every 4 KiB the coordinator
//! reads; shared memory gets no huge pages unless the machine's administrator allows them.
//! On a 2-core VM that was 48 ms for a 20 MB output, about two steps of a cells run of a
//! million particles. So a worker's output goes another way when it can: the frame names
//! the vector's address in the worker, the coordinator reads it with `process_vm_readv`
//! into memory of its own that huge pages back (5 ms for the same 20 MB there; a large
//! block is read in pieces by several threads, which fault in fresh pages side by side),
//! and then tells the worker it may exit (`Down::Release`). The worker keeps the vector
//! until then.
//!
//! Large bulk arrays in reports are lent too, mid-run. The worker must not free or change
//! the memory before the coordinator has read it, so the coordinator counts every block it
//! reads from a worker on the run's progress board, and the worker keeps each block it
//! lent, numbered in the order it sent them, until the count reaches its number. The
//! coordinator reads the blocks of one worker in that order, as it receives each message,
//! and a block it skips (its lender gone) it never reads later: so a count of `k` means
//! that no block numbered `k` or less will be read again. A worker that ends keeps its
//! blocks until the coordinator has taken its last word, which comes after every report.
//!
//! Only messages up to the coordinator are lent, never a message to a neighbour. The
//! coordinator reads only from the processes it forked for the run now going on
//! ([`Lenders`]), so bytes that name another process are refused. Whether the kernel lets
//! a parent read its children's memory (Yama's `ptrace_scope`, a seccomp filter) is asked
//! once, before the workers are forked ([`possible`]); where it does not, the blocks cross
//! as shared-memory regions, as before.

use std::cell::Cell;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::block::Aligned;
use super::payload::Detail;
use crate::progress::Board;

/// A worker this process forked for the run going on: where the coordinator counts the
/// blocks it read from it, so that the worker may free them.
struct Lender {
    pid: u32,
    rank: usize,
    board: Arc<Board>,
}

/// The workers this process forked for the run going on.
static LENDERS: Mutex<Vec<Lender>> = Mutex::new(Vec::new());

/// Whether the coordinator can read its workers' memory. Asked in the coordinator before
/// it forks, so every worker inherits the answer.
static POSSIBLE: OnceLock<bool> = OnceLock::new();

thread_local! {
    /// Whether this thread is sending a message up, whose held blocks may be lent.
    static LENDING: Cell<bool> = const { Cell::new(false) };
}

/// The workers of one run, registered as lenders while it lasts.
#[derive(Debug)]
pub(crate) struct Lenders(Vec<u32>);

impl Lenders {
    /// Registers `pids`, the workers just forked, in rank order, and the board of their
    /// run.
    pub(crate) fn register(pids: Vec<u32>, board: &Arc<Board>) -> Lenders {
        LENDERS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(pids.iter().enumerate().map(|(rank, &pid)| Lender {
                pid,
                rank,
                board: Arc::clone(board),
            }));
        Lenders(pids)
    }
}

impl Drop for Lenders {
    fn drop(&mut self) {
        // Reaped pids are free for the OS to give to anyone.
        LENDERS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|lender| !self.0.contains(&lender.pid));
    }
}

/// Whether a parent can read its children's memory here. The first call asks the kernel;
/// call it before forking, so the children know the answer too.
pub(crate) fn possible() -> bool {
    *POSSIBLE.get_or_init(ask_the_kernel)
}

/// Yama's `ptrace_scope` 0 or 1 lets a parent read a child (2 and 3 do not), and reading
/// this process's own memory shows that no filter refuses the call.
fn ask_the_kernel() -> bool {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if scope.is_some_and(|scope| scope > 1) {
        return false;
    }
    let probe = [0x5au8; 64];
    let mut back = [0u8; 64];
    let read = read_into(std::process::id(), probe.as_ptr() as u64, &mut back);
    read == Ok(64) && back == probe
}

/// Runs `send`, a message up to the coordinator, so that its held blocks are lent rather
/// than copied. The caller keeps them until the coordinator has read them.
pub(crate) fn lending<R>(send: impl FnOnce() -> R) -> R {
    super::block::with_flag(&LENDING, send)
}

/// Whether a held block being sent now may be lent.
pub(crate) fn is_lending() -> bool {
    LENDING.get()
}

/// Copies `len` bytes at `addr` in worker `pid` into a buffer of this process, and counts
/// the block read on the run's board: the worker may then free it.
///
/// # Errors
///
/// What went wrong if `pid` is not a worker of the run going on, if the memory cannot be
/// had, or if the kernel refuses the read or finds no such bytes in the worker; and
/// whether the worker had ended (was exiting, or had exited) by then.
pub(crate) fn read(pid: u32, addr: u64, len: u64) -> Result<Aligned, Detail> {
    let Some((rank, board)) = lender(pid) else {
        return Err(
            format!("a block lent by process {pid}, which is no worker of this run").into(),
        );
    };
    let buffer = copy(pid, addr, len)?;
    board.count_lent_read(rank);
    Ok(buffer)
}

/// The rank and the run's board of `pid`, if it is a worker of the run going on.
fn lender(pid: u32) -> Option<(usize, Arc<Board>)> {
    LENDERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|lender| lender.pid == pid)
        .map(|lender| (lender.rank, Arc::clone(&lender.board)))
}

/// Copies each of `pieces` (an address and a length) in worker `pid`, one after another,
/// to the front of `into`, for a [`Ticket`](crate::Ticket): up to [`IOV_MAX`] pieces a
/// system call. Nothing is counted on the board: the worker keeps a loan until the
/// coordinator answers.
///
/// # Errors
///
/// As [`read`]'s, and if the pieces take more than `into` holds.
pub(crate) fn read_pieces(
    pid: u32,
    pieces: &[(u64, usize)],
    into: &mut [u8],
) -> Result<(), Detail> {
    if lender(pid).is_none() {
        return Err(
            format!("an array lent by process {pid}, which is no worker of this run").into(),
        );
    }
    let total: usize = pieces.iter().map(|&(_, len)| len).sum();
    let Some(into) = into.get_mut(..total) else {
        return Err(format!("{total} lent bytes read into room for {}", into.len()).into());
    };
    let mut at = 0;
    for batch in pieces.chunks(IOV_MAX) {
        let want: usize = batch.iter().map(|&(_, len)| len).sum();
        match read_vectored(pid, batch, &mut into[at..at + want]) {
            Ok(read) if read == want => at += want,
            // A read stops short only where the worker's memory does: the loan is gone.
            Ok(read) => {
                return Err(format!("process {pid} had only {read} of {want} lent bytes").into());
            }
            Err(errno) => {
                return Err(Detail {
                    message: format!(
                        "could not read {want} lent bytes from process {pid}: {errno}"
                    ),
                    lender_gone: errno == nix::errno::Errno::ESRCH,
                });
            }
        }
    }
    Ok(())
}

/// The most pieces one `process_vm_readv` takes (`IOV_MAX` on Linux).
const IOV_MAX: usize = 1024;

/// The copy of [`read`].
fn copy(pid: u32, addr: u64, len: u64) -> Result<Aligned, Detail> {
    let len = usize::try_from(len).map_err(|_| format!("a lent block of {len} bytes"))?;
    let mut buffer = Aligned::untouched(len)
        .ok_or_else(|| format!("no memory for a lent block of {len} bytes"))?;
    let bytes = buffer.bytes_mut();
    let pieces = pieces(len);
    if pieces <= 1 {
        crate::HugePages::populate(bytes);
        read_piece(pid, addr, 0, bytes, len)?;
        return Ok(buffer);
    }
    // Fresh memory is the dear part of a large read (the kernel zeroes and maps each page
    // as the copy first touches it), and threads fault pages in side by side: a 20 MB
    // output took 20 to 45 ms on one thread. Each thread takes whole huge pages. They let
    // the pages fault in as the copy writes them rather than populate them first: a thread
    // that populates holds the memory-map lock, which the others need to start. Two
    // workers' 20 MB outputs, the whole launch: 27.9 against 30.3 ms and 32.1 against
    // 34.4 (medians of 24 and 16 runs taking turns).
    let piece = len.div_ceil(pieces).next_multiple_of(2 << 20);
    std::thread::scope(|scope| {
        let mut chunks = bytes.chunks_mut(piece).enumerate();
        // This thread reads the first piece itself, after starting the others.
        let Some((_, first)) = chunks.next() else {
            return Ok(());
        };
        let mut running = Vec::with_capacity(pieces);
        for (k, into) in chunks {
            let read = move || read_piece(pid, addr, k * piece, into, len);
            match std::thread::Builder::new().spawn_scoped(scope, read) {
                Ok(handle) => running.push(handle),
                Err(e) => return Err(format!("no thread to read lent bytes with: {e}").into()),
            }
        }
        let mut result = read_piece(pid, addr, 0, first, len);
        for handle in running {
            let read = handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            result = result.and(read);
        }
        result
    })?;
    Ok(buffer)
}

/// How many threads read a lent block of `len` bytes: one per 4 MiB, up to four, and no
/// more than the machine has cores.
fn pieces(len: usize) -> usize {
    const PIECE: usize = 4 << 20;
    (len / PIECE).min(super::cores()).min(4)
}

/// Reads `into.len()` bytes at `addr + from` in process `pid`, the piece at `from` of a
/// lent block of `len` bytes.
fn read_piece(pid: u32, addr: u64, from: usize, into: &mut [u8], len: usize) -> Result<(), Detail> {
    let mut done = 0;
    while done < into.len() {
        let at = addr
            .checked_add((from + done) as u64)
            .ok_or("a lent block past the end of memory")?;
        match read_into(pid, at, &mut into[done..]) {
            Ok(0) => {
                return Err(
                    format!("process {pid} has only {} of {len} lent bytes", from + done).into(),
                );
            }
            Ok(n) => done += n,
            Err(errno) => {
                return Err(Detail {
                    message: format!("could not read {len} lent bytes from process {pid}: {errno}"),
                    // No such process, or one without memory any more: it is exiting.
                    lender_gone: errno == nix::errno::Errno::ESRCH,
                });
            }
        }
    }
    Ok(())
}

/// One `process_vm_readv` of up to `into.len()` bytes at `addr` in process `pid`: the
/// kernel checks the remote range, and writes only `into`.
fn read_into(pid: u32, addr: u64, into: &mut [u8]) -> Result<usize, nix::errno::Errno> {
    let len = into.len();
    read_vectored(pid, &[(addr, len)], into)
}

/// One `process_vm_readv` of each of `pieces` (an address and a length, at most
/// [`IOV_MAX`] of them) in process `pid`, one after another, into `into`: the bytes read.
fn read_vectored(
    pid: u32,
    pieces: &[(u64, usize)],
    into: &mut [u8],
) -> Result<usize, nix::errno::Errno> {
    let local = libc::iovec {
        iov_base: into.as_mut_ptr().cast(),
        iov_len: into.len(),
    };
    let remote: Vec<libc::iovec> = pieces
        .iter()
        .map(|&(addr, len)| libc::iovec {
            iov_base: addr as usize as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    let pid = libc::pid_t::try_from(pid).map_err(|_| nix::errno::Errno::ESRCH)?;
    let count = libc::c_ulong::try_from(remote.len()).map_err(|_| nix::errno::Errno::EINVAL)?;
    // SAFETY: the one local iovec covers `into`, which the kernel may write (it writes no
    // more than the remote pieces hold); the remote ones are only read, in the other
    // process, and the kernel validates them there.
    let read = unsafe { libc::process_vm_readv(pid, &local, 1, remote.as_ptr(), count, 0) };
    if read < 0 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(read.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Block, by_ipc};

    /// Through a real channel, as a worker's last word (`lend`) or as any other message.
    fn through_ipc(block: &Block, lend: bool) -> Result<Block, String> {
        let (tx, rx) = ipc_channel::ipc::channel::<Block>().map_err(|e| e.to_string())?;
        let send = || by_ipc(|| tx.send(block.clone()));
        if lend { lending(send) } else { send() }.map_err(|e| e.to_string())?;
        rx.recv().map_err(|e| e.to_string())
    }

    /// Tests that make this process a lender, and the one that needs it not to be, take
    /// turns.
    static SELF_LENDING: Mutex<()> = Mutex::new(());

    /// Why a read that must fail failed.
    fn failure(read: Result<Aligned, Detail>) -> Detail {
        match read {
            Ok(_) => panic!("the read was meant to fail"),
            Err(detail) => detail,
        }
    }

    fn numbers() -> Vec<u64> {
        (0..100_000).map(|i| i * 7).collect()
    }

    /// Registers `pids` as lenders, ranks in order, with a board of their own.
    fn register(pids: Vec<u32>) -> (Lenders, Arc<Board>) {
        let board = Arc::new(Board::new(pids.len()).unwrap());
        (Lenders::register(pids, &board), board)
    }

    /// Lent, the bytes are read out of the lender's memory into the receiver's own: no
    /// shared-memory region is made on the way.
    #[test]
    fn a_held_block_sent_as_a_last_word_is_read_out_of_the_lenders_memory() {
        let data = numbers();
        let block = Block::adopted(true, data.clone());
        assert!(block.is_held());
        // This process lends to itself, as a worker lends to its coordinator.
        let _turn = SELF_LENDING.lock().unwrap_or_else(PoisonError::into_inner);
        let (_me, board) = register(vec![std::process::id()]);
        let back = through_ipc(&block, true).unwrap();
        assert!(!back.is_shared(), "{back:?}");
        assert_eq!(back.carried_bytes(), Some(bytemuck::cast_slice(&data)));
        // Counted on the board: the lender may free it now.
        assert_eq!(board.lent_read(0), 1);
        let _ = through_ipc(&block, true).unwrap();
        assert_eq!(board.lent_read(0), 2);
    }

    /// Sent any other way the worker goes on, and may free the vector: the block goes as a
    /// region, a copy.
    #[test]
    fn a_held_block_sent_any_other_way_goes_as_a_region() {
        let data = numbers();
        let block = Block::adopted(true, data.clone());
        let back = through_ipc(&block, false).unwrap();
        assert!(back.is_shared() && !back.is_held(), "{back:?}");
        assert_eq!(back.carried_bytes(), Some(bytemuck::cast_slice(&data)));
    }

    /// Bytes that name a process that is not a worker of the run going on are refused
    /// with a message, never read.
    #[test]
    fn a_block_lent_by_a_process_that_is_no_worker_is_refused() {
        let err = failure(read(1, 4096, 16)).message;
        assert!(err.contains("process 1, which is no worker"), "{err}");
        // The same through a channel: the receive fails, and nothing panics.
        let _turn = SELF_LENDING.lock().unwrap_or_else(PoisonError::into_inner);
        let block = Block::adopted(true, numbers());
        assert!(through_ipc(&block, true).is_err());
        // What went wrong is kept beside postcard's bare error.
        let detail = crate::transport::take_detail()
            .map(|d| d.message)
            .unwrap_or_default();
        assert!(
            detail.contains("which is no worker of this run"),
            "{detail}"
        );
    }

    /// A lender that does not have the bytes it claims: an error, not a crash.
    #[test]
    fn bytes_the_lender_lacks_are_an_error() {
        let _turn = SELF_LENDING.lock().unwrap_or_else(PoisonError::into_inner);
        let (_me, _board) = register(vec![std::process::id()]);
        let err = failure(read(std::process::id(), 8, 64)).message;
        assert!(err.contains("could not read 64 lent bytes"), "{err}");
    }

    /// A lender that has ended (here a child that exited and is not yet reaped) is told
    /// apart from bytes a live lender lacks.
    #[test]
    fn a_lender_that_has_ended_is_told_apart_from_missing_bytes() {
        use nix::sys::wait::{Id, WaitPidFlag, waitid};
        let _turn = SELF_LENDING.lock().unwrap_or_else(PoisonError::into_inner);
        let me = std::process::id();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let (_lenders, _board) = register(vec![me, child.id()]);
        // Wait for it to exit, and leave it unreaped: its pid stays its own.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).unwrap();
        let err = failure(read(child.id(), 4096, 64));
        assert!(
            err.message.contains("could not read 64 lent bytes"),
            "{err:?}"
        );
        assert!(err.lender_gone, "{err:?}");
        assert!(child.wait().unwrap().success());
        // A live lender without the bytes is not gone.
        let err = failure(read(me, 8, 64));
        assert!(!err.lender_gone, "{err:?}");
    }

    /// A large block is read by several threads, a piece each, and comes back whole; a
    /// piece the lender lacks fails the read.
    #[test]
    fn a_large_block_is_read_in_pieces_side_by_side() {
        let data: Vec<u64> = (0..3_000_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9))
            .collect();
        let bytes: &[u8] = bytemuck::cast_slice(&data);
        assert!(bytes.len() >= 3 * (4 << 20));
        let _turn = SELF_LENDING.lock().unwrap_or_else(PoisonError::into_inner);
        let (_me, _board) = register(vec![std::process::id()]);
        let me = std::process::id();
        let back = read(me, bytes.as_ptr() as u64, bytes.len() as u64).unwrap();
        assert_eq!(back.bytes(), bytes);
        // As many bytes from near address zero, which no process maps: an error, whichever
        // pieces find it.
        let err = failure(read(me, 8, bytes.len() as u64)).message;
        assert!(
            err.contains(&format!("lent bytes from process {me}")),
            "{err}"
        );
    }

    /// Here the kernel lets a process read its own memory, and so the answer is yes unless
    /// Yama forbids a parent to read its children.
    #[test]
    fn the_kernel_is_asked_once_and_agrees_with_yama() {
        let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        assert_eq!(possible(), scope.is_none_or(|s| s <= 1));
        assert_eq!(possible(), possible());
    }
}
