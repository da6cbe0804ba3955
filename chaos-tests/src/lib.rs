//! Orbit's chaos tests (issue 13): the sites' processes on hosts of their own (network
//! namespaces), faults made to them for real, and a checker that holds the run to what the
//! phones saw, by their own clocks.
//!
//! - [`net`]: the hosts, the WAN between them, and cuts (partitions, one way or both);
//! - [`sipp_log`]: a phone's messages with its own time stamps (SIPp's `-trace_msg`);
//! - [`cluster`]: each site's registry voter and edge as processes on its host;
//! - [`phones`]: SIPp on the hosts, logging what they saw;
//! - [`run`]: the workload, the seeded schedule of faults, and the verdict;
//! - [`observed`]: a phone's log read as parks, retrieves and recalls;
//! - [`checker`]: parks and deliveries held to what a parking lot promises.

pub mod checker;
pub mod cluster;
pub mod net;
pub mod observed;
pub mod phones;
pub mod run;
pub mod sipp_log;
