"""``python -m tornado_gw``: see ``tornado_gw.cli``."""

from tornado_gw.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
