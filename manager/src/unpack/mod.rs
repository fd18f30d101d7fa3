//! Applying a layer (a tar stream) to a snapshot directory.
//!
//! Two modes:
//! - `Overlay`: the directory is an overlay upper layer on its own; whiteouts become
//!   overlay whiteouts (a 0:0 character device), opaque markers become the
//!   `trusted.overlay.opaque=y` xattr. Lower layers are never written nor followed, so
//!   layers of one image can be applied in parallel; the few things that need the layers
//!   below (a hardlink to a lower file, a parent directory the tar did not list) are
//!   returned as [`Deferred`] work, done once the parents are in place.
//! - `Native`: the directory already holds a copy of the parent; whiteouts delete.
//!
//! Refused (the caller then removes the snapshot): absolute paths, `..`, writes through a
//! symlink (anywhere in the path), hardlinks to absolute or `..` targets, overlay xattrs.
//! This is stricter than docker (which follows symlinks inside the root) and the same as
//! containerd's overlay apply, which resolves paths in the upper directory only.

use crate::content::digest::HashReader;
use crate::images::oci::Compression;
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Overlay,
    Native,
}

#[derive(Debug, Clone)]
pub enum Deferred {
    /// `path` is a hardlink to `target`, which is in a lower layer.
    Hardlink { path: PathBuf, target: PathBuf },
    /// `path` was created as a parent directory the tar did not list: copy its metadata
    /// from the layer below that has it.
    ImplicitDir { path: PathBuf },
}

#[derive(Debug)]
pub struct Applied {
    pub diff_id: String,
    /// Bytes of regular file data written.
    pub size: u64,
    pub deferred: Vec<Deferred>,
}

/// Wraps a compressed stream in its decompressor. The magic bytes decide when they say
/// gzip or zstd, whatever the media type claims (docker does the same).
pub fn decompress<'a, R: BufRead + 'a>(mut r: R, hint: Compression) -> Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf()?;
    let kind = if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if head.is_empty() {
        hint
    } else {
        Compression::None
    };
    Ok(match kind {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::None => Box::new(r),
    })
}

/// Checks and normalizes a path from a tar: relative, no `..`. None = the root itself.
pub fn clean_path(raw: &[u8]) -> Result<Option<PathBuf>> {
    let p = Path::new(std::ffi::OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                bail!("refusing layer entry {:?}: absolute path", p)
            }
            Component::ParentDir => bail!("refusing layer entry {:?}: path contains '..'", p),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

fn cpath(p: &Path) -> Result<CString> {
    Ok(CString::new(p.as_os_str().as_bytes())?)
}

fn lexists(p: &Path) -> Option<fs::Metadata> {
    fs::symlink_metadata(p).ok()
}

/// Makes sure every parent of `rel` under `root` is a real directory (never a symlink),
/// creating missing ones. Returns the created ones.
fn ensure_parents(root: &Path, rel: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
    let mut cur = PathBuf::new();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        let full = root.join(&cur);
        match lexists(&full) {
            None => {
                fs::create_dir(&full).with_context(|| format!("mkdir {}", cur.display()))?;
                fs::set_permissions(&full, fs::Permissions::from_mode(0o755))?;
                made.push(cur.clone());
            }
            Some(m) if m.file_type().is_symlink() => bail!(
                "refusing layer entry {}: it writes through the symlink {}",
                rel.display(),
                cur.display()
            ),
            Some(m) if m.is_dir() => {}
            Some(_) => bail!(
                "layer entry {}: parent {} is not a directory",
                rel.display(),
                cur.display()
            ),
        }
    }
    Ok(())
}

/// Removes whatever is at `p` (without following it), unless it is a directory and
/// `keep_dir` says so.
fn clear(p: &Path, keep_dir: bool) -> Result<bool> {
    match lexists(p) {
        None => Ok(false),
        Some(m) if m.is_dir() => {
            if keep_dir {
                return Ok(true);
            }
            fs::remove_dir_all(p)?;
            Ok(false)
        }
        Some(_) => {
            fs::remove_file(p)?;
            Ok(false)
        }
    }
}

fn lchown(p: &Path, uid: u64, gid: u64) -> Result<()> {
    let c = cpath(p)?;
    if unsafe { libc::lchown(c.as_ptr(), uid as u32, gid as u32) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("chown {}", p.display()));
    }
    Ok(())
}

fn set_mtime(p: &Path, secs: i64, nsec: i64) -> Result<()> {
    let c = cpath(p)?;
    let ts = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nsec,
        },
    ];
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("set times of {}", p.display()));
    }
    Ok(())
}

pub fn lsetxattr(p: &Path, name: &str, value: &[u8]) -> Result<()> {
    let (c, n) = (cpath(p)?, CString::new(name)?);
    if unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("set xattr {name} on {}", p.display()));
    }
    Ok(())
}

fn mknod(p: &Path, mode: u32, major: u32, minor: u32) -> Result<()> {
    let c = cpath(p)?;
    if unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(major, minor)) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mknod {}", p.display()));
    }
    Ok(())
}

pub const OVERLAY_OPAQUE: &str = "trusted.overlay.opaque";
const WH_PREFIX: &str = ".wh.";
const WH_OPAQUE: &str = ".wh..wh..opq";

/// Applies the uncompressed tar stream `r` to `root`. Reads `r` to its end so the
/// returned diff ID covers every byte.
pub fn apply(r: impl Read, root: &Path, mode: Mode) -> Result<Applied> {
    let mut hr = HashReader::new(r);
    let mut deferred = Vec::new();
    let mut size = 0u64;
    {
        let mut ar = tar::Archive::new(&mut hr);
        let mut created: HashSet<PathBuf> = HashSet::new();
        let mut dirs: Vec<(PathBuf, i64)> = Vec::new();
        let mut made = Vec::new();
        for entry in ar.entries().context("read layer tar")? {
            let mut entry = entry.context("read layer tar")?;
            let raw = entry.path_bytes().into_owned();
            let Some(rel) = clean_path(&raw)? else {
                continue; // the root itself
            };
            let name = rel.file_name().unwrap().to_string_lossy().to_string();
            made.clear();
            ensure_parents(root, &rel, &mut made)?;
            if mode == Mode::Overlay {
                deferred.extend(made.drain(..).map(|path| Deferred::ImplicitDir { path }));
            }
            let full = root.join(&rel);
            if let Some(target) = name.strip_prefix(WH_PREFIX) {
                let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
                if name == WH_OPAQUE {
                    let pdir = root.join(&parent);
                    match mode {
                        Mode::Overlay => lsetxattr(&pdir, OVERLAY_OPAQUE, b"y")?,
                        Mode::Native => {
                            for e in fs::read_dir(&pdir)? {
                                let e = e?;
                                if !created.contains(&parent.join(e.file_name())) {
                                    clear(&e.path(), false)?;
                                }
                            }
                        }
                    }
                } else {
                    if target.is_empty() || target == "." || target == ".." {
                        bail!("refusing layer entry {}: bad whiteout", rel.display());
                    }
                    let victim = root.join(&parent).join(target);
                    clear(&victim, false)?;
                    if mode == Mode::Overlay {
                        mknod(&victim, libc::S_IFCHR, 0, 0)?;
                    }
                }
                continue;
            }
            let h = entry.header().clone();
            let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
            let perm = h.mode().unwrap_or(0o644) & 0o7777;
            let mtime = h.mtime().unwrap_or(0) as i64;
            let mut xattrs = Vec::new();
            if let Some(exts) = entry.pax_extensions()? {
                for ext in exts {
                    let ext = ext?;
                    let Ok(k) = ext.key() else { continue };
                    if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                        if x.starts_with("trusted.overlay.") {
                            bail!(
                                "refusing layer entry {}: it sets the overlay xattr {x}",
                                rel.display()
                            );
                        }
                        xattrs.push((x.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
            let et = h.entry_type();
            match et {
                tar::EntryType::Directory => {
                    if !clear(&full, true)? {
                        fs::create_dir(&full)
                            .with_context(|| format!("mkdir {}", rel.display()))?;
                    }
                    dirs.push((rel.clone(), mtime));
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    clear(&full, false)?;
                    let mut f = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .mode(0o600)
                        .open(&full)
                        .with_context(|| format!("create {}", rel.display()))?;
                    size += std::io::copy(&mut entry, &mut f)
                        .with_context(|| format!("write {}", rel.display()))?;
                }
                tar::EntryType::Symlink => {
                    clear(&full, false)?;
                    let target = entry.link_name_bytes().context("symlink without target")?;
                    symlink(std::ffi::OsStr::from_bytes(&target), &full)
                        .with_context(|| format!("symlink {}", rel.display()))?;
                }
                tar::EntryType::Link => {
                    let raw_t = entry.link_name_bytes().context("hardlink without target")?;
                    let t = clean_path(&raw_t)
                        .with_context(|| format!("refusing hardlink {}", rel.display()))?
                        .with_context(|| {
                            format!("refusing hardlink {} to the root", rel.display())
                        })?;
                    // The target's parents must be real directories too (no symlink walk).
                    let mut cur = PathBuf::new();
                    for c in t
                        .parent()
                        .map(|p| p.components().collect::<Vec<_>>())
                        .unwrap_or_default()
                    {
                        cur.push(c);
                        if let Some(m) = lexists(&root.join(&cur)) {
                            if m.file_type().is_symlink() {
                                bail!(
                                    "refusing hardlink {}: its target {} goes through the symlink {}",
                                    rel.display(),
                                    t.display(),
                                    cur.display()
                                );
                            }
                        }
                    }
                    let tfull = root.join(&t);
                    if lexists(&tfull).is_some() {
                        clear(&full, false)?;
                        link(&tfull, &full)?;
                    } else if mode == Mode::Overlay {
                        deferred.push(Deferred::Hardlink {
                            path: rel.clone(),
                            target: t,
                        });
                    } else {
                        bail!(
                            "layer entry {}: hardlink target {} does not exist",
                            rel.display(),
                            t.display()
                        );
                    }
                    created.insert(rel);
                    continue; // a link shares its target's metadata
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    clear(&full, false)?;
                    let kind = match et {
                        tar::EntryType::Char => libc::S_IFCHR,
                        tar::EntryType::Block => libc::S_IFBLK,
                        _ => libc::S_IFIFO,
                    };
                    let (maj, min) = (
                        h.device_major().ok().flatten().unwrap_or(0),
                        h.device_minor().ok().flatten().unwrap_or(0),
                    );
                    mknod(&full, kind | 0o600, maj, min)?;
                }
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
                other => {
                    tracing::warn!(path = %rel.display(), "skipping layer entry of type {other:?}");
                    continue;
                }
            }
            lchown(&full, uid, gid)?;
            if et != tar::EntryType::Symlink {
                fs::set_permissions(&full, fs::Permissions::from_mode(perm))
                    .with_context(|| format!("chmod {}", rel.display()))?;
            }
            for (k, v) in &xattrs {
                lsetxattr(&full, k, v)?;
            }
            if et != tar::EntryType::Directory {
                set_mtime(&full, mtime, 0)?;
            }
            created.insert(rel);
        }
        for (d, mtime) in dirs.iter().rev() {
            set_mtime(&root.join(d), *mtime, 0)?;
        }
    }
    // Whatever follows the end-of-archive blocks still counts for the diff ID.
    std::io::copy(&mut hr, &mut std::io::sink())?;
    Ok(Applied {
        diff_id: hr.digest(),
        size,
        deferred,
    })
}

fn link(target: &Path, path: &Path) -> Result<()> {
    let (t, p) = (cpath(target)?, cpath(path)?);
    if unsafe { libc::linkat(libc::AT_FDCWD, t.as_ptr(), libc::AT_FDCWD, p.as_ptr(), 0) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("hardlink {} to {}", path.display(), target.display()));
    }
    Ok(())
}

/// Finds `rel` in the lower layers (nearest first), honouring whiteouts and opaque dirs.
fn find_in_lowers(lowers: &[PathBuf], rel: &Path) -> Option<PathBuf> {
    'layer: for l in lowers {
        // A whiteout or opaque directory on the way hides everything further down.
        let mut cur = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            let p = l.join(&cur);
            match lexists(&p) {
                None => continue 'layer,
                Some(m) => {
                    use std::os::unix::fs::{FileTypeExt, MetadataExt};
                    if m.file_type().is_char_device() && m.rdev() == 0 {
                        return None;
                    }
                    if i + 1 == comps.len() {
                        return Some(p);
                    }
                    if m.file_type().is_symlink() || !m.is_dir() {
                        return None;
                    }
                    if xattr_get(&p, OVERLAY_OPAQUE).as_deref() == Some(b"y".as_slice()) {
                        // Lower layers below this one are hidden under this dir; the
                        // path must be in this layer.
                        let rest = l.join(rel);
                        return lexists(&rest).map(|_| rest);
                    }
                }
            }
        }
    }
    None
}

fn xattr_get(p: &Path, name: &str) -> Option<Vec<u8>> {
    let (c, n) = (cpath(p).ok()?, CString::new(name).ok()?);
    let mut buf = vec![0u8; 256];
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

fn xattr_list(p: &Path) -> Vec<String> {
    let Ok(c) = cpath(p) else { return vec![] };
    let mut buf = vec![0u8; 4096];
    let r = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r <= 0 {
        return vec![];
    }
    buf[..r as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).to_string())
        .collect()
}

/// Copies owner, mode, xattrs and times of `src` onto `dst`.
fn copy_meta(src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(src)?;
    lchown(dst, m.uid() as u64, m.gid() as u64)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))?;
    for x in xattr_list(src) {
        if x.starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(v) = xattr_get(src, &x) {
            lsetxattr(dst, &x, &v)?;
        }
    }
    set_mtime(dst, m.mtime(), m.mtime_nsec())
}

/// Does the work `apply` could not do without the layers below (`lowers`, nearest first).
pub fn finish_deferred(root: &Path, lowers: &[PathBuf], deferred: &[Deferred]) -> Result<()> {
    // Directories first, deepest last so their parents' times are set after.
    for d in deferred {
        if let Deferred::ImplicitDir { path } = d {
            if let Some(src) = find_in_lowers(lowers, path) {
                if fs::symlink_metadata(&src)
                    .map(|m| m.is_dir())
                    .unwrap_or(false)
                {
                    copy_meta(&src, &root.join(path))?;
                }
            }
        }
    }
    for d in deferred {
        if let Deferred::Hardlink { path, target } = d {
            let up = root.join(target);
            if lexists(&up).is_none() {
                let src = find_in_lowers(lowers, target).with_context(|| {
                    format!(
                        "layer entry {}: hardlink target {} not found",
                        path.display(),
                        target.display()
                    )
                })?;
                let m = fs::symlink_metadata(&src)?;
                if !m.is_file() {
                    bail!(
                        "layer entry {}: hardlink target {} is not a regular file",
                        path.display(),
                        target.display()
                    );
                }
                let mut made = Vec::new();
                ensure_parents(root, target, &mut made)?;
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&up)?;
                std::io::copy(&mut fs::File::open(&src)?, &mut out)?;
                drop(out);
                copy_meta(&src, &up)?;
            }
            let full = root.join(path);
            clear(&full, false)?;
            link(&up, &full)?;
        }
    }
    Ok(())
}

/// The read side of the streaming pipeline: bytes from the network arrive on a channel.
pub struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    cur: bytes::Bytes,
}

impl ChannelReader {
    pub fn new(rx: std::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>) -> Self {
        ChannelReader {
            rx,
            cur: bytes::Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(Ok(b)) => self.cur = b,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

/// Tees everything read from `inner` into `w` (the content store ingest).
pub struct TeeReader<'a, R> {
    pub inner: R,
    pub w: &'a mut dyn std::io::Write,
}

impl<R: Read> Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.w.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Buffered decompression of `r` with the media type's hint.
pub fn layer_reader<'a, R: Read + 'a>(r: R, hint: Compression) -> Result<Box<dyn Read + 'a>> {
    decompress(BufReader::with_capacity(1 << 17, r), hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(clean_path(b"./a/b").unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(clean_path(b"./").unwrap(), None);
        assert!(clean_path(b"/etc/passwd").is_err());
        assert!(clean_path(b"a/../../x").is_err());
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, et, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*et);
            h.set_mode(if *et == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_size(data.len() as u64);
            h.set_mtime(1_700_000_000);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn root_only() -> bool {
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn native_whiteouts_and_symlink_refusal() {
        if !root_only() {
            eprintln!("SKIPPED: needs root (chown, mknod)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("kura-apply-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let l1 = layer(&[
            ("d", tar::EntryType::Directory, b"", ""),
            ("d/a", tar::EntryType::Regular, b"a", ""),
            ("d/b", tar::EntryType::Regular, b"b", ""),
            ("gone", tar::EntryType::Regular, b"x", ""),
            ("link", tar::EntryType::Symlink, b"", "/etc"),
        ]);
        let a = apply(&l1[..], &dir, Mode::Native).unwrap();
        assert_eq!(a.diff_id, crate::content::sha256_digest(&l1));
        let l2 = layer(&[
            ("d/.wh..wh..opq", tar::EntryType::Regular, b"", ""),
            ("d/c", tar::EntryType::Regular, b"c", ""),
            (".wh.gone", tar::EntryType::Regular, b"", ""),
        ]);
        apply(&l2[..], &dir, Mode::Native).unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        names.sort();
        assert_eq!(names, ["c"]);
        assert!(!dir.join("gone").exists());
        let l3 = layer(&[("link/passwd-escape", tar::EntryType::Regular, b"x", "")]);
        let e = format!("{:#}", apply(&l3[..], &dir, Mode::Native).unwrap_err());
        assert!(e.contains("writes through the symlink link"), "{e}");
        assert!(!Path::new("/etc/passwd-escape").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn overlay_whiteouts_become_char_devices_and_opaque_xattrs() {
        if !root_only() {
            eprintln!("SKIPPED: needs root (mknod, trusted xattrs)");
            return;
        }
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let dir = std::env::temp_dir().join(format!("kura-apply-ovl-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let l = layer(&[
            ("d/.wh..wh..opq", tar::EntryType::Regular, b"", ""),
            ("d/c", tar::EntryType::Regular, b"c", ""),
            (".wh.gone", tar::EntryType::Regular, b"", ""),
            ("hl", tar::EntryType::Link, b"", "lower-file"),
        ]);
        let a = apply(&l[..], &dir, Mode::Overlay).unwrap();
        let m = fs::symlink_metadata(dir.join("gone")).unwrap();
        assert!(m.file_type().is_char_device() && m.rdev() == 0);
        assert_eq!(
            xattr_get(&dir.join("d"), OVERLAY_OPAQUE).as_deref(),
            Some(b"y".as_slice())
        );
        // The hardlink's target is in a lower layer: deferred, then copied up and linked.
        assert!(a
            .deferred
            .iter()
            .any(|d| matches!(d, Deferred::Hardlink { .. })));
        let lower = dir.with_extension("lower");
        fs::create_dir_all(&lower).unwrap();
        fs::write(lower.join("lower-file"), "from below").unwrap();
        finish_deferred(&dir, std::slice::from_ref(&lower), &a.deferred).unwrap();
        assert_eq!(fs::read_to_string(dir.join("hl")).unwrap(), "from below");
        assert_eq!(fs::metadata(dir.join("hl")).unwrap().nlink(), 2);
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_dir_all(&lower);
    }
}
