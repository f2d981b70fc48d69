"""The HKD: one node's VM lifecycle (``twistd qvd-hkd``).

``service.HKDService`` is the service tree; ``host`` the heartbeat and host
commands; ``commands`` the VM commands; ``vm`` the per-VM state machine;
``vma`` the agent RPC and its monitor; ``monitors`` the expiration and
cluster monitors; ``hypervisor`` the seam to the VM backends and
``process`` the built-in one.
"""
