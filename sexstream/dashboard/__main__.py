"""`python -m sexstream.dashboard [dashboard|plot|moc] ...`: the subcommands without the main CLI."""
import argparse
import sys

from sexstream.dashboard.commands import register


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments of one of the dashboard's subcommands and run it."""
    parser = argparse.ArgumentParser(prog="python -m sexstream.dashboard")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
