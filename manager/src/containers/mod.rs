//! Containers and their tasks: metadata in redb (table `containers`), a rootfs that is
//! an active snapshot of the image, a bundle under `--state`, and one kura-shim per
//! running container, which outlives kurad.
//!
//! Layout: bundle `<state>/containers/<ns>/<id>/` (config.json, `rootfs/` mounted by
//! kurad, `etc/` hostname/hosts/resolv.conf, FIFOs, and the shim's `address`,
//! `shim.pid`, `exit.json`); log `<root>/logs/<ns>/<id>.log` (CRI format, written by
//! the shim, kept until the container is removed); runtime state
//! `<state>/runtime/<ns>`.
//!
//! Truth about a task lives in its shim: status is asked of it. A shim that cannot be
//! reached is dead: its `delete` command cleans up and reports the exit it recorded.
//! Each started task has a watcher thread blocked in the shim's Wait; it records the
//! exit, applies `--rm` and the restart policy. After a kurad restart, `recover` finds
//! every shim again and starts new watchers.

mod keyed_lock;
pub mod options;
pub mod seccomp;
pub mod shim;
pub mod spec;
pub mod user;
mod warm;

use crate::daemon::Kura;
use crate::metadata::{self, key, Labels, ReadableTable, CONTAINERS};
use anyhow::{bail, Context, Result};
use options::{Network, Restart, RunOptions};
use serde::{Deserialize, Serialize};
use shim::Shim;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const SNAPSHOT_PREFIX: &str = "container/";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    pub id: String,
    pub image: String,
    pub image_digest: String,
    pub snapshotter: String,
    pub snapshot_key: String,
    pub runtime: String,
    pub restart: String,
    pub options: RunOptions,
    pub labels: Labels,
    pub created_at: i64,
    pub started_at: i64,
    pub restart_count: u32,
    /// Stopped by `stop`/`kill`/`rm`: no restart policy applies (docker's semantics).
    pub stopped_by_user: bool,
    pub exit_code: Option<u32>,
    pub exited_at_ns: i64,
    pub stop_signal: Option<String>,
    pub command: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// An event for Events.Subscribe.
#[derive(Debug, Clone)]
pub struct Event {
    pub topic: String,
    pub namespace: String,
    pub id: String,
    pub timestamp_ns: i64,
    pub attributes: Vec<(String, String)>,
}

pub struct Containers {
    pub k: Arc<Kura>,
    /// kurad's own socket: shims are told it (containerd's `-address`).
    pub address: PathBuf,
    pub events: tokio::sync::broadcast::Sender<Event>,
    /// Exits of `--rm` containers already removed, for a Wait that comes late.
    removed_exits: std::sync::Mutex<HashMap<String, (u32, i64)>>,
    /// Notified whenever a record changes or goes: `wait_settled` sleeps on it.
    changed: (std::sync::Mutex<()>, std::sync::Condvar),
    /// Held by a start and by the part of stop/kill/rm that decides and signals.
    lifecycle: keyed_lock::KeyedLock,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        bail!("invalid container name {id:?}: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64 characters");
    }
    Ok(())
}

fn mkfifo(p: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mkfifo {}", p.display()));
    }
    Ok(())
}

/// Whether `p` is a mount point, as mountinfo says (it escapes spaces; our paths
/// have none).
fn is_mountpoint(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = p.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == want)
}

fn unmount(p: &Path) {
    let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
}

pub fn signal_number(s: &str) -> Result<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let u = s.to_ascii_uppercase();
    let name = u.strip_prefix("SIG").unwrap_or(&u);
    let n = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        "WINCH" => 28,
        _ => bail!("unknown signal {s:?}"),
    };
    Ok(n)
}

impl Containers {
    pub fn new(k: Arc<Kura>, address: PathBuf) -> Arc<Containers> {
        let (events, _) = tokio::sync::broadcast::channel(1024);
        Arc::new(Containers {
            k,
            address,
            events,
            removed_exits: Default::default(),
            lifecycle: Default::default(),
            changed: Default::default(),
        })
    }

    pub fn publish(&self, topic: &str, ns: &str, id: &str, attrs: Vec<(String, String)>) {
        let _ = self.events.send(Event {
            topic: topic.into(),
            namespace: ns.into(),
            id: id.into(),
            timestamp_ns: now_ns(),
            attributes: attrs,
        });
    }

    pub fn bundle(&self, ns: &str, id: &str) -> PathBuf {
        self.k.state.join("containers").join(ns).join(id)
    }
    pub fn log_path(&self, ns: &str, id: &str) -> PathBuf {
        self.k.root.join("logs").join(ns).join(format!("{id}.log"))
    }
    fn runtime_root(&self, ns: &str) -> PathBuf {
        self.k.state.join("runtime").join(ns)
    }
    fn shim_run_dir(&self) -> PathBuf {
        self.k.state.join("shim")
    }
    fn shim_bin(&self) -> PathBuf {
        shim::sibling_binary("kura-shim")
    }

    pub fn get(&self, ns: &str, id: &str) -> Result<Record> {
        self.k
            .md
            .get::<Record>(CONTAINERS, &key(ns, id))?
            .with_context(|| format!("container {id} not found"))
    }

    pub fn list(&self, ns: &str) -> Result<Vec<Record>> {
        Ok(self
            .k
            .md
            .scan::<Record>(CONTAINERS, &format!("{ns}/"))?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    fn update(&self, ns: &str, id: &str, f: impl FnOnce(&mut Record)) -> Result<Record> {
        let r = self.k.md.write(|tx| {
            let mut t = tx.open_table(CONTAINERS)?;
            let k = key(ns, id);
            let mut r: Record =
                metadata::get_in(&t, &k)?.with_context(|| format!("container {id} not found"))?;
            f(&mut r);
            metadata::put(&mut t, &k, &r)?;
            Ok(r)
        });
        self.note_change();
        r
    }

    fn note_change(&self) {
        // Taken so a waiter between its check and its wait cannot miss this.
        drop(self.changed.0.lock().unwrap());
        self.changed.1.notify_all();
    }

    /// The live shim of a container, if there is one.
    pub fn shim(&self, ns: &str, id: &str) -> Option<Shim> {
        let b = self.bundle(ns, id);
        if !b.join("address").exists() {
            return None;
        }
        Shim::from_bundle(&b, id).ok()
    }

    /// (status, pid) as the shim says; a dead shim is cleaned up and its exit recorded.
    pub fn status(&self, ns: &str, r: &Record) -> (Status, u32) {
        let b = self.bundle(ns, &r.id);
        if !b.join("address").exists() {
            return (
                if r.started_at == 0 {
                    Status::Created
                } else {
                    Status::Stopped
                },
                0,
            );
        }
        let Some(shim) = self.shim(ns, &r.id) else {
            self.reap_dead_shim(ns, &r.id);
            return (Status::Stopped, 0);
        };
        // A shim that answers but has no task yet is a start in progress: reaping it
        // here would delete the task being created under the start's feet.
        match shim.state().ok() {
            Some(st) => {
                use containerd_shim_protos::api::Status as S;
                let s = match st.status.enum_value_or_default() {
                    S::RUNNING => Status::Running,
                    S::PAUSED | S::PAUSING => Status::Paused,
                    S::CREATED => Status::Created,
                    _ => Status::Stopped,
                };
                (s, st.pid)
            }
            // No task: gone after its exit (the watcher is deleting it), or not
            // created yet.
            None if r.exit_code.is_some() => (Status::Stopped, 0),
            None => (Status::Created, 0),
        }
    }

    /// The task is gone: its network namespace and what CNI gave it go too, DEL in
    /// the background (its ports and address stay reserved until it is done, and a
    /// start that needs them waits). A failure is logged; the record stays and kurad's
    /// next start tries again.
    fn release_network(&self, ns: &str, id: &str) {
        if !self.k.networks.mark_releasing(ns, id) {
            return;
        }
        self.k.networks.detach_in_background(ns, id);
    }

    /// A start that failed: the network goes before the error is returned.
    fn undo_network(&self, ns: &str, id: &str) {
        if let Err(e) = self.k.networks.detach(ns, id) {
            tracing::warn!(ns, id, "{e:#}");
        }
    }

    /// A shim that does not answer: run its cleanup, record the exit it left.
    fn reap_dead_shim(&self, ns: &str, id: &str) {
        // The watcher and any status query may find the dead shim at once: one cleanup,
        // and none after it (a late one would unmount the rootfs of the next start).
        static REAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = REAP.lock().unwrap_or_else(|e| e.into_inner());
        let b = self.bundle(ns, id);
        if !b.join("address").exists() {
            return;
        }
        let code = shim::cleanup(&self.shim_bin(), ns, id, &b, &self.address);
        let at = std::fs::metadata(b.join("exit.json"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
            .unwrap_or_else(now_ns);
        let _ = std::fs::remove_file(b.join("address"));
        self.release_network(ns, id);
        let _ = self.update(ns, id, |r| {
            if r.exit_code.is_none() {
                r.exit_code = Some(code);
                r.exited_at_ns = at;
            }
        });
        tracing::info!(ns, id, code, "shim was gone; cleaned up");
    }

    /// The network namespace a container's spec joins: kurad's own for none and bridge
    /// networks, the other container's for `container:ID` (None: the host's).
    fn netns_for(&self, ns: &str, id: &str, n: &Network) -> Result<Option<PathBuf>> {
        Ok(match n {
            Network::None | Network::Bridge(_) => Some(self.k.networks.netns_path(ns, id)),
            Network::Container(t) => {
                let tr = self
                    .get(ns, t)
                    .with_context(|| format!("--network container:{t}"))?;
                match &tr.options.network {
                    Network::Host => None,
                    Network::Netns(p) => Some(PathBuf::from(p)),
                    Network::Container(_) => {
                        bail!("--network container:{t}: {t} itself shares another container's network; name that one")
                    }
                    _ => Some(self.k.networks.netns_path(ns, t)),
                }
            }
            Network::Host | Network::Netns(_) => None,
        })
    }

    /// Makes a container (not started). Undoes everything on failure.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        self: &Arc<Self>,
        ns: &str,
        id: &str,
        image: &str,
        opts: RunOptions,
        restart: &str,
        runtime: &str,
        labels: Labels,
        platform: &str,
    ) -> Result<Record> {
        if let Ok(rt) = shim::runtime_binary(runtime) {
            warm::start(&rt);
        }
        let id = if id.is_empty() {
            format!("{:016x}", rand::random::<u64>())
        } else {
            id.to_string()
        };
        check_id(&id)?;
        Restart::parse(restart)?;
        shim::runtime_binary(runtime)?;
        self.k.networks.validate(&opts)?;
        let netns = self.netns_for(ns, &id, &opts.network)?;
        if self
            .k
            .md
            .get::<Record>(CONTAINERS, &key(ns, &id))?
            .is_some()
        {
            bail!("container {id} already exists");
        }
        let img =
            crate::images::get(&self.k, ns, image).with_context(|| format!("image {image}"))?;
        let sn = self.k.config.snapshotter.clone();
        let res = crate::images::resolve(
            &self.k,
            ns,
            &img.target,
            &crate::images::oci::Platform::parse(platform)?,
        )?;
        // Unpacked already (the usual case): the image roots its snapshots, so no
        // temporary lease and no unpack pass are needed to hold them.
        let top = crate::images::oci::chain_ids(&res.config.rootfs.diff_ids)
            .pop()
            .filter(|c| {
                matches!(self.k.snapshots.get(ns, &sn, c),
                    Ok(Some(r)) if r.kind == metadata::SnapshotKind::Committed)
            });
        let chain = match top {
            Some(c) => c,
            None => {
                let lease = self.k.temp_lease(ns, "container-create")?;
                let chain =
                    crate::server::unpack_image(&self.k, ns, image, platform, &sn, &lease).await;
                let _ = self.k.delete_lease(ns, &lease);
                chain?
            }
        };
        let k = self.k.clone();
        let me = self.clone();
        let ns2 = ns.to_string();
        let image = image.to_string();
        let restart = restart.to_string();
        let runtime = runtime.to_string();
        let digest = img.target.digest.clone();
        let r = tokio::task::spawn_blocking(move || {
            let snap_key = format!("{SNAPSHOT_PREFIX}{id}");
            let mounts = k.snapshots.prepare(
                &ns2,
                &sn,
                &snap_key,
                &chain,
                Labels::new(),
                "",
                metadata::SnapshotKind::Active,
            )?;
            let bundle = me.bundle(&ns2, &id);
            let made = (|| -> Result<Record> {
                std::fs::create_dir_all(bundle.join("rootfs"))?;
                for m in &mounts {
                    m.mount(&bundle.join("rootfs"))?;
                }
                let g = spec::generate(&spec::Input {
                    id: &id,
                    namespace: &ns2,
                    image_config: &res.config_json,
                    rootfs: &bundle.join("rootfs"),
                    etc_dir: &bundle.join("etc"),
                    opts: &opts,
                    netns: netns.as_deref(),
                })?;
                std::fs::write(
                    bundle.join("config.json"),
                    serde_json::to_vec_pretty(&g.spec)?,
                )?;
                if opts.attach {
                    if opts.stdin {
                        mkfifo(&bundle.join("stdin"))?;
                    }
                    mkfifo(&bundle.join("stdout"))?;
                    if !opts.tty {
                        mkfifo(&bundle.join("stderr"))?;
                    }
                }
                let log = me.log_path(&ns2, &id);
                std::fs::create_dir_all(log.parent().unwrap())?;
                let command = g.spec["process"]["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let r = Record {
                    id: id.clone(),
                    image: image.clone(),
                    image_digest: digest,
                    snapshotter: sn.clone(),
                    snapshot_key: snap_key.clone(),
                    runtime,
                    restart,
                    options: opts,
                    labels,
                    created_at: metadata::now(),
                    stop_signal: g.stop_signal,
                    command,
                    ..Default::default()
                };
                // The check above raced with other creates: insert only if still absent.
                k.md.write(|tx| {
                    let mut t = tx.open_table(CONTAINERS)?;
                    let kk = key(&ns2, &id);
                    if t.get(kk.as_str())?.is_some() {
                        bail!("container {id} already exists");
                    }
                    metadata::put(&mut t, &kk, &r)
                })?;
                Ok(r)
            })();
            if made.is_err() {
                unmount(&bundle.join("rootfs"));
                let _ = std::fs::remove_dir_all(&bundle);
                let _ = k.snapshots.remove(&ns2, &sn, &snap_key);
            }
            made
        })
        .await??;
        self.publish(
            "/containers/create",
            ns,
            &r.id,
            vec![("image".into(), r.image.clone())],
        );
        Ok(r)
    }

    /// Starts the container's task at a user's request: a fresh shim, create, start,
    /// a watcher. The user's start lifts an earlier stop's hold on the restart policy.
    pub fn start(
        self: &Arc<Self>,
        ns: &str,
        id: &str,
        with_client_stdio: bool,
        console: Option<(u32, u32)>,
    ) -> Result<u32> {
        let _turn = self.lifecycle.lock(key(ns, id));
        self.start_task(ns, id, with_client_stdio, console, true)
    }

    /// The restart policy's start, unless the user stopped (or anyone restarted) the
    /// run that exited at `started_at` meanwhile: decided under the container's lock,
    /// which a stop takes to set its flag, so the stop is never lost.
    fn restart(self: &Arc<Self>, ns: &str, id: &str, started_at: i64, ran: i64) -> Result<()> {
        let _turn = self.lifecycle.lock(key(ns, id));
        let Ok(cur) = self.get(ns, id) else {
            return Ok(());
        };
        if cur.stopped_by_user || cur.started_at != started_at {
            return Ok(());
        }
        self.update(ns, id, |x| {
            x.restart_count = if ran >= 10 { 1 } else { x.restart_count + 1 }
        })?;
        self.start_task(ns, id, false, None, false).map(|_| ())
    }

    fn start_task(
        self: &Arc<Self>,
        ns: &str,
        id: &str,
        with_client_stdio: bool,
        console: Option<(u32, u32)>,
        by_user: bool,
    ) -> Result<u32> {
        let r = self.get(ns, id)?;
        let rt = shim::runtime_binary(&r.runtime)?;
        warm::start(&rt);
        let (st, _) = self.status(ns, &r);
        if matches!(st, Status::Running | Status::Paused) {
            bail!("container {id} is already running");
        }
        let b = self.bundle(ns, id);
        if !b.join("rootfs").exists() {
            bail!("container {id}: its bundle is gone (was the host rebooted?)");
        }
        // A shim that died was cleaned up by `kura-shim delete`, which unmounts the
        // rootfs: mount the snapshot again.
        if !is_mountpoint(&b.join("rootfs")) {
            let mounts = self
                .k
                .snapshots
                .mounts(ns, &r.snapshotter, &r.snapshot_key)
                .with_context(|| format!("container {id}: snapshot {}", r.snapshot_key))?;
            for m in &mounts {
                m.mount(&b.join("rootfs"))?;
            }
        }
        // A previous run's shim (stopped task) goes first.
        if let Some(old) = self.shim(ns, id) {
            let _ = old.delete("");
            old.shutdown();
        }
        let _ = std::fs::remove_file(b.join("address"));
        let _ = std::fs::remove_file(b.join("exit.json"));
        let t0 = std::time::Instant::now();
        if let Network::Container(t) = &r.options.network {
            let tr = self
                .get(ns, t)
                .with_context(|| format!("--network container:{t}"))?;
            if !matches!(self.status(ns, &tr).0, Status::Running | Status::Paused) {
                bail!("--network container:{t}: container {t} is not running");
            }
        }
        let reserved = self
            .k
            .networks
            .reserve(ns, id, &r.options, &b.join("etc"))
            .with_context(|| format!("container {id}: network"))?;
        // The network namespace is made while the shim starts (the runtime needs it),
        // and the plugins' ADD runs while the shim and the runtime make the container;
        // the process starts only after it is done.
        let (netns_tx, netns_rx) = std::sync::mpsc::channel::<Result<()>>();
        let adding = reserved.map(|a| {
            let k = self.k.clone();
            std::thread::spawn(move || {
                let made = k.networks.make_netns(&a);
                let ok = made.is_ok();
                let _ = netns_tx.send(made);
                if ok {
                    k.networks.add(a)
                } else {
                    Ok(())
                }
            })
        });
        let has_netns = adding.is_some();
        let netns_ready = || -> Result<()> {
            if !has_netns {
                return Ok(());
            }
            netns_rx
                .recv()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("network setup thread died")))
                .with_context(|| format!("container {id}: network"))
        };
        let finish_network = move || -> Result<std::time::Instant> {
            if let Some(h) = adding {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("network setup panicked")))?;
            }
            Ok(std::time::Instant::now())
        };
        let addr = match shim::start(
            &self.shim_bin(),
            ns,
            id,
            &b,
            &self.address,
            &self.shim_run_dir(),
        )
        .and_then(|a| Shim::connect(&a, id).map(|s| (a, s)))
        {
            Ok(a) => a,
            Err(e) => {
                let _ = finish_network();
                self.undo_network(ns, id);
                return Err(e);
            }
        };
        let (_, s) = addr;
        let t_shim = t0.elapsed();
        let fifo = |n: &str| -> String {
            let p = b.join(n);
            if with_client_stdio && p.exists() {
                p.display().to_string()
            } else {
                String::new()
            }
        };
        let created = netns_ready().and_then(|_| {
            s.create(
                &b,
                (&fifo("stdin"), &fifo("stdout"), &fifo("stderr")),
                r.options.tty,
                &rt,
                &self.runtime_root(ns),
                &self.log_path(ns, id),
            )
        });
        let t_create = t0.elapsed();
        let net = finish_network().with_context(|| format!("container {id}: network"));
        let started = created.and(net).and_then(|t_net| {
            if let (true, Some((w, h))) = (r.options.tty, console) {
                s.resize("", w, h)?;
            }
            let pid = s.start("")?;
            tracing::debug!(
                ns,
                id,
                shim_ms = t_shim.as_secs_f64() * 1e3,
                create_ms = (t_create - t_shim).as_secs_f64() * 1e3,
                net_wait_ms = (t_net - t0 - t_create).as_secs_f64() * 1e3,
                start_ms = t_net.elapsed().as_secs_f64() * 1e3,
                "task started"
            );
            Ok(pid)
        });
        let pid = match started {
            Ok(p) => p,
            Err(e) => {
                let _ = s.delete("");
                s.shutdown();
                let _ = std::fs::remove_file(b.join("address"));
                self.undo_network(ns, id);
                return Err(e);
            }
        };
        self.update(ns, id, |r| {
            r.started_at = metadata::now();
            r.exit_code = None;
            r.exited_at_ns = 0;
            // A user's start lifts an earlier stop and begins the policy's backoff
            // anew, as docker's does; a policy restart found the flag clear.
            if by_user {
                r.stopped_by_user = false;
                r.restart_count = 0;
            }
        })?;
        self.publish(
            "/tasks/start",
            ns,
            id,
            vec![("pid".into(), pid.to_string())],
        );
        self.watch(ns, id);
        Ok(pid)
    }

    /// A thread blocked in the shim's Wait; then the exit, --rm and the restart policy.
    fn watch(self: &Arc<Self>, ns: &str, id: &str) {
        let me = self.clone();
        let (ns, id) = (ns.to_string(), id.to_string());
        std::thread::spawn(move || {
            let Some(s) = me.shim(&ns, &id) else {
                me.reap_dead_shim(&ns, &id);
                return;
            };
            let (code, at) = match s.wait("") {
                Ok(e) => e,
                // The shim died under us (kill -9): its cleanup knows the exit.
                Err(_) => {
                    me.reap_dead_shim(&ns, &id);
                    return;
                }
            };
            // Released before the exit is on record: whoever waits for the exit
            // (stop, wait, rm) finds the address and ports free again.
            me.release_network(&ns, &id);
            let Ok(r) = me.update(&ns, &id, |r| {
                r.exit_code = Some(code);
                r.exited_at_ns = at;
            }) else {
                return;
            };
            tracing::debug!(ns, id, code, "exit recorded");
            // The exit is on record: the task and its shim are no longer needed.
            let _ = s.delete("");
            tracing::debug!(ns, id, "task deleted");
            s.shutdown();
            tracing::debug!(ns, id, "shim shut down");
            let _ = std::fs::remove_file(me.bundle(&ns, &id).join("address"));
            me.publish(
                "/tasks/exit",
                &ns,
                &id,
                vec![("exit_status".into(), code.to_string())],
            );
            me.after_exit(&ns, r, code);
        });
    }

    fn after_exit(self: &Arc<Self>, ns: &str, r: Record, code: u32) {
        if r.options.auto_remove {
            let mut m = self.removed_exits.lock().unwrap();
            if m.len() >= 1024 {
                m.clear();
            }
            m.insert(key(ns, &r.id), (code, r.exited_at_ns));
            drop(m);
            if let Err(e) = self.remove(ns, &r.id, true) {
                tracing::warn!(ns, id = r.id, "auto-remove: {e:#}");
            }
            return;
        }
        let policy = Restart::parse(&r.restart).unwrap_or(Restart::No);
        if !policy.applies(code, r.restart_count, r.stopped_by_user) {
            return;
        }
        // 100 ms doubling up to 10 s; a container that ran 10 s starts the count over.
        let ran = metadata::now() - r.started_at;
        let n = if ran >= 10 { 0 } else { r.restart_count.min(7) };
        let delay = Duration::from_millis(100 << n).min(Duration::from_secs(10));
        std::thread::sleep(delay);
        if let Err(e) = self.restart(ns, &r.id, r.started_at, ran) {
            tracing::warn!(ns, id = r.id, "restart failed: {e:#}");
        }
    }

    /// Blocks until the task exits (or returns the last exit).
    pub fn wait(&self, ns: &str, id: &str) -> Result<(u32, i64)> {
        let r = self.get(ns, id)?;
        let res = self.wait_exit(ns, id, r.clone());
        if res.is_ok() {
            self.wait_settled(ns, id, r.options.auto_remove);
        }
        res
    }

    fn wait_exit(&self, ns: &str, id: &str, r: Record) -> Result<(u32, i64)> {
        if let Some(s) = self.shim(ns, id) {
            if let Ok(e) = s.wait("") {
                return Ok(e);
            }
        }
        let Ok(r) = self.get(ns, id) else {
            // Removed by --rm meanwhile: its exit was kept.
            return self
                .removed_exits
                .lock()
                .unwrap()
                .get(&key(ns, id))
                .copied()
                .or(r.exit_code.map(|c| (c, r.exited_at_ns)))
                .with_context(|| format!("container {id} not found"));
        };
        match r.exit_code {
            Some(c) => Ok((c, r.exited_at_ns)),
            None if r.started_at == 0 => bail!("container {id} was never started"),
            None => {
                self.reap_dead_shim(ns, id);
                let r = self.get(ns, id)?;
                Ok((r.exit_code.unwrap_or(137), r.exited_at_ns))
            }
        }
    }

    /// Until the watcher has caught up with an exit the client already saw: the exit
    /// recorded (`ps` shows it), or for `--rm` the container gone, as docker's `run
    /// --rm` waits (the name free, nothing left). Bounded: a removal that fails is
    /// logged by the watcher, and the exit is still worth returning.
    fn wait_settled(&self, ns: &str, id: &str, removal: bool) {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Checked under the lock writers take after committing: no change between
            // the check and the wait is missed.
            let seen = self.changed.0.lock().unwrap();
            match self.get(ns, id) {
                Ok(r) if removal || r.exit_code.is_none() => {}
                _ => return,
            }
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            let _ = self.changed.1.wait_timeout(seen, left);
        }
    }

    pub fn kill(&self, ns: &str, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        self.get(ns, id)?;
        let _turn = exec_id.is_empty().then(|| self.lifecycle.lock(key(ns, id)));
        let s = self
            .shim(ns, id)
            .with_context(|| format!("container {id} is not running"))?;
        if exec_id.is_empty() {
            self.update(ns, id, |r| r.stopped_by_user = true)?;
        }
        s.kill(exec_id, signal, all)
    }

    /// The stop signal, then SIGKILL after `timeout`.
    pub fn stop(&self, ns: &str, id: &str, timeout: Duration) -> Result<(u32, i64)> {
        let turn = self.lifecycle.lock(key(ns, id));
        let r = self.get(ns, id)?;
        let Some(s) = self.shim(ns, id) else {
            let r = self.update(ns, id, |r| r.stopped_by_user = true)?;
            return Ok((r.exit_code.unwrap_or(0), r.exited_at_ns));
        };
        self.update(ns, id, |r| r.stopped_by_user = true)?;
        let sig = r
            .stop_signal
            .as_deref()
            .map(signal_number)
            .transpose()?
            .unwrap_or(15);
        let _ = s.kill("", sig, true);
        // The flag is set and the signal sent: a restart may decide now (it will not
        // start); the wait for the exit needs no turn.
        drop(turn);
        // The watcher records the exit; wait for it, then SIGKILL.
        let exited = |limit: Duration| -> Option<(u32, i64)> {
            let end = std::time::Instant::now() + limit;
            loop {
                if let Ok(cur) = self.get(ns, id) {
                    if let Some(c) = cur.exit_code {
                        return Some((c, cur.exited_at_ns));
                    }
                }
                if std::time::Instant::now() >= end {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        if let Some(e) = exited(timeout) {
            return Ok(e);
        }
        let _ = s.kill("", 9, true);
        exited(Duration::from_secs(30))
            .with_context(|| format!("container {id} did not stop after SIGKILL"))
    }

    /// Removes the container and all it holds.
    pub fn remove(&self, ns: &str, id: &str, force: bool) -> Result<()> {
        let _turn = self.lifecycle.lock(key(ns, id));
        let r = self.get(ns, id)?;
        let (st, _) = self.status(ns, &r);
        if matches!(st, Status::Running | Status::Paused) && !force {
            bail!(
                "container {id} is {}: stop it first or use --force",
                st.as_str()
            );
        }
        let b = self.bundle(ns, id);
        if let Some(s) = self.shim(ns, id) {
            let _ = self.update(ns, id, |r| r.stopped_by_user = true);
            if matches!(st, Status::Running | Status::Paused) {
                let _ = s.kill("", 9, true);
                let _ = s.wait("");
            }
            let _ = s.delete("");
            s.shutdown();
        } else if b.join("address").exists() {
            shim::cleanup(&self.shim_bin(), ns, id, &b, &self.address);
        }
        self.release_network(ns, id);
        // The bundle's path is the container's name, free again at once: it moves
        // aside (its rootfs mount with it), and the unmount, which syncs the overlay's
        // upper fs, and the trees go in the background (`--rm` need not wait for them;
        // kurad's next start finishes what a crash interrupts).
        let mut trash = Vec::new();
        if b.exists() {
            let aside = b.with_file_name(format!(".removed-{id}-{:08x}", rand::random::<u32>()));
            if let Err(e) = std::fs::rename(&b, &aside) {
                unmount(&b.join("rootfs"));
                return Err(e).with_context(|| format!("remove {}", b.display()));
            }
            trash.push(aside);
        }
        let _ = std::fs::remove_file(self.log_path(ns, id));
        // The snapshot's record and the container's go in one commit.
        let gone = self.k.md.write(|tx| {
            match self
                .k
                .snapshots
                .forget_in(tx, ns, &r.snapshotter, &r.snapshot_key)
            {
                Ok(d) => trash.push(d),
                Err(e) => tracing::warn!(ns, id, "remove snapshot: {e:#}"),
            }
            let mut t = tx.open_table(CONTAINERS)?;
            t.remove(key(ns, id).as_str())?;
            Ok(())
        });
        self.note_change();
        std::thread::spawn(move || {
            for d in trash {
                unmount(&d.join("rootfs"));
                // Never recurse into a mounted rootfs: its lower layers are shared.
                if is_mountpoint(&d.join("rootfs")) {
                    tracing::warn!("{}: rootfs still mounted, left in place", d.display());
                    continue;
                }
                if let Err(e) = crate::snapshots::remove_tree(&d) {
                    tracing::warn!("{e:#}");
                }
            }
        });
        gone?;
        tracing::debug!(ns, id, "removed");
        self.publish("/containers/delete", ns, id, vec![]);
        Ok(())
    }

    /// Runs another process in a running container; FIFOs in the bundle for a client.
    #[allow(clippy::too_many_arguments)]
    pub fn exec(
        &self,
        ns: &str,
        id: &str,
        args: Vec<String>,
        env: Vec<String>,
        workdir: &str,
        user_spec: &str,
        tty: bool,
        stdin: bool,
        console: Option<(u32, u32)>,
    ) -> Result<(String, [String; 3])> {
        if args.is_empty() {
            bail!("exec: no command given");
        }
        let s = self
            .shim(ns, id)
            .with_context(|| format!("container {id} is not running"))?;
        let b = self.bundle(ns, id);
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(b.join("config.json"))?)?;
        let mut p = spec["process"].clone();
        p["args"] = serde_json::json!(args);
        p["terminal"] = serde_json::json!(tty);
        if !workdir.is_empty() {
            p["cwd"] = serde_json::json!(workdir);
        }
        if !user_spec.is_empty() {
            let u = user::resolve(&b.join("rootfs"), user_spec)?;
            p["user"] = serde_json::json!({"uid": u.uid, "gid": u.gid, "additionalGids": u.additional_gids});
        }
        let mut penv: Vec<String> = p["env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for kv in env {
            let k = kv.split('=').next().unwrap_or("").to_string();
            penv.retain(|e| e.split('=').next() != Some(k.as_str()));
            penv.push(kv);
        }
        p["env"] = serde_json::json!(penv);
        let exec_id = format!("exec-{:08x}", rand::random::<u32>());
        let path = |n: &str| b.join(format!("{exec_id}.{n}"));
        let mut paths = [String::new(), String::new(), String::new()];
        if stdin {
            mkfifo(&path("stdin"))?;
            paths[0] = path("stdin").display().to_string();
        }
        mkfifo(&path("stdout"))?;
        paths[1] = path("stdout").display().to_string();
        if !tty {
            mkfifo(&path("stderr"))?;
            paths[2] = path("stderr").display().to_string();
        }
        let res = s
            .exec(&exec_id, &p, (&paths[0], &paths[1], &paths[2]), tty)
            .and_then(|_| match (tty, console) {
                (true, Some((w, h))) => s.resize(&exec_id, w, h),
                _ => Ok(()),
            })
            .and_then(|_| s.start(&exec_id));
        if let Err(e) = res {
            let _ = s.delete(&exec_id);
            for n in ["stdin", "stdout", "stderr"] {
                let _ = std::fs::remove_file(path(n));
            }
            return Err(e);
        }
        Ok((exec_id, paths))
    }

    pub fn wait_exec(&self, ns: &str, id: &str, exec_id: &str) -> Result<(u32, i64)> {
        let s = self
            .shim(ns, id)
            .with_context(|| format!("container {id} is not running"))?;
        let e = s.wait(exec_id)?;
        let _ = s.delete(exec_id);
        let b = self.bundle(ns, id);
        for n in ["stdin", "stdout", "stderr"] {
            let _ = std::fs::remove_file(b.join(format!("{exec_id}.{n}")));
        }
        Ok(e)
    }

    /// After a kurad restart: reconnect to every shim, or clean up after the dead ones.
    pub fn recover(self: &Arc<Self>) {
        // Network attachments of containers that are gone or have no task (kurad died
        // between the removal and DEL, or during a start).
        for a in self.k.networks.attachments() {
            let gone = self.get(&a.ns, &a.id).is_err();
            if gone || !self.bundle(&a.ns, &a.id).join("address").exists() {
                tracing::info!(
                    ns = a.ns,
                    id = a.id,
                    "releasing a leftover network attachment"
                );
                self.release_network(&a.ns, &a.id);
            }
        }
        let Ok(nss) = metadata::namespaces(&self.k.md) else {
            return;
        };
        for ns in nss {
            // Bundles a removal had moved aside when kurad stopped.
            if let Ok(rd) = std::fs::read_dir(self.k.state.join("containers").join(&ns)) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with(".removed-") {
                        unmount(&e.path().join("rootfs"));
                        let _ = crate::snapshots::remove_tree(&e.path());
                    }
                }
            }
            let Ok(list) = self.list(&ns) else { continue };
            for r in list {
                if !self.bundle(&ns, &r.id).join("address").exists() {
                    continue;
                }
                match self.shim(&ns, &r.id).map(|s| s.state()) {
                    Some(Ok(st)) => {
                        use containerd_shim_protos::api::Status as S;
                        match st.status.enum_value_or_default() {
                            S::STOPPED => {
                                // Exited while kurad was down.
                                let at = st
                                    .exited_at
                                    .as_ref()
                                    .map(|t| t.seconds * 1_000_000_000 + t.nanos as i64)
                                    .unwrap_or_else(now_ns);
                                if let Ok(r) = self.update(&ns, &r.id, |r| {
                                    r.exit_code = Some(st.exit_status);
                                    r.exited_at_ns = at;
                                }) {
                                    // The exit is on record: the task, its shim and
                                    // its network go, as after a watched exit.
                                    if let Some(s) = self.shim(&ns, &r.id) {
                                        let _ = s.delete("");
                                        s.shutdown();
                                        let _ = std::fs::remove_file(
                                            self.bundle(&ns, &r.id).join("address"),
                                        );
                                    }
                                    self.release_network(&ns, &r.id);
                                    let me = self.clone();
                                    let ns = ns.clone();
                                    std::thread::spawn(move || {
                                        let code = st.exit_status;
                                        me.after_exit(&ns, r, code)
                                    });
                                }
                            }
                            _ => self.watch(&ns, &r.id),
                        }
                    }
                    _ => {
                        self.reap_dead_shim(&ns, &r.id);
                        if let Ok(r) = self.get(&ns, &r.id) {
                            let me = self.clone();
                            let ns = ns.clone();
                            std::thread::spawn(move || {
                                let code = r.exit_code.unwrap_or(137);
                                me.after_exit(&ns, r, code)
                            });
                        }
                    }
                }
            }
        }
    }
}
