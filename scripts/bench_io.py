"""How much `hjbsolve run` spends writing its file: the in-memory image against the former direct writes.

    python scripts/bench_io.py [CASE] [--set KEY=VALUE ...] [--repeat 3]

Runs the case once (default: the packaged lq.toml), then writes its result the way `hjbsolve run` does,
stage by stage (the cell stage, then each eps group, each time saving the partial file, then the final
file), in two ways, interleaved, in one temporary folder:

* ``image``: the current way (hjbsolve.store.FileImage): HDF5 builds the file in memory, each array is
  encoded (and compressed) once, and the bytes are copied to the disk with os.write after each stage;
* ``direct``: the former way: h5py writes the partial file itself for the cell stage, every eps group is a
  read-modify-write of the whole partial file (store.update of the time), and the final file is written
  again from the whole tree.

Prints the file size and the best time of each, and their ratio. Timings on a loaded machine are inflated;
the ratio, measured in the same run, is what to quote.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from hjbsolve import store  # noqa: E402
from hjbsolve.case import load_case  # noqa: E402
from hjbsolve.cli import default_case_path  # noqa: E402
from hjbsolve.runner import run  # noqa: E402


def direct_write(path, root):
    """The former store.write: h5py writing straight into the temporary file."""
    tree = store.complete(root)
    with store.atomic_output(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs[store.FORMAT_ATTR] = np.int64(store.FORMAT_VERSION)
            store._write_group(f, tree, "/")


def former(folder, cell_root, groups, final_root):
    partial, out = os.path.join(folder, "d.partial.h5"), os.path.join(folder, "d.h5")
    direct_write(partial, cell_root)
    for name, g in groups.items():                 # store.update: read the whole file, write it again
        root = store.read(partial)
        root.groups[name] = g
        direct_write(partial, root)
    direct_write(out, final_root)
    os.remove(partial)
    return os.path.getsize(out)


def current(folder, cell_root, groups, final_root):
    partial, out = os.path.join(folder, "i.partial.h5"), os.path.join(folder, "i.h5")
    with store.FileImage() as image:
        image.merge(cell_root)
        image.save(partial)
        for name, g in groups.items():
            image.add_group(name, g)
            image.save(partial)
        image.merge(final_root)
        image.save(out)
    os.remove(partial)
    return os.path.getsize(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", nargs="?", default=str(default_case_path().parent / "lq.toml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    case = load_case(args.case, args.overrides)
    t0 = time.perf_counter()
    result = run(case)
    print(f"case {args.case} {args.overrides}: computed in {time.perf_counter() - t0:.1f} s")
    final_root = result.to_group()
    groups = dict(final_root.groups)
    cell_root = store.Group(coords=final_root.coords, variables=final_root.variables, attrs=final_root.attrs)
    best = {"direct": np.inf, "image": np.inf}
    sizes = {}
    with tempfile.TemporaryDirectory(dir=".") as folder:
        for _ in range(args.repeat):
            for name, fn in (("direct", former), ("image", current)):
                t = time.perf_counter()
                sizes[name] = fn(folder, cell_root, groups, final_root)
                best[name] = min(best[name], time.perf_counter() - t)
    n = len(groups)
    print(f"{n} eps group(s); file {sizes['image'] / 2**20:.1f} MiB (direct: {sizes['direct'] / 2**20:.1f} MiB)")
    for name in ("direct", "image"):
        print(f"{name:7s} best of {args.repeat}: {best[name]:.3f} s")
    print(f"image / direct: {best['image'] / best['direct']:.2f}")


if __name__ == "__main__":
    main()
