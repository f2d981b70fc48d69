"""``qvd-di``: Debian desktop images (DIs) with this project's VMA, for the kvm and lxc
hypervisors."""
