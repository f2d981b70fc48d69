"""No client value can add an nxagent option: refused with an RPC error, nothing started."""

from __future__ import annotations

import os
import re

from hypothesis import given, settings as hsettings, strategies as st
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from qvd.http.simplerpc import RPCError
from qvd.vma import nxoptions
from tests.support.paths import scratch_dir
from tests.support.vma import hook_argv, make_settings, start_vma, write_hook

# every qvd.client.* parameter that reaches nxagent's options file
OPTION_PARAMS = [key for _, key in nxoptions.CLIENT_OPTIONS] + [
    nxoptions.PRINTING,
    nxoptions.EXTRA_ARGS,
]
PAYLOADS = [
    "lan,listen=5000",
    "us:1",
    "a=b",
    "pc105/us\n",
    "x y",
    "a;b",
    "$(id)",
    "é",
    "lan%2Caccept%3D0.0.0.0",
    "1,options=/etc/passwd",
]
SAFE = re.compile(r"[\w/+-]+", re.ASCII)


class RPCInjectionTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        self.directory = scratch_dir(self)
        self.settings = make_settings(
            self.directory,
            **{
                "vma.printing.enable": "1",
                "vma.on_action.pre-connect": write_hook(self.directory, "pre-connect"),
            },
        )
        self.service, self.rpc = start_vma(self, self.settings)

    @inlineCallbacks
    def test_every_option_parameter_refuses_injection(self):
        for key in OPTION_PARAMS:
            for payload in PAYLOADS:
                params = [("qvd.client.link", "lan"), (key, payload)]
                error = yield self.assertFailure(self.rpc.call("x_start", params), RPCError)
                self.assertEqual(str(error), f"invalid characters in parameter {key}\n")
        self.assertEqual((yield self.rpc.call("x_state")), "stopped")
        self.assertIsNone(self.service.session._xinit)
        self.assertIsNone(hook_argv(self.directory, "pre-connect"))
        self.assertFalse(os.path.exists(self.settings.nxagent_log))
        self.assertFalse(os.path.exists(self.settings.options_path))

    @inlineCallbacks
    def test_extra_args_outside_the_allow_list(self):
        for extra in ("listen=5000", "accept=10", "cache=8m,connect=evil", "cache", "Cache=8m", ","):
            params = [(nxoptions.EXTRA_ARGS, extra)]
            error = yield self.assertFailure(self.rpc.call("x_start", params), RPCError)
            self.assertEqual(str(error), f"invalid characters in parameter {nxoptions.EXTRA_ARGS}\n")
        self.assertIsNone(self.service.session._xinit)


class BuilderTests(unittest.TestCase):
    def setUp(self):
        self.settings = make_settings(scratch_dir(self), **{"vma.printing.enable": "1"})

    def test_options_line(self):
        params = {
            "qvd.client.keyboard": "pc105/es",
            "qvd.client.os": "windows",
            "qvd.client.link": "adsl",
            "qvd.client.geometry": "1024x768",
            "qvd.client.fullscreen": "",
            "qvd.client.printing.enabled": "1",
            "qvd.client.nxagent.extra_args": "cache=8m,images=32m",
            "custom.anything": "a,b=c:d",  # not an option: goes to hooks only
        }
        options = nxoptions.build_options(params, self.settings)
        self.assertEqual(
            nxoptions.options_line(options, 100),
            "nx/nx,keyboard=pc105/es,client=windows,link=adsl,geometry=1024x768,loopback=1,"
            "tolerancechecks=risky,cache=8m,images=32m,smb=2100:100\n".replace(
                "2100", str(2000 + self.settings.display)
            ),
        )

    @hsettings(max_examples=300, deadline=None)
    @given(key=st.sampled_from(OPTION_PARAMS[:-1]), value=st.text(min_size=1, max_size=20))
    def test_values_outside_the_safe_set_are_refused(self, key, value):
        params = {key: value}
        if SAFE.fullmatch(value):
            options = nxoptions.build_options(params, self.settings)
            line = nxoptions.options_line(options, 7)
            self.assertEqual(line.count(","), len(options))
            self.assertEqual(line.count("="), len(options))
        else:
            self.assertRaises(nxoptions.InvalidParameter, nxoptions.build_options, params, self.settings)

    @hsettings(max_examples=300, deadline=None)
    @given(value=st.text(min_size=1, max_size=30))
    def test_extra_args_never_add_unlisted_options(self, value):
        params = {nxoptions.EXTRA_ARGS: value}
        try:
            options = nxoptions.build_options(params, self.settings)
        except nxoptions.InvalidParameter:
            return
        added = {name for name, _ in options} - {"loopback", "tolerancechecks"}
        self.assertLessEqual(added, self.settings.extra_args_allowed)
        self.assertNotIn(":", nxoptions.options_line(options, 7)[:-3])
