"""Replay the transcripts of protocols/api.md against a real API."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest

from tests.support.api import RunningAPI

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "protocols", "api.md")
ANY = "…"


def transcripts() -> list[list[str]]:
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    return [block.strip().splitlines() for block in
            re.findall(r"```transcript\n(.*?)```", text, re.S)]


def contains(answer: Any, expected: Any, where: str = "") -> None:
    if expected == ANY:
        return
    if isinstance(expected, dict):
        assert isinstance(answer, dict), f"{where}: {answer!r} is not an object"
        for key, value in expected.items():
            assert key in answer, f"{where}.{key} missing from {answer}"
            contains(answer[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(answer, list) and len(answer) == len(expected), f"{where}: {answer!r}"
        for n, (a, e) in enumerate(zip(answer, expected)):
            contains(a, e, f"{where}[{n}]")
    else:
        assert answer == expected, f"{where}: expected {expected!r}, got {answer!r}"


@pytest.mark.parametrize("lines", transcripts(), ids=lambda lines: lines[0][:60])
def test_transcript(api: RunningAPI, lines: list[str]) -> None:
    client = api.client()
    sid = None
    assert len(lines) % 2 == 0
    for request, expected in zip(lines[::2], lines[1::2]):
        assert request.startswith("> ") and expected.startswith("< ")
        if request.startswith("> GET "):
            answer = client.call({}, request[len("> GET "):])
        else:
            body = json.loads(request[2:].replace("$sid", sid or ""))
            answer = client.call(body)
        sid = sid or answer.get("sid")
        contains(answer, json.loads(expected[2:]))
