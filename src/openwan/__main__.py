"""`python -m openwan ...` (what torchrun launches)."""

from openwan.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
