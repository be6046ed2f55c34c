"""Domain adaptation on the simulator's sim->sim pair, shaped like the paper's Table 1.

Trains DeepMerge five times — no adaptation, MMD, MMD + Fisher + entropy, DANN,
DANN + Fisher + entropy — each with the matching Table A2 preset, on the
simulator's default pristine source / noisy target pair, and prints source and
target test AUC, accuracy, precision, recall, F1 and Brier score, run times,
and whether the issue's bar is met (DA raises target accuracy by >= 10 points
over no adaptation; source accuracy stays within 5 points).

Model selection uses only source-validation labels and unlabelled target
validation images (the trainer's ``auto`` criterion); target labels are used
only for the test metrics printed here.

Run it under the CPU lock:

    flock /tmp/galmerge-cpu.lock python benchmarks/domain_adaptation.py --write-docs

``--n`` and ``--epochs`` trade fidelity for time (the paper trains up to 200
epochs with patience 20 on ~6000 images per domain; here the epochs are capped
so the five runs fit in about 30 minutes on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = (
    ("No Domain Adaptation", "paper-simsim-noda"),
    ("MMD", "paper-simsim-mmd"),
    ("MMD + Fisher + Entropy", "paper-simsim-mmd-fisher-entropy"),
    ("Adversarial", "paper-simsim-dann"),
    ("Adv. + Fisher + Entropy", "paper-simsim-dann-fisher-entropy"),
)
METRICS = (("auc", "AUC"), ("accuracy", "Accuracy"), ("precision", "Precision"),
           ("recall", "Recall"), ("f1", "F1 score"), ("brier", "Brier score"))
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "domain-adaptation"


def cpu_model() -> str:
    """CPU model name and core count (lscpu), for the record."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                     if ln.startswith("Model name")), platform.processor())
    except (OSError, subprocess.CalledProcessError):
        name = platform.processor() or "unknown CPU"
    return f"{name}, {os.cpu_count()} cores"


def ensure_data(data: Path, n: int, seed: int) -> None:
    """Generate the simulator's default pair with ``galmerge simulate`` unless present."""
    if (data / "source.h5").is_file() and (data / "target.h5").is_file():
        return
    cmd = [sys.executable, "-m", "galmerge", "simulate", "--output", str(data), "--n", str(n),
           "--seed", str(seed)]
    print("generating:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def run_all(data: Path, out: Path, epochs: int, seed: int, only: list[str] | None
            ) -> list[dict[str, Any]]:
    """Train each configuration; return one record per run."""
    from galmerge.training.presets import build_config
    from galmerge.training.trainer import train

    results = []
    for label, preset in RUNS:
        if only and preset not in only:
            continue
        cfg = build_config(dict(source=data / "source.h5", target=data / "target.h5",
                                out=str(out / preset), epochs=epochs, seed=seed), preset)
        print(f"== {label} ({preset})", flush=True)
        t0 = time.perf_counter()
        res = train(cfg, log=lambda m: print("  " + m, flush=True), overwrite=True)
        results.append({"label": label, "preset": preset, "seconds": time.perf_counter() - t0,
                        "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
                        "metrics": res.metrics})
    return results


def _v(x: Any) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table shaped like Table 1 (DeepMerge columns), plus times."""
    lines = ["| Loss | Metric | Source | Target |", "|---|---|---|---|"]
    for r in results:
        m = r["metrics"]
        for i, (key, name) in enumerate(METRICS):
            lab = r["label"] if i == 0 else ""
            lines.append(f"| {lab} | {name} | {_v(m['source_test'][key])} | "
                         f"{_v(m['target_test'][key])} |")
        lines.append(f"| | Run time | {r['seconds']:.0f} s ({r['epochs_run']} epochs, best "
                     f"{r['best_epoch']}) | |")
    return "\n".join(lines)


def verdict(results: list[dict[str, Any]]) -> str:
    """The issue's bar, in words."""
    by = {r["preset"]: r["metrics"] for r in results}
    base = by.get("paper-simsim-noda")
    if base is None:
        return "no baseline run"
    s0, t0 = base["source_test"]["accuracy"], base["target_test"]["accuracy"]
    out = [f"No adaptation: source accuracy {s0:.3f}, target {t0:.3f} "
           f"(drop {100 * (s0 - t0):.1f} points)."]
    for preset, m in by.items():
        if preset == "paper-simsim-noda":
            continue
        ds = 100 * (m["source_test"]["accuracy"] - s0)
        dt = 100 * (m["target_test"]["accuracy"] - t0)
        ok = dt >= 10 and abs(ds) <= 5
        out.append(f"{preset}: target {dt:+.1f} points, source {ds:+.1f} points -> "
                   f"{'meets' if ok else 'misses'} the bar (target >= +10, |source| <= 5).")
    return "\n".join(out)


def write_docs(text: str) -> None:
    """Replace this benchmark's section of docs/benchmarks.md."""
    doc = DOC.read_text()
    start, end = f"<!-- section: {SECTION} -->", f"<!-- end section: {SECTION} -->"
    i, j = doc.index(start) + len(start), doc.index(end)
    DOC.write_text(doc[:i] + "\n" + text.rstrip() + "\n" + doc[j:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "runs" / "bench-sim",
                    help="directory with source.h5/target.h5 (generated if missing)")
    ap.add_argument("--n", type=int, default=6000,
                    help="images per domain to simulate (the simulator default)")
    ap.add_argument("--epochs", type=int, default=20, help="maximum epochs per run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-da")
    ap.add_argument("--only", nargs="*", help="preset names to run (default: all five)")
    ap.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = ap.parse_args()

    import torch

    ensure_data(args.data, args.n, args.seed)
    t0 = time.perf_counter()
    results = run_all(args.data, args.out, args.epochs, args.seed, args.only)
    total = time.perf_counter() - t0
    machine = cpu_model()
    tab = table(results)
    ver = verdict(results)
    print()
    print(tab)
    print()
    print(ver)
    print(f"total {total / 60:.1f} min on {machine}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    if args.write_docs:
        cmd = (f"flock /tmp/galmerge-cpu.lock python benchmarks/domain_adaptation.py "
               f"--n {args.n} --epochs {args.epochs} --seed {args.seed} --write-docs")
        body = "\n".join([
            "## Domain adaptation (sim → sim), shaped like the paper's Table 1",
            "",
            f"Machine: {machine}; torch {torch.__version__} CPU, {torch.get_num_threads()} "
            f"threads; measured {datetime.date.today().isoformat()}. "
            f"Total {total / 60:.1f} min for the five runs.",
            "",
            f"Data: `galmerge simulate --n {args.n} --seed {args.seed}` (default settings: "
            "pristine source, noisy target, balanced classes, 70/10/20 split). DeepMerge, "
            "each run with its Table A2 preset, seed "
            f"{args.seed}, at most {args.epochs} epochs (the paper: up to 200 with patience "
            "20), batch 128 per domain. Best epoch chosen without target labels "
            "(source-validation loss; plus the validation source/target feature MMD for the "
            "DA runs). Test splits: 20% of each domain.",
            "",
            tab,
            "",
            "```",
            ver,
            "```",
            "",
            "Reading it: as in the paper (Table 1, DeepMerge: no DA 0.85 source / 0.58 target "
            "accuracy; MMD 0.87 / 0.77; adversarial 0.87 / 0.79), the source-only model keeps "
            "a high target AUC but its threshold is wrong for the noisy domain (here it calls "
            "almost every noisy image a merger; in the paper almost none), and MMD or DANN "
            "recover most of the target accuracy at no cost in source accuracy. Our source "
            "accuracies are higher than the paper's because the simulator's classes are "
            "easier to separate than Illustris mergers. The simulator's target holds the same "
            "galaxies as the source plus sky noise, with the same split (paper §4.1). Run "
            "times include contention from other jobs on the shared 2-core machine; a "
            "seeded rerun gives the same metrics.",
            "",
            f"Reproduce: `{cmd}`",
        ])
        write_docs(body)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
