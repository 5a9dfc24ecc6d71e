"""The Azure error shape: ``{"error": {"code", "message", "target"?}}`` plus the ``x-ms-error-code`` header."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A synchronous error answer. Raised by the catalog and the validators, rendered by the HTTP layer."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        target: str | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.target)


def error_body(code: str, message: str, target: str | None = None) -> dict[str, Any]:
    inner: dict[str, Any] = {"code": code, "message": message}
    if target:
        inner["target"] = target
    return {"error": inner}


def invalid(message: str, target: str | None = None, code: str = "StacValidationFailed") -> ApiError:
    """A 400 for a malformed STAC body, naming the field (``target``) and why."""
    return ApiError(400, code, f"{target}: {message}" if target else message, target=target)
