"""The QVD network of the kvm and lxc hypervisors as QVD 4 laid it out (reference §5.4):
the firewall rules, the VM chains, dnsmasq's command line and hosts file."""

from __future__ import annotations

from twisted.trial import unittest

from qvd.config import Config
from qvd.hkd.virt import firewall
from qvd.hkd.virt.dhcp import DHCPSettings, dnsmasq_argv, hosts_text
from qvd.hkd.virt.network import NetworkPlan

CONF = {"vm.network.gateway": "10.3.0.1", "vm.network.ip.start": "10.3.15.50",
        "vm.network.netmask": "16", "vm.network.bridge": "qvdnet0", "path.run": "/r",
        "path.log": "/l"}


class FirewallTests(unittest.TestCase):
    def plan(self, **extra: str) -> tuple[NetworkPlan, firewall.FirewallSettings]:
        config = Config(dict(CONF, **extra))
        return NetworkPlan.from_config(config), firewall.FirewallSettings.from_config(config)

    def test_the_node_rules_protect_the_host_and_the_vms_in_qvd4s_order(self):
        rules = firewall.node_rules(*self.plan())
        vms, nodes = "10.3.15.50-10.3.255.254", "10.3.0.1-10.3.15.49"
        self.assertEqual(rules[0], ("filter", "FORWARD", "-p", "tcp", "--syn", "-m", "iprange",
                                    "--src-range", vms, "--dst-range", nodes, "-j", "DROP"))
        targets = [(r[1], r[-1]) for r in rules]
        self.assertEqual(targets, [("FORWARD", "DROP"), ("INPUT", "DROP"), ("FORWARD", "ACCEPT"),
                                   ("INPUT", "ACCEPT"), ("INPUT", "ACCEPT"), ("INPUT", "ACCEPT"),
                                   ("FORWARD", "DROP"), ("INPUT", "DROP"), ("FORWARD", "DROP")])
        self.assertEqual(rules[-1][-6:], ("--src-range", vms, "--dst-range", vms, "-j", "DROP"))

    def test_login_from_vms_and_nat_are_options(self):
        rules = firewall.node_rules(*self.plan(**{
            "internal.vm.network.firewall.allow_login_from_vm": "1",
            "internal.vm.network.firewall.protect_host": "0",
            "vm.network.firewall.nat.iface": "eth0", "l7r.port": "443"}))
        self.assertIn("443", rules[0])
        self.assertEqual(rules[-1][:2], ("nat", "POSTROUTING"))
        self.assertEqual(rules[-1][-4:], ("-o", "eth0", "-j", "MASQUERADE"))

    def test_a_vm_is_pinned_to_its_mac_and_ip(self):
        plan, _ = self.plan()
        guest = plan.guest(42, "10.3.15.60")
        self.assertEqual((guest.mac, guest.device), ("54:52:00:03:0f:3c", "qvd42"))
        rules = firewall.vm_rules(42, guest, use_dhcp=True)
        self.assertIn(("-A", "QVD_42_INPUT", "-s", "!", guest.mac, "-j", "DROP"), rules)
        self.assertIn(("-A", "QVD_42_FORWARD", "-p", "IPv4", "--ip-src", "!", "10.3.15.60",
                       "-j", "DROP"), rules)
        dhcp = [r for r in rules if "0.0.0.0" in r]
        self.assertEqual(dhcp[0][-1], "ACCEPT")
        self.assertLess(rules.index(dhcp[0]), rules.index(
            ("-A", "QVD_42_INPUT", "-p", "IPv4", "--ip-src", "!", "10.3.15.60", "-j", "DROP")),
            "DHCP requests come from 0.0.0.0: accepted before the address check")
        self.assertEqual(rules[-2:], [("-A", "INPUT", "-i", "qvd42", "-j", "QVD_42_INPUT"),
                                      ("-A", "FORWARD", "-i", "qvd42", "-j", "QVD_42_FORWARD")])


class DnsmasqTests(unittest.TestCase):
    def test_qvd4s_command_line_with_the_manuals_dns_server(self):
        config = Config(dict(CONF, **{"vm.network.dns_server": "10.3.15.254",
                                      "vm.network.domain": "qvd.lan"}))
        argv = dnsmasq_argv(DHCPSettings.from_config(config), NetworkPlan.from_config(config))
        for arg in ("--bind-interfaces", "--interface=qvdnet0",
                    "--dhcp-range=interface:qvdnet0,10.3.15.50,static",
                    "--dhcp-option=option:router,10.3.0.1",
                    "--dhcp-hostsfile=/r/dhcp-hostsfile",
                    "--dhcp-option=option:dns-server,10.3.15.254", "--port=0",
                    "--domain=qvd.lan"):
            self.assertIn(arg, argv)

    def test_without_a_dns_server_dnsmasq_answers_dns(self):
        config = Config(CONF)
        argv = dnsmasq_argv(DHCPSettings.from_config(config), NetworkPlan.from_config(config))
        self.assertFalse([a for a in argv if a.startswith("--port") or "dns-server" in a])

    def test_the_hosts_file_is_one_static_lease_per_vm_sorted_by_mac(self):
        self.assertEqual(hosts_text({"54:52:00:00:00:02": "10.3.15.51",
                                     "54:52:00:00:00:01": "10.3.15.52"}),
                         "54:52:00:00:00:01,10.3.15.52\n54:52:00:00:00:02,10.3.15.51\n")
