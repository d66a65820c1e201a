//! Which tokens are busy and what waits for each: the per-token level of group commit,
//! as plain bookkeeping (no tasks, no locks), so its rules are unit-tested alone.

use std::collections::{HashMap, VecDeque};

/// The bookkeeping alone: which tokens are busy and what waits for each. A token has an entry
/// exactly while a call of it runs (or a driver drains its queue).
#[derive(Debug)]
pub struct Queues<T> {
    busy: HashMap<String, VecDeque<T>>,
}

impl<T> Default for Queues<T> {
    fn default() -> Self {
        Queues {
            busy: HashMap::new(),
        }
    }
}

impl<T> Queues<T> {
    /// A call of `key` arrives: when the key is idle it becomes busy and the item comes back
    /// (the caller runs it now); when busy, the item joins the key's queue (`None`).
    pub fn arrive(&mut self, key: &str, item: T) -> Option<T> {
        match self.busy.get_mut(key) {
            Some(queue) => {
                queue.push_back(item);
                None
            }
            None => {
                self.busy.insert(key.to_owned(), VecDeque::new());
                Some(item)
            }
        }
    }

    /// The next batch of `key`, oldest first, at most `max` items. When nothing waits, the key
    /// becomes idle (its entry is removed) and the batch is empty.
    pub fn next_batch(&mut self, key: &str, max: usize) -> Vec<T> {
        let Some(queue) = self.busy.get_mut(key) else {
            return Vec::new();
        };
        if queue.is_empty() {
            self.busy.remove(key);
            return Vec::new();
        }
        let n = queue.len().min(max.max(1));
        queue.drain(..n).collect()
    }

    /// Makes `key` idle when nothing waits for it; `false` when calls wait (it stays busy).
    pub fn release_if_idle(&mut self, key: &str) -> bool {
        match self.busy.get(key) {
            Some(queue) if !queue.is_empty() => false,
            _ => {
                self.busy.remove(key);
                true
            }
        }
    }

    /// Removes `key` with whatever waits for it.
    pub fn abandon(&mut self, key: &str) -> Vec<T> {
        self.busy.remove(key).map(Vec::from).unwrap_or_default()
    }

    /// Number of busy keys.
    pub fn busy_keys(&self) -> usize {
        self.busy.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn first_call_leads_later_ones_queue() {
        let mut q = Queues::default();
        assert_eq!(q.arrive("a", 1), Some(1));
        assert_eq!(q.arrive("a", 2), None);
        assert_eq!(q.arrive("a", 3), None);
        // Another key is independent.
        assert_eq!(q.arrive("b", 10), Some(10));
        assert_eq!(q.busy_keys(), 2);
        assert!(q.release_if_idle("b"));
        assert_eq!(q.busy_keys(), 1);
        // Calls wait for "a": it stays busy.
        assert!(!q.release_if_idle("a"));
        assert_eq!(q.next_batch("a", 64), vec![2, 3]);
        // Arrivals during a batch wait for the next one.
        assert_eq!(q.arrive("a", 4), None);
        assert_eq!(q.next_batch("a", 64), vec![4]);
        assert_eq!(q.busy_keys(), 1);
        // An empty queue ends the key's busy time: no entry is left behind.
        assert_eq!(q.next_batch("a", 64), Vec::<i32>::new());
        assert_eq!(q.busy_keys(), 0);
        assert_eq!(q.arrive("a", 5), Some(5));
    }

    #[test]
    fn batches_are_capped_and_in_arrival_order() {
        let mut q = Queues::default();
        assert_eq!(q.arrive("a", 0), Some(0));
        for i in 1..=10 {
            assert_eq!(q.arrive("a", i), None);
        }
        assert_eq!(q.next_batch("a", 4), vec![1, 2, 3, 4]);
        assert_eq!(q.next_batch("a", 4), vec![5, 6, 7, 8]);
        assert_eq!(q.next_batch("a", 0), vec![9]);
        assert_eq!(q.next_batch("a", 4), vec![10]);
        assert!(q.next_batch("a", 4).is_empty());
        assert_eq!(q.busy_keys(), 0);
        // Unknown keys are idle.
        assert!(q.next_batch("x", 4).is_empty());
        assert!(q.release_if_idle("x"));
    }

    #[test]
    fn abandon_hands_back_what_waited() {
        let mut q = Queues::default();
        assert_eq!(q.arrive("a", 1), Some(1));
        assert_eq!(q.arrive("a", 2), None);
        assert_eq!(q.abandon("a"), vec![2]);
        assert_eq!(q.busy_keys(), 0);
        assert!(q.abandon("a").is_empty());
    }
}
