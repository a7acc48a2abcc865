"""The ``fts3`` mover: transfers submitted to an FTS3 server through the ``fts3`` REST client.

Copies of a batch go into FTS jobs of at most ``job_size`` files, each file with the catalogue's
checksum (``ADLER32:xxxxxxxx``) and size, and ``verify_checksum`` (default ``both``: FTS compares the
source and the destination with it), so FTS only reports FINISHED for a verified copy. The external
id of a transfer is ``JOB_ID#FILE_INDEX``; :meth:`FTS3Mover.poll` reads the jobs' file states and maps
them to satdrp's (FINISHED → DONE, FAILED with FTS's reason → a failure kind, CANCELED), the rest are
still ACTIVE. Retries are satdrp's (``retry = 0`` for FTS by default), so one policy applies to
every mover.

Authentication: a bearer token (``token_env``, the name of an environment variable, or ``token``) or
an X509 certificate/proxy (``ucert``/``ukey``, delegated by the client). Tokens are never logged,
printed or stored in bookkeeping.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, SecretStr

from common.errors import ConfigError, DrpError, unreachable
from common.probes import Health, Probe, credential_file, http

from .base import (
    FailureKind,
    FileStat,
    Mover,
    MoverSettings,
    Outcome,
    Submitted,
    TransferRequest,
    TransferResult,
)

_ACTIVE_FILE = {
    "STAGING",
    "STARTED",
    "SUBMITTED",
    "READY",
    "ACTIVE",
    "ARCHIVING",
    "NOT_USED",
    "ON_HOLD",
    "TOKEN_PREP",
}


class FTS3Settings(MoverSettings):
    endpoint: str = Field(
        pattern=r"^https?://", description="FTS3 REST endpoint, e.g. https://fts3.example:8446"
    )
    token: SecretStr | None = None
    token_env: str | None = Field(default=None, description="environment variable holding a bearer token")
    ucert: str | None = None
    ukey: str | None = None
    capath: str | None = Field(default=None, description="CA directory (default: $X509_CERT_DIR)")
    verify: bool = True
    verify_checksum: Literal["both", "target", "source"] = "both"
    overwrite: bool = True
    retry: int = Field(default=0, ge=0, description="FTS-side retries (satdrp retries on its own)")
    priority: int = Field(default=3, ge=1, le=5)
    activity: str = "satdrp"
    job_size: int = Field(default=200, ge=1, le=10_000)
    timeout_s: int = Field(default=60, ge=1)


def classify(reason: str) -> FailureKind:
    """FTS's reason text → failure kind (FTS prefixes the side: SOURCE, DESTINATION, TRANSFER)."""
    r = reason.lower()
    if "checksum" in r:
        return FailureKind.CHECKSUM
    if r.startswith("source") and ("no such file" in r or "not found" in r or "[2]" in r):
        return FailureKind.SOURCE_MISSING
    if r.startswith("destination") or "permission denied" in r or "no space" in r:
        return FailureKind.DESTINATION
    if any(w in r for w in ("timeout", "timed out", "connection", "unreachable", "refused")):
        return FailureKind.NETWORK
    return FailureKind.OTHER


class FTS3Error(DrpError):
    """The FTS server refused a request or could not be reached."""


class FTS3Mover(Mover):
    name = "fts3"
    Settings = FTS3Settings
    settings: FTS3Settings

    def __init__(self, settings: FTS3Settings) -> None:
        super().__init__(settings)
        self._context: Any = None

    @property
    def context(self) -> Any:
        if self._context is None:
            import fts3.rest.client.easy as fts3

            s = self.settings
            token = s.token.get_secret_value() if s.token else None
            if s.token_env:
                token = os.environ.get(s.token_env)
                if not token:
                    raise ConfigError(
                        "site catalogue", "transfer.link.token_env", f"${s.token_env} is not set"
                    )
            kwargs: dict[str, Any] = {"verify": s.verify, "capath": s.capath, "timeout": s.timeout_s}
            if token:
                kwargs["fts_access_token"] = token
            else:
                kwargs["ucert"], kwargs["ukey"] = s.ucert, s.ukey
            try:
                self._context = fts3.Context(s.endpoint, **kwargs)
            except Exception as err:  # BadEndpoint and friends; the message never holds the token
                raise FTS3Error(f"cannot reach FTS at {s.endpoint}: {type(err).__name__}: {err}") from err
        return self._context

    def submit(self, requests: Sequence[TransferRequest]) -> list[Submitted]:
        import fts3.rest.client.easy as fts3
        from fts3.rest.client.exceptions import ClientError

        out: list[Submitted] = []
        for start in range(0, len(requests), self.settings.job_size):
            batch = requests[start : start + self.settings.job_size]
            transfers = [
                fts3.new_transfer(
                    r.source,
                    r.dest,
                    checksum=f"ADLER32:{r.adler32}",
                    filesize=r.size,
                    activity=self.settings.activity,
                    metadata={"transfer_id": r.transfer_id},
                )
                for r in batch
            ]
            job = fts3.new_job(
                transfers,
                verify_checksum=self.settings.verify_checksum,
                overwrite=self.settings.overwrite,
                retry=self.settings.retry,
                priority=self.settings.priority,
                metadata={"submitter": "satdrp"},
            )
            try:
                job_id = fts3.submit(self.context, job)
            except ClientError as err:  # FTS refused the job: no point retrying it as it is
                out.extend(
                    Submitted(
                        r.transfer_id,
                        result=TransferResult(
                            r.transfer_id, Outcome.FAILED, FailureKind.OTHER, f"FTS refused the job: {err}"
                        ),
                    )
                    for r in batch
                )
                continue
            except Exception as err:
                out.extend(
                    Submitted(
                        r.transfer_id,
                        result=TransferResult(
                            r.transfer_id,
                            Outcome.FAILED,
                            FailureKind.UNREACHABLE if unreachable(err) else FailureKind.NETWORK,
                            f"FTS at {self.settings.endpoint}: submit failed: {type(err).__name__}: {err}",
                        ),
                    )
                    for r in batch
                )
                continue
            out.extend(Submitted(r.transfer_id, external_id=f"{job_id}#{i}") for i, r in enumerate(batch))
        return out

    def poll(self, external_ids: Mapping[int, str]) -> list[TransferResult]:
        import fts3.rest.client.easy as fts3
        from fts3.rest.client.exceptions import NotFound

        by_job: dict[str, dict[int, int]] = defaultdict(dict)
        for transfer_id, ext in external_ids.items():
            job_id, _, index = ext.partition("#")
            by_job[job_id][int(index or 0)] = transfer_id
        results: list[TransferResult] = []
        for job_id, files in by_job.items():
            try:
                status = fts3.get_job_status(self.context, job_id, list_files=True)
            except NotFound:
                results.extend(
                    TransferResult(t, Outcome.FAILED, FailureKind.OTHER, f"FTS does not know job {job_id}")
                    for t in files.values()
                )
                continue
            for f in status.get("files", []):
                tid = files.get(int(f.get("file_index", -1)))
                if tid is None:
                    continue
                state = f.get("file_state", "")
                reason = f.get("reason") or ""
                duration = float(f.get("tx_duration") or 0.0)
                if state == "FINISHED":
                    size = int(f.get("filesize") or f.get("user_filesize") or 0)
                    results.append(TransferResult(tid, Outcome.DONE, None, "", size, duration))
                elif state == "FAILED":
                    results.append(
                        TransferResult(
                            tid,
                            Outcome.FAILED,
                            classify(reason),
                            f"FTS job {job_id}: {reason}",
                            0,
                            duration,
                        )
                    )
                elif state == "CANCELED":
                    results.append(
                        TransferResult(
                            tid, Outcome.FAILED, FailureKind.CANCELLED, f"FTS job {job_id} canceled"
                        )
                    )
                else:
                    results.append(TransferResult(tid, Outcome.ACTIVE))
        return results

    def cancel(self, external_ids: Mapping[int, str]) -> None:
        import fts3.rest.client.easy as fts3

        for job_id in sorted({e.partition("#")[0] for e in external_ids.values()}):
            fts3.cancel(self.context, job_id)

    def probe(self, roots: Sequence[str]) -> list[Probe]:
        s = self.settings
        endpoint = http("FTS3 endpoint", s.endpoint, verify=s.verify)
        creds = self._credentials()
        if endpoint.health is not Health.OK or creds.health is not Health.OK:
            return [endpoint, creds]
        import fts3.rest.client.easy as fts3

        try:  # the credentials are present: does FTS accept them?
            who = fts3.whoami(self.context)
        except Exception as err:  # the client raises its own tree; the text never holds the token
            return [endpoint, Probe(creds.check, Health.NO_CREDENTIALS, f"refused: {type(err).__name__}")]
        user = who.get("user_dn") or who.get("dn") or "?"
        return [endpoint, Probe(creds.check, Health.OK, f"{creds.detail}; FTS knows us as {user}")]

    def _credentials(self) -> Probe:
        s, check = self.settings, "FTS3 credentials"
        if s.token is not None:
            return Probe(check, Health.OK, "bearer token configured")
        if s.token_env:
            if os.environ.get(s.token_env):
                return Probe(check, Health.OK, f"bearer token in ${s.token_env}")
            return Probe(check, Health.NO_CREDENTIALS, f"${s.token_env} is not set")
        if s.ucert:
            cert = credential_file(check, s.ucert, "certificate")
            return cert if cert.health is not Health.OK else credential_file(check, s.ukey or s.ucert, "key")
        proxy = os.environ.get("X509_USER_PROXY") or f"/tmp/x509up_u{os.getuid()}"
        return credential_file(check, proxy, "X.509 proxy")

    def stat(self, url: str, *, checksum: bool = True) -> FileStat | None:
        raise FTS3Error(
            f"the fts3 mover has no storage access ({url}): use the site's storage mover to inspect files"
        )

    def delete(self, url: str) -> None:
        raise FTS3Error(f"the fts3 mover has no storage access ({url}): FTS removes bad copies itself")

    def close(self) -> None:
        self._context = None
