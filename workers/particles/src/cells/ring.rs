//! Cell lists on a ring of workers: each worker owns a strip of grid rows and the particles
//! in it, and talks only to the workers of the strips next to it.
//!
//! # A step
//!
//! 1. **Halos.** Each worker sends the particles of its bottom row to the worker below and
//!    those of its top row to the worker above, then receives theirs: every pair in range of
//!    its own particles is now among its own particles and those two rows.
//! 2. **Forces and moves**, on the strip ([`Strip::step`]).
//! 3. **Report.** The worker tells the coordinator how far its furthest departing particle
//!    goes, in strips, with the energy and the state when the run needs them.
//! 4. **Migrants.** It sends each neighbour the particles that moved into the rows beyond
//!    it, and takes in those that moved into its own.
//!
//! Sends never wait, so each of those exchanges is one round of messages whatever the
//! number of workers: the critical path of a step is two messages long (the halos, the
//! migrants), plus the coordinator's answer, which travels while the next step's halos do.
//!
//! # Particles that go further than next door
//!
//! A worker cannot know in time whether a particle two strips away is about to land in its
//! rows: the news travels one strip per round, as the particle does. So the coordinator
//! tells everyone. Its answer to step `k`, which every worker reads before it computes step
//! `k + 1`, carries the furthest any particle went. When that is more than one strip (a
//! very fast particle, or strips without rows when there are more workers than rows), every
//! worker passes on what it holds for others, one strip per round, for as many extra rounds
//! as that distance needs, and then trades halos again. Steps without such a particle pay
//! nothing for this.
//!
//! A strip with no rows (more workers than rows) relays the halos between its neighbours.
//!
//! # Edges that move
//!
//! Strips start with equal numbers of particles. Every [`Balance::every`] steps the
//! workers also report how long they took, and the coordinator's answer may carry new
//! edges that give faster workers more rows; each worker then hands its neighbours the rows
//! it gave up, in one more round, and trades halos again ([`CellRing::shift`]).
//!
//! Particles keep their list slot wherever they go, so forces are summed in list order, and
//! the coordinator puts energies and states back in list order.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringleader::{
    Bulk, Coordinator, Gather, Handler, Inherited, LaunchError, Launcher, Neighbour, Restart,
    Rewind, Ring, Stage, StageError, Transport,
};
use serde::{Deserialize, Serialize};

use super::super::physics::{Motion, Particles, energy_term, sum_in_order};
use super::super::ring::WorkerStats;
use super::super::{Outcome, Run, Tally, Watch};
use super::strip::Strip;
use super::{
    Body, End, Grid, balanced_edges, in_list_order, into_list_order, into_list_order_lent,
    rebalanced, row_counts,
};

/// The particle stage with strips: what every worker knows at the start.
#[derive(Clone)]
pub(crate) struct CellRing {
    /// The run, whose `start.particles` are in `start`.
    run: Arc<Run>,
    /// The particles at the start, which a forked worker lets go of once its strip is
    /// built; the coordinator then writes the final state into its arrays
    /// ([`Books::finish`]).
    start: Inherited<Particles>,
    grid: Grid,
    /// Rank `r` owns rows `edges[r]..edges[r + 1]`.
    edges: Arc<Vec<u32>>,
    /// How many particles each row holds at the start.
    per_row: Arc<Vec<u32>>,
    /// When the workers say how long they computed, so that the coordinator may move the
    /// edges.
    balance: Balance,
}

/// Moving the strips' edges to the workers' speeds.
///
/// Strips start with equal numbers of particles, but equal work is not equal time: cores
/// shared with other work, or hyperthreads beside busy ones, run slower, and every strip
/// waits for its neighbours each step. So every [`Balance::every`] steps each worker
/// reports the seconds it spent computing since the last time and how many particles each
/// of its rows holds, and the coordinator gives each strip rows for a share of the
/// particles in proportion to its speed ([`rebalanced`]). The answer carries the new
/// edges; the workers hand each other the rows that changed hands in one round of
/// messages and trade halos again. Results do not change: they are the same bits for any
/// edges.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Balance {
    /// Steps between reports; 0 never moves the edges.
    pub(crate) every: u64,
    /// Testing only: the coordinator takes rank `r`'s time as `1 + (r + round) % 3` times
    /// what it was, round after round, so the edges move each time.
    pub(crate) skew: bool,
}

impl Balance {
    /// Every `every` steps ([`Run::balance_every`]; 0: never). `RINGLEADER_BALANCE_SKEW=1`
    /// in the environment skews the times (tests).
    pub(crate) fn new(every: u64) -> Balance {
        let skew = std::env::var_os("RINGLEADER_BALANCE_SKEW").is_some_and(|v| v == "1");
        Balance { every, skew }
    }

    /// Whether the workers say how long they took after `step`, so that the edges may
    /// move: every [`Balance::every`] steps, but not after the last step of a run of
    /// `steps`, nor on fewer than two strips.
    pub(crate) fn due(&self, step: u64, steps: u64, strips: usize) -> bool {
        self.every > 0 && step.is_multiple_of(self.every) && step < steps && strips > 1
    }

    /// New edges for strips whose workers computed for `busy` seconds each (in rank
    /// order) since the last plan, and whose rows hold `per_row` particles (every row,
    /// bottom first), after `step`; `None` to keep `edges`. See [`rebalanced`].
    pub(crate) fn plan(
        &self,
        edges: &[u32],
        busy: Vec<f64>,
        per_row: &[u32],
        step: u64,
    ) -> Option<Vec<u32>> {
        let round = step / self.every.max(1);
        let busy: Vec<f64> = busy
            .into_iter()
            .enumerate()
            .map(|(rank, busy)| {
                let skew = if self.skew {
                    1 + (rank as u64 + round) % 3
                } else {
                    1
                };
                busy * skew as f64
            })
            .collect();
        rebalanced(edges, &busy, per_row)
    }
}

/// The coordinator's side: it gathers each step's reports, keeps the books and tells the
/// workers how far particles went.
struct Books<'a> {
    /// The run, whose `start.particles` are in `start`.
    run: Arc<Run>,
    /// The particles at the start: the arrays the final state is written into.
    start: Inherited<Particles>,
    /// How many particles the run has.
    n: usize,
    /// The final state, once the workers' lent ends are read ([`Books::finish`]).
    finished: Option<Particles>,
    gather: Gather<Report>,
    tally: &'a mut Tally,
    /// The strips' edges as the workers have them.
    edges: Vec<u32>,
    balance: Balance,
    /// How many times the edges moved.
    moves: u32,
}

/// A worker's account of one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    step: u64,
    /// How many strips away the furthest particle that left this strip went: 0 when none
    /// left, 1 when every one went next door.
    reach: u32,
    /// The energy of each particle the worker moved, with its slot, when the run sums it.
    energy: Option<(Bulk<u32>, Bulk<f64>)>,
    /// Every particle the worker moved, when a snapshot is due.
    bodies: Option<Bulk<Body>>,
    /// How long the worker computed since its last load, and its rows' particles, every
    /// [`Balance::every`] steps.
    load: Option<Load>,
    /// The strip's particles after the last step, lent (see [`End`]): sent alone, after the
    /// last step's report, when the run ended without a stop.
    end: Option<End>,
}

/// A worker's pace, for [`Balance`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Load {
    /// Seconds spent stepping the strip since the last load.
    busy: f64,
    /// How many particles each of the strip's rows holds, bottom first.
    per_row: Vec<u32>,
}

/// The coordinator's answer after a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Command {
    /// The energy correction the next step applies.
    correction: f64,
    /// Stop after this step.
    stop: bool,
    /// The furthest any particle went in the step, in strips.
    reach: u32,
    /// The strips' new edges, when they move ([`Balance`]).
    edges: Option<Vec<u32>>,
}

/// Particles a worker holds for others, by direction.
#[derive(Debug, Default)]
struct Passing {
    down: Vec<Body>,
    up: Vec<Body>,
}

impl CellRing {
    fn rows(&self, rank: usize) -> Range<u32> {
        self.edges[rank]..self.edges[rank + 1]
    }

    /// The rank whose strip holds `row`: the last rank whose strip starts at or before it.
    fn owner(&self, row: u32) -> usize {
        self.edges[1..self.edges.len() - 1].partition_point(|&edge| edge <= row)
    }

    /// Trades edge rows with both neighbours into `below` and `above`; a strip without rows
    /// relays what each side sends to the other.
    fn trade_halos(
        &self,
        ring: &mut Ring,
        strip: &Strip,
        below: &mut Vec<Body>,
        above: &mut Vec<Body>,
        scratch: &mut Vec<Body>,
    ) -> Result<(), StageError> {
        let (rank, last) = (ring.rank(), ring.size() - 1);
        let rows = strip.rows();
        below.clear();
        above.clear();
        if rows.is_empty() {
            if rank < last {
                ring.recv_block(Neighbour::Right, |h: &[Body]| above.extend_from_slice(h))?;
            }
            if rank > 0 {
                ring.send_block(Neighbour::Left, above)?;
                ring.recv_block(Neighbour::Left, |h: &[Body]| below.extend_from_slice(h))?;
            }
            if rank < last {
                ring.send_block(Neighbour::Right, below)?;
            }
            return Ok(());
        }
        if rank > 0 {
            strip.row_into(&self.grid, rows.start, scratch);
            ring.send_block(Neighbour::Left, scratch)?;
        }
        if rank < last {
            strip.row_into(&self.grid, rows.end - 1, scratch);
            ring.send_block(Neighbour::Right, scratch)?;
        }
        if rank > 0 {
            ring.recv_block(Neighbour::Left, |h: &[Body]| below.extend_from_slice(h))?;
        }
        if rank < last {
            ring.recv_block(Neighbour::Right, |h: &[Body]| above.extend_from_slice(h))?;
        }
        Ok(())
    }

    /// One round of handing particles on: each worker sends what it holds for the strips
    /// beyond each neighbour, and sorts what it receives into its own and what goes on.
    fn pass_on(
        &self,
        ring: &mut Ring,
        strip: &mut Strip,
        outgoing: &Passing,
        onward: &mut Passing,
    ) -> Result<(), StageError> {
        let (rank, last) = (ring.rank(), ring.size() - 1);
        onward.down.clear();
        onward.up.clear();
        if rank > 0 {
            ring.send_block(Neighbour::Left, &outgoing.down)?;
        } else if !outgoing.down.is_empty() {
            return Err("a particle left the box at the bottom".into());
        }
        if rank < last {
            ring.send_block(Neighbour::Right, &outgoing.up)?;
        } else if !outgoing.up.is_empty() {
            return Err("a particle left the box at the top".into());
        }
        let mut bad = None;
        for (side, exists) in [(Neighbour::Left, rank > 0), (Neighbour::Right, rank < last)] {
            if !exists {
                continue;
            }
            ring.recv_block(side, |arrived: &[Body]| {
                for body in arrived {
                    let to = self.owner(self.grid.row_of(body.key));
                    match (to.cmp(&rank), side) {
                        (std::cmp::Ordering::Equal, _) => strip.admit(std::slice::from_ref(body)),
                        (std::cmp::Ordering::Greater, Neighbour::Left) => onward.up.push(*body),
                        (std::cmp::Ordering::Less, Neighbour::Right) => onward.down.push(*body),
                        _ => bad = Some((body.slot, to)),
                    }
                }
            })?;
        }
        if let Some((slot, to)) = bad {
            return Err(format!("slot {slot} came the wrong way: it belongs to rank {to}").into());
        }
        Ok(())
    }

    /// Hands on, for `reach - 1` more rounds, what this worker holds for others.
    fn settle(
        &self,
        ring: &mut Ring,
        strip: &mut Strip,
        holding: &mut Passing,
        reach: u32,
    ) -> Result<(), StageError> {
        let mut onward = Passing::default();
        for _ in 1..reach {
            self.pass_on(ring, strip, holding, &mut onward)?;
            std::mem::swap(holding, &mut onward);
        }
        if !holding.down.is_empty() || !holding.up.is_empty() {
            return Err(format!("particles still on their way after {reach} rounds").into());
        }
        strip.settle(&self.grid);
        Ok(())
    }

    /// Moves the strips' edges to `edges`: each worker hands its neighbours the particles
    /// of the rows it no longer owns and takes in those of the rows it gains, which lie
    /// next to its own. No edge moves past the old rows of the strips beside it
    /// ([`rebalanced`]), so one round of messages does it, and the rows stay in order: what
    /// comes from below goes before the strip's particles, what comes from above after.
    fn shift(
        &mut self,
        ring: &mut Ring,
        strip: &mut Strip,
        edges: Vec<u32>,
    ) -> Result<(), StageError> {
        if edges.len() != self.edges.len() {
            return Err(format!(
                "the coordinator sent {} edges for {} strips",
                edges.len(),
                self.edges.len() - 1
            )
            .into());
        }
        self.edges = Arc::new(edges);
        let (rank, last) = (ring.rank(), ring.size() - 1);
        let (mut down, mut up) = (Vec::new(), Vec::new());
        strip.cede(&self.grid, self.rows(rank), &mut down, &mut up);
        if rank > 0 {
            ring.send_block(Neighbour::Left, &down)?;
        }
        if rank < last {
            ring.send_block(Neighbour::Right, &up)?;
        }
        if (rank == 0 && !down.is_empty()) || (rank == last && !up.is_empty()) {
            return Err("the edges moved off the box".into());
        }
        let mut failed = Ok(());
        for (side, exists, below) in [
            (Neighbour::Left, rank > 0, true),
            (Neighbour::Right, rank < last, false),
        ] {
            if exists {
                ring.recv_block(side, |arrived: &[Body]| {
                    if failed.is_ok() {
                        failed = strip.gain(&self.grid, arrived, below);
                    }
                })?;
            }
        }
        failed.map_err(StageError::from)
    }
}

/// Whether the coordinator's answer to `step` matters to a lone worker: for the
/// correction, or because the watch, shown the step or a snapshot, may stop the run.
fn asks(run: &Run, step: u64) -> bool {
    run.normalize || run.every_step || run.snapshot_due(step)
}

impl CellRing {
    /// Reports a step to the coordinator: how far the furthest departing particle goes,
    /// and the energy and state of every particle this worker moved, when the run needs
    /// them.
    fn report(
        &self,
        ring: &mut Ring,
        strip: &Strip,
        step: u64,
        reach: u32,
        load: Option<Load>,
    ) -> Result<(), StageError> {
        let run = &self.run;
        let moved = || {
            strip
                .bodies()
                .chain(&strip.leaving_down)
                .chain(&strip.leaving_up)
        };
        let energy = if run.needs_energy() {
            let slots: Vec<u32> = moved().map(|b| b.slot).collect();
            let terms: Vec<f64> = moved().map(|b| energy_term(b.vx, b.vy)).collect();
            Some((ring.bulk(&slots)?, ring.bulk(&terms)?))
        } else {
            None
        };
        let bodies = if run.snapshot_due(step) {
            Some(ring.bulk(&moved().copied().collect::<Vec<_>>())?)
        } else {
            None
        };
        ring.report(&Report {
            step,
            reach,
            energy,
            bodies,
            load,
            end: None,
        })?;
        Ok(())
    }
}

impl Stage for CellRing {
    type Output = (Bulk<Body>, WorkerStats);

    fn work(mut self, ring: &mut Ring) -> Result<Self::Output, StageError> {
        // A forked worker starts with the coordinator's peak; count only its own.
        if ring.transport() == Transport::Processes {
            ringleader::bench::reset_peak_rss();
        }
        let started = Instant::now();
        let mut talking = Duration::ZERO;
        let run = Arc::clone(&self.run);
        let run = &*run;
        let rank = ring.rank();
        // Time spent stepping the strip since the last load report.
        let mut busy = Duration::ZERO;
        let rows = self.rows(rank);
        // Workers on threads share this process's memory map.
        let alone = ring.transport() != Transport::Threads || ring.size() == 1;
        let Some(mut strip) = self
            .start
            .with(|start| Strip::from_start(&self.grid, start, rows, &self.per_row, alone))
        else {
            return Err("the start was gone before the worker built its strip".into());
        };
        self.start.let_go(ring);
        let (mut below, mut above, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
        let mut holding = Passing::default();
        let mut correction = run.start.correction;
        // Whether the coordinator's answer to the last step is still to be read.
        let mut answer_due = false;
        let mut stopped = false;
        // The last step this worker began.
        let mut last_step = run.remaining_steps().start;
        for step in run.remaining_steps() {
            let step = step + 1;
            ring.set_step(step);
            // A lone worker meets no link, which would fail once the run is being stopped.
            if ring.stopping() {
                return Err(ringleader::RingError::Stopped.into());
            }
            last_step = step;
            let talk = Instant::now();
            self.trade_halos(ring, &strip, &mut below, &mut above, &mut scratch)?;
            if answer_due {
                let command: Command = ring.recv_answer()?;
                if command.reach > 1 {
                    self.settle(ring, &mut strip, &mut holding, command.reach)?;
                }
                let moved = command.edges.is_some();
                if let Some(edges) = command.edges {
                    self.shift(ring, &mut strip, edges)?;
                }
                if command.reach > 1 || moved {
                    self.trade_halos(ring, &strip, &mut below, &mut above, &mut scratch)?;
                }
                if command.stop {
                    stopped = true;
                    break;
                }
                correction = command.correction;
            }
            talking += talk.elapsed();
            let motion = Motion {
                dt: run.dt,
                size: run.size,
                correction,
            };
            if step == run.steps {
                strip.last_step_next();
            }
            let stepping = Instant::now();
            strip.step(&self.grid, &[&below, &above], motion)?;
            busy += stepping.elapsed();
            let talk = Instant::now();
            let reach = strip
                .leaving_down
                .iter()
                .chain(&strip.leaving_up)
                .map(|b| self.owner(self.grid.row_of(b.key)).abs_diff(rank) as u32)
                .max()
                .unwrap_or(0);
            // A lone worker has no neighbour to lose a particle to, so the coordinator
            // hears from it only when the run needs it to.
            let alone = ring.size() == 1;
            if !alone || run.reports_after(step) {
                let load = self
                    .balance
                    .due(step, run.steps, ring.size())
                    .then(|| Load {
                        busy: std::mem::take(&mut busy).as_secs_f64(),
                        per_row: strip.row_counts(&self.grid),
                    });
                self.report(ring, &strip, step, reach, load)?;
                answer_due = !alone || asks(run, step);
            }
            let outgoing = Passing {
                down: std::mem::take(&mut strip.leaving_down),
                up: std::mem::take(&mut strip.leaving_up),
            };
            self.pass_on(ring, &mut strip, &outgoing, &mut holding)?;
            (strip.leaving_down, strip.leaving_up) = (outgoing.down, outgoing.up);
            strip.settle(&self.grid);
            talking += talk.elapsed();
        }
        if answer_due && !stopped {
            let talk = Instant::now();
            let command: Command = ring.recv_answer()?;
            if command.reach > 1 {
                self.settle(ring, &mut strip, &mut holding, command.reach)?;
            }
            talking += talk.elapsed();
        }
        let stats = WorkerStats {
            compute_seconds: started.elapsed().saturating_sub(talking).as_secs_f64(),
            comm_seconds: talking.as_secs_f64(),
            peak_rss: ringleader::bench::peak_rss(),
        };
        // The state goes back grouped for the coordinator's `into_list_order`, grouped in
        // the strip's own memory: fresh memory (zeroed by the kernel page by page) costs
        // more than the grouping.
        let bodies = strip.into_slot_windows();
        if ring.transport() == Transport::Processes && !stopped {
            // Gathering the state is no part of the last step.
            ring.steps_done();
            // Lent, for the coordinator to read a piece at a time while this worker waits,
            // rather than copied whole into the coordinator's fresh memory as an output.
            let n = self.per_row.iter().map(|&c| c as usize).sum();
            let (end, loan) = End::lend(ring, bodies, n)?;
            ring.report(&Report {
                step: last_step,
                reach: 0,
                energy: None,
                bodies: None,
                load: None,
                end: Some(end),
            })?;
            let _: Command = ring.recv_answer()?;
            drop(loan);
            return Ok((ring.bulk_from_vec(Vec::new())?, stats));
        }
        // Between threads the vector is handed over as it is.
        Ok((ring.bulk_from_vec(bodies)?, stats))
    }
}

impl Handler for Books<'_> {
    type Report = Report;
    type Answer = Command;

    fn on_report(
        &mut self,
        from: usize,
        report: Report,
        coordinator: &mut Coordinator<'_, Command>,
    ) -> Result<(), StageError> {
        let Some(reports) = self.gather.push(from, report) else {
            return Ok(());
        };
        let step = super::super::round_step(reports.iter().map(|r| r.step))?;
        if reports.iter().any(|r| r.end.is_some()) {
            return self.finish(reports, coordinator);
        }
        let n = self.n;
        let reach = reports.iter().map(|r| r.reach).max().unwrap_or(0);
        let energy = reports[0].energy.is_some().then(|| {
            let mut terms = vec![0.0; n];
            for (slots, energy) in reports.iter().filter_map(|r| r.energy.as_ref()) {
                for (&slot, &term) in slots.iter().zip(energy.iter()) {
                    if let Some(t) = terms.get_mut(slot as usize) {
                        *t = term;
                    }
                }
            }
            sum_in_order(terms)
        });
        let state = reports[0].bodies.is_some().then(|| {
            let parts = || {
                reports
                    .iter()
                    .map(|r| r.bodies.iter().flat_map(|b| b.iter()))
            };
            let owners = super::owners(parts(), n);
            let list = self
                .start
                .with(|start| in_list_order(parts().flatten(), &start.ids))
                .ok_or("the start's ids were gone")?;
            Ok::<_, StageError>((list, owners))
        });
        let state = state.transpose()?;
        let correction =
            self.tally
                .after_step(&self.run, step, energy, state.as_ref().map(|(p, o)| (p, o)));
        if coordinator.size() == 1 && !asks(&self.run, step) {
            return Ok(());
        }
        // New edges, when every worker said how long it took, and the run goes on.
        let edges = if reports.iter().all(|r| r.load.is_some()) && step < self.run.steps {
            self.rebalance(&reports, step)
        } else {
            None
        };
        let stop = self.tally.stopped();
        coordinator.broadcast(Command {
            correction,
            stop,
            reach,
            edges,
        })?;
        Ok(())
    }
}

impl Books<'_> {
    /// Puts the strips' lent ends (`reports`, one per worker, in rank order) in list order,
    /// in the start's arrays, which every worker let go of when it built its strip; then
    /// answers, and the workers may free what they lent.
    fn finish(
        &mut self,
        reports: Vec<Report>,
        coordinator: &mut Coordinator<'_, Command>,
    ) -> Result<(), StageError> {
        let ends = reports
            .into_iter()
            .map(|r| {
                r.end
                    .ok_or("a worker sent a step's report where its end was due")
            })
            .collect::<Result<Vec<End>, _>>()?;
        let start = self.start.take().ok_or("the start was gone at the end")?;
        // The coordinator may use threads, one per worker, which wait meanwhile.
        let threads = ends.len();
        self.finished = Some(into_list_order_lent(&ends, start, threads)?);
        coordinator.broadcast(Command {
            correction: 0.0,
            stop: false,
            reach: 0,
            edges: None,
        })?;
        Ok(())
    }

    /// The edges that even out the strips' paces, from the loads in `reports` (one per
    /// strip, in rank order), if they move; see [`Balance`].
    fn rebalance(&mut self, reports: &[Report], step: u64) -> Option<Vec<u32>> {
        let loads: Vec<&Load> = reports.iter().filter_map(|r| r.load.as_ref()).collect();
        let busy: Vec<f64> = loads.iter().map(|load| load.busy).collect();
        let per_row: Vec<u32> = loads
            .iter()
            .flat_map(|l| l.per_row.iter().copied())
            .collect();
        let edges = self.balance.plan(&self.edges, busy, &per_row, step)?;
        self.edges.clone_from(&edges);
        self.moves += 1;
        Some(edges)
    }
}

impl Restart<CellRing> for Books<'_> {
    fn rewind(&mut self, stage: &mut CellRing, _failure: &LaunchError) -> Option<Rewind> {
        let (run, step) = self.tally.rewind(&self.run);
        self.finished = None;
        // The end is read into the start's own arrays: a run that failed while it was read
        // has no start left to go on from, unless a state was kept.
        if run.start.particles.is_empty() && self.start.with(|_| ()).is_none() {
            return None;
        }
        // A state kept since the start comes with its particles; without one the ring
        // starts again from `start`, which the coordinator keeps whole while restarts are
        // possible.
        let run = if run.start.particles.is_empty() {
            run
        } else {
            let mut run = Arc::unwrap_or_clone(run);
            let particles = std::mem::take(&mut run.start.particles);
            self.start = Inherited::new(particles);
            stage.start = self.start.clone();
            Arc::new(run)
        };
        // The strips keep their rows; the workers size them from the new start's counts.
        let per_row = self.start.with(|start| row_counts(&stage.grid, &start.y));
        stage.per_row = Arc::new(per_row.unwrap_or_default());
        stage.run = Arc::clone(&run);
        self.run = run;
        self.gather = Gather::new(stage.edges.len() - 1);
        // The workers start again from the first edges.
        self.edges = stage.edges.to_vec();
        Some(Rewind::from_step(step))
    }
}

pub(crate) fn simulate(
    mut run: Run,
    workers: usize,
    transport: Transport,
    watch: Box<dyn Watch>,
) -> Result<(Outcome, Box<dyn Watch>), LaunchError> {
    let grid = Grid::new(run.size);
    let per_row = row_counts(&grid, &run.start.particles.y);
    let edges = balanced_edges(&per_row, workers);
    let balance = Balance::new(run.balance_every);
    let mut tally = Tally::new(&run, watch);
    let step_timeout = run.step_timeout;
    let graceful = workers > 1 || run.normalize || run.every_step;
    let fault = run.fault;
    let restarts = run.restarts;
    let n = run.start.particles.len();
    let start = Inherited::new(std::mem::take(&mut run.start.particles));
    let run = Arc::new(run);
    let stage = CellRing {
        run: Arc::clone(&run),
        start: start.clone(),
        grid,
        edges: Arc::new(edges.clone()),
        per_row: Arc::new(per_row),
        balance,
    };
    let mut books = Books {
        run,
        start,
        n,
        finished: None,
        gather: Gather::new(workers),
        tally: &mut tally,
        edges,
        balance,
        moves: 0,
    };
    // Workers on a ring of two or more wait for the coordinator every step, so they can
    // stop at a step boundary; a lone worker does when the run asks it to.
    let mut launcher = Launcher::new()
        .workers(workers)
        .transport(transport)
        .stop_gracefully(graceful)
        .fault(fault)
        .restarts(restarts);
    if let Some(limit) = step_timeout {
        launcher = launcher.step_timeout(limit);
    }
    let (outputs, stats) = launcher.launch_restarting(stage, &mut books, |r| {
        super::super::say_restarted(r, restarts)
    })?;
    let Books {
        start,
        moves,
        finished,
        ..
    } = books;
    let (parts, workers): (Vec<Bulk<Body>>, Vec<WorkerStats>) = outputs.into_iter().unzip();
    let particles = match finished {
        // Read from the workers' lent ends before they exited.
        Some(particles) => particles,
        None => {
            // Every worker is gone: the start's arrays become the end's.
            let start = start.take().ok_or_else(|| {
                LaunchError::Coordinator("the start was gone at the end".to_owned())
            })?;
            let parts: Vec<&[Body]> = parts.iter().map(|p| p.as_slice()).collect();
            // The coordinator may use threads, one per worker it had.
            let forked = transport == Transport::Processes;
            into_list_order(&parts, start, parts.len(), forked).map_err(LaunchError::Coordinator)?
        }
    };
    let (mut outcome, watch) = tally.finish(particles, workers);
    outcome.depth = stats.depth;
    outcome.edge_moves = moves;
    Ok((outcome, watch))
}
