"""Matrix errors: one exception type that the HTTP layer turns into the spec's JSON."""

from __future__ import annotations

from typing import Any


class MatrixError(Exception):
    """An error a client or remote server is meant to see.

    Raised anywhere below the handlers; the app's error handler renders it as
    ``{"errcode": ..., "error": ...}`` with ``status`` plus any ``extra`` fields
    (for example ``retry_after_ms`` or UIA ``flows``).
    """

    def __init__(
        self, status: int, errcode: str, error: str, **extra: Any
    ) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.error, **self.extra}


def not_found(error: str = "Not found") -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", error)


def unrecognized(error: str = "Unrecognized request", status: int = 404) -> MatrixError:
    return MatrixError(status, "M_UNRECOGNIZED", error)


def forbidden(error: str) -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", error)


def bad_json(error: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", error)


def not_json(error: str = "Content not JSON") -> MatrixError:
    return MatrixError(400, "M_NOT_JSON", error)


def too_large(error: str = "Request body too large") -> MatrixError:
    return MatrixError(413, "M_TOO_LARGE", error)


def missing_param(error: str) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", error)


def invalid_param(error: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", error)


def unknown(error: str = "Internal server error") -> MatrixError:
    return MatrixError(500, "M_UNKNOWN", error)
