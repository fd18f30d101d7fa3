//! kill -9 of kurad in the middle of a pull: the store opens again, the pull resumes
//! and finishes, and after GC no blob or snapshot is orphaned.

use kura_integration::images::{build_image, missing_tools, Kurad, Registry, RegistryAuth};
use kura_integration::{require_root, skip, Scratch};
use std::time::{Duration, Instant};

fn ingest_bytes(k: &Kurad) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(k.root.join("content/ingest")) {
        for e in rd.flatten() {
            n += std::fs::metadata(e.path().join("data"))
                .map(|m| m.len())
                .unwrap_or(0);
        }
    }
    n
}

#[test]
fn images_kill9_mid_pull_then_resume_and_gc() {
    require_root!();
    if let Some(m) = missing_tools() {
        skip!("{m}");
    }
    let s = Scratch::new("crash");
    let layout = s.join("big");
    let o = std::process::Command::new("python3")
        .arg(kura_integration::workspace().join("hack/images/mkimage.py"))
        .args(["big"])
        .arg(&layout)
        .args(["--size-mb", "40"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = build_image; // (the small images are not needed here)
    let reg = Registry::start(RegistryAuth::None);
    reg.push_layout(&layout, "big/img:v1", None);
    let image = format!("{}/big/img:v1", reg.host());
    // Slow the transfer down so there is a middle to kill kurad in.
    let mut k = Kurad::start_env("", &[("KURA_TEST_PULL_THROTTLE_MS", "20")]);
    let mut pull = k
        .kura_cmd("default", &["pull", "-q", &image])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while ingest_bytes(&k) < 1 << 20 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pull made no progress:\n{}",
            k.log()
        );
        if let Ok(Some(st)) = pull.try_wait() {
            panic!("pull ended before it could be interrupted: {st}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    k.kill9();
    let o = pull.wait_with_output().unwrap();
    assert!(!o.status.success(), "the interrupted pull should fail");
    let partial = ingest_bytes(&k);
    assert!(partial > 0);

    // Tear one partial download (as a power cut could): the resumed pull must notice by
    // the digest and fetch that layer again from the start.
    let biggest = std::fs::read_dir(k.root.join("content/ingest"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("data"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .unwrap();
    let mut data = std::fs::read(&biggest).unwrap();
    assert!(data.len() > 1000);
    data[1000] ^= 0xff;
    std::fs::write(&biggest, data).unwrap();

    // Restart on the same root, without the brake.
    k.set_env(&[]);
    k.spawn();
    assert!(
        k.ok(&["images", "-q"]).trim().is_empty(),
        "an interrupted pull must not name an image"
    );
    let snaps = k.ok(&["snapshot", "ls"]);
    assert!(
        !snaps.contains("extract-"),
        "half-unpacked snapshots survived the restart: {snaps}"
    );
    k.ok(&["pull", "-q", &image]);
    assert!(
        k.log().contains("resuming an interrupted download"),
        "the pull did not resume:\n{}",
        k.log()
    );
    assert!(
        k.log().contains("again from the start"),
        "the torn download was not fetched again:\n{}",
        k.log()
    );
    k.ok(&["prune"]);

    // Nothing orphaned: every blob on disk is known content, every snapshot dir a record.
    let (blobs, dirs) = k.disk_objects();
    let content = k.ok(&["content", "ls"]);
    let known: Vec<String> = content
        .lines()
        .map(|l| {
            l.split_whitespace()
                .next()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string()
        })
        .collect();
    let mut sorted = known.clone();
    sorted.sort();
    assert_eq!(blobs, sorted, "blobs on disk vs content records");
    let snaps = k.ok(&["snapshot", "ls"]);
    let committed = snaps.lines().filter(|l| l.contains("committed")).count();
    assert_eq!(committed, 6, "{snaps}");
    assert_eq!(dirs.len(), 6, "snapshot dirs: {dirs:?}");
    assert_eq!(ingest_bytes(&k), 0, "ingests left");
    assert!(k.ok(&["content", "ingests"]).trim().is_empty());
    // The image is whole: its layers read back.
    let ins: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &image])).unwrap();
    assert!(ins["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["unpacked"] == true));
}

#[test]
fn images_sigterm_mid_pull_stops_and_restart_cleans_up() {
    require_root!();
    if let Some(m) = missing_tools() {
        skip!("{m}");
    }
    let s = Scratch::new("term");
    let layout = s.join("big");
    let o = std::process::Command::new("python3")
        .arg(kura_integration::workspace().join("hack/images/mkimage.py"))
        .args(["big"])
        .arg(&layout)
        .args(["--size-mb", "20"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reg = Registry::start(RegistryAuth::None);
    reg.push_layout(&layout, "big/img:v1", None);
    let image = format!("{}/big/img:v1", reg.host());
    // So slow that the pull cannot end within the shutdown grace period.
    let mut k = Kurad::start_env("", &[("KURA_TEST_PULL_THROTTLE_MS", "500")]);
    let pull = k
        .kura_cmd("default", &["pull", "-q", &image])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while ingest_bytes(&k) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pull made no progress:\n{}",
            k.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    assert!(k.stop(), "kurad did not exit 0 on SIGTERM:\n{}", k.log());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "SIGTERM took {:?}",
        t.elapsed()
    );
    assert!(!k.sock.exists());
    let _ = pull.wait_with_output();
    k.set_env(&[]);
    k.spawn();
    assert!(k.ok(&["images", "-q"]).trim().is_empty());
    assert!(
        k.ok(&["lease", "ls"]).trim().is_empty(),
        "the pull's lease survived the restart"
    );
    let (blobs, dirs) = k.disk_objects();
    assert!(
        blobs.is_empty() && dirs.is_empty(),
        "left after restart: {blobs:?} {dirs:?}"
    );
}

#[test]
fn images_gc_during_pull_takes_nothing_it_needs() {
    require_root!();
    if let Some(m) = missing_tools() {
        skip!("{m}");
    }
    let s = Scratch::new("gcpull");
    let layout = s.join("big");
    let o = std::process::Command::new("python3")
        .arg(kura_integration::workspace().join("hack/images/mkimage.py"))
        .args(["big"])
        .arg(&layout)
        .args(["--size-mb", "20"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reg = Registry::start(RegistryAuth::None);
    reg.push_layout(&layout, "big/img:v1", None);
    let image = format!("{}/big/img:v1", reg.host());
    let k = Kurad::start_env("", &[("KURA_TEST_PULL_THROTTLE_MS", "10")]);
    let mut pull = k
        .kura_cmd("default", &["pull", "-q", &image])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Collect garbage over and over while the pull runs: its lease must protect
    // every blob and snapshot it has written so far.
    let mut prunes = 0;
    let status = loop {
        if let Some(st) = pull.try_wait().unwrap() {
            break st;
        }
        k.ok(&["prune", "-q"]);
        prunes += 1;
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut pull.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "pull failed under GC: {err}");
    assert!(
        prunes >= 3,
        "the pull ended before GC could race it ({prunes} prunes)"
    );
    let ins: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &image])).unwrap();
    assert!(
        ins["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["unpacked"] == true),
        "{ins}"
    );
    k.ok(&["prune"]);
    let (blobs, dirs) = k.disk_objects();
    assert_eq!(blobs.len(), 8, "manifest, config and 6 layers: {blobs:?}");
    assert_eq!(dirs.len(), 6, "{dirs:?}");
}
