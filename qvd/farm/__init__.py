"""``qvd-farm``: several QVD nodes on one machine, for tests and demos.

Each node lives in a network namespace of its own, with its own address on
a bridge of the farm's, its own HKD and L7R and its VMs on a network behind
it; one PostgreSQL serves them all as QVD-DB, and haproxy in front of the
L7Rs checks ``/qvd/ping`` as the manual describes.  ``network`` lays out
and builds the namespaces, ``farm`` starts and stops everything,
``janitor`` removes whatever a farm left when its owner died, ``sessions``
drives real NX sessions through it, ``cli`` is the command.
"""

import os

# The directory holding this ``qvd`` package: a farm's processes run this code.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_environment() -> dict[str, str]:
    """Our environment with ``PACKAGE_ROOT`` first on ``PYTHONPATH``, for the farm's
    daemons and its janitor."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return env


class FarmError(Exception):
    """The farm cannot be built or run; the message says why.  Every module of the
    package raises it, so it lives here rather than in any one of them."""
