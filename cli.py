"""Run trace2skill from a checkout: `python cli.py ARGS` is the `trace2skill` command."""

from trace2skill.cli import main

if __name__ == "__main__":
    main()
