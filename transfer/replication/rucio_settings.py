"""The ``rucio`` back-end's settings and its file-name mapping (kept apart from the back-end so that
the catalogue can validate them without the back-end's imports)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from common.errors import InvalidInputError

from .base import ReplicationSettings


class RucioSettings(ReplicationSettings):
    host: str = Field(pattern=r"^https?://", description="Rucio REST endpoint")
    auth_host: str | None = Field(default=None, pattern=r"^https?://")
    account: str = "root"
    auth_type: Literal["userpass", "x509", "x509_proxy", "oidc"] = "userpass"
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = Field(default=None, description="environment variable holding the password")
    client_cert: str | None = None
    client_key: str | None = None
    ca_cert: str | None = None
    rse_suffix: str = Field(default="_DISK", pattern=r"^[A-Z0-9_-]*$")
    timeout_s: float = Field(default=60.0, gt=0)
    transfers: Literal["satdrp", "conveyor"] = Field(
        default="satdrp",
        description="who moves the bytes: satdrp's engine (then it tells Rucio), or Rucio's conveyor + FTS3",
    )
    register_batch: int = Field(
        default=5000,
        ge=1,
        le=20000,
        description="files per registration call (replicas added and attached to the dataset in one "
        "transaction; sent as attachments of 1,000, Rucio's limit per list)",
    )
    register_in_flight: int = Field(
        default=8, ge=1, le=32, description="registration calls sent at once, each on its own connection"
    )
    fts: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="conveyor mode: the FTS3 endpoint given to Rucio's RSEs",
    )

    @model_validator(mode="after")
    def _conveyor_needs_fts(self) -> RucioSettings:
        if self.transfers == "conveyor" and not self.fts:
            raise ValueError(
                "transfers = 'conveyor' needs fts, the FTS3 endpoint Rucio's conveyor submits to"
            )
        return self


def file_did(name: str) -> tuple[str, str]:
    """Logical file name → Rucio (scope, name): the first path component is the scope."""
    scope, sep, rest = name.partition("/")
    if not sep or not rest:
        raise InvalidInputError(
            f"file {name!r}: with Rucio, logical names are SCOPE/PATH (e.g. dr1/raw/x.fits)"
        )
    return scope, rest
