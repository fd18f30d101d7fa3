//! `kura`, the command line client: a thin layer over the gRPC API. Credentials are the
//! client's: they are read from the docker-style config.json (auths, credHelpers,
//! credsStore) and sent with the request, as docker does.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use kura_proto::v1 as pb;
use std::collections::HashMap;
use std::path::PathBuf;
use tonic::transport::Channel;

pub mod containers;
pub mod networks;
pub mod progress;

#[derive(Parser)]
#[command(
    name = "kura",
    version,
    about = "kura: images, registries and snapshots (client of kurad)"
)]
pub struct Cli {
    /// kurad's socket.
    #[arg(
        long,
        global = true,
        env = "KURA_ADDRESS",
        default_value = "/run/kura/kura.sock"
    )]
    pub address: PathBuf,
    /// Namespace of the objects.
    #[arg(
        short = 'n',
        long,
        global = true,
        env = "KURA_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(clap::Args, Clone, Default)]
pub struct RegistryFlags {
    /// Use http instead of https for the registry.
    #[arg(long)]
    pub plain_http: bool,
    /// Accept any TLS certificate from the registry.
    #[arg(long)]
    pub skip_verify: bool,
    /// Credentials `user[:password]` instead of those in config.json.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run a command in a new container (the image is pulled when missing).
    Run {
        /// Run in the background and print the container's id.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Remove the container when it exits.
        #[arg(long)]
        rm: bool,
        #[command(flatten)]
        flags: containers::RunFlags,
    },
    /// Create a container without starting it.
    Create {
        #[command(flatten)]
        flags: containers::RunFlags,
    },
    /// Start created or stopped containers.
    Start {
        /// Attach to the output and wait for the exit.
        #[arg(short = 'a', long)]
        attach: bool,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List containers.
    Ps {
        /// Stopped ones too.
        #[arg(short = 'a', long)]
        all: bool,
        #[arg(short = 'q', long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// A container's output, from its log file.
    Logs {
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long)]
        tail: Option<usize>,
        #[arg(short = 't', long)]
        timestamps: bool,
        id: String,
    },
    /// Run a command in a running container.
    Exec {
        #[arg(short = 'i', long)]
        interactive: bool,
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(short = 'd', long)]
        detach: bool,
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        #[arg(short = 'w', long, default_value = "")]
        workdir: String,
        #[arg(short = 'u', long, default_value = "")]
        user: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Stop containers: their stop signal, then SIGKILL after a grace period.
    Stop {
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u32,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Send a signal to containers.
    Kill {
        #[arg(short = 's', long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running ones first.
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Freeze every process of containers.
    Pause {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    Unpause {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Wait for containers to exit and print their exit codes.
    Wait {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// The processes of a container.
    Top { id: String },
    /// Resource usage of containers (one sample).
    Stats {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Attach to a running container's output (and stdin if it was started with -i).
    Attach { id: String },
    /// Print events as they happen.
    Events {
        /// Topic prefixes (/tasks, /containers/create, ...).
        #[arg(long)]
        filter: Vec<String>,
    },
    /// Pull an image from a registry and unpack it.
    Pull {
        reference: String,
        /// os/arch[/variant] (default: this host).
        #[arg(long, default_value = "")]
        platform: String,
        #[arg(long, default_value = "")]
        snapshotter: String,
        /// Fetch the content only.
        #[arg(long)]
        no_unpack: bool,
        /// Fetch every platform of an index (the host's is unpacked).
        #[arg(long)]
        all_platforms: bool,
        #[command(flatten)]
        reg: RegistryFlags,
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List images.
    #[command(alias = "ls")]
    Images {
        /// name==x, name~=part, labels.k==v
        #[arg(short, long)]
        filter: Vec<String>,
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show a container (state, options, OCI spec) or an image (manifest, config,
    /// layers and sizes), as JSON.
    Inspect {
        #[arg(value_name = "CONTAINER|IMAGE")]
        image: String,
        #[arg(long, default_value = "")]
        platform: String,
    },
    /// Give an image another name.
    Tag {
        source: String,
        target: String,
        #[arg(short, long)]
        force: bool,
    },
    /// Remove images (and, by GC, what only they used).
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
        #[arg(long)]
        ignore_missing: bool,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Set or remove (k=) labels of an image.
    Label { image: String, labels: Vec<String> },
    /// Push an image to a registry.
    Push {
        image: String,
        /// Destination reference (default: the image's name).
        destination: Option<String>,
        #[arg(long, default_value = "")]
        platform: String,
        #[command(flatten)]
        reg: RegistryFlags,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write images to an OCI image-layout tar (`-o -`: stdout).
    Save {
        #[arg(required = true)]
        images: Vec<String>,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value = "")]
        platform: String,
    },
    /// Read images from an OCI image-layout or `docker save` tar (`-i -`: stdin).
    Load {
        #[arg(short, long)]
        input: PathBuf,
        /// Name for images the archive does not name.
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long)]
        no_unpack: bool,
        #[arg(long, default_value = "")]
        snapshotter: String,
    },
    /// Unpack an image's layers into snapshots.
    Unpack {
        image: String,
        #[arg(long, default_value = "")]
        platform: String,
        #[arg(long, default_value = "")]
        snapshotter: String,
    },
    /// Store registry credentials in config.json (checked against the registry first).
    Login {
        host: String,
        #[arg(short, long)]
        username: Option<String>,
        #[arg(short, long)]
        password: Option<String>,
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        plain_http: bool,
        #[arg(long)]
        skip_verify: bool,
    },
    /// Forget registry credentials.
    Logout { host: String },
    /// Remove whatever nothing references.
    Prune {
        #[arg(short, long)]
        quiet: bool,
    },
    /// What keeps an object alive: an image name, `sha256:...` or `snapshots/<sn>/<key>`.
    Refs { object: String },
    /// Mount an image's root filesystem read-only (a view snapshot) on a directory.
    Mount {
        image: String,
        target: PathBuf,
        #[arg(long, default_value = "")]
        snapshotter: String,
        #[arg(long, default_value = "")]
        platform: String,
    },
    /// Unmount what `kura mount` mounted and drop its snapshot.
    Unmount {
        target: PathBuf,
        #[arg(long, default_value = "")]
        snapshotter: String,
    },
    /// Snapshots.
    #[command(subcommand)]
    Snapshot(SnapCmd),
    /// Content store.
    #[command(subcommand)]
    Content(ContentCmd),
    /// Leases.
    #[command(subcommand)]
    Lease(LeaseCmd),
    /// Networks: create, ls, inspect, rm.
    #[command(subcommand)]
    Network(networks::NetworkCmd),
    /// kurad's version and paths.
    Version,
}

#[derive(Subcommand)]
pub enum SnapCmd {
    /// A writable snapshot on top of PARENT (a committed snapshot, e.g. a chain ID); prints its mounts.
    Prepare {
        key: String,
        parent: Option<String>,
        #[arg(long, default_value = "")]
        snapshotter: String,
    },
    /// A read-only snapshot of PARENT; prints its mounts.
    View {
        key: String,
        parent: String,
        #[arg(long, default_value = "")]
        snapshotter: String,
    },
    /// Commit active snapshot KEY as NAME.
    Commit {
        name: String,
        key: String,
        #[arg(long, default_value = "")]
        snapshotter: String,
    },
    Ls {
        #[arg(long, default_value = "")]
        snapshotter: String,
    },
    Rm {
        key: String,
        #[arg(long, default_value = "")]
        snapshotter: String,
    },
    Usage {
        key: String,
        #[arg(long, default_value = "")]
        snapshotter: String,
    },
    Mounts {
        key: String,
        #[arg(long, default_value = "")]
        snapshotter: String,
    },
}

#[derive(Subcommand)]
pub enum ContentCmd {
    Ls,
    Rm { digest: String },
    Ingests,
}

#[derive(Subcommand)]
pub enum LeaseCmd {
    Ls,
    Create {
        #[arg(long, default_value = "")]
        id: String,
        #[arg(long, default_value_t = 0)]
        expire_seconds: i64,
    },
    Rm {
        id: String,
    },
}

/// A client connection carrying the namespace on every call.
#[derive(Clone)]
pub struct Client {
    ch: Channel,
    ns: String,
}

impl Client {
    pub async fn connect(address: &std::path::Path, ns: &str) -> Result<Client> {
        let path = address.to_path_buf();
        let ch = tonic::transport::Endpoint::try_from("http://kurad")?
            .connect_with_connector(tower::service_fn(move |_| {
                let p = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(p).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot connect to kurad at {}: {}",
                    address.display(),
                    crate::registry::error_chain(&e)
                )
            })?;
        Ok(Client {
            ch,
            ns: ns.to_string(),
        })
    }

    pub fn req<T>(&self, t: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(t);
        if let Ok(v) = self.ns.parse() {
            r.metadata_mut().insert(kura_proto::NAMESPACE_HEADER, v);
        }
        r
    }

    pub fn images(&self) -> pb::images_client::ImagesClient<Channel> {
        pb::images_client::ImagesClient::new(self.ch.clone()).max_decoding_message_size(64 << 20)
    }
    pub fn snapshots(&self) -> pb::snapshots_client::SnapshotsClient<Channel> {
        pb::snapshots_client::SnapshotsClient::new(self.ch.clone())
    }
    pub fn content(&self) -> pb::content_client::ContentClient<Channel> {
        pb::content_client::ContentClient::new(self.ch.clone())
    }
    pub fn leases(&self) -> pb::leases_client::LeasesClient<Channel> {
        pb::leases_client::LeasesClient::new(self.ch.clone())
    }
    pub fn gc(&self) -> pb::gc_client::GcClient<Channel> {
        pb::gc_client::GcClient::new(self.ch.clone())
    }
    pub fn containers(&self) -> pb::containers_client::ContainersClient<Channel> {
        pb::containers_client::ContainersClient::new(self.ch.clone())
    }
    pub fn tasks(&self) -> pb::tasks_client::TasksClient<Channel> {
        pb::tasks_client::TasksClient::new(self.ch.clone())
    }
    pub fn networks(&self) -> pb::networks_client::NetworksClient<Channel> {
        pb::networks_client::NetworksClient::new(self.ch.clone())
    }
    pub fn events(&self) -> pb::events_client::EventsClient<Channel> {
        pb::events_client::EventsClient::new(self.ch.clone())
    }
}

/// A gRPC status as a plain error: its message says what failed and where.
pub fn st(s: tonic::Status) -> anyhow::Error {
    if s.code() == tonic::Code::Unavailable {
        return anyhow!("kurad is not reachable: {}", s.message());
    }
    anyhow!("{}", s.message())
}

fn auth_for(
    reference_or_host: &str,
    reg: &RegistryFlags,
    is_host: bool,
) -> Result<Option<pb::RegistryAuth>> {
    if let Some(u) = &reg.user {
        let (user, pass) = match u.split_once(':') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (u.clone(), rpassword(&format!("Password for {u}: "))?),
        };
        return Ok(Some(pb::RegistryAuth {
            username: user,
            password: pass,
            ..Default::default()
        }));
    }
    let host = if is_host {
        reference_or_host.to_string()
    } else {
        crate::images::oci::Reference::parse(reference_or_host)?.domain
    };
    let a = crate::registry::creds::lookup(&crate::registry::creds::default_path(), &host)?;
    Ok(a.map(|a| pb::RegistryAuth {
        username: a.username,
        password: a.password,
        identity_token: a.identity_token,
        registry_token: a.registry_token,
    }))
}

fn rpassword(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    let mut s = String::new();
    std::io::stdin().read_line(&mut s)?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

pub fn human(n: i64) -> String {
    let n = n as f64;
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

fn short(d: &str) -> String {
    d.trim_start_matches("sha256:").chars().take(12).collect()
}

fn mount_key(target: &std::path::Path) -> String {
    let abs = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    format!(
        "mount-{}",
        &crate::content::sha256_digest(abs.as_os_str().as_encoded_bytes())[7..23]
    )
}

async fn containers_create(c: &Client, f: &containers::RunFlags) -> Result<pb::Container> {
    containers::create_only(c, f).await
}

pub async fn run(cli: Cli) -> Result<()> {
    // Commands that need no daemon.
    if let Cmd::Logout { host } = &cli.cmd {
        let p = crate::registry::creds::default_path();
        if crate::registry::creds::erase(&p, host)? {
            println!("Removed login credentials for {host}");
        } else {
            println!("Not logged in to {host}");
        }
        return Ok(());
    }
    let c = Client::connect(&cli.address, &cli.namespace).await?;
    match cli.cmd {
        Cmd::Run { detach, rm, flags } => containers::run(&c, flags, detach, rm).await?,
        Cmd::Create { flags } => {
            let opts_ok = flags.clone();
            let x = containers_create(&c, &opts_ok).await?;
            println!("{}", x.id);
        }
        Cmd::Start { attach, ids } => containers::start(&c, ids, attach).await?,
        Cmd::Ps { all, quiet, format } => {
            containers::ps(&c, all, quiet, format == Format::Json).await?
        }
        Cmd::Logs {
            follow,
            tail,
            timestamps,
            id,
        } => containers::logs(&c, &id, follow, tail, timestamps).await?,
        Cmd::Exec {
            interactive,
            tty,
            detach,
            env,
            workdir,
            user,
            id,
            cmd,
        } => containers::exec(&c, &id, cmd, interactive, tty, detach, env, workdir, user).await?,
        Cmd::Stop { time, ids } => {
            for id in ids {
                c.tasks()
                    .stop(c.req(pb::StopTaskRequest {
                        id: id.clone(),
                        timeout_seconds: time,
                    }))
                    .await
                    .map_err(st)?;
                println!("{id}");
            }
        }
        Cmd::Kill { signal, ids } => {
            let sig = crate::containers::signal_number(&signal)?;
            for id in ids {
                c.tasks()
                    .kill(c.req(pb::KillTaskRequest {
                        id: id.clone(),
                        signal: sig,
                        all: true,
                        exec_id: String::new(),
                    }))
                    .await
                    .map_err(st)?;
                println!("{id}");
            }
        }
        Cmd::Rm { force, ids } => {
            let mut failed = None;
            for id in ids {
                match c
                    .containers()
                    .delete(c.req(pb::DeleteContainerRequest {
                        id: id.clone(),
                        force,
                    }))
                    .await
                {
                    Ok(_) => println!("{id}"),
                    Err(e) => {
                        eprintln!("kura: {}", e.message());
                        failed = Some(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(st(e));
            }
        }
        Cmd::Pause { ids } => {
            for id in ids {
                c.tasks()
                    .pause(c.req(pb::ContainerRequest { id: id.clone() }))
                    .await
                    .map_err(st)?;
                println!("{id}");
            }
        }
        Cmd::Unpause { ids } => {
            for id in ids {
                c.tasks()
                    .resume(c.req(pb::ContainerRequest { id: id.clone() }))
                    .await
                    .map_err(st)?;
                println!("{id}");
            }
        }
        Cmd::Wait { ids } => {
            for id in ids {
                let e = c
                    .tasks()
                    .wait(c.req(pb::ContainerRequest { id }))
                    .await
                    .map_err(st)?
                    .into_inner();
                println!("{}", e.exit_status);
            }
        }
        Cmd::Top { id } => {
            let p = c
                .tasks()
                .pids(c.req(pb::ContainerRequest { id }))
                .await
                .map_err(st)?
                .into_inner();
            println!("{:<10} {:<16} CMD", "PID", "EXEC");
            for x in p.processes {
                println!("{:<10} {:<16} {}", x.pid, x.exec_id, x.command);
            }
        }
        Cmd::Stats { ids } => {
            println!(
                "{:<20} {:>14} {:>14} {:>14} {:>6}",
                "CONTAINER", "MEM USAGE", "MEM LIMIT", "CPU TIME", "PIDS"
            );
            for id in ids {
                let m = c
                    .tasks()
                    .metrics(c.req(pb::ContainerRequest { id: id.clone() }))
                    .await
                    .map_err(st)?
                    .into_inner();
                println!(
                    "{:<20} {:>14} {:>14} {:>13.2}s {:>6}",
                    id,
                    human(m.memory_usage_bytes as i64),
                    if m.memory_limit_bytes >= (1 << 62) {
                        "-".into()
                    } else {
                        human(m.memory_limit_bytes as i64)
                    },
                    m.cpu_usage_ns as f64 / 1e9,
                    m.pids_current
                );
            }
        }
        Cmd::Attach { id } => containers::start_attached(&c, &id).await?,
        Cmd::Events { filter } => containers::events(&c, filter).await?,
        Cmd::Pull {
            reference,
            platform,
            snapshotter,
            no_unpack,
            all_platforms,
            reg,
            quiet,
            format,
        } => {
            let req = pb::PullRequest {
                reference: reference.clone(),
                platform,
                snapshotter,
                no_unpack,
                plain_http: reg.plain_http,
                skip_verify: reg.skip_verify,
                auth: auth_for(&reference, &reg, false)?,
                labels: HashMap::new(),
                all_platforms,
            };
            let stream = c.images().pull(c.req(req)).await.map_err(st)?.into_inner();
            let done = progress::pull(stream, quiet || format == Format::Json).await?;
            let s = done.image.unwrap_or_default();
            let img = s.image.clone().unwrap_or_default();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&summary_json(&s))?),
                Format::Table if quiet => println!("{}", img.name),
                Format::Table => println!(
                    "{}: pulled {} ({}, {})",
                    img.name,
                    done.resolved_digest,
                    s.platform,
                    human(s.size)
                ),
            }
        }
        Cmd::Images {
            filter,
            quiet,
            format,
        } => {
            let l = c
                .images()
                .list(c.req(pb::ListImagesRequest { filters: filter }))
                .await
                .map_err(st)?
                .into_inner();
            if format == Format::Json {
                let v: Vec<_> = l.images.iter().map(summary_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if quiet {
                for i in &l.images {
                    println!(
                        "{}",
                        i.image.as_ref().map(|i| i.name.as_str()).unwrap_or("")
                    );
                }
            } else {
                println!(
                    "{:<50} {:<14} {:<14} {:>10} {:>10}",
                    "REF", "DIGEST", "PLATFORM", "SIZE", "UNPACKED"
                );
                for s in &l.images {
                    let i = s.image.clone().unwrap_or_default();
                    let d = i.target.map(|t| short(&t.digest)).unwrap_or_default();
                    let up = if s.unpacked {
                        human(s.unpacked_size)
                    } else {
                        "-".into()
                    };
                    println!(
                        "{:<50} {:<14} {:<14} {:>10} {:>10}",
                        i.name,
                        d,
                        s.platform,
                        human(s.size),
                        up
                    );
                }
            }
        }
        Cmd::Inspect { image, platform } => {
            // A container by that name first, as docker does; then an image.
            if platform.is_empty() {
                if let Ok(x) = c
                    .containers()
                    .get(c.req(pb::ContainerRequest { id: image.clone() }))
                    .await
                {
                    let x = x.into_inner();
                    let v = containers::container_json(&x);
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(());
                }
            }
            let r = c
                .images()
                .inspect(c.req(pb::InspectImageRequest {
                    name: image,
                    platform,
                    snapshotter: String::new(),
                }))
                .await
                .map_err(st)?
                .into_inner();
            let config: serde_json::Value = serde_json::from_slice(&r.config).unwrap_or_default();
            let manifest: serde_json::Value =
                serde_json::from_slice(&r.manifest_json).unwrap_or_default();
            let layers: Vec<_> = r
                .layers
                .iter()
                .map(|l| {
                    let d = l.descriptor.clone().unwrap_or_default();
                    serde_json::json!({"digest": d.digest, "mediaType": d.media_type, "size": d.size, "diffID": l.diff_id,
                        "chainID": l.chain_id, "unpacked": l.unpacked, "unpackedSize": l.unpacked_size})
                })
                .collect();
            let index: Vec<_> = r
                .index_manifests
                .iter()
                .map(|d| serde_json::json!({"digest": d.digest, "platform": d.platform.as_ref().map(|p| format!("{}/{}{}", p.os, p.architecture, if p.variant.is_empty() { String::new() } else { format!("/{}", p.variant) }))}))
                .collect();
            let s = r.summary.clone().unwrap_or_default();
            let out = serde_json::json!({
                "image": summary_json(&s),
                "manifestDigest": r.manifest.map(|m| m.digest),
                "chainID": r.chain_id,
                "index": index,
                "layers": layers,
                "manifest": manifest,
                "config": config,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Cmd::Tag {
            source,
            target,
            force,
        } => {
            let i = c
                .images()
                .tag(c.req(pb::TagImageRequest {
                    source,
                    target,
                    force,
                }))
                .await
                .map_err(st)?
                .into_inner();
            println!("{}", i.name);
        }
        Cmd::Rmi {
            images,
            ignore_missing,
            quiet,
        } => {
            let r = c
                .images()
                .remove(c.req(pb::RemoveImageRequest {
                    names: images,
                    ignore_missing,
                    no_gc: false,
                }))
                .await
                .map_err(st)?
                .into_inner();
            for n in &r.removed {
                println!("Untagged: {n}");
            }
            if let (Some(gc), false) = (r.gc, quiet) {
                print_gc(&gc);
            }
        }
        Cmd::Label { image, labels } => {
            let mut m = HashMap::new();
            for l in labels {
                let (k, v) = l
                    .split_once('=')
                    .with_context(|| format!("label {l:?}: want key=value (key= removes)"))?;
                m.insert(k.to_string(), v.to_string());
            }
            let i = c
                .images()
                .set_labels(c.req(pb::SetImageLabelsRequest {
                    name: image,
                    labels: m,
                    replace: false,
                }))
                .await
                .map_err(st)?
                .into_inner();
            println!("{}", serde_json::to_string_pretty(&i.labels)?);
        }
        Cmd::Push {
            image,
            destination,
            platform,
            reg,
            quiet,
        } => {
            let dest = destination.unwrap_or_default();
            let refname = if dest.is_empty() {
                image.clone()
            } else {
                dest.clone()
            };
            let req = pb::PushRequest {
                name: image,
                reference: dest,
                plain_http: reg.plain_http,
                skip_verify: reg.skip_verify,
                auth: auth_for(&refname, &reg, false)?,
                platform,
            };
            let stream = c.images().push(c.req(req)).await.map_err(st)?.into_inner();
            let d = progress::push(stream, quiet).await?;
            println!(
                "{}: pushed {d}",
                crate::images::oci::normalize_name(&refname)
            );
        }
        Cmd::Save {
            images,
            output,
            platform,
        } => {
            let mut s = c
                .images()
                .save(c.req(pb::SaveRequest {
                    names: images,
                    platform,
                }))
                .await
                .map_err(st)?
                .into_inner();
            if output.as_os_str() == "-" {
                use tokio::io::AsyncWriteExt;
                let mut out = tokio::io::stdout();
                while let Some(ch) = s.message().await.map_err(st)? {
                    out.write_all(&ch.data).await?;
                }
                out.flush().await?;
                return Ok(());
            }
            let tmp = output.with_extension("partial");
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .with_context(|| format!("create {}", tmp.display()))?;
            use tokio::io::AsyncWriteExt;
            let res: Result<()> = async {
                while let Some(ch) = s.message().await.map_err(st)? {
                    f.write_all(&ch.data).await?;
                }
                f.flush().await?;
                Ok(())
            }
            .await;
            if let Err(e) = res {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, &output)?;
        }
        Cmd::Load {
            input,
            name,
            no_unpack,
            snapshotter,
        } => {
            let f: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if input.as_os_str() == "-" {
                Box::new(tokio::io::stdin())
            } else {
                Box::new(
                    tokio::fs::File::open(&input)
                        .await
                        .with_context(|| format!("open {}", input.display()))?,
                )
            };
            let first = pb::LoadRequest {
                data: vec![],
                snapshotter,
                no_unpack,
                name,
            };
            let chunks = tokio_util_like(f);
            let s = tokio_stream::StreamExt::chain(tokio_stream::once(first), chunks);
            let r = c.images().load(c.req(s)).await.map_err(st)?.into_inner();
            for i in r.images {
                println!("Loaded image: {}", i.name);
            }
        }
        Cmd::Unpack {
            image,
            platform,
            snapshotter,
        } => {
            let r = c
                .images()
                .unpack(c.req(pb::UnpackRequest {
                    name: image,
                    platform,
                    snapshotter,
                }))
                .await
                .map_err(st)?
                .into_inner();
            println!("{}", r.chain_id);
        }
        Cmd::Login {
            host,
            username,
            password,
            password_stdin,
            plain_http,
            skip_verify,
        } => {
            let user = match username {
                Some(u) => u,
                None => rpassword("Username: ")?,
            };
            let pass = match (password, password_stdin) {
                (Some(p), _) => p,
                (None, true) => {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                    s.trim_end_matches(['\n', '\r']).to_string()
                }
                (None, false) => rpassword("Password: ")?,
            };
            let auth = pb::RegistryAuth {
                username: user.clone(),
                password: pass.clone(),
                ..Default::default()
            };
            let r = pb::registry_client::RegistryClient::new(c.ch.clone())
                .login(c.req(pb::LoginRequest {
                    host: host.clone(),
                    auth: Some(auth),
                    plain_http,
                    skip_verify,
                }))
                .await
                .map_err(st)?
                .into_inner();
            let a = crate::registry::Auth {
                username: user,
                password: pass,
                identity_token: r.identity_token,
                ..Default::default()
            };
            let p = crate::registry::creds::default_path();
            crate::registry::creds::store(&p, &host, &a)?;
            println!("{} (credentials in {})", r.status, p.display());
        }
        Cmd::Logout { .. } => unreachable!(),
        Cmd::Prune { quiet } => {
            let r = c
                .gc()
                .prune(c.req(pb::Empty {}))
                .await
                .map_err(st)?
                .into_inner();
            if !quiet {
                print_gc(&r);
            }
        }
        Cmd::Refs { object } => {
            let obj = if object.starts_with("sha256:") {
                format!("content/{object}")
            } else if object.starts_with("content/")
                || object.starts_with("snapshots/")
                || object.starts_with("image/")
            {
                object.clone()
            } else {
                format!("image/{}", crate::images::oci::normalize_name(&object))
            };
            let r = c
                .gc()
                .references(c.req(pb::ReferencesRequest {
                    object: obj.clone(),
                }))
                .await
                .map_err(st)?
                .into_inner();
            if !r.exists {
                bail!("{obj} not found in namespace {}", cli.namespace);
            }
            if r.chains.is_empty() {
                println!("{obj}: nothing references it (the next GC removes it)");
            }
            for ch in r.chains {
                println!("{}", ch.path.join(" -> "));
            }
        }
        Cmd::Mount {
            image,
            target,
            snapshotter,
            platform,
        } => {
            let r = c
                .images()
                .inspect(c.req(pb::InspectImageRequest {
                    name: image.clone(),
                    platform: platform.clone(),
                    snapshotter: snapshotter.clone(),
                }))
                .await
                .map_err(st)?
                .into_inner();
            if !r.layers.iter().all(|l| l.unpacked) {
                c.images()
                    .unpack(c.req(pb::UnpackRequest {
                        name: image,
                        platform,
                        snapshotter: snapshotter.clone(),
                    }))
                    .await
                    .map_err(st)?;
            }
            let key = mount_key(&target);
            let m = c
                .snapshots()
                .view(c.req(pb::PrepareSnapshotRequest {
                    snapshotter,
                    key: key.clone(),
                    parent: r.chain_id,
                    labels: HashMap::new(),
                    lease: String::new(),
                }))
                .await
                .map_err(st)?
                .into_inner();
            for m in m.mounts {
                let mm = crate::snapshots::Mount {
                    r#type: m.r#type,
                    source: m.source,
                    options: m.options,
                };
                mm.mount(&target)?;
            }
        }
        Cmd::Unmount {
            target,
            snapshotter,
        } => {
            let key = mount_key(&target);
            let t = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())?;
            if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    bail!("unmount {}: {e}", target.display());
                }
            }
            c.snapshots()
                .remove(c.req(pb::SnapshotKeyRequest { snapshotter, key }))
                .await
                .map_err(st)?;
        }
        Cmd::Snapshot(sc) => match sc {
            SnapCmd::Prepare {
                key,
                parent,
                snapshotter,
            } => {
                let req = pb::PrepareSnapshotRequest {
                    snapshotter,
                    key,
                    parent: parent.unwrap_or_default(),
                    labels: HashMap::new(),
                    lease: String::new(),
                };
                let m = c
                    .snapshots()
                    .prepare(c.req(req))
                    .await
                    .map_err(st)?
                    .into_inner();
                print_mounts(&m);
            }
            SnapCmd::View {
                key,
                parent,
                snapshotter,
            } => {
                let req = pb::PrepareSnapshotRequest {
                    snapshotter,
                    key,
                    parent,
                    labels: HashMap::new(),
                    lease: String::new(),
                };
                let m = c
                    .snapshots()
                    .view(c.req(req))
                    .await
                    .map_err(st)?
                    .into_inner();
                print_mounts(&m);
            }
            SnapCmd::Commit {
                name,
                key,
                snapshotter,
            } => {
                c.snapshots()
                    .commit(c.req(pb::CommitSnapshotRequest {
                        snapshotter,
                        name,
                        key,
                        labels: HashMap::new(),
                    }))
                    .await
                    .map_err(st)?;
            }
            SnapCmd::Ls { snapshotter } => {
                let l = c
                    .snapshots()
                    .list(c.req(pb::ListSnapshotsRequest { snapshotter }))
                    .await
                    .map_err(st)?
                    .into_inner();
                println!("{:<80} {:<80} {:<10}", "KEY", "PARENT", "KIND");
                for s in l.snapshots {
                    println!("{:<80} {:<80} {:<10}", s.name, s.parent, s.kind);
                }
            }
            SnapCmd::Rm { key, snapshotter } => {
                c.snapshots()
                    .remove(c.req(pb::SnapshotKeyRequest { snapshotter, key }))
                    .await
                    .map_err(st)?;
            }
            SnapCmd::Usage { key, snapshotter } => {
                let u = c
                    .snapshots()
                    .usage(c.req(pb::SnapshotKeyRequest { snapshotter, key }))
                    .await
                    .map_err(st)?
                    .into_inner();
                println!("{} ({} inodes)", human(u.size), u.inodes);
            }
            SnapCmd::Mounts { key, snapshotter } => {
                let m = c
                    .snapshots()
                    .mounts(c.req(pb::SnapshotKeyRequest { snapshotter, key }))
                    .await
                    .map_err(st)?
                    .into_inner();
                print_mounts(&m);
            }
        },
        Cmd::Content(cc) => match cc {
            ContentCmd::Ls => {
                let l = c
                    .content()
                    .list(c.req(pb::ListContentRequest {}))
                    .await
                    .map_err(st)?
                    .into_inner();
                for i in l.content {
                    println!("{} {:>10}", i.digest, human(i.size));
                }
            }
            ContentCmd::Rm { digest } => {
                c.content()
                    .delete(c.req(pb::DeleteContentRequest { digest }))
                    .await
                    .map_err(st)?;
            }
            ContentCmd::Ingests => {
                let l = c
                    .content()
                    .list_ingests(c.req(pb::Empty {}))
                    .await
                    .map_err(st)?
                    .into_inner();
                for i in l.ingests {
                    println!("{} {}/{}", i.r#ref, i.offset, i.total);
                }
            }
        },
        Cmd::Network(nc) => networks::run(&c, nc).await?,
        Cmd::Lease(lc) => match lc {
            LeaseCmd::Ls => {
                let l = c
                    .leases()
                    .list(c.req(pb::Empty {}))
                    .await
                    .map_err(st)?
                    .into_inner();
                for l in l.leases {
                    let res: Vec<String> = l
                        .resources
                        .iter()
                        .map(|r| format!("{}/{}", r.r#type, r.id))
                        .collect();
                    println!("{} expires={} {}", l.id, l.expires_at, res.join(" "));
                }
            }
            LeaseCmd::Create { id, expire_seconds } => {
                let l = c
                    .leases()
                    .create(c.req(pb::CreateLeaseRequest {
                        id,
                        labels: HashMap::new(),
                        expire_seconds,
                    }))
                    .await
                    .map_err(st)?
                    .into_inner();
                println!("{}", l.id);
            }
            LeaseCmd::Rm { id } => {
                c.leases()
                    .delete(c.req(pb::DeleteLeaseRequest { id, sync: true }))
                    .await
                    .map_err(st)?;
            }
        },
        Cmd::Version => {
            let v = pb::version_client::VersionClient::new(c.ch.clone())
                .version(c.req(pb::Empty {}))
                .await
                .map_err(st)?
                .into_inner();
            println!(
                "kura {} (client)\nkurad {} root={} state={} snapshotter={}",
                env!("CARGO_PKG_VERSION"),
                v.version,
                v.root,
                v.state,
                v.default_snapshotter
            );
        }
    }
    Ok(())
}

fn print_mounts(m: &pb::MountsResponse) {
    for m in &m.mounts {
        println!(
            "mount -t {} {} -o {}",
            m.r#type,
            m.source,
            m.options.join(",")
        );
    }
}

fn print_gc(gc: &pb::GcResult) {
    for d in &gc.removed_content {
        println!("Deleted content: {d}");
    }
    for s in &gc.removed_snapshots {
        println!("Deleted snapshot: {s}");
    }
    println!("Reclaimed {}", human(gc.reclaimed_bytes));
}

fn summary_json(s: &pb::ImageSummary) -> serde_json::Value {
    let i = s.image.clone().unwrap_or_default();
    let t = i.target.unwrap_or_default();
    serde_json::json!({
        "name": i.name, "digest": t.digest, "mediaType": t.media_type, "platform": s.platform,
        "size": s.size, "unpacked": s.unpacked, "unpackedSize": s.unpacked_size, "labels": i.labels,
        "createdAt": i.created_at,
    })
}

fn tokio_util_like(
    f: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
) -> impl tokio_stream::Stream<Item = pb::LoadRequest> {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(f, |mut f| async move {
        let mut buf = vec![0u8; 1 << 18];
        match f.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    pb::LoadRequest {
                        data: buf,
                        ..Default::default()
                    },
                    f,
                ))
            }
        }
    })
}
