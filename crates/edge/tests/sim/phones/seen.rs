//! What the phones saw: retrieves, pickups and recalls as their phones met them, and who held
//! and heard each caller, for the checks.

use crate::*;

pub(crate) struct RetrieveSeen {
    pub(crate) ext: String,
    pub(crate) site: usize,
    pub(crate) slot: u32,
    pub(crate) sent: Millis,
    /// Final response and when.
    pub(crate) done: Option<(u16, Millis)>,
    /// The caller named by the 200's P-Asserted-Identity (`"<slot>: <label>" <uri>`), with
    /// the slot and the URI's user it names.
    pub(crate) label: Option<String>,
    pub(crate) named: Option<(u32, String)>,
    /// The caller that answered our greeting.
    pub(crate) reached: Option<String>,
    pub(crate) cancelled: bool,
    /// The caller that heard our greeting.
    pub(crate) heard_by: Option<String>,
}

pub(crate) struct PickupSeen {
    pub(crate) ext: String,
    pub(crate) site: usize,
    /// What was dialled (`*81100`, `*8`).
    pub(crate) dialled: String,
    pub(crate) sent: Millis,
    pub(crate) done: Option<(u16, Millis)>,
    /// The caller named by the 200's P-Asserted-Identity (`"<label>" <uri>`), and the URI's
    /// user.
    pub(crate) label: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) reached: Option<String>,
    pub(crate) heard_by: Option<String>,
    pub(crate) cancelled: bool,
}

pub(crate) struct RecallSeen {
    pub(crate) ext: String,
    pub(crate) call_id: String,
    pub(crate) slot: u32,
    pub(crate) label: String,
    pub(crate) at: Millis,
}

#[derive(Default)]
pub(crate) struct Obs {
    pub(crate) calls: u64,
    pub(crate) refers: u64,
    pub(crate) parked: u64,
    pub(crate) park_failed: u64,
    pub(crate) retrieves: Vec<RetrieveSeen>,
    pub(crate) pickups: Vec<PickupSeen>,
    pub(crate) recalls: Vec<RecallSeen>,
    pub(crate) recalls_kept: u64,
    /// (caller label, phone that held it, since): a retrieve's 200, or a recall kept.
    pub(crate) holders: Vec<(String, String, Millis)>,
    /// (caller label, phone whose greeting it heard).
    pub(crate) heard: Vec<(String, String)>,
}
