#!/usr/bin/env python3
"""Container images without a container engine: docker-archive tarballs that `ctr images import` loads.

    oci_image.py build SPEC.json OUT.tar      build one image from a spec (below)
    oci_image.py check DOCKERFILE TARGET IMAGE.tar
                                              compare an image with a runtime stage of docker/Dockerfile: user,
                                              entrypoint, environment, exposed ports, the files its COPY lines
                                              add, and no shell where the stage's base has none

A spec names the image, its config, and the files of its single layer:
    {"name": "localhost/vp-operator:site", "user": "65532:65532", "entrypoint": ["/usr/local/bin/vp-operator"],
     "env": {"ORT_DYLIB_PATH": "..."}, "expose": [8080], "workdir": "/",
     "files": [{"path": "/usr/local/bin/vp-operator", "src": "/abs/host/file", "mode": 493},
               {"path": "/etc/passwd", "text": "...", "mode": 420},
               {"path": "/tmp", "dir": true, "mode": 1023},
               {"path": "/lib", "symlink": "usr/lib"}],
     "libs_of": ["/abs/host/binary"]}
`libs_of` adds the shared libraries (and the dynamic loader) that each named host binary needs, at their host
paths, found with ldd. Layers are written reproducibly (fixed times, owners from the spec or root).
"""

import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile

EPOCH = 0


class ImageError(Exception):
    """A spec, a Dockerfile or an image that cannot be used, with what is wrong."""


def shared_libraries(binary):
    """Host paths of the shared libraries and loader that `binary` needs (empty for a static binary)."""
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
    except OSError as err:
        raise ImageError(f"ldd {binary}: {err}") from err
    paths = []
    for line in out.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            paths.append(m.group(1))
        elif "not found" in line:
            raise ImageError(f"{binary}: a shared library is missing on this host: {line.strip()}")
    return paths


def _add(tar, info, data=None):
    info.mtime = EPOCH
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _parents(path, seen, tar):
    parts = path.strip("/").split("/")[:-1]
    cur = ""
    for part in parts:
        cur += "/" + part
        if cur in seen:
            continue
        seen.add(cur)
        info = tarfile.TarInfo(cur.lstrip("/"))
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        _add(tar, info)


def layer(entries):
    """The layer tar (bytes) holding `entries` (spec file entries, libraries already expanded)."""
    buf = io.BytesIO()
    seen = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in sorted(entries, key=lambda e: e["path"]):
            path = e["path"]
            if path in seen:
                continue
            _parents(path, seen, tar)
            seen.add(path)
            info = tarfile.TarInfo(path.lstrip("/"))
            info.uid = info.gid = e.get("owner", 0)
            if "symlink" in e:
                info.type = tarfile.SYMTYPE
                info.linkname = e["symlink"]
                info.mode = 0o777
                _add(tar, info)
            elif e.get("dir"):
                info.type = tarfile.DIRTYPE
                info.mode = e.get("mode", 0o755)
                _add(tar, info)
            else:
                if "text" in e:
                    data = e["text"].encode()
                elif "src" in e:
                    try:
                        with open(e["src"], "rb") as f:
                            data = f.read()
                    except OSError as err:
                        raise ImageError(f"{path}: cannot read {e['src']}: {err}") from err
                else:
                    raise ImageError(f"{path}: a file entry needs src, text, dir or symlink")
                info.size = len(data)
                info.mode = e.get("mode", 0o644)
                _add(tar, info, data)
    return buf.getvalue()


def expand(spec):
    """The spec's file entries plus the shared libraries of its `libs_of` binaries, each at its real path (the
    spec provides the usr-merge links /lib and /lib64) with a link where the library's name is a link itself."""
    entries = list(spec.get("files", []))
    have = {e["path"] for e in entries}

    def put(entry):
        if entry["path"] not in have:
            have.add(entry["path"])
            entries.append(entry)

    for binary in spec.get("libs_of", []):
        for lib in shared_libraries(binary):
            real = os.path.realpath(lib)
            named = os.path.join(os.path.realpath(os.path.dirname(lib)), os.path.basename(lib))
            put({"path": real, "src": real, "mode": 0o755})
            if named != real:
                put({"path": named, "symlink": os.path.relpath(real, os.path.dirname(named))})
    return entries


def build(spec, out):
    """Writes the docker-archive tarball of `spec` to `out`."""
    for key in ("name", "entrypoint"):
        if key not in spec:
            raise ImageError(f"spec: `{key}` is required")
    data = layer(expand(spec))
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "User": spec.get("user", ""),
            "Entrypoint": spec["entrypoint"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
            + [f"{k}={v}" for k, v in sorted(spec.get("env", {}).items())],
            "ExposedPorts": {f"{p}/tcp": {} for p in spec.get("expose", [])},
            "WorkingDir": spec.get("workdir", "/"),
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/build-images.sh"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.split(":")[1] + "/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [spec["name"]], "Layers": [layer_name]}]).encode()
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in ((config_name, config_bytes), (layer_name, data), ("manifest.json", manifest)):
            if "/" in name:
                d = tarfile.TarInfo(name.split("/")[0])
                d.type = tarfile.DIRTYPE
                d.mode = 0o755
                _add(tar, d)
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            _add(tar, info, content)
    os.replace(tmp, out)


def read_image(path):
    """(config, {path: TarInfo}) of a docker-archive tarball written by build."""
    try:
        with tarfile.open(path) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))[0]
            config = json.load(tar.extractfile(manifest["Config"]))
            files = {}
            for layer_name in manifest["Layers"]:
                inner = tarfile.open(fileobj=io.BytesIO(tar.extractfile(layer_name).read()))
                for m in inner.getmembers():
                    files["/" + m.name.lstrip("/")] = m
    except (OSError, KeyError, ValueError, tarfile.TarError) as err:
        raise ImageError(f"{path}: not a docker-archive image: {err}") from err
    return config, files


def dockerfile_stage(dockerfile, target):
    """The instructions of the stage `target` of a Dockerfile: base, user, entrypoint, env, expose, copies."""
    try:
        with open(dockerfile) as f:
            text = f.read()
    except OSError as err:
        raise ImageError(f"{dockerfile}: {err}") from err
    text = re.sub(r"\\\n", " ", text)
    stage = None
    out = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            stage = m.group(2) if m else None
            if stage == target:
                out = {"base": m.group(1), "user": "", "entrypoint": None, "env": {}, "expose": [], "copies": []}
            continue
        if stage != target or out is None:
            continue
        if word == "USER":
            out["user"] = rest.strip()
        elif word == "ENTRYPOINT":
            out["entrypoint"] = json.loads(rest)
        elif word == "ENV":
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                out["env"][k] = v
        elif word == "EXPOSE":
            out["expose"] += [int(p.split("/")[0]) for p in rest.split()]
        elif word == "COPY":
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            out["copies"].append(args[-1])
    if out is None:
        raise ImageError(f"{dockerfile}: no stage named {target}")
    return out


def check(dockerfile, target, image):
    """Differences between a Dockerfile runtime stage and a built image (empty list: they match)."""
    want = dockerfile_stage(dockerfile, target)
    config, files = read_image(image)
    cfg = config.get("config", {})
    problems = []
    if cfg.get("User") != want["user"]:
        problems.append(f"user: Dockerfile {want['user']!r}, image {cfg.get('User')!r}")
    if cfg.get("Entrypoint") != want["entrypoint"]:
        problems.append(f"entrypoint: Dockerfile {want['entrypoint']}, image {cfg.get('Entrypoint')}")
    env = dict(e.split("=", 1) for e in cfg.get("Env", []))
    for k, v in want["env"].items():
        if env.get(k) != v:
            problems.append(f"env {k}: Dockerfile {v!r}, image {env.get(k)!r}")
    extra_env = set(env) - set(want["env"]) - {"PATH", "SSL_CERT_FILE"}
    if extra_env:
        problems.append(f"env the Dockerfile does not set: {sorted(extra_env)}")
    ports = sorted(int(p.split("/")[0]) for p in cfg.get("ExposedPorts", {}))
    if ports != sorted(want["expose"]):
        problems.append(f"exposed ports: Dockerfile {sorted(want['expose'])}, image {ports}")
    for dest in want["copies"]:
        m = files.get(dest)
        if m is None or not m.isfile():
            problems.append(f"{dest}: copied by the Dockerfile, not a file in the image")
    uid = int(want["user"].split(":")[0]) if want["user"] else 0
    if "distroless" in want["base"]:
        for shell in ("/bin/sh", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash", "/bin/busybox"):
            if shell in files:
                problems.append(f"{shell}: the Dockerfile's distroless base has no shell, the image has one")
        passwd = files.get("/etc/passwd")
        if passwd is None:
            problems.append("/etc/passwd: missing (distroless names user 65532 `nonroot` there)")
        home = files.get("/home/nonroot")
        if home is None or not home.isdir() or home.uid != uid:
            problems.append(f"/home/nonroot: distroless's home of user {uid}, missing or not owned by it")
        tmp = files.get("/tmp")
        if tmp is None or not tmp.isdir() or tmp.mode & 0o1777 != 0o1777:
            problems.append("/tmp: distroless has a world-writable sticky /tmp")
    return problems


def main(argv):
    try:
        if len(argv) == 4 and argv[1] == "build":
            with open(argv[2]) as f:
                build(json.load(f), argv[3])
            return 0
        if len(argv) == 5 and argv[1] == "check":
            problems = check(argv[2], argv[3], argv[4])
            for p in problems:
                print(f"{argv[4]} vs {argv[2]} target {argv[3]}: {p}", file=sys.stderr)
            return 1 if problems else 0
    except (ImageError, OSError, ValueError) as err:
        print(f"oci_image: {err}", file=sys.stderr)
        return 1
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
