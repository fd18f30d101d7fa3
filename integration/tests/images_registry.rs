//! Registry client behaviour: mirrors, a registry that stops sending (the pull fails
//! with a clear error instead of hanging), schema 1 refused.

use kura_integration::images::{build_image, missing_tools, Kurad, Registry, RegistryAuth};
use kura_integration::{require_root, skip, Scratch};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

macro_rules! prelude {
    () => {
        require_root!();
        if let Some(m) = missing_tools() {
            skip!("{m}");
        }
    };
}

#[test]
fn images_pull_through_mirror() {
    prelude!();
    let s = Scratch::new("mirror");
    let layout = build_image("multi", s.path());
    let reg = Registry::start(RegistryAuth::None);
    reg.push_layout(&layout, "team/img:v1", None);
    // The named host does not exist; its mirror has the image.
    let k = Kurad::start(&format!(
        "[registry.hosts.\"registry.invalid:5000\"]\nmirrors = [\"http://{}\"]\n",
        reg.host()
    ));
    let out = k.ok(&["pull", "registry.invalid:5000/team/img:v1"]);
    assert!(
        out.contains("registry.invalid:5000/team/img:v1: pulled"),
        "{out}"
    );
}

/// A fake registry: `stall/img` has a layer whose transfer stops half way;
/// `old/img` is a schema 1 manifest.
struct Fake {
    port: u16,
    layer_len: usize,
    stop: Arc<AtomicBool>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sha(data: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    format!(
        "sha256:{}",
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
    )
}

fn fake_registry() -> Fake {
    // A real tar (one 1 MiB file), so the stall is what stops the pull.
    let dir = Scratch::new("fake-layer");
    std::fs::write(dir.join("f"), vec![7u8; 1 << 20]).unwrap();
    let layer = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .args(["-cf", "-", "f"])
        .output()
        .unwrap()
        .stdout;
    assert!(layer.len() > 1 << 20);
    let layer_d = sha(&layer);
    let config = format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_d}"]}}}}"#).into_bytes();
    let config_d = sha(&config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_d}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    )
    .into_bytes();
    let layer_len = layer.len();
    let schema1 = br#"{"schemaVersion":1,"name":"old/img","tag":"v1","architecture":"amd64","fsLayers":[],"history":[]}"#.to_vec();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let (manifest, schema1, config, layer, config_d, layer_d, stop3) = (
                manifest.clone(),
                schema1.clone(),
                config.clone(),
                layer.clone(),
                config_d.clone(),
                layer_d.clone(),
                stop2.clone(),
            );
            std::thread::spawn(move || {
                let _ = s.set_nonblocking(false);
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let reply = |s: &mut std::net::TcpStream, ct: &str, body: &[u8]| {
                    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = s.write_all(body);
                };
                if path == "/v2/" {
                    reply(&mut s, "application/json", b"{}");
                } else if path == "/v2/stall/img/manifests/v1" {
                    reply(
                        &mut s,
                        "application/vnd.oci.image.manifest.v1+json",
                        &manifest,
                    );
                } else if path == "/v2/old/img/manifests/v1" {
                    reply(
                        &mut s,
                        "application/vnd.docker.distribution.manifest.v1+prettyjws",
                        &schema1,
                    );
                } else if path == format!("/v2/stall/img/blobs/{config_d}") {
                    reply(&mut s, "application/octet-stream", &config);
                } else if path == format!("/v2/stall/img/blobs/{layer_d}") {
                    // Half the layer, then nothing, connection held open.
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        layer.len()
                    );
                    let _ = s.write_all(&layer[..layer.len() / 2]);
                    let _ = s.flush();
                    while !stop3.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                } else {
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            });
        }
    });
    Fake {
        port,
        stop,
        layer_len,
    }
}

#[test]
fn images_stalled_registry_fails_clearly() {
    prelude!();
    let fake = fake_registry();
    let k = Kurad::start("stall_timeout_secs = 1\n");
    let start = Instant::now();
    let err = k.fails(&["pull", &format!("127.0.0.1:{}/stall/img:v1", fake.port)]);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        err.contains("stopped sending layer sha256:")
            && err.contains(&format!("127.0.0.1:{}", fake.port)),
        "{err}"
    );
    let at = format!("{} of {} bytes", fake.layer_len / 2, fake.layer_len);
    assert!(
        err.contains(&at),
        "the error says where it stopped ({at}): {err}"
    );
}

#[test]
fn images_schema1_refused() {
    prelude!();
    let fake = fake_registry();
    let k = Kurad::start("");
    let err = k.fails(&["pull", &format!("127.0.0.1:{}/old/img:v1", fake.port)]);
    assert!(
        err.contains("schema 1") && err.contains("not support"),
        "{err}"
    );
}

#[test]
fn images_https_registry_verify_and_skip_verify() {
    prelude!();
    if std::process::Command::new("sh")
        .args(["-c", "command -v openssl"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        skip!("openssl not installed");
    }
    let s = Scratch::new("tls");
    let layout = build_image("multi", s.path());
    let reg = Registry::start_opts(RegistryAuth::None, true);
    reg.push_layout(&layout, "tls/img:v1", None);
    let image = format!("{}/tls/img:v1", reg.host());
    // https for this loopback host (loopback registries default to plain http).
    let k = Kurad::start(&format!(
        "[registry.hosts.\"{}\"]\nplain_http = false\n",
        reg.host()
    ));
    let err = k.fails(&["pull", &image]);
    assert!(
        err.contains(&format!("registry {}", reg.host()))
            && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    k.ok(&["pull", "-q", "--skip-verify", &image]);
    // The same, as host configuration.
    let k2 = Kurad::start(&format!(
        "[registry.hosts.\"{}\"]\nplain_http = false\nskip_verify = true\n",
        reg.host()
    ));
    k2.ok(&["pull", "-q", &image]);
}
