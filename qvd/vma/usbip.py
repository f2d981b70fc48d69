"""USB devices of the client attached in the VM over the slave channel (USB/IP).

The client exports a device with its kernel's ``usbip-host`` driver on a
slave channel and sends one line ``<devid> <speed>``; the VM's ``vhci-hcd``
driver takes the other end of that channel as the device's link (the
kernel's ``attach`` file: ``<port> <socket fd> <devid> <speed>``).  Both
need USB/IP in the kernel and root; where it is missing, the request gets
a 501 saying so, and the session goes on without the device.
"""

from __future__ import annotations

import os
from typing import Optional

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

log = Logger()

PROTOCOL = "qvd:usbip/1.0"
VHCI = "/sys/devices/platform/vhci_hcd.0"
SUPER_SPEED = 5  # enum usb_device_speed: ports of the "ss" hub take these
MAX_LINE = 64


def unavailable(vhci: str = VHCI) -> Optional[str]:
    """Why a device cannot be attached here, or None."""
    if not os.path.exists(os.path.join(vhci, "attach")):
        return ("USB forwarding needs USB/IP in the virtual machine's kernel"
                " (the vhci-hcd module: modprobe vhci-hcd).")
    if os.geteuid() != 0:
        return "USB forwarding needs the VMA to run as root (it attaches devices)."
    return None


def free_port(status: str, speed: int) -> Optional[int]:
    """A free port of the right hub in vhci-hcd's ``status`` file (state 004 = free)."""
    hub = "ss" if speed >= SUPER_SPEED else "hs"
    for line in status.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[0] == hub and fields[2] == "004":
            return int(fields[1])
    return None


class Attach(Protocol):
    """After 101: reads ``<devid> <speed>``, then gives the channel to vhci-hcd."""

    def __init__(self, vhci: str = VHCI):
        self.vhci = vhci
        self._line = b""

    def dataReceived(self, data: bytes) -> None:
        self._line += data
        if b"\n" not in self._line:
            if len(self._line) > MAX_LINE:
                self.transport.loseConnection()
            return
        self.transport.pauseProducing()  # from now on the kernel reads this socket
        try:
            devid, speed = (int(v) for v in self._line.split(b"\n", 1)[0].split())
            with open(os.path.join(self.vhci, "status")) as f:
                port = free_port(f.read(), speed)
            if port is None:
                raise OSError("no free virtual USB port")
            with open(os.path.join(self.vhci, "attach"), "w") as f:
                f.write(f"{port} {self.transport.fileno()} {devid} {speed}")
        except (OSError, ValueError) as e:
            log.warn("cannot attach the client's USB device: {error}", error=e)
            self.transport.loseConnection()
            return
        log.info("client USB device {devid} attached on port {port}", devid=devid, port=port)
