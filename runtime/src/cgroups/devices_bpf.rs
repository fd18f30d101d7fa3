//! cgroup v2 has no devices controller: device access is decided by a
//! BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup. This file turns the
//! normalized [`Rule`]s into such a program and attaches it.
//!
//! The program sees `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32
//! minor; }`, where `access_type` is `(access << 16) | type`, and returns 1 to allow.
//! Its layout:
//!
//! ```text
//!   r2 = type, r3 = access, r4 = major, r5 = minor      (prologue)
//!   block for rule N-1 ... block for rule 0            (last rule first: it wins)
//!   r0 = 0; exit                                       (default deny)
//! ```
//!
//! Each block tests its conditions and jumps to the next block on the first
//! mismatch; if all hold it returns the rule's verdict. Emission stops after a rule
//! that matches everything, since earlier rules can no longer be reached.
//!
//! An allow rule matches when every requested access bit is in the rule (an open
//! for read+write needs both); a deny rule matches when any requested bit is in it.
//! Unlike v1's exception lists, two allow rules for the same device (one `r`, one
//! `w`) are not merged, so an O_RDWR open of it is denied; configs write `rw` in one
//! rule in practice.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::devices::{DevType, Rule, ACC_ALL};

/// One `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    /// dst_reg and src_reg nibbles; which nibble is which follows the C bitfield
    /// layout, so it depends on endianness.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes (class | op | source), from linux/bpf_common.h and linux/bpf.h.
pub(crate) const LDX_MEM_W: u8 = 0x61;
pub(crate) const ALU32_AND_K: u8 = 0x54;
pub(crate) const ALU32_RSH_K: u8 = 0x74;
pub(crate) const ALU64_MOV_K: u8 = 0xb7;
pub(crate) const ALU64_MOV_X: u8 = 0xbf;
pub(crate) const JMP_JNE_K: u8 = 0x55;
pub(crate) const JMP_JEQ_K: u8 = 0x15;
pub(crate) const JMP_EXIT: u8 = 0x95;

const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

fn regs(dst: u8, src: u8) -> u8 {
    if cfg!(target_endian = "little") {
        dst | (src << 4)
    } else {
        (dst << 4) | src
    }
}

#[cfg(test)]
pub(crate) fn dst_src(regs: u8) -> (u8, u8) {
    if cfg!(target_endian = "little") {
        (regs & 0xf, regs >> 4)
    } else {
        (regs >> 4, regs & 0xf)
    }
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: regs(dst, src),
        off,
        imm,
    }
}

/// Jumps inside a block are written with this offset, then pointed past the
/// block's end once its length is known.
const SKIP_BLOCK: i16 = i16::MIN;

fn block(rule: &Rule) -> Vec<Insn> {
    let mut b = Vec::new();
    match rule.typ {
        DevType::All => {}
        DevType::Block => b.push(insn(JMP_JNE_K, 2, 0, SKIP_BLOCK, DEV_BLOCK)),
        DevType::Char => b.push(insn(JMP_JNE_K, 2, 0, SKIP_BLOCK, DEV_CHAR)),
    }
    if rule.access != ACC_ALL {
        b.push(insn(ALU64_MOV_X, 1, 3, 0, 0));
        if rule.allow {
            // requested & !granted != 0 -> not this rule
            b.push(insn(
                ALU32_AND_K,
                1,
                0,
                0,
                i32::from(!rule.access & ACC_ALL),
            ));
            b.push(insn(JMP_JNE_K, 1, 0, SKIP_BLOCK, 0));
        } else {
            // requested & denied == 0 -> not this rule
            b.push(insn(ALU32_AND_K, 1, 0, 0, i32::from(rule.access)));
            b.push(insn(JMP_JEQ_K, 1, 0, SKIP_BLOCK, 0));
        }
    }
    if let Some(major) = rule.major {
        b.push(insn(JMP_JNE_K, 4, 0, SKIP_BLOCK, major as i32));
    }
    if let Some(minor) = rule.minor {
        b.push(insn(JMP_JNE_K, 5, 0, SKIP_BLOCK, minor as i32));
    }
    b.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow)));
    b.push(insn(JMP_EXIT, 0, 0, 0, 0));
    let len = b.len();
    for (i, ins) in b.iter_mut().enumerate() {
        if ins.off == SKIP_BLOCK {
            ins.off = (len - i - 1) as i16;
        }
    }
    b
}

/// The whole program for `rules`, default deny.
pub(crate) fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    let mut terminated = false;
    for r in rules.iter().rev() {
        p.extend(block(r));
        if r.is_total() {
            terminated = true;
            break;
        }
    }
    if !terminated {
        p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
        p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    }
    p
}

// bpf(2) commands and constants from linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr` as a zeroed buffer large enough for every command used here,
/// including fields newer kernels write back (BPF_PROG_QUERY's revision).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().unwrap())
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: attr is a valid, writable buffer of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn load(insns: &[Insn], log: Option<&mut Vec<u8>>) -> std::io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut a = Attr::new();
    a.u32(0, BPF_PROG_TYPE_CGROUP_DEVICE)
        .u32(4, insns.len() as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64);
    if let Some(buf) = log {
        a.u32(24, 1)
            .u32(28, buf.len() as u32)
            .u64(32, buf.as_mut_ptr() as u64);
    }
    let name = b"kura_devices";
    a.0[48..48 + name.len()].copy_from_slice(name);
    let fd = bpf(BPF_PROG_LOAD, &mut a)?;
    // SAFETY: the kernel just returned this new descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Ids of the device programs attached directly to `cg`.
fn attached(cg: &OwnedFd) -> Result<Vec<u32>> {
    let mut ids = [0u32; 64];
    let mut a = Attr::new();
    a.u32(0, cg.as_raw_fd() as u32)
        .u32(4, BPF_CGROUP_DEVICE)
        .u64(16, ids.as_mut_ptr() as u64)
        .u32(24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut a).map_err(|e| anyhow!("querying device programs: {e}"))?;
    let n = (a.get_u32(24) as usize).min(ids.len());
    Ok(ids[..n].to_vec())
}

/// Replaces the device filter of the v2 cgroup `dir` with one built from `rules`.
///
/// The new program is attached before the old ones are detached: with
/// BPF_F_ALLOW_MULTI every attached program must allow an access, so the cgroup
/// is never without a filter and never briefly more open than either rule set.
pub(crate) fn apply(dir: &Path, rules: &[Rule]) -> Result<()> {
    let field = "linux.resources.devices";
    let insns = program(rules);
    let prog = match load(&insns, None) {
        Ok(fd) => fd,
        Err(first) => {
            // Load again with the verifier log only on failure: it costs time.
            let mut log = vec![0u8; 64 * 1024];
            let detail = match load(&insns, Some(&mut log)) {
                Ok(_) => String::new(),
                Err(_) => {
                    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                    String::from_utf8_lossy(&log[..end]).trim().to_string()
                }
            };
            bail!("{field}: loading the eBPF device filter: {first} {detail}");
        }
    };
    let cg = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| anyhow!("{field}: opening {}: {e}", dir.display()))?;
    // SAFETY: open just returned this descriptor and nothing else owns it.
    let cg = unsafe { OwnedFd::from_raw_fd(cg) };
    let old = attached(&cg).map_err(|e| anyhow!("{field}: {e}"))?;

    let mut a = Attr::new();
    a.u32(0, cg.as_raw_fd() as u32)
        .u32(4, prog.as_raw_fd() as u32)
        .u32(8, BPF_CGROUP_DEVICE)
        .u32(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut a).map_err(|e| {
        anyhow!(
            "{field}: attaching the eBPF device filter to {}: {e}",
            dir.display()
        )
    })?;

    for id in old {
        let mut g = Attr::new();
        g.u32(0, id);
        let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut g) else {
            continue; // detached meanwhile
        };
        // SAFETY: fresh descriptor from the kernel.
        let old_prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut d = Attr::new();
        d.u32(0, cg.as_raw_fd() as u32)
            .u32(4, old_prog.as_raw_fd() as u32)
            .u32(8, BPF_CGROUP_DEVICE);
        bpf(BPF_PROG_DETACH, &mut d)
            .map_err(|e| anyhow!("{field}: detaching the previous device filter (id {id}): {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod interp {
    //! Just enough of an eBPF interpreter to run the programs above in unit tests
    //! (the kernel cannot test-run device programs).
    use super::*;

    pub fn run(p: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = dst_src(i.regs);
            let (dst, src) = (dst as usize, src as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from ctx");
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                ALU32_AND_K => r[dst] = u64::from((r[dst] as u32) & (i.imm as u32)),
                ALU32_RSH_K => r[dst] = u64::from((r[dst] as u32) >> i.imm),
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                ALU64_MOV_X => r[dst] = r[src],
                JMP_JNE_K | JMP_JEQ_K => {
                    let eq = r[dst] == i.imm as i64 as u64;
                    if eq == (i.code == JMP_JEQ_K) {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                JMP_EXIT => return r[0],
                c => panic!("unknown opcode {c:#x}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::interp::run;
    use super::*;
    use crate::cgroups::devices::{rules, ACC_MKNOD, ACC_READ, ACC_WRITE};
    use oci_spec::runtime::LinuxDeviceCgroup;

    const C: u32 = 2;
    const B: u32 = 1;
    const RW: u32 = (ACC_READ | ACC_WRITE) as u32;
    const R: u32 = ACC_READ as u32;
    const W: u32 = ACC_WRITE as u32;
    const M: u32 = ACC_MKNOD as u32;

    fn prog(json: &str) -> Vec<Insn> {
        let list: Vec<LinuxDeviceCgroup> = serde_json::from_str(json).unwrap();
        program(&rules(&list))
    }

    #[test]
    fn default_deny_with_allows() {
        let p = prog(
            r#"[{"allow":false,"access":"rwm"},
                {"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},
                {"allow":true,"type":"c","major":136,"access":"rw"},
                {"allow":true,"type":"c","major":5,"minor":1,"access":"r"},
                {"allow":true,"type":"b","access":"m"}]"#,
        );
        assert_eq!(run(&p, C, RW, 1, 3), 1);
        assert_eq!(run(&p, C, M, 1, 3), 1);
        assert_eq!(run(&p, C, RW, 1, 5), 0);
        assert_eq!(run(&p, B, RW, 1, 3), 0);
        assert_eq!(run(&p, C, RW, 136, 7), 1);
        assert_eq!(run(&p, C, M, 136, 7), 0);
        assert_eq!(run(&p, C, R, 5, 1), 1);
        assert_eq!(run(&p, C, RW, 5, 1), 0);
        assert_eq!(run(&p, B, M, 8, 0), 1);
        assert_eq!(run(&p, B, R, 8, 0), 0);
        // The leading deny-all ends emission, replaced by nothing: its block is last.
        assert_eq!(p.last().unwrap().code, JMP_EXIT);
    }

    #[test]
    fn allow_all_then_deny_one() {
        let p = prog(
            r#"[{"allow":true,"access":"rwm"},
                {"allow":false,"type":"c","major":1,"minor":3,"access":"rwm"},
                {"allow":false,"type":"c","major":1,"minor":5,"access":"w"}]"#,
        );
        assert_eq!(run(&p, C, R, 1, 3), 0);
        assert_eq!(run(&p, C, R, 1, 5), 1);
        assert_eq!(run(&p, C, W, 1, 5), 0);
        assert_eq!(run(&p, C, RW, 1, 5), 0);
        assert_eq!(run(&p, B, RW, 8, 0), 1);
    }

    #[test]
    fn later_rules_win_and_empty_denies_everything() {
        let p = prog(
            r#"[{"allow":true,"type":"c","major":1,"minor":3},
                {"allow":false,"type":"c","major":1}]"#,
        );
        assert_eq!(run(&p, C, R, 1, 3), 0);
        let p = prog(
            r#"[{"allow":false,"type":"c","major":1},
                {"allow":true,"type":"c","major":1,"minor":3}]"#,
        );
        assert_eq!(run(&p, C, R, 1, 3), 1);
        assert_eq!(run(&p, C, R, 1, 4), 0);
        let p = program(&[]);
        assert_eq!(run(&p, C, R, 1, 3), 0);
        // Rules before a total rule are not emitted.
        let p = prog(r#"[{"allow":true,"type":"c","major":1,"minor":3},{"allow":false}]"#);
        assert_eq!(p.len(), 6 + 2);
    }
}
