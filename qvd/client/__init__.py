"""``qvd-client``: log in to a QVD L7R, pick a VM and show its desktop through nxproxy."""
