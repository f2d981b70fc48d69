"""Talking to LDAP directories (ldap3, blocking: callers run it in threads)."""
