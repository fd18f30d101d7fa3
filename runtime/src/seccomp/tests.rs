//! Three layers: a cBPF interpreter runs compiled programs against a plain
//! reference reading of the semantics (random profiles, every arch); error
//! and table checks; and real-kernel tests in forked children.

use oci_spec::runtime::LinuxSeccomp;
use seccompiler::sock_filter;
use serde_json::{json, Value};

use super::arch::{self, ArchDef, X32_SYSCALL_BIT};
use super::asm::{ALU_AND_K, JA, JEQ, JGE, JGT, LD_W_ABS, MAX_INSNS, RET_K};
use super::*;

const ENOSYS_RET: u32 = RET_ERRNO | libc::ENOSYS as u32;

/// Random-test volume: debug builds interpret BPF and JSON slowly.
const ROUNDS: usize = if cfg!(debug_assertions) { 1 } else { 4 };

fn profile(v: Value) -> LinuxSeccomp {
    serde_json::from_value(v).expect("profile JSON")
}

fn compile_json(v: Value) -> Result<Program> {
    compile(&profile(v))
}

fn err(v: Value) -> String {
    format!("{:#}", compile_json(v).expect_err("compile should fail"))
}

// ---------------------------------------------------------------------------
// Interpreter

#[derive(Clone, Copy, Debug)]
struct Data {
    arch: u32,
    nr: u32,
    args: [u64; 6],
}

/// Runs the program like the kernel does, over a `seccomp_data` laid out in
/// the given byte order.
fn eval(prog: &[sock_filter], d: &Data, little_endian: bool) -> u32 {
    eval_steps(prog, d, little_endian).0
}

/// [`eval`], also counting the instructions executed.
fn eval_steps(prog: &[sock_filter], d: &Data, little_endian: bool) -> (u32, usize) {
    let mut buf = [0u8; 64];
    let put = |buf: &mut [u8; 64], off: usize, b: &[u8]| buf[off..off + b.len()].copy_from_slice(b);
    if little_endian {
        put(&mut buf, 0, &d.nr.to_le_bytes());
        put(&mut buf, 4, &d.arch.to_le_bytes());
        for (i, a) in d.args.iter().enumerate() {
            put(&mut buf, 16 + 8 * i, &a.to_le_bytes());
        }
    } else {
        put(&mut buf, 0, &d.nr.to_be_bytes());
        put(&mut buf, 4, &d.arch.to_be_bytes());
        for (i, a) in d.args.iter().enumerate() {
            put(&mut buf, 16 + 8 * i, &a.to_be_bytes());
        }
    }
    let word = |off: u32| {
        assert!(off & 3 == 0 && off < 64, "bad load offset {off}");
        let b: [u8; 4] = buf[off as usize..off as usize + 4].try_into().unwrap();
        if little_endian {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert!(prog.len() <= MAX_INSNS);
    assert_eq!(prog.last().expect("empty program").code, RET_K);
    let (mut a, mut pc) = (0u32, 0usize);
    for steps in 1.. {
        let i = &prog[pc];
        pc += 1;
        let cond = |hit: bool| usize::from(if hit { i.jt } else { i.jf });
        match i.code {
            LD_W_ABS => a = word(i.k),
            ALU_AND_K => a &= i.k,
            JA => pc += i.k as usize,
            JEQ => pc += cond(a == i.k),
            JGT => pc += cond(a > i.k),
            JGE => pc += cond(a >= i.k),
            RET_K => return (i.k, steps),
            c => panic!("unexpected opcode {c:#x} at {}", pc - 1),
        }
    }
    unreachable!()
}

// ---------------------------------------------------------------------------
// Reference semantics, written for clarity rather than speed.

fn ret_of(action: &str, errno: Option<u64>) -> u32 {
    let e = errno.unwrap_or(libc::EPERM as u64) as u32;
    match action {
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => RET_TRAP,
        "SCMP_ACT_ERRNO" => RET_ERRNO | e,
        "SCMP_ACT_TRACE" => RET_TRACE | e,
        "SCMP_ACT_LOG" => RET_LOG,
        "SCMP_ACT_ALLOW" => RET_ALLOW,
        "SCMP_ACT_NOTIFY" => RET_USER_NOTIF,
        a => panic!("{a}"),
    }
}

fn covered(p: &Value) -> Vec<&'static ArchDef> {
    let mut v = vec![arch::native().unwrap()];
    for a in p["architectures"].as_array().into_iter().flatten() {
        let def = *arch::ALL
            .iter()
            .find(|d| d.name == a.as_str().unwrap())
            .unwrap();
        if !v.iter().any(|d| std::ptr::eq(*d, def)) {
            v.push(def);
        }
    }
    v
}

fn cond_holds(def: &ArchDef, c: &Value, args: &[u64; 6]) -> bool {
    let trunc = |x: u64| if def.args64 { x } else { x & 0xffff_ffff };
    let x = trunc(args[c["index"].as_u64().unwrap() as usize]);
    let v = trunc(c["value"].as_u64().unwrap());
    let v2 = trunc(c["valueTwo"].as_u64().unwrap_or(0));
    match c["op"].as_str().unwrap() {
        "SCMP_CMP_NE" => x != v,
        "SCMP_CMP_LT" => x < v,
        "SCMP_CMP_LE" => x <= v,
        "SCMP_CMP_EQ" => x == v,
        "SCMP_CMP_GE" => x >= v,
        "SCMP_CMP_GT" => x > v,
        "SCMP_CMP_MASKED_EQ" => x & v == v2,
        o => panic!("{o}"),
    }
}

fn reference(p: &Value, d: &Data) -> u32 {
    let default = ret_of(
        p["defaultAction"].as_str().unwrap(),
        p["defaultErrnoRet"].as_u64(),
    );
    let arches = covered(p);
    let here: Vec<_> = arches.iter().filter(|a| a.audit == d.arch).collect();
    let def: &ArchDef = match here.as_slice() {
        [] => return RET_KILL_PROCESS,
        _ if d.arch == arch::X86_64.audit => {
            let x32 = here.iter().find(|a| a.x32);
            let x64 = here.iter().find(|a| !a.x32);
            match (d.nr >= X32_SYSCALL_BIT, x32, x64) {
                (true, Some(a), _) | (false, _, Some(a)) => a,
                (true, None, Some(_)) if d.nr == u32::MAX => return default,
                _ => return RET_KILL_PROCESS,
            }
        }
        [a, ..] => a,
    };
    let (mut named, mut max) = (false, None::<u32>);
    let (mut uncond, mut first_cond) = (None, None);
    for r in p["syscalls"].as_array().into_iter().flatten() {
        let action = ret_of(r["action"].as_str().unwrap(), r["errnoRet"].as_u64());
        let conds = r["args"].as_array().cloned().unwrap_or_default();
        for name in r["names"].as_array().unwrap() {
            let Some(nr) = def.lookup(name.as_str().unwrap()) else {
                continue;
            };
            max = max.max(Some(nr));
            if nr != d.nr {
                continue;
            }
            named = true;
            if action == default {
                continue;
            }
            if conds.is_empty() {
                uncond.get_or_insert(action);
                continue;
            }
            let idx: Vec<u64> = conds.iter().map(|c| c["index"].as_u64().unwrap()).collect();
            let same_arg = (0..idx.len()).any(|i| idx[i + 1..].contains(&idx[i]));
            let hit = if same_arg {
                conds.iter().any(|c| cond_holds(def, c, &d.args))
            } else {
                conds.iter().all(|c| cond_holds(def, c, &d.args))
            };
            if hit && first_cond.is_none() {
                first_cond = Some(action);
            }
        }
    }
    if let Some(a) = uncond.or(first_cond) {
        return a;
    }
    let action = p["defaultAction"].as_str().unwrap();
    let enosys = !["SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"].contains(&action)
        && default != ENOSYS_RET;
    if !named && enosys {
        if let Some(m) = max {
            if d.nr > m || (std::ptr::eq(def, &arch::S390X) && d.nr == 0) {
                return ENOSYS_RET;
            }
        }
    }
    default
}

/// Checks a compiled profile against the reference on one input.
fn check(p: &Value, prog: &Program, d: &Data) {
    let le = arch::ALL
        .iter()
        .find(|a| a.audit == d.arch)
        .map_or(cfg!(target_endian = "little"), |a| a.little_endian);
    let got = eval(&prog.filter, d, le);
    let want = reference(p, d);
    assert_eq!(
        got, want,
        "got {got:#x}, want {want:#x} for {d:x?}\nprofile: {p}"
    );
}

// ---------------------------------------------------------------------------
// Random profiles

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const EDGES: &[u64] = &[
    0,
    1,
    5,
    7,
    40,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x1_0000_0005,
    0x1_ffff_ffff,
    0xffff_ffff_0000_0000,
    0x8000_0000_0000_0000,
    u64::MAX,
];

const ACTIONS: &[&str] = &[
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
];

const OPS: &[&str] = &[
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

fn value(rng: &mut Rng) -> u64 {
    match rng.below(4) {
        0 => rng.next(),
        1 => rng.next() & 0xffff_ffff,
        _ => *rng.pick(EDGES),
    }
}

fn action(rng: &mut Rng) -> Value {
    let a = *rng.pick(ACTIONS);
    let mut v = json!({ "action": a });
    if (a == "SCMP_ACT_ERRNO" || a == "SCMP_ACT_TRACE") && rng.chance(60) {
        v["errnoRet"] = json!(rng.below(4) + 1);
    }
    v
}

fn random_profile(rng: &mut Rng, arch_sets: &[&[&str]]) -> Value {
    let arches: Vec<&str> = rng.pick(arch_sets).to_vec();
    let defs: Vec<&ArchDef> = arch::ALL
        .iter()
        .copied()
        .filter(|d| arches.contains(&d.name))
        .collect();
    // A small pool so that rules collide on syscalls.
    let mut pool: Vec<&str> = vec!["no_such_syscall"];
    for _ in 0..12 {
        let def = if defs.is_empty() || rng.chance(30) {
            arch::native().unwrap()
        } else {
            *rng.pick(&defs)
        };
        let names = sorted_names(def);
        pool.push(names[rng.below(names.len())]);
    }
    let mut p = action(rng);
    p["defaultAction"] = p["action"].take();
    if let Some(e) = p.get_mut("errnoRet").map(Value::take) {
        p["defaultErrnoRet"] = e;
    }
    p.as_object_mut().unwrap().remove("action");
    p.as_object_mut().unwrap().remove("errnoRet");
    p["architectures"] = json!(arches);
    let mut rules = Vec::new();
    for _ in 0..rng.below(30) {
        let mut r = action(rng);
        let names: Vec<&str> = (0..rng.below(3) + 1).map(|_| *rng.pick(&pool)).collect();
        r["names"] = json!(names);
        if rng.chance(60) {
            let args: Vec<Value> = (0..rng.below(3) + 1)
                .map(|_| {
                    let mut c = json!({
                        "index": rng.below(3),
                        "value": value(rng),
                        "op": *rng.pick(OPS),
                    });
                    if rng.chance(50) {
                        c["valueTwo"] = json!(value(rng));
                    }
                    c
                })
                .collect();
            r["args"] = json!(args);
        }
        rules.push(r);
    }
    p["syscalls"] = json!(rules);
    p
}

fn sorted_names(def: &ArchDef) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = def.names().collect();
    v.sort_unstable();
    v
}

/// Draws inputs that probe a profile's edges: its own syscalls and argument
/// values, their neighbours, and numbers around the ENOSYS bound.
struct Prober {
    arches: Vec<(&'static ArchDef, Vec<u32>)>,
    vals: Vec<u64>,
}

impl Prober {
    fn new(p: &Value) -> Self {
        let rules = p["syscalls"].as_array().cloned().unwrap_or_default();
        let names: Vec<&str> = rules
            .iter()
            .flat_map(|r| r["names"].as_array().unwrap())
            .map(|n| n.as_str().unwrap())
            .collect();
        let arches = covered(p)
            .into_iter()
            .map(|def| (def, names.iter().filter_map(|n| def.lookup(n)).collect()))
            .collect();
        let vals = rules
            .iter()
            .flat_map(|r| r["args"].as_array().cloned().unwrap_or_default())
            .flat_map(|c| {
                [
                    c["value"].as_u64().unwrap(),
                    c["valueTwo"].as_u64().unwrap_or(0),
                ]
            })
            .collect();
        Prober { arches, vals }
    }

    fn draw(&self, rng: &mut Rng) -> Data {
        let (def, known) = rng.pick(&self.arches);
        let base = if def.x32 { X32_SYSCALL_BIT } else { 0 };
        let nr = match rng.below(8) {
            0..=3 if !known.is_empty() => *rng.pick(known),
            4 if !known.is_empty() => rng.pick(known).wrapping_add(1),
            5 => base + rng.below(600) as u32,
            6 => *rng.pick(&[
                0,
                u32::MAX,
                X32_SYSCALL_BIT,
                X32_SYSCALL_BIT - 1,
                4000,
                5000,
                0xf0002,
            ]),
            _ => rng.next() as u32,
        };
        let arch = if rng.chance(5) {
            *rng.pick(&[
                arch::X86.audit,
                arch::ARM.audit,
                arch::S390X.audit,
                0xdead_beef,
            ])
        } else {
            def.audit
        };
        let vals = &self.vals;
        let mut args = [0; 6];
        for a in args.iter_mut() {
            *a = match rng.below(5) {
                0 | 1 if !vals.is_empty() => *rng.pick(vals),
                2 if !vals.is_empty() => rng
                    .pick(vals)
                    .wrapping_add(rng.below(3) as u64)
                    .wrapping_sub(1),
                3 => rng.next(),
                _ => *rng.pick(EDGES),
            };
        }
        Data { arch, nr, args }
    }
}

#[test]
fn random_profiles_match_reference() {
    let arch_sets: &[&[&str]] = &[
        &[],
        &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        &["SCMP_ARCH_X32"],
        &["SCMP_ARCH_X86"],
        &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        &["SCMP_ARCH_S390X"],
        &["SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE"],
        &[
            "SCMP_ARCH_MIPS",
            "SCMP_ARCH_MIPSEL",
            "SCMP_ARCH_MIPS64",
            "SCMP_ARCH_MIPSEL64",
        ],
        &["SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64"],
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..400 * ROUNDS {
        let p = random_profile(&mut rng, arch_sets);
        let prog = compile_json(p.clone()).unwrap_or_else(|e| panic!("{e:#}\n{p}"));
        let prober = Prober::new(&p);
        for _ in 0..150 {
            check(&p, &prog, &prober.draw(&mut rng));
        }
    }
}

/// Enough conditional code that most jumps need trampolines.
#[test]
fn long_jumps_are_correct() {
    let names = sorted_names(&arch::X86_64);
    let rules: Vec<Value> = names
        .iter()
        .take(150)
        .enumerate()
        .map(|(i, n)| {
            json!({
                "names": [n],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": i % 7 + 2,
                "args": [
                    { "index": i % 6, "value": 0x1_0000_0000u64 + i as u64, "op": "SCMP_CMP_GT" },
                    { "index": (i + 1) % 6, "value": i, "op": "SCMP_CMP_NE" },
                ],
            })
        })
        .collect();
    let p = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": rules,
    });
    let prog = compile_json(p.clone()).unwrap();
    assert!(prog.filter.len() > 1500, "{}", prog.filter.len());
    assert!(prog.filter.iter().any(|i| i.code == JA), "no trampolines");
    let mut rng = Rng(7);
    let prober = Prober::new(&p);
    for _ in 0..5_000 * ROUNDS {
        check(&p, &prog, &prober.draw(&mut rng));
    }
}

#[test]
fn too_many_instructions_is_an_error() {
    let names = sorted_names(&arch::X86_64);
    let rules: Vec<Value> = names
        .iter()
        .map(|n| {
            json!({
                "names": [n], "action": "SCMP_ACT_ERRNO",
                "args": [
                    { "index": 0, "value": 1, "op": "SCMP_CMP_GT" },
                    { "index": 1, "value": 2, "op": "SCMP_CMP_LT" },
                    { "index": 2, "value": 3, "op": "SCMP_CMP_LE" },
                ],
            })
        })
        .collect();
    let e = err(json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules }));
    assert!(e.contains("over the kernel's limit of 4096"), "{e}");
}

// ---------------------------------------------------------------------------
// A docker-default-shaped profile: ~370 names, the same conditional rules.

const DOCKER_LIKE_ALLOW: &str = "accept accept4 access adjtimex alarm bind brk cachestat capget capset \
chdir chmod chown chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime \
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat \
dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait \
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 \
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl \
fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 \
fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv \
futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid \
getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority \
getrandom getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid \
getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr getxattrat \
inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents \
io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill landlock_add_rule \
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listxattr \
listxattrat llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack \
membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap \
mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend \
mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall munmap \
name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open \
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 \
preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read \
readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages \
removexattr removexattrat rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction \
rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait \
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam \
sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval \
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam sched_setscheduler \
sched_yield seccomp select semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64 \
sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 \
setitimer setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid \
setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 \
setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask \
sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync \
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun \
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime \
timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask \
uname unlink unlinkat uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid \
waitpid write writev arch_prctl modify_ldt arm_fadvise64_64 arm_sync_file_range sync_file_range2 \
breakpoint cacheflush set_tls riscv_flush_icache";

const CLONE_NS_FLAGS: u64 = 0x7e02_0000; // CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

fn docker_like() -> Value {
    let allow: Vec<&str> = DOCKER_LIKE_ALLOW.split_whitespace().collect();
    let mut rules = vec![json!({ "names": allow, "action": "SCMP_ACT_ALLOW" })];
    for persona in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
        rules.push(json!({
            "names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": persona, "op": "SCMP_CMP_EQ" }],
        }));
    }
    rules.push(json!({
        "names": ["socket"], "action": "SCMP_ACT_ALLOW",
        "args": [{ "index": 0, "value": 40, "op": "SCMP_CMP_NE" }],
    }));
    rules.push(json!({
        "names": ["clone"], "action": "SCMP_ACT_ALLOW",
        "args": [{ "index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }],
    }));
    rules.push(json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 }));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules,
    })
}

#[test]
fn docker_like_profile() {
    let p = docker_like();
    let names = p["syscalls"][0]["names"].as_array().unwrap().len();
    assert!(names > 350, "{names}");
    let prog = compile_json(p.clone()).unwrap();
    assert_eq!(prog.flags, SECCOMP_FILTER_FLAG_SPEC_ALLOW);
    assert!(!prog.notify);
    println!(
        "docker-like profile: {} BPF instructions",
        prog.filter.len()
    );
    assert!(prog.filter.len() < 600, "{}", prog.filter.len());

    let x64 = |nr: u32, args: [u64; 6]| Data {
        arch: arch::X86_64.audit,
        nr,
        args,
    };
    let run = |d: Data| eval(&prog.filter, &d, true);
    let eperm = RET_ERRNO | 1;
    assert_eq!(run(x64(0, [0; 6])), RET_ALLOW); // read
    assert_eq!(run(x64(169, [0; 6])), eperm); // reboot
    assert_eq!(run(x64(435, [0; 6])), ENOSYS_RET); // clone3, by rule
    assert_eq!(run(x64(999, [0; 6])), ENOSYS_RET); // past the profile
    assert_eq!(run(x64(56, [0x11, 0, 0, 0, 0, 0])), RET_ALLOW); // clone(SIGCHLD)
    assert_eq!(run(x64(56, [0x1000_0011, 0, 0, 0, 0, 0])), eperm); // CLONE_NEWUSER
    assert_eq!(run(x64(41, [2, 0, 0, 0, 0, 0])), RET_ALLOW); // socket(AF_INET)
    assert_eq!(run(x64(41, [40, 0, 0, 0, 0, 0])), eperm); // socket(AF_VSOCK)
    assert_eq!(run(x64(135, [0xffff_ffff, 0, 0, 0, 0, 0])), RET_ALLOW); // personality
    assert_eq!(run(x64(135, [0x0040_0000, 0, 0, 0, 0, 0])), eperm);
    let x32 = |nr| x64(X32_SYSCALL_BIT | nr, [0; 6]);
    assert_eq!(run(x32(0)), RET_ALLOW);
    assert_eq!(run(x32(514)), RET_ALLOW); // x32 ioctl
    assert_eq!(run(x32(16)), eperm); // x86_64's ioctl number is not x32's
    let i386 = |nr| Data {
        arch: arch::X86.audit,
        nr,
        args: [0; 6],
    };
    assert_eq!(run(i386(102)), RET_ALLOW); // socketcall
    assert_eq!(run(i386(26)), eperm); // ptrace
    let arm = Data {
        arch: arch::AARCH64.audit,
        nr: 63,
        args: [0; 6],
    };
    assert_eq!(run(arm), RET_KILL_PROCESS);

    // The range tree keeps every decision short.
    let longest = (0..600)
        .map(|nr| eval_steps(&prog.filter, &x64(nr, [0; 6]), true).1)
        .max()
        .unwrap();
    println!("docker-like profile: longest x86_64 path {longest} instructions");
    assert!(longest <= 16, "{longest}");

    let mut rng = Rng(42);
    let prober = Prober::new(&p);
    for _ in 0..5_000 * ROUNDS {
        check(&p, &prog, &prober.draw(&mut rng));
    }
}

#[test]
fn compile_time() {
    let p = profile(docker_like());
    let cold = std::time::Instant::now();
    let prog = compile(&p).unwrap();
    let cold = cold.elapsed();
    let n = 200;
    let t = std::time::Instant::now();
    for _ in 0..n {
        assert_eq!(compile(&p).unwrap(), prog);
    }
    let warm = t.elapsed() / n;
    println!(
        "docker-like profile ({} insns): first compile {cold:?} (builds name tables), then {warm:?} each",
        prog.filter.len()
    );
    if !cfg!(debug_assertions) {
        assert!(warm < std::time::Duration::from_millis(1), "{warm:?}");
    }
}

// ---------------------------------------------------------------------------
// Validation, flags, tables

#[test]
fn validation_errors_name_the_field() {
    let cases = [
        (
            json!({ "defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x" }),
            "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1 }),
            "linux.seccomp.defaultErrnoRet: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take an errno, not SCMP_ACT_ALLOW",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000 }),
            "linux.seccomp.defaultErrnoRet: 70000 is out of range (0-65535)",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_PARISC"] }),
            "linux.seccomp.architectures[1]: unsupported architecture \"SCMP_ARCH_PARISC\"",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                { "names": ["read"], "action": "SCMP_ACT_ERRNO" },
                { "names": [], "action": "SCMP_ACT_ERRNO" },
            ] }),
            "linux.seccomp.syscalls[1].names: must name at least one syscall",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                { "names": ["read", ""], "action": "SCMP_ACT_ERRNO" },
            ] }),
            "linux.seccomp.syscalls[0].names[1]: empty syscall name",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                { "names": ["read"], "action": "SCMP_ACT_ALLOW" },
                { "names": ["read"], "action": "SCMP_ACT_LOG", "errnoRet": 5 },
            ] }),
            "linux.seccomp.syscalls[1].errnoRet: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take an errno, not SCMP_ACT_LOG",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                { "names": ["read"], "action": "SCMP_ACT_TRACE", "errnoRet": 65536 },
            ] }),
            "linux.seccomp.syscalls[0].errnoRet: 65536 is out of range (0-65535)",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                { "names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [
                    { "index": 0, "value": 1, "op": "SCMP_CMP_EQ" },
                    { "index": 6, "value": 1, "op": "SCMP_CMP_EQ" },
                ] },
            ] }),
            "linux.seccomp.syscalls[0].args[1].index: 6 is out of range (0-5)",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                { "names": ["read"], "action": "SCMP_ACT_NOTIFY" },
            ] }),
            "linux.seccomp.listenerPath: must be set when a rule uses SCMP_ACT_NOTIFY",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "x" }),
            "linux.seccomp.listenerMetadata: must not be set without listenerPath",
        ),
    ];
    for (p, want) in cases {
        assert_eq!(err(p.clone()), want, "{p}");
    }
}

/// Unknown actions, arches, operators and flags never reach `compile`:
/// oci-spec rejects them while parsing, naming the bad value.
#[test]
fn unknown_enum_values_fail_to_parse() {
    for p in [
        json!({ "defaultAction": "SCMP_ACT_BOGUS" }),
        json!({ "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"] }),
        json!({ "defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_BOGUS"] }),
        json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{ "names": ["read"], "action": "SCMP_ACT_ERRNO",
            "args": [{ "index": 0, "value": 1, "op": "SCMP_CMP_BOGUS" }] }] }),
    ] {
        let e = serde_json::from_value::<LinuxSeccomp>(p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("BOGUS") || e.contains("VAX"), "{e}");
    }
}

#[test]
fn unknown_syscall_names_are_skipped() {
    let p = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{ "names": ["no_such_syscall", "getpid"], "action": "SCMP_ACT_ALLOW" }],
    });
    let prog = compile_json(p).unwrap();
    let d = Data {
        arch: arch::native().unwrap().audit,
        nr: arch::native().unwrap().lookup("getpid").unwrap(),
        args: [0; 6],
    };
    assert_eq!(
        eval(&prog.filter, &d, cfg!(target_endian = "little")),
        RET_ALLOW
    );
}

#[test]
fn flags() {
    let flags = |v: Value| {
        let mut p = json!({ "defaultAction": "SCMP_ACT_ALLOW" });
        if !v.is_null() {
            p["flags"] = v;
        }
        compile_json(p).unwrap().flags
    };
    // runc's default when the profile says nothing.
    assert_eq!(flags(Value::Null), SECCOMP_FILTER_FLAG_SPEC_ALLOW);
    assert_eq!(flags(json!([])), 0);
    assert_eq!(
        flags(json!(SUPPORTED_FLAGS)),
        SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW
    );
    let with_notify = compile_json(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/agent.sock",
        "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "syscalls": [{ "names": ["mount"], "action": "SCMP_ACT_NOTIFY" }],
    }))
    .unwrap();
    assert!(with_notify.notify);
    assert_eq!(with_notify.flags, SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV);
}

#[test]
fn supported_lists_are_true() {
    let names: Vec<&str> = arch::ALL.iter().map(|a| a.name).collect();
    assert_eq!(names, SUPPORTED_ARCHES);
    for &a in SUPPORTED_ARCHES {
        let oci: oci_spec::runtime::Arch = serde_json::from_value(json!(a)).unwrap();
        assert_eq!(arch::from_oci(oci).map(|d| d.name), Some(a));
        compile_json(json!({ "defaultAction": "SCMP_ACT_ALLOW", "architectures": [a] })).unwrap();
    }
    for &a in SUPPORTED_ACTIONS {
        compile_json(json!({
            "defaultAction": "SCMP_ACT_KILL_PROCESS",
            "listenerPath": "/run/agent.sock",
            "syscalls": [{ "names": ["read"], "action": a }],
        }))
        .unwrap();
    }
    for &f in SUPPORTED_FLAGS {
        compile_json(json!({ "defaultAction": "SCMP_ACT_ALLOW", "flags": [f] })).unwrap();
    }
    for &o in SUPPORTED_OPERATORS {
        compile_json(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["read"], "action": "SCMP_ACT_ERRNO",
                "args": [{ "index": 0, "value": 1, "op": o }] }],
        }))
        .unwrap();
    }
}

#[test]
fn name_tables() {
    let cases: &[(&ArchDef, &str, u32)] = &[
        (&arch::X86_64, "read", 0),
        (&arch::X86_64, "clone3", 435),
        (&arch::X86_64, "file_setattr", 469), // the crate table's last entry
        (&arch::X86_64, "listns", 470),
        (&arch::X86, "read", 3),
        (&arch::X86, "socketcall", 102),
        (&arch::X32, "read", X32_SYSCALL_BIT),
        (&arch::X32, "ioctl", X32_SYSCALL_BIT | 514),
        (&arch::X32, "execve", X32_SYSCALL_BIT | 520),
        (&arch::ARM, "cacheflush", 0xf0002),
        (&arch::ARM, "read", 3),
        (&arch::AARCH64, "newfstatat", 79),
        (&arch::AARCH64, "read", 63),
        (&arch::RISCV64, "newfstatat", 79),
        (&arch::MIPS, "read", 4003),
        (&arch::MIPS64, "read", 5000),
        (&arch::PPC64, "read", 3),
        (&arch::S390X, "read", 3),
        (&arch::LOONGARCH64, "newfstatat", 79),
    ];
    for &(def, name, nr) in cases {
        assert_eq!(def.lookup(name), Some(nr), "{def:?} {name}");
    }
    assert_eq!(arch::X32.lookup("uselib"), None);
    assert_eq!(arch::AARCH64.lookup("clock_gettime64"), None);
    assert_eq!(arch::X86_64.lookup("socketcall"), None);
}

// ---------------------------------------------------------------------------
// Real kernel

mod kernel {
    use std::ffi::CString;

    use nix::sys::signal::Signal;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    use super::*;

    enum Outcome {
        Exit(i32),
        Signal(Signal),
    }

    /// Forks; the child optionally runs `pre` (still unfiltered), sets
    /// no_new_privs, installs the filter and exits with `body`'s result.
    /// Only raw syscalls happen between fork and exit.
    fn run_with(p: &Program, nnp: bool, pre: impl FnOnce(), body: impl FnOnce() -> i32) -> Outcome {
        // SAFETY: the child only makes syscalls and leaves with _exit.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                // Children killed by SIGSYS would otherwise leave core files.
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: plain setrlimit call on a local struct.
                unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
                pre();
                // SAFETY: plain prctl/_exit calls.
                unsafe {
                    if nnp && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        libc::_exit(120);
                    }
                }
                let code = match install(p) {
                    Ok(fd) => {
                        std::mem::forget(fd);
                        body()
                    }
                    Err(e) => match e.downcast_ref::<std::io::Error>() {
                        Some(io) if io.raw_os_error() == Some(libc::EACCES) => 123,
                        _ => 121,
                    },
                };
                // SAFETY: ends the child without running the parent's atexit state.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
                WaitStatus::Exited(_, code) => Outcome::Exit(code),
                WaitStatus::Signaled(_, sig, _) => Outcome::Signal(sig),
                other => panic!("{other:?}"),
            },
        }
    }

    fn run(p: &Program, body: impl FnOnce() -> i32) -> Outcome {
        run_with(p, true, || {}, body)
    }

    fn exit_code(o: Outcome) -> i32 {
        match o {
            Outcome::Exit(c) => c,
            Outcome::Signal(s) => panic!("child killed by {s}"),
        }
    }

    fn signal(o: Outcome) -> Signal {
        match o {
            Outcome::Signal(s) => s,
            Outcome::Exit(c) => panic!("child exited with {c}"),
        }
    }

    /// errno of a raw syscall, 0 on success.
    fn errno(ret: libc::c_long) -> i32 {
        if ret == -1 {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        } else {
            0
        }
    }

    fn sys0(nr: libc::c_long) -> i32 {
        // SAFETY: argument-less syscalls chosen by the tests.
        errno(unsafe { libc::syscall(nr) })
    }

    /// lseek(fd, off, whence): EBADF unless the filter steps in.
    fn lseek(fd: u64, off: u64, whence: u64) -> i32 {
        // SAFETY: lseek on fd -1 (or similar) has no side effects.
        errno(unsafe { libc::syscall(libc::SYS_lseek, fd, off, whence) })
    }

    fn prog(v: Value) -> Program {
        compile_json(v).unwrap()
    }

    const NO_FD: u64 = u64::MAX; // -1 as the kernel sees it

    #[test]
    fn errno_rule_and_default() {
        let p = prog(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42 }],
        }));
        let code = run(&p, || {
            if sys0(libc::SYS_getpid) != 0 {
                return 99;
            }
            sys0(libc::SYS_getppid)
        });
        assert_eq!(exit_code(code), 42);

        let p = prog(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 13,
            "syscalls": [{ "names": ["exit_group", "getpid", "lseek"], "action": "SCMP_ACT_ALLOW" }],
        }));
        assert_eq!(exit_code(run(&p, || sys0(libc::SYS_getppid))), 13);
        assert_eq!(exit_code(run(&p, || sys0(libc::SYS_getpid))), 0);
    }

    #[test]
    fn enosys_above_the_profile() {
        // exit_group (231) is the highest number named.
        for default in ["SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS"] {
            let p = prog(json!({
                "defaultAction": default,
                "syscalls": [{ "names": ["exit_group", "getpid"], "action": "SCMP_ACT_ALLOW" }],
            }));
            assert_eq!(
                exit_code(run(&p, || sys0(libc::SYS_getrandom))),
                libc::ENOSYS,
                "{default}"
            );
        }
        let p = prog(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{ "names": ["exit_group", "getpid"], "action": "SCMP_ACT_ALLOW" }],
        }));
        assert_eq!(exit_code(run(&p, || sys0(libc::SYS_getuid))), libc::EPERM);
    }

    #[test]
    fn sixty_four_bit_conditions() {
        let v: u64 = 0x1_0000_0005;
        let probes: [u64; 8] = [v, v - 1, v + 1, 5, 6, 0x2_0000_0000, 0, u64::MAX];
        let mask_probes: [u64; 8] = [
            0x1_0000_0005,
            0x3_0000_1105,
            0x5,
            0x1_0000_0004,
            0xffff_ffff_ffff_ff05,
            0x1_0000_0105,
            0,
            u64::MAX,
        ];
        let mask = 0x1_0000_00ffu64;
        for op in OPS {
            let (probes, value, value_two) = if *op == "SCMP_CMP_MASKED_EQ" {
                (mask_probes, mask, v)
            } else {
                (probes, v, 0)
            };
            let p = prog(json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["lseek"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77,
                    "args": [{ "index": 1, "value": value, "valueTwo": value_two, "op": op }] }],
            }));
            let want = probes.iter().enumerate().fold(0, |m, (i, &x)| {
                let hit = match *op {
                    "SCMP_CMP_NE" => x != v,
                    "SCMP_CMP_LT" => x < v,
                    "SCMP_CMP_LE" => x <= v,
                    "SCMP_CMP_EQ" => x == v,
                    "SCMP_CMP_GE" => x >= v,
                    "SCMP_CMP_GT" => x > v,
                    _ => x & mask == v,
                };
                m | (i32::from(hit) << i)
            });
            let got = exit_code(run(&p, || {
                let mut m = 0;
                for (i, &x) in probes.iter().enumerate() {
                    match lseek(NO_FD, x, 0) {
                        77 => m |= 1 << i,
                        e if e == libc::EBADF => {}
                        _ => return 255,
                    }
                }
                m
            }));
            assert_eq!(got, want, "{op}: got {got:08b}, want {want:08b}");
        }
    }

    #[test]
    fn conditions_and_or() {
        // Different arguments: ANDed.
        let p = prog(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["lseek"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77, "args": [
                { "index": 0, "value": NO_FD, "op": "SCMP_CMP_EQ" },
                { "index": 2, "value": 1, "op": "SCMP_CMP_EQ" },
            ] }],
        }));
        let got = exit_code(run(&p, || {
            (lseek(NO_FD, 0, 1) == 77) as i32 | ((lseek(NO_FD, 0, 0) == libc::EBADF) as i32) << 1
        }));
        assert_eq!(got, 0b11);

        // The same argument twice: runc makes each condition its own rule.
        let p = prog(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["lseek"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77, "args": [
                { "index": 1, "value": 5, "op": "SCMP_CMP_EQ" },
                { "index": 1, "value": 7, "op": "SCMP_CMP_EQ" },
                { "index": 2, "value": 2, "op": "SCMP_CMP_EQ" },
            ] }],
        }));
        let got = exit_code(run(&p, || {
            [(5, 0), (7, 0), (6, 2), (6, 0)]
                .iter()
                .enumerate()
                .fold(0, |m, (i, &(off, wh))| {
                    m | (((lseek(NO_FD, off, wh) == 77) as i32) << i)
                })
        }));
        assert_eq!(got, 0b0111);
    }

    fn one_rule(action: &str) -> Program {
        prog(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["getppid"], "action": action }],
        }))
    }

    #[test]
    fn actions() {
        for a in [
            "SCMP_ACT_KILL",
            "SCMP_ACT_KILL_THREAD",
            "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_TRAP",
        ] {
            let s = signal(run(&one_rule(a), || sys0(libc::SYS_getppid)));
            assert_eq!(s, Signal::SIGSYS, "{a}");
        }
        assert_eq!(
            exit_code(run(&one_rule("SCMP_ACT_LOG"), || sys0(libc::SYS_getppid))),
            0
        );
        assert_eq!(
            exit_code(run(&one_rule("SCMP_ACT_ALLOW"), || sys0(libc::SYS_getppid))),
            0
        );
        // No tracer attached: the kernel answers ENOSYS.
        assert_eq!(
            exit_code(run(&one_rule("SCMP_ACT_TRACE"), || sys0(libc::SYS_getppid))),
            libc::ENOSYS
        );
        // The default action applies to everything else.
        let p = prog(json!({
            "defaultAction": "SCMP_ACT_KILL_PROCESS",
            "syscalls": [{ "names": ["exit_group", "getpid"], "action": "SCMP_ACT_ALLOW" }],
        }));
        assert_eq!(signal(run(&p, || sys0(libc::SYS_getppid))), Signal::SIGSYS);
        assert_eq!(exit_code(run(&p, || sys0(libc::SYS_getpid))), 0);
    }

    #[test]
    fn flags_install() {
        for flags in [json!([]), json!(SUPPORTED_FLAGS)] {
            let p = prog(json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "flags": flags,
                "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42 }],
            }));
            assert_eq!(exit_code(run(&p, || sys0(libc::SYS_getppid))), 42);
        }
    }

    /// A user-notification round trip: the filtered grandchild's getppid is
    /// answered through the listener fd `install` returned.
    #[test]
    fn notify_listener() {
        for flags in [json!([]), json!(SUPPORTED_FLAGS)] {
            let p = prog(json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "listenerPath": "/run/agent.sock",
                "flags": flags,
                "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_NOTIFY" }],
            }));
            assert!(p.notify);
            let code = notify_round_trip(&p);
            assert_eq!(code, libc::ENOTTY, "flags {flags}");
        }
    }

    fn notify_round_trip(p: &Program) -> i32 {
        // SAFETY: children only make syscalls and _exit.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
                WaitStatus::Exited(_, c) => c,
                other => panic!("{other:?}"),
            },
            ForkResult::Child => unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let fd = match install(p) {
                    Ok(Some(fd)) => fd,
                    _ => libc::_exit(121),
                };
                let gc = libc::fork();
                if gc == 0 {
                    libc::_exit(sys0(libc::SYS_getppid));
                }
                let mut req: libc::seccomp_notif = std::mem::zeroed();
                use std::os::fd::AsRawFd;
                if libc::ioctl(
                    fd.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                    &mut req,
                ) != 0
                {
                    libc::_exit(122);
                }
                if req.data.nr != libc::SYS_getppid as i32 || req.pid != gc as u32 {
                    libc::_exit(123);
                }
                let mut resp: libc::seccomp_notif_resp = std::mem::zeroed();
                resp.id = req.id;
                resp.error = -libc::ENOTTY;
                if libc::ioctl(
                    fd.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                    &mut resp,
                ) != 0
                {
                    libc::_exit(124);
                }
                let mut status = 0;
                libc::waitpid(gc, &mut status, 0);
                libc::_exit(if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    125
                })
            },
        }
    }

    #[test]
    fn works_without_cap_sys_admin() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to drop to nobody");
            return;
        }
        let p = prog(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42 }],
        }));
        let drop_root = || unsafe {
            // SAFETY: plain credential syscalls; leaving root clears all capabilities.
            if libc::setresgid(65534, 65534, 65534) != 0
                || libc::setresuid(65534, 65534, 65534) != 0
            {
                libc::_exit(119);
            }
        };
        assert_eq!(
            exit_code(run_with(&p, true, drop_root, || sys0(libc::SYS_getppid))),
            42
        );
        // Without no_new_privs the kernel refuses an unprivileged filter.
        assert_eq!(exit_code(run_with(&p, false, drop_root, || 0)), 123);
    }

    #[test]
    fn docker_like_runs_a_shell() {
        let p = prog(docker_like());
        let sh = CString::new("/bin/sh").unwrap();
        let argv = [
            sh.as_ptr(),
            c"-c".as_ptr(),
            c"echo hello >/dev/null && exit 7".as_ptr(),
            std::ptr::null(),
        ];
        let code = run(&p, || {
            // SAFETY: argv is a NULL-terminated array of C strings made before fork.
            unsafe { libc::execv(sh.as_ptr(), argv.as_ptr()) };
            122
        });
        assert_eq!(exit_code(code), 7);
        // What docker's profile denies, it denies with EPERM.
        let code = run(&p, || {
            // SAFETY: these calls are refused by the filter before doing anything.
            let persona = errno(unsafe { libc::syscall(libc::SYS_personality, 0x0040_0000) });
            let unshare = errno(unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) });
            let vsock = errno(unsafe { libc::syscall(libc::SYS_socket, 40, libc::SOCK_STREAM, 0) });
            (persona == libc::EPERM) as i32
                | ((unshare == libc::EPERM) as i32) << 1
                | ((vsock == libc::EPERM) as i32) << 2
        });
        assert_eq!(exit_code(code), 0b111);
    }

    #[cfg(target_arch = "x86_64")]
    mod x86_64 {
        use super::*;

        const X32_GETPID: libc::c_long = (X32_SYSCALL_BIT | 39) as libc::c_long;

        #[test]
        fn x32_numbers() {
            // Not covered: a bad-arch kill.
            let p = one_rule("SCMP_ACT_ERRNO");
            assert_eq!(signal(run(&p, || sys0(X32_GETPID))), Signal::SIGSYS);
            // Covered: rules apply with x32 numbering.
            let p = prog(json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
                "syscalls": [
                    { "names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 55 },
                    { "names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 56 },
                ],
            }));
            let x32_ioctl = (X32_SYSCALL_BIT | 514) as libc::c_long;
            assert_eq!(exit_code(run(&p, || sys0(X32_GETPID))), 55);
            assert_eq!(exit_code(run(&p, || sys0(x32_ioctl))), 56);
        }

        #[test]
        fn minus_one_gets_the_default_action() {
            let p = prog(json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 13,
                "syscalls": [{ "names": ["exit_group"], "action": "SCMP_ACT_ALLOW" }],
            }));
            assert_eq!(exit_code(run(&p, || sys0(-1))), 13);
        }

        /// `int 0x80` from a 64-bit process makes an i386 syscall.
        fn int80(nr: u32) -> i64 {
            let ret: i64;
            // SAFETY: getpid-style i386 syscalls with no arguments.
            unsafe {
                std::arch::asm!(
                    "int 0x80",
                    inlateout("rax") i64::from(nr) => ret,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                    options(nostack),
                );
            }
            ret
        }

        #[test]
        fn i386_syscalls() {
            let probe = prog(json!({ "defaultAction": "SCMP_ACT_ALLOW" }));
            match run(&probe, || (int80(20) > 0) as i32) {
                Outcome::Exit(1) => {}
                _ => {
                    eprintln!("skipped: no IA-32 emulation");
                    return;
                }
            }
            // Not covered: a bad-arch kill.
            let p = one_rule("SCMP_ACT_ERRNO");
            assert_eq!(signal(run(&p, || int80(20) as i32)), Signal::SIGSYS);
            // Covered: i386 numbers and rules.
            let p = prog(json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86"],
                "syscalls": [{ "names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 57 }],
            }));
            assert_eq!(exit_code(run(&p, || -int80(20) as i32)), 57);
            assert_eq!(exit_code(run(&p, || (int80(64) > 0) as i32)), 1); // getppid
        }
    }
}
