"""``python -m anvil serve ...`` (and every other subcommand): runs the ``anvil`` CLI shipped in the package.

The wheel installs the CLI binary at anvil/bin/anvil; this replaces the Python process with it (os.execv), so
the server handles its own signals (SIGTERM/SIGINT drain and exit 0) exactly as ``anvil serve`` does.
Lookup order: the package's bin/anvil, then $ANVIL_BIN, then `anvil` on PATH.
"""
import os
import shutil
import sys


def find_cli() -> str:
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "anvil")
    for candidate in (here, os.environ.get("ANVIL_BIN", ""), shutil.which("anvil") or ""):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("the anvil CLI binary is not installed with this package (looked in "
                            f"{here}, $ANVIL_BIN and PATH)")


def main() -> None:
    try:
        cli = find_cli()
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if len(sys.argv) < 2:
        sys.argv.append("--help")
    os.execv(cli, [cli, *sys.argv[1:]])


if __name__ == "__main__":
    main()
