//! CVE-2019-5736 without re-executing the runtime. The attack needs the container's
//! process to execve a path that resolves to the runtime's own file: `/proc/self/exe`
//! (or a script whose interpreter is), resolved while the caller is still the
//! runtime. So init does not execve the container's program itself: it execs a
//! ~300-byte static program from a sealed memfd, and that program execs the
//! container's program. At that second execve `/proc/self/exe` names the sealed
//! memfd, which can be neither written nor resized; the runtime's file is
//! reachable from nowhere in the container.
//!
//! Cost: a memfd per container and one exec of a program that maps one page (~50
//! µs here), where re-executing the whole runtime from a protected copy (what
//! `exe_guard::protect` does) costs a second start of a 4 MB glibc program (~1 ms
//! on this VM, where each of the ~70 CPUID instructions glibc runs at start-up
//! traps to the hypervisor).
//!
//! What it does not cover, and `exe_guard` therefore leaves to the re-exec:
//! another process that can open `/proc/<init>/exe` before init's exec (only with
//! CAP_SYS_PTRACE in our user namespace, or in a pid namespace the container does
//! not own), `kura-runtime exec` (other containers may share the pid namespace it
//! joins), and LSM labels that apply at the first exec (the trampoline's).

use std::ffi::{CStr, CString};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use crate::security::sealed_memfd;
use crate::sys;

/// The trampoline's code, assembled from `trampoline/x86_64.S`.
#[cfg(target_arch = "x86_64")]
const CODE: &[u8] = &[
    0x48, 0x8b, 0x0c, 0x24, 0x48, 0x83, 0xf9, 0x02, 0x72, 0x74, 0x48, 0x8b, 0x7c, 0x24, 0x08, 0x48,
    0x8d, 0x74, 0x24, 0x18, 0x48, 0x8d, 0x54, 0xcc, 0x10, 0xb8, 0x3b, 0x00, 0x00, 0x00, 0x0f, 0x05,
    0x49, 0x89, 0xc4, 0x48, 0x8b, 0x74, 0x24, 0x10, 0x31, 0xd2, 0x80, 0x3c, 0x16, 0x00, 0x74, 0x05,
    0x48, 0xff, 0xc2, 0xeb, 0xf5, 0xbf, 0x02, 0x00, 0x00, 0x00, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f,
    0x05, 0x48, 0x83, 0xec, 0x20, 0x48, 0x8d, 0x74, 0x24, 0x1f, 0xc6, 0x06, 0x0a, 0x4c, 0x89, 0xe0,
    0x48, 0xf7, 0xd8, 0xb9, 0x0a, 0x00, 0x00, 0x00, 0x31, 0xd2, 0x48, 0xf7, 0xf1, 0x80, 0xc2, 0x30,
    0x48, 0xff, 0xce, 0x88, 0x16, 0x48, 0x85, 0xc0, 0x75, 0xee, 0x48, 0x8d, 0x54, 0x24, 0x20, 0x48,
    0x29, 0xf2, 0xbf, 0x02, 0x00, 0x00, 0x00, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xbf, 0x7f,
    0x00, 0x00, 0x00, 0xb8, 0xe7, 0x00, 0x00, 0x00, 0x0f, 0x05,
];
#[cfg(target_arch = "x86_64")]
const MACHINE: u16 = 62; // EM_X86_64

/// Whether this architecture has a trampoline.
pub const SUPPORTED: bool = cfg!(target_arch = "x86_64");

/// The trampoline as an ELF file: a position-independent executable (ET_DYN, so
/// the kernel places it at a random address) with one read+execute segment and a
/// non-executable stack, no interpreter, no sections.
#[cfg(target_arch = "x86_64")]
pub fn image() -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let code_at = EHDR + 2 * PHDR;
    let size = (code_at + CODE.len()) as u64;
    let mut f = Vec::with_capacity(code_at + CODE.len());
    // e_ident: ELF, 64-bit, little-endian, version 1, System V ABI.
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&3u16.to_le_bytes()); // e_type: ET_DYN
    f.extend_from_slice(&MACHINE.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&(code_at as u64).to_le_bytes()); // e_entry
    f.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [EHDR as u16, PHDR as u16, 2, 64, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        f.extend_from_slice(&half.to_le_bytes());
    }
    // PT_LOAD, R+X: the whole file at offset 0.
    let load: [u64; 6] = [0, 0, 0, size, size, 0x1000];
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&5u32.to_le_bytes());
    load.iter()
        .for_each(|v| f.extend_from_slice(&v.to_le_bytes()));
    // PT_GNU_STACK, R+W: without it the stack would be executable.
    let stack: [u64; 6] = [0, 0, 0, 0, 0, 16];
    f.extend_from_slice(&0x6474_e551u32.to_le_bytes());
    f.extend_from_slice(&6u32.to_le_bytes());
    stack
        .iter()
        .for_each(|v| f.extend_from_slice(&v.to_le_bytes()));
    debug_assert_eq!(f.len(), code_at);
    f.extend_from_slice(CODE);
    f
}

#[cfg(not(target_arch = "x86_64"))]
pub fn image() -> Vec<u8> {
    Vec::new()
}

/// The trampoline in a sealed memfd, close-on-exec: made by the runtime before it
/// forks init, so a seccomp profile that refuses memfd_create does not matter.
pub struct Trampoline(OwnedFd);

impl Trampoline {
    pub fn new() -> io::Result<Self> {
        if !SUPPORTED {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        let f = sealed_memfd::create(c"kura-exec")?;
        (&f).write_all(&image())?;
        sealed_memfd::seal(&f)?;
        Ok(Trampoline(f.into()))
    }

    /// Execs `exe` with `argv` and `envp` through the trampoline. Returns only if
    /// the trampoline itself could not be executed; a failure of the program's own
    /// execve is reported by the trampoline on stderr as
    /// `kura-runtime: exec <exe>: os error <errno>`, with exit status 127.
    pub fn exec(&self, exe: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
        let e = self.call(exe, argv, envp).exec();
        // Only the trampoline's own exec returns here: the target's failure is
        // reported by the trampoline itself.
        io::Error::new(e.kind(), format!("exec trampoline: {e}"))
    }

    /// The execveat arguments, built ahead so the exec itself does not allocate.
    fn call<'a>(&'a self, exe: &'a CStr, argv: &'a [CString], envp: &'a [CString]) -> Call<'a> {
        let msg = format!("kura-runtime: exec {}: os error ", exe.to_string_lossy());
        let msg = CString::new(msg).unwrap_or_default();
        let mut a: Vec<*const libc::c_char> = Vec::with_capacity(argv.len() + 3);
        a.push(exe.as_ptr());
        a.push(msg.as_ptr());
        a.extend(argv.iter().map(|s| s.as_ptr()));
        a.push(std::ptr::null());
        let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
        e.push(std::ptr::null());
        Call {
            fd: self.0.as_raw_fd(),
            _msg: msg,
            argv: a,
            envp: e,
            _borrow: std::marker::PhantomData,
        }
    }
}

struct Call<'a> {
    fd: libc::c_int,
    /// Owns the string argv[1] points into.
    _msg: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    _borrow: std::marker::PhantomData<&'a ()>,
}

impl Call<'_> {
    fn exec(&self) -> io::Error {
        unsafe { sys::execveat_empty(self.fd, self.argv.as_ptr(), self.envp.as_ptr()) }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;
    use std::os::unix::process::ExitStatusExt;

    /// Runs the trampoline with `argv` in a child; returns (status, stdout, stderr).
    fn run(t: &Trampoline, exe: &str, argv: &[&str]) -> (i32, String, String) {
        let pipe = || {
            let mut p = [0; 2];
            assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            unsafe { (std::fs::File::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
        };
        let (mut out_r, out_w) = pipe();
        let (mut err_r, err_w) = pipe();
        let exe = CString::new(exe).unwrap();
        let argv: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
        let env = vec![CString::new("K=v").unwrap()];
        // Built before the fork: the test harness is multi-threaded.
        let call = t.call(&exe, &argv, &env);
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                libc::dup2(out_w.as_raw_fd(), 1);
                libc::dup2(err_w.as_raw_fd(), 2);
            }
            let _ = call.exec();
            unsafe { libc::_exit(99) };
        }
        drop((out_w, err_w));
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let (mut out, mut err) = (String::new(), String::new());
        std::io::Read::read_to_string(&mut out_r, &mut out).unwrap();
        std::io::Read::read_to_string(&mut err_r, &mut err).unwrap();
        let code = std::process::ExitStatus::from_raw(status)
            .code()
            .unwrap_or(-1);
        (code, out, err)
    }

    #[test]
    fn execs_the_program_with_its_args_and_env() {
        let t = Trampoline::new().unwrap();
        let (code, out, err) = run(&t, "/bin/sh", &["sh", "-c", "echo \"$0 $1 $K\"", "a", "b"]);
        assert_eq!((code, out.as_str(), err.as_str()), (0, "a b v\n", ""));
    }

    #[test]
    fn reports_a_failed_exec_like_init_does() {
        let t = Trampoline::new().unwrap();
        let (code, out, err) = run(&t, "/nonexistent/x", &["x"]);
        assert_eq!(code, 127);
        assert_eq!(out, "");
        assert_eq!(err, "kura-runtime: exec /nonexistent/x: os error 2\n");
    }

    /// The point of it: `/proc/self/exe` in the program's execve is the sealed
    /// trampoline, not the runtime, and it cannot be opened for writing.
    #[test]
    fn proc_self_exe_is_the_sealed_trampoline() {
        let t = Trampoline::new().unwrap();
        // The trampoline re-entered through /proc/self/exe takes "/bin/sh" as its
        // path and runs the script; the script's own /proc/self/exe is sh.
        let (code, out, _) = run(
            &t,
            "/proc/self/exe",
            &["/bin/sh", "m", "sh", "-c", "echo ran"],
        );
        assert_eq!((code, out.as_str()), (0, "ran\n"));
        let w = unsafe { libc::write(t.0.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        assert!(w < 0, "sealed memfd accepted a write");
        let p = format!("/proc/self/fd/{}", t.0.as_raw_fd());
        let e = std::fs::OpenOptions::new().write(true).open(&p);
        assert!(
            e.is_err() || std::io::Write::write(&mut e.unwrap(), b"x").is_err(),
            "trampoline writable through {p}"
        );
    }

    /// The bytes above are what `trampoline/x86_64.S` assembles to.
    #[test]
    fn code_matches_its_source() {
        let dir = std::env::temp_dir().join(format!("kura-tramp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/security/trampoline/x86_64.S"
        );
        let obj = dir.join("t.o");
        let bin = dir.join("t.bin");
        let ok = std::process::Command::new("as")
            .arg(src)
            .arg("-o")
            .arg(&obj)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("SKIP: no GNU as to assemble {src}");
            return;
        }
        let st = std::process::Command::new("objcopy")
            .args(["-O", "binary", "-j", ".text"])
            .arg(&obj)
            .arg(&bin)
            .status()
            .unwrap();
        assert!(st.success());
        let bytes = std::fs::read(&bin).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(bytes, CODE);
    }
}
