//! Collecting one report from every rank, for collective protocols.

use std::collections::VecDeque;

/// Collects reports on the coordinator until every rank has sent one, then hands them over
/// in rank order. A rank that runs ahead may send its next report early: reports queue per
/// rank, so rounds never mix.
///
/// ```
/// use ringleader::Gather;
///
/// let mut gather = Gather::new(2);
/// assert_eq!(gather.push(1, "b"), None);
/// assert_eq!(gather.push(1, "b'"), None); // rank 1 runs ahead
/// assert_eq!(gather.push(0, "a"), Some(vec!["a", "b"]));
/// assert_eq!(gather.push(0, "a'"), Some(vec!["a'", "b'"]));
/// ```
#[derive(Debug, Clone)]
pub struct Gather<T> {
    queues: Vec<VecDeque<T>>,
}

impl<T> Gather<T> {
    /// A gather over `ranks` ranks.
    pub fn new(ranks: usize) -> Self {
        Gather {
            queues: (0..ranks).map(|_| VecDeque::new()).collect(),
        }
    }

    /// Adds rank `from`'s report. Returns the whole round, in rank order, once every rank
    /// has contributed to it.
    ///
    /// # Panics
    ///
    /// If `from` is not a rank of this gather.
    pub fn push(&mut self, from: usize, item: T) -> Option<Vec<T>> {
        self.queues[from].push_back(item);
        if self.queues.iter().all(|queue| !queue.is_empty()) {
            Some(
                self.queues
                    .iter_mut()
                    .filter_map(VecDeque::pop_front)
                    .collect(),
            )
        } else {
            None
        }
    }
}
