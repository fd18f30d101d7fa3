//! Registry authentication: htpasswd basic auth, a bearer-token service, docker
//! config.json credentials written by `kura login`, and credential helpers.

use kura_integration::images::{build_image, missing_tools, Kurad, Registry, RegistryAuth};
use kura_integration::{require_root, skip, Scratch};

macro_rules! prelude {
    () => {
        require_root!();
        if let Some(m) = missing_tools() {
            skip!("{m}");
        }
    };
}

#[test]
fn images_basic_auth_login_logout() {
    prelude!();
    let s = Scratch::new("basic");
    let layout = build_image("multi", s.path());
    let reg = Registry::start(RegistryAuth::Basic("kura".into(), "s3cret".into()));
    reg.push_layout(&layout, "private/img:v1", Some(("kura", "s3cret")));
    let k = Kurad::start("");
    let host = reg.host();
    let image = format!("{host}/private/img:v1");

    let err = k.fails(&["pull", &image]);
    assert!(
        err.contains(&format!("registry {host} wants a username and password")),
        "{err}"
    );
    let err = k.fails(&["login", &host, "-u", "kura", "-p", "wrong"]);
    assert!(err.contains(&format!("login to {host} failed")), "{err}");
    assert!(!k.docker_config.join("config.json").exists());

    let out = k.ok(&["login", &host, "-u", "kura", "-p", "s3cret"]);
    assert!(out.contains("Login Succeeded"), "{out}");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(k.docker_config.join("config.json")).unwrap())
            .unwrap();
    assert!(cfg["auths"][&host]["auth"].is_string(), "{cfg}");
    k.ok(&["pull", "-q", &image]);
    // Push with the same credentials.
    k.ok(&["push", "-q", &image, &format!("{host}/private/copy:v2")]);

    k.ok(&["logout", &host]);
    let err = k.fails(&["pull", &image]);
    assert!(err.contains("wants a username and password"), "{err}");
    // Explicit credentials on the command line.
    k.ok(&["pull", "-q", "-u", "kura:s3cret", &image]);
}

#[test]
fn images_credential_helper() {
    prelude!();
    let s = Scratch::new("helper");
    let layout = build_image("multi", s.path());
    let reg = Registry::start(RegistryAuth::Basic(
        "helped".into(),
        "pw-from-helper".into(),
    ));
    reg.push_layout(
        &layout,
        "private/img:v1",
        Some(("helped", "pw-from-helper")),
    );
    let k = Kurad::start("");
    let host = reg.host();
    // A docker-credential-* helper that knows this registry and logs what it was asked.
    let bin = s.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-kuratest");
    let asked = s.join("asked");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\necho \"$1 $server\" >> {}\nif [ \"$1\" = get ] && [ \"$server\" = \"{host}\" ]; then\n  echo '{{\"ServerURL\":\"{host}\",\"Username\":\"helped\",\"Secret\":\"pw-from-helper\"}}'\n  exit 0\nfi\necho 'credentials not found in native keychain'\nexit 1\n",
            asked.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(&k.docker_config).unwrap();
    std::fs::write(
        k.docker_config.join("config.json"),
        format!("{{\"credHelpers\": {{\"{host}\": \"kuratest\"}}}}"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = k
        .kura_cmd(
            "default",
            &["pull", "-q", &format!("{host}/private/img:v1")],
        )
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap().trim(),
        format!("get {host}")
    );
}

#[test]
fn images_token_auth() {
    prelude!();
    if std::process::Command::new("sh")
        .args(["-c", "command -v openssl"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        skip!("openssl not installed");
    }
    let s = Scratch::new("token");
    let layout = build_image("index", s.path());
    let reg = Registry::start(RegistryAuth::Token("tokuser".into(), "tokpass".into()));
    reg.push_layout(&layout, "tok/img:v1", Some(("tokuser", "tokpass")));
    let k = Kurad::start("");
    let host = reg.host();
    let image = format!("{host}/tok/img:v1");
    let err = k.fails(&["pull", &image]);
    assert!(
        err.contains(&format!("authentication to registry {host} failed"))
            && err.contains("/token"),
        "{err}"
    );
    let err = k.fails(&["pull", "-u", "tokuser:nope", &image]);
    assert!(err.contains("authentication to registry"), "{err}");
    k.ok(&["login", &host, "-u", "tokuser", "-p", "tokpass"]);
    let out = k.ok(&["pull", "--all-platforms", &image]);
    assert!(out.contains("linux/amd64"), "{out}");
    // Push the whole index to another repository through the token service.
    let out = k.ok(&["push", &image, &format!("{host}/tok/copy:v1")]);
    assert!(out.contains("pushed sha256:"), "{out}");
    k.ok(&["rmi", &image]);
    let out = k.ok(&[
        "pull",
        "--platform",
        "linux/arm64",
        &format!("{host}/tok/copy:v1"),
    ]);
    assert!(out.contains("linux/arm64"), "{out}");
}
