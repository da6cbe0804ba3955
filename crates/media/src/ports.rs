//! Which relay ports a new call gets: a plan without sockets, clock or randomness of its own
//! (the time and the generator are handed in), so that the edge's sans-I/O core can choose a
//! call's ports, write them into SDP at once, and leave the binding to its driver.
//!
//! Ports are handed out in random order, so that a call's ports cannot be guessed from
//! another's. A released port pair stays bound for reuse (opening and closing four sockets per
//! call was a fifth of the edge's CPU at a few thousand calls/s): it waits `reuse_after` before
//! another call may take it (late packets of the old call find nobody to latch), and is closed,
//! its ports returned to the system, after `close_after` unused ([`PortPlan::close_due`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

/// Timing of endpoint reuse.
#[derive(Debug, Clone, Copy)]
pub struct PoolTiming {
    /// A released endpoint is not handed out again before this (unless no other is left).
    pub reuse_after: Duration,
    /// A released endpoint unused this long is closed.
    pub close_after: Duration,
}

impl Default for PoolTiming {
    fn default() -> Self {
        PoolTiming {
            reuse_after: Duration::from_millis(500),
            close_after: Duration::from_secs(10),
        }
    }
}

/// The relay's port pairs (each an even RTP port and the odd RTCP port above it), by the even
/// port: which are free, which released and still bound, how many are in use.
#[derive(Debug)]
pub struct PortPlan {
    /// Ports not bound, in random order; taken from the end.
    fresh: Vec<u16>,
    /// Released ports, still bound, with the time they were released: in release order, except
    /// that the front ones, cooled down when reuse took one of them, are shuffled among
    /// themselves (so for any time, the ports cooled by then are a prefix).
    idle: VecDeque<(Instant, u16)>,
    total: usize,
    in_use: usize,
    timing: PoolTiming,
}

impl PortPlan {
    /// `first..=last` inclusive; the plan uses every even port whose odd neighbour is in range.
    pub fn new(first: u16, last: u16, timing: PoolTiming, rng: &mut impl RngCore) -> PortPlan {
        let start = first.saturating_add(first & 1);
        let mut fresh: Vec<u16> = (start..last).step_by(2).collect();
        fresh.shuffle(rng);
        PortPlan {
            total: fresh.len(),
            fresh,
            idle: VecDeque::new(),
            in_use: 0,
            timing,
        }
    }

    /// A port pair for a call: a cooled-down released one (any of them, at random), else an
    /// unbound one (a random port), else the oldest released one; none when all are in use.
    pub fn take(&mut self, now: Instant, rng: &mut impl RngCore) -> Option<u16> {
        let reuse_after = self.timing.reuse_after;
        let cooled = self
            .idle
            .partition_point(|(t, _)| now.saturating_duration_since(*t) >= reuse_after);
        let port = if cooled > 0 {
            // Swapping within the cooled prefix keeps it a prefix for any later `now`.
            self.idle.swap(0, rng.gen_range(0..cooled));
            self.idle.pop_front().map(|(_, p)| p)
        } else {
            self.fresh
                .pop()
                .or_else(|| self.idle.pop_front().map(|(_, p)| p))
        }?;
        self.in_use += 1;
        Some(port)
    }

    /// A call is done with `port`: it stays bound, to be reused once cooled or closed later.
    pub fn release(&mut self, now: Instant, port: u16) {
        self.in_use = self.in_use.saturating_sub(1);
        self.idle.push_back((now, port));
    }

    /// Released ports unused for `close_after` by `now`: no longer bound from now on (whoever
    /// holds their sockets closes them). They return among the unbound at random places in the
    /// half taken last, so the order they come back in does not tell the next ones, and their
    /// sockets, closed asynchronously, are gone long before they are taken again.
    pub fn close_due(&mut self, now: Instant, rng: &mut impl RngCore) -> Vec<u16> {
        let mut closed = vec![];
        while let Some((t, _)) = self.idle.front() {
            if now.saturating_duration_since(*t) < self.timing.close_after {
                break;
            }
            let (_, port) = self.idle.pop_front().expect("front exists");
            closed.push(port);
            let at = rng.gen_range(0..=self.fresh.len() / 2);
            self.fresh.insert(at, port);
        }
        closed
    }

    /// `port`, taken, could not be bound (another process holds it): not in use, and among the
    /// unbound where it is taken last (it may be free again later).
    pub fn unusable(&mut self, port: u16) {
        self.in_use = self.in_use.saturating_sub(1);
        self.fresh.insert(0, port);
    }

    /// Port pairs attached to calls.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Port pairs bound (in use, or released and not yet closed).
    pub fn bound(&self) -> usize {
        self.total - self.fresh.len()
    }

    /// Port pairs in the range.
    pub fn capacity(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn plan(first: u16, last: u16, reuse_ms: u64, close_s: u64) -> (PortPlan, StdRng) {
        let mut rng = StdRng::seed_from_u64(7);
        let timing = PoolTiming {
            reuse_after: Duration::from_millis(reuse_ms),
            close_after: Duration::from_secs(close_s),
        };
        (PortPlan::new(first, last, timing, &mut rng), rng)
    }

    #[test]
    fn ports_are_handed_out_in_random_order() {
        // 500 pairs. 40 ports of a uniformly random order come out ascending with probability
        // 1/40!, descending too.
        let (mut p, mut rng) = plan(20000, 20999, 500, 10);
        let now = Instant::now();
        let ports: Vec<u16> = (0..40).map(|_| p.take(now, &mut rng).unwrap()).collect();
        assert!(ports
            .iter()
            .all(|p| p % 2 == 0 && (20000..20999).contains(p)));
        assert!(!ports.windows(2).all(|w| w[0] < w[1]), "{ports:?}");
        assert!(!ports.windows(2).all(|w| w[0] > w[1]), "{ports:?}");
        assert_eq!(p.in_use(), 40);
    }

    #[test]
    fn released_ports_cool_down_then_come_back_in_random_order() {
        let (mut p, mut rng) = plan(21000, 21999, 50, 60);
        let t0 = Instant::now();
        let released: Vec<u16> = (0..40).map(|_| p.take(t0, &mut rng).unwrap()).collect();
        for &port in &released {
            p.release(t0, port);
        }
        // Not yet cooled: an unbound port, none of these.
        let kept = p.take(t0 + Duration::from_millis(10), &mut rng).unwrap();
        assert!(!released.contains(&kept));
        // Cooled: the 40 come back, but not first released first out (probability 1/40!).
        let t1 = t0 + Duration::from_millis(60);
        let reused: Vec<u16> = (0..40).map(|_| p.take(t1, &mut rng).unwrap()).collect();
        assert_ne!(reused, released);
        let (mut a, mut b) = (reused.clone(), released.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert_eq!(p.bound(), 41);
    }

    #[test]
    fn exhausted_plans_say_so_and_take_the_oldest_released_before_it_cools() {
        let (mut p, mut rng) = plan(31100, 31103, 500, 10);
        assert_eq!(p.capacity(), 2);
        let now = Instant::now();
        let a = p.take(now, &mut rng).unwrap();
        let b = p.take(now, &mut rng).unwrap();
        assert_eq!(p.take(now, &mut rng), None);
        p.release(now, a);
        assert_eq!(
            p.take(now, &mut rng),
            Some(a),
            "the only one left, cooled or not"
        );
        assert_eq!(p.in_use(), 2);
        let _ = b;
    }

    #[test]
    fn released_ports_are_closed_after_their_idle_time_and_can_be_taken_again() {
        let (mut p, mut rng) = plan(31000, 31009, 0, 10);
        let now = Instant::now();
        let a = p.take(now, &mut rng).unwrap();
        p.release(now, a);
        assert!(p
            .close_due(now + Duration::from_secs(9), &mut rng)
            .is_empty());
        assert_eq!(p.bound(), 1);
        assert_eq!(
            p.close_due(now + Duration::from_secs(10), &mut rng),
            vec![a]
        );
        assert_eq!((p.bound(), p.in_use()), (0, 0));
    }

    #[test]
    fn a_port_that_cannot_be_bound_is_taken_last() {
        let (mut p, mut rng) = plan(32000, 32009, 500, 10);
        let now = Instant::now();
        let busy = p.take(now, &mut rng).unwrap();
        p.unusable(busy);
        assert_eq!(p.in_use(), 0);
        let order: Vec<u16> = (0..5).map(|_| p.take(now, &mut rng).unwrap()).collect();
        assert_eq!(order.last(), Some(&busy));
    }
}
