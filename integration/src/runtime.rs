//! Driving `kura-runtime` on busybox bundles: a bundle builder over the config
//! `kura-runtime spec` writes, and a runner bound to one private `--root`.

use crate::{bin, busybox_rootfs, unique_id, Scratch};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// One test's runtime: its own state root, bundle and container ids. Everything it
/// created is deleted (containers force-deleted, mounts and cgroups gone) on drop.
pub struct Rt {
    pub scratch: Scratch,
    pub root: PathBuf,
    pub bundle: PathBuf,
    pub config: Value,
    ids: Vec<String>,
}

/// The cgroupsPath tests use, so they can check the cgroup is gone afterwards.
pub fn test_cgroup_path(id: &str) -> String {
    format!("/kura-test/{id}")
}

impl Rt {
    pub fn new(name: &str) -> Rt {
        let scratch = Scratch::new(name);
        let root = scratch.join("state");
        let bundle = scratch.join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        busybox_rootfs(&bundle.join("rootfs"));
        let out = Command::new(bin("kura-runtime"))
            .arg("spec")
            .arg("--bundle")
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kura-runtime spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        config["process"]["terminal"] = json!(false);
        // The busybox rootfs has no /sys/fs/cgroup to mount a read-only root over.
        config["root"]["readonly"] = json!(false);
        Rt {
            scratch,
            root,
            bundle,
            config,
            ids: Vec::new(),
        }
    }

    /// A fresh container id, remembered for cleanup, with its cgroup under /kura-test.
    pub fn id(&mut self, prefix: &str) -> String {
        let id = unique_id(prefix);
        self.ids.push(id.clone());
        id
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    /// Writes config.json, with cgroupsPath set for `id`.
    pub fn write_config(&mut self, id: &str) {
        self.config["linux"]["cgroupsPath"] = json!(test_cgroup_path(id));
        std::fs::write(
            self.bundle.join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin("kura-runtime"));
        c.arg("--root").arg(&self.root);
        c
    }

    /// Runs `kura-runtime --root R ARGS...` with stdin closed and output captured.
    /// Output goes through files, not pipes: a created container inherits the
    /// runtime's stdio and would keep a pipe open long after the command exits.
    pub fn rt(&self, args: &[&str]) -> Output {
        let n = unique_id("out");
        let po = self.scratch.join(format!("{n}.stdout"));
        let pe = self.scratch.join(format!("{n}.stderr"));
        let fo = std::fs::File::create(&po).unwrap();
        let fe = std::fs::File::create(&pe).unwrap();
        let status = self
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .stdout(fo)
            .stderr(fe)
            .status()
            .expect("run kura-runtime");
        let out = Output {
            status,
            stdout: std::fs::read(&po).unwrap_or_default(),
            stderr: std::fs::read(&pe).unwrap_or_default(),
        };
        let _ = std::fs::remove_file(po);
        let _ = std::fs::remove_file(pe);
        out
    }

    /// Like [`Rt::rt`] but panics with stderr when the command fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.rt(args);
        assert!(
            out.status.success(),
            "kura-runtime {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn create(&mut self, id: &str) -> Output {
        self.write_config(id);
        let b = self.bundle.to_string_lossy().into_owned();
        self.rt(&["create", "--bundle", &b, id])
    }

    /// `create`, failing the test with the runtime's stderr if it fails.
    pub fn create_ok(&mut self, id: &str) {
        let out = self.create(id);
        assert!(
            out.status.success(),
            "create {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `run` in the foreground; returns (exit code, stdout, stderr).
    pub fn run(&mut self, id: &str) -> (i32, String, String) {
        self.write_config(id);
        let b = self.bundle.to_string_lossy().into_owned();
        let out = self.rt(&["run", "--bundle", &b, id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state is JSON")
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap_or("").to_owned()
    }

    /// Polls until the container reaches `want` (processes exit asynchronously).
    pub fn wait_status(&self, id: &str, want: &str) {
        for _ in 0..500 {
            if self.status(id) == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!(
            "container {id} never became {want} (is {})",
            self.status(id)
        );
    }

    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self
                .cmd()
                .args(["delete", "--force", id])
                .stdin(Stdio::null())
                .output();
            remove_test_cgroups(id);
        }
    }
}

/// Every directory a test's cgroup may occupy, in whichever hierarchies exist.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            v.push(e.path().join("kura-test").join(id));
        }
    }
    v.push(Path::new("/sys/fs/cgroup/kura-test").join(id));
    v
}

/// Whether any hierarchy still has the test's cgroup.
pub fn cgroup_exists(id: &str) -> bool {
    cgroup_dirs(id).iter().any(|d| d.is_dir())
}

fn remove_test_cgroups(id: &str) {
    for d in cgroup_dirs(id) {
        let _ = std::fs::remove_dir(&d);
    }
}
