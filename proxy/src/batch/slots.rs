//! How many transactions may start now and what waits for a slot: the across-tokens level of
//! group commit, as plain bookkeeping (no tasks, no locks), so its rules are unit-tested alone.

use std::collections::VecDeque;

/// The slots bookkeeping alone: how many more transactions may start now, and what waits for
/// a slot, oldest first.
#[derive(Debug)]
pub struct Slots<U> {
    free: usize,
    waiting: VecDeque<U>,
}

impl<U> Slots<U> {
    /// `n` transactions at once (at least one).
    pub fn new(n: usize) -> Self {
        Slots {
            free: n.max(1),
            waiting: VecDeque::new(),
        }
    }

    /// A unit arrives: when a slot is free it is taken and the unit comes back (the caller
    /// runs it now); otherwise the unit waits (`None`).
    pub fn arrive(&mut self, unit: U) -> Option<U> {
        if self.free > 0 {
            self.free -= 1;
            Some(unit)
        } else {
            self.waiting.push_back(unit);
            None
        }
    }

    /// A slot's transaction is done: the units to run next in it, oldest first, as many as
    /// fit in `max` calls (`size` counts a unit's calls; the first is taken whatever its size).
    /// When nothing waits, the slot is freed and the result is empty.
    pub fn next(&mut self, max: usize, size: impl Fn(&U) -> usize) -> Vec<U> {
        let mut units = Vec::new();
        let mut calls = 0;
        while let Some(unit) = self.waiting.front() {
            let n = size(unit);
            if !units.is_empty() && calls + n > max {
                break;
            }
            calls += n;
            units.extend(self.waiting.pop_front());
        }
        if units.is_empty() {
            self.free += 1;
        }
        units
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.free
    }

    /// Removes whatever waits, freeing the slot of the caller.
    pub fn abandon(&mut self) -> Vec<U> {
        self.free += 1;
        self.waiting.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn slots_run_at_once_until_taken_then_hand_on_what_waited() {
        let mut s = Slots::new(2);
        assert_eq!(s.arrive("a"), Some("a"));
        assert_eq!(s.arrive("b"), Some("b"));
        assert_eq!(s.free(), 0);
        // Every slot taken: the rest waits, in arrival order.
        assert_eq!(s.arrive("c"), None);
        assert_eq!(s.arrive("d"), None);
        assert_eq!(s.arrive("e"), None);
        // A slot comes free: it takes what waited, at most `max` calls (one each here).
        assert_eq!(s.next(2, |_| 1), vec!["c", "d"]);
        assert_eq!(s.next(2, |_| 1), vec!["e"]);
        assert_eq!(s.free(), 0);
        // Nothing waits: the slot is freed, and so is the other when it is done.
        assert!(s.next(2, |_| 1).is_empty());
        assert_eq!(s.free(), 1);
        assert!(s.next(2, |_| 1).is_empty());
        assert_eq!(s.free(), 2);
        // Zero slots would stop everything: there is always one.
        assert_eq!(Slots::new(0).arrive(1), Some(1));
    }

    #[test]
    fn a_slot_takes_units_whole_and_at_least_one() {
        let mut s = Slots::new(1);
        assert_eq!(s.arrive(vec![0]), Some(vec![0]));
        for unit in [vec![1; 5], vec![2; 3], vec![3; 2], vec![4; 9]] {
            assert_eq!(s.arrive(unit), None);
        }
        // 5 + 3 fit in 8; the next unit would not, so it waits for the next transaction.
        assert_eq!(s.next(8, Vec::len), vec![vec![1; 5], vec![2; 3]]);
        assert_eq!(s.next(8, Vec::len), vec![vec![3; 2]]);
        // A unit larger than `max` still runs (alone), never waits forever.
        assert_eq!(s.next(8, Vec::len), vec![vec![4; 9]]);
        assert!(s.next(8, Vec::len).is_empty());
        assert_eq!(s.free(), 1);
        // Abandoning hands back what waited and frees the caller's slot.
        assert_eq!(s.arrive(vec![5]), Some(vec![5]));
        assert_eq!(s.arrive(vec![6]), None);
        assert_eq!(s.abandon(), vec![vec![6]]);
        assert_eq!(s.free(), 1);
    }
}
