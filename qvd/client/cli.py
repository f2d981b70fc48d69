"""``qvd-client``: the command line of QVD's ``qvdclient`` binary, on Twisted.

    qvd-client -h HOST [-p PORT] -u USER -w PASS [-l [--json] | -o | --vm VM | ...]

Results (the VM list, a token, a ``--pipe`` stream) go to standard output;
progress (the L7R's ``X-QVD-VM-Info`` lines) and errors, one sentence each,
to standard error.  The exit status says what went wrong (``errors.Exit``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any, Callable, Generator, NoReturn, Optional, Sequence

from twisted.internet import defer, task
from twisted.logger import (
    FilteringLogObserver, LogLevel, LogLevelFilterPredicate, Logger, formatEvent,
    globalLogBeginner,
)
from twisted.python.failure import Failure

from qvd.client import display, session, usb
from qvd.client.channels import LocalChannels
from qvd.client.errors import ClientError, Exit, from_failure, from_reply
from qvd.client.l7r import L7RSession, Reply, open_session
from qvd.client.settings import Settings, load_client_config, resolve
from qvd.client.slave import version
from qvd.config import ConfigError

log = Logger(namespace="qvd.client.cli")  # also when run as python -m

ACTIONS = ("connect", "list", "stop", "token")
TAKEN_OVER = ("The server closed the session: another client has taken this virtual machine"
              " over (or an administrator disconnected or stopped it).")
CONNECTION_LOST = ("The connection to the server was lost (the server stopped, or the network"
                   " failed): connect again to resume the session.")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qvd-client", add_help=False,
        description="Log in to a QVD server, pick a virtual machine and show its desktop.",
        epilog="Configuration: ~/.qvd/client.conf over /etc/qvd/client.conf (client.* keys);"
               " environment QVDHOST, QVDLOGIN, QVDPASSWORD.")
    p.add_argument("action", nargs="?", choices=ACTIONS,
                   help="what to do (default: connect); same as -l, --kill-vm, --create-token")
    p.add_argument("-?", "--help", action="help", help="show this help and exit")
    p.add_argument("-v", "--version", action="store_true", help="show the version and exit")
    p.add_argument("-d", "--verbose", action="store_true",
                   help="debug output: HTTP statuses, nxproxy's log")
    p.add_argument("--config", metavar="FILE", help="client.conf to read instead of ~/.qvd's")
    server = p.add_argument_group("server and credentials")
    server.add_argument("-h", "--host", help="L7R host (client.host.name, $QVDHOST)")
    server.add_argument("-p", "--port", type=int, help="L7R port (client.host.port, 8443)")
    server.add_argument("-u", "--user", help="login, user[@tenant] (client.user.name, $QVDLOGIN)")
    server.add_argument("-w", "--password", help="password ($QVDPASSWORD; asked if missing)")
    server.add_argument("--otp", nargs="?", const="", metavar="CODE",
                        help="one-time code (TOTP) for servers that ask for one: appended to"
                             " the password; without CODE it is asked for")
    server.add_argument("--token", help="authenticate with this token (Bearer) instead")
    server.add_argument("--ca", metavar="FILE", help="CA certificate(s) to verify the server with")
    server.add_argument("-n", "--insecure", action="store_true",
                        help="do not verify the server's certificate")
    server.add_argument("-c", "--cert", metavar="FILE", help="client certificate (PEM)")
    server.add_argument("-k", "--key", metavar="FILE", help="client certificate's key (PEM)")
    what = p.add_argument_group("what to do")
    what.add_argument("-l", "--list", dest="list_only", action="store_true",
                      help="list the virtual machines and exit")
    what.add_argument("--json", action="store_true", help="with -l: the list as JSON")
    what.add_argument("--create-token", action="store_true",
                      help="print a new authentication token (for --token) and exit")
    what.add_argument("--kill-vm", "--stop-vm", dest="kill_vm", action="store_true",
                      help="stop the virtual machine instead of connecting")
    what.add_argument("-o", "--one", action="store_true",
                      help="use the first virtual machine of the list")
    what.add_argument("--vm", help="the virtual machine to use, by id or name")
    desktop = p.add_argument_group("desktop (default: asked of the local X server)")
    desktop.add_argument("-g", "--geometry", metavar="WxH", help="desktop size, e.g. 1024x768")
    desktop.add_argument("-f", "--fullscreen", action="store_true", default=None,
                         help="full screen")
    desktop.add_argument("--link", help="modem, isdn, adsl, wan, lan, local or e.g. 1m")
    desktop.add_argument("--keyboard", metavar="MODEL/LAYOUT", help="e.g. pc105/us")
    desktop.add_argument("-x", "--nx-options", metavar="OPTIONS",
                         help="nxproxy options, e.g. nx/nx,data=0,cache=16384:0")
    local = p.add_argument_group("this machine in the desktop")
    local.add_argument("--share", metavar="DIR", action="append",
                       help="show this folder in the desktop as ~/Redirected/<its name>"
                            " (repeatable; also client.share.N)")
    local.add_argument("--audio", action="store_true", default=None,
                       help="the desktop's sound on this machine's PulseAudio"
                            " (client.audio.enable)")
    local.add_argument("--usb", metavar="DEVICE", action="append",
                       help="forward this USB device (bus id or vendor:product[@serial];"
                            " repeatable; also client.usb.share_list)")
    stream = p.add_mutually_exclusive_group()
    stream.add_argument("--pipe", action="store_true",
                        help="no nxproxy: the raw session stream on stdin/stdout")
    stream.add_argument("--listen", metavar="PORT", type=int,
                        help="no nxproxy: serve the raw stream on 127.0.0.1:PORT (0: any)")
    return p


def action_of(args: argparse.Namespace) -> str:
    if args.list_only:
        return "list"
    if args.create_token:
        return "token"
    if args.kill_vm:
        return "stop"
    return args.action or "connect"


def _start_logging(verbose: bool) -> None:
    """Messages as plain lines on stderr: this is a user's command, not a daemon."""
    def write(event: dict) -> None:
        sys.stderr.write(formatEvent(event) + "\n")
        sys.stderr.flush()

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    predicate.setLogLevelForNamespace("qvd.client", LogLevel.debug if verbose else LogLevel.info)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(write, [predicate])],
                                     redirectStandardIO=False)


class Client:
    """One run: connect, authenticate, then list, create a token, stop or connect."""

    def __init__(self, reactor: Any, settings: Settings, args: argparse.Namespace):
        self.reactor = reactor
        self.settings = settings
        self.args = args
        self.where = f"{settings.host}:{settings.port}"
        self.nxproxy: Optional[session.NXProxy] = None
        self.relay: Optional[session.Relay] = None
        self.channels: Optional[LocalChannels] = None
        self.interrupted_by_signal = False
        self.finished = False  # the run ended by itself: the reactor stops for no signal
        self.said: Optional[str] = None  # the last progress line shown

    def expect(self, reply: Reply, status: int) -> Reply:
        if reply.status != status:
            raise from_reply(reply, bearer=bool(self.settings.token))
        return reply

    @defer.inlineCallbacks
    def run(self, action: str) -> Generator[Any, Any, Exit]:
        try:
            l7r = yield open_session(self.reactor, self.settings, self.progress)
        except Exception:
            raise from_failure(Failure(), self.where)
        try:
            return (yield self.act(l7r, action))
        except ClientError:
            raise
        except Exception:
            raise from_failure(Failure(), self.where)
        finally:
            l7r.close()

    def progress(self, text: str) -> None:
        """Show a progress line once: the L7R repeats the current one while it waits."""
        if text != self.said:
            self.said = text
            log.info("{text}", text=text)

    @defer.inlineCallbacks
    def act(self, l7r: L7RSession, action: str) -> Generator[Any, Any, Exit]:
        if action == "token":
            reply = self.expect((yield l7r.create_auth_token()), 200)
            print(str(reply.json()["auth_token"]).strip(), flush=True)
            return Exit.OK
        vms = self.expect((yield l7r.list_of_vm()), 200).json()
        if action == "list":
            self.print_vms(vms)
            return Exit.OK
        vm = self.choose(vms)
        if action == "stop":
            self.expect((yield l7r.stop_vm(vm["id"])), 200)
            log.info("Virtual machine {name} stopped.", name=vm["name"])
            return Exit.OK
        return (yield self.connect(l7r, vm))

    def print_vms(self, vms: list[dict[str, Any]]) -> None:
        if self.args.json:
            print(json.dumps(vms, indent=2), flush=True)
            return
        print(f"{'id':>6}  {'name':<24} {'state':<10} blocked")
        for vm in vms:
            blocked = "yes" if vm["blocked"] else "no"
            print(f"{vm['id']:>6}  {vm['name']:<24} {vm['state']:<10} {blocked}")
        sys.stdout.flush()

    def choose(self, vms: list[dict[str, Any]]) -> dict[str, Any]:
        wanted = self.args.vm
        if wanted is not None:
            for vm in vms:
                if str(vm["id"]) == wanted or vm["name"] == wanted:
                    return vm
            raise ClientError(f"You have no virtual machine {wanted!r}"
                              f" (yours: {', '.join(v['name'] for v in vms) or 'none'}).", Exit.VM)
        if not vms:
            raise ClientError("You have no virtual machine: ask your administrator.", Exit.VM)
        if len(vms) == 1 or self.args.one:
            return vms[0]
        names = ", ".join(f"{v['id']} {v['name']} ({v['state']})" for v in vms)
        raise ClientError(f"You have {len(vms)} virtual machines: choose one with --vm ID or NAME"
                          f" (or -o for the first): {names}.", Exit.USAGE)

    @defer.inlineCallbacks
    def connect(self, l7r: L7RSession, vm: dict[str, Any]) -> Generator[Any, Any, Exit]:
        s = self.settings
        found = yield display.detect(s.geometry is None, s.keyboard is None)
        s.geometry = s.geometry or found["geometry"]
        s.keyboard = s.keyboard or found["keyboard"]
        if s.usb:
            problem = usb.unavailable()
            if problem is not None:
                log.warn("{problem}", problem=problem)
                s.usb = []
        log.info("Connecting to virtual machine {name} (id {id})...", name=vm["name"], id=vm["id"])
        reply = self.expect((yield l7r.connect_to_vm(vm["id"])), 101)
        key = reply.headers.get("X-QVD-Slave-Key") or ""
        relay = self.relay = session.Relay(l7r.protocol)
        if (self.args.pipe or self.args.listen is not None) and (s.shares or s.audio or s.usb):
            log.warn("Shared folders, sound and USB devices need qvd-client's own nxproxy"
                     " (not --pipe or --listen): the session goes on without them.")
        if self.args.pipe:
            session.pipe(relay)
        elif self.args.listen is not None:
            yield session.serve(self.reactor, relay, self.args.listen, self.listening)
        else:
            if os.environ.get("DISPLAY") and s.xhost:
                yield display.allow_local_user(s.xhost, s.xhost_family)
            self.channels = LocalChannels(self.reactor, s, key)
            yield self.start_nxproxy(relay, self.channels)
        side = yield relay.ended
        return (yield self.finish(side))

    def listening(self, port: int) -> None:
        log.info("Session stream served on 127.0.0.1:{port}", port=port)

    @defer.inlineCallbacks
    def start_nxproxy(self, relay: session.Relay,
                      channels: LocalChannels) -> Generator[Any, Any, None]:
        def started(nxproxy: session.NXProxy) -> None:
            self.nxproxy = nxproxy

        options, env = yield channels.prepare()
        try:
            yield session.run_nxproxy(self.reactor, relay, self.settings, started, options, env,
                                      channels.nxproxy_line)
        except OSError as e:
            relay.close()
            yield self.close_channels()
            raise ClientError(f"Cannot run {self.settings.nxproxy}: {e.strerror or e}"
                              " (install Debian's nxproxy).", Exit.FAILED) from None
        except session.NXProxyFailed as e:
            relay.close()
            yield self.close_channels()
            raise ClientError(f"{e}: is $DISPLAY a usable X server?", Exit.FAILED,
                              "\n".join(e.nxproxy.tail)) from None
        log.info("Session started: the desktop shows on display {display}.",
                 display=os.environ.get("DISPLAY", "(none)"))

    @defer.inlineCallbacks
    def finish(self, side: str) -> Generator[Any, Any, Exit]:
        """Let nxproxy end (stop it if it does not) and say how the session ended."""
        nxproxy = self.nxproxy
        if nxproxy is not None:
            yield nxproxy.stop(self.reactor, grace=0 if self.interrupted_by_signal else 3)
            log.debug("nxproxy exited with status {code}", code=nxproxy.code)
        yield self.close_channels()
        if self.interrupted_by_signal:
            return Exit.OK
        if nxproxy is not None and nxproxy.display_refused:
            raise ClientError(
                f"The X server {os.environ.get('DISPLAY')} refused the desktop's windows: allow"
                " them (xhost +si:localuser:$USER), or start Xvfb with -ac.", Exit.FAILED,
                "\n".join(nxproxy.tail))
        if side == session.SERVER and not self.relay.server_closed_cleanly:
            raise ClientError(CONNECTION_LOST, Exit.SERVER)
        if side == session.SERVER and nxproxy is not None and nxproxy.link_broken:
            raise ClientError(TAKEN_OVER, Exit.TAKEN_OVER)
        log.info("The desktop session ended." if side == session.SERVER else "Session closed.")
        return Exit.OK

    def interrupted(self) -> Optional[defer.Deferred[None]]:
        """The reactor stops (a signal): end the session cleanly; the VM keeps it suspended."""
        if self.finished:
            return None
        self.interrupted_by_signal = True
        if self.relay is None:
            log.info("Interrupted.")
        elif not self.relay.ended.called:
            log.info("Interrupted: the session stays suspended on the virtual machine;"
                     " connect again to resume it.")
            self.relay.close()
        stops = [self.close_channels()]
        if self.nxproxy is not None:
            stops.append(self.nxproxy.stop(self.reactor))
        return defer.DeferredList(stops)

    def close_channels(self) -> defer.Deferred[None]:
        """Shares, the slave server, the sound listener: a failure here is only logged."""
        channels, self.channels = self.channels, None
        if channels is None:
            return defer.succeed(None)
        return channels.close().addErrback(
            lambda f: log.warn("Cleaning up after the session failed: {error}",
                               error=f.getErrorMessage()))


@defer.inlineCallbacks
def _run(reactor: Any, settings: Settings, args: argparse.Namespace,
         action: str) -> Generator[Any, Any, None]:
    client = Client(reactor, settings, args)
    reactor.addSystemEventTrigger("before", "shutdown", client.interrupted)
    try:
        status = yield client.run(action)
    except ClientError as e:
        client.finished = True
        report(e, settings.verbose)
        raise SystemExit(int(e.status))
    client.finished = True
    raise SystemExit(int(status))


def report(error: ClientError, verbose: bool) -> None:
    log.error("qvd-client: {message}", message=str(error))
    if verbose and error.detail:
        log.error("({detail})", detail=error.detail)


def with_otp(password: str, otp: str, ask: Callable[[str], str]) -> str:
    """The password with the one-time code after it, as QVD clients send it (the
    server's ``TOTP`` plugin takes the last digits); an empty ``otp`` is asked for."""
    code = "".join((otp or ask("One-time code: ")).split())
    if not code.isdigit():
        raise ValueError("the one-time code must be digits (as your authenticator app shows)")
    return password + code


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"qvd-client {version()}")
        sys.exit(0)
    _start_logging(args.verbose)
    action = action_of(args)
    try:
        settings = resolve(load_client_config(args.config), vars(args))
    except (ConfigError, ValueError) as e:
        report(ClientError(str(e), Exit.USAGE), False)
        sys.exit(Exit.USAGE)
    if not settings.token and not settings.user:
        report(ClientError("no user: give -u USER, set QVDLOGIN or client.user.name"
                           " (or use --token).", Exit.USAGE), False)
        sys.exit(Exit.USAGE)
    if not settings.token and settings.password is None:
        if not sys.stdin.isatty():
            report(ClientError("no password: give -w PASS or set QVDPASSWORD (or use --token).",
                               Exit.USAGE), False)
            sys.exit(Exit.USAGE)
        settings.password = getpass.getpass(f"Password for {settings.user}: ")
    if args.otp is not None:
        if settings.token or (not args.otp and not sys.stdin.isatty()):
            report(ClientError("--otp goes with a password (not --token); without a CODE it"
                               " needs a terminal to ask for it.", Exit.USAGE), False)
            sys.exit(Exit.USAGE)
        try:
            settings.password = with_otp(settings.password or "", args.otp, getpass.getpass)
        except ValueError as e:
            report(ClientError(f"{e}.", Exit.USAGE), False)
            sys.exit(Exit.USAGE)
    task.react(_run, (settings, args, action))


if __name__ == "__main__":
    main()
