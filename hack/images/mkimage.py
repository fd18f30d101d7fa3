#!/usr/bin/env python3
"""Builds kura's test images as OCI image layouts, from Debian's busybox-static.

usage: mkimage.py KIND OUTDIR [--tag TAG] [--size-mb N]

KIND:
  busybox   one gzip layer: busybox-static and its applet links (benchmarks, `kura run`)
  multi-gzip  the same with the zstd layer gzip'd (umoci 0.4 cannot read zstd)
  multi     busybox base (gzip) + files of every type (gzip) + whiteouts and an
            opaque dir (plain tar) + a zstd layer with a hardlink into a lower layer
  index     an index with two platforms: linux/amd64 (= multi) and linux/arm64
  index-gzip  the same with multi-gzip for amd64 (convertible to a Docker manifest list)
  hostile-dotdot | hostile-abs | hostile-symlink | hostile-hardlink | bad-diffid
            a small base layer and a layer kura must refuse
  docker-archive  OUTDIR is a file: a `docker save` tar (uncompressed layers) of multi-gzip,
            tagged docker.io/library/dockersave:v1
  big       busybox base + layers of random data, about --size-mb MiB in all (bench)

Everything is deterministic except `big`'s random data. Needs python3 and zstd.
"""
import gzip, hashlib, io, json, os, subprocess, sys, tarfile

MTIME = 1700000000
HERE = os.path.dirname(os.path.abspath(__file__))


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Layout:
    def __init__(self, out):
        self.out = out
        os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(out, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def blob(self, data):
        d = sha(data)
        p = os.path.join(self.out, "blobs", "sha256", d[7:])
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.write(data)
        return d

    def blob_file(self, path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        d = "sha256:" + h.hexdigest()
        os.rename(path, os.path.join(self.out, "blobs", "sha256", d[7:]))
        return d

    def desc(self, mt, data):
        return {"mediaType": mt, "digest": self.blob(data), "size": len(data)}

    def write_index(self, manifests):
        with open(os.path.join(self.out, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": manifests}, f)


class Layer:
    """A tar built in memory from entries."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, name, type=tarfile.REGTYPE, data=b"", mode=0o644, uid=0, gid=0, link="", dev=(0, 0), pax=None):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = type, mode, uid, gid, MTIME
        ti.linkname = link
        ti.devmajor, ti.devminor = dev
        if pax:
            ti.pax_headers = pax
        if type == tarfile.REGTYPE:
            ti.size = len(data)
            self.tar.addfile(ti, io.BytesIO(data))
        else:
            self.tar.addfile(ti)

    def dir(self, name, mode=0o755, uid=0, gid=0):
        self.add(name, tarfile.DIRTYPE, mode=mode, uid=uid, gid=gid)

    def raw(self):
        self.tar.close()
        return self.buf.getvalue()


def busybox_layer():
    """The rootfs of hack/mkrootfs.sh as a layer (owners root, fixed times)."""
    import tempfile
    d = tempfile.mkdtemp(prefix="kura-mkimage-")
    try:
        subprocess.run([os.path.join(HERE, "..", "mkrootfs.sh"), d], check=True)
        l = Layer()
        for root, dirs, files in os.walk(d):
            dirs.sort()
            rel = os.path.relpath(root, d)
            if rel != ".":
                st = os.lstat(root)
                l.dir(rel, mode=st.st_mode & 0o7777)
            for f in sorted(files):
                p = os.path.join(root, f)
                name = os.path.normpath(os.path.join(rel, f))
                st = os.lstat(p)
                if os.path.islink(p):
                    l.add(name, tarfile.SYMTYPE, link=os.readlink(p), mode=0o777)
                else:
                    with open(p, "rb") as fh:
                        l.add(name, data=fh.read(), mode=st.st_mode & 0o7777)
        return l.raw()
    finally:
        subprocess.run(["rm", "-rf", d])


def gz(raw):
    return gzip.compress(raw, compresslevel=6, mtime=0)


def zst(raw):
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=raw, stdout=subprocess.PIPE, check=True).stdout


LT = "application/vnd.oci.image.layer.v1.tar"


def image(lay, layers, arch="amd64", variant=None):
    """layers: list of (raw tar, compression). Returns the manifest descriptor."""
    descs, diff_ids = [], []
    for raw, comp in layers:
        diff_ids.append(sha(raw))
        if comp == "gzip":
            descs.append(lay.desc(LT + "+gzip", gz(raw)))
        elif comp == "zstd":
            descs.append(lay.desc(LT + "+zstd", zst(raw)))
        else:
            descs.append(lay.desc(LT, raw))
    return finish(lay, descs, diff_ids, arch, variant)


def finish(lay, descs, diff_ids, arch="amd64", variant=None):
    cfg = {"architecture": arch, "os": "linux", "created": "2023-11-14T22:13:20Z",
           "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
           "rootfs": {"type": "layers", "diff_ids": diff_ids},
           "history": [{"created_by": "kura hack/images/mkimage.py"} for _ in diff_ids]}
    if variant:
        cfg["variant"] = variant
    cdata = json.dumps(cfg, sort_keys=True).encode()
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": lay.desc("application/vnd.oci.image.config.v1+json", cdata), "layers": descs}
    d = lay.desc("application/vnd.oci.image.manifest.v1+json", json.dumps(m).encode())
    d["platform"] = {"architecture": arch, "os": "linux"}
    if variant:
        d["platform"]["variant"] = variant
    return d


def files_layer():
    l = Layer()
    l.dir("etc")
    l.add("etc/hello", data=b"hello from layer 2\n", mode=0o640, uid=1000, gid=1000)
    l.dir("data", mode=0o750, uid=1000, gid=100)
    l.dir("data/dir")
    l.add("data/dir/file", data=b"a file with a hardlink\n", mode=0o600, uid=1, gid=1)
    l.add("data/link", tarfile.LNKTYPE, link="data/dir/file")
    l.add("data/sym", tarfile.SYMTYPE, link="dir/file", mode=0o777)
    l.add("data/abs-sym", tarfile.SYMTYPE, link="/etc/hello", mode=0o777)
    l.add("data/fifo", tarfile.FIFOTYPE, mode=0o620)
    l.add("data/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3))
    l.add("data/xattr", data=b"has an xattr\n", pax={"SCHILY.xattr.user.kura": "yes"})
    l.add("data/suid", data=b"#!/bin/sh\n", mode=0o4755)
    l.add("data/gone", data=b"whited out in layer 3\n")
    l.dir("data/opq")
    l.add("data/opq/a", data=b"a\n")
    l.add("data/opq/b", data=b"b\n")
    l.dir("data/emptydir", mode=0o1777)
    return l.raw()


def whiteout_layer():
    l = Layer()
    l.dir("data", mode=0o750, uid=1000, gid=100)
    l.add("data/.wh.gone")
    l.dir("data/opq", mode=0o700)
    l.add("data/opq/.wh..wh..opq")
    l.add("data/opq/c", data=b"c, after the opaque marker\n")
    l.dir("bin")
    l.add("bin/.wh.vi")
    l.add("etc/hello", data=b"hello, changed in layer 3\n", mode=0o644)
    return l.raw()


def zstd_layer():
    l = Layer()
    l.dir("zstd")
    l.add("zstd/hello", data=b"from a zstd layer\n" * 100)
    # A hardlink to a file of a lower layer.
    l.add("zstd/busybox-link", tarfile.LNKTYPE, link="bin/busybox")
    return l.raw()


def multi(lay, last="zstd"):
    return image(lay, [(busybox_layer(), "gzip"), (files_layer(), "gzip"), (whiteout_layer(), None),
                       (zstd_layer(), last)])


def small_base():
    l = Layer()
    l.dir("etc")
    l.add("etc/base", data=b"base\n")
    return l.raw()


def hostile(kind):
    l = Layer()
    if kind == "hostile-dotdot":
        l.add("etc/../../escape-dotdot", data=b"x")
    elif kind == "hostile-abs":
        l.add("/escape-abs", data=b"x")
    elif kind == "hostile-symlink":
        l.add("evil", tarfile.SYMTYPE, link="/tmp")
        l.add("evil/escape-symlink", data=b"x")
    elif kind == "hostile-hardlink":
        l.add("hl", tarfile.LNKTYPE, link="../../../etc/shadow")
    raw = l.raw()
    if kind in ("hostile-dotdot", "hostile-abs"):
        # tarfile normalizes names on write in some versions: patch the header in place.
        pass
    return raw


def docker_archive(out):
    """A `docker save` archive: manifest.json, <config>.json, <id>/layer.tar."""
    raws = [busybox_layer(), files_layer(), whiteout_layer(), zstd_layer()]
    diff_ids = [sha(r) for r in raws]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}, sort_keys=True).encode()
    cname = sha(cfg)[7:] + ".json"
    buf = tarfile.open(out, mode="w")

    def add(name, data):
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime = len(data), MTIME
        buf.addfile(ti, io.BytesIO(data))

    layers = []
    for i, r in enumerate(raws):
        name = f"{diff_ids[i][7:]}/layer.tar"
        add(name, r)
        layers.append(name)
    add(cname, cfg)
    add("manifest.json", json.dumps([{"Config": cname, "RepoTags": ["dockersave:v1"], "Layers": layers}]).encode())
    buf.close()


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    kind, out = args[0], args[1]
    tag = "latest"
    size_mb = 500
    if "--tag" in args:
        tag = args[args.index("--tag") + 1]
    if "--size-mb" in args:
        size_mb = int(args[args.index("--size-mb") + 1])
    if kind == "docker-archive":
        docker_archive(out)
        return
    lay = Layout(out)
    if kind == "busybox":
        top = image(lay, [(busybox_layer(), "gzip")])
    elif kind == "multi":
        top = multi(lay)
    elif kind == "multi-gzip":
        top = multi(lay, "gzip")
    elif kind in ("index", "index-gzip"):
        amd = multi(lay, "zstd" if kind == "index" else "gzip")
        l = Layer()
        l.add("platform", data=b"arm64\n")
        arm = image(lay, [(busybox_layer(), "gzip"), (l.raw(), "gzip")], arch="arm64", variant="v8")
        idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [amd, arm]}
        top = lay.desc("application/vnd.oci.image.index.v1+json", json.dumps(idx).encode())
    elif kind.startswith("hostile-"):
        top = image(lay, [(small_base(), "gzip"), (hostile(kind), "gzip")])
    elif kind == "bad-diffid":
        descs = [lay.desc(LT + "+gzip", gz(small_base()))]
        top = finish(lay, descs, [sha(b"not the layer")])
    elif kind == "big":
        layers = [(busybox_layer(), "gzip")]
        n = 5
        per = size_mb * 1024 * 1024 // n
        for i in range(n):
            path = os.path.join(out, f"layer{i}.tmp")
            raw_h = hashlib.sha256()
            # Files of 1-8 MiB, 7/8 random, plus many small text files: compresses little.
            buf = io.BytesIO()
            t = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
            left, j = per, 0
            while left > 0:
                sz = min(left, (1 + (j % 8)) << 20)
                data = os.urandom(sz * 7 // 8) + (b"kura bench %d\n" % j) * (sz // 8 // 13 + 1)
                data = data[:sz]
                ti = tarfile.TarInfo(f"bench{i}/f{j}")
                ti.size, ti.mtime, ti.mode = len(data), MTIME, 0o644
                t.addfile(ti, io.BytesIO(data))
                left -= sz
                j += 1
            for s in range(200):
                d = (b"small file %d\n" % s) * 20
                ti = tarfile.TarInfo(f"bench{i}/small/{s}")
                ti.size, ti.mtime = len(d), MTIME
                t.addfile(ti, io.BytesIO(d))
            t.close()
            layers.append((buf.getvalue(), "gzip"))
        top = image(lay, layers)
    else:
        print(f"unknown kind {kind}", file=sys.stderr)
        sys.exit(2)
    top.setdefault("annotations", {})["org.opencontainers.image.ref.name"] = tag
    if kind != "index":
        top.pop("platform", None)
    lay.write_index([top])


if __name__ == "__main__":
    main()
