"""``python -m bayesify``: the ``bayesify`` command, for environments without its script."""

from bayesify.cli import main

if __name__ == "__main__":
    main(prog_name="bayesify")
