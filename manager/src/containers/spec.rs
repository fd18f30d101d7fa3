//! The OCI runtime spec of a container, generated from its image's config and the
//! user's options, with the defaults docker and containerd give: docker's default
//! capability set, masked and readonly paths, /dev/shm, /etc/hostname, /etc/hosts,
//! /etc/resolv.conf, and a seccomp profile of our own (`seccomp.rs`).

use super::options::{Network, RunOptions};
use super::seccomp;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;

/// docker's default capabilities.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub struct Input<'a> {
    pub id: &'a str,
    pub namespace: &'a str,
    /// The image's config blob (OCI or Docker).
    pub image_config: &'a [u8],
    /// The container's root filesystem, mounted (to read /etc/passwd and /etc/group).
    pub rootfs: &'a Path,
    /// Where /etc/hostname, /etc/hosts and /etc/resolv.conf are written.
    pub etc_dir: &'a Path,
    pub opts: &'a RunOptions,
    /// The network namespace to join (kurad's for none/bridge, another container's);
    /// None with `container:` means that container is on the host's network.
    pub netns: Option<&'a Path>,
}

pub struct Generated {
    pub spec: Value,
    pub stop_signal: Option<String>,
}

fn normalize_cap(c: &str) -> String {
    let u = c.to_ascii_uppercase();
    if u.starts_with("CAP_") || u == "ALL" {
        u
    } else {
        format!("CAP_{u}")
    }
}

/// The capability set after --privileged, --cap-add and --cap-drop.
pub fn capabilities(o: &RunOptions) -> Result<Vec<String>> {
    let mut caps: Vec<String> = if o.privileged {
        ALL_CAPS.iter().map(|s| s.to_string()).collect()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    for c in &o.cap_drop {
        let c = normalize_cap(c);
        if c == "ALL" {
            caps.clear();
        } else if !ALL_CAPS.contains(&c.as_str()) {
            bail!("--cap-drop {c}: unknown capability");
        } else {
            caps.retain(|x| *x != c);
        }
    }
    for c in &o.cap_add {
        let c = normalize_cap(c);
        if c == "ALL" {
            caps = ALL_CAPS.iter().map(|s| s.to_string()).collect();
        } else if !ALL_CAPS.contains(&c.as_str()) {
            bail!("--cap-add {c}: unknown capability");
        } else if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

pub fn generate(i: &Input) -> Result<Generated> {
    let o = i.opts;
    let img: Value = serde_json::from_slice(i.image_config).context("parse image config")?;
    let cfg = &img["config"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    // docker: --entrypoint replaces the image's and drops its Cmd; a command replaces Cmd.
    let (entry, img_cmd) = match &o.entrypoint {
        Some(e) => (e.clone(), Vec::new()),
        None => (strings(&cfg["Entrypoint"]), strings(&cfg["Cmd"])),
    };
    let cmd = if o.cmd.is_empty() {
        img_cmd
    } else {
        o.cmd.clone()
    };
    let args: Vec<String> = entry.into_iter().chain(cmd).collect();
    if args.is_empty() {
        bail!("no command specified: the image has no Entrypoint or Cmd, and none was given");
    }

    let hostname = o
        .hostname
        .clone()
        .unwrap_or_else(|| i.id.chars().take(12).collect());
    let mut env: Vec<String> = strings(&cfg["Env"]);
    let set_env = |env: &mut Vec<String>, kv: &str| {
        let k = kv.split('=').next().unwrap_or(kv);
        env.retain(|e| e.split('=').next() != Some(k));
        env.push(kv.to_string());
    };
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    set_env(&mut env, &format!("HOSTNAME={hostname}"));
    if o.tty {
        set_env(&mut env, "TERM=xterm");
    }
    for kv in &o.env {
        if !kv.contains('=') {
            bail!("-e {kv:?}: expected KEY=VALUE");
        }
        set_env(&mut env, kv);
    }
    let cwd = o
        .workdir
        .clone()
        .or_else(|| cfg["WorkingDir"].as_str().map(String::from))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        bail!("working directory {cwd:?} must be an absolute path");
    }
    let user_spec = o
        .user
        .clone()
        .or_else(|| cfg["User"].as_str().map(String::from))
        .unwrap_or_default();
    let user = super::user::resolve(i.rootfs, &user_spec)?;

    let caps = capabilities(o)?;
    let mut no_new_privs = false;
    let mut seccomp_profile = if o.privileged {
        None
    } else {
        Some(seccomp::default_profile(&caps))
    };
    for s in &o.security_opt {
        let (k, v) = s.split_once(['=', ':']).unwrap_or((s.as_str(), ""));
        match k {
            "no-new-privileges" => no_new_privs = v.is_empty() || v == "true",
            "seccomp" if v == "unconfined" => seccomp_profile = None,
            "seccomp" => {
                let raw = std::fs::read(v).with_context(|| format!("--security-opt {s}"))?;
                let p: Value = serde_json::from_slice(&raw)
                    .with_context(|| format!("--security-opt {s}: not JSON"))?;
                seccomp_profile = Some(seccomp::from_docker_profile(&p, &caps)?);
            }
            "apparmor" | "label" => {
                bail!("--security-opt {s}: this host has neither AppArmor nor SELinux support in kura yet")
            }
            _ => bail!("--security-opt {s:?}: unknown option (seccomp=, no-new-privileges)"),
        }
    }

    // /etc files of our own, bind-mounted.
    std::fs::create_dir_all(i.etc_dir)?;
    let host_net = o.network == Network::Host;
    let hostname_file = i.etc_dir.join("hostname");
    std::fs::write(&hostname_file, format!("{hostname}\n"))?;
    let hosts_file = i.etc_dir.join("hosts");
    let mut hosts = if host_net {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n")
    };
    for h in &o.add_hosts {
        let (name, ip) = h
            .split_once(':')
            .with_context(|| format!("--add-host {h:?}: expected NAME:IP"))?;
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    std::fs::write(&hosts_file, hosts)?;
    let resolv_file = i.etc_dir.join("resolv.conf");
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = if !o.dns.is_empty() {
        o.dns.iter().map(|d| format!("nameserver {d}\n")).collect()
    } else if host_net {
        host_resolv
    } else {
        // A loopback resolver of the host is not reachable from another netns.
        host_resolv
            .lines()
            .filter(|l| !l.trim_start().starts_with("nameserver 127."))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    std::fs::write(&resolv_file, resolv)?;

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if o.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for (dst, f) in [
        ("/etc/hostname", &hostname_file),
        ("/etc/hosts", &hosts_file),
        ("/etc/resolv.conf", &resolv_file),
    ] {
        mounts.push(json!({"destination": dst, "type": "bind", "source": f, "options": ["rbind", "rprivate"]}));
    }
    // Image volumes: anonymous, writable, removed with the container.
    if let Some(vols) = cfg["Volumes"].as_object() {
        for (n, dst) in vols.keys().enumerate() {
            let dir = i.etc_dir.join("volumes").join(n.to_string());
            std::fs::create_dir_all(&dir)?;
            mounts.push(json!({"destination": dst, "type": "bind", "source": dir, "options": ["rbind", "rprivate"]}));
        }
    }
    for b in &o.binds {
        let mut opts = vec!["rbind", "rprivate"];
        if b.readonly {
            opts.push("ro");
        }
        mounts.push(json!({"destination": b.destination, "type": "bind", "source": b.source, "options": opts}));
    }
    for t in &o.tmpfs {
        let mut opts: Vec<String> = vec!["nosuid".into(), "nodev".into()];
        opts.extend(
            t.options
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
        mounts.push(json!({"destination": t.destination, "type": "tmpfs", "source": "tmpfs", "options": opts}));
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    match (&o.network, i.netns) {
        (Network::Host, _) => {}
        (Network::Netns(p), _) => namespaces.push(json!({"type": "network", "path": p})),
        (_, Some(p)) => namespaces.push(json!({"type": "network", "path": p})),
        (Network::Container(_), None) => {}
        (_, None) => namespaces.push(json!({"type": "network"})),
    }

    let mut resources = json!({
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"}
        ]
    });
    if o.privileged {
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
    }
    if let Some(m) = o.memory {
        resources["memory"] = json!({"limit": m});
    }
    if let Some(c) = o.cpus {
        if c <= 0.0 {
            bail!("--cpus {c}: must be positive");
        }
        resources["cpu"] = json!({"quota": (c * 100_000.0) as i64, "period": 100_000});
    }
    if let Some(p) = o.pids_limit {
        resources["pids"] = json!({"limit": p});
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": format!("/kura/{}/{}", i.namespace, i.id),
    });
    if !o.privileged {
        linux["maskedPaths"] = json!(MASKED);
        linux["readonlyPaths"] = json!(READONLY);
    }
    if let Some(p) = seccomp_profile {
        linux["seccomp"] = p;
    }
    let mut user_json = json!({"uid": user.uid, "gid": user.gid});
    if !user.additional_gids.is_empty() {
        user_json["additionalGids"] = json!(user.additional_gids);
    }
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": o.tty,
            "user": user_json,
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": no_new_privs,
        },
        "root": {"path": i.rootfs, "readonly": o.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    });
    Ok(Generated {
        spec,
        stop_signal: cfg["StopSignal"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(cfg: Value, o: &RunOptions) -> Result<Generated> {
        // Tests run in parallel: each call its own directory.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("kura-spec-{}-{n}", std::process::id()));
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\nwww:x:34:\nextra:x:99:www\n",
        )
        .unwrap();
        let raw = serde_json::to_vec(&json!({"config": cfg})).unwrap();
        let out = generate(&Input {
            id: "0123456789abcdef",
            namespace: "default",
            image_config: &raw,
            rootfs: &rootfs,
            etc_dir: &dir.join("etc"),
            opts: o,
            netns: None,
        });
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    #[test]
    fn entrypoint_cmd_env_workdir() {
        let cfg = json!({"Entrypoint": ["/bin/ep"], "Cmd": ["a"], "Env": ["A=1", "PATH=/x"], "WorkingDir": "/w", "StopSignal": "SIGQUIT"});
        let g = gen(cfg.clone(), &RunOptions::default()).unwrap();
        assert_eq!(g.spec["process"]["args"], json!(["/bin/ep", "a"]));
        assert_eq!(g.spec["process"]["cwd"], "/w");
        assert_eq!(g.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(g.spec["hostname"], "0123456789ab");
        let o = RunOptions {
            cmd: vec!["b".into()],
            env: vec!["A=2".into()],
            ..Default::default()
        };
        let g = gen(cfg.clone(), &o).unwrap();
        assert_eq!(g.spec["process"]["args"], json!(["/bin/ep", "b"]));
        let env = g.spec["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!("A=2")) && !env.contains(&json!("A=1")));
        assert!(env.contains(&json!("PATH=/x")));
        let o = RunOptions {
            entrypoint: Some(vec!["/bin/sh".into()]),
            ..Default::default()
        };
        assert_eq!(
            gen(cfg, &o).unwrap().spec["process"]["args"],
            json!(["/bin/sh"])
        );
        assert!(gen(json!({}), &RunOptions::default())
            .err()
            .unwrap()
            .to_string()
            .contains("no command"));
    }

    #[test]
    fn users_caps_and_security() {
        let cfg = json!({"Cmd": ["sh"], "User": "www"});
        let g = gen(cfg, &RunOptions::default()).unwrap();
        assert_eq!(g.spec["process"]["user"]["uid"], 33);
        assert_eq!(g.spec["process"]["user"]["gid"], 34);
        assert_eq!(g.spec["process"]["user"]["additionalGids"], json!([99]));
        let o = RunOptions {
            user: Some("nobody-here".into()),
            ..Default::default()
        };
        assert!(gen(json!({"Cmd": ["sh"]}), &o)
            .err()
            .unwrap()
            .to_string()
            .contains("nobody-here"));
        let o = RunOptions {
            cap_add: vec!["sys_admin".into()],
            cap_drop: vec!["NET_RAW".into()],
            ..Default::default()
        };
        let caps = capabilities(&o).unwrap();
        assert!(caps.contains(&"CAP_SYS_ADMIN".into()) && !caps.contains(&"CAP_NET_RAW".into()));
        let o = RunOptions {
            cap_add: vec!["CAP_FLY".into()],
            ..Default::default()
        };
        assert!(capabilities(&o).is_err());
        let o = RunOptions {
            security_opt: vec!["seccomp=unconfined".into()],
            ..Default::default()
        };
        assert!(gen(json!({"Cmd": ["sh"]}), &o).unwrap().spec["linux"]["seccomp"].is_null());
        let o = RunOptions {
            security_opt: vec!["bogus=1".into()],
            ..Default::default()
        };
        assert!(gen(json!({"Cmd": ["sh"]}), &o).is_err());
    }
}
