"""`python -m kdlab ...` entry point."""

from kdlab.cli import main

if __name__ == "__main__":
    main()
