//! The phones: SIPp processes on the sites' hosts, each logging every message it sends and
//! receives with its own time stamps (`-trace_msg`), which is all the checker reads.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::SIP;
use crate::net::Net;
use crate::sipp_log::{self, Msg};

/// Starts phones on the hosts of `net`.
pub struct Phones<'n> {
    net: &'n Net,
    dir: PathBuf,
    scenarios: PathBuf,
    next: AtomicUsize,
}

/// One SIPp process and the file its messages go to.
pub struct Phone {
    pub name: String,
    child: Child,
    pub messages: PathBuf,
}

impl Phone {
    /// Wait for it to end, up to `within` (then it is killed): whether it ended by itself.
    pub fn wait(&mut self, within: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        false
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it saw so far.
    pub fn seen(&self) -> Vec<Msg> {
        let text = std::fs::read_to_string(&self.messages).unwrap_or_default();
        // SIPp writes a message's lines as it logs it; a half-written last one is left out.
        sipp_log::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", self.messages.display()))
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<'n> Phones<'n> {
    /// Phones whose files go to `dir`, with the scenarios of `scenarios`.
    pub fn new(net: &'n Net, dir: &Path, scenarios: &Path) -> Phones<'n> {
        std::fs::create_dir_all(dir).expect("the phones' directory");
        Phones {
            net,
            dir: dir.to_path_buf(),
            scenarios: scenarios.to_path_buf(),
            next: AtomicUsize::new(0),
        }
    }

    /// SIPp at host `site` running `scenario` against the site's edge from local port `port`
    /// (0: one never used before in this run: a port another phone used before could still
    /// get that phone's retransmitted responses), with `args`. `user` authenticates to `service` when the scenario
    /// does so (digest with `pw<user>`).
    pub fn start(
        &self,
        site: usize,
        name: &str,
        scenario: &str,
        port: u16,
        args: &[&str],
    ) -> Phone {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let messages = self.dir.join(format!("{n:05}-{name}.msg"));
        let host = &self.net.hosts[site];
        let edge = format!("{}:{SIP}", host.addr);
        let mut cmd = self.net.command(site, "sipp");
        cmd.arg(&edge)
            .arg("-sf")
            .arg(self.scenarios.join(scenario))
            .args(["-i", &host.addr.to_string()])
            .args(["-nostdin", "-trace_msg", "-message_file"])
            .arg(&messages)
            .args(["-trace_err", "-error_file"])
            .arg(self.dir.join(format!("{n:05}-{name}.err")))
            // SIPp stamps local time; the log reader takes it as UTC.
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Fresh ports from 10000 up, the same on every host (each has its own address).
        // (After 20,000 phones, hours of a long run, they come round again.)
        let port = if port == 0 {
            10_000 + (n % 20_000) as u16
        } else {
            port
        };
        cmd.args(["-p", &port.to_string()]);
        // Its media ports (SIPp binds audio at this one and video two above, RTP and RTCP,
        // even when no RTP is sent): away from the SIP ports.
        cmd.args(["-mp", &(40_000 + 4 * (n % 5_000) as u16).to_string()]);
        // The edge checks the digest's uri against the Request-URI: SIPp's default names
        // only the host, for scenarios that authenticate a request to [service].
        let text = std::fs::read_to_string(self.scenarios.join(scenario)).unwrap_or_default();
        let to_service = text.contains("[authentication]")
            && text.contains("sip:[service]@[remote_ip]:[remote_port] SIP/2.0");
        if let Some(i) = args.iter().position(|a| *a == "-s").filter(|_| to_service) {
            if let Some(service) = args.get(i + 1) {
                cmd.args(["-auth_uri", &format!("{service}@{edge}")]);
            }
        }
        cmd.args(args);
        let child = cmd.spawn().expect("sipp (apt-get install sip-tester)");
        Phone {
            name: name.to_string(),
            child,
            messages,
        }
    }

    /// A one-call UAC at host `site`: `user` (digest with `pw<user>`, and the scenario's
    /// `caller`) calls `service`, talks 300 ms; `keys` are the scenario's other keys.
    pub fn uac(
        &self,
        site: usize,
        name: &str,
        scenario: &str,
        user: &str,
        service: &str,
        keys: &[(&str, &str)],
    ) -> Phone {
        let pw = format!("pw{user}");
        let mut args = vec![
            "-s", service, "-au", user, "-ap", &pw, "-d", "300", "-m", "1", "-timeout", "20s",
            "-key", "caller", user,
        ];
        for (k, v) in keys {
            args.extend(["-key", k, v]);
        }
        self.start(site, name, scenario, 0, &args)
    }

    /// Register `ext` at host `site` from `port`, where its phone will answer.
    pub fn register(&self, site: usize, ext: &str, port: u16) -> bool {
        let pw = format!("pw{ext}");
        let mut p = self.start(
            site,
            &format!("register-{ext}"),
            "register.xml",
            port,
            &[
                "-s",
                ext,
                "-au",
                ext,
                "-ap",
                &pw,
                "-key",
                "expires",
                "3600",
                "-m",
                "1",
                "-timeout",
                "10s",
                "-timeout_error",
            ],
        );
        p.wait(Duration::from_secs(15))
            && p.seen()
                .iter()
                .any(|m| m.code == Some(200) && m.cseq_method == "REGISTER")
    }
}
