"""Print galmerge's runtime requirements for the given extras, one per line (for the Dockerfile).

    python3 pyproject_requirements.py pyproject.toml gpu dask > requirements.txt

The first extra must be the ONNX Runtime build, ``cpu`` or ``gpu`` (never
both); further extras (e.g. ``dask``) are added. Installing the dependencies
from pyproject.toml alone lets the image build reuse that (slow) layer while
only galmerge's sources change. Standard library only: it runs in the bare
build stage.
"""

import sys
import tomllib

ALTERNATIVE_EXTRAS = ("cpu", "gpu")


def main(path: str, runtime: str, *extras: str) -> None:
    if runtime not in ALTERNATIVE_EXTRAS:
        sys.exit(f"GALMERGE_EXTRA must be one of {ALTERNATIVE_EXTRAS}, not {runtime!r}")
    with open(path, "rb") as fh:
        project = tomllib.load(fh)["project"]
    optional = project["optional-dependencies"]
    lines = list(project["dependencies"])
    for extra in (runtime, *extras):
        if extra in ALTERNATIVE_EXTRAS and extra != runtime:
            sys.exit(f"extras {runtime!r} and {extra!r} exclude each other")
        if extra not in optional:
            sys.exit(f"no extra {extra!r} in {path}")
        lines += optional[extra]
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
