"""``qvd-di build --flavour lxc|kvm [--packages P,...] [--mirror URL] [--cache DIR] OUT``"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from qvd.di import builder, recipe


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="qvd-di", description="Debian desktop images for QVD")
    commands = top.add_subparsers(dest="command", required=True)
    build = commands.add_parser(
        "build", help="build a DI with this project's VMA, nxagent and a light desktop")
    build.add_argument("--flavour", required=True, choices=recipe.FLAVOURS,
                       help="lxc: a root file system tarball; kvm: a qcow2 disk that boots"
                            " without a bootloader prompt")
    build.add_argument("--packages", default="",
                       help="more Debian packages, comma-separated (e.g. a browser)")
    build.add_argument("--mirror", default="",
                       help="Debian mirror (default: the one this node's apt uses)")
    build.add_argument("--cache", default=builder.DEFAULT_CACHE,
                       help=f"where base file systems are kept (default {builder.DEFAULT_CACHE})")
    build.add_argument("out", help="the DI file to write (lxc: .tar, .tar.gz, ...; kvm: .qcow2)")
    return top


def main(argv: Optional[Sequence[str]] = None) -> int:
    options = parser().parse_args(argv)
    try:
        out = builder.build(options.flavour, options.out, options.packages.split(","),
                            options.mirror, options.cache,
                            lambda line: print(f"qvd-di: {line}", file=sys.stderr, flush=True))
    except builder.BuildError as e:
        print(f"qvd-di: {e}", file=sys.stderr)
        return 1
    print(f"{out} ({os.path.getsize(out) // (1024 * 1024)} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
