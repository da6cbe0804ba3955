//! The player: one thread per relay pool that sends music and prompts into call legs, one RTP
//! packet per leg every 20 ms on an absolute schedule (so the rate stays 50 packets/s however
//! late a wake-up is). Audio is encoded once per clip ([`Clip`]); per packet the thread only
//! writes a 12-byte header in front of a shared frame and sends it from the leg's own relay port
//! (the address the party already talks to, so no re-INVITE is needed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::audio::{Clip, Codec, FRAME};
use crate::relay::Shared;

const TICK: Duration = Duration::from_millis(20);

pub(crate) struct Player {
    new: Mutex<Vec<Sub>>,
    wake: Condvar,
    generation: AtomicU64,
    cpu_ns: AtomicU64,
    sent: AtomicU64,
}

/// One leg being played to.
pub(crate) struct Sub {
    shared: Weak<Shared>,
    leg: usize,
    gen: u64,
    clip: Arc<Clip>,
    codec: Codec,
    pt: u8,
    looped: bool,
    /// Next frame of a one-shot clip.
    pos: usize,
    ssrc: u32,
    seq: u16,
    ts: u32,
    first: bool,
}

impl Sub {
    pub(crate) fn new(
        shared: Weak<Shared>,
        leg: usize,
        gen: u64,
        clip: Arc<Clip>,
        codec: Codec,
        pt: u8,
        looped: bool,
    ) -> Sub {
        Sub {
            shared,
            leg,
            gen,
            clip,
            codec,
            pt,
            looped,
            pos: 0,
            ssrc: rand_u32(),
            seq: rand_u32() as u16,
            ts: rand_u32(),
            first: true,
        }
    }

    /// Send this tick's packet; false when the subscription is over.
    fn tick(&mut self, tick: u64, buf: &mut [u8; 12 + FRAME]) -> bool {
        let Some(shared) = self.shared.upgrade() else {
            return false; // the call ended
        };
        if shared.playing[self.leg].load(Ordering::Relaxed) != self.gen {
            return false; // bridged again, or replaced by another clip
        }
        let frame = if self.looped {
            // Every call of one clip hears the same point of it.
            self.clip.frame(self.codec, tick as usize)
        } else {
            if self.pos >= self.clip.frames() {
                return false;
            }
            self.pos += 1;
            self.clip.frame(self.codec, self.pos - 1)
        };
        let dest = shared.rtp_peer[self.leg].lock().unwrap().dest();
        if let Some(dest) = dest {
            let n = rtp_rs::RtpPacketBuilder::new()
                .payload_type(self.pt)
                .marked(self.first)
                .ssrc(self.ssrc)
                .sequence(rtp_rs::Seq::from(self.seq))
                .timestamp(self.ts)
                .payload(frame)
                .build_into(buf)
                .unwrap_or(0);
            let sock = socket2::SockRef::from(&shared.ep[self.leg].rtp);
            // Loss on a full buffer, as for relayed packets.
            let _ = sock.send_to(&buf[..n], &dest.into());
            self.first = false;
            self.seq = self.seq.wrapping_add(1);
        }
        // Time moves on whether or not there was anyone to send to.
        self.ts = self.ts.wrapping_add(FRAME as u32);
        true
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish() as u32
}

impl Player {
    pub(crate) fn start() -> Arc<Player> {
        let p = Arc::new(Player {
            new: Mutex::new(vec![]),
            wake: Condvar::new(),
            generation: AtomicU64::new(0),
            cpu_ns: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&p);
        std::thread::Builder::new()
            .name("media-player".into())
            .spawn(move || run(weak))
            .expect("spawn the media player thread");
        p
    }

    pub(crate) fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn add(&self, sub: Sub) {
        self.new.lock().unwrap().push(sub);
        self.wake.notify_one();
    }

    pub(crate) fn usage(&self) -> (Duration, u64) {
        (
            Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed)),
            self.sent.load(Ordering::Relaxed),
        )
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn run(player: Weak<Player>) {
    let mut subs: Vec<Sub> = vec![];
    let mut buf = [0u8; 12 + FRAME];
    let mut start = Instant::now();
    let mut tick: u64 = 0;
    loop {
        let Some(p) = player.upgrade() else {
            return; // the pool is gone
        };
        {
            let mut new = p.new.lock().unwrap();
            if subs.is_empty() && new.is_empty() {
                // Nothing to play: sleep until something is (checking now and then whether
                // the pool still exists).
                new = p.wake.wait_timeout(new, Duration::from_secs(1)).unwrap().0;
                start = Instant::now();
                tick = 0;
            }
            subs.append(&mut new);
        }
        if subs.is_empty() {
            continue;
        }
        tick += 1;
        let due = start + TICK * tick as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_millis(200) {
            // Asleep far too long (a stopped VM): restart the schedule rather than burst.
            start = now;
            tick = 0;
        }
        let before = subs.len();
        subs.retain_mut(|s| s.tick(tick, &mut buf));
        p.sent.fetch_add(before as u64, Ordering::Relaxed);
        if tick.is_multiple_of(50) {
            p.cpu_ns
                .store(thread_cpu().as_nanos() as u64, Ordering::Relaxed);
        }
    }
}
