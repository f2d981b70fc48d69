"""``qvd-embedded setup --hypervisor``: node.conf keys set in place, the admin's others kept."""

from __future__ import annotations

import os

from twisted.trial import unittest

from qvd.config import load_file
from qvd.embedded import set_keys


class SetKeysTests(unittest.TestCase):
    def test_keys_are_replaced_or_added_and_the_rest_kept(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("# mine\nvm.hypervisor = process\nl7r.port = 9443\n")
        set_keys(path, {"vm.hypervisor": "lxc", "vm.network.gateway": "10.0.0.1"})
        with open(path) as f:
            self.assertTrue(f.read().startswith("# mine\n"))
        self.assertEqual(load_file(path), {"vm.hypervisor": "lxc", "l7r.port": "9443",
                                           "vm.network.gateway": "10.0.0.1"})
