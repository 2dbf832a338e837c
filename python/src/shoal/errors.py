"""Exceptions carrying the daemon's error kind and message."""

from __future__ import annotations


class ShoalError(Exception):
    """An error the daemon reported: ``kind`` is its error kind
    (``bad_request``, ``not_found``, ``corrupt``, ``quota``, ``conflict``,
    ``unavailable``, ``internal``), ``str(e)`` its message."""

    def __init__(self, message: str, kind: str | None = None, status: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status

    @staticmethod
    def of(status: int | None, kind: str | None, message: str) -> Exception:
        """The exception for an answer: a missing dataset or key is also a
        ``FileNotFoundError`` (what fsspec, zarr and xarray expect)."""
        if kind is None and status is not None:
            kind = {400: "bad_request", 404: "not_found", 409: "conflict", 503: "unavailable", 507: "quota"}.get(
                status, "internal"
            )
        cls = {"not_found": NotFound, "conflict": Conflict, "bad_request": BadRequest}.get(kind or "", ShoalError)
        return cls(message, kind, status)


class NotFound(ShoalError, FileNotFoundError):
    """No such dataset, name, version or key."""


class Conflict(ShoalError):
    """The request conflicts with the state (e.g. the name moved while a
    write was staged)."""


class BadRequest(ShoalError, ValueError):
    """The request itself is wrong (a malformed name, query or key)."""


class DaemonNotRunning(ShoalError, ConnectionError):
    """No daemon answers at the socket or gateway."""
