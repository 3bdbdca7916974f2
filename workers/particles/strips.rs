//! Cell lists on a ring of workers: each worker owns a vertical strip of the box and the
//! particles in it. Each step, over the ring's neighbour links only, a worker
//! 1. passes its neighbours the positions near their edges (the halo), so it can find every
//!    pair in range of its own particles with a cell grid over its own particles and the
//!    halo;
//! 2. moves its particles;
//! 3. hands each particle that left its strip to the neighbour on that side.
//!
//! Strips are not periodic: the box has walls, so rank 0 and the last rank have nothing
//! beyond them and the ring's wrap-around link is never used. Both exchanges run as a chain,
//! rank by rank from one wall to the other and back, and a worker forwards what it received
//! when it lies further on. A strip narrower than the cutoff, an empty strip, or a
//! particle that jumps several strips in one step is therefore handled like any other.
//!
//! Particles keep their list slot wherever they go, so forces are summed in list order
//! (see [`super::cells`]), and the coordinator puts energies and states back in list order.

use std::sync::{Arc, Mutex, PoisonError};

use ringleader::{
    Coordinator, Gather, LaunchError, Launcher, Neighbour, Ring, Stage, StageError, Transport,
};
use serde::{Deserialize, Serialize};

use super::cells::{CELL, Grid};
use super::physics::{Particles, accelerations, advance, sum_in_order};
use super::{Outcome, Owners, Run, Tally, Watch};

/// How far from a strip's edge its neighbour's particles can act on it. Wider than the
/// cutoff, so rounding never drops a pair in range.
const HALO: f64 = CELL;

/// The particle stage with strips. Workers read the shared configuration; the coordinator's
/// copy also keeps the books after each step.
#[derive(Clone)]
pub(crate) struct Strips {
    run: Arc<Run>,
    /// The `size - 1` edges between strips: rank `r` owns `edges[r - 1] <= x < edges[r]`.
    edges: Arc<Vec<f64>>,
    // The coordinator's state; workers carry a copy of the handle and never touch it.
    gather: Gather<StripReport>,
    tally: Arc<Mutex<Tally>>,
}

/// Particles away from their list, each with its list slot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Owned {
    slots: Vec<u32>,
    particles: Particles,
}

impl Owned {
    fn push_from(&mut self, from: &Owned, i: usize) {
        let p = &from.particles;
        self.slots.push(from.slots[i]);
        self.particles
            .push(p.ids[i], p.x[i], p.y[i], p.vx[i], p.vy[i]);
    }

    fn len(&self) -> usize {
        self.slots.len()
    }
}

/// Positions near an edge, each with its list slot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Halo {
    slots: Vec<u32>,
    x: Vec<f64>,
    y: Vec<f64>,
}

impl Halo {
    fn push(&mut self, slot: u32, x: f64, y: f64) {
        self.slots.push(slot);
        self.x.push(x);
        self.y.push(y);
    }

    /// The positions of `self` and `own` that pass `near`.
    fn near(&self, own: &Owned, near: impl Fn(f64) -> bool) -> Halo {
        let mut out = Halo::default();
        let p = &own.particles;
        for i in 0..own.len() {
            if near(p.x[i]) {
                out.push(own.slots[i], p.x[i], p.y[i]);
            }
        }
        for i in 0..self.slots.len() {
            if near(self.x[i]) {
                out.push(self.slots[i], self.x[i], self.y[i]);
            }
        }
        out
    }
}

/// What neighbours send each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum StripMessage {
    /// Positions the receiver's forces need.
    Halo(Halo),
    /// Particles that belong to the receiver's strip or beyond.
    Migrants(Owned),
}

/// A worker's account of one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StripReport {
    step: u64,
    /// The list slots of the worker's particles, for the fields below.
    slots: Vec<u32>,
    /// Each particle's kinetic energy, when the run sums the energy.
    energy_terms: Option<Vec<f64>>,
    /// The particles, when a snapshot is due.
    particles: Option<Particles>,
}

/// The coordinator's answer after a step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Command {
    /// The energy correction the next step applies.
    correction: f64,
    /// Stop after this step.
    stop: bool,
}

/// Edges that give each of `workers` strips about the same number of particles at the
/// start. Many particles can share an x (the initial state is a lattice), so some strips
/// may get more than others, or none.
fn balanced_edges(x: &[f64], workers: usize) -> Vec<f64> {
    let mut sorted = x.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    (1..workers)
        .map(|k| {
            sorted
                .get(k * x.len() / workers)
                .copied()
                .unwrap_or(f64::INFINITY)
        })
        .collect()
}

/// The rank whose strip holds `x`.
fn owner(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|&edge| edge <= x)
}

impl Strips {
    /// Whether workers wait for the coordinator after each step: for the correction, or
    /// because the watch may stop the run.
    fn asks(run: &Run) -> bool {
        run.normalize || run.every_step
    }

    fn recv(ring: &mut Ring<Self>, from: Neighbour) -> Result<StripMessage, StageError> {
        Ok(ring.recv(from)?)
    }

    /// Trades halos with both neighbours: what this strip's particles need from theirs.
    fn trade_halos(&self, ring: &mut Ring<Self>, own: &Owned) -> Result<(Halo, Halo), StageError> {
        let (rank, last) = (ring.rank(), ring.size() - 1);
        let edges = &self.edges;
        // Left to right: everything within reach of the next strip, mine or relayed.
        let from_left = if rank > 0 {
            match Self::recv(ring, Neighbour::Left)? {
                StripMessage::Halo(halo) => halo,
                StripMessage::Migrants(_) => return Err(unexpected(rank - 1, "migrants")),
            }
        } else {
            Halo::default()
        };
        if rank < last {
            let edge = edges[rank];
            let halo = from_left.near(own, |x| x >= edge - HALO);
            ring.send(Neighbour::Right, StripMessage::Halo(halo))?;
        }
        // Then right to left.
        let from_right = if rank < last {
            match Self::recv(ring, Neighbour::Right)? {
                StripMessage::Halo(halo) => halo,
                StripMessage::Migrants(_) => return Err(unexpected(rank + 1, "migrants")),
            }
        } else {
            Halo::default()
        };
        if rank > 0 {
            let edge = edges[rank - 1];
            let halo = from_right.near(own, |x| x <= edge + HALO);
            ring.send(Neighbour::Left, StripMessage::Halo(halo))?;
        }
        Ok((from_left, from_right))
    }

    /// Hands every particle that left this strip towards its new owner, and takes in those
    /// that arrive here. Returns the particles this strip owns now.
    fn migrate(&self, ring: &mut Ring<Self>, own: Owned) -> Result<Owned, StageError> {
        let (rank, last) = (ring.rank(), ring.size() - 1);
        let edges = &self.edges;
        let (mut stay, mut left, mut right) =
            (Owned::default(), Owned::default(), Owned::default());
        for i in 0..own.len() {
            let to = owner(edges, own.particles.x[i]);
            let pile = match to.cmp(&rank) {
                std::cmp::Ordering::Less => &mut left,
                std::cmp::Ordering::Equal => &mut stay,
                std::cmp::Ordering::Greater => &mut right,
            };
            pile.push_from(&own, i);
        }
        if rank > 0 {
            let arrived = match Self::recv(ring, Neighbour::Left)? {
                StripMessage::Migrants(arrived) => arrived,
                StripMessage::Halo(_) => return Err(unexpected(rank - 1, "a halo")),
            };
            for i in 0..arrived.len() {
                let to = owner(edges, arrived.particles.x[i]);
                if to < rank {
                    return Err(format!(
                        "slot {} came right from rank {} but belongs to rank {to}",
                        arrived.slots[i],
                        rank - 1
                    )
                    .into());
                }
                let pile = if to == rank { &mut stay } else { &mut right };
                pile.push_from(&arrived, i);
            }
        }
        if rank < last {
            ring.send(Neighbour::Right, StripMessage::Migrants(right))?;
            let arrived = match Self::recv(ring, Neighbour::Right)? {
                StripMessage::Migrants(arrived) => arrived,
                StripMessage::Halo(_) => return Err(unexpected(rank + 1, "a halo")),
            };
            for i in 0..arrived.len() {
                let to = owner(edges, arrived.particles.x[i]);
                if to > rank {
                    return Err(format!(
                        "slot {} came left from rank {} but belongs to rank {to}",
                        arrived.slots[i],
                        rank + 1
                    )
                    .into());
                }
                let pile = if to == rank { &mut stay } else { &mut left };
                pile.push_from(&arrived, i);
            }
        }
        if rank > 0 {
            ring.send(Neighbour::Left, StripMessage::Migrants(left))?;
        }
        Ok(stay)
    }
}

fn unexpected(peer: usize, got: &str) -> StageError {
    format!("rank {peer} sent {got} out of turn").into()
}

impl Stage for Strips {
    type Message = StripMessage;
    type Report = StripReport;
    type Answer = Command;
    type Output = Owned;

    fn work(self, ring: &mut Ring<Self>) -> Result<Owned, StageError> {
        let run = &self.run;
        let rank = ring.rank();
        let start = &run.start.particles;
        let mut own = Owned::default();
        for slot in 0..start.len() {
            if owner(&self.edges, start.x[slot]) == rank {
                own.push_from_list(start, slot);
            }
        }
        let mut grid = Grid::default();
        let mut hits = Vec::new();
        let (mut ax, mut ay) = (Vec::new(), Vec::new());
        let (mut slots, mut xs, mut ys) = (Vec::new(), Vec::new(), Vec::new());
        let mut correction = run.start.correction;
        for step in run.remaining_steps() {
            let step = step + 1;
            ring.set_step(step);
            let (from_left, from_right) = self.trade_halos(ring, &own)?;
            // Sources: my particles first, so target i is source i; then both halos.
            let m = own.len();
            slots.clone_from(&own.slots);
            xs.clone_from(&own.particles.x);
            ys.clone_from(&own.particles.y);
            for halo in [&from_left, &from_right] {
                slots.extend_from_slice(&halo.slots);
                xs.extend_from_slice(&halo.x);
                ys.extend_from_slice(&halo.y);
            }
            grid.bin(&xs, &ys);
            hits.clear();
            grid.collect_hits(&slots, 0..m, &mut hits);
            ax.resize(m, 0.0);
            ay.resize(m, 0.0);
            accelerations(&mut hits, &mut ax, &mut ay);
            advance(&mut own.particles, &ax, &ay, run.dt, run.size, correction)?;
            own = self.migrate(ring, own)?;
            if run.reports_after(step) {
                let report = StripReport {
                    step,
                    slots: own.slots.clone(),
                    energy_terms: run
                        .needs_energy()
                        .then(|| own.particles.energy_terms().collect()),
                    particles: run.snapshot_due(step).then(|| own.particles.clone()),
                };
                if Self::asks(run) {
                    let command = ring.ask(report)?;
                    correction = command.correction;
                    if command.stop {
                        break;
                    }
                } else {
                    ring.report(report)?;
                }
            }
        }
        Ok(own)
    }

    fn on_report(
        &mut self,
        from: usize,
        report: StripReport,
        coordinator: &mut Coordinator<'_, Self>,
    ) -> Result<(), StageError> {
        let Some(reports) = self.gather.push(from, report) else {
            return Ok(());
        };
        let step = super::round_step(reports.iter().map(|r| r.step))?;
        let n = self.run.start.particles.len();
        let order = list_order(n, reports.iter().map(|r| &r.slots[..]))?;
        let energy = reports[0].energy_terms.is_some().then(|| {
            let terms: Vec<f64> = reports
                .iter()
                .flat_map(|r| r.energy_terms.iter().flatten().copied())
                .collect();
            sum_in_order(order.iter().map(|&k| terms[k]))
        });
        let state = reports[0].particles.is_some().then(|| {
            let mut all = Owned::default();
            for report in &reports {
                let particles = report.particles.clone().unwrap_or_default();
                all.slots.extend_from_slice(&report.slots);
                all.particles.extend(particles);
            }
            in_list_order(&all, &order)
        });
        // Strips own no run of list slots: name the owner of each.
        let owners = state.as_ref().map(|_| {
            let mut ranks = vec![0; n];
            for (rank, report) in reports.iter().enumerate() {
                for &slot in &report.slots {
                    if let Some(owner) = ranks.get_mut(slot as usize) {
                        *owner = rank as u32;
                    }
                }
            }
            Owners::Slots(ranks)
        });
        let mut tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        let correction =
            tally.after_step(&self.run, step, energy, state.as_ref().zip(owners.as_ref()));
        if Self::asks(&self.run) {
            coordinator.broadcast(Command {
                correction,
                stop: tally.stopped(),
            })?;
        }
        Ok(())
    }
}

impl Owned {
    fn push_from_list(&mut self, list: &Particles, slot: usize) {
        self.slots.push(slot as u32);
        self.particles.push(
            list.ids[slot],
            list.x[slot],
            list.y[slot],
            list.vx[slot],
            list.vy[slot],
        );
    }
}

/// For the workers' slots concatenated in rank order, the position in that concatenation
/// of list slot 0, 1, 2, …. Fails unless every slot of `0..n` appears exactly once.
fn list_order<'a>(
    n: usize,
    parts: impl Iterator<Item = &'a [u32]>,
) -> Result<Vec<usize>, StageError> {
    let mut order = vec![usize::MAX; n];
    let mut k = 0;
    for slots in parts {
        for &slot in slots {
            let at = order
                .get_mut(slot as usize)
                .ok_or_else(|| format!("a worker reported slot {slot} of {n}"))?;
            if *at != usize::MAX {
                return Err(format!("two workers own slot {slot}").into());
            }
            *at = k;
            k += 1;
        }
    }
    if k != n {
        return Err(format!("the workers own {k} of {n} particles").into());
    }
    Ok(order)
}

fn in_list_order(all: &Owned, order: &[usize]) -> Particles {
    let p = &all.particles;
    let mut list = Particles::with_capacity(order.len());
    for &k in order {
        list.push(p.ids[k], p.x[k], p.y[k], p.vx[k], p.vy[k]);
    }
    list
}

pub(crate) fn simulate(
    run: Run,
    workers: usize,
    transport: Transport,
    watch: Box<dyn Watch>,
) -> Result<(Outcome, Box<dyn Watch>), LaunchError> {
    let edges = balanced_edges(&run.start.particles.x, workers);
    let n = run.start.particles.len();
    let tally = Arc::new(Mutex::new(Tally::new(&run, watch)));
    let mut stage = Strips {
        run: Arc::new(run),
        edges: Arc::new(edges),
        gather: Gather::new(workers),
        tally: Arc::clone(&tally),
    };
    let outputs = Launcher::new()
        .workers(workers)
        .transport(transport)
        .launch(&mut stage)?;
    drop(stage);
    let mut all = Owned::default();
    for part in outputs {
        all.slots.extend(part.slots);
        all.particles.extend(part.particles);
    }
    let order = list_order(n, std::iter::once(&all.slots[..]))
        .map_err(|cause| LaunchError::Coordinator(cause.to_string()))?;
    let particles = in_list_order(&all, &order);
    let tally = Tally::unshare(tally);
    Ok(tally.finish(particles, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_balance_by_count_and_owners_cover_the_line() {
        let x: Vec<f64> = (0..100).map(|i| f64::from(i) * f64::from(i)).collect();
        let edges = balanced_edges(&x, 4);
        assert_eq!(edges, vec![625.0, 2500.0, 5625.0]);
        let counts = (0..4)
            .map(|r| x.iter().filter(|&&x| owner(&edges, x) == r).count())
            .collect::<Vec<_>>();
        assert_eq!(counts, vec![25, 25, 25, 25]);
        assert_eq!(owner(&edges, -1.0), 0);
        assert_eq!(owner(&edges, 1e9), 3);
    }

    #[test]
    fn list_order_rejects_lost_and_doubled_particles() {
        let order = list_order(3, [&[2u32, 0][..], &[1][..]].into_iter()).unwrap();
        assert_eq!(order, vec![1, 2, 0]);
        assert!(list_order(3, [&[2u32, 0][..]].into_iter()).is_err());
        assert!(list_order(2, [&[1u32, 1][..]].into_iter()).is_err());
        assert!(list_order(2, [&[0u32, 5][..]].into_iter()).is_err());
    }

    use crate::workers::particles::{
        Algorithm, Ending, Flow, Mode, Snapshot, Start, init, physics, simulate_with,
    };

    /// Records what it is shown, and stops after `stop_at`.
    #[derive(Default)]
    struct Recorder {
        steps: Vec<(u64, Option<u64>)>,
        snapshots: Vec<(u64, Vec<u64>, Vec<u32>)>,
        stop_at: Option<u64>,
    }

    impl Watch for Recorder {
        fn step(&mut self, step: u64, energy: Option<f64>) -> Flow {
            self.steps.push((step, energy.map(f64::to_bits)));
            if self.stop_at == Some(step) {
                Flow::Stop
            } else {
                Flow::Continue
            }
        }

        fn snapshot(&mut self, snapshot: &Snapshot<'_>) -> Flow {
            let bits = snapshot.particles.vx.iter().map(|v| v.to_bits()).collect();
            self.snapshots
                .push((snapshot.step, bits, snapshot.particles.ids.clone()));
            Flow::Continue
        }
    }

    fn watched(
        start: Start,
        mode: Mode,
        algorithm: Algorithm,
        stop_at: Option<u64>,
    ) -> (Outcome, Recorder) {
        let mut run = Run::new(start, 20, physics::DEFAULT_DT, true);
        run.every_step = true;
        run.snapshot_every = Some(7);
        let recorder = Recorder {
            stop_at,
            ..Recorder::default()
        };
        let (outcome, watch) = simulate_with(run, mode, algorithm, Box::new(recorder)).unwrap();
        let any: Box<dyn std::any::Any> = watch;
        (outcome, *any.downcast::<Recorder>().unwrap())
    }

    const MODES: [Mode; 5] = [
        Mode::Serial,
        Mode::Threads(3),
        Mode::Ring(1, Transport::Threads),
        Mode::Ring(4, Transport::Threads),
        Mode::Ring(7, Transport::Threads),
    ];

    /// Runs every cells mode and checks it against all pairs, watch included.
    fn check_against_all_pairs(start: &Start, stop_at: Option<u64>) {
        let (want, seen) = watched(start.clone(), Mode::Serial, Algorithm::AllPairs, stop_at);
        assert_eq!(seen.snapshots.len(), if stop_at.is_some() { 1 } else { 3 });
        for mode in MODES {
            let (outcome, cells) = watched(start.clone(), mode, Algorithm::Cells, stop_at);
            assert_eq!(outcome.particles, want.particles, "{mode:?}");
            assert_eq!(outcome.ending, want.ending, "{mode:?}");
            assert_eq!(cells.steps, seen.steps, "{mode:?}");
            assert_eq!(cells.snapshots, seen.snapshots, "{mode:?}");
        }
    }

    #[test]
    fn every_cells_mode_shows_the_watch_what_all_pairs_shows() {
        check_against_all_pairs(&Start::initial(300), None);
    }

    #[test]
    fn a_watch_can_stop_every_cells_mode() {
        let (outcome, seen) = watched(
            Start::initial(300),
            Mode::Ring(3, Transport::Threads),
            Algorithm::Cells,
            Some(9),
        );
        assert_eq!(outcome.ending, Ending::Stopped(9));
        assert_eq!(seen.steps.len(), 9);
        check_against_all_pairs(&Start::initial(300), Some(9));
    }

    #[test]
    fn particles_that_jump_across_several_strips_are_handed_on() {
        // Fast particles cross several strips per step, both ways, and bounce off the
        // walls; slow ones pile into a clump so that forces act across strip edges.
        let mut start = Start::initial(300);
        let size = init::box_size(300);
        let p = &mut start.particles;
        for slot in 0..p.len() {
            match slot % 10 {
                0 => p.vx[slot] = 400.0,
                1 => p.vx[slot] = -350.0,
                2 => p.x[slot] = size * 0.5 + (slot as f64) * 1e-5,
                _ => {}
            }
        }
        start.initial_energy = start.particles.energy();
        check_against_all_pairs(&start, None);
    }
}
