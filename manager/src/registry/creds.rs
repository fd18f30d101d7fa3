//! Docker-style credentials: `config.json` with `auths` (base64 `user:password` or an
//! identity token), `credHelpers` (per registry) and `credsStore` (default helper), the
//! helpers being `docker-credential-<name>` programs speaking docker's protocol
//! (`get`/`store`/`erase` with JSON on stdin/stdout).

use super::Auth;
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn default_path() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".docker/config.json")
}

/// The key docker uses for a registry host in config.json.
pub fn server_key(host: &str) -> String {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".into()
        }
        h => h.to_string(),
    }
}

fn read(path: &Path) -> Result<Map<String, Value>> {
    match std::fs::read(path) {
        Ok(b) => {
            match serde_json::from_slice(&b).with_context(|| format!("parse {}", path.display()))? {
                Value::Object(m) => Ok(m),
                _ => bail!("{} is not a JSON object", path.display()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

fn helper_for(cfg: &Map<String, Value>, key: &str, host: &str) -> Option<String> {
    let helpers = cfg.get("credHelpers").and_then(|v| v.as_object());
    helpers
        .and_then(|h| h.get(host).or_else(|| h.get(key)))
        .or_else(|| cfg.get("credsStore"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn run_helper(name: &str, action: &str, input: &[u8]) -> Result<(bool, Vec<u8>)> {
    let prog = format!("docker-credential-{name}");
    let mut child = Command::new(&prog)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run credential helper {prog}"))?;
    child.stdin.take().unwrap().write_all(input)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if action == "get" && msg.to_lowercase().contains("credentials not found") {
            return Ok((false, vec![]));
        }
        bail!("credential helper {prog} {action} failed: {}", msg.trim());
    }
    Ok((true, out.stdout))
}

/// Credentials for `host` (a registry domain such as `127.0.0.1:5000` or `docker.io`).
pub fn lookup(path: &Path, host: &str) -> Result<Option<Auth>> {
    let cfg = read(path)?;
    let key = server_key(host);
    if let Some(helper) = helper_for(&cfg, &key, host) {
        let (found, out) = run_helper(&helper, "get", key.as_bytes())?;
        if found {
            let v: Value = serde_json::from_slice(&out).context("credential helper output")?;
            let user = v["Username"].as_str().unwrap_or_default().to_string();
            let secret = v["Secret"].as_str().unwrap_or_default().to_string();
            return Ok(Some(if user == "<token>" {
                Auth {
                    identity_token: secret,
                    ..Default::default()
                }
            } else {
                Auth {
                    username: user,
                    password: secret,
                    ..Default::default()
                }
            }));
        }
    }
    let Some(auths) = cfg.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let entry = auths
        .get(&key)
        .or_else(|| auths.get(host))
        .or_else(|| auths.get(&format!("https://{host}")))
        .or_else(|| auths.get(&format!("http://{host}")));
    let Some(e) = entry else { return Ok(None) };
    let mut a = Auth::default();
    if let Some(s) = e
        .get("auth")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
    {
        let dec = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .with_context(|| format!("bad auth for {host} in {}", path.display()))?;
        let dec = String::from_utf8(dec)?;
        let (u, p) = dec
            .split_once(':')
            .with_context(|| format!("bad auth for {host} in {}", path.display()))?;
        a.username = u.into();
        a.password = p.into();
    }
    if let Some(u) = e.get("username").and_then(|v| v.as_str()) {
        a.username = u.into();
    }
    if let Some(p) = e.get("password").and_then(|v| v.as_str()) {
        a.password = p.into();
    }
    if let Some(t) = e.get("identitytoken").and_then(|v| v.as_str()) {
        a.identity_token = t.into();
    }
    if let Some(t) = e.get("registrytoken").and_then(|v| v.as_str()) {
        a.registry_token = t.into();
    }
    Ok(if a.is_empty() { None } else { Some(a) })
}

fn write(path: &Path, cfg: &Map<String, Value>) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("json.tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(cfg)?)?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Stores credentials: with the helper when one is configured, else in `auths`.
pub fn store(path: &Path, host: &str, a: &Auth) -> Result<()> {
    let mut cfg = read(path)?;
    let key = server_key(host);
    if let Some(helper) = helper_for(&cfg, &key, host) {
        let (user, secret) = if a.identity_token.is_empty() {
            (a.username.as_str(), a.password.as_str())
        } else {
            ("<token>", a.identity_token.as_str())
        };
        let input = json!({"ServerURL": key, "Username": user, "Secret": secret});
        run_helper(&helper, "store", &serde_json::to_vec(&input)?)?;
        return Ok(());
    }
    let auths = cfg
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .context("auths is not an object")?;
    let mut e = Map::new();
    if a.identity_token.is_empty() {
        let enc = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", a.username, a.password));
        e.insert("auth".into(), Value::String(enc));
    } else {
        e.insert(
            "identitytoken".into(),
            Value::String(a.identity_token.clone()),
        );
    }
    auths.insert(key, Value::Object(e));
    write(path, &cfg)
}

/// Forgets the credentials for `host`. Returns whether there were any.
pub fn erase(path: &Path, host: &str) -> Result<bool> {
    let mut cfg = read(path)?;
    let key = server_key(host);
    if let Some(helper) = helper_for(&cfg, &key, host) {
        run_helper(&helper, "erase", key.as_bytes())?;
        return Ok(true);
    }
    let removed = cfg
        .get_mut("auths")
        .and_then(|a| a.as_object_mut())
        .map(|a| a.remove(&key).is_some() | a.remove(host).is_some())
        .unwrap_or(false);
    if removed {
        write(path, &cfg)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auths_roundtrip() {
        let dir = std::env::temp_dir().join(format!("kura-creds-{}", std::process::id()));
        let p = dir.join("config.json");
        let a = Auth {
            username: "u".into(),
            password: "p:w".into(),
            ..Default::default()
        };
        store(&p, "127.0.0.1:5000", &a).unwrap();
        let got = lookup(&p, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((got.username.as_str(), got.password.as_str()), ("u", "p:w"));
        assert!(lookup(&p, "other").unwrap().is_none());
        assert!(erase(&p, "127.0.0.1:5000").unwrap());
        assert!(lookup(&p, "127.0.0.1:5000").unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
