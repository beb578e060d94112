"""``python -m vbayes``: the ``vbayes`` command."""

from vbayes.cli import main

if __name__ == "__main__":
    main()
