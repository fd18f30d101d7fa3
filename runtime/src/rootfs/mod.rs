//! The container's filesystem view: everything between "a bundle's rootfs
//! directory" and "a process whose `/` is that rootfs", run inside the container's
//! mount namespace by its init process.

pub mod devices;
pub mod mountinfo;
pub mod mounts;
pub mod options;
pub mod resolve;

use crate::sys::{self, MountAttr};
use anyhow::{bail, Context, Result};
use oci_spec::runtime::Spec;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use options::propagation_flag;

pub struct Setup<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub userns: bool,
    pub cgroupns: bool,
    pub cgroups: &'a [mountinfo::Hierarchy],
    /// Host NOTIFY_SOCKET to bind into the container at the same path.
    pub notify_socket: Option<&'a Path>,
    /// The container shares the host's mount namespace: mounts land on the host
    /// (under the rootfs, undone by `delete`) and propagation is left alone.
    pub host_mount_ns: bool,
}

fn c(p: &Path) -> Result<CString> {
    Ok(CString::new(p.as_os_str().as_bytes())?)
}

fn mount_flags(target: &str, flags: libc::c_ulong) -> std::io::Result<()> {
    let t = CString::new(target).unwrap_or_default();
    sys::errno_result(unsafe {
        libc::mount(
            std::ptr::null(),
            t.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    })
}

fn root_propagation(spec: &Spec) -> Option<libc::c_ulong> {
    spec.linux()
        .as_ref()?
        .rootfs_propagation()
        .as_deref()
        .and_then(propagation_flag)
}

/// Everything before pivot_root: propagation, the rootfs bind, the config's mounts,
/// device nodes. Returns an O_PATH fd of the rootfs.
pub fn prepare(s: &Setup) -> Result<OwnedFd> {
    // Our mounts must never propagate back to the host. Until pivot_root the tree is
    // slave (or private when asked): pivot_root refuses shared mounts and the rootfs
    // bind refuses unbindable ones; the asked propagation is applied after the pivot.
    let prop = match root_propagation(s.spec) {
        Some(p) if p & (libc::MS_PRIVATE | libc::MS_UNBINDABLE) != 0 => {
            libc::MS_PRIVATE | libc::MS_REC
        }
        _ => libc::MS_SLAVE | libc::MS_REC,
    };
    if !s.host_mount_ns {
        mount_flags("/", prop).context("make / a slave mount")?;
        let root_c = c(s.rootfs)?;
        // pivot_root needs the new root to be a mount point.
        sys::errno_result(unsafe {
            libc::mount(
                root_c.as_ptr(),
                root_c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        })
        .with_context(|| format!("bind mount rootfs {}", s.rootfs.display()))?;
    }
    let root = resolve::open_root(s.rootfs)?;
    let user_fd = if s.userns {
        open_file("/proc/self/ns/user").ok()
    } else {
        None
    };
    let ctx = mounts::Ctx {
        root: root.as_fd(),
        bundle: s.bundle,
        userns: s.userns,
        cgroupns: s.cgroupns,
        cgroups: s.cgroups,
        userns_fd: user_fd.as_ref().map(|f| f.as_fd()),
    };
    let mut dev_mounted = false;
    for (i, m) in s.spec.mounts().iter().flatten().enumerate() {
        mounts::mount(&ctx, i, m)?;
        if m.destination() == Path::new("/dev") {
            dev_mounted = true;
        }
    }
    let linux = s.spec.linux().as_ref();
    let devs = linux.and_then(|l| l.devices().as_ref());
    if dev_mounted {
        let listed: Vec<&Path> = devs
            .iter()
            .flat_map(|d| d.iter().map(|d| d.path().as_path()))
            .collect();
        devices::create_defaults(root.as_fd(), s.userns, &listed)?;
        devices::symlinks(root.as_fd())?;
    }
    for (i, d) in devs.iter().flat_map(|d| d.iter()).enumerate() {
        devices::create(root.as_fd(), &devices::from_spec(d), s.userns)
            .with_context(|| format!("linux.devices[{i}]"))?;
    }
    if let Some(sock) = s.notify_socket {
        bind_notify_socket(root.as_fd(), sock)?;
    }
    Ok(root)
}

fn open_file(p: &str) -> std::io::Result<OwnedFd> {
    std::fs::File::open(p).map(OwnedFd::from)
}

fn bind_notify_socket(root: BorrowedFd, sock: &Path) -> Result<()> {
    let tree = sys::open_tree(
        libc::AT_FDCWD,
        &c(sock)?,
        sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC,
    )
    .with_context(|| format!("NOTIFY_SOCKET {}", sock.display()))?;
    let dst = resolve::ensure_in_root(root, sock, resolve::Kind::File, false)?;
    sys::move_mount_fd(tree.as_fd(), dst.as_fd()).context("bind NOTIFY_SOCKET into the container")
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RootSwitch {
    /// pivot_root: the old root is gone from the container's mount namespace.
    Pivot,
    /// --no-pivot: MS_MOVE the rootfs onto / and chroot (for ramfs roots).
    MoveChroot,
    /// No mount namespace of its own: chroot only; the host keeps its root.
    Chroot,
}

/// Makes the rootfs `/`. pivot_root(".", ".") stacks the old root under the new one,
/// where a lazy unmount removes it without needing a put_old directory.
pub fn pivot(rootfs: &Path, how: RootSwitch) -> Result<()> {
    let rc = c(rootfs)?;
    sys::errno_result(unsafe { libc::chdir(rc.as_ptr()) }).context("chdir to rootfs")?;
    if how == RootSwitch::Chroot {
        sys::errno_result(unsafe { libc::chroot(c".".as_ptr()) }).context("chroot")?;
    } else if how == RootSwitch::MoveChroot {
        sys::errno_result(unsafe {
            libc::mount(
                rc.as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            )
        })
        .context("move rootfs to / (--no-pivot)")?;
        sys::errno_result(unsafe { libc::chroot(c".".as_ptr()) }).context("chroot")?;
    } else {
        sys::pivot_root(c".", c".").context("pivot_root")?;
        // The old root must not propagate our unmount to the host.
        mount_flags(".", libc::MS_SLAVE | libc::MS_REC).context("make old root a slave")?;
        sys::errno_result(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) })
            .context("unmount old root")?;
    }
    sys::errno_result(unsafe { libc::chdir(c"/".as_ptr()) }).context("chdir /")?;
    Ok(())
}

/// After pivot_root: masked and read-only paths, read-only root, final propagation.
pub fn finish(spec: &Spec, host_mount_ns: bool) -> Result<()> {
    let root = resolve::open_root(Path::new("/"))?;
    if let Some(l) = spec.linux() {
        for p in l.masked_paths().iter().flatten() {
            mask(root.as_fd(), Path::new(p)).with_context(|| format!("linux.maskedPaths: {p}"))?;
        }
        for p in l.readonly_paths().iter().flatten() {
            readonly(root.as_fd(), Path::new(p))
                .with_context(|| format!("linux.readonlyPaths: {p}"))?;
        }
    }
    if host_mount_ns {
        // Remounting / or changing its propagation would change the host's.
        return Ok(());
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let attr = MountAttr {
            attr_set: sys::MOUNT_ATTR_RDONLY,
            ..Default::default()
        };
        sys::mount_setattr(root.as_fd(), false, &attr)
            .context("root.readonly: remount / read-only")?;
    }
    if let Some(p) = root_propagation(spec) {
        mount_flags("/", p).context("linux.rootfsPropagation")?;
    }
    Ok(())
}

fn open_existing(root: BorrowedFd, p: &Path) -> Result<Option<OwnedFd>> {
    match resolve::open_in_root(root, p, false) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Hides a path: a read-only empty tmpfs over directories, /dev/null over files.
fn mask(root: BorrowedFd, p: &Path) -> Result<()> {
    let Some(fd) = open_existing(root, p)? else {
        return Ok(());
    };
    let target = sys::proc_fd_path(fd.as_raw_fd());
    if resolve::is_dir(fd.as_fd()) {
        sys::errno_result(unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY,
                c"size=0k".as_ptr().cast(),
            )
        })
        .context("mount empty tmpfs")?;
    } else {
        let null = sys::open_tree(
            libc::AT_FDCWD,
            c"/dev/null",
            sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC,
        )
        .context("open /dev/null to mask with")?;
        sys::move_mount_fd(null.as_fd(), fd.as_fd()).context("bind /dev/null")?;
    }
    Ok(())
}

fn readonly(root: BorrowedFd, p: &Path) -> Result<()> {
    let Some(fd) = open_existing(root, p)? else {
        return Ok(());
    };
    let tree = sys::open_tree(
        fd.as_raw_fd(),
        c"",
        sys::OPEN_TREE_CLONE
            | sys::OPEN_TREE_CLOEXEC
            | libc::AT_RECURSIVE as u32
            | libc::AT_EMPTY_PATH as u32,
    )
    .context("clone mount")?;
    let attr = MountAttr {
        attr_set: sys::MOUNT_ATTR_RDONLY,
        ..Default::default()
    };
    sys::mount_setattr(tree.as_fd(), true, &attr).context("make read-only")?;
    sys::move_mount_fd(tree.as_fd(), fd.as_fd()).context("attach read-only bind")
}

/// Binds the pty slave onto /dev/console, as runc does for terminal containers.
pub fn mount_console(slave_path: &Path) -> Result<()> {
    let root = resolve::open_root(Path::new("/"))?;
    let tree = sys::open_tree(
        libc::AT_FDCWD,
        &c(slave_path)?,
        sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC,
    )
    .with_context(|| format!("open {}", slave_path.display()))?;
    let dst = resolve::ensure_in_root(
        root.as_fd(),
        Path::new("/dev/console"),
        resolve::Kind::File,
        false,
    )?;
    sys::move_mount_fd(tree.as_fd(), dst.as_fd()).context("bind pty onto /dev/console")
}

/// Writes `linux.sysctl` through the container's /proc/sys.
pub fn sysctl(spec: &Spec) -> Result<()> {
    let Some(map) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(());
    };
    for (k, v) in map {
        let p: PathBuf = Path::new("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&p, v).with_context(|| format!("linux.sysctl: set {k}={v}"))?;
    }
    Ok(())
}

/// Unmounts everything a container without its own mount namespace left under its
/// rootfs on the host, deepest first.
pub fn unmount_under(rootfs: &Path) {
    let mut points: Vec<PathBuf> = mountinfo::read()
        .into_iter()
        .map(|e| e.mount_point)
        .filter(|m| m.starts_with(rootfs) && m != rootfs)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        if let Ok(cp) = c(&p) {
            unsafe { libc::umount2(cp.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Refuses a rootfs that is the host's `/`: pivoting there would hand the container the host.
pub fn check_rootfs(rootfs: &Path) -> Result<()> {
    if rootfs == Path::new("/") {
        bail!("root.path: the rootfs may not be the host's /");
    }
    Ok(())
}
