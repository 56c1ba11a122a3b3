"""HDF5 filters for hjbsolve's result arrays, and the time of ``hjbsolve info``.

Writes two arrays typical of result files, a smooth float64 value function V(t, x, y) and a float32
feedback with clipped plateaus, with each candidate filter (shuffle + gzip at levels 1, 4, 6; shuffle + lzf;
Blosc/Zstd through hdf5plugin when installed; none), and prints the write and read throughput (MB/s of raw
data) and the compression ratio. Then times ``store.describe`` (what ``hjbsolve info`` prints) on a file of
that size.

Usage: python scripts/bench_store.py [--mb 128] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import h5py
import numpy as np

from hjbsolve import store


def arrays(mb):
    n = int(np.sqrt(mb * 2 ** 20 / 8 / 5 / 2))
    t = np.linspace(0, 1, 5)[:, None, None]
    x = np.linspace(-2, 2, n)[None, :, None]
    y = np.linspace(-3, 3, 2 * n)[None, None, :]
    V = np.exp(-t) * (x ** 2 / (1 + t) + np.cos(3 * x) * np.exp(-y ** 2) + 0.1 * y ** 2)
    fb = np.clip(np.sin(2 * x - y) * 3 + t, -1.0, 2.0).astype(np.float32)
    return {"V": V, "feedback": fb}


def filters():
    out = [("none", {}), ("gzip-1", dict(compression="gzip", compression_opts=1, shuffle=True)),
           ("gzip-4", dict(compression="gzip", compression_opts=4, shuffle=True)),
           ("gzip-6", dict(compression="gzip", compression_opts=6, shuffle=True)),
           ("lzf", dict(compression="lzf", shuffle=True))]
    try:
        import hdf5plugin
        out.append(("blosc-zstd-5", dict(**hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))))
        out.append(("blosc-lz4-5", dict(**hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))))
    except ImportError:
        pass
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=128.0, help="raw size of the V array in MB")
    ap.add_argument("--dir", default=None)
    a = ap.parse_args(argv)
    data = arrays(a.mb)
    raw = sum(v.nbytes for v in data.values()) / 2 ** 20
    folder = a.dir or tempfile.mkdtemp(prefix="hjbsolve_store_")
    print(f"raw data {raw:.0f} MB ({', '.join(f'{k} {v.shape} {v.dtype}' for k, v in data.items())}); "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'filter':<14} {'write MB/s':>10} {'read MB/s':>10} {'ratio':>7}")
    for name, kw in filters():
        path = os.path.join(folder, f"{name}.h5")
        t0 = time.perf_counter()
        with h5py.File(path, "w") as f:
            for k, v in data.items():
                f.create_dataset(k, data=v, chunks=True if kw else None, **kw)
        tw = time.perf_counter() - t0
        t0 = time.perf_counter()
        with h5py.File(path, "r") as f:
            for k in data:
                f[k][()]
        tr = time.perf_counter() - t0
        ratio = raw * 2 ** 20 / os.path.getsize(path)
        print(f"{name:<14} {raw / tw:>10.0f} {raw / tr:>10.0f} {ratio:>7.2f}", flush=True)
        os.remove(path)
    root = store.Group(coords={"t": store.Variable(np.linspace(0, 1, 5), "t")}, variables={
        "V": store.Variable(data["V"], ("t", "x", "y")), "feedback": store.Variable(data["feedback"], ("t", "x", "y"))})
    path = os.path.join(folder, "result.h5")
    t0 = time.perf_counter()
    store.write(path, root)
    tw = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.describe(path)
    td = time.perf_counter() - t0
    print(f"store.write ({store.FILTER}): {tw:.2f} s; "
          f"file {os.path.getsize(path) / 2 ** 20:.0f} MB; describe (hjbsolve info): {td:.3f} s (target < 0.5 s)")
    t0 = time.perf_counter()
    store.read(path)
    tr = time.perf_counter() - t0
    print(f"reading every array (what describe did before the summaries were stored): {tr:.2f} s")
    os.remove(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
