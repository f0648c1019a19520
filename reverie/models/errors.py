"""Errors with the API's error types, raised by the store and the client helpers."""

from __future__ import annotations


class ReverieError(Exception):
    """Base of every error a user of Reverie is meant to read."""

    error_type = "api_error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        return {"type": "error", "error": {"type": self.error_type, "message": self.message}}


class InvalidRequestError(ReverieError):
    error_type = "invalid_request_error"
    status = 400


class NotSupportedError(InvalidRequestError):
    """A feature of the hosted API that Reverie has not built yet."""


class NotFoundError(ReverieError):
    error_type = "not_found_error"
    status = 404


class ConflictError(ReverieError):
    error_type = "conflict_error"
    status = 409


class VersionConflictError(ConflictError):
    error_type = "version_conflict_error"


class MemoryPathConflictError(ConflictError):
    """A memory already has that path in the store; the body names it."""

    error_type = "memory_path_conflict_error"

    def __init__(self, message: str, conflicting_memory_id: str) -> None:
        super().__init__(message)
        self.conflicting_memory_id = conflicting_memory_id

    def to_dict(self) -> dict[str, object]:
        body = super().to_dict()
        body["error"]["conflicting_memory_id"] = self.conflicting_memory_id  # type: ignore[index]
        return body


class MemoryPreconditionFailedError(ConflictError):
    """The memory's content is no longer what the caller expected (someone changed it)."""

    error_type = "memory_precondition_failed_error"
