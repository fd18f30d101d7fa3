//! A classic-BPF assembler that emits the program back to front.
//!
//! cBPF only jumps forward and conditional jumps reach at most 255
//! instructions. Emitting backwards means every jump target already exists
//! when the jump is written, so its offset is known at once; a target too far
//! away gets a fresh `ret` copy (when it is a `ret`) or an unconditional `ja`
//! placed right after the jump. Those are only ever inserted just before a
//! jump is emitted, where nothing can fall through into them.

use std::collections::HashMap;

use seccompiler::{sock_filter, BpfProgram};

// Opcodes from <linux/bpf_common.h>, spelled out as class | op | source.
pub(crate) const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
pub(crate) const ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
pub(crate) const JA: u16 = 0x05; // BPF_JMP | BPF_JA
pub(crate) const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
pub(crate) const JGT: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
pub(crate) const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
pub(crate) const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Kernel limit (BPF_MAXINSNS) on a filter's length.
pub(crate) const MAX_INSNS: usize = 4096;

const MAX_JUMP: usize = 255;

/// Where a jump goes: an instruction already emitted, or "return this action",
/// which the assembler places (and shares) itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Tgt {
    At(usize),
    Ret(u32),
}

#[derive(Default)]
pub(crate) struct Asm {
    /// Instructions in reverse: index 0 is the program's last instruction, so
    /// an index stays valid as a label while more code is prepended.
    rev: Vec<sock_filter>,
    /// Newest `ret` per action value, for sharing.
    rets: HashMap<u32, usize>,
    /// Newest `ja` trampoline per far label.
    trampolines: HashMap<usize, usize>,
}

impl Asm {
    pub fn len(&self) -> usize {
        self.rev.len()
    }

    /// The most recently emitted instruction, i.e. the one that runs next
    /// after whatever is emitted now.
    pub fn here(&self) -> Tgt {
        Tgt::At(self.rev.len() - 1)
    }

    fn push(&mut self, code: u16, k: u32, jt: u8, jf: u8) -> usize {
        self.rev.push(sock_filter { code, jt, jf, k });
        self.rev.len() - 1
    }

    pub fn load(&mut self, offset: u32) -> Tgt {
        self.push(LD_W_ABS, offset, 0, 0);
        self.here()
    }

    pub fn and(&mut self, mask: u32) -> Tgt {
        self.push(ALU_AND_K, mask, 0, 0);
        self.here()
    }

    /// Emits `ret action` unconditionally. Only valid where nothing falls
    /// through into it (program end, or directly after a jump).
    pub fn ret(&mut self, action: u32) -> usize {
        let at = self.push(RET_K, action, 0, 0);
        self.rets.insert(action, at);
        at
    }

    /// Turns a target into an instruction index that a jump emitted after at
    /// most one more `resolve` can reach.
    fn resolve(&mut self, t: Tgt) -> usize {
        let p = self.rev.len();
        let reachable = |at: usize| p - at <= MAX_JUMP;
        match t {
            Tgt::At(at) if self.rev[at].code == RET_K => self.resolve(Tgt::Ret(self.rev[at].k)),
            Tgt::At(at) if reachable(at) => at,
            Tgt::At(at) => match self.trampolines.get(&at) {
                Some(&tr) if reachable(tr) => tr,
                _ => {
                    let tr = self.push(JA, (p - at - 1) as u32, 0, 0);
                    self.trampolines.insert(at, tr);
                    tr
                }
            },
            Tgt::Ret(action) => match self.rets.get(&action) {
                Some(&at) if reachable(at) => at,
                _ => self.ret(action),
            },
        }
    }

    /// Emits `if (A <op> k) goto t else goto f`.
    pub fn jump(&mut self, op: u16, k: u32, t: Tgt, f: Tgt) -> Tgt {
        let t = self.resolve(t);
        let f = self.resolve(f);
        let p = self.rev.len();
        let (jt, jf) = (p - t - 1, p - f - 1);
        assert!(
            jt <= MAX_JUMP && jf <= MAX_JUMP,
            "resolve() left a jump out of reach"
        );
        self.push(op, k, jt as u8, jf as u8);
        self.here()
    }

    pub fn finish(mut self) -> BpfProgram {
        self.rev.reverse();
        self.rev
    }
}
