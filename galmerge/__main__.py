"""Allow ``python -m galmerge``."""

from galmerge.cli import main

if __name__ == "__main__":
    main()
