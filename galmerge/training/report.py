"""Diagnostics of training runs: the paper's figures as PNGs plus a one-page HTML summary.

``build_report(rundir, ...)`` scores a run's checkpoint (and optionally other runs,
for comparison, e.g. noDA / MMD / TL+MMD as in the paper's Fig. 4) on a source and a
target dataset and writes, in ``rundir/report/`` (or ``out``):

* ``roc.png`` — ROC curves, source dashed and target solid (Fig. 3/4, right);
* ``metrics.png`` — accuracy, precision, recall, F1, Brier and AUC bars, source
  hatched and target solid (Fig. 3/4, left);
* ``histograms.png`` — output-score histograms per class and domain (Fig. B1/B2);
* ``tsne.png`` — t-SNE of the latent features coloured by domain and by class (Fig. 5);
* ``gradcam.png`` — Grad-CAM maps of example mergers in both domains, for the merger
  and the non-merger class (Fig. 6/7);
* ``curves.png`` — the training curves from ``history.csv``;
* ``report.html`` — all of the above with the metrics table;
* ``report.json`` — the metrics behind the figures.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from galmerge.conventions import FLUX_LINEAR
from galmerge.data.dataset import Dataset, open_dataset
from galmerge.errors import GalmergeError
from galmerge.training.checkpoint import Checkpoint, load_checkpoint
from galmerge.training.data import DomainSplit
from galmerge.training.metrics import binary_metrics, bootstrap_ci, roc_points
from galmerge.training.trainer import predict, resolve_device

__all__ = [
    "DOMAIN_COLOURS",
    "METRIC_NAMES",
    "RUN_COLOURS",
    "DataChoice",
    "DomainScores",
    "RunScores",
    "build_report",
    "display_rgb",
    "grad_cam",
    "score_domain",
]

METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "brier", "auc")
DOMAIN_COLOURS = {"source": "#e69f00", "target": "#0072b2"}
RUN_COLOURS = ("#1b2a6b", "#7b3294", "#e6a700", "#d6604d", "#4dac26", "#2c7bb6")


@dataclass
class DomainScores:
    """One run scored on one domain's split."""

    domain: str
    data: str
    split: str
    labels: np.ndarray
    probs: np.ndarray
    features: np.ndarray | None
    feature_labels: np.ndarray | None
    metrics: dict[str, Any] | None
    ci95: dict[str, list[float]] | None = None
    note: str = ""


@dataclass
class RunScores:
    """A run and its scores on both domains."""

    name: str
    rundir: Path
    checkpoint: Checkpoint
    domains: dict[str, DomainScores] = field(default_factory=dict)


@dataclass
class DataChoice:
    """Which data a domain is scored on."""

    path: str
    labels: str | None
    split: str
    crop_fraction: float | None = None


def _resolve_data(ck: Checkpoint, domain: str, override: DataChoice | None,
                  split: str) -> DataChoice:
    if override is not None:
        return override
    cfg = ck.config.get(domain) or {}
    if not cfg.get("path"):
        raise GalmergeError(f"{ck.path}: the run records no {domain} dataset",
                            hint=f"pass --{domain}-data")
    return DataChoice(str(cfg["path"]), cfg.get("labels"), split, cfg.get("crop_fraction"))


def _open_for(ck: Checkpoint, domain: str, choice: DataChoice) -> Dataset:
    conv = ck.conventions.get(domain)
    size = conv.size if conv else 75
    crop = choice.crop_fraction if choice.crop_fraction is not None else (
        conv.crop_fraction if conv else 1.0)
    return open_dataset(choice.path, labels=choice.labels, size=size, crop_fraction=crop)


def score_domain(
    ck: Checkpoint, domain: str, choice: DataChoice, device: torch.device, *,
    features_max: int, bootstrap: int, seed: int, batch_size: int = 256,
) -> tuple[DomainScores, Dataset, np.ndarray]:
    """Score one run on one domain; returns the scores, the open dataset and the indices."""
    ds = _open_for(ck, domain, choice)
    idx = ds.indices(choice.split)
    if domain not in ck.normalisation:
        raise GalmergeError(f"{ck.path}: has no normalisation for the {domain} domain")
    part = DomainSplit(ds, idx, ck.normalisation[domain], max_in_memory_mb=1024)
    model = ck.build(device)
    with torch.no_grad():
        _, probs, feats = predict(model, part, device, batch_size, features_max=len(idx))
    labels = ds.labels[idx].astype(np.int64)
    known = labels >= 0
    metrics = ci = None
    note = ""
    if known.sum() and len(np.unique(labels[known])) == 2:
        metrics = binary_metrics(labels[known], probs[known])
        if bootstrap:
            iv = bootstrap_ci(labels[known], probs[known], n_boot=bootstrap, seed=seed)
            ci = {k: [v.low, v.high] for k, v in iv.items()}
    else:
        note = f"{choice.path} split {choice.split!r} has no labels of both classes: no metrics"
    feat_np = feat_lab = None
    if feats is not None:
        sub = np.arange(len(idx))
        if len(sub) > features_max:
            sub = np.sort(np.random.default_rng(seed).choice(len(sub), features_max,
                                                             replace=False))
        feat_np, feat_lab = feats.numpy()[sub], labels[sub]
    scores = DomainScores(domain, choice.path, choice.split, labels, probs, feat_np, feat_lab,
                          metrics, ci, note)
    return scores, ds, idx


# --- Grad-CAM -------------------------------------------------------------------------

def _last_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise GalmergeError("Grad-CAM needs a convolutional model")
    return convs[-1]


def grad_cam(model: nn.Module, images: torch.Tensor, target_class: int) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] for ``target_class`` (Selvaraju et al. 2020).

    Channel weights are the spatial means of the class logit's gradients at the last
    convolution; the map is ReLU of the weighted activation sum, upsampled to the
    input size and divided by its maximum (as the paper's ``grad_cam.py``, conv3).
    """
    layer = _last_conv(model)
    store: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        store["act"] = out

    handle = layer.register_forward_hook(hook)
    try:
        model.eval()
        x = images.clone().requires_grad_(False)
        with torch.enable_grad():
            logits = model(x)
            model.zero_grad(set_to_none=True)
            logits[:, target_class].sum().backward()
        act = store["act"]
        grad = act.grad
        assert grad is not None
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * act).sum(dim=1, keepdim=True))
        cam = torch.nn.functional.interpolate(cam, size=images.shape[-2:], mode="bilinear",
                                              align_corners=False)[:, 0]
        peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)
        return (cam / peak[:, None, None]).detach().cpu().numpy()
    finally:
        handle.remove()


def display_rgb(raw: np.ndarray, pixel_convention: str) -> np.ndarray:
    """(C, H, W) pixels -> (H, W, 3) floats in [0, 1] for plotting.

    8-bit colour pixels are shown as they are; linear flux with a per-image asinh
    stretch (the paper shows its noiseless simulations with a log colour map).
    """
    img = np.moveaxis(raw[:3], 0, -1).astype(np.float64)
    if pixel_convention != FLUX_LINEAR and img.max() > 1.5:
        return np.clip(img / 255.0, 0, 1)
    lo = np.percentile(img, 1)
    img = np.arcsinh(np.clip(img - lo, 0, None) / max(np.std(img), 1e-12) * 3)
    return np.clip(img / max(np.percentile(img, 99.8), 1e-12), 0, 1)


# --- the report ------------------------------------------------------------------------

def build_report(
    rundir: str | Path, *, compare: list[str | Path] | None = None,
    names: list[str] | None = None,
    source_data: DataChoice | None = None, target_data: DataChoice | None = None,
    out: str | Path | None = None, device: str = "auto", tsne_per_domain: int = 300,
    gradcam_examples: int = 4, bootstrap: int = 200, seed: int = 0,
    own_splits: dict[str, str] | None = None,
) -> Path:
    """Write the diagnostic figures and ``report.html`` for a run; returns the HTML path.

    Args:
        rundir: a ``galmerge train`` output directory (``best.pt``, ``history.csv``, ...).
        compare: other run directories scored on the same data, drawn beside it.
        names: legend names for ``rundir`` and ``compare`` (default: directory names).
        source_data, target_data: data to score instead of the run's own (test split).
        out: output directory (default ``rundir/report``).
        tsne_per_domain: latent vectors per domain in the t-SNE.
        gradcam_examples: mergers per domain shown in the Grad-CAM figure.
        bootstrap: resamples for the 95% intervals in the table (0 = none).
        own_splits: split scored when a run's own data is used (default ``test``).
    """
    import matplotlib

    matplotlib.use("Agg")

    runs_dirs = [Path(rundir), *[Path(c) for c in (compare or [])]]
    if names and len(names) != len(runs_dirs):
        raise GalmergeError(f"--name given {len(names)} times for {len(runs_dirs)} runs")
    out_dir = Path(out) if out else Path(rundir) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    torch.manual_seed(seed)

    runs: list[RunScores] = []
    kept: dict[str, tuple[Dataset, np.ndarray]] = {}
    try:
        for i, rd in enumerate(runs_dirs):
            ck_path = rd / "best.pt" if rd.is_dir() else rd
            ck = load_checkpoint(ck_path)
            run = RunScores(names[i] if names else rd.name, rd, ck)
            for dom, override in (("source", source_data), ("target", target_data)):
                choice = _resolve_data(ck, dom, override,
                                       (own_splits or {}).get(dom, "test"))
                sc, ds, idx = score_domain(ck, dom, choice, dev, features_max=tsne_per_domain,
                                           bootstrap=bootstrap, seed=seed)
                run.domains[dom] = sc
                if i == 0:
                    kept[dom] = (ds, idx)
                else:
                    ds.close()
            runs.append(run)

        figures = {
            "roc": _plot_roc(runs, out_dir / "roc.png"),
            "metrics": _plot_metric_bars(runs, out_dir / "metrics.png"),
            "histograms": _plot_histograms(runs, out_dir / "histograms.png"),
            "tsne": _plot_tsne(runs[0], out_dir / "tsne.png", seed),
            "gradcam": _plot_gradcam(runs[0], kept, dev, out_dir / "gradcam.png",
                                     gradcam_examples),
            "curves": _plot_curves(runs[0], out_dir / "curves.png"),
        }
    finally:
        for ds, _ in kept.values():
            ds.close()

    summary = {
        run.name: {
            dom: {"data": sc.data, "split": sc.split, "n": len(sc.labels),
                  "metrics": sc.metrics, "ci95": sc.ci95, "note": sc.note}
            for dom, sc in run.domains.items()
        } for run in runs
    }
    (out_dir / "report.json").write_text(json.dumps(summary, indent=2, default=float))
    page = _html(runs, figures, summary)
    path = out_dir / "report.html"
    path.write_text(page)
    return path


def _save(fig: Any, path: Path) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def _plot_roc(runs: list[RunScores], path: Path) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i, run in enumerate(runs):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        for dom, style in (("source", "--"), ("target", "-")):
            sc = run.domains[dom]
            if sc.metrics is None:
                continue
            known = sc.labels >= 0
            fpr, tpr = roc_points(sc.labels[known], sc.probs[known])
            ax.plot(fpr, tpr, style, color=colour,
                    label=f"{run.name} {dom} (AUC {sc.metrics['auc']:.2f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("ROC: source dashed, target solid")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _plot_metric_bars(runs: list[RunScores], path: Path) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    n = len(runs)
    width = 0.8 / (2 * n)
    x = np.arange(len(METRIC_NAMES))
    for i, run in enumerate(runs):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        for j, dom in enumerate(("source", "target")):
            m = run.domains[dom].metrics
            if m is None:
                continue
            vals = [float(m[k]) if m[k] is not None else np.nan for k in METRIC_NAMES]
            off = (2 * i + j - n + 0.5) * width
            ax.bar(x + off, vals, width, color=colour, alpha=0.55 if dom == "source" else 1.0,
                   hatch="//" if dom == "source" else None, edgecolor="white",
                   label=f"{run.name} {dom}")
    ax.set_xticks(x, [k.capitalize() if k != "auc" else "AUC" for k in METRIC_NAMES])
    ax.set_ylim(0, 1)
    ax.set_title("Test metrics: source hatched, target solid")
    ax.legend(fontsize=7, ncol=max(1, n), loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def _plot_histograms(runs: list[RunScores], path: Path) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 2, figsize=(8, 2.4 * len(runs)), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for r, run in enumerate(runs):
        for c, dom in enumerate(("source", "target")):
            ax = axes[r, c]
            sc = run.domains[dom]
            if sc.metrics is None:
                ax.hist(sc.probs, bins=bins, color="grey", label="unlabelled")
            else:
                ax.hist(sc.probs[sc.labels == 1], bins=bins, alpha=0.7, color="#3b0f70",
                        label="mergers")
                ax.hist(sc.probs[sc.labels == 0], bins=bins, alpha=0.6, color="#f1c40f",
                        label="non-mergers")
            ax.set_title(f"{run.name}: {dom}", fontsize=9)
            ax.set_xlim(0, 1)
            if r == len(runs) - 1:
                ax.set_xlabel("p(merger)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _plot_tsne(run: RunScores, path: Path, seed: int) -> str:
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    feats, doms, labs = [], [], []
    for dom, sc in run.domains.items():
        if sc.features is None or sc.feature_labels is None:
            continue
        feats.append(sc.features)
        doms += [dom] * len(sc.features)
        labs.append(sc.feature_labels)
    x = np.concatenate(feats)
    lab = np.concatenate(labs)
    dom_arr = np.array(doms)
    perplexity = float(min(30, max(5, (len(x) - 1) // 4)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
               metric="cosine").fit_transform(x.astype(np.float64))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for dom, colour in DOMAIN_COLOURS.items():
        sel = dom_arr == dom
        axes[0].scatter(emb[sel, 0], emb[sel, 1], s=6, c=colour, label=dom, alpha=0.7)
    axes[0].set_title("latent features by domain")
    axes[0].legend(fontsize=8)
    markers = {"source": "o", "target": "^"}
    for dom in ("source", "target"):
        for val, colour, name in ((1, "#3b0f70", "merger"), (0, "#f1c40f", "non-merger"),
                                  (-1, "#bbbbbb", "unlabelled")):
            sel = (dom_arr == dom) & (lab == val)
            if sel.any():
                axes[1].scatter(emb[sel, 0], emb[sel, 1], s=7, c=colour, marker=markers[dom],
                                label=f"{dom} {name}", alpha=0.7)
    axes[1].set_title("latent features by class (o source, ^ target)")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def _plot_gradcam(run: RunScores, kept: dict[str, tuple[Dataset, np.ndarray]],
                  device: torch.device, path: Path, n_examples: int) -> str:
    import matplotlib.pyplot as plt

    model = run.checkpoint.build(device)
    columns: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, float, str]] = []
    for dom in ("source", "target"):
        ds, idx = kept[dom]
        sc = run.domains[dom]
        mergers = np.flatnonzero(sc.labels == 1)
        if len(mergers) == 0:
            mergers = np.argsort(-sc.probs)  # unlabelled: the most merger-like
        pick = mergers[:n_examples]
        raw = ds.read(idx[pick])
        x = torch.from_numpy(run.checkpoint.normalisation[dom].apply(raw)).to(device)
        cam_m = grad_cam(model, x, 1)
        cam_n = grad_cam(model, x, 0)
        for k in range(len(pick)):
            columns.append((dom, raw[k], cam_m[k], cam_n[k], float(sc.probs[pick[k]]),
                            ds.convention.pixel_convention))
    if not columns:
        raise GalmergeError("no images to show in the Grad-CAM figure")
    fig, axes = plt.subplots(3, len(columns), figsize=(1.9 * len(columns), 6), squeeze=False)
    for c, (dom, raw, cm, cn, p, conv) in enumerate(columns):
        rgb = display_rgb(raw, conv)
        axes[0, c].imshow(rgb)
        axes[0, c].set_title(f"{dom} p={p:.2f}", fontsize=8)
        for r, cam in ((1, cm), (2, cn)):
            axes[r, c].imshow(rgb)
            axes[r, c].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes[0, 0].set_ylabel("image")
    axes[1, 0].set_ylabel("merger CAM")
    axes[2, 0].set_ylabel("non-merger CAM")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Grad-CAM ({run.name}): true mergers, source then target", fontsize=10)
    return _save(fig, path)


def _plot_curves(run: RunScores, path: Path) -> str:
    import matplotlib.pyplot as plt

    hist_path = run.rundir / "history.csv"
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    if not hist_path.is_file():
        for ax in axes:
            ax.text(0.5, 0.5, "no history.csv", ha="center")
        return _save(fig, path)
    h = pd.read_csv(hist_path)
    ep = h["epoch"]
    for col in ("train_loss", "train_ce", "train_transfer", "train_fisher", "train_entropy",
                "val_source_loss"):
        if col in h and h[col].notna().any() and (h[col].abs() > 0).any():
            axes[0].plot(ep, h[col], label=col)
    axes[0].set_title("losses")
    axes[0].set_yscale("symlog", linthresh=1e-2)
    for col in ("train_source_acc", "val_source_acc", "monitor_target_val_acc",
                "train_domain_acc"):
        if col in h and h[col].notna().any():
            axes[1].plot(ep, h[col], label=col)
    axes[1].set_title("accuracy (monitor_* uses target labels: display only)")
    axes[1].set_ylim(0, 1)
    for col in ("val_criterion", "val_domain_mmd", "lr"):
        if col in h and h[col].notna().any():
            axes[2].plot(ep, h[col] / max(h[col].abs().max(), 1e-12), label=f"{col} (scaled)")
    if "is_best" in h:
        best = h.loc[h["is_best"].astype(bool), "epoch"]
        if len(best):
            for ax in axes:
                ax.axvline(best.iloc[-1], color="grey", ls=":", lw=1)
    axes[2].set_title("selection criterion, val MMD, LR")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _fmt(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"


def _html(runs: list[RunScores], figures: dict[str, str], summary: dict[str, Any]) -> str:
    rows = []
    for run in runs:
        for dom in ("source", "target"):
            s = summary[run.name][dom]
            m = s["metrics"] or {}
            ci = s["ci95"] or {}
            cells = []
            for k in METRIC_NAMES:
                txt = _fmt(m.get(k))
                if k in ci and ci[k] and m.get(k) is not None:
                    txt += f" <small>[{_fmt(ci[k][0])}, {_fmt(ci[k][1])}]</small>"
                cells.append(f"<td>{txt}</td>")
            cm = m.get("confusion_normalised")
            cm_txt = html.escape(json.dumps(cm)) if cm is not None else "–"
            rows.append(
                f"<tr><td>{html.escape(run.name)}</td><td>{dom}</td>"
                f"<td>{html.escape(Path(s['data']).name)} [{s['split']}] n={s['n']}</td>"
                + "".join(cells) + f"<td><small>{cm_txt}</small></td></tr>")
            if s["note"]:
                rows.append(f"<tr><td colspan=10><small>{html.escape(s['note'])}</small></td></tr>")
    cfgs = []
    for run in runs:
        c = run.checkpoint.config
        cfgs.append(
            f"<li><b>{html.escape(run.name)}</b>: arch {c.get('arch')}, method "
            f"{c.get('method')}, fisher {c.get('fisher')}, entropy {c.get('entropy')}, "
            f"init_from {html.escape(str(c.get('init_from')))}, best epoch "
            f"{run.checkpoint.epoch}, selection {c.get('selection')}</li>")
    imgs = "".join(
        f"<h2>{title}</h2><img src='{figures[key]}' style='max-width:100%'>"
        for key, title in (("roc", "ROC curves"), ("metrics", "Metrics"),
                           ("histograms", "Output-score histograms"),
                           ("tsne", "t-SNE of latent features"), ("gradcam", "Grad-CAM"),
                           ("curves", "Training curves")))
    head = "".join(f"<th>{'AUC' if k == 'auc' else k.capitalize()}</th>" for k in METRIC_NAMES)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>galmerge report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px}</style>"
        "</head><body><h1>galmerge training report</h1><ul>" + "".join(cfgs) + "</ul>"
        "<p>Merger = positive class (§6). Intervals: 95% bootstrap over images. "
        "Confusion matrices are [[TN, FP], [FN, TP]] rates by true class.</p>"
        "<table><tr><th>run</th><th>domain</th><th>data</th>" + head + "<th>confusion</th></tr>"
        + "".join(rows) + "</table>" + imgs + "</body></html>")
