"""``python -m n3f`` runs the command-line interface."""

from n3f.cli import main

if __name__ == "__main__":
    main()
