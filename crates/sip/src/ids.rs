//! Identifiers we put in messages: tags, branches, Call-IDs.
//!
//! Each carries 96 random bits from a CSPRNG (`StdRng`, ChaCha12), never a counter: a tag or a
//! Call-ID that can be guessed lets a stranger forge a request inside someone else's dialog
//! (RFC 3261 §19.3 asks for 32 bits at least; a dialog's identity is its Call-ID and tags).
//! The generator is handed in: seeded from the OS in production, from a number in tests, so
//! that a seeded test makes the same messages every run.

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

pub struct Ids {
    rng: StdRng,
}

impl Ids {
    /// Seeded from the operating system's entropy.
    pub fn from_entropy() -> Ids {
        Ids {
            rng: StdRng::from_entropy(),
        }
    }

    /// Deterministic, for tests and simulations.
    pub fn seeded(seed: u64) -> Ids {
        Ids {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// 96 random bits, as 24 lowercase hex digits.
    fn token(&mut self) -> String {
        let mut b = [0u8; 12];
        self.rng.fill_bytes(&mut b);
        hex(&b)
    }

    /// A From/To tag.
    pub fn tag(&mut self) -> String {
        self.token()
    }

    /// A Via branch, with RFC 3261's magic cookie.
    pub fn branch(&mut self) -> String {
        let mut s = String::with_capacity(31);
        s.push_str("z9hG4bK");
        s.push_str(&self.token());
        s
    }

    /// A Call-ID naming `host`.
    pub fn call_id(&mut self, host: &str) -> String {
        format!("{}@{host}", self.token())
    }

    /// A random number (nonces, incarnations).
    pub fn u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// The generator itself, for whatever else needs randomness from the same source.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_random_wide_and_reproducible_when_seeded() {
        let mut a = Ids::seeded(7);
        let t1 = a.tag();
        let t2 = a.tag();
        assert_eq!(t1.len(), 24, "96 bits");
        assert_ne!(t1, t2);
        // Not a counter: consecutive tags share no long prefix.
        assert_ne!(t1[..12], t2[..12]);
        assert!(a.branch().starts_with("z9hG4bK"));
        assert!(a.call_id("orbit").ends_with("@orbit"));
        let mut b = Ids::seeded(7);
        assert_eq!(b.tag(), t1);
        assert_ne!(Ids::seeded(8).tag(), t1);
    }
}
