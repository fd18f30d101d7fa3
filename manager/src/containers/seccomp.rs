//! kura's default seccomp profile. docker's default profile is an allow-list of ~350
//! syscalls; ours is the complement that matters: everything is allowed except the
//! syscalls docker keeps from unprivileged containers (kernel modules, kexec, mount
//! and namespace plumbing, keyrings, clock setting, ptrace of others, bpf, perf,
//! userfaultfd, handle-based opens…), each denied with EPERM, and given back when the
//! capability that docker ties it to is added. A deny-list is shorter to audit and does
//! not break programs that use syscalls newer than the list; the price is that a brand
//! new dangerous syscall is allowed until it is added here.

use anyhow::{bail, Result};
use serde_json::{json, Value};

/// (syscalls, the capability that allows them; "" = never allowed without --privileged)
const DENIED: &[(&[&str], &str)] = &[
    (
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "open_tree",
            "move_mount",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "mount_setattr",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "name_to_handle_at",
        ],
        "CAP_SYS_ADMIN",
    ),
    (&["bpf"], "CAP_BPF"),
    (&["perf_event_open"], "CAP_PERFMON"),
    (
        &["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"],
        "CAP_SYS_PTRACE",
    ),
    (
        &[
            "init_module",
            "finit_module",
            "delete_module",
            "create_module",
            "query_module",
            "get_kernel_syms",
        ],
        "CAP_SYS_MODULE",
    ),
    (&["kexec_load", "kexec_file_load", "reboot"], "CAP_SYS_BOOT"),
    (
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
        ],
        "CAP_SYS_TIME",
    ),
    (&["acct"], "CAP_SYS_PACCT"),
    (&["iopl", "ioperm"], "CAP_SYS_RAWIO"),
    (&["open_by_handle_at"], "CAP_DAC_READ_SEARCH"),
    (&["swapon", "swapoff", "vhangup"], "CAP_SYS_ADMIN"),
    (
        &["mbind", "set_mempolicy", "move_pages", "get_mempolicy"],
        "CAP_SYS_NICE",
    ),
    (&["syslog"], "CAP_SYSLOG"),
    (
        &[
            "add_key",
            "request_key",
            "keyctl",
            "uselib",
            "userfaultfd",
            "ustat",
            "sysfs",
            "_sysctl",
            "nfsservctl",
            "vm86",
            "vm86old",
        ],
        "",
    ),
];

fn architectures() -> Value {
    if cfg!(target_arch = "aarch64") {
        json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
    } else {
        json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    }
}

/// The default profile for a container with `caps`.
pub fn default_profile(caps: &[String]) -> Value {
    let mut names: Vec<&str> = Vec::new();
    for (calls, cap) in DENIED {
        if cap.is_empty() || !caps.iter().any(|c| c == cap) {
            names.extend(calls.iter());
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures(),
        "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    })
}

/// A docker-format profile (`--security-opt seccomp=FILE`) as an OCI `linux.seccomp`:
/// `archMap` flattened to architectures, rules filtered by `includes.caps` /
/// `excludes.caps` against the container's capabilities.
pub fn from_docker_profile(p: &Value, caps: &[String]) -> Result<Value> {
    let Some(default) = p["defaultAction"].as_str() else {
        bail!("seccomp profile: defaultAction missing");
    };
    let mut arches: Vec<Value> = p["architectures"].as_array().cloned().unwrap_or_default();
    if let Some(map) = p["archMap"].as_array() {
        for a in map {
            arches.push(a["architecture"].clone());
            arches.extend(
                a["subArchitectures"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
    }
    let has = |v: &Value| {
        v.as_array().map_or(true, |need| {
            need.iter()
                .all(|c| c.as_str().is_some_and(|c| caps.iter().any(|x| x == c)))
        })
    };
    let mut rules = Vec::new();
    for r in p["syscalls"].as_array().cloned().unwrap_or_default() {
        if !has(&r["includes"]["caps"]) {
            continue;
        }
        if r["excludes"]["caps"].as_array().is_some_and(|ex| {
            ex.iter()
                .any(|c| c.as_str().is_some_and(|c| caps.iter().any(|x| x == c)))
        }) {
            continue;
        }
        let mut r = r.clone();
        if let Some(o) = r.as_object_mut() {
            o.remove("includes");
            o.remove("excludes");
            o.remove("comment");
        }
        rules.push(r);
    }
    let mut out = json!({"defaultAction": default, "architectures": arches, "syscalls": rules});
    if let Some(e) = p.get("defaultErrnoRet") {
        out["defaultErrnoRet"] = e.clone();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_give_syscalls_back() {
        let base = default_profile(&[]);
        let denied = base["syscalls"][0]["names"].as_array().unwrap().clone();
        assert!(denied.contains(&json!("mount")) && denied.contains(&json!("ptrace")));
        let admin = default_profile(&["CAP_SYS_ADMIN".into()]);
        let denied = admin["syscalls"][0]["names"].as_array().unwrap().clone();
        assert!(!denied.contains(&json!("mount")) && denied.contains(&json!("keyctl")));
    }
}
