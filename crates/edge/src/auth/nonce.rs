//! Nonces: `base64url(issued_at ‖ random ‖ HMAC(key, issued_at ‖ random ‖ source))`, minted
//! for a challenge and recognised (issue time and id) when credentials come back, from the
//! source they were issued to only.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::lockout::source_key;
use super::Authenticator;

impl Authenticator {
    fn mac(&self, data: &[u8]) -> [u8; 16] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(data);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// A nonce for a challenge sent to `source`. It is good only from that source (its /64
    /// for IPv6): a nonce used from elsewhere is answered with a fresh challenge and counts as
    /// no failure, so that nobody can spend failures, and so lock a user out, in the name of
    /// another address (over UDP a source is easily forged; the challenge is not seen there).
    pub fn nonce(&mut self, now: Instant, source: IpAddr) -> String {
        let ms = now.duration_since(self.epoch).as_millis() as u64;
        let mut raw = [0u8; 32];
        raw[..8].copy_from_slice(&ms.to_be_bytes());
        self.rng.fill_bytes(&mut raw[8..16]);
        let mac = self.nonce_mac(&raw[..16], source);
        raw[16..].copy_from_slice(&mac);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// The MAC of a nonce's time and random part, bound to the source it was issued to.
    fn nonce_mac(&self, head: &[u8], source: IpAddr) -> [u8; 16] {
        let mut data = Vec::with_capacity(head.len() + 16);
        data.extend_from_slice(head);
        match source_key(source) {
            IpAddr::V4(a) => data.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => data.extend_from_slice(&a.octets()),
        }
        self.mac(&data)
    }

    /// When the nonce was issued and its id, if it is one of ours.
    pub(super) fn nonce_issued(&self, nonce: &str, source: IpAddr) -> Option<(Instant, u64)> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()?;
        if raw.len() != 32 {
            return None;
        }
        let mac = self.nonce_mac(&raw[..16], source);
        // Constant-time compare.
        let diff = mac
            .iter()
            .zip(&raw[16..])
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            return None;
        }
        let ms = u64::from_be_bytes(raw[..8].try_into().ok()?);
        // The MAC is unpredictable and unique per nonce: its first 8 bytes identify it.
        let id = u64::from_be_bytes(raw[16..24].try_into().ok()?);
        Some((self.epoch + Duration::from_millis(ms), id))
    }
}
