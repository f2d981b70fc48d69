"""QVD 4's administration API (``twistd qvd-api``): ``/api`` and its companions.

The calling convention, envelope, status codes, actions, filters and ACLs are
QVD 4's (``protocols/api.md``, ``../shared/reference/qvd4-api.md``); where we
do better on purpose, ``protocols/api.md`` says so.
"""
