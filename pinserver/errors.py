"""The one exception hierarchy of pinserver.

Every error has a stable machine-readable ``code`` (used in HTTP error bodies,
CLI ``--json`` output and client results) and an HTTP ``status``. This module
imports nothing from Flask or requests so that the pure core can use it.

    PinserverError
    ├─ VerificationError        untrusted data rejected
    │  ├─ FormatError           cannot parse / violates the schema (names the field)
    │  │  ├─ EnvelopeError      the DSSE envelope itself is malformed (HTTP 400)
    │  │  └─ TooLargeError      over a size cap (HTTP 413)
    │  ├─ SignatureError        threshold unmet, bad signature, unknown key
    │  ├─ RollbackError         version below trusted (same version, other payload, too)
    │  ├─ ForkError             hash chain broken
    │  └─ ExpiredError          expired or not yet valid (skew allowed)
    ├─ PinMismatchError         live chain matches no pin
    ├─ FetchError               network, HTTP status, size or time limit
    ├─ KeyFileError             a key file cannot be read, written or decrypted
    ├─ LintFailedError          lint found errors and publication was not forced
    └─ StoreError               storage failed or is corrupt
       └─ VersionConflictError  not the next version / not chained to the latest
"""

from __future__ import annotations


class PinserverError(Exception):
    """Base of every error pinserver raises on purpose."""

    code: str = "error"
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, object]:
        """The ``error`` object of an HTTP error body."""
        return {"code": self.code, "message": self.message}


class VerificationError(PinserverError):
    """Untrusted data was rejected; trusted state is unchanged."""

    code = "verification_failed"
    status = 422


class FormatError(VerificationError):
    """A document cannot be parsed or breaks the schema; ``field`` names where."""

    code = "invalid_document"
    status = 422

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        full = f"{field}: {message}" if field else message
        super().__init__(full, code=code)
        self.field = field


class EnvelopeError(FormatError):
    """The DSSE envelope is not well formed (before any signature is checked)."""

    code = "invalid_envelope"
    status = 400


class TooLargeError(FormatError):
    """Input over a size cap (1 MiB envelopes, 32 pins a set, ...)."""

    code = "too_large"
    status = 413


class SignatureError(VerificationError):
    """Signatures do not meet the threshold of the role that must sign."""

    code = "signature_threshold"
    status = 403


class RollbackError(VerificationError):
    """A version lower than the trusted one, or the same version with other bytes."""

    code = "rollback"
    status = 409


class ForkError(VerificationError):
    """``previous`` does not chain to the trusted payload hash."""

    code = "fork"
    status = 409


class ExpiredError(VerificationError):
    """Outside a validity window: expired, or not yet valid beyond the allowed skew."""

    code = "expired"
    status = 422


class PinMismatchError(PinserverError):
    """A TLS peer's verified chain matches no pin of the host's pin set."""

    code = "pin_mismatch"
    status = 502

    def __init__(self, message: str, *, host: str = "", observed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.host = host
        self.observed = observed


class FetchError(PinserverError):
    """Network failure, unexpected HTTP status, or a size or time limit hit."""

    code = "fetch_failed"
    status = 502

    def __init__(
        self, message: str, *, http_status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.http_status = http_status


class KeyFileError(PinserverError):
    """A key file is missing, malformed, would be overwritten, or will not decrypt."""

    code = "key_file"
    status = 400


class LintFailedError(PinserverError):
    """Lint found errors; publication needs ``--force`` with a reason."""

    code = "lint_failed"
    status = 422


class StoreError(PinserverError):
    """The store failed, or its content is corrupt."""

    code = "store_error"
    # The request was fine; the service cannot complete it now (disk full, database
    # down, damaged store): 503 tells clients and load balancers to retry elsewhere.
    status = 503


class VersionConflictError(StoreError):
    """Not the next version, or ``previous`` is not the latest payload hash."""

    code = "version_conflict"
    status = 409

    def __init__(self, message: str, *, latest_version: int | None = None) -> None:
        super().__init__(message)
        self.latest_version = latest_version

    def to_dict(self) -> dict[str, object]:
        body = super().to_dict()
        if self.latest_version is not None:
            body["latest_version"] = self.latest_version
        return body
