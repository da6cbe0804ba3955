//! Hosts of their own on one machine: a network namespace per host, each joined by a veth
//! pair to a bridge in a namespace of the run's own (the "WAN"), so that nothing of a run is
//! seen from the machine's own network and runs never collide. Faults between hosts are
//! nftables rules in a host's namespace: cut off from some hosts, one way or both, and healed.
//!
//! Needs root, iproute2 and nftables (as CI and the dev machines have). The kernels here have
//! no `sch_netem`, so delay is not made here.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetError {
    #[error("`{cmd}` failed: {why} (the chaos tests need root, iproute2 and nftables)")]
    Command { cmd: String, why: String },
}

/// Which packets a cut drops, seen from the host cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Neither in nor out.
    Both,
    /// What the others send it (it still sends: an asymmetric cut).
    Inbound,
    /// What it sends them.
    Outbound,
}

/// One host: its namespace and its address on the WAN.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub addr: Ipv4Addr,
}

/// The hosts of one run and the WAN between them; all of it removed when dropped.
pub struct Net {
    wan: String,
    pub hosts: Vec<Host>,
}

/// The WAN's subnet: every run has its own WAN namespace, so the same one serves all.
const SUBNET: [u8; 3] = [10, 77, 0];
const PREFIX: &str = "orbit-chaos";

fn run(args: &[&str]) -> Result<String, NetError> {
    let (prog, rest) = args.split_first().expect("a command");
    let out = Command::new(prog)
        .args(rest)
        .output()
        .map_err(|e| NetError::Command {
            cmd: args.join(" "),
            why: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NetError::Command {
            cmd: args.join(" "),
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Namespaces left by runs whose process is gone (a test killed midway): their processes
/// killed (an orbitd or a SIPp would run on), then the namespaces removed.
fn remove_stale() {
    let Ok(list) = run(&["ip", "netns", "list"]) else {
        return;
    };
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = ns
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            if let Ok(pids) = run(&["ip", "netns", "pids", ns]) {
                for p in pids
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    // SAFETY: a signal to a process left in a namespace of a dead run.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
            }
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

impl Net {
    /// Hosts named `names`, at 10.77.0.10, .11, ... on one WAN.
    pub fn new(names: &[&str]) -> Result<Net, NetError> {
        remove_stale();
        // Unique within the process too (`cargo test` runs tests as threads of one).
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run_no = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = format!("{}-{run_no}", std::process::id());
        let wan = format!("{PREFIX}-{pid}-wan");
        let mut net = Net {
            wan: wan.clone(),
            hosts: vec![],
        };
        run(&["ip", "netns", "add", &wan])?;
        run(&["ip", "-n", &wan, "link", "add", "wan", "type", "bridge"])?;
        run(&["ip", "-n", &wan, "link", "set", "wan", "up"])?;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("{PREFIX}-{pid}-{name}");
            let addr = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 10 + i as u8);
            run(&["ip", "netns", "add", &ns])?;
            net.hosts.push(Host {
                name: name.to_string(),
                ns: ns.clone(),
                addr,
            });
            // Made inside the WAN namespace, so that no name is ever taken in the machine's.
            let (inside, outside) = (format!("h{i}"), format!("w{i}"));
            run(&[
                "ip", "-n", &wan, "link", "add", &outside, "type", "veth", "peer", "name", &inside,
                "netns", &ns,
            ])?;
            run(&[
                "ip", "-n", &wan, "link", "set", &outside, "master", "wan", "up",
            ])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inside,
            ])?;
            run(&["ip", "-n", &ns, "link", "set", &inside, "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Every namespace of the run: the hosts' and the WAN's.
    pub fn namespaces(&self) -> Vec<String> {
        let hosts = self.hosts.iter().map(|h| h.ns.clone());
        hosts.chain(std::iter::once(self.wan.clone())).collect()
    }

    /// `program` to run inside host `i`'s namespace (its arguments to be added).
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i].ns, program]);
        c
    }

    /// Cut host `i` off from hosts `from`, the `way` given. Cuts add up until healed.
    pub fn cut(&self, i: usize, from: &[usize], way: Way) -> Result<(), NetError> {
        if from.is_empty() {
            return Ok(());
        }
        let ns = &self.hosts[i].ns;
        let set = from
            .iter()
            .map(|&j| self.hosts[j].addr.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let nft = |rule: &str| run(&["ip", "netns", "exec", ns, "nft", rule]);
        nft("add table inet chaos")?;
        nft("add chain inet chaos in { type filter hook input priority 0 ; }")?;
        nft("add chain inet chaos out { type filter hook output priority 0 ; }")?;
        if way != Way::Outbound {
            nft(&format!("add rule inet chaos in ip saddr {{ {set} }} drop"))?;
        }
        if way != Way::Inbound {
            nft(&format!(
                "add rule inet chaos out ip daddr {{ {set} }} drop"
            ))?;
        }
        Ok(())
    }

    /// Take every cut of host `i` away.
    pub fn heal(&self, i: usize) -> Result<(), NetError> {
        let ns = &self.hosts[i].ns;
        // No table: nothing was cut.
        if run(&[
            "ip", "netns", "exec", ns, "nft", "list", "table", "inet", "chaos",
        ])
        .is_ok()
        {
            run(&[
                "ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "chaos",
            ])?;
        }
        Ok(())
    }

    /// Run `f` on a thread inside host `i`'s namespace: the sockets it makes stay there, the
    /// rest of the process stays where it is.
    pub fn within<T: Send + 'static>(&self, i: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.hosts[i].ns);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&path).expect("the host's namespace");
            // SAFETY: a plain syscall on a valid descriptor; it moves only this thread.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the thread inside the namespace")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = run(&["ip", "netns", "del", &h.ns]);
        }
        let _ = run(&["ip", "netns", "del", &self.wan]);
    }
}
