//! Pull and unpack against a real docker-registry: rootfs identical to umoci's, index
//! platforms, zstd, whiteouts, hostile layers, racing pulls, image operations and GC.

use kura_integration::images::{
    build_image, diff_trees, missing_tools, tree, Kurad, Registry, RegistryAuth,
};
use kura_integration::{require_root, skip, Scratch};
use std::process::Command;

macro_rules! prelude {
    () => {
        require_root!();
        if let Some(m) = missing_tools() {
            skip!("{m}");
        }
    };
}

fn umoci_matches(snapshotter: &str) {
    if Command::new("sh")
        .args(["-c", "command -v umoci"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        skip!("umoci not installed");
    }
    let s = Scratch::new("umoci");
    // umoci 0.4 cannot read zstd layers: the same image with the zstd layer gzip'd.
    let layout = build_image("multi-gzip", s.path());
    let reg = Registry::start(RegistryAuth::None);
    reg.push_layout(&layout, "test/multi:v1", None);
    let k = Kurad::start(&format!("snapshotter = \"{snapshotter}\"\n"));
    let image = format!("{}/test/multi:v1", reg.host());
    k.ok(&["pull", "-q", &image]);
    let bundle = s.join("bundle");
    let o = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mnt = s.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    k.ok(&["mount", &image, mnt.to_str().unwrap()]);
    let (a, b) = (tree(&bundle.join("rootfs")), tree(&mnt));
    k.ok(&["unmount", mnt.to_str().unwrap()]);
    let d = diff_trees(&a, &b);
    assert!(
        d.is_empty(),
        "{} differences between umoci and kura ({snapshotter}):\n{}",
        d.len(),
        d.join("\n")
    );
    assert!(a.len() > 250, "suspiciously small tree: {}", a.len());
    // The layer details the comparison covers.
    assert!(b["data/link"].contains("nlink=2"), "{}", b["data/link"]);
    assert!(b["data/xattr"].contains("xattr:user.kura=yes"));
    assert!(b["data/suid"].starts_with("mode=104755"));
    assert!(
        !b.contains_key("data/gone")
            && !b.contains_key("data/opq/a")
            && b.contains_key("data/opq/c")
    );
}

#[test]
fn images_rootfs_matches_umoci_overlayfs() {
    prelude!();
    umoci_matches("overlayfs");
}

#[test]
fn images_rootfs_matches_umoci_native() {
    prelude!();
    umoci_matches("native");
}

#[test]
fn images_index_platforms_zstd_and_whiteouts() {
    prelude!();
    let s = Scratch::new("index");
    let layout = build_image("index", s.path());
    let reg = Registry::start(RegistryAuth::None);
    reg.push_layout(&layout, "test/idx:v1", None);
    let k = Kurad::start("");
    let image = format!("{}/test/idx:v1", reg.host());
    let out = k.ok(&["pull", "--format", "json", &image]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["platform"], "linux/amd64", "{out}");
    assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
    let mnt = s.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    k.ok(&["mount", &image, mnt.to_str().unwrap()]);
    let hello = std::fs::read_to_string(mnt.join("zstd/hello")).unwrap();
    assert!(hello.starts_with("from a zstd layer"));
    assert!(!mnt.join("data/gone").exists(), "whiteout not applied");
    assert!(
        !mnt.join("bin/vi").exists(),
        "whiteout of a lower-layer symlink not applied"
    );
    let mut opq: Vec<String> = std::fs::read_dir(mnt.join("data/opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    opq.sort();
    assert_eq!(opq, ["c"], "opaque directory not applied");
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/hello")).unwrap(),
        "hello, changed in layer 3\n"
    );
    k.ok(&["unmount", mnt.to_str().unwrap()]);

    // The other platform, into the native snapshotter.
    let out = k.ok(&[
        "pull",
        "--platform",
        "linux/arm64",
        "--snapshotter",
        "native",
        &image,
    ]);
    assert!(out.contains("linux/arm64"), "{out}");
    let inspect: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "--platform", "linux/arm64", &image])).unwrap();
    assert_eq!(inspect["config"]["architecture"], "arm64");
    assert_eq!(inspect["index"].as_array().unwrap().len(), 2);
    let err = k.fails(&["pull", "--platform", "linux/s390x", &image]);
    assert!(
        err.contains("no image for platform linux/s390x") && err.contains("linux/arm64"),
        "{err}"
    );
}

#[test]
fn images_hostile_layers_are_refused_and_leave_nothing() {
    prelude!();
    let s = Scratch::new("hostile");
    let reg = Registry::start(RegistryAuth::None);
    let k = Kurad::start("");
    let cases = [
        ("hostile-dotdot", "'..'"),
        ("hostile-abs", "absolute path"),
        ("hostile-symlink", "writes through the symlink evil"),
        ("hostile-hardlink", "refusing hardlink hl"),
        ("bad-diffid", "but the image config says"),
    ];
    for (kind, want) in cases {
        let layout = build_image(kind, s.path());
        reg.push_layout(&layout, &format!("test/{kind}:v1"), None);
        let err = k.fails(&["pull", &format!("{}/test/{kind}:v1", reg.host())]);
        assert!(err.contains(want), "{kind}: {err}");
        assert!(
            err.contains("layer sha256:"),
            "{kind}: the error names the layer: {err}"
        );
    }
    for escaped in ["/escape-dotdot", "/escape-abs", "/tmp/escape-symlink"] {
        assert!(
            !std::path::Path::new(escaped).exists(),
            "{escaped} was written"
        );
    }
    // Nothing left: no image, no snapshot, no blob (failed pulls are collected at once).
    assert_eq!(k.ok(&["images", "-q"]).trim(), "");
    let snaps = k.ok(&["snapshot", "ls"]);
    assert_eq!(snaps.lines().count(), 1, "snapshots left: {snaps}");
    let (blobs, dirs) = k.disk_objects();
    assert!(
        blobs.is_empty() && dirs.is_empty(),
        "left on disk: {blobs:?} {dirs:?}"
    );
}

#[test]
fn images_tag_inspect_labels_rmi_and_gc() {
    prelude!();
    let s = Scratch::new("ops");
    let layout = build_image("multi", s.path());
    let reg = Registry::start(RegistryAuth::None);
    reg.push_layout(&layout, "test/ops:v1", None);
    let k = Kurad::start("");
    let image = format!("{}/test/ops:v1", reg.host());
    k.ok(&["pull", "-q", &image]);
    k.ok(&["tag", &image, "example.com/ops:copy"]);
    let list: serde_json::Value =
        serde_json::from_str(&k.ok(&["images", "--format", "json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["unpacked"] == true));
    let ins: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "example.com/ops:copy"])).unwrap();
    let layers = ins["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    assert!(layers
        .iter()
        .all(|l| l["unpacked"] == true && l["size"].as_i64().unwrap() > 0));
    assert_eq!(
        layers[3]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(
        layers[2]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    k.ok(&["label", &image, "team=kura", "tier=test"]);
    let f = k.ok(&["images", "-q", "--filter", "labels.team==kura"]);
    assert_eq!(f.trim(), image);
    // What holds the top layer alive: both names.
    let top = layers[3]["digest"].as_str().unwrap();
    let refs = k.ok(&["refs", top]);
    assert_eq!(refs.lines().count(), 2, "{refs}");
    assert!(
        refs.contains("image/example.com/ops:copy") && refs.contains(&format!("image/{image}"))
    );
    // Removing one name keeps everything; removing both takes content and snapshots.
    let out = k.ok(&["rmi", "example.com/ops:copy"]);
    assert!(!out.contains("Deleted"), "{out}");
    let out = k.ok(&["rmi", &image]);
    assert!(
        out.contains("Deleted content") && out.contains("Deleted snapshot"),
        "{out}"
    );
    let (blobs, dirs) = k.disk_objects();
    assert!(
        blobs.is_empty() && dirs.is_empty(),
        "left after rmi: {blobs:?} {dirs:?}"
    );
    let err = k.fails(&["inspect", &image]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn images_racing_pulls_unpack_each_layer_once() {
    prelude!();
    let s = Scratch::new("race");
    let layout = build_image("multi", s.path());
    let reg = Registry::start(RegistryAuth::None);
    reg.push_layout(&layout, "test/race:v1", None);
    reg.push_layout(&layout, "test/race:v2", None);
    let k = Kurad::start("");
    let a = format!("{}/test/race:v1", reg.host());
    let b = format!("{}/test/race:v2", reg.host());
    let mut kids: Vec<_> = [&a, &b, &a]
        .iter()
        .map(|i| {
            k.kura_cmd("default", &["pull", "-q", i])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in kids.drain(..) {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "pull failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let snaps = k.ok(&["snapshot", "ls"]);
    let committed: Vec<&str> = snaps.lines().filter(|l| l.contains("committed")).collect();
    assert_eq!(committed.len(), 4, "{snaps}");
    assert_eq!(snaps.lines().count(), 5, "leftover snapshots: {snaps}");
    let (_, dirs) = k.disk_objects();
    assert_eq!(dirs.len(), 4, "each layer unpacked once: {dirs:?}");
}

#[test]
fn images_kurad_flags_socket_mode_and_sigterm() {
    prelude!();
    let mut k = Kurad::start("log_level = \"debug\"\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&k.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let v = k.ok(&["version"]);
    assert!(v.contains(k.root.to_str().unwrap()), "{v}");
    let err = k.fails(&["inspect", "nothing:here"]);
    assert!(
        err.contains("image nothing:here not found in namespace default"),
        "{err}"
    );
    let err = k.kura_ns("bad/ns", &["images"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("invalid namespace"));
    assert!(k.stop(), "kurad did not exit 0 on SIGTERM");
    assert!(!k.sock.exists(), "socket left after SIGTERM");
    let o = k.kura(&["images"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot connect to kurad at"),
        "{o:?}"
    );
}

#[test]
fn images_docker_schema2_and_manifest_list() {
    prelude!();
    let s = Scratch::new("docker");
    // Docker schema 2 has no zstd: the gzip variant, converted by skopeo.
    let layout = build_image("multi-gzip", s.path());
    let reg = Registry::start(RegistryAuth::None);
    reg.push_layout_as(&layout, "docker/img:v1", None, Some("v2s2"));
    let k = Kurad::start("");
    let image = format!("{}/docker/img:v1", reg.host());
    let out = k.ok(&["pull", "--format", "json", &image]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["mediaType"], "application/vnd.docker.distribution.manifest.v2+json",
        "{out}"
    );
    let ins: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &image])).unwrap();
    assert!(
        ins["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["mediaType"]
                .as_str()
                .unwrap()
                .starts_with("application/vnd.docker.image.rootfs.diff.tar")),
        "{ins}"
    );
    // Same files as the OCI original, unpacked by kura from the OCI layout via load.
    let tar = s.join("oci.tar");
    let ext = layout.display().to_string();
    assert!(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&ext)
        .arg(".")
        .status()
        .unwrap()
        .success());
    k.ok_ns(
        "oci",
        &["load", "--name", "oci/img:v1", "-i", tar.to_str().unwrap()],
    );
    let (m1, m2) = (s.join("m1"), s.join("m2"));
    std::fs::create_dir(&m1).unwrap();
    std::fs::create_dir(&m2).unwrap();
    k.ok(&["mount", &image, m1.to_str().unwrap()]);
    k.ok_ns("oci", &["mount", "oci/img:v1", m2.to_str().unwrap()]);
    let d = diff_trees(&tree(&m1), &tree(&m2));
    k.ok(&["unmount", m1.to_str().unwrap()]);
    k.ok_ns("oci", &["unmount", m2.to_str().unwrap()]);
    assert!(
        d.is_empty(),
        "docker-format image differs from the OCI one:\n{}",
        d.join("\n")
    );

    // A Docker manifest list with two platforms.
    let idx = build_image("index-gzip", s.path());
    reg.push_layout_as(&idx, "docker/list:v1", None, Some("v2s2"));
    let list = format!("{}/docker/list:v1", reg.host());
    let out = k.ok(&["pull", "--platform", "linux/arm64", &list]);
    assert!(out.contains("linux/arm64"), "{out}");
    let ins: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "--platform", "linux/arm64", &list])).unwrap();
    assert_eq!(
        ins["image"]["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json",
        "{ins}"
    );
    assert_eq!(ins["config"]["architecture"], "arm64");
}
