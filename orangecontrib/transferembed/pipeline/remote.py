"""Images and files by URL, through fsspec (the optional ``[cloud]`` extra).

``s3://``, ``gs://``, ``az://`` (and ``abfs://``), ``https://`` and ``file://``
URLs are read by the back-end fsspec has for them (s3fs, gcsfs, adlfs,
aiohttp), with each back-end's own credential chain: environment, profile,
instance role. Nothing here takes, keeps or passes on a credential, and the
names shown to people (:func:`display`) and the reasons of failed reads
(:func:`reason`) have any that a URL or a message carries taken out.

Reading retries transient failures (timeouts, dropped connections, 5xx,
throttling) with exponential backoff; what still fails is an
:class:`~..errors.ImageError` with its reason, so the item is skipped. Listing
a prefix goes page by page (:func:`walk`), keeping only the names it yields.
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import re
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from ..config import DEFAULT_MAX_IMAGE_BYTES, MAX_CSV_BYTES, size_text
from ..errors import ImageError, SourceError

CLOUD_HINT = 'pip install "Orange3-TransferEmbed[cloud]"'
#: The most bytes read for one item, by default (a bigger object is skipped).
#: Tries of one read, and the first wait between them (doubled each time).
ATTEMPTS = 5
BACKOFF_S = 0.2
#: Keys asked for per listing request.
PAGE_SIZE = 1000
#: Names listed between two calls of a walk's ``check``.
CHECK_EVERY = 2000
#: Environment variables of the back-ends' credential chains whose values are
#: never shown, wherever a message might carry them.
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                    "AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_CLIENT_SECRET",
                    "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
                    "GOOGLE_OAUTH_ACCESS_TOKEN")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+://)[^/@\s]+@")
#: Query parameters of signed URLs (S3 presigned, Azure SAS, GCS signed).
_SIGNED_QUERY = re.compile(r"(?i)(x-amz-|x-goog-|sig=|signature|token|credential|se=|sp=)")
#: Errors that no retry mends.
_LASTING = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
            ValueError, TypeError)
_LASTING_ERRNO = {errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EACCES, errno.ENOENT}
IsCancelled = Callable[[], bool]


def is_url(path) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    return isinstance(path, str) and bool(_URL.match(path))


def protocol(url: str) -> str:
    return url.split("://", 1)[0].lower()


def display(url: str) -> str:
    """``url`` as shown to people and written to files: without a user name,
    password, or a signed query."""
    if not is_url(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "" if _SIGNED_QUERY.search(parts.query) else parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str) -> str:
    """``text`` with the values of the credential variables of this process, and the
    user names and passwords of URLs, taken out."""
    text = _USERINFO.sub(r"\1", text)
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def reason(exc: BaseException) -> str:
    """A failed read's reason in one line, with nothing secret in it."""
    text = str(exc.args[-1] if isinstance(exc, OSError) and len(exc.args) > 1 else exc)
    text = (text.strip().splitlines() or [type(exc).__name__])[0][:300]
    return redact(text) or type(exc).__name__


def filesystem(url: str):
    """The fsspec file system of ``url`` (one per protocol and process), or one
    clear message naming the extra when its back-end is not installed."""
    name = protocol(url)
    try:
        import fsspec
    except ImportError:
        raise SourceError(f"reading {name}:// URLs needs the optional 'cloud' extra; "
                          f"install it with: {CLOUD_HINT}") from None
    try:
        return fsspec.filesystem(name)
    except ImportError:
        raise SourceError(f"reading {name}:// URLs needs the optional 'cloud' extra; "
                          f"install it with: {CLOUD_HINT}") from None
    except ValueError:
        raise SourceError(f"{display(url)}: unknown kind of URL {name}://") from None


def check_protocols(paths) -> None:
    """Fail now, with one message, for URLs whose back-end is not installed."""
    seen: dict[str, str] = {}
    for path in paths:
        if is_url(path):
            seen.setdefault(protocol(path), path)
    for url in seen.values():
        filesystem(url)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, _LASTING) or isinstance(exc, ImageError):
        return False
    if isinstance(exc, OSError) and exc.errno in _LASTING_ERRNO:
        return False
    return isinstance(exc, (OSError, TimeoutError, ConnectionError)) \
        or "Timeout" in type(exc).__name__ or "Throttl" in str(exc) or "SlowDown" in str(exc)


def retrying(call: Callable[[], object], attempts: int = ATTEMPTS, backoff: float = BACKOFF_S,
             sleep: Callable[[float], None] = time.sleep):
    """``call()``, tried again after a transient failure, waiting longer each time."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts - 1 or not _transient(exc):
                raise
            sleep(backoff * 2 ** attempt)
    raise AssertionError("unreachable")


def read_bytes(url: str, limit: int = DEFAULT_MAX_IMAGE_BYTES,
               attempts: int = ATTEMPTS) -> bytes:
    """The bytes of the object at ``url``, at most ``limit`` of them; an
    :class:`ImageError` with the reason where it cannot be read. A machine without
    the URL's back-end (a cluster's worker) fails the job with one
    :class:`SourceError` naming the extra, rather than skipping every item."""
    fs = filesystem(url)
    try:
        data = retrying(lambda: fs.cat_file(url, start=0, end=limit + 1), attempts)
    except FileNotFoundError:
        raise ImageError("not found") from None
    except IsADirectoryError:
        raise ImageError("is a folder, not an image file") from None
    except PermissionError as exc:
        raise ImageError(f"access denied: {reason(exc)}") from None
    except Exception as exc:
        raise ImageError(f"cannot read: {reason(exc)}") from None
    if len(data) > limit:
        raise ImageError(f"larger than {size_text(limit)}; not read")
    return data


def read_text(url: str, what: str = "file") -> str:
    """A small text file at ``url`` (a CSV), or one clear message."""
    try:
        data = read_bytes(url, MAX_CSV_BYTES)
    except ImageError as exc:
        raise SourceError(f"{what} {display(url)}: {exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{what} {display(url)} is not UTF-8 text (byte "
                          f"{exc.object[exc.start]:#x} at position {exc.start}); save it "
                          f"as UTF-8") from None


def read_npy(url: str, what: str = "data"):
    """A npy file at ``url``, read whole into memory; Python objects refused."""
    import numpy as np

    fs = filesystem(url)
    try:
        data = retrying(lambda: fs.cat_file(url))
    except FileNotFoundError:
        raise SourceError(f"npy {what} file {display(url)} does not exist") from None
    except Exception as exc:
        raise SourceError(f"cannot read npy {what} file {display(url)}: {reason(exc)}") \
            from None
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SourceError(f"{what} file {display(url)} is not a npy file of numbers "
                          f"({reason(exc)})") from None


def exists(url: str) -> bool:
    """Whether an object is at ``url`` (one request); False where that cannot be told."""
    try:
        return bool(retrying(lambda: filesystem(url).exists(url)))
    except Exception:
        return False


def parent(url: str) -> str:
    """The URL of the folder (prefix) holding ``url``."""
    return url.rsplit("/", 1)[0] if "/" in url.split("://", 1)[1] else url


def join(base: str, relative: str) -> str:
    """``relative`` (a POSIX path) taken from the folder URL ``base``."""
    scheme, rest = base.split("://", 1)
    root, _, path = rest.partition("/")
    joined = posixpath.normpath(posixpath.join("/" + path, relative)).lstrip("/")
    return f"{scheme}://{root}/{joined}"


def entries(url: str, starting: str = "", fs=None) -> Iterator[tuple[str, bool]]:
    """The names directly under a folder URL that start with ``starting``, and
    whether each is a folder; page by page where the back-end allows it (S3),
    else from one listing."""
    fs = fs or filesystem(url)
    url = url.rstrip("/")
    if _pages(fs, url):
        yield from _s3_entries(fs, url, starting)
        return
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache(url)
    for info in retrying(lambda: fs.ls(url, detail=True)):
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(starting):
            yield name, info.get("type") == "directory"


def _pages(fs, url: str) -> bool:
    """Whether ``url`` is listed page by page, in key order (S3)."""
    return protocol(url) in ("s3", "s3a") and hasattr(fs, "call_s3")


def _s3_entries(fs, url: str, starting: str) -> Iterator[tuple[str, bool]]:
    bucket, _, prefix = url.split("://", 1)[1].partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    token = None
    while True:
        request = {"Bucket": bucket, "Prefix": prefix + starting, "Delimiter": "/",
                   "MaxKeys": PAGE_SIZE}
        if token:
            request["ContinuationToken"] = token
        page = retrying(lambda request=request: fs.call_s3("list_objects_v2", **request))
        for common in page.get("CommonPrefixes", ()):
            yield common["Prefix"][len(prefix):].rstrip("/"), True
        for item in page.get("Contents", ()):
            name = item["Key"][len(prefix):]
            if name and not name.endswith("/"):  # not the folder's own marker
                yield name, False
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return


def walk(root: str, keep: Callable[[str], bool], check: Callable[[], None] = lambda: None,
         fs=None) -> Iterator[tuple[str, str]]:
    """``(label, url)`` of the files under the folder URL ``root`` whose names
    ``keep`` accepts, in the order of a local folder walk: a folder's files by
    name, then its subfolders by name; the label is the first-level subfolder.
    Hidden names (``.*``) are left out. ``check()`` is called for every folder and
    every :data:`CHECK_EVERY` names.
    From S3, which lists in key order, files are passed on page by page, and
    only the subfolders' names are kept.
    """
    fs = fs or filesystem(root)
    root = root.rstrip("/")
    if protocol(root) == "file":
        root = "file://" + fs._strip_protocol(root)
    try:
        yield from _walk(fs, root, "", keep, check)
    except (SourceError, ImageError):
        raise
    except FileNotFoundError:
        raise SourceError(f"image folder {display(root)} does not exist") from None
    except Exception as exc:
        raise SourceError(f"cannot list {display(root)}: {reason(exc)}") from None


def _walk(fs, url: str, label: str, keep, check) -> Iterator[tuple[str, str]]:
    check()
    in_order = _pages(fs, url)
    files, folders = [], []
    for count, (name, is_folder) in enumerate(entries(url, fs=fs), start=1):
        if count % CHECK_EVERY == 0:
            check()
        if name.startswith("."):
            continue
        if is_folder:
            folders.append(name)
        elif in_order:
            if keep(name):
                yield label, f"{url}/{name}"
        else:
            files.append(name)
    for name in sorted(files):
        if keep(name):
            yield label, f"{url}/{name}"
    for name in sorted(folders):
        yield from _walk(fs, f"{url}/{name}", label or name, keep, check)
