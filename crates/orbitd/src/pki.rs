//! `orbitd pki issue`: a certificate for one member of the cluster (a registry node, an edge,
//! an operator, a reader), signed by the CA in `--dir` (made there on first use), named by its
//! SPIFFE ID and valid as a server for the `--host` names. A certificate already issued under
//! that name is kept, so that a deployment's first-start job can run again.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use orbit_registry::dev_pki::DevCa;
use orbit_registry::Caller;

#[derive(Subcommand)]
pub enum PkiCmd {
    /// Issue `<dir>/<name>.pem` and `<name>.key` (and `ca.pem`), unless they are there.
    Issue {
        /// Where the CA (`ca.pem`, `ca.key`) and the certificates are.
        #[arg(long)]
        dir: PathBuf,
        /// Whose: `registry:ID`, `edge:SITE` or `edge:SITE/NAME`, `admin:NAME`, `read:NAME`.
        #[arg(long)]
        who: String,
        /// The file name (default: from --who, e.g. `registry-1`, `edge-site-a`).
        #[arg(long)]
        name: Option<String>,
        /// A host name or address the holder serves at (repeat for more).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

/// Who a `--who` names, and its default file name.
fn caller(who: &str) -> Result<(Caller, String)> {
    let (kind, id) = who
        .split_once(':')
        .with_context(|| format!("--who {who:?}: kind:id, e.g. registry:1 or edge:site-a"))?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    Ok(match kind {
        "registry" => match id.parse::<u64>() {
            Ok(n) if n > 0 => (Caller::Node(n), format!("registry-{n}")),
            _ => bail!("--who {who:?}: registry node ids are numbers from 1"),
        },
        "edge" if id.split('/').count() <= 2 && id.split('/').all(plain) => (
            Caller::Edge(id.into()),
            format!("edge-{}", id.replace('/', "-")),
        ),
        "admin" if plain(id) => (Caller::Admin(id.into()), format!("admin-{id}")),
        "read" if plain(id) => (Caller::Reader(id.into()), format!("read-{id}")),
        "edge" | "admin" | "read" => {
            bail!("--who {who:?}: names are lowercase letters, digits and '-'")
        }
        _ => bail!("--who {who:?}: registry, edge, admin or read"),
    })
}

pub fn run(cmd: PkiCmd) -> Result<()> {
    let PkiCmd::Issue {
        dir,
        who,
        name,
        hosts,
    } = cmd;
    let (caller, default_name) = caller(&who)?;
    let name = name.unwrap_or(default_name);
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        bail!("--name {name:?}: a file name");
    }
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    if cert.exists() && key.exists() {
        println!("{}: kept", cert.display());
        return Ok(());
    }
    let ca = DevCa::in_dir(&dir).with_context(|| format!("the CA in {}", dir.display()))?;
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let files = ca
        .write(&dir, &name, &caller, &hosts)
        .with_context(|| format!("issuing {name}"))?;
    println!("{}: {}", files.cert.display(), caller.spiffe_id());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_names_a_member_and_anything_else_is_refused() {
        assert_eq!(caller("registry:2").unwrap().1, "registry-2");
        assert_eq!(
            caller("edge:site-a/edge-1").unwrap().1,
            "edge-site-a-edge-1"
        );
        assert_eq!(caller("admin:ops").unwrap().1, "admin-ops");
        for bad in [
            "registry:0",
            "edge:Site",
            "edge:a/b/c",
            "admin:",
            "root:x",
            "edge",
        ] {
            assert!(caller(bad).is_err(), "{bad}");
        }
    }
}
