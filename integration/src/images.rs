//! Helpers for the image tests (`tests/images_*.rs`): a private kurad, Debian's
//! docker-registry on a free loopback port (optionally behind htpasswd or a token
//! service), test images from `hack/images/mkimage.py`, and tree comparison.
//! Everything is torn down on drop, also when a test fails.

use crate::{bin, workspace, Scratch};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Which of the tools the image tests need is missing, if any.
pub fn missing_tools() -> Option<String> {
    for t in ["docker-registry", "skopeo", "python3", "zstd", "htpasswd"] {
        if !Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
        {
            return Some(format!("{t} not installed (hack/install-deps.sh)"));
        }
    }
    None
}

fn wait_port(port: u16, what: &str, child: &mut Child) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what} exited early: {st}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub enum RegistryAuth {
    None,
    /// htpasswd basic auth with this user and password.
    Basic(String, String),
    /// Token auth: a token service (run by the test) that grants this user and password.
    Token(String, String),
}

pub struct Registry {
    child: Child,
    pub port: u16,
    token: Option<TokenServer>,
    _dir: Scratch,
}

impl Registry {
    pub fn start(auth: RegistryAuth) -> Registry {
        Self::start_opts(auth, false)
    }

    /// With `tls`, the registry serves https with a self-signed certificate for 127.0.0.1.
    pub fn start_opts(auth: RegistryAuth, tls: bool) -> Registry {
        let dir = Scratch::new("registry");
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: kura-test\n",
            dir.join("data").display()
        );
        if tls {
            let (key, cert) = (dir.join("tls.key"), dir.join("tls.pem"));
            let st = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    "-keyout",
                ])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run openssl");
            assert!(st.success(), "openssl req failed");
            cfg += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        let mut token = None;
        match &auth {
            RegistryAuth::None => {}
            RegistryAuth::Basic(u, p) => {
                let f = dir.join("htpasswd");
                let st = Command::new("htpasswd")
                    .args(["-Bbc"])
                    .arg(&f)
                    .args([u, p])
                    .stderr(Stdio::null())
                    .status()
                    .expect("run htpasswd");
                assert!(st.success(), "htpasswd failed");
                cfg += &format!(
                    "auth:\n  htpasswd:\n    realm: kura-test\n    path: {}\n",
                    f.display()
                );
            }
            RegistryAuth::Token(u, p) => {
                let ts = TokenServer::start(dir.path(), u, p);
                cfg += &format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: kura-registry\n    issuer: kura-test-issuer\n    rootcertbundle: {}\n",
                    ts.port,
                    ts.cert.display()
                );
                token = Some(ts);
            }
        }
        let cfg_path = dir.join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        wait_port(port, "docker-registry", &mut child);
        Registry {
            child,
            port,
            token,
            _dir: dir,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes an OCI layout's tag to `repo:tag` here with skopeo (keeping digests).
    pub fn push_layout(&self, layout: &Path, repo_tag: &str, creds: Option<(&str, &str)>) {
        self.push_layout_as(layout, repo_tag, creds, None)
    }

    /// Like `push_layout`; with `format` (`v2s2`), skopeo converts the manifests to
    /// Docker schema 2 (digests change).
    pub fn push_layout_as(
        &self,
        layout: &Path,
        repo_tag: &str,
        creds: Option<(&str, &str)>,
        format: Option<&str>,
    ) {
        let mut c = Command::new("skopeo");
        c.args(["copy", "--all", "--dest-tls-verify=false"]);
        match format {
            Some(f) => {
                c.arg(format!("--format={f}"));
            }
            None => {
                c.arg("--preserve-digests");
            }
        }
        if let Some((u, p)) = creds {
            c.arg(format!("--dest-creds={u}:{p}"));
        }
        c.arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()));
        let out = c.output().expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.token.take());
    }
}

/// A minimal token service: GET /token?service=..&scope=.. with basic auth, answering a
/// JWT (RS256, signed with the openssl CLI, its certificate in the `x5c` header) that
/// grants pull and push on the asked repository.
pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn b64(data: &[u8], url: bool) -> String {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for ch in data.chunks(3) {
        let n = (ch[0] as u32) << 16
            | (*ch.get(1).unwrap_or(&0) as u32) << 8
            | *ch.get(2).unwrap_or(&0) as u32;
        for i in 0..=ch.len() {
            out.push(STD[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if !url {
            for _ in ch.len()..3 {
                out.push('=');
            }
        }
    }
    if url {
        out = out.replace('+', "-").replace('/', "_");
    }
    out
}

impl TokenServer {
    fn start(dir: &Path, user: &str, pass: &str) -> TokenServer {
        let (key, cert) = (dir.join("token.key"), dir.join("token.pem"));
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=kura-token",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(st.success(), "openssl req failed");
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let x5c = b64(&der, false);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let want = format!("Basic {}", b64(format!("{user}:{pass}").as_bytes(), false));
        let user = user.to_string();
        let thread = std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let mut authz = String::new();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authz = v.trim().to_string();
                        }
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let scope = path
                    .split_once('?')
                    .map(|(_, q)| q)
                    .unwrap_or("")
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("scope="))
                    .map(|s| {
                        s.replace("%3A", ":")
                            .replace("%2C", ",")
                            .replace("%2F", "/")
                    })
                    .unwrap_or_default();
                if authz != want {
                    let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let repo = scope.split(':').nth(1).unwrap_or("").to_string();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": "kura-test-issuer", "sub": user, "aud": "kura-registry",
                    "exp": now + 600, "nbf": now - 60, "iat": now - 60, "jti": format!("{now}-{}", std::process::id()),
                    "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}],
                });
                let signing = format!(
                    "{}.{}",
                    b64(header.to_string().as_bytes(), true),
                    b64(claims.to_string().as_bytes(), true)
                );
                let mut c = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(signing.as_bytes())
                    .unwrap();
                let sig = c.wait_with_output().unwrap().stdout;
                let jwt = format!("{signing}.{}", b64(&sig, true));
                let body = serde_json::json!({"token": jwt, "expires_in": 600}).to_string();
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            }
        });
        TokenServer {
            port,
            cert,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A kurad of its own: socket, root and state in a scratch directory.
pub struct Kurad {
    child: Option<Child>,
    pub dir: Scratch,
    pub sock: PathBuf,
    pub root: PathBuf,
    pub config: PathBuf,
    /// DOCKER_CONFIG for the kura client (credentials).
    pub docker_config: PathBuf,
    env: Vec<(String, String)>,
}

impl Kurad {
    pub fn start(config: &str) -> Kurad {
        Self::start_env(config, &[])
    }

    pub fn start_env(config: &str, env: &[(&str, &str)]) -> Kurad {
        let dir = Scratch::new("kurad");
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut k = Kurad {
            child: None,
            sock: dir.join("kura.sock"),
            root: dir.join("root"),
            config: config_path,
            docker_config: dir.join("docker"),
            env: env
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            dir,
        };
        k.spawn();
        k
    }

    /// Starts (again) the daemon on the same root.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kurad.log"))
            .unwrap();
        let mut c = Command::new(bin("kurad"));
        c.arg("--address")
            .arg(&self.sock)
            .arg("--root")
            .arg(&self.root)
            .arg("--state")
            .arg(self.dir.join("state"))
            .arg("--config")
            .arg(&self.config)
            .arg("--log-level")
            .arg("info")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (a, b) in &self.env {
            c.env(a, b);
        }
        self.child = Some(c.spawn().expect("start kurad"));
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.sock).is_err() {
            if let Ok(Some(st)) = self.child.as_mut().unwrap().try_wait() {
                panic!("kurad exited: {st}\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "kurad did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Replaces the environment kurad gets at its next start.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kurad.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns whether it exited cleanly (status 0).
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kura_cmd(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin("kura"));
        c.arg("--address")
            .arg(&self.sock)
            .arg("-n")
            .arg(ns)
            .args(args)
            .env("DOCKER_CONFIG", &self.docker_config)
            .stdin(Stdio::null());
        c
    }

    pub fn kura(&self, args: &[&str]) -> Output {
        self.kura_ns("default", args)
    }

    pub fn kura_ns(&self, ns: &str, args: &[&str]) -> Output {
        self.kura_cmd(ns, args).output().expect("run kura")
    }

    /// Runs kura, panics (with both outputs and kurad's log) unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_ns("default", args)
    }

    /// `run -d --name NAME --network NET -p MAP IMAGE sleep 100`: a detached container
    /// publishing one port.
    pub fn run_published(&self, name: &str, net: &str, map: &str, image: &str) -> String {
        self.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            net,
            "-p",
            map,
            image,
            "sleep",
            "100",
        ])
    }

    pub fn ok_ns(&self, ns: &str, args: &[&str]) -> String {
        let o = self.kura_ns(ns, args);
        assert!(
            o.status.success(),
            "kura {args:?} failed:\nstdout: {}\nstderr: {}\nkurad log (tail): {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// Runs kura, panics unless it fails; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.kura(args);
        assert!(
            !o.status.success(),
            "kura {args:?} should have failed: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).to_string()
    }

    /// Every blob file and snapshot directory on disk (to look for orphans).
    pub fn disk_objects(&self) -> (Vec<String>, Vec<String>) {
        let list = |p: PathBuf| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().to_string())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        let blobs = list(self.root.join("content/blobs/sha256"));
        let mut snaps = list(self.root.join("snapshots/overlayfs"));
        snaps.extend(
            list(self.root.join("snapshots/native"))
                .into_iter()
                .map(|s| format!("native/{s}")),
        );
        (blobs, snaps)
    }
}

/// A kurad of its own with the busybox test image loaded as `image`; None (the reason
/// printed) when the tools the image is built with are missing.
pub fn kurad_with_busybox(image: &str) -> Option<Kurad> {
    if let Some(m) = missing_tools() {
        eprintln!("SKIP: {m}");
        return None;
    }
    let k = Kurad::start("");
    k.load_busybox(image);
    Some(k)
}

impl Kurad {
    /// A container's `State` as `kura inspect` shows it.
    pub fn container_state(&self, id: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", id])).unwrap();
        v["State"].clone()
    }

    /// How many network attachment records kurad holds (namespace `default`).
    pub fn attachment_records(&self) -> usize {
        std::fs::read_dir(self.dir.join("state/networks/default"))
            .map(|r| r.count())
            .unwrap_or(0)
    }

    /// Loads the `busybox` test image (mkimage.py) under `name` with `kura load`.
    pub fn load_busybox(&self, name: &str) {
        let layout = build_image("busybox", self.dir.path());
        let tar = self.dir.join("busybox.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success(), "tar the busybox layout");
        self.ok(&["load", "-i", tar.to_str().unwrap(), "--name", name]);
    }

    /// Containers outlive kurad by design: a test's are removed with it, whatever the
    /// test left running.
    fn remove_containers(&self) {
        if self.child.is_none() {
            return;
        }
        let o = self.kura(&["ps", "-a", "-q"]);
        for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            let _ = self.kura(&["rm", "-f", id]);
        }
        // Networks are host-wide (a bridge each): a test's go with it.
        let o = self.kura(&["network", "ls", "-q"]);
        for n in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            if n != "kura" {
                let _ = self.kura(&["network", "rm", n]);
            }
        }
    }
}

impl Drop for Kurad {
    fn drop(&mut self) {
        self.remove_containers();
        if !self.stop() {
            eprintln!(
                "kurad did not stop cleanly; its log:\n{}",
                tail(&self.log(), 40)
            );
        }
        crate::unmount_below(self.dir.path());
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

/// Builds a test image layout of `kind` (see hack/images/mkimage.py) in `dir`.
pub fn build_image(kind: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("image-{kind}"));
    let o = Command::new("python3")
        .arg(workspace().join("hack/images/mkimage.py"))
        .arg(kind)
        .arg(&out)
        .output()
        .expect("run mkimage.py");
    assert!(
        o.status.success(),
        "mkimage.py {kind} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A file tree as (path → description): type, mode, owner, size+content hash, link
/// target, device, hardlink count, mtime of non-directories, user xattrs.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            let mut desc = format!("mode={:o} uid={} gid={}", m.mode(), m.uid(), m.gid());
            if ft.is_symlink() {
                desc += &format!(" -> {}", std::fs::read_link(&p).unwrap().display());
            } else if ft.is_file() {
                let mut h: u64 = 1469598103934665603;
                let mut f = std::fs::File::open(&p).unwrap();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    for b in &buf[..n] {
                        h = (h ^ *b as u64).wrapping_mul(1099511628211);
                    }
                }
                desc += &format!(
                    " size={} hash={h:x} nlink={} mtime={}",
                    m.len(),
                    m.nlink(),
                    m.mtime()
                );
            } else if ft.is_char_device() || ft.is_block_device() {
                desc += &format!(" rdev={}", m.rdev());
            } else if ft.is_dir() {
                stack.push(p.clone());
            }
            for x in xattrs(&p) {
                desc += &format!(" xattr:{x}");
            }
            out.insert(rel, desc);
        }
    }
    out
}

fn xattrs(p: &Path) -> Vec<String> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return vec![];
    }
    let mut out: Vec<String> = buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| s.starts_with(b"user."))
        .map(|s| {
            let name = std::ffi::CString::new(s).unwrap();
            let mut v = vec![0u8; 256];
            let r = unsafe {
                libc::lgetxattr(c.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len())
            };
            v.truncate(r.max(0) as usize);
            format!(
                "{}={}",
                String::from_utf8_lossy(s),
                String::from_utf8_lossy(&v)
            )
        })
        .collect();
    out.sort();
    out
}

/// Differences between two trees, one line each.
pub fn diff_trees(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if a.get(k) != b.get(k) {
            out.push(format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)));
        }
    }
    out
}
