//! What a run measures of itself: the depth of its critical path, for any stage.
//!
//! Every message carries a hop count. A worker and the coordinator each keep a count `c`,
//! starting at 0; whatever they send (a ring message or block, each hop of a rotation, a
//! report, an answer) carries `c + 1`, and a receiver sets `c = max(c, h)` from the count
//! `h` it receives. Sending leaves the sender's `c` alone. So `c` is the length of the
//! longest chain of messages, each received before the next was sent, that ends at this
//! worker: the part of the run that no number of cores could overlap. The last word of a
//! worker (its output, or its failure) counts for nothing.
//!
//! Each worker's `c` and the first step it announced (with `c` then) live on the progress
//! board, so the depth costs a store per receive and is there even for a worker that was
//! killed. The depth of a step is how much the largest `c` grew over it.

use crate::progress::Board;

/// What a run measured of itself, from
/// [`Launcher::launch_with_stats`](crate::Launcher::launch_with_stats).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunStats {
    /// The critical-path depth per step: the longest chain of messages in the run, each
    /// received before the next was sent, divided by the number of steps. A rotation on P
    /// workers adds P - 1 per step; a message to each neighbour, received on both sides,
    /// adds 1; a report and its answer add 2.
    ///
    /// Measured as (the largest hop count any worker ended with, minus the largest any
    /// worker had when it announced its first step with [`Ring::set_step`](crate::Ring::set_step))
    /// over [`steps`](RunStats::steps). `None` when no worker announced a step, and for
    /// `Transport::Mpi`, whose ranks keep their records apart.
    pub depth: Option<f64>,
    /// How many steps the depth is averaged over: from the smallest first step any worker
    /// announced to the largest last step any worker announced, inclusive. 0 when no
    /// worker announced a step.
    pub steps: u64,
}

impl RunStats {
    /// Reads the depth from a board, once every worker has ended.
    pub(crate) fn from_board(board: &Board) -> RunStats {
        let readings: Vec<_> = (0..board.ranks())
            .map(|rank| board.depth_reading(rank))
            .collect();
        let first = readings.iter().filter_map(|r| r.first_step).min();
        let last = readings.iter().filter_map(|r| r.last_step).max();
        let (Some(first), Some(last)) = (first, last) else {
            return RunStats::default();
        };
        let start = readings
            .iter()
            .filter(|r| r.first_step.is_some())
            .map(|r| r.hops_at_first_step)
            .max()
            .unwrap_or(0);
        let end = readings.iter().map(|r| r.hops).max().unwrap_or(0);
        // A stage that counts its steps down has no span to speak of: one step.
        let steps = last.saturating_sub(first).saturating_add(1);
        RunStats {
            depth: Some(end.saturating_sub(start) as f64 / steps as f64),
            steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_announced_step_means_no_depth() {
        let board = Board::new(2).unwrap();
        board.set_hops(0, 7);
        let stats = RunStats::from_board(&board);
        assert_eq!((stats.depth, stats.steps), (None, 0));
    }

    /// Rank 1 starts later and further along; the depth spans both ranks' steps and
    /// starts from the largest count at a first step.
    #[test]
    fn depth_is_the_growth_of_the_largest_count_over_every_step() {
        let board = Board::new(2).unwrap();
        board.set_step(0, 1, 0);
        board.set_step(0, 4, 5);
        board.set_hops(0, 8);
        board.set_hops(1, 2);
        board.set_step(1, 2, 2);
        board.set_step(1, 3, 2);
        board.set_hops(1, 6);
        let stats = RunStats::from_board(&board);
        // Steps 1 to 4; counts from 2 to 8.
        assert_eq!(stats.steps, 4);
        assert_eq!(stats.depth, Some(6.0 / 4.0));
    }
}
