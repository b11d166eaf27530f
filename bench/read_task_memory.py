"""Peak memory of one prepare read task on a large SA-1B-layout tar (default 2 GB).

    python bench/read_task_memory.py [--gb 2] [--dir /tmp] [--uri s3://bucket/prefix]

Writes a tar of SA-1B-size samples (1500x2250 JPEG, 100 masks; a few distinct samples repeated
under new names until the size is reached), then, in a fresh Python process, runs exactly the body
of a prepare read task (`pipelines.stages.prepare.iter_tar_pairs` streaming the tar, `convert_sample` on
every pair) and reports that process's peak resident memory (ru_maxrss) against its baseline after
imports. Target: at most 1 GB for a 2 GB tar. With --uri the tar is uploaded and read back through
the object store (credentials from the AWS_* variables).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

CHILD = r"""
import resource, sys, time
from pipelines import storage
from pipelines.stages.prepare import iter_tar_pairs
from pixelclip.data.sa1b import ConvertOptions, convert_sample
def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
base = rss_kb()  # resident after imports (torch, pyarrow, ...), before the first member
opts, n, t0, out_bytes = ConvertOptions(), 0, time.perf_counter(), 0
for stem, pair, problem in iter_tar_pairs(sys.argv[1], storage.StorageOptions.from_env()):
    if pair is not None:
        out_bytes += len(convert_sample(pair["jpg"], pair["json"], opts)["image"])
        n += 1
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{n} {base} {peak} {time.perf_counter() - t0:.1f} {out_bytes}")
"""


def write_tar(path: str, gb: float, distinct: int = 4) -> int:
    from pipelines.synth.sa1b import _jpeg, sa1b_json, synth_image

    rng = np.random.default_rng(0)
    samples = []
    for i in range(distinct):
        rgb, masks = synth_image(rng, 1500, 2250, 100)
        samples.append((_jpeg(rgb), json.dumps(sa1b_json(i + 1, 1500, 2250, masks, rng)).encode()))
    target, n = int(gb * 2**30), 0
    with open(path, "wb") as f, tarfile.open(fileobj=f, mode="w|") as tar:
        while f.tell() < target:
            jpg, js = samples[n % distinct]
            for ext, data in (("jpg", jpg), ("json", js)):
                info = tarfile.TarInfo(f"sa_{n + 1}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=2.0)
    p.add_argument("--dir", default=tempfile.gettempdir())
    p.add_argument("--uri", help="also upload to this s3:// prefix and read it from there")
    a = p.parse_args()
    path = os.path.join(a.dir, f"pixelclip_bench_{a.gb:g}gb.tar")
    t0 = time.perf_counter()
    n = write_tar(path, a.gb)
    size = os.path.getsize(path)
    print(f"# wrote {path}: {size / 2**30:.2f} GiB, {n} samples, in {time.perf_counter() - t0:.0f} s")
    source = path
    if a.uri:
        from pipelines import storage

        source = storage.join(a.uri, os.path.basename(path))
        storage.upload(path, source)
    try:
        res = subprocess.run([sys.executable, "-c", CHILD, source], capture_output=True, text=True, check=True)
    finally:
        os.remove(path)
    done, base, peak, secs, out_bytes = res.stdout.split()
    base_mb, peak_mb = int(base) / 1024, int(peak) / 1024
    print(f"read task over {source}: {done} samples converted in {secs} s ({int(out_bytes) / 2**20:.0f} MiB written)")
    print(f"peak RSS of the read task {peak_mb:.0f} MiB, whole process (resident after imports "
          f"{base_mb:.0f} MiB, so streaming + conversion add at most {peak_mb - base_mb:.0f} MiB); "
          "target <= 1024 MiB for a 2 GB tar")


if __name__ == "__main__":
    main()
