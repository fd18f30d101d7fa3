//! The snapshot API through `kura snapshot`: prepare on an image's top layer, write,
//! commit, view, usage, removal order, and GC of snapshots nothing references.

use kura_integration::images::{build_image, missing_tools, Kurad, Registry, RegistryAuth};
use kura_integration::{require_root, skip, Scratch};
use std::process::Command;

fn mount_printed(line: &str, target: &std::path::Path) {
    // "mount -t TYPE SOURCE -o OPTIONS"
    let w: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(w[0], "mount", "{line}");
    let (ty, src, opts) = (w[2], w[3], w[5]);
    let st = if ty == "bind" {
        let ro = opts.split(',').any(|o| o == "ro");
        let ok = Command::new("mount")
            .args(["--bind", src])
            .arg(target)
            .status()
            .unwrap()
            .success();
        ok && (!ro
            || Command::new("mount")
                .args(["-o", "remount,bind,ro"])
                .arg(target)
                .status()
                .unwrap()
                .success())
    } else {
        Command::new("mount")
            .args(["-t", ty, src, "-o", opts])
            .arg(target)
            .status()
            .unwrap()
            .success()
    };
    assert!(st, "mount failed: {line}");
}

fn umount(target: &std::path::Path) {
    assert!(Command::new("umount")
        .arg(target)
        .status()
        .unwrap()
        .success());
}

#[test]
fn images_snapshot_prepare_commit_view_gc() {
    require_root!();
    if let Some(m) = missing_tools() {
        skip!("{m}");
    }
    let s = Scratch::new("snap");
    let layout = build_image("multi", s.path());
    let reg = Registry::start(RegistryAuth::None);
    reg.push_layout(&layout, "snap/img:v1", None);
    let k = Kurad::start("");
    let image = format!("{}/snap/img:v1", reg.host());
    for sn in ["overlayfs", "native"] {
        k.ok(&["pull", "-q", "--snapshotter", sn, &image]);
        let ins: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &image])).unwrap();
        let chain = ins["chainID"].as_str().unwrap().to_string();
        let snf = format!("--snapshotter={sn}");
        let mnt = s.join(format!("mnt-{sn}"));
        std::fs::create_dir(&mnt).unwrap();

        let out = k.ok(&["snapshot", "prepare", &snf, "work", &chain]);
        mount_printed(out.lines().next().unwrap(), &mnt);
        assert!(
            mnt.join("bin/busybox").exists(),
            "{sn}: image content missing in the active snapshot"
        );
        std::fs::write(mnt.join("new-file"), "written in an active snapshot\n").unwrap();
        std::fs::remove_file(mnt.join("etc/hello")).unwrap();
        umount(&mnt);
        k.ok(&["snapshot", "commit", &snf, "mine", "work"]);
        let out = k.ok(&["snapshot", "view", &snf, "look", "mine"]);
        mount_printed(out.lines().next().unwrap(), &mnt);
        assert_eq!(
            std::fs::read_to_string(mnt.join("new-file")).unwrap(),
            "written in an active snapshot\n"
        );
        assert!(!mnt.join("etc/hello").exists(), "{sn}: deletion not kept");
        assert!(
            std::fs::write(mnt.join("x"), "").is_err(),
            "{sn}: a view must be read-only"
        );
        umount(&mnt);
        let usage = k.ok(&["snapshot", "usage", &snf, "mine"]);
        assert!(!usage.starts_with("0 B"), "{usage}");

        let err =
            String::from_utf8_lossy(&k.kura(&["snapshot", "rm", &snf, "mine"]).stderr).to_string();
        assert!(err.contains("has a child (look)"), "{err}");
        // The view is a root (no lease), so GC keeps "mine" under it; without it, not.
        k.ok(&["prune"]);
        assert!(k.ok(&["snapshot", "ls", &snf]).contains("mine"));
        k.ok(&["snapshot", "rm", &snf, "look"]);
        let out = k.ok(&["prune"]);
        assert!(out.contains(&format!("{sn}/mine")), "{out}");
        // The image's layers stay.
        let ls = k.ok(&["snapshot", "ls", &snf]);
        assert_eq!(
            ls.lines().filter(|l| l.contains("committed")).count(),
            4,
            "{ls}"
        );
    }
}
