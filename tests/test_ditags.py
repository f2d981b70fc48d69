"""The rule by which a tag moves to a disk image (``qvd.db.ditags``), shared by ``qa`` and
the API; both run it end to end in tests/api and tests/test_qa_manual.py.  Plus the
credentials that must never show their secret in a log line or traceback."""

from __future__ import annotations

import pytest

from qvd.db.ditags import Takeover, takeover
from qvd.l7r.auth.credentials import Basic, Bearer


class Refused(Exception):
    pass


def test_a_tag_held_by_other_dis_is_taken_from_them() -> None:
    assert takeover([(7, 1, False)], 2, Refused) == Takeover(drop=[7], add=True)


def test_a_free_tag_is_added() -> None:
    assert takeover([], 2, Refused) == Takeover(drop=[], add=True)


def test_a_tag_the_di_holds_already_is_left_alone() -> None:
    assert takeover([(7, 2, True)], 2, Refused) == Takeover(drop=[], add=False)


def test_a_tag_fixed_on_another_di_is_refused_naming_that_di() -> None:
    with pytest.raises(Refused) as refused:
        takeover([(7, 5, True)], 2, Refused)
    assert refused.value.args == (5,)


def test_credentials_keep_their_secret_out_of_repr() -> None:
    assert "s3cret" not in repr(Basic("alice", "s3cret"))
    assert "alice" in repr(Basic("alice", "s3cret"))
    assert "t0ken" not in repr(Bearer("t0ken"))
    assert Basic("alice", "s3cret") != Basic("alice", "other")  # still compared in full
