//! OCI distribution client: endpoints (mirrors, plain http, skip-verify per host),
//! anonymous / basic / bearer-token auth through the `WWW-Authenticate` challenge, and
//! retries with backoff. Errors name the registry, the request and what it answered.

use crate::config::{Config, HostConfig};
use crate::images::oci::{self, Reference};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use reqwest::{header, Method, RequestBuilder, Response, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub mod creds;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub username: String,
    pub password: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl Auth {
    pub fn is_empty(&self) -> bool {
        self.username.is_empty()
            && self.password.is_empty()
            && self.identity_token.is_empty()
            && self.registry_token.is_empty()
    }
}

/// Per-request options from the client.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub plain_http: bool,
    pub skip_verify: bool,
    pub auth: Option<Auth>,
}

#[derive(Clone)]
pub struct Registries {
    secure: reqwest::Client,
    insecure: reqwest::Client,
    hosts: std::collections::BTreeMap<String, HostConfig>,
    creds_file: Option<std::path::PathBuf>,
    pub stall: Duration,
}

fn is_loopback(host: &str) -> bool {
    let h = host
        .rsplit_once(':')
        .map(|(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
        .unwrap_or(host);
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h.starts_with("127.") || h == "::1"
}

impl Registries {
    pub fn new(cfg: &Config) -> Result<Registries> {
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(Duration::from_secs(cfg.stall_timeout_secs.max(1)))
                .pool_idle_timeout(Duration::from_secs(30))
                .danger_accept_invalid_certs(insecure)
                .user_agent(concat!("kura/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        Ok(Registries {
            secure: build(false)?,
            insecure: build(true)?,
            hosts: cfg.registry.hosts.clone(),
            creds_file: cfg.registry.config_path.clone(),
            stall: Duration::from_secs(cfg.stall_timeout_secs.max(1)),
        })
    }

    /// A client for one repository. `push` asks for push access and skips mirrors.
    pub fn repo(&self, r: &Reference, opts: &Options, push: bool) -> Result<Repo> {
        let domain = if r.domain == oci::DOCKER_HUB {
            "registry-1.docker.io".to_string()
        } else {
            r.domain.clone()
        };
        let hc = self.hosts.get(&r.domain).cloned().unwrap_or_default();
        let plain = hc
            .plain_http
            .unwrap_or(opts.plain_http || is_loopback(&domain));
        let insecure = hc.skip_verify || opts.skip_verify;
        let mut endpoints = Vec::new();
        if !push {
            for m in &hc.mirrors {
                let m = m.trim_end_matches('/');
                let url = if m.contains("://") {
                    m.to_string()
                } else {
                    format!("https://{m}")
                };
                endpoints.push(url);
            }
        }
        endpoints.push(format!(
            "{}://{domain}",
            if plain { "http" } else { "https" }
        ));
        let auth = match &opts.auth {
            Some(a) if !a.is_empty() => Some(a.clone()),
            _ => match &self.creds_file {
                Some(p) => creds::lookup(p, &r.domain).unwrap_or_else(|e| {
                    tracing::warn!("credentials for {}: {e:#}", r.domain);
                    None
                }),
                None => None,
            },
        };
        Ok(Repo {
            http: if insecure {
                self.insecure.clone()
            } else {
                self.secure.clone()
            },
            endpoints,
            name: r.path.clone(),
            display: r.domain.clone(),
            auth,
            push,
            authz: Mutex::new(HashMap::new()),
        })
    }
}

pub struct Repo {
    http: reqwest::Client,
    /// Base URLs, mirrors first.
    pub endpoints: Vec<String>,
    /// Repository path in the registry (`library/busybox`).
    pub name: String,
    pub display: String,
    auth: Option<Auth>,
    push: bool,
    /// Authorization header per endpoint, learnt from challenges.
    authz: Mutex<HashMap<String, String>>,
}

#[derive(Debug)]
struct Challenge {
    scheme: String,
    params: HashMap<String, String>,
}

fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(k.trim().to_lowercase(), v.to_string());
        s = next.trim_start_matches([',', ' ']);
    }
    Some(Challenge {
        scheme: scheme.to_lowercase(),
        params,
    })
}

/// The message of a registry error body (`{"errors":[{"code","message"}]}`), if any.
async fn error_text(resp: Response) -> String {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("errors")?.as_array().map(|errs| {
                errs.iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e["code"].as_str().unwrap_or(""),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .unwrap_or_else(|| body.chars().take(200).collect());
    if detail.trim().is_empty() {
        status.to_string()
    } else {
        format!("{status}: {}", detail.trim())
    }
}

fn retryable(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT
}

impl Repo {
    fn scope(&self) -> String {
        format!(
            "repository:{}:{}",
            self.name,
            if self.push { "pull,push" } else { "pull" }
        )
    }

    /// Sends a request built by `build` against endpoint `base`, authenticating on a 401
    /// challenge and retrying transient failures. The response may be any status.
    pub async fn send(
        &self,
        base: &str,
        build: &(dyn Fn(&reqwest::Client, &str) -> RequestBuilder + Sync),
    ) -> Result<Response> {
        let mut delay = Duration::from_millis(200);
        let mut authed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut rb = build(&self.http, base);
            if let Some(a) = self.authz.lock().unwrap().get(base) {
                rb = rb.header(header::AUTHORIZATION, a.clone());
            }
            let what = rb
                .try_clone()
                .and_then(|b| b.build().ok())
                .map(|r| format!("{} {}", r.method(), r.url().path()))
                .unwrap_or_default();
            match rb.send().await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !authed => {
                    authed = true;
                    let ch = resp
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|h| h.to_str().ok())
                        .and_then(parse_challenge);
                    let Some(ch) = ch else {
                        return Ok(resp);
                    };
                    let value = self.authorize(&ch).await?;
                    self.authz.lock().unwrap().insert(base.to_string(), value);
                    continue;
                }
                Ok(resp) if retryable(resp.status()) && attempt < 4 => {
                    tracing::debug!(
                        "{} {what}: {}, retrying in {delay:?}",
                        self.display,
                        resp.status()
                    );
                }
                Ok(resp) => return Ok(resp),
                Err(e) if attempt < 4 && (e.is_connect() || e.is_timeout() || e.is_request()) => {
                    tracing::debug!("{} {what}: {e}, retrying in {delay:?}", self.display);
                }
                Err(e) => {
                    return Err(anyhow!(
                        "registry {}: {what}: {}",
                        self.display,
                        error_chain(&e)
                    ));
                }
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    /// Turns a challenge into an Authorization header value.
    async fn authorize(&self, ch: &Challenge) -> Result<String> {
        let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        match ch.scheme.as_str() {
            "basic" => {
                let a = self.auth.as_ref().filter(|a| !a.username.is_empty()).with_context(|| {
                    format!("registry {} wants a username and password (basic auth): run `kura login {}`", self.display, self.display)
                })?;
                Ok(format!(
                    "Basic {}",
                    b64(format!("{}:{}", a.username, a.password))
                ))
            }
            "bearer" => {
                if let Some(t) = self
                    .auth
                    .as_ref()
                    .map(|a| &a.registry_token)
                    .filter(|t| !t.is_empty())
                {
                    return Ok(format!("Bearer {t}"));
                }
                let realm = ch.params.get("realm").with_context(|| {
                    format!("registry {}: bearer challenge without realm", self.display)
                })?;
                let service = ch.params.get("service").cloned().unwrap_or_default();
                let scope = self.scope();
                let resp = match self.auth.as_ref().filter(|a| !a.identity_token.is_empty()) {
                    Some(a) => {
                        let form = [
                            ("grant_type", "refresh_token"),
                            ("refresh_token", a.identity_token.as_str()),
                            ("service", service.as_str()),
                            ("scope", scope.as_str()),
                            ("client_id", "kura"),
                        ];
                        self.http.post(realm).form(&form).send().await
                    }
                    None => {
                        let mut rb = self
                            .http
                            .get(realm)
                            .query(&[("service", service.as_str()), ("scope", scope.as_str())]);
                        if let Some(a) = self.auth.as_ref().filter(|a| !a.username.is_empty()) {
                            rb = rb.basic_auth(&a.username, Some(&a.password));
                        }
                        rb.send().await
                    }
                }
                .map_err(|e| {
                    anyhow!(
                        "token service {realm} for registry {}: {}",
                        self.display,
                        error_chain(&e)
                    )
                })?;
                if !resp.status().is_success() {
                    let st = resp.status();
                    let t = error_text(resp).await;
                    if st == StatusCode::UNAUTHORIZED || st == StatusCode::FORBIDDEN {
                        bail!("authentication to registry {} failed: token service {realm} answered {t}", self.display);
                    }
                    bail!("token service {realm} for registry {}: {t}", self.display);
                }
                let v: serde_json::Value = resp
                    .json()
                    .await
                    .context("token service answer is not JSON")?;
                let tok = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .with_context(|| format!("token service {realm} returned no token"))?;
                Ok(format!("Bearer {tok}"))
            }
            other => bail!("registry {}: unsupported auth scheme {other}", self.display),
        }
    }

    /// Fetches a manifest or index: (bytes, media type, digest).
    pub async fn get_manifest(&self, object: &str) -> Result<(Vec<u8>, String, String)> {
        let mut last = None;
        for base in &self.endpoints {
            let url = format!("{base}/v2/{}/manifests/{object}", self.name);
            let resp = match self
                .send(base, &|c, _| {
                    c.get(&url).header(header::ACCEPT, oci::MANIFEST_ACCEPT)
                })
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            if !resp.status().is_success() {
                let st = resp.status();
                let t = error_text(resp).await;
                let e = match st {
                    StatusCode::NOT_FOUND => anyhow!(
                        "registry {}: {}:{object} not found ({t})",
                        self.display,
                        self.name
                    ),
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        anyhow!(
                            "registry {}: access to {} denied ({t}); check `kura login {}`",
                            self.display,
                            self.name,
                            self.display
                        )
                    }
                    _ => anyhow!(
                        "registry {}: GET manifest {}:{object}: {t}",
                        self.display,
                        self.name
                    ),
                };
                last = Some(e);
                continue;
            }
            let mt = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|h| h.to_str().ok())
                .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
                .unwrap_or_default();
            let body = resp.bytes().await.map_err(|e| {
                anyhow!(
                    "registry {}: read manifest: {}",
                    self.display,
                    error_chain(&e)
                )
            })?;
            if body.len() > 8 << 20 {
                bail!(
                    "registry {}: manifest {object} is larger than 8 MiB",
                    self.display
                );
            }
            let digest = crate::content::sha256_digest(&body);
            if object.starts_with("sha256:") && digest != object {
                bail!(
                    "registry {}: manifest {object} has digest {digest}: refusing it",
                    self.display
                );
            }
            let mt = if mt.is_empty() || mt == "application/json" || mt == "text/plain" {
                oci::sniff_media_type(&body).unwrap_or(mt)
            } else {
                mt
            };
            return Ok((body.to_vec(), mt, digest));
        }
        Err(last.unwrap_or_else(|| anyhow!("registry {}: no endpoint", self.display)))
    }

    /// Opens a blob from `offset` (with a Range request when > 0). Returns the response
    /// and whether it starts at `offset` (206) or at 0 (200).
    pub async fn get_blob(&self, digest: &str, offset: u64) -> Result<(Response, bool)> {
        let mut last = None;
        for base in &self.endpoints {
            let url = format!("{base}/v2/{}/blobs/{digest}", self.name);
            let resp = match self
                .send(base, &|c, _| {
                    let rb = c.get(&url);
                    if offset > 0 {
                        rb.header(header::RANGE, format!("bytes={offset}-"))
                    } else {
                        rb
                    }
                })
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match resp.status() {
                StatusCode::PARTIAL_CONTENT if offset > 0 => return Ok((resp, true)),
                s if s.is_success() => return Ok((resp, offset == 0)),
                _ => {
                    let t = error_text(resp).await;
                    last = Some(anyhow!(
                        "registry {}: GET blob {digest} of {}: {t}",
                        self.display,
                        self.name
                    ));
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("registry {}: no endpoint", self.display)))
    }

    fn base(&self) -> &str {
        self.endpoints
            .last()
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub async fn blob_exists(&self, digest: &str) -> Result<bool> {
        let base = self.base();
        let url = format!("{base}/v2/{}/blobs/{digest}", self.name);
        let resp = self.send(base, &|c, _| c.head(&url)).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => {
                let t = error_text(resp).await;
                bail!("registry {}: HEAD blob {digest}: {t}", self.display)
            }
        }
    }

    /// Uploads a blob (monolithic PUT after POST) from a file.
    pub async fn upload_blob(
        &self,
        digest: &str,
        size: u64,
        path: &std::path::Path,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<()> {
        let base = self.base();
        let url = format!("{base}/v2/{}/blobs/uploads/", self.name);
        let resp = self
            .send(base, &|c, _| {
                c.post(&url).header(header::CONTENT_LENGTH, "0")
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            let t = error_text(resp).await;
            bail!(
                "registry {}: start upload of {digest} to {}: {t}",
                self.display,
                self.name
            );
        }
        let loc = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|h| h.to_str().ok())
            .context("upload without Location")?
            .to_string();
        let mut put = reqwest::Url::parse(&if loc.starts_with('/') {
            format!("{base}{loc}")
        } else {
            loc
        })?;
        put.query_pairs_mut().append_pair("digest", digest);
        let file = tokio::fs::File::open(path).await?;
        let progress = std::sync::Arc::new(progress);
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stream = tokio_util_stream(file, sent.clone(), progress.clone());
        let mut rb = self
            .http
            .request(Method::PUT, put.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size.to_string())
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(a) = self.authz.lock().unwrap().get(base) {
            rb = rb.header(header::AUTHORIZATION, a.clone());
        }
        let resp = rb.send().await.map_err(|e| {
            anyhow!(
                "registry {}: upload {digest}: {}",
                self.display,
                error_chain(&e)
            )
        })?;
        if resp.status() != StatusCode::CREATED {
            let t = error_text(resp).await;
            bail!(
                "registry {}: upload {digest} to {}: {t}",
                self.display,
                self.name
            );
        }
        Ok(())
    }

    pub async fn put_manifest(&self, object: &str, media_type: &str, body: Vec<u8>) -> Result<()> {
        let base = self.base();
        let url = format!("{base}/v2/{}/manifests/{object}", self.name);
        let resp = self
            .send(base, &|c, _| {
                c.put(&url)
                    .header(header::CONTENT_TYPE, media_type)
                    .body(body.clone())
            })
            .await?;
        if !resp.status().is_success() {
            let t = error_text(resp).await;
            bail!(
                "registry {}: PUT manifest {}:{object}: {t}",
                self.display,
                self.name
            );
        }
        Ok(())
    }

    /// Checks that the credentials work (GET /v2/).
    pub async fn ping(&self) -> Result<()> {
        let base = self.base();
        let url = format!("{base}/v2/");
        let resp = self.send(base, &|c, _| c.get(&url)).await?;
        if resp.status().is_success() {
            return Ok(());
        }
        let st = resp.status();
        let t = error_text(resp).await;
        if st == StatusCode::UNAUTHORIZED {
            bail!("login to {} failed: {t}", self.display);
        }
        bail!("registry {}: GET /v2/: {t}", self.display)
    }
}

fn tokio_util_stream(
    file: tokio::fs::File,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    progress: std::sync::Arc<impl Fn(u64) + Send + Sync + 'static>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(
        (file, sent, progress),
        |(mut f, sent, progress)| async move {
            let mut buf = vec![0u8; 1 << 16];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let total =
                        sent.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed) + n as u64;
                    progress(total);
                    Some((Ok(bytes::Bytes::from(buf)), (f, sent, progress)))
                }
                Err(e) => Some((Err(e), (f, sent, progress))),
            }
        },
    )
}

/// An error with its sources, on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="http://a/token",service="reg",scope="repository:x:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "http://a/token");
        assert_eq!(c.params["scope"], "repository:x:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert!(
            is_loopback("127.0.0.1:5000")
                && is_loopback("localhost")
                && !is_loopback("example.com:5000")
        );
    }
}
