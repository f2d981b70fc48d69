"""``qvd-doctor``: a node checked the way a support engineer would, each problem with its fix.

``checks`` holds the checks (configuration, QVD-DB, schema, host row, L7R
certificate, ports, nxagent, hypervisor prerequisites, clock skew); ``cli``
runs them and prints the findings as text or JSON.
"""
