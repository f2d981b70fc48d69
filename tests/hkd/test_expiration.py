"""Soft expiration reaches the VMA's expire hook; hard expiration stops the VM."""

from __future__ import annotations

import os
import stat

from twisted.internet.defer import inlineCallbacks

from tests.support.hkd import HKDTestCase

HOOK = '#!/bin/sh\nprintf "%s\\n" "$@" > "{out}"\n'


class ExpirationTests(HKDTestCase):
    @inlineCallbacks
    def test_soft_then_hard_expiration(self):
        hook, record = os.path.join(self.root, "expire.sh"), os.path.join(self.root, "expire.args")
        with open(hook, "w") as f:
            f.write(HOOK.format(out=record))
        os.chmod(hook, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        host_id, conf = self.host(extra=f"vma.on_action.expire = {hook}\n")
        yield self.start_hkd(conf, host_id)
        vm_id = self.new_vm("v1")
        self.qa(f"vm id={vm_id} start")
        yield self.wait_vm(vm_id, "running")

        self.qa(f"vm id={vm_id} set expiration_soft=now,expiration_hard=2099-01-01T00:00")
        args = yield self.poll(lambda: _read(record), bool, 20, "expire hook")
        self.assertIn("vm.expiration.soft", args)
        self.assertIn("2099-01-01 00:00:00", args)
        self.assertEqual(self.vm_row(vm_id)["vm_state"], "running")

        self.qa(f"vm id={vm_id} set expiration_hard=now")
        yield self.wait_vm(vm_id, "stopped")
        self.assertEqual(self.db.query("SELECT vm_expiration_soft, vm_expiration_hard"
                                       " FROM vm_runtimes WHERE vm_id = %s", (vm_id,)),
                         [(None, None)])


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""
