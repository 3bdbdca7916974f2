//! Cells against all pairs: the same bits in every mode, watch included.

use ringleader::Transport;

use super::*;
use crate::{
    Algorithm, Ending, Flow, Mode, Outcome, Run, Snapshot, Start, Watch, init, physics,
    simulate_with,
};

/// A xorshift generator of test data: the same numbers on every run.
pub(super) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

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
    steps: u64,
    mode: Mode,
    algorithm: Algorithm,
    stop_at: Option<u64>,
) -> (Outcome, Recorder) {
    let mut run = Run::new(start, steps, physics::DEFAULT_DT, true);
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

const MODES: [Mode; 7] = [
    Mode::Serial,
    Mode::Threads(2),
    Mode::Threads(5),
    Mode::Ring(1, Transport::Threads),
    Mode::Ring(2, Transport::Threads),
    Mode::Ring(4, Transport::Threads),
    Mode::Ring(7, Transport::Threads),
];

/// Runs every cells mode in `modes` and checks it against all pairs, watch included.
fn check_against_all_pairs(start: &Start, steps: u64, modes: &[Mode], stop_at: Option<u64>) {
    let (want, seen) = watched(
        start.clone(),
        steps,
        Mode::Serial,
        Algorithm::AllPairs,
        stop_at,
    );
    for &mode in modes {
        let (outcome, cells) = watched(start.clone(), steps, mode, Algorithm::Cells, stop_at);
        assert_eq!(outcome.particles, want.particles, "{mode:?}");
        assert_eq!(outcome.ending, want.ending, "{mode:?}");
        assert_eq!(cells.steps, seen.steps, "{mode:?}");
        assert_eq!(cells.snapshots, seen.snapshots, "{mode:?}");
    }
}

#[test]
fn every_cells_mode_shows_the_watch_what_all_pairs_shows() {
    check_against_all_pairs(&Start::initial(300), 20, &MODES, None);
}

#[test]
fn a_watch_can_stop_every_cells_mode() {
    let (outcome, seen) = watched(
        Start::initial(300),
        20,
        Mode::Ring(3, Transport::Threads),
        Algorithm::Cells,
        Some(9),
    );
    assert_eq!(outcome.ending, Ending::Stopped(9));
    assert_eq!(seen.steps.len(), 9);
    check_against_all_pairs(&Start::initial(300), 20, &MODES, Some(9));
}

/// Fast particles cross several strips per step, both ways, and bounce off the walls; slow
/// ones pile into clumps so that forces act across strip edges and cell edges.
fn jumpy(n: usize) -> Start {
    let mut start = Start::initial(n);
    let size = init::box_size(n);
    let p = &mut start.particles;
    for slot in 0..p.len() {
        match slot % 10 {
            0 => p.vy[slot] = 400.0,
            1 => p.vy[slot] = -350.0,
            2 => p.vx[slot] = 300.0,
            3 => p.y[slot] = size * 0.5 + (slot as f64) * 1e-5,
            4 => p.x[slot] = size * 0.25 + (slot as f64) * 1e-5,
            _ => {}
        }
    }
    start.initial_energy = start.particles.energy();
    start
}

#[test]
fn particles_that_jump_across_several_strips_are_handed_on() {
    check_against_all_pairs(&jumpy(300), 12, &MODES, None);
}

#[test]
fn more_workers_than_rows_leaves_strips_empty_and_still_agrees() {
    // 20 particles make a box of 9 rows.
    let start = Start::initial(20);
    assert_eq!(Grid::new(init::box_size(20)).lanes(), 9);
    let modes = [
        Mode::Threads(12),
        Mode::Ring(9, Transport::Threads),
        Mode::Ring(12, Transport::Threads),
        Mode::Ring(20, Transport::Threads),
    ];
    check_against_all_pairs(&start, 30, &modes, None);
    check_against_all_pairs(&jumpy(20), 10, &modes, None);
}

#[test]
fn edges_balance_by_count_and_give_every_strip_a_row_while_they_last() {
    let grid = Grid::new(1.0);
    let lanes = grid.lanes();
    // All particles in the bottom tenth: the rows above hold none.
    let y: Vec<f64> = (0..1000).map(|i| f64::from(i) * 1e-4).collect();
    let edges = balanced_edges(&row_counts(&grid, &y), 4);
    assert_eq!(edges.len(), 5);
    assert_eq!((edges[0], edges[4]), (0, lanes));
    assert!(edges.windows(2).all(|w| w[0] < w[1]), "{edges:?}");
    let counts: Vec<usize> = edges
        .windows(2)
        .map(|w| {
            y.iter()
                .filter(|&&y| (w[0]..w[1]).contains(&grid.lane(y)))
                .count()
        })
        .collect();
    // Rows hold about a hundred particles each: a strip is off its share by less than one.
    assert!(
        counts[..3].iter().all(|&c| c.abs_diff(250) <= 102),
        "{counts:?}"
    );
    assert_eq!(counts.iter().sum::<usize>(), 1000);
    // More strips than rows: some are empty, none overlap, all rows are covered.
    let edges = balanced_edges(&row_counts(&Grid::new(0.05), &[0.01, 0.02, 0.03]), 9);
    assert_eq!(edges.len(), 10);
    assert!(edges.windows(2).all(|w| w[0] <= w[1]), "{edges:?}");
    assert_eq!(*edges.last().unwrap(), Grid::new(0.05).lanes());
}

#[test]
fn edges_move_rows_from_slow_strips_to_fast_ones() {
    // Ten particles a row, forty rows, four strips of ten rows.
    let per_row = vec![10u32; 40];
    let edges = vec![0, 10, 20, 30, 40];
    // Equal paces, or within the tolerance: nothing moves.
    assert_eq!(rebalanced(&edges, &[1.0; 4], &per_row), None);
    assert_eq!(rebalanced(&edges, &[1.0, 1.0, 1.04, 1.0], &per_row), None);
    // Strip 1 takes twice as long as the others: it should hold half as many particles as
    // each of them, 400 / 3.5 ≈ 57 against 114, so it shrinks and its neighbours grow.
    let new = rebalanced(&edges, &[1.0, 2.0, 1.0, 1.0], &per_row).expect("a move");
    assert_eq!((new[0], new[4]), (0, 40));
    let rows: Vec<u32> = new.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(rows[1] < 10 && rows[0] > 10, "{new:?}");
    assert_eq!(rows.iter().sum::<u32>(), 40);
    // However slow, a strip keeps a row, and no edge passes a neighbour's old rows.
    let new = rebalanced(&edges, &[1.0, 1000.0, 1.0, 1.0], &per_row).expect("a move");
    assert!(new.windows(2).all(|w| w[0] < w[1]), "{new:?}");
    assert!(new[1] <= edges[2] && new[2] >= edges[1], "{new:?}");
    // A time of zero, or fewer rows than strips: nothing moves.
    assert_eq!(rebalanced(&edges, &[1.0, 0.0, 1.0, 1.0], &per_row), None);
    assert_eq!(rebalanced(&[0, 1, 2, 3], &[1.0, 9.0, 1.0], &[5, 5]), None);
}

#[test]
fn a_strip_cedes_the_rows_outside_its_new_edges() {
    let grid = Grid::new(1.0);
    let mut next = xorshift(7);
    let mut particles = physics::Particles::default();
    for id in 0..2000 {
        let x = (next() % 1000) as f64 / 1000.0;
        let y = (next() % 1000) as f64 / 1000.0;
        particles.push(id, x, y, 0.0, 0.0);
    }
    let per_row = row_counts(&grid, &particles.y);
    let lanes = grid.lanes();
    let (a, b) = (lanes / 4, 3 * lanes / 4);
    let mut strip = strip::Strip::from_start(&grid, &particles, a..b, &per_row, true);
    let before: usize = per_row[a as usize..b as usize]
        .iter()
        .map(|&c| c as usize)
        .sum();
    let (mut down, mut up) = (Vec::new(), Vec::new());
    strip.cede(&grid, a + 2..b - 3, &mut down, &mut up);
    assert_eq!(strip.rows(), a + 2..b - 3);
    assert!(
        down.iter()
            .all(|b| (a..a + 2).contains(&grid.row_of(b.key)))
    );
    assert!(
        up.iter()
            .all(|body| (b - 3..b).contains(&grid.row_of(body.key)))
    );
    let kept = strip.bodies().count();
    assert!(
        strip
            .bodies()
            .all(|body| (a + 2..b - 3).contains(&grid.row_of(body.key)))
    );
    assert_eq!(kept + down.len() + up.len(), before);
    assert_eq!(
        strip.row_counts(&grid),
        per_row[(a + 2) as usize..(b - 3) as usize].to_vec()
    );
}

mod rebalancing {
    use proptest::prelude::*;

    use super::super::rebalanced;

    proptest! {
        /// Whatever the paces and counts: edges from 0 to the last row, a row for every
        /// strip, and each edge between the old edges on either side of it, so a row
        /// changes hands between neighbours only.
        #[test]
        fn new_edges_keep_every_strip_and_move_rows_next_door_only(
            per_row in proptest::collection::vec(0u32..50, 8..80),
            parts in 2usize..8,
            busy in proptest::collection::vec(0.001f64..10.0, 8),
        ) {
            let lanes = per_row.len();
            prop_assume!(lanes >= parts);
            let edges: Vec<u32> = (0..=parts).map(|k| (k * lanes / parts) as u32).collect();
            if let Some(new) = rebalanced(&edges, &busy[..parts], &per_row) {
                prop_assert_eq!(new.len(), parts + 1);
                prop_assert_eq!((new[0], new[parts]), (0, lanes as u32));
                prop_assert!(new.windows(2).all(|w| w[0] < w[1]), "{:?}", new);
                for k in 1..parts {
                    prop_assert!(edges[k - 1] <= new[k] && new[k] <= edges[k + 1], "{:?} {:?}", edges, new);
                }
            }
        }
    }
}

/// A step on one strip finds exactly the all-pairs pairs, at cell edges, at the walls, in
/// the corners, at the cutoff, and for particles sharing a position.
#[test]
fn one_step_matches_all_pairs_at_every_edge() {
    // Ten edges of four particles each, four at the walls and two sharing a position.
    let size = init::box_size(46);
    let mut particles = physics::Particles::default();
    let mut id = 0;
    // Slow, so that the pairs stay near their edges for the three steps.
    let mut add = |p: &mut physics::Particles, x: f64, y: f64| {
        let v = f64::from(id % 7) * 0.1 - 0.3;
        p.push(id, x, y, v, -v * 0.5);
        id += 1;
    };
    let cell = size / f64::from(Grid::new(size).lanes());
    for k in 0..=9 {
        let edge = (f64::from(k) * cell).min(size);
        add(&mut particles, (edge - 0.004).max(0.0), 0.05);
        add(&mut particles, (edge + 0.004).min(size), 0.05);
        add(&mut particles, 0.03, edge);
        add(&mut particles, 0.03 + 1e-9, (edge - 0.009).max(0.0));
    }
    for (x, y) in [(0.0, 0.0), (0.0, 0.009), (size, size), (size - 0.01, size)] {
        add(&mut particles, x, y);
    }
    add(&mut particles, 0.07, 0.07);
    add(&mut particles, 0.07, 0.07);
    assert_eq!(particles.len(), 46);
    let start = Start {
        initial_energy: particles.energy(),
        particles,
        step: 0,
        correction: 1.0,
    };
    check_against_all_pairs(&start, 3, &MODES, None);
}

/// A crowd of 300 particles along one row, all moving down into the row below in the
/// first step, and a few slow ones in rows below and above it. When the step closes the
/// crowd's new row, it has read only the rows below: the rows it writes back pass the rows
/// it has read, and the crowd waits in the strip's queue (see [`strip`]).
pub(super) fn crowd_moving_down() -> Start {
    let n: u32 = 370;
    let size = init::box_size(n as usize);
    let h = size / f64::from(Grid::new(size).lanes());
    let mut particles = physics::Particles::default();
    for id in 0..n {
        let along = |k: u32, of: f64| (f64::from(k) + 0.5) * size / of;
        let (x, y, vy) = match id {
            0..50 => (along(id, 50.0), 2.5 * h, 0.1),
            50..350 => (along(id - 50, 300.0), 10.0 * h + 0.0005, -2.0),
            _ => (along(id - 350, 20.0), 11.5 * h, 0.05),
        };
        particles.push(id, x, y, 0.0, vy);
    }
    Start {
        initial_energy: particles.energy(),
        particles,
        step: 0,
        correction: 1.0,
    }
}

#[test]
fn a_crowd_that_moves_down_a_row_agrees_in_every_mode() {
    check_against_all_pairs(&crowd_moving_down(), 6, &MODES, None);
}

/// Every slot of `n`, with values made from it, dealt at random to one of two strips, each
/// grouped by slot window as a strip's end is.
fn dealt(n: usize) -> [Vec<Body>; 2] {
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    // Every slot, dealt at random to one of two strips, in no order.
    let mut parts = [Vec::new(), Vec::new()];
    for slot in 0..n as u32 {
        let v = f64::from(slot);
        parts[(next() % 2) as usize].push(Body {
            x: v,
            y: v + 0.25,
            vx: -v,
            vy: v * 2.0,
            slot,
            key: 0,
        });
    }
    for part in &mut parts {
        for i in (1..part.len()).rev() {
            part.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        grid::group_by_slot_window(part, &mut Vec::new());
    }
    assert!(parts[0].len() > grid::GROUP && parts[1].len() > grid::GROUP);
    parts
}

/// A list of `n` particles to be written over.
fn unwritten(n: usize) -> physics::Particles {
    physics::Particles {
        ids: (0..n as u32).collect(),
        x: vec![f64::NAN; n],
        y: vec![f64::NAN; n],
        vx: vec![f64::NAN; n],
        vy: vec![f64::NAN; n],
    }
}

/// Panics unless `list` holds [`dealt`]'s values, each in its slot.
fn check_dealt(list: &physics::Particles, threads: usize) {
    for slot in 0..list.len() {
        let v = slot as f64;
        assert_eq!(
            (list.x[slot], list.y[slot], list.vx[slot], list.vy[slot]),
            (v, v + 0.25, -v, v * 2.0),
            "slot {slot}, {threads} threads"
        );
    }
}

#[test]
fn list_order_takes_parts_of_many_groups_from_any_number_of_threads() {
    let n = 3 * grid::GROUP + 1000;
    let parts = dealt(n);
    let slices: Vec<&[Body]> = parts.iter().map(|p| &p[..]).collect();
    for threads in [1, 3] {
        let list = into_list_order(&slices, unwritten(n), threads, threads > 1).unwrap();
        check_dealt(&list, threads);
    }
}

/// Orders the strips' lent ends once every one is in, each way a test asks.
struct OrderLent {
    n: usize,
    ends: Vec<Option<End>>,
    ordered: Vec<Result<physics::Particles, String>>,
    tampered: Vec<String>,
}

impl ringleader::Handler for OrderLent {
    type Report = End;
    type Answer = ();

    fn on_report(
        &mut self,
        from: usize,
        end: End,
        coordinator: &mut ringleader::Coordinator<'_, ()>,
    ) -> Result<(), ringleader::StageError> {
        self.ends[from] = Some(end);
        let Some(ends) = self.ends.iter().cloned().collect::<Option<Vec<End>>>() else {
            return Ok(());
        };
        for threads in [1, 2, 5] {
            let list = into_list_order_lent(&ends, unwritten(self.n), threads);
            self.ordered.push(list.map_err(|e| e.to_string()));
        }
        // The last batch's start moved back a body: that body is read with the wrong batch
        // (the last, which has room for it).
        let mut moved = ends.clone();
        moved[0].starts[grid::batches(self.n) - 1] -= 1;
        // A group's last start short of its end: the last body would go unread.
        let mut short = ends.clone();
        short[1].starts[grid::batches(self.n)] -= 1;
        for tampered in [moved, short] {
            let err = into_list_order_lent(&tampered, unwritten(self.n), 2).unwrap_err();
            self.tampered.push(err.to_string());
        }
        coordinator.broadcast(())?;
        Ok(())
    }
}

#[test]
fn list_order_reads_lent_ends_a_batch_at_a_time_and_refuses_false_starts() {
    // Several batches, and more than one group in each strip.
    let n = 5 * grid::GROUP + 1000;
    assert!(grid::batches(n) >= 3);
    let parts = std::sync::Arc::new(dealt(n));
    let stage = ringleader::stage_fn(move |ring| {
        let (end, loan) = End::lend(ring, parts[ring.rank()].clone(), n)?;
        ring.report(&end)?;
        let () = ring.recv_answer()?;
        drop(loan);
        Ok(())
    });
    let mut order = OrderLent {
        n,
        ends: vec![None, None],
        ordered: Vec::new(),
        tampered: Vec::new(),
    };
    ringleader::Launcher::new()
        .workers(2)
        .transport(Transport::Threads)
        .launch_with(stage, &mut order)
        .unwrap();
    assert_eq!(order.ordered.len(), 3);
    for (list, threads) in order.ordered.iter().zip([1, 2, 5]) {
        check_dealt(list.as_ref().unwrap(), threads);
    }
    assert!(
        order.tampered[0].contains("outside its batch"),
        "{:?}",
        order.tampered
    );
    assert!(
        order.tampered[1].contains("batch starts"),
        "{:?}",
        order.tampered
    );
}

#[test]
fn list_order_refuses_a_slot_twice_or_a_slot_missing() {
    let n = grid::WINDOW + 10;
    let body = |slot: u32| Body {
        slot,
        ..Body::default()
    };
    let list = || physics::Particles {
        ids: (0..n as u32).collect(),
        x: vec![0.0; n],
        y: vec![0.0; n],
        vx: vec![0.0; n],
        vy: vec![0.0; n],
    };
    let every: Vec<Body> = (0..n as u32).map(body).collect();
    assert!(into_list_order(&[&every], list(), 2, true).is_ok());
    // Slot 7 twice, in place of slot 8.
    let mut twice = every.clone();
    twice[8] = body(7);
    twice[..grid::WINDOW].sort_by_key(|b| b.slot);
    let err = into_list_order(&[&twice], list(), 1, false).unwrap_err();
    assert!(err.contains("slot 7 twice"), "{err}");
    // The last slot missing.
    let short = &every[..n - 1];
    let err = into_list_order(&[short], list(), 1, false).unwrap_err();
    assert!(err.contains(&format!("{} of {n}", n - 1)), "{err}");
}

#[test]
fn the_list_orders_gate_opens_once_every_party_has_arrived_or_been_called_off() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let gate = Gate::new(4);
    let passed = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                gate.arrive_and_wait();
                passed.fetch_add(1, SeqCst);
            });
        }
        // Two parties have come at most, and two are still due: nobody is through.
        assert_eq!(passed.load(SeqCst), 0);
        // A thread that could not be started is called off; this one is still due.
        gate.call_off();
        assert_eq!(passed.load(SeqCst), 0);
        gate.arrive_and_wait();
    });
    assert_eq!(passed.load(SeqCst), 2);
}
