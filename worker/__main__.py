"""``python -m worker`` is the same as the ``geocatalog-worker`` console script."""

from worker.cli import main

if __name__ == "__main__":
    main()
