"""Domain errors of the node. Each carries a stable machine-readable `code`; the API maps them to
HTTP statuses and the CLI to one readable line with exit code 1."""

from __future__ import annotations


class AllianceError(Exception):
    code = "alliance_error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None,
                 details: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        # Per-item problems of a bulk request (row, field, code, reason), so a caller fixes all at once.
        self.details = details


class InvalidInput(AllianceError):
    code = "invalid_input"
    http_status = 422


class NotFound(AllianceError):
    code = "not_found"
    http_status = 404


class Conflict(AllianceError):
    code = "conflict"
    http_status = 409


class NotInitialised(AllianceError):
    code = "not_initialised"
    http_status = 503
