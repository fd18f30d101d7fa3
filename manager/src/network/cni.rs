//! Calling CNI plugins as the CNI spec (1.0) says: the binary named by a plugin's
//! `type`, found on CNI_PATH, the command and container in the environment, the
//! plugin's config (with `name`, `cniVersion`, `runtimeConfig` for the capabilities it
//! declares, and the previous plugin's result) on stdin, a result or an error on stdout.

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Debug, Clone)]
pub struct Plugins {
    pub dirs: Vec<PathBuf>,
}

/// What a call is about: the container's CNI id, its netns path and interface.
pub struct Target<'a> {
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
}

impl Plugins {
    pub fn find(&self, typ: &str) -> Result<PathBuf> {
        if typ.is_empty() || typ.contains('/') {
            bail!("CNI plugin type {typ:?} is not a plugin name");
        }
        self.dirs
            .iter()
            .map(|d| d.join(typ))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "CNI plugin {typ:?} not found in {} (install containernetworking-plugins)",
                    self.path()
                )
            })
    }

    fn path(&self) -> String {
        self.dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Every plugin of a list is present (checked before anything is made).
    pub fn check_present(&self, list: &Value) -> Result<()> {
        for p in plugins(list)? {
            self.find(p["type"].as_str().unwrap_or(""))?;
        }
        Ok(())
    }

    fn invoke(&self, command: &str, conf: &Value, t: &Target) -> Result<Value> {
        let typ = conf["type"].as_str().unwrap_or("");
        let bin = self.find(typ)?;
        let t0 = std::time::Instant::now();
        let mut child = Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", t.container_id)
            .env("CNI_NETNS", t.netns)
            .env("CNI_IFNAME", t.ifname)
            .env("CNI_PATH", self.path())
            // Plugins run iptables and friends.
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("run CNI plugin {}", bin.display()))?;
        // A plugin may fail before it reads its config: its answer says why.
        match child
            .stdin
            .take()
            .unwrap()
            .write_all(&serde_json::to_vec(conf)?)
        {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e).with_context(|| format!("CNI {typ} {command}: write its config"));
            }
            _ => {}
        }
        let out = child.wait_with_output()?;
        tracing::debug!(
            plugin = typ,
            command,
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "CNI plugin ran"
        );
        if !out.status.success() {
            let e: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let msg = match (e["msg"].as_str(), e["details"].as_str()) {
                (Some(m), Some(d)) if !d.is_empty() => format!("{m}: {d}"),
                (Some(m), _) => m.to_string(),
                _ => {
                    let s = String::from_utf8_lossy(&out.stderr);
                    let s = if s.trim().is_empty() {
                        String::from_utf8_lossy(&out.stdout)
                    } else {
                        s
                    };
                    format!("{} ({})", s.trim(), out.status)
                }
            };
            bail!("CNI {typ} {command}: {msg}");
        }
        if command == "ADD" {
            serde_json::from_slice(&out.stdout)
                .with_context(|| format!("CNI {typ} ADD: its result is not JSON"))
        } else {
            Ok(Value::Null)
        }
    }

    /// ADD through every plugin of the list, each given the previous result.
    pub fn add(&self, list: &Value, rc: &Value, t: &Target) -> Result<Value> {
        let mut prev = None;
        for p in plugins(list)? {
            let conf = plugin_conf(list, p, rc, prev.as_ref());
            prev = Some(self.invoke("ADD", &conf, t)?);
        }
        prev.context("CNI network list has no plugins")
    }

    /// DEL through the list in reverse; every plugin is asked even if one fails (the
    /// first error is returned).
    pub fn del(&self, list: &Value, rc: &Value, prev: Option<&Value>, t: &Target) -> Result<()> {
        let mut first = None;
        for p in plugins(list)?.iter().rev() {
            let conf = plugin_conf(list, p, rc, prev);
            if let Err(e) = self.invoke("DEL", &conf, t) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// CHECK through the list with the result ADD gave.
    pub fn check(&self, list: &Value, rc: &Value, prev: &Value, t: &Target) -> Result<()> {
        for p in plugins(list)? {
            self.invoke("CHECK", &plugin_conf(list, p, rc, Some(prev)), t)?;
        }
        Ok(())
    }
}

fn plugins(list: &Value) -> Result<&Vec<Value>> {
    list["plugins"]
        .as_array()
        .context("CNI network list has no \"plugins\"")
}

fn plugin_conf(list: &Value, plugin: &Value, rc: &Value, prev: Option<&Value>) -> Value {
    let mut c = plugin.clone();
    c["name"] = list["name"].clone();
    c["cniVersion"] = list["cniVersion"].clone();
    let mut runtime = Map::new();
    if let Some(caps) = plugin["capabilities"].as_object() {
        for (k, on) in caps {
            if on.as_bool() == Some(true) && !rc[k].is_null() {
                runtime.insert(k.clone(), rc[k].clone());
            }
        }
    }
    if !runtime.is_empty() {
        c["runtimeConfig"] = Value::Object(runtime);
    }
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c
}

/// The first IPv4 address (without prefix) and gateway in a CNI result.
pub fn result_ipv4(result: &Value) -> Option<(String, String)> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let a = ip["address"].as_str()?;
        let (addr, _) = a.split_once('/')?;
        addr.contains('.').then(|| {
            (
                addr.to_string(),
                ip["gateway"].as_str().unwrap_or("").to_string(),
            )
        })
    })
}

/// The loopback plugin's one-plugin list.
pub fn loopback_list() -> Value {
    json!({"cniVersion": "1.0.0", "name": "cni-loopback", "plugins": [{"type": "loopback"}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let list = json!({"cniVersion": "1.0.0", "name": "n", "plugins": []});
        let p = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let rc = json!({"portMappings": [{"hostPort": 1}], "ips": ["10.0.0.2"]});
        let c = plugin_conf(&list, &p, &rc, Some(&json!({"ips": []})));
        assert_eq!(c["name"], "n");
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 1);
        assert!(c["runtimeConfig"]["ips"].is_null());
        assert!(c["prevResult"].is_object());
        let bare = plugin_conf(&list, &json!({"type": "firewall"}), &rc, None);
        assert!(bare.get("runtimeConfig").is_none() && bare.get("prevResult").is_none());
    }

    #[test]
    fn missing_plugin_is_named() {
        let p = Plugins {
            dirs: vec!["/nonexistent-cni".into()],
        };
        let e = p.find("bridge").unwrap_err().to_string();
        assert!(
            e.contains("\"bridge\"") && e.contains("/nonexistent-cni"),
            "{e}"
        );
    }
}
