//! The worker's view of the ring: who it is, who its neighbours are, and how to talk.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytemuck::Pod;

use crate::bulk::Bulk;
use crate::error::RingError;
use crate::fault::Fault;
#[cfg(feature = "fault-injection")]
use crate::fault::FaultKind;
use crate::message::{Data, Down, Up};
use crate::progress::{Board, Link, WaitingOn};
use crate::transport::{
    Block, BlockError, Blocks, Frame, LinkRx, LinkTx, RecvFailure, Rx, SendFailure, Transport,
    UpTx, view,
};
use crate::transport::{Payload, decode, encode};

/// One of a worker's two neighbours on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Neighbour {
    /// Rank `rank - 1` (wrapping around): blocks in [`Ring::rotate`] come from here.
    Left,
    /// Rank `rank + 1` (wrapping around): blocks in [`Ring::rotate`] go here.
    Right,
}

/// A worker's ends of the ring and of its control channel to the coordinator.
///
/// Each worker owns exactly these ends and no others, so when a worker ends, its
/// neighbours' receives fail with [`RingError::PeerGone`] instead of waiting forever.
pub struct Ring {
    rank: usize,
    size: usize,
    transport: Transport,
    to_right: LinkTx<Payload>,
    from_left: LinkRx<Payload>,
    to_left: LinkTx<Payload>,
    from_right: LinkRx<Payload>,
    pub(crate) up: UpTx<Up>,
    down: Rx<Down>,
    pub(crate) step: Option<u64>,
    board: Arc<Board>,
    /// The fault to inject, if this run has one (for any rank).
    #[cfg(feature = "fault-injection")]
    fault: Option<Fault>,
    /// This worker's own block buffers, and the other workers' regions it has been sent.
    blocks: Blocks,
    /// The largest hop count any frame or answer brought this worker (see `stats`).
    hops: u64,
    /// The large bulk arrays this worker lent the coordinator in what it sent up (see
    /// `transport::lend`), each with its number (the first lent is 1), kept until the
    /// coordinator has read them.
    lent: VecDeque<(u64, Block)>,
    /// How many blocks this worker has lent.
    lent_count: u64,
    /// Whether this worker holds a [`Loan`](crate::Loan) from its memory that the
    /// coordinator has not yet answered for: see [`Ring::recv_answer`].
    loan_out: std::cell::Cell<bool>,
    /// How many collectives this worker has begun: their frames carry it (see
    /// `collective`).
    pub(crate) collectives: u64,
    /// On an MPI rank other than 0: sends this worker's record to the coordinator, whose
    /// board is in another process.
    #[cfg(feature = "mpi")]
    publisher: Option<crate::transport::mpi::Publisher>,
}

/// How long a receive waits before it marks itself blocked on the progress board. Receives
/// that are answered sooner, which is nearly all of them, never touch the mark.
const QUIET: Duration = Duration::from_millis(50);

/// How many reports a worker process may have sent that the coordinator has not yet
/// taken; the next one waits until it has (see `Ring::report`).
const REPORTS_AHEAD: u32 = 64;

/// How often a blocked receive looks whether the coordinator is ending the run.
const RECHECK: Duration = Duration::from_millis(100);

/// Every end a worker needs, handed out by the launcher.
pub(crate) struct Ends {
    pub(crate) to_right: LinkTx<Payload>,
    pub(crate) from_left: LinkRx<Payload>,
    pub(crate) to_left: LinkTx<Payload>,
    pub(crate) from_right: LinkRx<Payload>,
    pub(crate) up: UpTx<Up>,
    pub(crate) down: Rx<Down>,
}

impl Ring {
    pub(crate) fn new(
        rank: usize,
        size: usize,
        transport: Transport,
        ends: Ends,
        board: Arc<Board>,
        fault: Option<Fault>,
    ) -> Self {
        // Without the feature a launch refuses every fault before it gets here.
        #[cfg(not(feature = "fault-injection"))]
        let _ = fault;
        crate::transport::pace(size);
        Ring {
            rank,
            size,
            transport,
            to_right: ends.to_right,
            from_left: ends.from_left,
            to_left: ends.to_left,
            from_right: ends.from_right,
            up: ends.up,
            down: ends.down,
            step: None,
            board,
            #[cfg(feature = "fault-injection")]
            fault,
            blocks: Blocks::default(),
            hops: 0,
            lent: VecDeque::new(),
            lent_count: 0,
            loan_out: std::cell::Cell::new(false),
            collectives: 0,
            #[cfg(feature = "mpi")]
            publisher: None,
        }
    }

    /// Sends this worker's progress record to a coordinator in another process whenever
    /// it matters: at every change of step (as often as rank 0 can follow), and as a long
    /// wait starts and ends.
    #[cfg(feature = "mpi")]
    pub(crate) fn publishing(mut self, publisher: crate::transport::mpi::Publisher) -> Ring {
        self.publisher = Some(publisher);
        self
    }

    /// On an MPI rank other than 0 that a user sent SIGTERM ([`crate::signal::killed`]):
    /// tells the coordinator that this worker was killed by it, as a forked worker's exit
    /// status would, and waits for the job to end. The coordinator names the rank and
    /// ends the job at once; should it not, the signal's grace ends this process.
    #[cfg(feature = "mpi")]
    fn heed_a_kill(&self) {
        if self.publisher.is_none() || !crate::signal::killed() {
            return;
        }
        let cause = crate::error::Cause::Signaled("SIGTERM".to_owned());
        let _ = self.up.send(Up::Failed {
            step: self.step,
            cause,
        });
        loop {
            // SAFETY: pause only waits for a signal; the grace's alarm, or mpirun's
            // SIGKILL, ends the process.
            unsafe { libc::pause() };
        }
    }

    /// Sends this worker's record now, if a coordinator elsewhere keeps it.
    fn publish(&self) {
        #[cfg(feature = "mpi")]
        if let Some(publisher) = &self.publisher {
            publisher.publish(&self.board.published(self.rank));
        }
    }

    /// This worker's rank, `0..size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How many workers the ring has.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The transport this ring runs on.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The rank of a neighbour.
    pub fn neighbour(&self, side: Neighbour) -> usize {
        match side {
            Neighbour::Left => (self.rank + self.size - 1) % self.size,
            Neighbour::Right => (self.rank + 1) % self.size,
        }
    }

    /// Says that this worker's steps are done: what it sends and receives after this
    /// (gathering a final state, say) counts toward no step's depth
    /// ([`Launcher::launch_with_stats`](crate::Launcher::launch_with_stats)). Without it,
    /// the last step runs to the worker's end.
    pub fn steps_done(&mut self) {
        self.board.steps_done(self.rank, self.hops);
    }

    /// Records the step this worker is on. A failure report names it, even when the worker
    /// was killed, and [`Launcher::step_timeout`](crate::Launcher::step_timeout) bounds the
    /// time a worker spends on one step (before the first call, on its whole run so far). The steps are also what
    /// [`Launcher::launch_with_stats`](crate::Launcher::launch_with_stats) measures the
    /// run's depth over. It is a plain store into memory the coordinator reads: call it as
    /// often as you like. (Under MPI a change of step also sends rank 0 a record of a few
    /// words, without waiting: about a microsecond, at a pace rank 0 can follow.)
    pub fn set_step(&mut self, step: u64) {
        #[cfg(feature = "mpi")]
        self.heed_a_kill();
        #[cfg(feature = "mpi")]
        let changed = self.step != Some(step);
        self.step = Some(step);
        self.board.set_step(self.rank, step, self.hops);
        #[cfg(feature = "mpi")]
        if changed && let Some(publisher) = &self.publisher {
            publisher.stepped(|| self.board.published(self.rank));
        }
        #[cfg(feature = "fault-injection")]
        if let Some(fault) = self.fault
            && fault.rank == self.rank
            && fault.step == step
        {
            self.strike(fault);
        }
    }

    /// Fails as an injected [`Fault`] says.
    #[cfg(feature = "fault-injection")]
    fn strike(&mut self, fault: Fault) {
        match fault.kind {
            FaultKind::Panic => panic!("injected fault {fault}"),
            FaultKind::Exit => {
                let _ = std::io::Write::flush(&mut std::io::stderr());
                // SAFETY: only a worker process gets here (`Fault::check` refuses the kind
                // on threads); `_exit` leaves without running the coordinator's exit
                // handlers, as every worker process does.
                unsafe { libc::_exit(3) }
            }
            FaultKind::Abort => std::process::abort(),
            FaultKind::Kill => {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                std::process::abort()
            }
            FaultKind::Hang => {
                // A worker thread can only be stopped by returning, so it gives up once the
                // coordinator ends the run; a process just hangs until it is killed.
                while !(self.transport == Transport::Threads && self.stopping()) {
                    std::thread::park_timeout(std::time::Duration::from_millis(50));
                }
                panic!("injected fault {fault} given up as the run stopped")
            }
            FaultKind::Cycle => {
                // Wait for the right neighbour, and never send it anything: whatever it
                // sends first is taken, and then it waits for this worker, which waits for
                // it, until the run is stopped.
                while self.recv_frame(Neighbour::Right).is_ok() {}
                panic!("injected fault {fault} given up as the run stopped")
            }
        }
    }

    /// Whether the coordinator is ending the run (another worker failed, say). Receives
    /// notice it by themselves; a long computation can poll this to give up early. Worker
    /// processes are also sent SIGTERM, but worker threads can only stop by returning.
    pub fn stopping(&self) -> bool {
        self.board.cancelled()
    }

    /// Sends a message to a neighbour. It does not wait for the neighbour to receive it,
    /// whatever its size: between processes a value whose encoding passes 64 KiB crosses in
    /// shared memory of its own. Only a sender far ahead waits: between processes a link
    /// holds some 250 small frames its receiver has not taken, and a send past that waits
    /// until the neighbour takes some (workers that wait so on each other are reported as
    /// [`LaunchError::Deadlock`](crate::LaunchError::Deadlock)). Between threads and MPI
    /// ranks a link holds any number.
    ///
    /// # Errors
    ///
    /// [`RingError::PeerGone`] if the neighbour has ended. The message is lost then: nobody
    /// is left to take it.
    pub fn send<T: Data>(&mut self, to: Neighbour, message: &T) -> Result<(), RingError> {
        let payload = encode(message).map_err(RingError::Encoding)?;
        self.send_frame(to, Frame::Message(payload))
    }

    /// Waits for the next message from a neighbour, and reads it as a `T`.
    ///
    /// # Errors
    ///
    /// [`RingError::PeerGone`] if the neighbour ended without sending one;
    /// [`RingError::Protocol`] if a block (of a rotation, or from
    /// [`send_block`](Ring::send_block)) arrived instead; [`RingError::Encoding`] if the
    /// message is not a `T` (the neighbour sent another type).
    pub fn recv<T: Data>(&mut self, from: Neighbour) -> Result<T, RingError> {
        match self.recv_frame(from)? {
            Frame::Message(payload) => decode(payload).map_err(|e| {
                RingError::Encoding(format!(
                    "a message from rank {} is not a {}: {e}",
                    self.neighbour(from),
                    std::any::type_name::<T>()
                ))
            }),
            frame => Err(self.protocol(from, "a message", frame.kind())),
        }
    }

    /// The textbook's circular pipeline. Every worker injects `mine`; then, `size() - 1`
    /// times, each passes the block it holds to its right neighbour and receives the next
    /// one from its left, so every worker sees every block exactly once. `visit` is called
    /// with the block's origin rank and its elements: first this worker's own block, then
    /// those of ranks `rank - 1`, `rank - 2`, … (wrapping around).
    ///
    /// A block is forwarded before `visit` runs on it, so communication overlaps computation.
    /// Sends never wait for the receiver, so rings of any block size cannot deadlock.
    ///
    /// Every worker of the ring must call `rotate` together, with no `send`/`recv` on the
    /// same links interleaved differently on different ranks.
    ///
    /// # Errors
    ///
    /// [`RingError::PeerGone`] if a neighbour ends mid-rotation; [`RingError::Alignment`]
    /// if `T` needs more than 16-byte alignment.
    pub fn rotate<T: Pod>(
        &mut self,
        mine: &[T],
        mut visit: impl FnMut(usize, &[T]),
    ) -> Result<(), RingError> {
        let left = self.neighbour(Neighbour::Left);
        crate::transport::check_align::<T>().map_err(|e| block_error(e, left))?;
        if self.size == 1 {
            // No link to ask: ask here, so that a ring of one thread stops with its run.
            self.unless_stopping()?;
            visit(self.rank, mine);
            return Ok(());
        }
        // SAFETY: `lent` lives to the end of this function and is dropped on every way out
        // of it, unwinding included; nothing forgets it.
        #[cfg(feature = "mpi")]
        let lent = unsafe { self.lend_right(bytemuck::cast_slice(mine))? };
        #[cfg(feature = "mpi")]
        let sent = lent.is_some();
        #[cfg(not(feature = "mpi"))]
        let sent = false;
        if !sent {
            let block = self
                .blocks
                .outgoing(self.transport, self.rank, bytemuck::cast_slice(mine));
            self.send_frame(Neighbour::Right, Frame::Block(block))?;
        }
        // Between MPI ranks: the next receive is posted now, after this worker's own send
        // (see `mpi::link` for why not before).
        self.from_left.post_ahead();
        visit(self.rank, mine);
        for hop in 1..self.size {
            let block = match self.recv_frame(Neighbour::Left)? {
                Frame::Block(block) => block,
                frame => {
                    return Err(self.protocol(Neighbour::Left, "a rotation block", frame.kind()));
                }
            };
            self.blocks.admit(&block);
            if hop + 1 < self.size {
                self.send_frame(Neighbour::Right, Frame::Block(block.clone()))?;
            }
            let origin = (self.rank + self.size - hop) % self.size;
            let bytes = self
                .blocks
                .bytes(&block)
                .map_err(|e| block_error(e, left))?;
            visit(origin, view::<T>(bytes).map_err(|e| block_error(e, left))?);
        }
        // Between MPI ranks, MPI is done with `mine` once this returns.
        #[cfg(feature = "mpi")]
        drop(lent);
        Ok(())
    }

    /// Between MPI ranks: starts sending `bytes` to the right as a rotation block, straight
    /// from where they lie (the raw call copies them into no block either). `None` on the
    /// other transports, where a block is sent as a frame.
    ///
    /// # Safety
    ///
    /// The guard must be dropped, not forgotten: MPI reads `bytes` until it has been.
    #[cfg(feature = "mpi")]
    unsafe fn lend_right<'a>(
        &self,
        bytes: &'a [u8],
    ) -> Result<Option<crate::transport::mpi::Lent<'a>>, RingError> {
        if self.transport != Transport::Mpi {
            return Ok(None);
        }
        self.unless_stopping()?;
        // Counted before the send, as in `send_frame`.
        self.board.count_sent(self.rank, Link::Right);
        // SAFETY: passed on to our caller.
        let lent = unsafe { self.to_right.lend(bytes, self.hops + 1) };
        lent.transpose()
            .map_err(|failure| send_error(failure, self.neighbour(Neighbour::Right)))
    }

    /// Sends `data` to one neighbour as a bulk block: `bytemuck::Pod` elements, no serde.
    /// It does not wait for the neighbour to receive it. The neighbour reads it with
    /// [`recv_block`](Ring::recv_block), from the other side: a block sent to the right
    /// is received from the left.
    ///
    /// Blocks and messages may be interleaved on a link in any order; the receiver must
    /// take each with its own call. Between processes a block lives in shared memory, which
    /// the sender keeps and writes again once the receiver has read the block: a stage that
    /// sends blocks of one size every step, to a receiver that keeps up, allocates nothing
    /// after the first two on each link. A sender that runs ahead makes a new region for
    /// each block its receiver has not read yet, rather than wait; only past some 250 of
    /// them, which the link's socket holds, does a send wait for the receiver, as
    /// [`send`](Ring::send) does.
    ///
    /// On a ring of one worker both neighbours are the worker itself: a block it sends
    /// comes back to it, on the other side, and it receives it as from any neighbour.
    ///
    /// # Errors
    ///
    /// [`RingError::PeerGone`] if the neighbour has ended (a block it would never read may
    /// also be dropped without an error); [`RingError::Alignment`] if `T` needs more than
    /// 16-byte alignment.
    pub fn send_block<T: Pod>(&mut self, to: Neighbour, data: &[T]) -> Result<(), RingError> {
        let peer = self.neighbour(to);
        crate::transport::check_align::<T>().map_err(|e| block_error(e, peer))?;
        let (tx, link) = match to {
            Neighbour::Left => (&self.to_left, Link::Left),
            Neighbour::Right => (&self.to_right, Link::Right),
        };
        let released = tx.released();
        let block = self.blocks.direct(
            self.transport,
            self.rank,
            link as usize,
            bytemuck::cast_slice(data),
            released,
        );
        self.send_frame(to, Frame::Direct(block))
    }

    /// Receives the next frame from `from`, which must be a block sent with
    /// [`send_block`](Ring::send_block); `read` sees its elements in place, and the block's
    /// buffer is released back to the sender when `read` returns. Returns what `read`
    /// returns.
    ///
    /// # Errors
    ///
    /// [`RingError::PeerGone`] if the neighbour ended without sending one;
    /// [`RingError::Protocol`] if a message or a rotation block arrived instead;
    /// [`RingError::BlockSize`] if the block is not a whole number of `T`s (`read` is not
    /// called then); [`RingError::Alignment`] if `T` needs more than 16-byte alignment.
    pub fn recv_block<T: Pod, R>(
        &mut self,
        from: Neighbour,
        read: impl FnOnce(&[T]) -> R,
    ) -> Result<R, RingError> {
        let peer = self.neighbour(from);
        // Before the receive, so a type that cannot be read leaves the block on the link.
        crate::transport::check_align::<T>().map_err(|e| block_error(e, peer))?;
        let block = match self.recv_frame(from)? {
            Frame::Direct(block) => block,
            frame => {
                return Err(self.protocol(from, "a block sent with send_block", frame.kind()));
            }
        };
        self.blocks.admit(&block);
        let result = self
            .blocks
            .bytes(&block)
            .and_then(view::<T>)
            .map(read)
            .map_err(|e| block_error(e, peer));
        drop(block);
        // `read` has returned and cannot have kept a view: the block is done with.
        match from {
            Neighbour::Left => self.from_left.release(),
            Neighbour::Right => self.from_right.release(),
        }
        result
    }

    /// A copy of `data` as a [`Bulk`] array, for a report or an output: between processes
    /// it does not go through the socket (beyond 64 KiB): the coordinator copies it straight
    /// out of this worker's memory, or, sent to a neighbour, it crosses as shared memory;
    /// between threads an aligned buffer, moved and never encoded.
    ///
    /// # Errors
    ///
    /// [`RingError::Alignment`] if `T` needs more than 16-byte alignment.
    pub fn bulk<T: Pod>(&self, data: &[T]) -> Result<Bulk<T>, RingError> {
        Bulk::new(self.transport, data).map_err(|e| block_error(e, self.rank))
    }

    /// A [`Bulk`] array of the elements of `data`, which the worker gives up: for a large
    /// state already built in a buffer the worker owns. Between threads the vector itself
    /// becomes the array: nothing is copied, and no fresh memory is touched, which costs
    /// more than the copy (the kernel zeroes every new page). Between processes, as the
    /// worker's output, the coordinator copies the elements straight out of the worker's
    /// memory into its own (where the kernel allows a parent to read its children's
    /// memory, as it does by default), and the worker exits once it has; sent any other
    /// way, or where the kernel does not allow it, they are copied into shared memory, as
    /// [`Ring::bulk`] does.
    ///
    /// ```
    /// use ringleader::{Bulk, Launcher, Transport};
    ///
    /// let outputs = Launcher::new().workers(2).transport(Transport::Threads).run(|ring| {
    ///     let squares: Vec<u64> = (0..1000).map(|i| i * i).collect();
    ///     Ok(ring.bulk_from_vec(squares)?)
    /// })?;
    /// let outputs: Vec<Bulk<u64>> = outputs;
    /// assert_eq!(outputs[1][30], 900);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`RingError::Alignment`] if `T` needs more than 16-byte alignment.
    pub fn bulk_from_vec<T: Pod + Send + Sync>(&self, data: Vec<T>) -> Result<Bulk<T>, RingError> {
        Bulk::adopted(self.transport, data).map_err(|e| block_error(e, self.rank))
    }

    /// A [`Bulk`] array of `len` elements written in place by `fill`, which sees them
    /// zeroed: for a large state that would otherwise be built in one buffer and copied
    /// into the bulk array. `fill` writes straight into the memory the coordinator will
    /// read (or copy, between processes).
    ///
    /// ```
    /// use ringleader::{Bulk, Launcher, Transport};
    ///
    /// let outputs = Launcher::new().workers(2).transport(Transport::Threads).run(|ring| {
    ///     Ok(ring.bulk_with(1000, |out: &mut [u64]| {
    ///         for (i, x) in out.iter_mut().enumerate() {
    ///             *x = (i * i) as u64;
    ///         }
    ///     })?)
    /// })?;
    /// let outputs: Vec<Bulk<u64>> = outputs;
    /// assert_eq!(outputs[1][30], 900);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`RingError::Alignment`] if `T` needs more than 16-byte alignment, and
    /// [`RingError::BlockSize`] if `len` elements do not fit in memory's address range.
    pub fn bulk_with<T: Pod>(
        &self,
        len: usize,
        fill: impl FnOnce(&mut [T]),
    ) -> Result<Bulk<T>, RingError> {
        Bulk::filled(self.transport, len, fill).map_err(|e| block_error(e, self.rank))
    }

    /// Waits until every worker of the ring has called `barrier` as often as this one:
    /// the textbook's barrier between the phase that reads shared positions and the phase
    /// that writes them. Between processes and threads the workers meet in memory the
    /// framework shares (a waiter sleeps on a futex, and the last to arrive wakes them all);
    /// over MPI they pass an empty block round the ring.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use ringleader::{Launcher, Transport};
    ///
    /// // Worker threads may share memory; the barrier orders what they do with it.
    /// let counted = Arc::new(AtomicUsize::new(0));
    /// let count = Arc::clone(&counted);
    /// let seen = Launcher::new().workers(3).transport(Transport::Threads).run(move |ring| {
    ///     count.fetch_add(1, Ordering::SeqCst);
    ///     ring.barrier()?;
    ///     // Every worker has counted by now.
    ///     Ok(count.load(Ordering::SeqCst))
    /// })?;
    /// assert_eq!(seen, vec![3, 3, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`RingError::Stopped`] if the run is being stopped while this worker waits (another
    /// worker failed, say); over MPI, as [`Ring::rotate`].
    pub fn barrier(&mut self) -> Result<(), RingError> {
        self.unless_stopping()?;
        #[cfg(feature = "mpi")]
        if self.transport == Transport::Mpi {
            return self.rotate::<u8>(&[], |_, _| {});
        }
        let Some(round) = self.board.arrive(self.size) else {
            return Ok(());
        };
        // Another worker a few microseconds behind is common: look before sleeping.
        let started = std::time::Instant::now();
        while started.elapsed() < crate::transport::spin() {
            if self.board.released(round) {
                return Ok(());
            }
            std::thread::yield_now();
        }
        self.board.sleep_in_round(round, QUIET);
        if self.board.released(round) {
            return Ok(());
        }
        // A long wait: say so on the board, for the deadlock watch and the step timeout.
        self.board.set_waiting(self.rank, Some(WaitingOn::Barrier));
        let result = loop {
            if self.board.released(round) {
                break Ok(());
            }
            if self.board.cancelled() {
                break Err(RingError::Stopped);
            }
            self.board.sleep_in_round(round, RECHECK);
        };
        self.board.set_waiting(self.rank, None);
        result
    }

    /// Sends a report to the coordinator, where [`Handler::on_report`](crate::Handler::on_report)
    /// handles it. It does not wait for an answer. Between processes a worker with 64
    /// reports out that the coordinator has not yet taken waits until it takes one, so
    /// that no worker can fill the coordinator's memory, or keep it too busy reading to
    /// watch the run.
    ///
    /// # Errors
    ///
    /// [`RingError::CoordinatorGone`] if the coordinator has ended,
    /// [`RingError::Stopped`] if the run is being stopped, and [`RingError::Encoding`] for
    /// a report serde cannot encode.
    pub fn report<T: Data>(&mut self, report: &T) -> Result<(), RingError> {
        self.unless_stopping()?;
        let payload = encode(report).map_err(RingError::Encoding)?;
        // Between processes the coordinator reads every report a worker's socket holds at
        // once, into memory of its own, before it handles any: a worker far ahead would
        // fill the coordinator's memory, and keep it reading instead of watching the run.
        if self.transport == Transport::Processes
            && !self.board.await_room_for_report(self.rank, REPORTS_AHEAD)
        {
            return Err(RingError::Stopped);
        }
        self.board.count_report(self.rank);
        let hops = self.hops + 1;
        self.send_up(Up::Report(payload, hops))
            .map_err(|failure| match failure {
                SendFailure::Closed => RingError::CoordinatorGone,
                other => send_error(other, usize::MAX),
            })
    }

    /// Notes that this worker lent the coordinator an array from its memory, which the
    /// coordinator reads before it answers.
    pub(crate) fn lent_from_memory(&self) {
        self.loan_out.set(true);
    }

    /// Waits for the coordinator's next answer, and reads it as a `T`. After a
    /// [`loan`](Ring::loan) between processes it sleeps at once, since the coordinator
    /// reads the loan first; otherwise it polls for a short while before it sleeps.
    ///
    /// # Errors
    ///
    /// [`RingError::CoordinatorGone`] if the coordinator stopped the run or ended, and
    /// [`RingError::Encoding`] if the answer is not a `T`.
    pub fn recv_answer<T: Data>(&mut self) -> Result<T, RingError> {
        // A receive polls before it sleeps, in case the answer comes at once. After a loan
        // it will not: the coordinator reads the loan first, with threads that need every
        // core, and a worker polling for its answer meanwhile takes cores from them. At 10⁵
        // particles between two processes the coordinator read the cells' final state in
        // 1.55 ms with the workers asleep, and in 1.87 ms with them polling (medians of
        // thirty runs taking turns).
        let asleep = self.loan_out.replace(false);
        let recv = |t| {
            if asleep {
                self.down.recv_blocking(t)
            } else {
                self.down.recv(t)
            }
        };
        match self.wait(recv, WaitingOn::Coordinator) {
            Ok(Down::Answer(payload, hops)) => {
                self.board.count_answer(self.rank);
                self.take_hops(hops);
                decode(payload).map_err(|e| {
                    RingError::Encoding(format!(
                        "the coordinator's answer is not a {}: {e}",
                        std::any::type_name::<T>()
                    ))
                })
            }
            // Only ever sent after the worker's output: this worker's run is over.
            Ok(Down::Release) => Err(RingError::CoordinatorGone),
            Err(Waited::Stopped) => Err(RingError::Stopped),
            Err(Waited::Failed(RecvFailure::Closed)) => Err(RingError::CoordinatorGone),
            Err(Waited::Failed(other)) => Err(recv_error(other, usize::MAX)),
        }
    }

    /// Sends `up` to the coordinator. Between processes the large bulk arrays it holds are
    /// lent, where the kernel allows it: the coordinator copies them straight out of this
    /// worker's memory as it receives them, and this worker keeps them until it has. A
    /// region of their own for each, made, mapped and faulted in on both sides, cost a
    /// cells run that reports every particle's energy 2 ms a step at n = 10⁵.
    pub(crate) fn send_up(&mut self, up: Up) -> Result<(), SendFailure> {
        let read = self.board.lent_read(self.rank);
        while self.lent.front().is_some_and(|&(number, _)| number <= read) {
            self.lent.pop_front();
        }
        let blocks = match &up {
            Up::Report(payload, _) | Up::Done(payload) => &payload.blocks[..],
            Up::Failed { .. } => &[],
        };
        let held: Vec<Block> = blocks.iter().filter(|b| b.is_held()).cloned().collect();
        if held.is_empty() || !crate::transport::lend::possible() {
            return self.up.send(up);
        }
        crate::transport::lend::lending(|| self.up.send(up))?;
        for block in held {
            self.lent_count += 1;
            self.lent.push_back((self.lent_count, block));
        }
        Ok(())
    }

    /// Whether the coordinator may still read a block this worker lent it.
    pub(crate) fn owes_reads(&self) -> bool {
        self.lent
            .back()
            .is_some_and(|&(number, _)| number > self.board.lent_read(self.rank))
    }

    /// After a worker's last word, while the coordinator may still read what it lent (see
    /// `transport::lend`): waits until the coordinator has taken the last word, and so
    /// read everything before it, or is gone. Not a wait the deadlock watch sees: the
    /// coordinator answers at once, and a run that is stopping closes the channel.
    ///
    /// It sleeps at once rather than polling first, as other receives do: the read takes
    /// a while, and it is the coordinator that needs the core. A worker polling here kept
    /// the coordinator waiting for the other worker's core, 2 to 7 ms at n = 10⁵.
    pub(crate) fn await_release(&self) {
        loop {
            match self.down.recv_blocking(None) {
                Ok(Down::Release) | Err(RecvFailure::Closed) => return,
                Err(RecvFailure::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(RecvFailure::Timeout) | Ok(Down::Answer(..)) => {}
                Err(_) => return,
            }
        }
    }

    /// One round trip to the coordinator: [`report`](Ring::report), then
    /// [`recv_answer`](Ring::recv_answer).
    ///
    /// # Errors
    ///
    /// As those two.
    pub fn ask<R: Data, A: Data>(&mut self, report: &R) -> Result<A, RingError> {
        self.report(report)?;
        self.recv_answer()
    }

    pub(crate) fn send_frame(&self, to: Neighbour, frame: Frame<Payload>) -> Result<(), RingError> {
        self.unless_stopping()?;
        let (tx, link, side) = match to {
            Neighbour::Left => (&self.to_left, Link::Left, WaitingOn::ToLeft),
            Neighbour::Right => (&self.to_right, Link::Right, WaitingOn::ToRight),
        };
        // Counted before the send, so the frame is in flight as far as the deadlock watch
        // can tell from the moment it could be.
        self.board.count_sent(self.rank, link);
        // A send on a full socket waits for the neighbour to take frames: a wait the
        // deadlock watch must see, as it sees a receive's.
        let stalled = |sending: bool| self.board.set_waiting(self.rank, sending.then_some(side));
        tx.send(frame, self.hops + 1, &stalled)
            .map_err(|failure| send_error(failure, self.neighbour(to)))
    }

    pub(crate) fn recv_frame(&mut self, from: Neighbour) -> Result<Frame<Payload>, RingError> {
        let (rx, side, link) = match from {
            Neighbour::Left => (&self.from_left, WaitingOn::Left, Link::Right),
            Neighbour::Right => (&self.from_right, WaitingOn::Right, Link::Left),
        };
        match self.wait(|t| rx.recv(t), side) {
            Ok((frame, hops)) => {
                // `Link` names the sender's side: a frame from the left came over its right link.
                self.board.count_received(self.rank, link);
                self.take_hops(hops);
                Ok(frame)
            }
            Err(Waited::Stopped) => Err(RingError::Stopped),
            Err(Waited::Failed(failure)) => Err(recv_error(failure, self.neighbour(from))),
        }
    }

    /// Takes the hop count a received frame or answer carried: the longest chain of
    /// messages ending here now runs through it, if it is longer.
    fn take_hops(&mut self, hops: u64) {
        if hops > self.hops {
            self.hops = hops;
            self.board.set_hops(self.rank, hops);
        }
    }

    /// [`RingError::Stopped`] once the coordinator is ending the run. Every send and
    /// receive asks first: worker threads cannot be killed, and one whose neighbours still
    /// had frames for it, or room for its own, would otherwise run its stage on after the
    /// launch had returned. (Worker processes are killed; the question only ends them
    /// sooner.)
    fn unless_stopping(&self) -> Result<(), RingError> {
        if self.board.cancelled() {
            return Err(RingError::Stopped);
        }
        Ok(())
    }

    /// Receives with `recv`. A receive that finds nothing for [`QUIET`] marks this worker as
    /// waiting on `on`, for the deadlock watch, and gives up once the run is being stopped,
    /// or at once if it already is.
    fn wait<T>(
        &self,
        recv: impl Fn(Option<Duration>) -> Result<T, RecvFailure>,
        on: WaitingOn,
    ) -> Result<T, Waited> {
        if self.board.cancelled() {
            return Err(Waited::Stopped);
        }
        match recv(Some(QUIET)) {
            Err(RecvFailure::Timeout) => {}
            Err(RecvFailure::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other.map_err(Waited::Failed),
        }
        self.board.set_waiting(self.rank, Some(on));
        self.publish();
        let result = loop {
            #[cfg(feature = "mpi")]
            self.heed_a_kill();
            if self.board.cancelled() {
                break Err(Waited::Stopped);
            }
            match recv(Some(RECHECK)) {
                Err(RecvFailure::Timeout) => {}
                Err(RecvFailure::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                other => break other.map_err(Waited::Failed),
            }
        };
        // Cleared before the caller counts the frame: a wait with equal counts would look
        // stuck.
        self.board.set_waiting(self.rank, None);
        self.publish();
        result
    }

    fn protocol(&self, from: Neighbour, expected: &'static str, got: &'static str) -> RingError {
        RingError::Protocol {
            peer: self.neighbour(from),
            expected,
            got,
        }
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("transport", &self.transport)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

/// Why [`Ring::wait`] returned without a value.
enum Waited {
    Stopped,
    Failed(RecvFailure),
}

pub(crate) fn send_error(failure: SendFailure, peer: usize) -> RingError {
    match failure {
        SendFailure::Closed => RingError::PeerGone { peer },
        SendFailure::Io(e) => RingError::Io(e),
        SendFailure::Encoding(e) => RingError::Encoding(e),
    }
}

pub(crate) fn recv_error(failure: RecvFailure, peer: usize) -> RingError {
    match failure {
        RecvFailure::Closed => RingError::PeerGone { peer },
        RecvFailure::Timeout => RingError::Io(std::io::ErrorKind::TimedOut.into()),
        RecvFailure::Io(e) => RingError::Io(e),
        RecvFailure::Encoding(e) => RingError::Encoding(e),
    }
}

fn block_error(err: BlockError, peer: usize) -> RingError {
    match err {
        BlockError::Size { bytes, elem_size } => RingError::BlockSize { bytes, elem_size },
        BlockError::Alignment(align) => RingError::Alignment(align),
        BlockError::UnknownRegion => RingError::Protocol {
            peer,
            expected: "a block",
            got: "a block in shared memory it was never sent",
        },
    }
}
