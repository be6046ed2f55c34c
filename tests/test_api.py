"""The public Python API: `from galmerge import ...` without torch, warnings through Python's
`warnings`, shipped models as package data, and docs/api.md's examples run as written."""

from __future__ import annotations

import importlib.resources
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

import galmerge
from galmerge import ClassifyOptions, GalmergeWarning, classify_catalog
from galmerge.inference.pipeline import model_search_path, resolve_model
from tests.conftest import ROOT

EXAMPLE = ROOT / "catalogs" / "sdss_example"


def test_public_names_without_torch() -> None:
    code = ("import sys, galmerge\n"
            "from galmerge import classify_catalog, ClassifyOptions, OnnxClassifier, simulate\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "from galmerge import train, export_onnx, TrainConfig\n"
            "import galmerge.training.trainer as t, galmerge.export as e\n"
            "assert train is t.train and export_onnx is e.export_onnx\n"
            "assert 'torch' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_every_public_name_resolves_and_unknown_names_fail() -> None:
    for name in galmerge.__all__:
        assert getattr(galmerge, name) is not None, name
    assert set(galmerge.__all__) <= set(dir(galmerge))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = galmerge.nothing  # type: ignore[attr-defined]


def test_run_warnings_are_python_warnings_and_stay_in_the_summary(tmp_path: Path) -> None:
    cat = pd.read_csv(EXAMPLE / "sdss_example.csv", dtype=str).head(4)
    cat["file_loc"] = [str(EXAMPLE / f) for f in cat["file_loc"]]
    cat["p_merger"] = "0.5"  # clashes with a result column: renamed, with a warning
    path = tmp_path / "clash.csv"
    cat.to_csv(path, index=False)
    with pytest.warns(GalmergeWarning, match="renamed 'p_merger_input'"):
        summary = classify_catalog(path, output=tmp_path / "out.csv",
                                   options=ClassifyOptions(batch_size=4))
    assert any("renamed 'p_merger_input'" in w for w in summary.warnings)
    assert "p_merger_input" in pd.read_csv(tmp_path / "out.csv").columns


def test_shipped_models_are_package_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GALMERGE_MODELS", raising=False)
    package_models = Path(str(importlib.resources.files("galmerge") / "models"))
    assert package_models in model_search_path()
    default = resolve_model(None)
    assert default.parent == package_models and default.name == "deepmerge-sdss.onnx"
    # the wheel carries every file of galmerge/models/ (pyproject package-data globs)
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["galmerge"]
    shipped = {p.name for p in package_models.iterdir()}
    covered = {p.name for g in globs for p in (ROOT / "galmerge").glob(g)}
    assert shipped == covered and "deepmerge-sdss.onnx" in shipped
    # `models/` of a checkout is the same folder (README paths keep working)
    assert (ROOT / "models").resolve() == package_models.resolve()


def _api_examples() -> list[str]:
    text = (ROOT / "docs" / "api.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_api_document_runs_as_written(tmp_path: Path) -> None:
    """Every Python block of docs/api.md, in order, in a fresh interpreter whose working
    directory holds the repository's catalogues (so the README paths resolve)."""
    blocks = _api_examples()
    assert len(blocks) == 4
    (tmp_path / "catalogs").symlink_to(ROOT / "catalogs")
    script = tmp_path / "api_examples.py"
    script.write_text("\n\n".join(blocks))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GALMERGE_MODELS", None)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "23 of 24 rows classified" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "flux-linear"
