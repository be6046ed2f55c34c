"""What an astronomer checks before trusting a package: licence, citation, honest dependencies,
and a bare install (no ONNX Runtime extra) that says what to install instead of crashing."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from galmerge import __version__
from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_licence_file_matches_the_declared_licence() -> None:
    declared = PYPROJECT["project"]["license"]["text"]
    assert declared == "BSD-3-Clause"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "Neither the name of the copyright holder" in text  # clause 3


def test_citation_cites_galmerge_and_deepmerge_ii() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["version"] == __version__
    assert cff["license"] == PYPROJECT["project"]["license"]["text"]
    paper = cff["preferred-citation"]
    assert paper["title"].startswith("DeepMerge II")
    assert paper["authors"][0]["family-names"] == "Ćiprijanović" and paper["year"] == 2021


def test_core_dependencies_are_the_ones_the_package_imports() -> None:
    core = " ".join(PYPROJECT["project"]["dependencies"])
    assert "astroquery" not in core  # only a test uses it
    sources = "\n".join(p.read_text() for p in (ROOT / "galmerge").rglob("*.py"))
    assert "import astroquery" not in sources and "from astroquery" not in sources


BLOCK_ORT = """
import sys
from importlib.abc import MetaPathFinder

class NoOnnxRuntime(MetaPathFinder):  # a bare install: the [cpu]/[gpu] extra is missing
    def find_spec(self, name, path=None, target=None):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ModuleNotFoundError("No module named 'onnxruntime'", name=name)
        return None

sys.meta_path.insert(0, NoOnnxRuntime())
sys.argv = ["galmerge", *sys.argv[1:]]
from galmerge.cli import main
main()
"""


def test_a_bare_install_names_the_extra_in_one_line(tmp_path: Path) -> None:
    """`pip install galmerge` without an extra has no ONNX Runtime. A fresh venv is slow and
    needs the wheel cache, so the missing runtime is simulated by an import blocker in a
    child process; everything else is the real CLI on the bundled example."""
    cat = ROOT / "catalogs" / "sdss_example" / "sdss_example.csv"
    proc = subprocess.run([sys.executable, "-c", BLOCK_ORT, "classify", "--quiet", "--catalog",
                           str(cat), "--output", str(tmp_path / "o.csv")],
                          capture_output=True, text=True, cwd=ROOT, check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "galmerge[cpu]" in err and "galmerge[gpu]" in err
    assert not (tmp_path / "o.csv").exists()
