//! Architectures a filter can cover, and syscall name lookup for each.
//!
//! Names come from the `syscalls` crate's per-arch tables. Those tables are
//! generated from kernel headers and differ from libseccomp's (whose names
//! OCI profiles use) in a few places, so each table gets a short list of
//! fixes: names libseccomp knows that the crate lacks, and entries the crate
//! has that the kernel never wired up on that arch.

use std::collections::HashMap;
use std::sync::OnceLock;

use oci_spec::runtime::Arch;

/// The x32 ABI marks its syscall numbers with this bit; x32 shares
/// AUDIT_ARCH_X86_64 with x86_64.
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const AUDIT_ARCH_64BIT: u32 = 0x8000_0000;
const AUDIT_ARCH_LE: u32 = 0x4000_0000;
const EM_386: u32 = 3;
const EM_MIPS: u32 = 8;
const EM_PPC64: u32 = 21;
const EM_S390: u32 = 22;
const EM_ARM: u32 = 40;
const EM_X86_64: u32 = 62;
const EM_AARCH64: u32 = 183;
const EM_RISCV: u32 = 243;
const EM_LOONGARCH: u32 = 258;

type Table = HashMap<&'static str, u32>;

pub(crate) struct ArchDef {
    /// The OCI / libseccomp name, e.g. `SCMP_ARCH_X86_64`.
    pub name: &'static str,
    /// The `seccomp_data.arch` value the kernel reports.
    pub audit: u32,
    /// libseccomp compares only the low 32 bits of arguments on 32-bit ABIs
    /// (x32 included); we do the same so profiles behave identically.
    pub args64: bool,
    pub little_endian: bool,
    /// x32: syscall numbers carry [`X32_SYSCALL_BIT`].
    pub x32: bool,
    table: fn() -> &'static Table,
}

impl ArchDef {
    pub fn lookup(&self, name: &str) -> Option<u32> {
        (self.table)().get(name).copied()
    }

    #[cfg(test)]
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        (self.table)().keys().copied()
    }
}

impl std::fmt::Debug for ArchDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

macro_rules! table {
    ($fn:ident, $module:ident, $extra:expr, $drop:expr) => {
        fn $fn() -> &'static Table {
            static T: OnceLock<Table> = OnceLock::new();
            T.get_or_init(|| {
                use syscalls::$module::Sysno;
                // `Sysno::iter()` stops one short of `Sysno::last()`.
                let all = Sysno::iter().chain(std::iter::once(Sysno::last()));
                build(all.map(|s| (s.name(), s.id() as u32)), $extra, $drop)
            })
        }
    };
}

fn build(
    from_crate: impl Iterator<Item = (&'static str, u32)>,
    extra: &[(&'static str, u32)],
    drop: &[&[&'static str]],
) -> Table {
    let mut t: Table = from_crate.collect();
    for name in drop.iter().flat_map(|d| d.iter()) {
        t.remove(name);
    }
    for &(name, nr) in extra {
        t.entry(name).or_insert(nr);
    }
    t
}

// Added after the `syscalls` 0.8 tables were generated (Linux 6.18/6.19).
const NEW: &[(&str, u32)] = &[("listns", 470), ("rseq_slice_yield", 471)];
const NEW_MIPS_O32: &[(&str, u32)] = &[("listns", 4470), ("rseq_slice_yield", 4471)];
const NEW_MIPS_N64: &[(&str, u32)] = &[
    ("listns", 5470),
    ("rseq_slice_yield", 5471),
    ("set_mempolicy_home_node", 5450),
];
// ARM's private syscalls (__ARM_NR_*), which docker's profile allows.
const ARM_EXTRA: &[(&str, u32)] = &[
    ("listns", 470),
    ("rseq_slice_yield", 471),
    ("breakpoint", 0xf0001),
    ("cacheflush", 0xf0002),
    ("usr26", 0xf0003),
    ("usr32", 0xf0004),
    ("set_tls", 0xf0005),
    ("get_tls", 0xf0006),
];
// The crate calls 79 `fstatat`; the kernel and libseccomp say `newfstatat`.
const GENERIC64_EXTRA: &[(&str, u32)] = &[
    ("listns", 470),
    ("rseq_slice_yield", 471),
    ("newfstatat", 79),
];
// 32-bit-only time64 syscalls the crate lists for 64-bit generic arches.
const TIME64: &[&str] = &[
    "clock_gettime64",
    "clock_settime64",
    "clock_adjtime64",
    "clock_getres_time64",
    "clock_nanosleep_time64",
    "timer_gettime64",
    "timer_settime64",
    "timerfd_gettime64",
    "timerfd_settime64",
    "utimensat_time64",
    "pselect6_time64",
    "ppoll_time64",
    "io_pgetevents_time64",
    "recvmmsg_time64",
    "mq_timedsend_time64",
    "mq_timedreceive_time64",
    "semtimedop_time64",
    "rt_sigtimedwait_time64",
    "futex_time64",
    "sched_rr_get_interval_time64",
];
const LOONGARCH_DROP: &[&str] = &["getrlimit", "setrlimit", "renameat", "memfd_secret"];

table!(x86_64_table, x86_64, NEW, &[]);
table!(x86_table, x86, NEW, &[]);
table!(arm_table, arm, ARM_EXTRA, &[]);
table!(aarch64_table, aarch64, GENERIC64_EXTRA, &[TIME64]);
table!(riscv64_table, riscv64, NEW, &[]);
table!(
    loongarch64_table,
    loongarch64,
    GENERIC64_EXTRA,
    &[TIME64, LOONGARCH_DROP]
);
table!(ppc64_table, powerpc64, NEW, &[]);
table!(s390x_table, s390x, NEW, &[]);
table!(mips_table, mips, NEW_MIPS_O32, &[]);
table!(mips64_table, mips64, NEW_MIPS_N64, &[]);

/// x32 uses the x86_64 numbers (plus the x32 bit), except for the syscalls
/// whose arguments carry pointers to layout-dependent structs: those have
/// their own numbers from 512, and their x86_64 numbers are 64-bit only.
fn x32_table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    const OWN: &[(&str, u32)] = &[
        ("rt_sigaction", 512),
        ("rt_sigreturn", 513),
        ("ioctl", 514),
        ("readv", 515),
        ("writev", 516),
        ("recvfrom", 517),
        ("sendmsg", 518),
        ("recvmsg", 519),
        ("execve", 520),
        ("ptrace", 521),
        ("rt_sigpending", 522),
        ("rt_sigtimedwait", 523),
        ("rt_sigqueueinfo", 524),
        ("sigaltstack", 525),
        ("timer_create", 526),
        ("mq_notify", 527),
        ("kexec_load", 528),
        ("waitid", 529),
        ("set_robust_list", 530),
        ("get_robust_list", 531),
        ("vmsplice", 532),
        ("move_pages", 533),
        ("preadv", 534),
        ("pwritev", 535),
        ("rt_tgsigqueueinfo", 536),
        ("recvmmsg", 537),
        ("sendmmsg", 538),
        ("process_vm_readv", 539),
        ("process_vm_writev", 540),
        ("setsockopt", 541),
        ("getsockopt", 542),
        ("io_setup", 543),
        ("io_submit", 544),
        ("execveat", 545),
        ("preadv2", 546),
        ("pwritev2", 547),
    ];
    const NOT_ON_X32: &[&str] = &[
        "create_module",
        "epoll_ctl_old",
        "epoll_wait_old",
        "get_kernel_syms",
        "get_thread_area",
        "nfsservctl",
        "query_module",
        "set_thread_area",
        "_sysctl",
        "uselib",
        "vserver",
    ];
    T.get_or_init(|| {
        let mut t = x86_64_table().clone();
        for name in NOT_ON_X32 {
            t.remove(name);
        }
        for &(name, nr) in OWN {
            t.insert(name, nr);
        }
        for nr in t.values_mut() {
            *nr |= X32_SYSCALL_BIT;
        }
        t
    })
}

const fn audit(em: u32, bits64: bool, le: bool) -> u32 {
    em | if bits64 { AUDIT_ARCH_64BIT } else { 0 } | if le { AUDIT_ARCH_LE } else { 0 }
}

macro_rules! arch {
    ($name:literal, $em:expr, $bits64:expr, $le:expr, $table:ident) => {
        arch!($name, audit($em, $bits64, $le), $bits64, $le, false, $table)
    };
    ($name:literal, $audit:expr, $args64:expr, $le:expr, $x32:expr, $table:ident) => {
        ArchDef {
            name: $name,
            audit: $audit,
            args64: $args64,
            little_endian: $le,
            x32: $x32,
            table: $table,
        }
    };
}

pub(crate) static X86: ArchDef = arch!("SCMP_ARCH_X86", EM_386, false, true, x86_table);
pub(crate) static X86_64: ArchDef = arch!("SCMP_ARCH_X86_64", EM_X86_64, true, true, x86_64_table);
pub(crate) static X32: ArchDef = arch!(
    "SCMP_ARCH_X32",
    audit(EM_X86_64, true, true),
    false,
    true,
    true,
    x32_table
);
pub(crate) static ARM: ArchDef = arch!("SCMP_ARCH_ARM", EM_ARM, false, true, arm_table);
pub(crate) static AARCH64: ArchDef =
    arch!("SCMP_ARCH_AARCH64", EM_AARCH64, true, true, aarch64_table);
pub(crate) static MIPS: ArchDef = arch!("SCMP_ARCH_MIPS", EM_MIPS, false, false, mips_table);
pub(crate) static MIPSEL: ArchDef = arch!("SCMP_ARCH_MIPSEL", EM_MIPS, false, true, mips_table);
pub(crate) static MIPS64: ArchDef = arch!("SCMP_ARCH_MIPS64", EM_MIPS, true, false, mips64_table);
pub(crate) static MIPSEL64: ArchDef =
    arch!("SCMP_ARCH_MIPSEL64", EM_MIPS, true, true, mips64_table);
pub(crate) static PPC64: ArchDef = arch!("SCMP_ARCH_PPC64", EM_PPC64, true, false, ppc64_table);
pub(crate) static PPC64LE: ArchDef = arch!("SCMP_ARCH_PPC64LE", EM_PPC64, true, true, ppc64_table);
pub(crate) static S390X: ArchDef = arch!("SCMP_ARCH_S390X", EM_S390, true, false, s390x_table);
pub(crate) static RISCV64: ArchDef =
    arch!("SCMP_ARCH_RISCV64", EM_RISCV, true, true, riscv64_table);
pub(crate) static LOONGARCH64: ArchDef = arch!(
    "SCMP_ARCH_LOONGARCH64",
    EM_LOONGARCH,
    true,
    true,
    loongarch64_table
);

#[cfg(test)]
pub(crate) static ALL: &[&ArchDef] = &[
    &X86,
    &X86_64,
    &X32,
    &ARM,
    &AARCH64,
    &MIPS,
    &MIPSEL,
    &MIPS64,
    &MIPSEL64,
    &PPC64,
    &PPC64LE,
    &S390X,
    &RISCV64,
    &LOONGARCH64,
];

/// The architecture this binary runs on, if we can filter for it.
pub(crate) fn native() -> Option<&'static ArchDef> {
    let le = cfg!(target_endian = "little");
    if cfg!(target_arch = "x86_64") {
        // An x32 build of the runtime is not a target we support.
        Some(&X86_64)
    } else if cfg!(target_arch = "x86") {
        Some(&X86)
    } else if cfg!(target_arch = "aarch64") {
        Some(&AARCH64)
    } else if cfg!(target_arch = "arm") {
        Some(&ARM)
    } else if cfg!(target_arch = "riscv64") {
        Some(&RISCV64)
    } else if cfg!(target_arch = "loongarch64") {
        Some(&LOONGARCH64)
    } else if cfg!(target_arch = "s390x") {
        Some(&S390X)
    } else if cfg!(target_arch = "powerpc64") {
        Some(if le { &PPC64LE } else { &PPC64 })
    } else if cfg!(target_arch = "mips64") {
        Some(if le { &MIPSEL64 } else { &MIPS64 })
    } else if cfg!(target_arch = "mips") {
        Some(if le { &MIPSEL } else { &MIPS })
    } else {
        None
    }
}

/// Maps an OCI architecture to ours; `None` for ones we cannot filter for.
pub(crate) fn from_oci(a: Arch) -> Option<&'static ArchDef> {
    Some(match a {
        Arch::ScmpArchNative => return native(),
        Arch::ScmpArchX86 => &X86,
        Arch::ScmpArchX86_64 => &X86_64,
        Arch::ScmpArchX32 => &X32,
        Arch::ScmpArchArm => &ARM,
        Arch::ScmpArchAarch64 => &AARCH64,
        Arch::ScmpArchMips => &MIPS,
        Arch::ScmpArchMipsel => &MIPSEL,
        Arch::ScmpArchMips64 => &MIPS64,
        Arch::ScmpArchMipsel64 => &MIPSEL64,
        Arch::ScmpArchPpc64 => &PPC64,
        Arch::ScmpArchPpc64le => &PPC64LE,
        Arch::ScmpArchS390x => &S390X,
        Arch::ScmpArchRiscv64 => &RISCV64,
        Arch::ScmpArchLoongarch64 => &LOONGARCH64,
        // No syscall table in the `syscalls` crate (n32, ppc32, s390 31-bit),
        // or not an arch Linux containers run on.
        Arch::ScmpArchMips64n32
        | Arch::ScmpArchMipsel64n32
        | Arch::ScmpArchPpc
        | Arch::ScmpArchS390
        | Arch::ScmpArchParisc
        | Arch::ScmpArchParisc64
        | Arch::ScmpArchM68k
        | Arch::ScmpArchSh
        | Arch::ScmpArchSheb => return None,
    })
}
