//! Bad input gets one clear error naming the field or path, a non-zero exit, and
//! leaves nothing behind: no state dir, no cgroup, no process.

use kura_integration::require_root;
use kura_integration::runtime::{cgroup_exists, Rt};
use serde_json::json;

/// Creates `id` with the current config, expects failure mentioning `needle`, and
/// checks that nothing is left.
fn refused(rt: &mut Rt, id: &str, needle: &str) {
    let out = rt.create(id);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "create succeeded, expected an error about {needle}"
    );
    assert!(
        err.contains(needle),
        "error {err:?} does not mention {needle:?}"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one clear error line, got {err:?}"
    );
    assert!(!rt.state_dir(id).exists(), "state dir left behind for {id}");
    assert!(!cgroup_exists(id), "cgroup left behind for {id}");
    let procs = std::process::Command::new("pgrep")
        .args(["-f", id])
        .output()
        .unwrap();
    assert!(
        procs.stdout.is_empty(),
        "process left behind: {}",
        String::from_utf8_lossy(&procs.stdout)
    );
}

#[test]
fn malformed_json() {
    require_root!();
    let mut rt = Rt::new("bad-json");
    let id = rt.id("json");
    rt.write_config(&id);
    std::fs::write(
        rt.bundle.join("config.json"),
        b"{\"ociVersion\": \"1.0.0\", \"process\": [}",
    )
    .unwrap();
    let b = rt.bundle.to_string_lossy().into_owned();
    let out = rt.rt(&["create", "--bundle", &b, &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.json"));
    assert!(!rt.state_dir(&id).exists());

    std::fs::write(
        rt.bundle.join("config.json"),
        b"{\"ociVersion\": \"1.0.0\", \"hostname\": \"\xff\xfe\"}",
    )
    .unwrap();
    let out = rt.rt(&["create", "--bundle", &b, &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid UTF-8"));
    assert!(!rt.state_dir(&id).exists());
}

#[test]
fn unknown_namespace_names_the_field() {
    require_root!();
    let mut rt = Rt::new("bad-ns");
    let id = rt.id("ns");
    rt.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "bogus"}));
    refused(&mut rt, &id, "linux.namespaces[6].type");
}

#[test]
fn missing_rootfs() {
    require_root!();
    let mut rt = Rt::new("bad-rootfs");
    let id = rt.id("rootfs");
    rt.config["root"]["path"] = json!("no-such-rootfs");
    refused(&mut rt, &id, "root.path");
}

#[test]
fn impossible_mapping() {
    require_root!();
    let mut rt = Rt::new("bad-map");
    let id = rt.id("map");
    rt.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    rt.config["linux"]["uidMappings"] =
        json!([{"containerID": 0, "hostID": 4294967000u64, "size": 65536}]);
    rt.config["linux"]["gidMappings"] =
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    refused(&mut rt, &id, "linux.uidMappings[0]");
}

#[test]
fn overlapping_mapping_refused_by_kernel() {
    require_root!();
    let mut rt = Rt::new("bad-map2");
    let id = rt.id("map2");
    rt.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    rt.config["linux"]["uidMappings"] = json!([
        {"containerID": 0, "hostID": 100000, "size": 1000},
        {"containerID": 500, "hostID": 200000, "size": 1000}
    ]);
    rt.config["linux"]["gidMappings"] =
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    refused(&mut rt, &id, "uidMappings");
}

#[test]
fn missing_hook_binary() {
    require_root!();
    let mut rt = Rt::new("bad-hook");
    let id = rt.id("hook");
    rt.config["hooks"] = json!({"createRuntime": [{"path": "/no/such/hook"}]});
    refused(&mut rt, &id, "hooks.createRuntime[0].path");
}

#[test]
fn missing_process_binary() {
    require_root!();
    let mut rt = Rt::new("bad-exe");
    let id = rt.id("exe");
    rt.args(&["no-such-program", "arg"]);
    refused(&mut rt, &id, "executable file not found");
    rt.args(&["/bin/nope"]);
    let id2 = rt.id("exe2");
    refused(&mut rt, &id2, "process.args[0]");
}

#[test]
fn bad_mount_source_and_option() {
    require_root!();
    let mut rt = Rt::new("bad-mount");
    let id = rt.id("mnt");
    rt.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/data", "type": "bind", "source": "/no/such/dir", "options": ["rbind"]
    }));
    refused(&mut rt, &id, "mounts[7]");
}

#[test]
fn unknown_sysctl_and_bad_cgroup_value() {
    require_root!();
    let mut rt = Rt::new("bad-sysctl");
    let id = rt.id("sysctl");
    rt.config["linux"]["sysctl"] = json!({"vm.swappiness": "10"});
    refused(&mut rt, &id, "vm.swappiness");
    rt.config["linux"]["sysctl"] = json!({});
    rt.config["linux"]["resources"]["cpu"] = json!({"cpus": "0-9999"});
    let id2 = rt.id("cpus");
    refused(&mut rt, &id2, "linux.resources");
}

#[test]
fn duplicate_id() {
    require_root!();
    let mut rt = Rt::new("dup");
    let id = rt.id("dup");
    rt.args(&["sleep", "300"]);
    rt.create_ok(&id);
    let pid = rt.state(&id)["pid"].clone();
    let b = rt.bundle.to_string_lossy().into_owned();
    let out = rt.rt(&["create", "--bundle", &b, &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // The first container is untouched.
    assert_eq!(rt.state(&id)["pid"], pid);
    assert_eq!(rt.status(&id), "created");
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn invalid_ids_and_missing_containers() {
    require_root!();
    let mut rt = Rt::new("bad-id");
    for bad in ["../escape", "a/b", ".."] {
        rt.write_config("x");
        let b = rt.bundle.to_string_lossy().into_owned();
        let out = rt.rt(&["create", "--bundle", &b, bad]);
        assert!(!out.status.success(), "id {bad:?} accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("container id"),
            "{bad}"
        );
    }
    for cmd in ["start", "state", "pause", "resume", "delete"] {
        let out = rt.rt(&[cmd, "no-such-container"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("does not exist"),
            "{cmd}"
        );
    }
}

#[test]
fn failing_create_runtime_hook_fails_create_cleanly() {
    require_root!();
    let mut rt = Rt::new("bad-hookrun");
    let id = rt.id("hookfail");
    rt.config["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}]});
    refused(&mut rt, &id, "hooks.createRuntime[0]");
}

/// A program on a noexec mount is refused at create, naming the path, instead of
/// failing with a bare errno once the container is started.
#[test]
fn program_on_a_noexec_mount() {
    require_root!();
    let mut rt = Rt::new("bad-noexec");
    let id = rt.id("noexec");
    let dir = rt.scratch.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(rt.bundle.join("rootfs/bin/busybox"), dir.join("busybox")).unwrap();
    rt.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/opt",
        "type": "bind",
        "source": dir,
        "options": ["bind", "noexec"],
    }));
    rt.args(&["/opt/busybox", "true"]);
    refused(&mut rt, &id, "/opt/busybox is on a noexec mount");
}
