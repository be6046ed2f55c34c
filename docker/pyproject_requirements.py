"""Print galmerge's runtime requirements for one extra, one per line (used by the Dockerfile).

    python3 pyproject_requirements.py pyproject.toml gpu > requirements.txt

Installing the dependencies from pyproject.toml alone lets the image build
reuse that (slow) layer while only galmerge's sources change. Standard
library only: it runs in the bare build stage.
"""

import sys
import tomllib

ALTERNATIVE_EXTRAS = ("cpu", "gpu")


def main(path: str, extra: str) -> None:
    if extra not in ALTERNATIVE_EXTRAS:
        sys.exit(f"GALMERGE_EXTRA must be one of {ALTERNATIVE_EXTRAS}, not {extra!r}")
    with open(path, "rb") as fh:
        project = tomllib.load(fh)["project"]
    print("\n".join([*project["dependencies"], *project["optional-dependencies"][extra]]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
