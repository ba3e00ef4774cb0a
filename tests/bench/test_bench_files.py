"""Benchmark (``make bench``): weekly file backup and restore against plain ``tar | zstd -3``.

On a generated tree of about 1.1 GB (tens of thousands of small JSON/text files and a few large
text and random files), in one run:

- backup (local copy, parts, manifest, per-file listing with sha256, fsync) vs
  ``tar -cf - TREE | zstd -3 > file``: goal ratio <= 1.15, peak memory < 200 MB;
- restore (sha256 of every file checked, sibling folder swapped in) vs ``zstd -dc | tar -x``:
  goal ratio <= 1.25.

Numbers are printed; only correctness is asserted. Each side runs twice and the faster run
counts, after ``sync`` so that one side's writeback does not slow the other.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL_FILES = 40_000
ROUNDS = 2

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from aiplatform_ops.storage.local import LocalStore
mode, tree, store_dir, target = sys.argv[2:6]
store = LocalStore(Path(store_dir))
started = time.perf_counter()
if mode == "backup":
    from aiplatform_ops.backup.files import take_full_backup
    manifest = take_full_backup([Path(tree)], store)
    out = {"backup_id": manifest.backup_id, "size": manifest.size, "parts": manifest.details["archive"]["parts"],
           "files": manifest.details["counts"]["files"]}
else:
    from aiplatform_ops.restore.extract import restore_file_backup
    manifest = store.list_backups()[-1]
    report = restore_file_backup(store.backup_dir(manifest.backup_id), manifest, Path(target), root=tree)
    out = {"files": report.files, "verified": report.verified}
out["seconds"] = time.perf_counter() - started
out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def generate_tree(root: Path) -> int:
    rng = random.Random(42)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 11))) for _ in range(5000)]
    corpus = "\n".join(
        json.dumps({"id": i, "dataset": rng.choice(words), "text": " ".join(rng.choices(words, k=12)),
                    "score": round(rng.random(), 6), "labels": rng.choices(range(100), k=5)})
        for i in range(60_000)
    ).encode()
    total = 0
    for i in range(SMALL_FILES):
        folder = root / f"datasets/ds-{i % 200:03d}"
        if i < 200:
            folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1_000, 25_000)
        start = rng.randrange(0, len(corpus) - size)
        data = corpus[start:start + size]
        (folder / f"sample-{i:06d}.json").write_bytes(data)
        total += size
    models = root / "models"
    models.mkdir()
    for n in range(2):
        with open(models / f"train-{n}.log", "wb") as out:
            written = 0
            while written < 180_000_000:
                start = rng.randrange(0, len(corpus) - 4_000_000)
                out.write(corpus[start:start + 4_000_000])
                written += 4_000_000
            total += written
    with open(models / "weights.bin", "wb") as out:
        for _ in range(20):
            out.write(os.urandom(10_000_000))
        total += 200_000_000
    (root / "current-model").symlink_to("models/weights.bin")
    return total


def run_child(mode: str, tree: Path, store: Path, target: Path) -> dict:
    os.sync()
    result = subprocess.run([sys.executable, "-c", CHILD, str(REPO / "plugins"), mode, str(tree), str(store), str(target)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_shell(command: str) -> float:
    os.sync()
    started = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True)
    return time.perf_counter() - started


@pytest.mark.skipif(not shutil.which("zstd") or not shutil.which("tar"), reason="needs the zstd and tar CLIs")
def test_bench_file_backup_and_restore(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    started = time.perf_counter()
    total = generate_tree(tree)
    print(f"\ngenerated {total / 1e9:.2f} GB ({SMALL_FILES} small files + 3 large) in {time.perf_counter() - started:.0f}s")
    assert total >= 1_000_000_000

    baseline_file = tmp_path / "baseline.tar.zst"
    ours_backup, ours_restore, tar_backup, tar_restore = [], [], [], []
    for round_ in range(ROUNDS):
        baseline_file.unlink(missing_ok=True)
        tar_backup.append(run_shell(f"tar -cf - -C '{tmp_path}' tree | zstd -3 -q > '{baseline_file}'"))
        store = tmp_path / f"store-{round_}"
        ours_backup.append(run_child("backup", tree, store, tmp_path / "unused"))
        out = tmp_path / "tar-restored"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        tar_restore.append(run_shell(f"zstd -dcq '{baseline_file}' | tar -xf - -C '{out}'"))
        target = tmp_path / "restored"
        shutil.rmtree(target, ignore_errors=True)
        ours_restore.append(run_child("restore", tree, store, target))
        if round_ < ROUNDS - 1:
            shutil.rmtree(store)

    subprocess.run(["diff", "-r", "--no-dereference", str(tree), str(target)], check=True)
    best_backup = min(ours_backup, key=lambda r: r["seconds"])
    best_restore = min(ours_restore, key=lambda r: r["seconds"])
    assert best_restore["verified"] == best_backup["files"] == SMALL_FILES + 3

    backup_ratio = best_backup["seconds"] / min(tar_backup)
    restore_ratio = best_restore["seconds"] / min(tar_restore)
    peak = max(r["max_rss_mb"] for r in ours_backup)
    print(f"tree: {total / 1e9:.2f} GB, {SMALL_FILES + 3} files")
    print(f"backup : ours {best_backup['seconds']:.2f}s ({best_backup['size'] / 1e6:.0f} MB in {best_backup['parts']} part(s)) "
          f"vs tar|zstd -3 {min(tar_backup):.2f}s ({baseline_file.stat().st_size / 1e6:.0f} MB) "
          f"-> ratio {backup_ratio:.2f} (goal <= 1.15)")
    print(f"memory : backup peak RSS {peak:.0f} MB (goal < 200 MB); "
          f"restore peak RSS {max(r['max_rss_mb'] for r in ours_restore):.0f} MB")
    print(f"restore: ours {best_restore['seconds']:.2f}s (every file's sha256 checked) "
          f"vs zstd -dc|tar -x {min(tar_restore):.2f}s -> ratio {restore_ratio:.2f} (goal <= 1.25)")
    print(f"all runs: ours backup {[round(r['seconds'], 2) for r in ours_backup]}, tar {[round(t, 2) for t in tar_backup]}; "
          f"ours restore {[round(r['seconds'], 2) for r in ours_restore]}, tar {[round(t, 2) for t in tar_restore]}")
