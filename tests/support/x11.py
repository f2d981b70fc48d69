"""The client side of a desktop: an Xvfb screen, Debian's nxproxy, and what is on the screen."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Optional

from twisted.internet.defer import inlineCallbacks

from tests.support.paths import scratch_dir
from tests.support.processes import Child
from tests.support.waiting import poll_blocking


@inlineCallbacks
def start_xvfb(testcase, *extra: str):
    """Xvfb on a display it picks itself (``extra`` arguments added), stopped at cleanup;
    fires with ``:<n>`` once it is ready."""
    argv = ["/usr/bin/Xvfb", "-displayfd", "3", "-nolisten", "tcp", *extra]
    xvfb = Child(testcase, argv, {}, fd3=True, stop_signal="TERM")  # TERM: it removes its lock
    number = yield xvfb.protocol.fd3
    return ":" + number.decode().strip()


# twm places new windows itself (its default waits for a click, holding a server grab)
TWMRC = 'RandomPlacement\nUsePPosition "on"\nNoTitle\n'


@inlineCallbacks
def start_window_manager(testcase, display: str):
    """twm on ``display`` (stopped at cleanup), once it manages the screen: on a screen
    without a window manager nxagent goes fullscreen and ignores the size asked for."""
    home = scratch_dir(testcase)
    with open(os.path.join(home, ".twmrc"), "w") as f:
        f.write(TWMRC)
    twm = Child(testcase, ["/usr/bin/twm"], {"DISPLAY": display, "HOME": home})
    yield poll_blocking(lambda: subprocess.run(["xprop", "-root", "-display", display],
                                               capture_output=True, text=True).stdout,
                        lambda props: "_MIT_PRIORITY_COLORS" in props, 20, "twm managing " + display)
    return twm


def start_nxproxy(testcase, x_display: str, nx_display: int) -> Child:
    """The client side of NX (reference §5.4): ``nxproxy -S localhost:<nx display>``.
    Stopping it KILLs it, as a lost client link would."""
    home = scratch_dir(testcase)
    env = {"DISPLAY": x_display, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
    return Child(testcase, ["/usr/bin/nxproxy", "-S", f"localhost:{nx_display}"], env)


def window(display: str, name: str) -> Optional[tuple[int, int, int, int]]:
    """(x, y, width, height) of a window called ``name`` on ``display``, if there is one."""
    tree = subprocess.run(["xwininfo", "-root", "-tree", "-display", display],
                          capture_output=True, text=True).stdout
    for line in tree.splitlines():
        if f'"{name}"' in line:
            match = re.search(r"(\d+)x(\d+)\+-?\d+\+-?\d+\s+\+(-?\d+)\+(-?\d+)", line)
            if match:
                w, h, x, y = (int(v) for v in match.groups())
                if w > 1 and h > 1:
                    return x, y, w, h
    return None


def screenshot(display: str, region: tuple[int, int, int, int], path: str) -> set[str]:
    """Save the screen of ``display`` to ``path`` (PNG); the colours inside ``region``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    subprocess.run(["/usr/bin/import", "-display", display, "-window", "root", path], check=True)
    x, y, w, h = region
    histogram = subprocess.run(
        ["/usr/bin/convert", path, "-crop", f"{w}x{h}+{x}+{y}", "+repage", "-format", "%c",
         "histogram:info:-"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"#[0-9A-Fa-f]{6}", histogram))
