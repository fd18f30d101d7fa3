#!/usr/bin/env python3
"""Start-path benchmark: kura-runtime beside runc and crun, in one run.

Each runtime runs the same busybox bundle (`true`) with its own --root. Reports the
median of N runs after warm-up for `run`, create, start, delete, `exec` into a running
container, 20 containers through create/start/delete with 2 workers, and the peak RSS
of any runtime command (GNU time's %M, in a separate pass). crun refuses this hybrid-cgroup
host unless cgroup2 is hidden, so its part runs in a mount namespace without
/sys/fs/cgroup/unified (the script re-runs itself under `unshare -m`).

"run (spaced)" and "exec (spaced)" start each command GAP (0.15 s) after the last one
ended, as containers are started in real use: back to back, a runtime that finishes
within a few ms of its previous migration never meets the kernel's cgroup-migration
grace period (7-11 ms here), which a spaced start pays in full unless it avoids the
global migration lock (kura-runtime does: clone3 into the cgroup2 dir, v1 joined by a
lone thread moving itself).

usage: hack/bench/runtime.py [-n 50] [--gap 0.15] [--runtimes kura,kura-dyn,kura-noguard,runc,crun] [--json out.json]
Needs root. Never used by tests: numbers, not assertions.
"""
import argparse, concurrent.futures, json, os, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# "kura" is the runtime as shipped (hack/runtime-build-static.sh: static-pie, opt-level s,
# built on first use); "kura-dyn" is the plain `cargo build --release` binary the tests use.
KURA_DYN = os.path.join(REPO, "target/release/kura-runtime")


def shipped_kura():
    if os.environ.get("KURA_RUNTIME"):
        return os.environ["KURA_RUNTIME"]
    out = subprocess.run([os.path.join(REPO, "hack/runtime-build-static.sh")],
                         check=True, stdout=subprocess.PIPE, text=True, cwd=REPO)
    return os.path.join(REPO, out.stdout.strip().splitlines()[-1])


KURA = os.environ.get("KURA_RUNTIME_RESOLVED") or shipped_kura()
os.environ["KURA_RUNTIME_RESOLVED"] = KURA  # the --inner re-runs reuse it
RUNTIMES = {
    "kura": [KURA],
    "kura-dyn": [KURA_DYN],
    "kura-noguard": [KURA],  # CVE-2019-5736 guard (sealed exec trampoline or re-exec) off: its cost
    "kura-reexec": [KURA],  # the guard's fallback (read-only self re-exec) forced everywhere
    "runc": ["runc"],
    "crun": ["crun"],
}
ENV = {"kura-noguard": {"KURA_RUNTIME_UNSAFE_NO_EXE_GUARD": "1"},
       "kura-reexec": {"KURA_RUNTIME_EXE_GUARD": "reexec"}}


def make_bundle(dest, args):
    os.makedirs(dest)
    subprocess.run([os.path.join(REPO, "hack/mkrootfs.sh"), os.path.join(dest, "rootfs")], check=True)
    subprocess.run([KURA, "spec", "--bundle", dest], check=True)
    with open(os.path.join(dest, "config.json")) as f:
        c = json.load(f)
    c["ociVersion"] = "1.0.2"  # what Debian's runc and crun know
    c["process"]["terminal"] = False
    c["process"]["args"] = args
    c["root"]["readonly"] = False
    with open(os.path.join(dest, "config.json"), "w") as f:
        json.dump(c, f)


class Runtime:
    def __init__(self, name, root):
        self.name, self.root = name, root
        self.env = dict(os.environ, **ENV.get(name, {}))

    def call(self, *args, check=True):
        """Runs one runtime command; returns seconds. Tracks peak RSS."""
        cmd = RUNTIMES[self.name] + ["--root", self.root] + list(args)
        # stderr goes to a file, not a pipe: a detached container inherits it and
        # would hold a pipe open for as long as it runs.
        with tempfile.TemporaryFile() as errf:
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=errf, env=self.env)
            _, status = os.waitpid(p.pid, 0)
            dt = time.perf_counter() - t0
            errf.seek(0)
            err = errf.read().decode(errors="replace")
        p.returncode = os.waitstatus_to_exitcode(status)
        if check and p.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(args)}: exit {p.returncode}: {err}")
        return dt

    def rss_kb(self, *args):
        """Peak RSS of one command, from GNU time: a child forked from this (large)
        Python process would report Python's pages in its ru_maxrss."""
        with tempfile.NamedTemporaryFile() as out:
            subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name] + RUNTIMES[self.name]
                           + ["--root", self.root] + list(args), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=self.env, check=True)
            return int(out.read().split()[-1])

    def status(self, cid):
        out = subprocess.run(RUNTIMES[self.name] + ["--root", self.root, "state", cid],
                             capture_output=True, env=self.env)
        return json.loads(out.stdout)["status"] if out.returncode == 0 else "gone"

    def wait_stopped(self, cid):
        for _ in range(2000):
            if self.status(cid) == "stopped":
                return
            time.sleep(0.001)
        raise RuntimeError(f"{self.name}: {cid} did not stop")


def bench(name, n, warm, work, gap):
    root = os.path.join(work, name, "state")
    os.makedirs(root)
    true_b = os.path.join(work, name, "true")
    make_bundle(true_b, ["true"])
    sleep_b = os.path.join(work, name, "sleep")
    make_bundle(sleep_b, ["sleep", "3600"])
    rt = Runtime(name, root)
    res = {}

    runs = []
    for i in range(warm + n):
        dt = rt.call("run", "--bundle", true_b, f"r{i}")
        if i >= warm:
            runs.append(dt)
    res["run"] = runs
    spaced = []
    for i in range(n // 2):
        time.sleep(gap)
        spaced.append(rt.call("run", "--bundle", true_b, f"g{i}"))
    res["run (spaced)"] = spaced

    c, s, d = [], [], []
    for i in range(warm + n):
        cid = f"c{i}"
        t1 = rt.call("create", "--bundle", true_b, cid)
        t2 = rt.call("start", cid)
        rt.wait_stopped(cid)
        t3 = rt.call("delete", cid)
        if i >= warm:
            c.append(t1), s.append(t2), d.append(t3)
    res["create"], res["start"], res["delete"] = c, s, d

    def one(cid):
        rt.call("create", "--bundle", true_b, cid)
        rt.call("start", cid)
        rt.wait_stopped(cid)
        rt.call("delete", cid)

    par = []
    for rep in range(max(3, n // 10)):
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            list(ex.map(one, [f"p{rep}-{i}" for i in range(20)]))
        par.append(time.perf_counter() - t0)
    res["20x create/start/delete (2 workers)"] = par

    rt.call("run", "--detach", "--bundle", sleep_b, "svc")
    ex = []
    for i in range(warm + n):
        dt = rt.call("exec", "svc", "true")
        if i >= warm:
            ex.append(dt)
    res["exec"] = ex
    spaced = []
    for i in range(n // 2):
        time.sleep(gap)
        spaced.append(rt.call("exec", "svc", "true"))
    res["exec (spaced)"] = spaced
    peaks = {"exec": rt.rss_kb("exec", "svc", "true")}
    rt.call("delete", "--force", "svc")
    for i in range(3):
        peaks["run"] = max(peaks.get("run", 0), rt.rss_kb("run", "--bundle", true_b, f"m{i}"))
        cid = f"mc{i}"
        for op, args in (("create", ["--bundle", true_b, cid]), ("start", [cid])):
            peaks[op] = max(peaks.get(op, 0), rt.rss_kb(op, *args, ))
        rt.wait_stopped(cid)
        peaks["delete"] = max(peaks.get("delete", 0), rt.rss_kb("delete", cid))
    res["peak_rss_kb_by_command"] = peaks
    res["peak_rss_kb"] = max(peaks.values())
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--gap", type=float, default=0.15)
    ap.add_argument("--runtimes", default="kura,kura-dyn,kura-noguard,runc,crun")
    ap.add_argument("--json")
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    if a.inner:
        work = tempfile.mkdtemp(prefix="kura-bench-")
        try:
            print(json.dumps(bench(a.inner, a.n, a.warm, work, a.gap)))
        finally:
            subprocess.run(["umount", "-R", "-l", work], stderr=subprocess.DEVNULL)
            shutil.rmtree(work, ignore_errors=True)
        return
    results = {}
    for name in a.runtimes.split(","):
        if shutil.which(RUNTIMES[name][0]) is None and not os.path.exists(RUNTIMES[name][0]):
            print(f"SKIPPED {name}: not installed", file=sys.stderr)
            continue
        cmd = [sys.executable, __file__, "--inner", name, "-n", str(a.n), "--warm", str(a.warm),
               "--gap", str(a.gap)]
        if name == "crun" and os.path.ismount("/sys/fs/cgroup/unified"):
            cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   'umount /sys/fs/cgroup/unified && exec "$@"', "sh"] + cmd
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"FAILED {name}: {out.stderr.strip()[-2000:]}", file=sys.stderr)
            continue
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    ops = ["run", "create", "start", "delete", "exec", "20x create/start/delete (2 workers)",
           "run (spaced)", "exec (spaced)"]
    names = list(results)
    print(f"{'operation (median ms)':40}" + "".join(f"{n:>14}" for n in names)
          + ("   kura/runc" if "runc" in results else "") + ("   kura/crun" if "crun" in results else ""))
    for op in ops:
        med = {n: statistics.median(results[n][op]) * 1000 for n in names}
        line = f"{op:40}" + "".join(f"{med[n]:14.2f}" for n in names)
        if "kura" in med and "runc" in med:
            line += f"{med['kura'] / med['runc']:12.2f}x"
        if "kura" in med and "crun" in med:
            line += f"{med['kura'] / med['crun']:12.2f}x"
        print(line)
    print(f"{'peak RSS (MiB)':40}" + "".join(f"{results[n]['peak_rss_kb'] / 1024:14.2f}" for n in names))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
