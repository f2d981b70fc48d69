"""The HKD: one node's VM lifecycle (``twistd qvd-hkd``).

``service.HKDService`` is the service tree; ``agents`` its periodic agents
(heartbeat, host and VM commands, expiration, cluster monitor, token sweeper)
on ``periodic``; ``fleet`` the VMs of this host; ``vm`` the per-VM state
machine; ``vma`` the agent RPC and its monitor; ``resources`` the free RAM and
CPU the heartbeat reports; ``hypervisor`` the seam to the VM backends,
``process`` the built-in one (with ``netns`` for its network namespaces).
"""
