"""The ``kvm`` and ``lxc`` hypervisors: libvirt domains with QVD 4's storage layout,
network (bridge, dnsmasq, firewall) and naming (see ``docs/hypervisors.md``)."""
