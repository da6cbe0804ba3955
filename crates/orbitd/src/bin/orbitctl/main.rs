//! `orbitctl`: the operator's command line for Orbit's admin API (issue 11). Every RPC of
//! `orbit.admin.v1.Admin` (a registry node's) and `orbit.admin.v1.EdgeAdmin` (an edge's admin
//! listener: `calls`, `registrations`) is a subcommand, and `health` asks either; output is a
//! table, or JSON with `--json` (one object per line for streams). Against `orbitd dev` run from
//! the same directory it needs no flags: it talks to site A's registry node with the admin
//! certificate dev made.
//!
//! Exit codes: 0 done; 1 failed otherwise; 2 bad usage; 3 the registry could not be reached or
//! has no leader; 4 not allowed (no certificate, or one whose role may not do it); 5 bad input
//! or nothing of that name; 6 refused in the present state (a lot with parked calls), or, for
//! `health`, not serving.

mod connect;
mod output;
mod tenant;

use connect::{channel, client, leader};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use orbit_registry::admin_pb::edge_admin_client::EdgeAdminClient;
use orbit_registry::admin_pb::{
    AddMemberRequest, DrainEdgeRequest, ExtendParkedCallRequest, GetClusterStatusRequest,
    HangUpParkedCallRequest, ListParkedCallsRequest, LocateExtensionRequest, MemberRequest,
    SendParkedCallRequest, TakeSnapshotRequest, WatchParkedCallsRequest,
};
use orbit_registry::admin_pb::{HangUpCallRequest, ListCallsRequest, ListRegistrationsRequest};
use tonic::Code;

#[derive(Parser)]
#[command(
    name = "orbitctl",
    version,
    about = "Manage an Orbit cluster through its admin API",
    after_help = "Exit codes: 0 done, 1 failed, 2 bad usage, 3 registry unreachable or leaderless, 4 not allowed, 5 bad input or not found, 6 refused in the present state (a lot with parked calls)."
)]
struct Cli {
    /// A registry node's gRPC address.
    #[arg(
        long,
        env = "ORBIT_ENDPOINT",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    endpoint: String,
    /// The cluster's CA certificate (PEM). Without the three TLS flags: the admin certificate
    /// `orbitd dev` made under ./orbit-data/pki, if there; else plaintext.
    #[arg(long, env = "ORBIT_CA", global = true)]
    ca: Option<PathBuf>,
    /// This client's certificate (PEM): `spiffe://orbit/admin/<name>` or `read/<name>`.
    #[arg(long, env = "ORBIT_CERT", global = true, requires_all = ["ca", "key"])]
    cert: Option<PathBuf>,
    /// Its private key (PEM, readable by its owner only).
    #[arg(long, env = "ORBIT_KEY", global = true, requires_all = ["ca", "cert"])]
    key: Option<PathBuf>,
    /// A bearer token from the registry's `[[registry.tokens]]` instead of a client
    /// certificate (scripts; with --ca only; the registry's admin API only).
    #[arg(long, env = "ORBIT_TOKEN", global = true, hide_env_values = true, conflicts_with_all = ["cert", "key"])]
    token: Option<String>,
    /// JSON instead of a table (one object per line for --watch).
    #[arg(long, global = true)]
    json: bool,
    /// How long one call may take.
    #[arg(long, default_value = "10", global = true, value_name = "SECONDS")]
    timeout: u64,
    /// An id for a change (hangup, extend, send, lots and pickup set/delete, edge drain): run again with the
    /// same id after an answer was lost, and it is not applied twice.
    #[arg(long, global = true, value_name = "ID")]
    request_id: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The registry cluster.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Parked calls.
    Parked {
        #[command(subcommand)]
        cmd: ParkedCmd,
    },
    /// Parking lots.
    Lots {
        #[command(subcommand)]
        cmd: tenant::LotsCmd,
    },
    /// Pickup groups.
    Pickup {
        #[command(subcommand)]
        cmd: tenant::PickupCmd,
    },
    /// Edges (`cluster status` lists them).
    Edge {
        #[command(subcommand)]
        cmd: EdgeCmd,
    },
    /// The calls at an edge (--endpoint: the edge's admin listener).
    Calls {
        #[command(subcommand)]
        cmd: CallsCmd,
    },
    /// Where an extension has phones registered, at every site (a registry node).
    Locate {
        #[arg(long)]
        tenant: String,
        ext: String,
    },
    /// The phones registered at an edge (--endpoint: the edge's admin listener).
    Registrations {
        /// Only this extension's.
        #[arg(long)]
        ext: Option<String>,
    },
    /// Whether --endpoint (a registry node or an edge's admin listener) is serving (gRPC
    /// health): exit 0 if it is, 6 if not.
    Health,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Leader, term, log indexes, members and their lag, edges and their leases.
    Status,
    /// Add a registry node as a learner (admin role): it copies the log and does not vote;
    /// answered once it has caught up. Sent to the leader, wherever --endpoint points.
    Add {
        /// Its node id (from 1, never reused).
        id: u64,
        /// Its gRPC address, host:port.
        addr: String,
    },
    /// Make a learner a voter (admin role).
    Promote { id: u64 },
    /// Hand the leadership to voter ID (admin role): writes pause for about the election
    /// timeout while it takes over.
    Transfer { id: u64 },
    /// Remove a registry node (admin role; a voter loses its vote first).
    Remove { id: u64 },
    /// Have the --endpoint node write a snapshot of its state now (admin role).
    Snapshot,
}

#[derive(Subcommand)]
enum CallsCmd {
    /// The calls up, ringing or parked, oldest first.
    List,
    /// Hang a call up (admin role): BYE to its parties; a parked call's slot is freed.
    Hangup { id: u64 },
}

#[derive(Subcommand)]
enum EdgeCmd {
    /// Drain an edge (admin role), as SIGTERM does: no new calls (503), its calls may end up
    /// to its drain time, then the rest get BYE and it leaves.
    Drain {
        /// The edge: `site-a`, or `site-a/edge-2` for one of several at a site.
        edge: String,
    },
}

#[derive(Subcommand)]
enum ParkedCmd {
    /// The calls parked now; with --watch, then every park event as it happens.
    List {
        /// Only this tenant's (SIP domain).
        #[arg(long)]
        tenant: Option<String>,
        /// Keep watching: park, retrieve, recall and end events, until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Hang a parked call up (admin role): its caller gets BYE, its slot is free.
    Hangup {
        /// The park's id (`parked list` shows it).
        park_id: u64,
    },
    /// Ring an extension with a parked call now (admin role), as a recall would: unanswered,
    /// the recall goes on to the parker.
    Send {
        /// The park's id (`parked list` shows it).
        park_id: u64,
        /// The extension to ring.
        ext: String,
    },
    /// Push a parked call's deadline later (admin role): its recall waits for the new one.
    Extend {
        /// The park's id (`parked list` shows it).
        park_id: u64,
        /// How many seconds later.
        #[arg(long)]
        secs: u64,
    },
}

/// A failure, with the exit code it maps to.
struct Failure {
    code: u8,
    msg: String,
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Failure {
        use std::error::Error;
        // Not an answer of the node's but the connection failing (refused, TLS, HTTP/2).
        let transport = s
            .source()
            .is_some_and(|e| e.is::<tonic::transport::Error>());
        if transport {
            return fail(
                3,
                format!(
                    "{} (a node that speaks TLS needs --ca/--cert/--key)",
                    s.message()
                ),
            );
        }
        let code = match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => 3,
            Code::Unauthenticated | Code::PermissionDenied => 4,
            Code::InvalidArgument | Code::NotFound | Code::OutOfRange | Code::AlreadyExists => 5,
            Code::FailedPrecondition => 6,
            _ => 1,
        };
        let msg = if s.message().is_empty() {
            format!("{:?}", s.code())
        } else {
            s.message().to_string()
        };
        Failure { code, msg }
    }
}

fn fail(code: u8, msg: impl std::fmt::Display) -> Failure {
    Failure {
        code,
        msg: msg.to_string(),
    }
}

/// The change's request id, if `--request-id` gave one.
fn request_id(cli: &Cli) -> String {
    cli.request_id.clone().unwrap_or_default()
}

async fn bounded<T>(
    cli: &Cli,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(Duration::from_secs(cli.timeout), f).await {
        Ok(r) => r.map(|r| r.into_inner()).map_err(|s| at(cli, s)),
        Err(_) => Err(fail(
            3,
            format!("{}: no answer in {} s", cli.endpoint, cli.timeout),
        )),
    }
}

/// `s` as a failure that names the node when it could not be reached.
fn at(cli: &Cli, s: tonic::Status) -> Failure {
    let mut f = Failure::from(s);
    if f.code == 3 {
        f.msg = format!(
            "{}: {} (is a registry node listening there?)",
            cli.endpoint, f.msg
        );
    }
    f
}

async fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.cmd {
        Cmd::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "orbitctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Cmd::Cluster {
            cmd: ClusterCmd::Status,
        } => {
            let mut c = client(cli)?;
            let s = bounded(cli, c.get_cluster_status(GetClusterStatusRequest {})).await?;
            output::cluster_status(&s, cli.json);
            if s.leader_id == 0 {
                return Err(fail(3, "no leader known"));
            }
            Ok(())
        }
        Cmd::Cluster {
            cmd: ClusterCmd::Add { id, addr },
        } => {
            let mut c = leader(cli).await?;
            let req = AddMemberRequest {
                id: *id,
                addr: addr.clone(),
            };
            let s = bounded(cli, c.add_member(req)).await?;
            output::cluster_status(&s, cli.json);
            Ok(())
        }
        Cmd::Cluster {
            cmd: ClusterCmd::Promote { id },
        } => {
            let mut c = leader(cli).await?;
            let s = bounded(cli, c.promote_member(MemberRequest { id: *id })).await?;
            output::cluster_status(&s, cli.json);
            Ok(())
        }
        Cmd::Cluster {
            cmd: ClusterCmd::Transfer { id },
        } => {
            let mut c = leader(cli).await?;
            let s = bounded(cli, c.transfer_leadership(MemberRequest { id: *id })).await?;
            output::cluster_status(&s, cli.json);
            Ok(())
        }
        Cmd::Cluster {
            cmd: ClusterCmd::Remove { id },
        } => {
            let mut c = leader(cli).await?;
            let s = bounded(cli, c.remove_member(MemberRequest { id: *id })).await?;
            output::cluster_status(&s, cli.json);
            Ok(())
        }
        Cmd::Cluster {
            cmd: ClusterCmd::Snapshot,
        } => {
            let mut c = client(cli)?;
            let r = bounded(cli, c.take_snapshot(TakeSnapshotRequest {})).await?;
            if cli.json {
                println!("{}", serde_json::json!({ "index": r.index }));
            } else {
                println!("snapshot taken at log index {}", r.index);
            }
            Ok(())
        }
        Cmd::Lots { cmd } => tenant::lots(cli, cmd).await,
        Cmd::Pickup { cmd } => tenant::pickup(cli, cmd).await,
        Cmd::Parked {
            cmd: ParkedCmd::Send { park_id, ext },
        } => {
            let mut c = client(cli)?;
            let req = SendParkedCallRequest {
                park_id: *park_id,
                ext: ext.clone(),
                request_id: request_id(cli),
            };
            let p = bounded(cli, c.send_parked_call(req)).await?;
            output::parked(&[p], cli.json);
            Ok(())
        }
        Cmd::Parked {
            cmd: ParkedCmd::Extend { park_id, secs },
        } => {
            let mut c = client(cli)?;
            let req = ExtendParkedCallRequest {
                park_id: *park_id,
                seconds: *secs,
                request_id: request_id(cli),
            };
            let p = bounded(cli, c.extend_parked_call(req)).await?;
            output::parked(&[p], cli.json);
            Ok(())
        }
        Cmd::Calls {
            cmd: CallsCmd::List,
        } => {
            let mut c = EdgeAdminClient::new(channel(cli)?);
            let r = bounded(cli, c.list_calls(ListCallsRequest {})).await?;
            output::calls(&r, cli.json);
            Ok(())
        }
        Cmd::Calls {
            cmd: CallsCmd::Hangup { id },
        } => {
            let mut c = EdgeAdminClient::new(channel(cli)?);
            bounded(cli, c.hang_up_call(HangUpCallRequest { id: *id })).await?;
            if !cli.json {
                println!("call {id} hung up");
            }
            Ok(())
        }
        Cmd::Locate { tenant, ext } => {
            let mut c = client(cli)?;
            let req = LocateExtensionRequest {
                tenant: tenant.clone(),
                ext: ext.clone(),
            };
            let r = bounded(cli, c.locate_extension(req)).await?;
            output::locations(ext, &r.locations, cli.json);
            Ok(())
        }
        Cmd::Registrations { ext } => {
            let mut c = EdgeAdminClient::new(channel(cli)?);
            let req = ListRegistrationsRequest {
                ext: ext.clone().unwrap_or_default(),
            };
            let r = bounded(cli, c.list_registrations(req)).await?;
            output::registrations(&r, cli.json);
            Ok(())
        }
        Cmd::Health => {
            use tonic_health::pb::health_check_response::ServingStatus;
            let mut c = tonic_health::pb::health_client::HealthClient::new(channel(cli)?);
            let req = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            let r = bounded(cli, c.check(req)).await?;
            let serving = r.status == ServingStatus::Serving as i32;
            let word = if serving { "serving" } else { "not serving" };
            if cli.json {
                println!("{}", serde_json::json!({ "serving": serving }));
            } else {
                println!("{}: {word}", cli.endpoint);
            }
            if !serving {
                return Err(fail(6, format!("{}: {word}", cli.endpoint)));
            }
            Ok(())
        }
        Cmd::Edge {
            cmd: EdgeCmd::Drain { edge },
        } => {
            let mut c = client(cli)?;
            let req = DrainEdgeRequest {
                edge: edge.clone(),
                request_id: request_id(cli),
            };
            bounded(cli, c.drain_edge(req)).await?;
            if !cli.json {
                println!("edge {edge} draining");
            }
            Ok(())
        }
        Cmd::Parked {
            cmd: ParkedCmd::Hangup { park_id },
        } => {
            let mut c = client(cli)?;
            let req = HangUpParkedCallRequest {
                park_id: *park_id,
                request_id: request_id(cli),
            };
            bounded(cli, c.hang_up_parked_call(req)).await?;
            if !cli.json {
                println!("parked call {park_id} hung up");
            }
            Ok(())
        }
        Cmd::Parked {
            cmd: ParkedCmd::List { tenant, watch },
        } => {
            let mut c = client(cli)?;
            let req = ListParkedCallsRequest {
                tenant: tenant.clone().unwrap_or_default(),
            };
            let list = bounded(cli, c.list_parked_calls(req.clone())).await?;
            output::parked(&list.calls, cli.json);
            if !*watch {
                return Ok(());
            }
            let mut after = list.index;
            loop {
                let w = WatchParkedCallsRequest { after_index: after };
                let mut stream = bounded(cli, c.watch_parked_calls(w)).await?;
                loop {
                    match stream.message().await {
                        Ok(Some(ev)) => {
                            let mine = tenant
                                .as_ref()
                                .is_none_or(|t| ev.call.as_ref().is_some_and(|c| &c.tenant == t));
                            if mine {
                                output::park_event(&ev, cli.json);
                            }
                        }
                        // Fell behind what the node keeps: the list again, then on from it.
                        Err(s) if s.code() == Code::OutOfRange => {
                            eprintln!("orbitctl: {}; listing again", s.message());
                            let list = bounded(cli, c.list_parked_calls(req.clone())).await?;
                            output::parked(&list.calls, cli.json);
                            after = list.index;
                            break;
                        }
                        Err(s) => return Err(at(cli, s)),
                        Ok(None) => return Err(fail(3, "the registry node closed the watch")),
                    }
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("orbitctl: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("orbitctl: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}
