//! `kura run/create/start/ps/logs/exec/stop/kill/rm/pause/unpause/wait/top/stats/
//! attach/events`. Stdio goes through FIFOs in the container's bundle that the CLI
//! opens itself (kurad and the CLI share the host, as containerd and ctr do).

use super::{auth_for, progress, st, Client, RegistryFlags};
use crate::containers::options::{self, Network, RunOptions};
use anyhow::{bail, Context, Result};
use kura_proto::v1 as pb;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

/// An exit code to leave with, without a message (the container's own, or 127/126).
#[derive(Debug)]
pub struct ExitCode(pub i32);

impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}
impl std::error::Error for ExitCode {}

#[derive(clap::Args, Clone, Default)]
pub struct RunFlags {
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Name of the container (default: a random id).
    #[arg(long)]
    pub name: Option<String>,
    /// KEY=VALUE (or KEY to take it from this environment).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// A file of KEY=VALUE lines.
    #[arg(long)]
    pub env_file: Vec<std::path::PathBuf>,
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// user[:group] (names from the image's /etc/passwd, or numbers).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// SRC:DST[:ro]
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// type=bind|tmpfs,source=..,target=..[,readonly]
    #[arg(long)]
    pub mount: Vec<String>,
    /// DST[:options]
    #[arg(long)]
    pub tmpfs: Vec<String>,
    #[arg(long)]
    pub read_only: bool,
    /// Memory limit (512m, 1g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    #[arg(long)]
    pub cpus: Option<f64>,
    #[arg(long)]
    pub pids_limit: Option<i64>,
    #[arg(long)]
    pub cap_add: Vec<String>,
    #[arg(long)]
    pub cap_drop: Vec<String>,
    #[arg(long)]
    pub privileged: bool,
    /// seccomp=unconfined|FILE, no-new-privileges
    #[arg(long)]
    pub security_opt: Vec<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Replace the image's entrypoint ("" clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// no | always | on-failure[:N] | unless-stopped
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// A network's name (default: the `kura` bridge), none, host or container:ID.
    #[arg(long, default_value = "kura")]
    pub network: String,
    /// Publish a port: [IP:]HOST:CONTAINER[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// A fixed IPv4 address on the network.
    #[arg(long)]
    pub ip: Option<String>,
    /// Nameservers for /etc/resolv.conf.
    #[arg(long)]
    pub dns: Vec<String>,
    /// NAME:IP lines for /etc/hosts.
    #[arg(long)]
    pub add_host: Vec<String>,
    /// An OCI runtime: kura (default), runc, crun or a path.
    #[arg(long, default_value = "")]
    pub runtime: String,
    /// KEY=VALUE labels.
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    #[arg(long, default_value = "")]
    pub platform: String,
    pub image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

fn env_value(kv: &str) -> Option<String> {
    if kv.contains('=') {
        Some(kv.to_string())
    } else {
        std::env::var(kv).ok().map(|v| format!("{kv}={v}"))
    }
}

impl RunFlags {
    fn options(&self, attach: bool, auto_remove: bool) -> Result<RunOptions> {
        let mut o = RunOptions {
            cmd: self.cmd.clone(),
            entrypoint: self.entrypoint.as_ref().map(|e| {
                if e.is_empty() {
                    vec![]
                } else {
                    vec![e.clone()]
                }
            }),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            tty: self.tty,
            stdin: self.interactive,
            attach,
            read_only: self.read_only,
            memory: self
                .memory
                .as_deref()
                .map(options::parse_bytes)
                .transpose()?,
            cpus: self.cpus,
            pids_limit: self.pids_limit,
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            privileged: self.privileged,
            security_opt: self.security_opt.clone(),
            hostname: self.hostname.clone(),
            network: Network::parse(&self.network)?,
            dns: self.dns.clone(),
            add_hosts: self.add_host.clone(),
            ports: self
                .publish
                .iter()
                .map(|p| options::PortMap::parse(p))
                .collect::<Result<_>>()?,
            ip: self.ip.clone(),
            auto_remove,
            ..Default::default()
        };
        for f in &self.env_file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("--env-file {}", f.display()))?;
            for l in text.lines().map(str::trim) {
                if !l.is_empty() && !l.starts_with('#') {
                    o.env.extend(env_value(l));
                }
            }
        }
        for e in &self.env {
            o.env.extend(env_value(e));
        }
        for v in &self.volumes {
            o.binds.push(options::parse_bind(v)?);
        }
        for m in &self.mount {
            options::parse_mount(m, &mut o)?;
        }
        for t in &self.tmpfs {
            let (d, opts) = t.split_once(':').unwrap_or((t, ""));
            if !d.starts_with('/') {
                bail!("--tmpfs {t:?}: the destination must be an absolute path");
            }
            o.tmpfs.push(options::Tmpfs {
                destination: d.into(),
                options: opts.into(),
            });
        }
        Restart::check(&self.restart)?;
        Ok(o)
    }
}

struct Restart;
impl Restart {
    fn check(s: &str) -> Result<()> {
        options::Restart::parse(s).map(|_| ())
    }
}

/// Creates the container, pulling its image first if it is not there.
async fn create(c: &Client, f: &RunFlags, attach: bool, rm: bool) -> Result<pb::Container> {
    let opts = f.options(attach, rm)?;
    let req = pb::CreateContainerRequest {
        id: f.name.clone().unwrap_or_default(),
        image: f.image.clone(),
        options_json: serde_json::to_string(&opts)?,
        restart: f.restart.clone(),
        runtime: f.runtime.clone(),
        labels: f
            .labels
            .iter()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        platform: f.platform.clone(),
    };
    match c.containers().create(c.req(req.clone())).await {
        Ok(r) => Ok(r.into_inner()),
        Err(s) if s.code() == tonic::Code::NotFound && s.message().contains("image") => {
            eprintln!("Unable to find image '{}' locally", f.image);
            let preq = pb::PullRequest {
                reference: f.image.clone(),
                platform: f.platform.clone(),
                auth: auth_for(&f.image, &RegistryFlags::default(), false)?,
                ..Default::default()
            };
            let stream = c.images().pull(c.req(preq)).await.map_err(st)?.into_inner();
            progress::pull(stream, false).await?;
            Ok(c.containers()
                .create(c.req(req))
                .await
                .map_err(st)?
                .into_inner())
        }
        Err(s) => Err(st(s)),
    }
}

/// A task's start error as docker reports it: 127 for a command not in the image.
fn start_error(s: tonic::Status) -> anyhow::Error {
    if s.code() == tonic::Code::FailedPrecondition {
        eprintln!("kura: {}", s.message());
        return ExitCode(127).into();
    }
    st(s)
}

/// Read-only and non-blocking: the open does not wait for the shim, which opens its
/// end only when the task is created. Linux reports POLLHUP on such a reader only
/// after a writer has come and gone, so the copy ends exactly when the shim has
/// passed on everything and closed its end.
fn open_fifo_read(p: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .with_context(|| format!("open {p}"))
}

type Exited = std::sync::Arc<std::sync::atomic::AtomicBool>;

fn copy_out(
    mut from: std::fs::File,
    to_stderr: bool,
    exited: Exited,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 32 * 1024];
        let mut quiet = 0;
        loop {
            let mut p = libc::pollfd {
                fd: from.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            if unsafe { libc::poll(&mut p, 1, 50) } <= 0 {
                // The shim normally closes its end at once; this bounds the wait when
                // it cannot (a process the container left behind holds the pipe).
                if exited.load(std::sync::atomic::Ordering::SeqCst) {
                    quiet += 1;
                    if quiet >= 40 {
                        return;
                    }
                }
                continue;
            }
            quiet = 0;
            match from.read(&mut buf) {
                Ok(0) => {
                    if p.revents & libc::POLLHUP != 0 {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
                Ok(n) => {
                    let r = if to_stderr {
                        let mut e = std::io::stderr();
                        e.write_all(&buf[..n]).and_then(|_| e.flush())
                    } else {
                        let mut o = std::io::stdout();
                        o.write_all(&buf[..n]).and_then(|_| o.flush())
                    };
                    if r.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Raw mode on our terminal while attached with a tty; restored on drop.
struct RawTty(Option<nix::sys::termios::Termios>);

impl RawTty {
    fn enter(tty: bool) -> RawTty {
        use nix::sys::termios;
        if !tty || unsafe { libc::isatty(0) } != 1 {
            return RawTty(None);
        }
        let stdin = std::io::stdin();
        let Ok(orig) = termios::tcgetattr(&stdin) else {
            return RawTty(None);
        };
        let mut raw = orig.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        RawTty(Some(orig))
    }
}

impl Drop for RawTty {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

fn winsize() -> Option<(u32, u32)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    (unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0)
        .then_some((ws.ws_col as u32, ws.ws_row as u32))
}

/// Attached stdio of a process: copies until it exits, forwards resizes. Returns the
/// output threads, to be joined after the exit.
struct Attached {
    outs: Vec<std::thread::JoinHandle<()>>,
    /// Tells the stdin thread the process exists, so a CloseStdin can reach it.
    started: Option<std::sync::mpsc::Sender<()>>,
    exited: Exited,
    _raw: RawTty,
}

/// Our terminal's size for a process's new pty, (0, 0) when there is none to copy.
fn console_size(tty: bool) -> (u32, u32) {
    match tty.then(winsize).flatten() {
        Some((w, h)) => (w, h),
        None => (0, 0),
    }
}

/// Gives the process's pty our terminal's size.
async fn resize(c: Client, id: String, exec_id: String) {
    if let Some((w, h)) = winsize() {
        let _ = c
            .tasks()
            .resize_pty(c.req(pb::ResizePtyRequest {
                id,
                exec_id,
                width: w,
                height: h,
            }))
            .await;
    }
}

async fn attach(
    c: &Client,
    id: &str,
    exec_id: &str,
    paths: [&str; 3],
    tty: bool,
    running: bool,
) -> Result<Attached> {
    let [sin, sout, serr] = paths;
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    if running {
        let _ = started_tx.send(());
    }
    let mut outs = Vec::new();
    let exited = Exited::default();
    if !sout.is_empty() {
        outs.push(copy_out(open_fifo_read(sout)?, false, exited.clone()));
    }
    if !serr.is_empty() {
        outs.push(copy_out(open_fifo_read(serr)?, true, exited.clone()));
    }
    let raw = RawTty::enter(tty);
    if !sin.is_empty() {
        // Read-write: never blocks, whether or not the shim has opened its end yet.
        let mut w = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(sin)
            .with_context(|| format!("open {sin}"))?;
        let c2 = c.clone();
        let (id2, ex2) = (id.to_string(), exec_id.to_string());
        let h = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if w.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            // EOF on our stdin: the process sees EOF too, once it exists (input read
            // before the start waits in the FIFO). No start, no close.
            if started_rx.recv().is_err() {
                return;
            }
            let _ = h.block_on(c2.tasks().close_stdin(c2.req(pb::ExecIdRequest {
                id: id2,
                exec_id: ex2,
            })));
        });
    }
    if tty && raw.0.is_some() {
        if running {
            resize(c.clone(), id.to_string(), exec_id.to_string()).await;
        }
        let c2 = c.clone();
        let (id2, ex2) = (id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            let Ok(mut sig) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while sig.recv().await.is_some() {
                resize(c2.clone(), id2.clone(), ex2.clone()).await;
            }
        });
    }
    Ok(Attached {
        outs,
        started: (!running).then_some(started_tx),
        exited,
        _raw: raw,
    })
}

impl Attached {
    fn started(&mut self) {
        if let Some(tx) = self.started.take() {
            let _ = tx.send(());
        }
    }

    /// After the exit: the rest of the output, until the FIFOs are quiet.
    fn finish(self) {
        self.exited.store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        for h in self.outs {
            while !h.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

async fn wait_exit(c: &Client, id: &str) -> Result<i32> {
    let e = c
        .tasks()
        .wait(c.req(pb::ContainerRequest { id: id.into() }))
        .await
        .map_err(st)?
        .into_inner();
    Ok(e.exit_status as i32)
}

pub async fn run(c: &Client, f: RunFlags, detach: bool, rm: bool) -> Result<()> {
    if detach && rm && f.restart != "no" {
        bail!("--rm and --restart cannot be used together");
    }
    let ctr = create(c, &f, !detach, rm).await?;
    let id = ctr.id.clone();
    if detach {
        c.tasks()
            .start(c.req(pb::StartTaskRequest {
                id: id.clone(),
                ..Default::default()
            }))
            .await
            .map_err(start_error)?;
        println!("{id}");
        return Ok(());
    }
    let stdin_path = if f.interactive {
        ctr.stdin_path.as_str()
    } else {
        ""
    };
    let mut att = attach(
        c,
        &id,
        "",
        [stdin_path, &ctr.stdout_path, &ctr.stderr_path],
        f.tty,
        false,
    )
    .await?;
    let (console_width, console_height) = console_size(f.tty);
    if let Err(e) = c
        .tasks()
        .start(c.req(pb::StartTaskRequest {
            id: id.clone(),
            console_width,
            console_height,
        }))
        .await
    {
        drop(att);
        if rm {
            let _ = c
                .containers()
                .delete(c.req(pb::DeleteContainerRequest {
                    id: id.clone(),
                    force: true,
                }))
                .await;
        }
        return Err(start_error(e));
    }
    att.started();
    let code = wait_exit(c, &id).await?;
    att.finish();
    if code != 0 {
        return Err(ExitCode(code).into());
    }
    Ok(())
}

/// `kura create`: the container's output goes to its log; `start -a` attaches.
pub async fn create_only(c: &Client, f: &RunFlags) -> Result<pb::Container> {
    create(c, f, true, false).await
}

/// `kura attach`: the output of a running container started with a client attached
/// (FIFOs exist only then), until it exits.
pub async fn start_attached(c: &Client, id: &str) -> Result<()> {
    let ctr = c
        .containers()
        .get(c.req(pb::ContainerRequest { id: id.into() }))
        .await
        .map_err(st)?
        .into_inner();
    if ctr.status != "running" {
        bail!("container {id} is not running");
    }
    if ctr.stdout_path.is_empty() {
        bail!("container {id} was started detached: its output is in `kura logs {id}`");
    }
    let att = attach(
        c,
        id,
        "",
        [&ctr.stdin_path, &ctr.stdout_path, &ctr.stderr_path],
        ctr.tty,
        true,
    )
    .await?;
    let code = wait_exit(c, id).await?;
    att.finish();
    if code != 0 {
        return Err(ExitCode(code).into());
    }
    Ok(())
}

pub async fn start(c: &Client, ids: Vec<String>, attach_out: bool) -> Result<()> {
    for id in ids {
        let ctr = c
            .containers()
            .get(c.req(pb::ContainerRequest { id: id.clone() }))
            .await
            .map_err(st)?
            .into_inner();
        let att = if attach_out {
            Some(
                attach(
                    c,
                    &id,
                    "",
                    ["", &ctr.stdout_path, &ctr.stderr_path],
                    ctr.tty,
                    false,
                )
                .await?,
            )
        } else {
            None
        };
        let (console_width, console_height) = console_size(attach_out && ctr.tty);
        c.tasks()
            .start(c.req(pb::StartTaskRequest {
                id: id.clone(),
                console_width,
                console_height,
            }))
            .await
            .map_err(start_error)?;
        match att {
            Some(a) => {
                let code = wait_exit(c, &id).await?;
                a.finish();
                if code != 0 {
                    return Err(ExitCode(code).into());
                }
            }
            None => println!("{id}"),
        }
    }
    Ok(())
}

/// How long since `secs`, as docker words it ("5 seconds", "3 minutes").
fn since(secs: i64) -> String {
    let d = (crate::metadata::now() - secs).max(0);
    match d {
        d if d < 60 => format!("{d} seconds"),
        d if d < 3600 => format!("{} minutes", d / 60),
        d if d < 86400 => format!("{} hours", d / 3600),
        d => format!("{} days", d / 86400),
    }
}

pub fn status_line(x: &pb::Container) -> String {
    match x.status.as_str() {
        "running" => format!("Up {}", since(x.started_at)),
        "paused" => format!("Up {} (Paused)", since(x.started_at)),
        "created" => "Created".into(),
        _ if x.started_at == 0 => "Created".into(),
        _ => format!(
            "Exited ({}) {} ago",
            x.exit_code,
            since(x.exited_at_ns / 1_000_000_000)
        ),
    }
}

pub async fn ps(c: &Client, all: bool, quiet: bool, json: bool) -> Result<()> {
    let list = c
        .containers()
        .list(c.req(pb::ListContainersRequest { all }))
        .await
        .map_err(st)?
        .into_inner()
        .containers;
    if json {
        let v: Vec<serde_json::Value> = list.iter().map(container_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if quiet {
        for x in &list {
            println!("{}", x.id);
        }
        return Ok(());
    }
    println!(
        "{:<20} {:<28} {:<24} {:<28} {:<8} PORTS",
        "CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "PID"
    );
    for x in &list {
        let mut cmd = x.command.clone();
        if cmd.chars().count() > 22 {
            cmd = cmd.chars().take(21).chain(['…']).collect();
        }
        println!(
            "{:<20} {:<28} {:<24} {:<28} {:<8} {}",
            x.id,
            x.image,
            format!("\"{cmd}\""),
            status_line(x),
            if x.pid > 0 {
                x.pid.to_string()
            } else {
                "-".into()
            },
            x.ports.join(", ")
        );
    }
    Ok(())
}

pub fn container_json(x: &pb::Container) -> serde_json::Value {
    serde_json::json!({
        "Id": x.id,
        "Image": x.image,
        "ImageDigest": x.image_digest,
        "Command": x.command,
        "State": {
            "Status": x.status,
            "Running": x.status == "running",
            "Paused": x.status == "paused",
            "Pid": x.pid,
            "ExitCode": x.exit_code,
            "StartedAt": x.started_at,
            "FinishedAtNs": x.exited_at_ns,
        },
        "Created": x.created_at,
        "RestartPolicy": x.restart,
        "RestartCount": x.restart_count,
        "Runtime": x.runtime,
        "Bundle": x.bundle,
        "LogPath": x.log_path,
        "SnapshotKey": x.snapshot_key,
        "Labels": x.labels,
        "NetworkSettings": {
            "Network": x.network,
            "IPAddress": x.ip_address,
            "Gateway": x.gateway,
            "MacAddress": x.mac_address,
            "Ports": x.ports,
        },
        "Options": serde_json::from_str::<serde_json::Value>(&x.options_json).unwrap_or_default(),
        "Spec": serde_json::from_str::<serde_json::Value>(&x.spec_json).unwrap_or_default(),
    })
}

/// One CRI log line: `TIMESTAMP STREAM P|F TEXT`.
fn cri_line(l: &str) -> Option<(&str, &str, bool, &str)> {
    let mut it = l.splitn(4, ' ');
    let ts = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let text = it.next().unwrap_or("");
    Some((ts, stream, tag == "F", text))
}

pub async fn logs(
    c: &Client,
    id: &str,
    follow: bool,
    tail: Option<usize>,
    timestamps: bool,
) -> Result<()> {
    let ctr = c
        .containers()
        .get(c.req(pb::ContainerRequest { id: id.into() }))
        .await
        .map_err(st)?
        .into_inner();
    let path = ctr.log_path.clone();
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !follow => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("open log {path}")),
    };
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    let mut lines: Vec<&str> = text.lines().collect();
    if !text.ends_with('\n') && !lines.is_empty() {
        // A partial last line is read again when following.
        lines.pop();
    }
    let mut consumed: usize = lines.iter().map(|l| l.len() + 1).sum();
    if let Some(n) = tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let print = |ls: &[&str]| {
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        for l in ls {
            if let Some((ts, stream, full, t)) = cri_line(l) {
                let s = if timestamps {
                    format!("{ts} {t}")
                } else {
                    t.to_string()
                };
                let w: &mut dyn Write = if stream == "stderr" {
                    &mut err
                } else {
                    &mut out
                };
                let _ = if full {
                    writeln!(w, "{s}")
                } else {
                    write!(w, "{s}")
                };
            }
        }
        let _ = out.flush();
    };
    print(&lines);
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let data = std::fs::read(&path).unwrap_or_default();
        if data.len() > consumed {
            let new = String::from_utf8_lossy(&data[consumed..]).into_owned();
            let complete = match new.rfind('\n') {
                Some(i) => &new[..=i],
                None => "",
            };
            consumed += complete.len();
            let ls: Vec<&str> = complete.lines().collect();
            print(&ls);
        }
        let st = c
            .containers()
            .get(c.req(pb::ContainerRequest { id: id.into() }))
            .await;
        match st {
            Ok(x) if x.get_ref().status == "running" || x.get_ref().status == "paused" => {}
            _ => {
                // One last read after the exit, then stop following.
                let data = std::fs::read(&path).unwrap_or_default();
                if data.len() > consumed {
                    let new = String::from_utf8_lossy(&data[consumed..]).into_owned();
                    let ls: Vec<&str> = new.lines().collect();
                    print(&ls);
                }
                return Ok(());
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn exec(
    c: &Client,
    id: &str,
    args: Vec<String>,
    interactive: bool,
    tty: bool,
    detach: bool,
    env: Vec<String>,
    workdir: String,
    user: String,
) -> Result<()> {
    let r = c
        .tasks()
        .exec(c.req(pb::ExecRequest {
            id: id.into(),
            args,
            env: env.iter().filter_map(|e| env_value(e)).collect(),
            workdir,
            user,
            tty,
            stdin: interactive && !detach,
            console_width: console_size(tty && !detach).0,
            console_height: console_size(tty && !detach).1,
        }))
        .await
        .map_err(start_error)?
        .into_inner();
    if detach {
        return Ok(());
    }
    let att = attach(
        c,
        id,
        &r.exec_id,
        [&r.stdin_path, &r.stdout_path, &r.stderr_path],
        tty,
        true,
    )
    .await?;
    let e = c
        .tasks()
        .wait_exec(c.req(pb::ExecIdRequest {
            id: id.into(),
            exec_id: r.exec_id.clone(),
        }))
        .await
        .map_err(st)?
        .into_inner();
    att.finish();
    if e.exit_status != 0 {
        return Err(ExitCode(e.exit_status as i32).into());
    }
    Ok(())
}

pub async fn events(c: &Client, topics: Vec<String>) -> Result<()> {
    let mut s = c
        .events()
        .subscribe(c.req(pb::SubscribeRequest { topics }))
        .await
        .map_err(st)?
        .into_inner();
    while let Some(e) = s.message().await.map_err(st)? {
        let attrs: Vec<String> = e
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{} {} {} {} {}",
            e.timestamp_ns,
            e.namespace,
            e.topic,
            e.id,
            attrs.join(",")
        );
    }
    Ok(())
}
