//! kurad's side of kura-shim (see shim/README.md): starting one per container, its
//! task API over ttrpc (synchronous; callers run it on blocking threads), and the
//! `delete` cleanup command for a shim that died.

use anyhow::{anyhow, bail, Context, Result};
use containerd_shim_protos::api;
use containerd_shim_protos::TaskClient;
use protobuf::Message;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where the shim and runtime binaries are: next to kurad (the build or the install),
/// else on PATH.
pub fn sibling_binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from(name)
}

/// A runtime name as `--runtime` takes it: empty/"kura" = kura-runtime next to kurad,
/// an absolute path, or a binary on PATH (runc, crun).
pub fn runtime_binary(name: &str) -> Result<String> {
    let b = match name {
        "" | "kura" | "kura-runtime" => sibling_binary("kura-runtime"),
        p if p.starts_with('/') => PathBuf::from(p),
        n => {
            let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join(n))
                .find(|p| p.is_file());
            found.with_context(|| format!("runtime {n:?}: not found on PATH"))?
        }
    };
    Ok(b.display().to_string())
}

pub struct Shim {
    pub client: TaskClient,
    pub id: String,
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64)
}

fn err(what: &str, e: ttrpc::Error) -> anyhow::Error {
    match e {
        ttrpc::Error::RpcStatus(s) => anyhow!("{what}: {}", s.message),
        e => anyhow!("{what}: {e}"),
    }
}

/// Starts (or finds) the shim of `id` in `bundle`; returns its address.
pub fn start(
    shim_bin: &Path,
    ns: &str,
    id: &str,
    bundle: &Path,
    kurad: &Path,
    run_dir: &Path,
) -> Result<String> {
    let out = Command::new(shim_bin)
        .args(["-namespace", ns, "-address"])
        .arg(kurad)
        .args(["-id", id, "start"])
        .current_dir(bundle)
        .env("KURA_SHIM_RUN_DIR", run_dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", shim_bin.display()))?;
    if !out.status.success() {
        bail!(
            "kura-shim start: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let addr = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !addr.starts_with("unix://") {
        bail!("kura-shim start printed {addr:?}, not an address");
    }
    Ok(addr)
}

impl Shim {
    pub fn connect(address: &str, id: &str) -> Result<Shim> {
        let c = ttrpc::Client::connect(address).map_err(|e| err("connect to shim", e))?;
        Ok(Shim {
            client: TaskClient::new(c),
            id: id.to_string(),
        })
    }

    /// Connects through the address the shim left in its bundle.
    pub fn from_bundle(bundle: &Path, id: &str) -> Result<Shim> {
        let a = std::fs::read_to_string(bundle.join("address")).context("no shim address")?;
        let s = Shim::connect(a.trim(), id)?;
        // A dead shim's socket may still exist: ask it something.
        s.client
            .connect(ttrpc::context::with_timeout(2_000_000_000), &{
                let mut r = api::ConnectRequest::new();
                r.id = id.to_string();
                r
            })
            .map_err(|e| err("shim connect", e))?;
        Ok(s)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        bundle: &Path,
        stdio: (&str, &str, &str),
        terminal: bool,
        runtime: &str,
        runtime_root: &Path,
        log: &Path,
    ) -> Result<u32> {
        let mut any = protobuf::well_known_types::any::Any::new();
        any.type_url = "kura.shim.v1.Options".into();
        any.value = json!({"binary_name": runtime, "root": runtime_root, "log_path": log, "log_format": "cri"})
            .to_string()
            .into_bytes();
        let mut req = api::CreateTaskRequest::new();
        req.id = self.id.clone();
        req.bundle = bundle.display().to_string();
        req.stdin = stdio.0.into();
        req.stdout = stdio.1.into();
        req.stderr = stdio.2.into();
        req.terminal = terminal;
        req.options = protobuf::MessageField::some(any);
        let r = self
            .client
            .create(ctx(), &req)
            .map_err(|e| err("create task", e))?;
        Ok(r.pid)
    }

    pub fn start(&self, exec_id: &str) -> Result<u32> {
        let mut r = api::StartRequest::new();
        r.id = self.id.clone();
        r.exec_id = exec_id.into();
        Ok(self
            .client
            .start(ctx(), &r)
            .map_err(|e| err("start", e))?
            .pid)
    }

    /// Blocks until the process exits: (exit status, exited at in ns since the epoch).
    pub fn wait(&self, exec_id: &str) -> Result<(u32, i64)> {
        let mut r = api::WaitRequest::new();
        r.id = self.id.clone();
        r.exec_id = exec_id.into();
        let w = self
            .client
            .wait(ttrpc::context::Context::default(), &r)
            .map_err(|e| err("wait", e))?;
        let at = w
            .exited_at
            .as_ref()
            .map(|t| t.seconds * 1_000_000_000 + t.nanos as i64)
            .unwrap_or(0);
        Ok((w.exit_status, at))
    }

    pub fn state(&self) -> Result<api::StateResponse> {
        let mut r = api::StateRequest::new();
        r.id = self.id.clone();
        self.client.state(ctx(), &r).map_err(|e| err("state", e))
    }

    pub fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let mut r = api::KillRequest::new();
        r.id = self.id.clone();
        r.exec_id = exec_id.into();
        r.signal = signal;
        r.all = all;
        self.client.kill(ctx(), &r).map_err(|e| err("kill", e))?;
        Ok(())
    }

    pub fn delete(&self, exec_id: &str) -> Result<(u32, i64)> {
        let mut r = api::DeleteRequest::new();
        r.id = self.id.clone();
        r.exec_id = exec_id.into();
        let d = self
            .client
            .delete(ctx(), &r)
            .map_err(|e| err("delete", e))?;
        let at = d
            .exited_at
            .as_ref()
            .map(|t| t.seconds * 1_000_000_000 + t.nanos as i64)
            .unwrap_or(0);
        Ok((d.exit_status, at))
    }

    pub fn shutdown(&self) {
        let mut r = api::ShutdownRequest::new();
        r.id = self.id.clone();
        r.now = true;
        let _ = self.client.shutdown(ctx(), &r);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn exec(
        &self,
        exec_id: &str,
        process: &serde_json::Value,
        stdio: (&str, &str, &str),
        terminal: bool,
    ) -> Result<()> {
        let mut spec = protobuf::well_known_types::any::Any::new();
        spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        spec.value = process.to_string().into_bytes();
        let mut ex = api::ExecProcessRequest::new();
        ex.id = self.id.clone();
        ex.exec_id = exec_id.into();
        ex.stdin = stdio.0.into();
        ex.stdout = stdio.1.into();
        ex.stderr = stdio.2.into();
        ex.terminal = terminal;
        ex.spec = protobuf::MessageField::some(spec);
        self.client.exec(ctx(), &ex).map_err(|e| err("exec", e))?;
        Ok(())
    }

    pub fn resize(&self, exec_id: &str, w: u32, h: u32) -> Result<()> {
        let mut r = api::ResizePtyRequest::new();
        r.id = self.id.clone();
        r.exec_id = exec_id.into();
        r.width = w;
        r.height = h;
        self.client
            .resize_pty(ctx(), &r)
            .map_err(|e| err("resize", e))?;
        Ok(())
    }

    pub fn close_stdin(&self, exec_id: &str) -> Result<()> {
        let mut r = api::CloseIORequest::new();
        r.id = self.id.clone();
        r.exec_id = exec_id.into();
        r.stdin = true;
        self.client
            .close_io(ctx(), &r)
            .map_err(|e| err("close stdin", e))?;
        Ok(())
    }

    pub fn pause(&self, pause: bool) -> Result<()> {
        if pause {
            let mut r = api::PauseRequest::new();
            r.id = self.id.clone();
            self.client.pause(ctx(), &r).map_err(|e| err("pause", e))?;
        } else {
            let mut r = api::ResumeRequest::new();
            r.id = self.id.clone();
            self.client
                .resume(ctx(), &r)
                .map_err(|e| err("resume", e))?;
        }
        Ok(())
    }

    /// (pid, exec id) of every process in the container.
    pub fn pids(&self) -> Result<Vec<(u32, String)>> {
        let mut r = api::PidsRequest::new();
        r.id = self.id.clone();
        let p = self.client.pids(ctx(), &r).map_err(|e| err("pids", e))?;
        Ok(p.processes
            .iter()
            .map(|p| {
                let exec = p
                    .info
                    .as_ref()
                    .and_then(|i| {
                        containerd_shim_protos::shim::oci::ProcessDetails::parse_from_bytes(
                            &i.value,
                        )
                        .ok()
                    })
                    .map(|d| d.exec_id)
                    .unwrap_or_default();
                (p.pid, exec)
            })
            .collect())
    }

    /// (memory usage, memory limit, cpu ns, pids)
    pub fn stats(&self) -> Result<(u64, u64, u64, u64)> {
        let mut r = api::StatsRequest::new();
        r.id = self.id.clone();
        let s = self.client.stats(ctx(), &r).map_err(|e| err("stats", e))?;
        let Some(any) = s.stats.as_ref() else {
            return Ok((0, 0, 0, 0));
        };
        Ok(match any.type_url.as_str() {
            "io.containerd.cgroups.v1.Metrics" => {
                let m = containerd_shim_protos::cgroups::metrics::Metrics::parse_from_bytes(
                    &any.value,
                )?;
                (
                    m.memory.usage.usage,
                    m.memory.usage.limit,
                    m.cpu.usage.total,
                    m.pids.current,
                )
            }
            _ => {
                let m = containerd_shim_protos::cgroups_v2::metrics::Metrics::parse_from_bytes(
                    &any.value,
                )?;
                (
                    m.memory.usage,
                    m.memory.usage_limit,
                    m.cpu.usage_usec * 1000,
                    m.pids.current,
                )
            }
        })
    }
}

/// Cleans up after a shim that is gone: force-deletes the container in its runtime,
/// unmounts, removes the socket. Returns the exit status the shim recorded (137 if none).
pub fn cleanup(shim_bin: &Path, ns: &str, id: &str, bundle: &Path, kurad: &Path) -> u32 {
    let out = Command::new(shim_bin)
        .args(["-namespace", ns, "-address"])
        .arg(kurad)
        .args(["-id", id, "-bundle"])
        .arg(bundle)
        .arg("delete")
        .current_dir(bundle)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => api::DeleteResponse::parse_from_bytes(&o.stdout)
            .map(|d| d.exit_status)
            .unwrap_or(137),
        _ => 137,
    }
}
