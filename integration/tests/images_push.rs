//! Push (skipping blobs the registry has), save to an OCI layout tar and load it back,
//! load of a `docker save` archive, and namespaces.

use kura_integration::images::{
    build_image, diff_trees, missing_tools, tree, Kurad, Registry, RegistryAuth,
};
use kura_integration::{require_root, skip, workspace, Scratch};
use std::process::Command;

macro_rules! prelude {
    () => {
        require_root!();
        if let Some(m) = missing_tools() {
            skip!("{m}");
        }
    };
}

#[test]
fn images_push_skips_existing_blobs() {
    prelude!();
    let s = Scratch::new("push");
    let layout = build_image("multi", s.path());
    let reg = Registry::start(RegistryAuth::None);
    reg.push_layout(&layout, "src/img:v1", None);
    let k = Kurad::start("");
    let src = format!("{}/src/img:v1", reg.host());
    let dst = format!("{}/dst/img:v2", reg.host());
    k.ok(&["pull", "-q", &src]);
    let o = k.kura(&["push", &src, &dst]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let digest = String::from_utf8_lossy(&o.stdout)
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let raw = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{dst}")])
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(v["Digest"], digest.as_str());
    // Second push: every blob is already there.
    let o = k.kura(&["push", &src, &dst]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        err.matches(": exists").count(),
        5,
        "config and 4 layers should be skipped: {err}"
    );
    assert!(!err.contains(": done"), "{err}");
}

#[test]
fn images_save_load_roundtrip_and_namespaces() {
    prelude!();
    let s = Scratch::new("save");
    let layout = build_image("multi", s.path());
    let reg = Registry::start(RegistryAuth::None);
    reg.push_layout(&layout, "save/img:v1", None);
    let k = Kurad::start("");
    let image = format!("{}/save/img:v1", reg.host());
    k.ok(&["pull", "-q", &image]);
    let tar = s.join("img.tar");
    k.ok(&["save", &image, "-o", tar.to_str().unwrap()]);
    // The archive is a valid OCI layout for other tools too.
    let ext = s.join("extracted");
    std::fs::create_dir(&ext).unwrap();
    assert!(Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&ext)
        .status()
        .unwrap()
        .success());
    let o = Command::new("skopeo")
        .args(["inspect"])
        .arg(format!("oci:{}:v1", ext.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo cannot read the saved layout: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Namespaces are separate: "other" does not see the image until it loads it.
    assert_eq!(k.ok_ns("other", &["images", "-q"]).trim(), "");
    let out = k.ok_ns("other", &["load", "-i", tar.to_str().unwrap()]);
    assert!(out.contains(&format!("Loaded image: {image}")), "{out}");
    let (m1, m2) = (s.join("m1"), s.join("m2"));
    std::fs::create_dir(&m1).unwrap();
    std::fs::create_dir(&m2).unwrap();
    k.ok(&["mount", &image, m1.to_str().unwrap()]);
    k.ok_ns("other", &["mount", &image, m2.to_str().unwrap()]);
    let d = diff_trees(&tree(&m1), &tree(&m2));
    k.ok(&["unmount", m1.to_str().unwrap()]);
    k.ok_ns("other", &["unmount", m2.to_str().unwrap()]);
    assert!(d.is_empty(), "loaded image differs:\n{}", d.join("\n"));
    // Through a pipe: save to stdout, load from stdin.
    let kura = kura_integration::bin("kura");
    let sock = k.sock.display().to_string();
    let sh = format!(
        "{kura} --address {sock} save {image} -o - | {kura} --address {sock} -n piped load --no-unpack -i -",
        kura = kura.display()
    );
    let o = Command::new("sh").arg("-c").arg(&sh).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(k.ok_ns("piped", &["images", "-q"]).trim(), image);
    // Removing it in one namespace leaves the other alone.
    k.ok(&["rmi", &image]);
    assert_eq!(k.ok_ns("other", &["images", "-q"]).trim(), image);
    k.ok_ns("other", &["inspect", &image]);
}

#[test]
fn images_load_docker_save_archive() {
    prelude!();
    let s = Scratch::new("dload");
    let tar = s.join("docker.tar");
    let o = Command::new("python3")
        .arg(workspace().join("hack/images/mkimage.py"))
        .arg("docker-archive")
        .arg(&tar)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let k = Kurad::start("snapshotter = \"native\"\n");
    let out = k.ok(&["load", "-i", tar.to_str().unwrap()]);
    assert!(
        out.contains("Loaded image: docker.io/library/dockersave:v1"),
        "{out}"
    );
    let ins: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "dockersave:v1"])).unwrap();
    assert_eq!(ins["layers"].as_array().unwrap().len(), 4);
    assert!(
        ins["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["unpacked"] == true),
        "{ins}"
    );
    let m = s.join("m");
    std::fs::create_dir(&m).unwrap();
    k.ok(&["mount", "dockersave:v1", m.to_str().unwrap()]);
    let ok = m.join("zstd/busybox-link").exists() && !m.join("data/gone").exists();
    k.ok(&["unmount", m.to_str().unwrap()]);
    assert!(ok, "docker-save image unpacked wrong");
}
