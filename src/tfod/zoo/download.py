"""One file over HTTP(S) (or from a mirror folder) into `DEST.partial`, resumed after a kill.

The server is trusted only as far as its answers agree with each other and with what is on disk:
- a resumed download (`Range: bytes=N-`) appends only a 206 whose `Content-Range` starts at N
  and runs to the end of the file; any other answer starts again from zero;
- a 416 (the partial is as long as the file, or longer) discards the partial and starts again;
- a partial is promoted only when it is as long as the server announced;
- redirects are followed to http(s) only, never from https to plain http, at most
  `MAX_REDIRECTS` times; one to another host is said, and the final URL returned.
"""

from __future__ import annotations

import http.client
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any

from tfod.console import console
from tfod.errors import TfodError

CHUNK = 1 << 20
MAX_REDIRECTS = 10
TIMEOUT = 60  # seconds without a byte before a download counts as stalled
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)$")
# Google Cloud Storage and S3 (and their clones) answer <Code>AccessDenied</Code> in XML, GCS's
# JSON API "storage.objects.get access"; a bare 403 may be anything else (a proxy, a WAF).
_ACCESS_DENIED = re.compile(r"AccessDenied|storage\.objects\.get access")


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS
    max_repeats = 2

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:  # fmt: skip
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if new.scheme not in ("http", "https"):
            raise TfodError(f"refused a redirect to {newurl} (only http and https are followed)")
        if old.scheme == "https" and new.scheme == "http":
            raise TfodError(f"refused a redirect from https to plain http ({newurl})")
        if new.hostname != old.hostname:
            console.print(f"Redirected to {new.hostname} ({newurl})")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener() -> urllib.request.OpenerDirector:
    """urllib's opener with tfod's redirect rules."""
    return urllib.request.build_opener(_Redirects())


def _open(source: str, have: int) -> Any:
    """The response to GET `source`, asking for the bytes from `have` on when `have` > 0."""
    headers = {"Range": f"bytes={have}-"} if have else {}
    return opener().open(urllib.request.Request(source, headers=headers), timeout=TIMEOUT)


def _start(response: Any, have: int) -> tuple[int, int | None] | None:
    """(offset to write from, total length or None) for `response` to a request for bytes from
    `have`; None: a 206 that does not continue the partial (it must be fetched again)."""
    length = response.headers.get("Content-Length")
    size = int(length) if length and length.isdigit() else None
    if getattr(response, "status", None) != 206:
        return 0, size  # the whole file (a server that ignores ranges, or no partial)
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
    if not match:
        return None
    first, last, total = int(match[1]), int(match[2]), match[3]
    whole = int(total) if total.isdigit() else None
    if (
        first != have
        or (whole is not None and last + 1 != whole)
        or (size is not None and size != last - first + 1)
    ):
        return None
    return have, last + 1


def fetch_file(source: str, dest: Path, progress: bool, offline_hint: str) -> str:
    """Fetch `source` into `dest`, resuming `dest.partial`.

    Args:
        offline_hint: what to do when the host cannot be reached (appended to that error).

    Returns:
        The URL the bytes came from, after redirects.

    Raises:
        TfodError: an HTTP error, an unreachable host, a stalled or short transfer, a refused
            redirect. An interrupted transfer keeps its partial to resume.
        KeyboardInterrupt: Ctrl-C, saying that the same command resumes the download.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    if not source.startswith(("http://", "https://")):
        partial.unlink(missing_ok=True)  # a mirror folder: a local copy needs no resuming
    for _ in range(3):
        have = partial.stat().st_size if partial.is_file() else 0
        try:
            response = _open(source, have)
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:
                console.print(f"The partial {dest.name} does not fit the remote file: restarting")
                partial.unlink()
                continue
            raise _http_error(err, source) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", None) or err
            raise TfodError(f"cannot download ({reason}); {offline_hint}", source) from None
        with response:
            start = _start(response, have)
            if start is None:
                console.print(f"The server's answer does not continue {dest.name}: restarting")
                partial.unlink()
                continue
            _copy(response, partial, *start, source, progress)
        return str(response.geturl() or source)
    raise TfodError("the server's answers to a resumed download disagree; giving up", source)


class AccessDenied(TfodError):
    """The host answered, and refuses to give this file to anonymous callers."""


def _http_error(err: urllib.error.HTTPError, source: str) -> TfodError:
    if is_access_denied(err):
        return AccessDenied(
            "HTTP 403 AccessDenied: the publisher refuses anonymous downloads of this file (the "
            "host answered: not a network fault)",
            source,
        )
    if 300 <= err.code < 400:  # urllib gives up on a loop or a chain too long
        return TfodError(
            f"too many redirects (a loop, or more than {MAX_REDIRECTS}); last: HTTP {err.code} "
            f"to {err.headers.get('Location', '?')}",
            source,
        )
    return TfodError(f"download failed: HTTP {err.code} {err.reason}", source)


def is_access_denied(err: urllib.error.HTTPError) -> bool:
    """Is `err` a storage host's refusal to serve anonymous callers (it says so in its body)?"""
    if err.code != 403:
        return False
    try:
        body = err.read(65536).decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return False
    return bool(_ACCESS_DENIED.search(body))


def _copy(
    response: Any, partial: Path, have: int, total: int | None, source: str, progress: bool
) -> None:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("[bold]download"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TextColumn("eta"), TimeRemainingColumn(),
    )  # fmt: skip
    name = partial.name.removesuffix(".partial")
    if have:
        console.print(f"Resuming {name} at {have / 1e6:.1f} MB")
    with (
        Progress(*columns, console=console, disable=not progress) as bar,
        partial.open("ab" if have else "wb") as out,
    ):
        task = bar.add_task(name, total=total, completed=have)
        try:
            while chunk := response.read1(CHUNK):
                out.write(chunk)
                bar.advance(task, len(chunk))
        except (http.client.HTTPException, TimeoutError, ConnectionError) as err:
            raise TfodError(
                f"download interrupted ({type(err).__name__}) after {out.tell() / 1e6:.1f} MB; "
                "run the same command to resume it",
                source,
            ) from None
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                f"{name}: {out.tell() / 1e6:.1f} MB kept; run the same command to resume the "
                "download"
            ) from None
    got = partial.stat().st_size
    if total is not None and got > total:
        partial.unlink()
        raise TfodError(
            f"the server sent {got} bytes where it announced {total}; the download was deleted: "
            "run the same command to fetch it again",
            source,
        )
    if total is not None and got < total:
        raise TfodError(
            f"download ended at {got} of {total} bytes; run the same command to resume it", source
        )
    partial.replace(partial.with_name(name))
