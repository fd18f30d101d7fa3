//! Code generation: validated rules in, BPF program out.
//!
//! Layout: load `arch`, one `jeq` per architecture, then one section per
//! architecture. A section loads `nr` and walks a balanced `jge` tree over
//! number ranges rather than testing syscalls one by one: runs of
//! consecutive numbers with the same action collapse into one range, and a
//! docker-style profile decides any x86_64 syscall within 15 instructions.
//! Rules with argument conditions sit after the tree.

use std::collections::HashMap;

use anyhow::{bail, Result};
use seccompiler::BpfProgram;

use super::arch::{ArchDef, S390X, X32_SYSCALL_BIT};
use super::asm::{Asm, Tgt, JEQ, JGE, JGT, MAX_INSNS};

// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    MaskedEq,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Cond {
    pub index: u8,
    pub op: Op,
    pub value: u64,
    pub value_two: u64,
}

#[derive(Debug)]
pub(crate) struct Rule<'a> {
    pub names: &'a [String],
    pub action: u32,
    /// Same action as the default. runc drops such rules (libseccomp would
    /// reject them), but their names still count for the ENOSYS bound.
    pub redundant: bool,
    pub conds: Vec<Cond>,
    /// Conditions are alternatives rather than all required: runc's reading
    /// of a rule that tests one argument twice.
    pub any: bool,
}

pub(crate) struct Options {
    pub default: u32,
    pub bad_arch: u32,
    /// Answer ENOSYS for numbers above the highest one the profile names.
    pub enosys: bool,
    pub enosys_ret: u32,
}

/// One syscall number's rules on one arch.
struct Entry {
    nr: u32,
    /// The first unconditional rule's action; it overrides conditional rules,
    /// whatever their order (libseccomp).
    uncond: Option<u32>,
    rules: Vec<usize>,
}

struct Sub {
    def: &'static ArchDef,
    entries: Vec<Entry>,
    /// Highest number named anywhere in the profile, redundant rules included.
    max: Option<u32>,
}

fn collect(def: &'static ArchDef, rules: &[Rule]) -> Sub {
    let mut at: HashMap<u32, usize> = HashMap::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut max = None;
    for (ri, r) in rules.iter().enumerate() {
        for name in r.names {
            // Unknown on this arch: skipped, as runc skips names libseccomp
            // cannot resolve.
            let Some(nr) = def.lookup(name) else { continue };
            max = max.max(Some(nr));
            if r.redundant {
                continue;
            }
            let i = *at.entry(nr).or_insert_with(|| {
                entries.push(Entry {
                    nr,
                    uncond: None,
                    rules: Vec::new(),
                });
                entries.len() - 1
            });
            let e = &mut entries[i];
            if r.conds.is_empty() {
                e.uncond.get_or_insert(r.action);
            } else if e.rules.last() != Some(&ri) {
                e.rules.push(ri);
            }
        }
    }
    entries.sort_unstable_by_key(|e| e.nr);
    Sub { def, entries, max }
}

pub(crate) fn generate(
    arches: &[&'static ArchDef],
    rules: &[Rule],
    o: &Options,
) -> Result<BpfProgram> {
    let mut asm = Asm::default();
    // The kernel wants a return as the last instruction.
    asm.ret(o.default);

    // x86_64 and x32 share one `seccomp_data.arch` value, hence one section.
    let mut groups: Vec<Vec<Sub>> = Vec::new();
    for &def in arches {
        let sub = collect(def, rules);
        match groups.iter_mut().find(|g| g[0].def.audit == def.audit) {
            Some(g) => g.push(sub),
            None => groups.push(vec![sub]),
        }
    }

    // Back to front: the first arch (native) ends up checked first.
    let sections: Vec<(u32, Tgt)> = groups
        .iter()
        .rev()
        .map(|g| (g[0].def.audit, section(&mut asm, g, rules, o)))
        .collect();
    let mut next = Tgt::Ret(o.bad_arch);
    for (audit, entry) in sections {
        next = asm.jump(JEQ, audit, entry, next);
    }
    asm.load(OFF_ARCH);

    if asm.len() > MAX_INSNS {
        bail!(
            "linux.seccomp: the profile needs {} BPF instructions, over the kernel's limit of {MAX_INSNS}",
            asm.len()
        );
    }
    Ok(asm.finish())
}

/// Number ranges with their outcome: range i is `[starts[i], starts[i+1])`.
#[derive(Default)]
struct Ranges(Vec<(u32, Tgt)>);

impl Ranges {
    fn push(&mut self, start: u32, t: Tgt) {
        if self.0.last().map(|l| l.1) != Some(t) {
            self.0.push((start, t));
        }
    }
}

fn section(asm: &mut Asm, subs: &[Sub], rules: &[Rule], o: &Options) -> Tgt {
    // Conditional rules first, so they land after the tree.
    let outcomes: Vec<Vec<(u32, Tgt)>> = subs
        .iter()
        .map(|s| {
            let mut v: Vec<(u32, Tgt)> = s
                .entries
                .iter()
                .map(|e| (e.nr, outcome(asm, s.def, e, rules, o.default)))
                .collect();
            // s390x turns numbers it does not know into 0 before seccomp
            // sees them, so 0 stands for "unknown syscall" there (as in runc).
            let zero_named = v.first().map(|e| e.0) == Some(0);
            if o.enosys && s.max.is_some() && std::ptr::eq(s.def, &S390X) && !zero_named {
                v.insert(0, (0, Tgt::Ret(o.enosys_ret)));
            }
            v
        })
        .collect();

    let mut r = Ranges::default();
    let default = Tgt::Ret(o.default);
    if subs[0].def.audit == super::arch::X86_64.audit {
        let x64 = subs.iter().position(|s| !s.def.x32);
        let x32 = subs.iter().position(|s| s.def.x32);
        match x64 {
            Some(i) => fill(&mut r, 0, X32_SYSCALL_BIT - 1, &outcomes[i], &subs[i], o),
            None => r.push(0, Tgt::Ret(o.bad_arch)),
        }
        match x32 {
            Some(i) => fill(&mut r, X32_SYSCALL_BIT, u32::MAX, &outcomes[i], &subs[i], o),
            None => {
                r.push(X32_SYSCALL_BIT, Tgt::Ret(o.bad_arch));
                // -1 is how a tracer skips a syscall; libseccomp lets it
                // through to the default action rather than killing.
                if x64.is_some() {
                    r.push(u32::MAX, default);
                }
            }
        }
    } else {
        fill(&mut r, 0, u32::MAX, &outcomes[0], &subs[0], o);
    }

    let root = tree(asm, &r.0);
    match root {
        Tgt::Ret(_) => root,
        Tgt::At(at) => {
            debug_assert_eq!(Tgt::At(at), asm.here());
            asm.load(OFF_NR)
        }
    }
}

/// Adds `[lo, hi]`'s ranges: named numbers get their outcome, the rest the
/// default action, or ENOSYS above the highest named number.
fn fill(r: &mut Ranges, lo: u32, hi: u32, named: &[(u32, Tgt)], sub: &Sub, o: &Options) {
    let default = Tgt::Ret(o.default);
    let limit = if o.enosys { sub.max } else { None };
    let gap = |r: &mut Ranges, a: u64, b: u64| match limit {
        Some(m) if u64::from(m) < b => {
            if a <= u64::from(m) {
                r.push(a as u32, default);
            }
            r.push(a.max(u64::from(m) + 1) as u32, Tgt::Ret(o.enosys_ret));
        }
        _ => r.push(a as u32, default),
    };
    let mut cur = u64::from(lo);
    for &(nr, t) in named {
        let nr64 = u64::from(nr);
        if nr64 > cur {
            gap(r, cur, nr64 - 1);
        }
        r.push(nr, t);
        cur = nr64 + 1;
    }
    if cur <= u64::from(hi) {
        gap(r, cur, u64::from(hi));
    }
}

/// Balanced `jge` tree over the ranges; expects `nr` in A.
fn tree(asm: &mut Asm, r: &[(u32, Tgt)]) -> Tgt {
    if r.len() == 1 {
        return r[0].1;
    }
    let mid = r.len() / 2;
    // Right half first: it ends up after the left half.
    let hi = tree(asm, &r[mid..]);
    let lo = tree(asm, &r[..mid]);
    asm.jump(JGE, r[mid].0, hi, lo)
}

/// Code deciding one syscall's action from its rules; yields its entry.
fn outcome(asm: &mut Asm, def: &ArchDef, e: &Entry, rules: &[Rule], default: u32) -> Tgt {
    if let Some(action) = e.uncond {
        return Tgt::Ret(action);
    }
    // Rules in profile order, the first that matches decides: built from the
    // last one back, each falling through to the one after it.
    let mut next = Tgt::Ret(default);
    for r in e.rules.iter().rev().map(|&i| &rules[i]) {
        let act = Tgt::Ret(r.action);
        next = if r.any {
            r.conds
                .iter()
                .rev()
                .fold(next, |alt, c| cond(asm, def, c, act, alt))
        } else {
            r.conds
                .iter()
                .rev()
                .fold(act, |pass, c| cond(asm, def, c, pass, next))
        };
    }
    next
}

/// Tests one condition: on to `pass` if it holds, `fail` if not.
fn cond(asm: &mut Asm, def: &ArchDef, c: &Cond, pass: Tgt, fail: Tgt) -> Tgt {
    let base = OFF_ARGS + 8 * u32::from(c.index);
    let (lo_off, hi_off) = if def.little_endian {
        (base, base + 4)
    } else {
        (base + 4, base)
    };
    let (vlo, vhi) = (c.value as u32, (c.value >> 32) as u32);
    let (dlo, dhi) = (c.value_two as u32, (c.value_two >> 32) as u32);

    if !def.args64 {
        return match c.op {
            Op::Eq => word(asm, lo_off, JEQ, vlo, pass, fail),
            Op::Ne => word(asm, lo_off, JEQ, vlo, fail, pass),
            Op::Gt => word(asm, lo_off, JGT, vlo, pass, fail),
            Op::Ge => word(asm, lo_off, JGE, vlo, pass, fail),
            Op::Lt => word(asm, lo_off, JGE, vlo, fail, pass),
            Op::Le => word(asm, lo_off, JGT, vlo, fail, pass),
            Op::MaskedEq => masked(asm, lo_off, vlo, dlo, pass, fail),
        };
    }
    match c.op {
        Op::Eq => {
            let lo = word(asm, lo_off, JEQ, vlo, pass, fail);
            word(asm, hi_off, JEQ, vhi, lo, fail)
        }
        Op::Ne => {
            let lo = word(asm, lo_off, JEQ, vlo, fail, pass);
            word(asm, hi_off, JEQ, vhi, lo, pass)
        }
        // Unsigned 64-bit order: the high words decide unless equal.
        Op::Gt | Op::Ge => {
            let op = if c.op == Op::Gt { JGT } else { JGE };
            let lo = word(asm, lo_off, op, vlo, pass, fail);
            let eq = asm.jump(JEQ, vhi, lo, fail);
            asm.jump(JGT, vhi, pass, eq);
            asm.load(hi_off)
        }
        Op::Lt | Op::Le => {
            let op = if c.op == Op::Lt { JGE } else { JGT };
            let lo = word(asm, lo_off, op, vlo, fail, pass);
            let eq = asm.jump(JEQ, vhi, lo, pass);
            asm.jump(JGT, vhi, fail, eq);
            asm.load(hi_off)
        }
        Op::MaskedEq => {
            let lo = masked(asm, lo_off, vlo, dlo, pass, fail);
            masked(asm, hi_off, vhi, dhi, lo, fail)
        }
    }
}

/// `A = word at off; if (A <op> k) t else f`
fn word(asm: &mut Asm, off: u32, op: u16, k: u32, t: Tgt, f: Tgt) -> Tgt {
    asm.jump(op, k, t, f);
    asm.load(off)
}

/// `(word at off & mask) == datum`; a zero mask makes it a constant.
fn masked(asm: &mut Asm, off: u32, mask: u32, datum: u32, t: Tgt, f: Tgt) -> Tgt {
    if mask == 0 {
        return if datum == 0 { t } else { f };
    }
    asm.jump(JEQ, datum, t, f);
    if mask != u32::MAX {
        asm.and(mask);
    }
    asm.load(off)
}
