//! Loading and validating a bundle's config.json.
//!
//! Everything that can be checked before a process is forked is checked here, so that
//! bad input fails before anything (state dir, cgroup, mount) exists to clean up.

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{
    LinuxDeviceCgroup, LinuxDeviceType, LinuxNamespaceType, LinuxResources, Process, Spec,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A parsed config.json together with the bytes it came from (copied verbatim into the
/// state dir so later commands see the config as it was at create time).
pub struct Bundle {
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub spec: Spec,
    pub raw: Vec<u8>,
}

/// Reads and validates `<bundle>/config.json`, resolving the rootfs against the bundle.
pub fn load_bundle(bundle: &Path) -> Result<Bundle> {
    let dir = std::fs::canonicalize(bundle)
        .with_context(|| format!("bundle {}: cannot open", bundle.display()))?;
    let cfg = dir.join("config.json");
    let raw =
        std::fs::read(&cfg).with_context(|| format!("bundle: cannot read {}", cfg.display()))?;
    let spec = parse(&raw).with_context(|| format!("{}", cfg.display()))?;
    let root = spec
        .root()
        .as_ref()
        .context("config.json: root: missing (root.path names the container's rootfs)")?;
    let rootfs = dir.join(root.path());
    let rootfs = std::fs::canonicalize(&rootfs)
        .with_context(|| format!("root.path: rootfs {} does not exist", rootfs.display()))?;
    if !rootfs.is_dir() {
        bail!("root.path: {} is not a directory", rootfs.display());
    }
    validate(&spec)?;
    Ok(Bundle {
        dir,
        rootfs,
        spec,
        raw,
    })
}

/// Parses config bytes. serde's message carries the line and column of the bad field.
pub fn parse(raw: &[u8]) -> Result<Spec> {
    let s = std::str::from_utf8(raw).map_err(|e| {
        anyhow::anyhow!("config.json is not valid UTF-8 (byte {})", e.valid_up_to())
    })?;
    // serde_path_to_error names the field at fault ("linux.namespaces[2].type"), which
    // serde_json alone reports only as a line and column.
    let de = &mut serde_json::Deserializer::from_str(s);
    let spec: Spec = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        anyhow::anyhow!("config.json: {path}: {inner}")
    })?;
    Ok(spec)
}

/// Semantic checks that serde cannot express. Each error names the field at fault.
pub fn validate(spec: &Spec) -> Result<()> {
    let ver = spec.version();
    if !ver.starts_with("1.") {
        bail!("ociVersion: {ver:?} is not supported (want 1.x)");
    }
    // A config without a process may be created (the spec says `start` must then
    // fail), so only a present process is checked.
    if let Some(process) = spec.process() {
        validate_process(process, "process")?;
    }
    if let Some(hooks) = spec.hooks() {
        let all = [
            ("prestart", hooks.prestart()),
            ("createRuntime", hooks.create_runtime()),
            ("createContainer", hooks.create_container()),
            ("startContainer", hooks.start_container()),
            ("poststart", hooks.poststart()),
            ("poststop", hooks.poststop()),
        ];
        for (name, list) in all {
            for (i, h) in list.iter().flatten().enumerate() {
                if !h.path().is_absolute() {
                    bail!(
                        "hooks.{name}[{i}].path: {:?} must be an absolute path",
                        h.path().display()
                    );
                }
                if let Some(t) = h.timeout() {
                    if t <= 0 {
                        bail!("hooks.{name}[{i}].timeout: must be positive, got {t}");
                    }
                }
                // createContainer hooks resolve in the container's mount namespace, which is
                // not there yet; the others resolve on the host and must exist now.
                if name != "startContainer" && !h.path().exists() {
                    bail!(
                        "hooks.{name}[{i}].path: {} does not exist",
                        h.path().display()
                    );
                }
            }
        }
    }
    let linux = spec
        .linux()
        .as_ref()
        .context("linux: missing (kura-runtime runs Linux containers)")?;
    let mut seen = HashSet::new();
    let mut has_user = false;
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        if !seen.insert(ns.typ()) {
            bail!("linux.namespaces[{i}]: {} namespace given twice", ns.typ());
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                bail!(
                    "linux.namespaces[{i}].path: {:?} must be absolute",
                    p.display()
                );
            }
            if !p.exists() {
                bail!("linux.namespaces[{i}].path: {} does not exist", p.display());
            }
        }
        if ns.typ() == LinuxNamespaceType::User {
            has_user = true;
        }
    }
    let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if has_maps && !has_user {
        bail!("linux.uidMappings: mappings need a user namespace in linux.namespaces");
    }
    for (field, maps) in [
        ("uidMappings", linux.uid_mappings()),
        ("gidMappings", linux.gid_mappings()),
    ] {
        for (i, m) in maps.iter().flatten().enumerate() {
            if m.size() == 0 {
                bail!("linux.{field}[{i}].size: must be at least 1");
            }
            if m.host_id().checked_add(m.size()).is_none()
                || m.container_id().checked_add(m.size()).is_none()
            {
                bail!("linux.{field}[{i}]: range overflows 32 bits");
            }
        }
    }
    let new_user = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    if new_user && !has_maps {
        bail!("linux.uidMappings: a new user namespace needs uidMappings and gidMappings");
    }
    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            if key.contains("..") || key.starts_with('/') || key.is_empty() {
                bail!("linux.sysctl: invalid key {key:?}");
            }
        }
    }
    if let Some(devs) = linux.devices() {
        for (i, d) in devs.iter().enumerate() {
            if !d.path().is_absolute() {
                bail!(
                    "linux.devices[{i}].path: {:?} must be absolute",
                    d.path().display()
                );
            }
        }
    }
    if let Some(p) = linux.rootfs_propagation() {
        if crate::rootfs::propagation_flag(p).is_none() {
            bail!("linux.rootfsPropagation: unknown value {p:?}");
        }
    }
    let has = |t: LinuxNamespaceType| seen.contains(&t);
    if (spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) || spec.domainname().is_some())
        && !has(LinuxNamespaceType::Uts)
    {
        bail!("hostname: setting a hostname or domainname needs a uts namespace");
    }
    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            check_sysctl(key, &has)?;
        }
    }
    if let Some(offs) = linux.time_offsets() {
        if !offs.is_empty()
            && !linux
                .namespaces()
                .iter()
                .flatten()
                .any(|n| n.typ() == LinuxNamespaceType::Time && n.path().is_none())
        {
            bail!("linux.timeOffsets: needs a new time namespace in linux.namespaces");
        }
    }
    if let Some(mounts) = spec.mounts() {
        for (i, m) in mounts.iter().enumerate() {
            crate::rootfs::options::parse(m.options().as_deref().unwrap_or(&[]))
                .with_context(|| format!("mounts[{i}].options"))?;
        }
    }
    Ok(())
}

/// A sysctl may be set only when the container owns the namespace it belongs to;
/// otherwise it would change the host (runc refuses the same list).
fn check_sysctl(key: &str, has: &dyn Fn(LinuxNamespaceType) -> bool) -> Result<()> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        if !has(LinuxNamespaceType::Ipc) {
            bail!("linux.sysctl: {key} needs an ipc namespace");
        }
        return Ok(());
    }
    if key.starts_with("net.") {
        if !has(LinuxNamespaceType::Network) {
            bail!("linux.sysctl: {key} needs a network namespace");
        }
        return Ok(());
    }
    if key == "kernel.hostname" || key == "kernel.domainname" {
        if !has(LinuxNamespaceType::Uts) {
            bail!("linux.sysctl: {key} needs a uts namespace");
        }
        return Ok(());
    }
    bail!("linux.sysctl: {key} is not namespaced: setting it would change the host")
}

/// Checks a process (the container's, or one given to `exec`).
pub fn validate_process(process: &Process, field: &str) -> Result<()> {
    match process.args() {
        Some(a) if !a.is_empty() && !a[0].is_empty() => {
            for (i, arg) in a.iter().enumerate() {
                if arg.contains('\0') {
                    bail!("{field}.args[{i}]: contains a NUL byte");
                }
            }
        }
        _ => bail!("{field}.args: must name the program to run"),
    }
    if !process.cwd().is_absolute() {
        bail!(
            "{field}.cwd: {:?} must be an absolute path",
            process.cwd().display()
        );
    }
    for (i, e) in process.env().iter().flatten().enumerate() {
        if !e.contains('=') || e.starts_with('=') {
            bail!("{field}.env[{i}]: {e:?} is not KEY=VALUE");
        }
        if e.contains('\0') {
            bail!("{field}.env[{i}]: contains a NUL byte");
        }
    }
    if let Some(rl) = process.rlimits() {
        let mut seen = HashSet::new();
        for (i, r) in rl.iter().enumerate() {
            if !seen.insert(r.typ().to_string()) {
                bail!("{field}.rlimits[{i}]: {} is given twice", r.typ());
            }
            if r.soft() > r.hard() {
                bail!(
                    "{field}.rlimits[{i}]: soft limit {} is above hard limit {}",
                    r.soft(),
                    r.hard()
                );
            }
        }
    }
    if let Some(p) = process.io_priority() {
        if !(0..=7).contains(&p.priority()) {
            bail!(
                "{field}.ioPriority.priority: {} is outside 0..7",
                p.priority()
            );
        }
    }
    if let Some(a) = process.exec_cpu_affinity() {
        for (name, v) in [("initial", a.initial()), ("final", a.cpu_affinity_final())] {
            if let Some(list) = v {
                crate::security::sched::parse_cpus(list)
                    .with_context(|| format!("{field}.execCPUAffinity.{name}"))?;
            }
        }
    }
    Ok(())
}

/// The container's resources plus cgroup device rules for the nodes every
/// container gets (and those in linux.devices), as runc adds them.
pub fn resources_with_defaults(spec: &Spec) -> LinuxResources {
    let linux = spec.linux().as_ref();
    let mut r = linux
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let mut rules = r.devices().clone().unwrap_or_default();
    let mut allow = |t: char, major: i64, minor: i64| {
        let typ = match t {
            'b' => LinuxDeviceType::B,
            'p' => LinuxDeviceType::P,
            _ => LinuxDeviceType::C,
        };
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(true);
        d.set_typ(Some(typ));
        d.set_major(Some(major));
        d.set_minor((minor >= 0).then_some(minor));
        d.set_access(Some("rwm".into()));
        rules.push(d);
    };
    for &(_, t, ma, mi) in crate::rootfs::devices::DEFAULT_DEVICES {
        allow(t, ma, mi);
    }
    for &(t, ma, mi) in crate::rootfs::devices::DEFAULT_CGROUP_EXTRA {
        allow(t, ma, mi);
    }
    for d in linux
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        // FIFOs are not device nodes the devices cgroup controls.
        let t = crate::rootfs::devices::type_char(d.typ());
        if t != 'p' {
            allow(t, d.major(), d.minor());
        }
    }
    r.set_devices(Some(rules));
    r
}

/// Resources after `update`: what `new` sets replaces what `old` had, field by field.
pub fn merge_resources(old: LinuxResources, new: &LinuxResources) -> LinuxResources {
    fn merge(a: &mut serde_json::Value, b: &serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) if !b.is_null() => *a = b.clone(),
            _ => {}
        }
    }
    let mut a = serde_json::to_value(&old).unwrap_or_default();
    let b = serde_json::to_value(new).unwrap_or_default();
    merge(&mut a, &b);
    serde_json::from_value(a).unwrap_or(old)
}

/// The namespaces the config asks for, split into those to create and those to join.
pub fn namespaces(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .map(|v| v.iter().map(|n| (n.typ(), n.path().clone())).collect())
        .unwrap_or_default()
}
