//! How a failed start ends: one line naming the cause (the whole chain of context), a line of
//! advice where the cause is a common one, and an exit code a supervisor can act on: 78
//! (EX_CONFIG, sysexits.h) for a config file that is wrong, 1 for anything else (2, bad usage,
//! is clap's).

use std::process::ExitCode;

/// The exit code of a config error: the file must change before a restart can help.
pub const EX_CONFIG: u8 = 78;

/// A config file that cannot be used as it is (unreadable, not TOML, a field wrong, a rule
/// broken): its message names the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct BadConfig(pub anyhow::Error);

/// Print `e` for a person and return the exit code it means.
pub fn report(e: &anyhow::Error) -> ExitCode {
    eprintln!("orbitd: {e:#}");
    if let Some(a) = advice(e) {
        eprintln!("orbitd: {a}");
    }
    let config = e.chain().any(|c| c.is::<BadConfig>());
    ExitCode::from(if config { EX_CONFIG } else { 1 })
}

/// What to do about the usual causes of a failed start.
fn advice(e: &anyhow::Error) -> Option<&'static str> {
    e.chain().find_map(|c| {
        let in_use = c
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
            || matches!(
                c.downcast_ref::<orbit_registry::NodeError>(),
                Some(orbit_registry::NodeError::Bind(_, io)) if io.kind() == std::io::ErrorKind::AddrInUse
            );
        let in_use = in_use || c.to_string().contains("Address already in use");
        if in_use {
            return Some("another process listens on that address: stop it, or give this one another address (listen in the config; --sip or --grpc for orbitd dev)");
        }
        let store_in_use = matches!(
            c.downcast_ref::<orbit_registry::StoreError>(),
            Some(orbit_registry::StoreError::InUse { .. })
        );
        if store_in_use || c.to_string().contains("is in use by another process") {
            return Some("another orbitd is using that data directory: stop it, or give this one its own (data_dir or state_dir in the config; --data-dir for orbitd dev)");
        }
        if let Some(orbit_registry::NodeError::Stopped { cause, .. }) = c.downcast_ref() {
            return Some(if cause.contains("No space left on device") {
                "the disk holding that data directory is full: free space there (or give the node a larger volume) and start it again; the other voters go on without it meanwhile"
            } else {
                "the registry's store failed: check the disk holding that data directory, then start the node again; the other voters go on without it meanwhile"
            });
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_config_error_exits_78_and_a_port_in_use_says_what_to_do() {
        let bad: anyhow::Result<()> = Err(anyhow::anyhow!("unknown field `bogus`"));
        let e = bad
            .context("parsing orbit.toml")
            .map_err(|e| anyhow::Error::new(BadConfig(e)))
            .unwrap_err();
        assert_eq!(report(&e), ExitCode::from(EX_CONFIG));
        assert!(format!("{e:#}").contains("parsing orbit.toml: unknown field `bogus`"));
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let e = anyhow::Error::new(io).context("binding SIP sockets on 127.0.0.1:5060");
        assert!(advice(&e).unwrap().contains("another process listens"));
        assert_eq!(report(&e), ExitCode::from(1));
        let e = anyhow::anyhow!("state_dir /x is in use by another process");
        assert!(advice(&e).unwrap().contains("another orbitd is using"));
        assert!(advice(&anyhow::anyhow!("no such file")).is_none());
        let full = orbit_registry::NodeError::Stopped {
            node: 3,
            cause: "storage IO error: write Logs: No space left on device (os error 28)".into(),
            data_dir: "/var/lib/orbit".into(),
        };
        let e = anyhow::Error::new(full);
        assert!(advice(&e)
            .unwrap()
            .contains("the disk holding that data directory is full"));
        assert!(format!("{e:#}").contains("registry node 3 stopped"));
        assert_eq!(report(&e), ExitCode::from(1));
    }
}
