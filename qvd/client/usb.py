"""USB devices of this machine in the VM (``--usb DEVICE``, ``client.usb.*``): USB/IP.

For each device, once the session is up: bind it to the kernel's
``usbip-host`` driver, open a slave channel with ``POST /usbip``
(``Upgrade: qvd:usbip/1.0``), give the channel's socket to the driver
(``usbip_sockfd``) and tell the VM ``<devid> <speed>``; the VM's
``vhci-hcd`` takes the other end (``qvd.vma.usbip``).  This needs USB/IP
in this machine's kernel and root; where either is missing the user is
told so at once, and the session goes on without the devices.
"""

from __future__ import annotations

import os
from typing import Any, Generator, Optional

from twisted.internet import defer, threads
from twisted.logger import Logger

from qvd.client.shares import ShareRefused, upgrade

log = Logger()

PROTOCOL = "qvd:usbip/1.0"
USBIP_HOST = "/sys/bus/usb/drivers/usbip-host"
DEVICES = "/sys/bus/usb/devices"
# the kernel's enum usb_device_speed, by the Mb/s its "speed" file shows
SPEEDS = {"1.5": 1, "12": 2, "480": 3, "5000": 5, "10000": 6, "20000": 6}


def unavailable(driver: str = USBIP_HOST) -> Optional[str]:
    """Why no device can be exported from here, or None."""
    if not os.path.isdir(driver):
        return ("USB forwarding is off: this machine's kernel has no USB/IP support"
                " (load it with: modprobe usbip-host).")
    if os.geteuid() != 0:
        return "USB forwarding is off: exporting a device needs root."
    return None


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def find_busid(spec: str, devices: str = DEVICES) -> Optional[str]:
    """The bus id (``1-1.2``) of a device given as one or as ``vendor:product[@serial]``."""
    if ":" not in spec:
        return spec if os.path.isdir(os.path.join(devices, spec)) else None
    ids, _, serial = spec.partition("@")
    vendor, _, product = ids.lower().partition(":")
    for busid in sorted(os.listdir(devices)):
        base = os.path.join(devices, busid)
        if (_read(f"{base}/idVendor") == vendor and _read(f"{base}/idProduct") == product
                and (not serial or _read(f"{base}/serial") == serial)):
            return busid
    return None


def export(busid: str, descriptor: int, devices: str = DEVICES,
           driver: str = USBIP_HOST) -> str:
    """Bind ``busid`` to usbip-host and hand it the socket; the line for the VM."""
    base = os.path.join(devices, busid)
    if not os.path.exists(os.path.join(base, "usbip_sockfd")):
        with open(os.path.join(driver, "match_busid"), "w") as f:
            f.write(f"add {busid}")
        with open(os.path.join(driver, "bind"), "w") as f:
            f.write(busid)
    devid = (int(_read(f"{base}/busnum")) << 16) | int(_read(f"{base}/devnum"))
    speed = SPEEDS.get(_read(f"{base}/speed"), 3)
    with open(os.path.join(base, "usbip_sockfd"), "w") as f:
        f.write(str(descriptor))
    return f"{devid} {speed}\n"


class UsbForwarding:
    def __init__(self, reactor: Any, devices: list[str]):
        self.reactor = reactor
        self.devices = devices

    def start(self, port: int, key: str) -> defer.Deferred:
        return defer.DeferredList([self.forward(port, key, spec) for spec in self.devices])

    @defer.inlineCallbacks
    def forward(self, port: int, key: str, spec: str) -> Generator[Any, Any, None]:
        busid = yield threads.deferToThread(find_busid, spec)
        if busid is None:
            log.warn("USB device {spec} not found on this machine.", spec=spec)
            return
        try:
            connection, _ = yield upgrade(self.reactor, port, key, "POST", "/usbip", PROTOCOL)
        except ShareRefused as e:
            log.warn("USB device {spec} not forwarded: {reason}", spec=spec,
                     reason=e.reply.text or e.reply.status)
            return
        transport = connection.transport
        transport.pauseProducing()  # the kernel reads this socket from now on
        try:
            line = yield threads.deferToThread(export, busid, transport.fileno())
        except (OSError, ValueError) as e:
            log.warn("USB device {spec} not forwarded: {error}", spec=spec, error=e)
            transport.loseConnection()
            return
        transport.write(line.encode("ascii"))
        log.info("USB device {spec} ({busid}) is forwarded to the desktop.", spec=spec,
                 busid=busid)
