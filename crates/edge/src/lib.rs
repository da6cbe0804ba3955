//! # orbit-edge
//!
//! The per-site SIP edge: a registrar with digest authentication ([`auth`], `registrar`), a
//! B2BUA whose calls (`call/`) anchor their media in the relay ([`media`]), all driven by a
//! sans-I/O core ([`core::Edge`]) and a thin tokio driver ([`driver`]). Call park (`park`), its
//! lamp keys (`blf`) and call pickup (`pickup`) run on the orbit state (`orbit_state`), which
//! the edge orders itself on one site and through the registry across sites.
//!
//! ```text
//! let edge = Edge::new(config, local_addrs, start);  // plans relay ports, binds nothing
//! sockets.media = Some(MediaIo::new(PortPool::placed(ip)));   // the relay's sockets
//! driver::run(edge, sockets, shutdown, drain).await;  // UDP + TCP + TLS in, timers, media, Ctrl-C
//! ```

pub mod admin;
pub mod auth;
mod blf;
mod call;
pub mod config;
pub mod core;
pub mod dialog_info;
mod draining;
pub mod driver;
mod location;
pub mod media;
pub mod metrics;
pub mod orbit;
mod park;
mod pickup;
pub mod ratelimit;
mod registrar;
mod router;
mod services;
#[cfg(test)]
mod tests;
mod trunk;

pub use crate::config::EdgeConfig;
pub use crate::core::{Edge, Start, Stats, Transmit};
