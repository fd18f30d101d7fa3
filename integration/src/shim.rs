//! Helpers for the kura-shim tests (`tests/shim_*.rs`): Debian's containerd on a
//! private root, state and socket with kura-shim installed as `containerd-shim-kura-v2`;
//! a busybox image for `ctr`; and a shim started and driven directly over ttrpc, the way
//! kurad does, with an events server recording what the shim publishes.
//! Everything (containerd, shims, containers, mounts, cgroups) is torn down on drop.

use crate::{bin, hack, unique_id, Scratch};
use containerd_shim_protos::api;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::{create_events, Events, TaskClient};
use protobuf::well_known_types::empty::Empty;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const RUNTIME: &str = "io.containerd.kura.v2";
pub const IMAGE: &str = "docker.io/kura/busybox:test";

/// Why containerd tests cannot run here, if they cannot.
pub fn containerd_missing() -> Option<String> {
    for t in ["containerd", "ctr"] {
        if which(t).is_none() {
            return Some(format!("{t} not installed (apt-get install containerd)"));
        }
    }
    None
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A directory with `containerd-shim-kura-v2` -> kura-shim, to put first on PATH.
pub fn shim_bin_dir(scratch: &Scratch) -> PathBuf {
    let dir = scratch.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("containerd-shim-kura-v2");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(bin("kura-shim"), &link).unwrap();
    dir
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
    )
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

pub fn alive(pid: i32) -> bool {
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

pub fn read_pid(p: &Path) -> i32 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Kills shims and containers left in `bundles` (dirs holding shim.pid / kura-shim.json),
/// then unmounts their rootfs. For tests that fail half-way.
fn kill_leftovers(bundles: &[PathBuf]) {
    for b in bundles {
        let shim = read_pid(&b.join("shim.pid"));
        if alive(shim) {
            unsafe { libc::kill(shim, libc::SIGKILL) };
        }
        if let Ok(text) = std::fs::read_to_string(b.join("kura-shim.json")) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let (Some(rt), Some(root)) = (v["runtime"].as_str(), v["runtime_root"].as_str()) {
                let id = b.file_name().unwrap().to_string_lossy().into_owned();
                let _ = Command::new(rt)
                    .args(["--root", root, "delete", "--force", &id])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let init = read_pid(&b.join("init.pid"));
        if alive(init) {
            unsafe { libc::kill(init, libc::SIGKILL) };
        }
        crate::unmount_below(&b.join("rootfs"));
    }
}

/// Removes `/<ns>` cgroups (containerd's default cgroupsPath is /<ns>/<id>).
fn remove_cgroups(top: &str) {
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs = vec![PathBuf::from("/sys/fs/cgroup").join(top)];
    for e in rd.flatten() {
        dirs.push(e.path().join(top));
    }
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&d);
    }
}

/// A private containerd 1.6 with kura-shim on its PATH.
pub struct Containerd {
    pub scratch: Scratch,
    pub sock: PathBuf,
    /// The containerd namespace this test uses (also its cgroup parent).
    pub ns: String,
    config: PathBuf,
    bin_dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl Containerd {
    /// Starts containerd. `env` goes to containerd and so to the shims it starts.
    pub fn start(name: &str, env: &[(&str, &str)]) -> Containerd {
        let scratch = Scratch::new(name);
        let bin_dir = shim_bin_dir(&scratch);
        let sock = scratch.join("containerd.sock");
        let root = scratch.join("root");
        let state = scratch.join("state");
        let config = scratch.join("config.toml");
        // Only what ctr run needs: no CRI, no tracing, no exotic snapshotters.
        let toml = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "debug"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = root.display(),
            state = state.display(),
            sock = sock.display(),
            opt = scratch.join("opt").display(),
        );
        std::fs::write(&config, toml).unwrap();
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push((
            "KURA_SHIM_RUN_DIR".into(),
            scratch.join("run").display().to_string(),
        ));
        let mut c = Containerd {
            log: scratch.join("containerd.log"),
            ns: unique_id("kshim"),
            scratch,
            sock,
            config,
            bin_dir,
            child: None,
            env,
        };
        c.spawn();
        c
    }

    /// (Re)starts the containerd process on the same root, state and socket.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let _ = std::fs::remove_file(&self.sock);
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(&self.config)
            .env("PATH", path_with(&self.bin_dir))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start containerd"));
        let sock = self.sock.clone();
        let mut ok = false;
        for _ in 0..500 {
            if sock.exists() && self.ctr(&["version"]).status.success() {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(ok, "containerd did not come up:\n{}", self.log());
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.sock)
            .arg("--namespace")
            .arg(&self.ns);
        c.args(args);
        c.env("PATH", path_with(&self.bin_dir));
        c
    }

    /// Runs ctr with stdin closed; output through files (a task's stdio must not
    /// keep a pipe of ours open).
    pub fn ctr(&self, args: &[&str]) -> Output {
        let n = unique_id("ctr");
        let po = self.scratch.join(format!("{n}.out"));
        let pe = self.scratch.join(format!("{n}.err"));
        let status = self
            .ctr_cmd(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&po).unwrap())
            .stderr(std::fs::File::create(&pe).unwrap())
            .status()
            .expect("run ctr");
        let out = Output {
            status,
            stdout: std::fs::read(&po).unwrap_or_default(),
            stderr: std::fs::read(&pe).unwrap_or_default(),
        };
        let _ = std::fs::remove_file(po);
        let _ = std::fs::remove_file(pe);
        out
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "ctr {args:?} failed ({}): {}{}\n--- containerd log tail:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            crate::images::tail(&self.log(), 40)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Imports the busybox image built by hack/shim-image.sh; returns its name.
    pub fn import_busybox(&self) -> &'static str {
        let tar = self.scratch.join("busybox.tar");
        let st = Command::new(hack("shim-image.sh"))
            .arg(&tar)
            .arg(IMAGE)
            .status()
            .expect("run hack/shim-image.sh");
        assert!(st.success(), "hack/shim-image.sh failed");
        self.ok(&["image", "import", &tar.to_string_lossy()]);
        IMAGE
    }

    /// The task's bundle in containerd's state dir (where the shim records things).
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.scratch
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.ns)
            .join(id)
    }

    /// The task's status as `ctr task ls` shows it ("RUNNING", "STOPPED", ...).
    pub fn task_status(&self, id: &str) -> String {
        let out = self.ok(&["task", "ls"]);
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&id)).then(|| f.last().unwrap_or(&"").to_string())
            })
            .next()
            .unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let dir = self
            .scratch
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.ns);
        let bundles: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        kill_leftovers(&bundles);
        self.kill9();
        remove_cgroups(&self.ns);
    }
}

/// Events forwarded by a shim, recorded by a ttrpc events server of our own (playing
/// containerd's TTRPC_ADDRESS).
/// One forwarded event: topic, type URL, payload, envelope timestamp (seconds).
pub type Recorded = (String, String, Vec<u8>, i64);

#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<Recorded>>,
}

impl Events for Recorder {
    fn forward(&self, _: &ttrpc::TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let env = req.envelope.unwrap_or_default();
        let ev = env.event.clone().unwrap_or_default();
        let ts = env.timestamp.as_ref().map(|t| t.seconds).unwrap_or(0);
        self.events
            .lock()
            .unwrap()
            .push((env.topic, ev.type_url, ev.value, ts));
        Ok(Empty::new())
    }
}

impl Recorder {
    pub fn topics(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.0.clone())
            .collect()
    }

    /// The payloads of events on `topic`.
    pub fn payloads(&self, topic: &str) -> Vec<Vec<u8>> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.0 == topic)
            .map(|e| e.2.clone())
            .collect()
    }
}

/// A kura-shim started with the `start` bootstrap command and driven over ttrpc.
pub struct DirectShim {
    pub scratch: Scratch,
    pub id: String,
    pub ns: String,
    pub bundle: PathBuf,
    pub runtime_root: PathBuf,
    pub address: String,
    pub events: Arc<Recorder>,
    pub client: TaskClient,
    pub shim_pid: i32,
    /// The OCI config.json written for the container; edit before `create`.
    pub config: serde_json::Value,
    _server: ttrpc::Server,
}

impl DirectShim {
    /// Starts a shim for a fresh busybox bundle (`args` as the container's process).
    pub fn start(name: &str, args: &[&str]) -> DirectShim {
        DirectShim::start_env(name, args, &[])
    }

    /// Like [`DirectShim::start`], with extra environment for the shim.
    pub fn start_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> DirectShim {
        let scratch = Scratch::new(name);
        let id = unique_id("shim");
        let ns = unique_id("kns");
        let bundle = scratch.join(&id);
        std::fs::create_dir_all(&bundle).unwrap();
        crate::busybox_rootfs(&bundle.join("rootfs"));
        let out = Command::new(bin("kura-runtime"))
            .arg("spec")
            .arg("--bundle")
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(out.status.success(), "kura-runtime spec");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        config["root"]["readonly"] = json!(false);
        config["linux"]["cgroupsPath"] = json!(crate::runtime::test_cgroup_path(&id));

        // Our own events endpoint, as containerd's TTRPC_ADDRESS.
        let events = Arc::new(Recorder::default());
        let ev_sock = scratch.join("events.sock");
        let mut server = ttrpc::Server::new()
            .bind(&format!("unix://{}", ev_sock.display()))
            .unwrap()
            .register_service(create_events(events.clone()));
        server.start().unwrap();

        let run_dir = scratch.join("run");
        let out = Command::new(bin("kura-shim"))
            .args([
                "-namespace",
                &ns,
                "-address",
                "/run/kura/kura.sock",
                "-id",
                &id,
                "-debug",
                "start",
            ])
            .current_dir(&bundle)
            .env("KURA_SHIM_RUN_DIR", &run_dir)
            .env("TTRPC_ADDRESS", &ev_sock)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kura-shim start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let address = String::from_utf8(out.stdout).unwrap();
        assert!(address.starts_with("unix://"), "address {address:?}");
        let client = TaskClient::new(ttrpc::Client::connect(&address).unwrap());
        let shim_pid = read_pid(&bundle.join("shim.pid"));
        DirectShim {
            runtime_root: scratch.join("runtime-root"),
            scratch,
            id,
            ns,
            bundle,
            address,
            events,
            client,
            shim_pid,
            config,
            _server: server,
        }
    }

    pub fn ctx() -> ttrpc::context::Context {
        ttrpc::context::with_timeout(30_000_000_000)
    }

    /// Options selecting `runtime` (a binary name or path) and a private runtime root,
    /// plus an optional log file: kura's JSON options.
    pub fn options(
        &self,
        runtime: &str,
        log: Option<&Path>,
    ) -> protobuf::well_known_types::any::Any {
        let mut any = protobuf::well_known_types::any::Any::new();
        any.type_url = "kura.shim.v1.Options".into();
        let mut v = json!({"binary_name": runtime, "root": self.runtime_root});
        if let Some(l) = log {
            v["log_path"] = json!(l);
            v["log_format"] = json!("cri");
        }
        any.value = v.to_string().into_bytes();
        any
    }

    /// Writes config.json and sends Create.
    pub fn create(
        &self,
        runtime: &str,
        stdio: (&str, &str, &str),
        terminal: bool,
        log: Option<&Path>,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        let mut config = self.config.clone();
        config["process"]["terminal"] = json!(terminal);
        std::fs::write(
            self.bundle.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        let mut req = api::CreateTaskRequest::new();
        req.id = self.id.clone();
        req.bundle = self.bundle.display().to_string();
        req.stdin = stdio.0.into();
        req.stdout = stdio.1.into();
        req.stderr = stdio.2.into();
        req.terminal = terminal;
        req.options = protobuf::MessageField::some(self.options(runtime, log));
        self.client.create(Self::ctx(), &req)
    }

    /// A FIFO in the scratch dir.
    pub fn fifo(&self, name: &str) -> PathBuf {
        let p = self.scratch.join(name);
        let c = std::ffi::CString::new(p.to_string_lossy().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        p
    }

    pub fn start_req(&self, exec_id: &str) -> api::StartRequest {
        let mut r = api::StartRequest::new();
        r.id = self.id.clone();
        r.exec_id = exec_id.into();
        r
    }

    pub fn wait(&self, exec_id: &str) -> api::WaitResponse {
        let mut r = api::WaitRequest::new();
        r.id = self.id.clone();
        r.exec_id = exec_id.into();
        self.client.wait(Self::ctx(), &r).expect("wait")
    }

    pub fn state(&self, exec_id: &str) -> api::StateResponse {
        let mut r = api::StateRequest::new();
        r.id = self.id.clone();
        r.exec_id = exec_id.into();
        self.client.state(Self::ctx(), &r).expect("state")
    }

    pub fn kill(&self, exec_id: &str, signal: u32, all: bool) -> ttrpc::Result<Empty> {
        let mut r = api::KillRequest::new();
        r.id = self.id.clone();
        r.exec_id = exec_id.into();
        r.signal = signal;
        r.all = all;
        self.client.kill(Self::ctx(), &r)
    }

    pub fn delete(&self, exec_id: &str) -> ttrpc::Result<api::DeleteResponse> {
        let mut r = api::DeleteRequest::new();
        r.id = self.id.clone();
        r.exec_id = exec_id.into();
        self.client.delete(Self::ctx(), &r)
    }

    pub fn shutdown(&self) {
        let mut r = api::ShutdownRequest::new();
        r.id = self.id.clone();
        // The shim exits while answering; a closed connection is success.
        let _ = self.client.shutdown(Self::ctx(), &r);
    }
}

impl Drop for DirectShim {
    fn drop(&mut self) {
        kill_leftovers(std::slice::from_ref(&self.bundle));
        crate::unmount_below(self.scratch.path());
        for d in crate::runtime::cgroup_dirs(&self.id) {
            let _ = std::fs::remove_dir(&d);
        }
    }
}
