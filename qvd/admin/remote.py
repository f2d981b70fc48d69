"""A blocking client of QVD's administration API (``qa --api``, tests, bench).

Requests are ``POST`` with a JSON body, as ``qa4`` sends them; the
connection is kept open between calls.  TLS is verified against ``ca`` (or
the system's CAs) unless ``insecure``.
"""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any, Optional
from urllib.parse import urlencode, urlsplit


class APIUnreachable(Exception):
    """The API cannot be reached or did not answer with JSON."""


class APIClient:
    def __init__(self, url: str, *, ca: Optional[str] = None, insecure: bool = False,
                 timeout: float = 60.0):
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise APIUnreachable(f"not an API URL: {url!r} (expected https://host[:port]/)")
        self.url = f"{parts.scheme}://{parts.netloc}/"
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.timeout = timeout
        self.context: Optional[ssl.SSLContext] = None
        if parts.scheme == "https":
            if insecure:
                self.context = ssl._create_unverified_context()
            else:
                self.context = ssl.create_default_context(cafile=ca)
        self._connection: Optional[http.client.HTTPConnection] = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self.context is not None:
                self._connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self.context)
            else:
                self._connection = http.client.HTTPConnection(self.host, self.port,
                                                              timeout=self.timeout)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                headers: Optional[dict[str, str]] = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange (retried once on a connection the server closed)."""
        for attempt in (1, 2):
            connection = self._connect()
            try:
                connection.request(method, path, body=body, headers=headers or {})
                response = connection.getresponse()
                return response.status, dict(response.getheaders()), response.read()
            except (ConnectionError, http.client.HTTPException, ssl.SSLError, OSError) as e:
                self.close()
                if attempt == 2 or isinstance(e, (ssl.SSLCertVerificationError, TimeoutError)):
                    raise APIUnreachable(f"cannot reach the API at {self.url}: {e}") from None
        raise AssertionError("unreachable")

    def call(self, payload: dict[str, Any], path: str = "/api") -> dict[str, Any]:
        """POST ``payload`` as JSON; the decoded answer."""
        body = json.dumps(payload).encode("utf-8")
        status, _, data = self.request("POST", path, body,
                                       {"Content-Type": "application/json"})
        return self._decode(status, data)

    def form(self, params: dict[str, Any], path: str = "/api", method: str = "POST",
             cookie: Optional[str] = None) -> tuple[dict[str, Any], dict[str, str]]:
        """The WAT's way: everything in the query string, no body; (answer, headers)."""
        query = urlencode({k: v if isinstance(v, str) else json.dumps(v)
                           for k, v in params.items()})
        headers = {"Cookie": f"sid={cookie}"} if cookie else {}
        status, response_headers, data = self.request(method, f"{path}?{query}", None, headers)
        return self._decode(status, data), response_headers

    def _decode(self, status: int, data: bytes) -> dict[str, Any]:
        try:
            answer = json.loads(data)
        except ValueError:
            raise APIUnreachable(f"the API at {self.url} answered HTTP {status} without JSON")
        if not isinstance(answer, dict):
            raise APIUnreachable(f"the API at {self.url} answered {answer!r}")
        return answer
