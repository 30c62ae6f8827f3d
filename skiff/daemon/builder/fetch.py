"""ADD <url>: the download, done by the daemon (the build's RUN steps have no network).

Plain HTTP(S) GET with redirects, a connect/read timeout and a size cap, streamed to the
file the builder names. Errors name the URL and what went wrong; the builder reports them
against the ADD line.
"""

from __future__ import annotations

import httpx

from skiff.errors import InvalidArgument, Unavailable

MAX_BYTES = 8 << 30
_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def fetch(url: str, path: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise InvalidArgument(f"ADD {url}: only http:// and https:// URLs can be downloaded")
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=_TIMEOUT) as resp:
            if resp.status_code != 200:
                raise InvalidArgument(f"ADD {url}: the server answered {resp.status_code} "
                                      f"{resp.reason_phrase}")
            total = 0
            with open(path, "wb") as f:
                for chunk in resp.iter_bytes(1 << 20):
                    total += len(chunk)
                    if total > MAX_BYTES:
                        raise InvalidArgument(f"ADD {url}: larger than {MAX_BYTES} bytes")
                    f.write(chunk)
    except httpx.HTTPError as exc:
        raise Unavailable(f"ADD {url}: download failed: {exc}") from exc
