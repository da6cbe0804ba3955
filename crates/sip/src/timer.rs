//! A deadline queue with lazy cancellation: owners re-check their own deadline when a key pops,
//! so cancelling a timer costs nothing and rescheduling just pushes again.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Instant;

pub struct Timers<K> {
    heap: BinaryHeap<Reverse<Entry<K>>>,
    /// Breaks ties between equal deadlines (many timers are set at one `now`): first set,
    /// first out, and the keys themselves are never compared.
    seq: u64,
}

struct Entry<K> {
    at: Instant,
    seq: u64,
    key: K,
}

impl<K> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<K> Eq for Entry<K> {}

impl<K> PartialOrd for Entry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Entry<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<K> Timers<K> {
    pub fn schedule(&mut self, at: Instant, key: K) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            key,
        }));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// The next key whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now => self.heap.pop().map(|Reverse(e)| e.key),
            _ => None,
        }
    }

    /// Every queued deadline, in no order (stale ones included).
    pub fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.heap.iter().map(|Reverse(e)| e.at)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.schedule(t0 + Duration::from_secs(2), 2);
        t.schedule(t0 + Duration::from_secs(1), 1);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(5)), Some(1));
        assert_eq!(t.pop_due(t0 + Duration::from_secs(5)), Some(2));
        assert!(t.is_empty());
    }

    #[test]
    fn equal_deadlines_pop_in_the_order_they_were_set() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for k in [3, 1, 2] {
            t.schedule(t0, k);
        }
        let order: Vec<_> = std::iter::from_fn(|| t.pop_due(t0)).collect();
        assert_eq!(order, vec![3, 1, 2]);
    }
}
