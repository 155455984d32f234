"""Settings read from the environment the template gives each function."""

from __future__ import annotations

import functools
import os

from pydantic import BaseModel


class Settings(BaseModel):
    hosts_table: str
    jobs_table: str
    audit_table: str
    tokens_table: str
    idempotency_table: str
    admin_token_secret: str | None = None
    host_secrets_prefix: str = "mailfleet/hosts/"
    fanout_function: str | None = None
    cutovers_table: str = "mailfleet-cutovers"
    cutover_state_machine_arn: str | None = None
    # Jobs above this many targets (or with long timeouts) go to the Distributed Map path.
    inprocess_max_targets: int = 500
    # A job's host results live this long in the jobs table (TTL), in days.
    job_retention_days: int = 90

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ

        def get(name: str, default: str | None = None) -> str | None:
            return env.get(name, default)

        return cls(
            hosts_table=get("HOSTS_TABLE", "mailfleet-hosts"),
            jobs_table=get("JOBS_TABLE", "mailfleet-jobs"),
            audit_table=get("AUDIT_TABLE", "mailfleet-audit"),
            tokens_table=get("TOKENS_TABLE", "mailfleet-tokens"),
            idempotency_table=get("IDEMPOTENCY_TABLE", "mailfleet-idempotency"),
            admin_token_secret=get("ADMIN_TOKEN_SECRET"),
            host_secrets_prefix=get("HOST_SECRETS_PREFIX", "mailfleet/hosts/"),
            fanout_function=get("FANOUT_FUNCTION"),
            cutovers_table=get("CUTOVERS_TABLE", "mailfleet-cutovers"),
            cutover_state_machine_arn=get("CUTOVER_STATE_MACHINE_ARN"),
            inprocess_max_targets=int(get("INPROCESS_MAX_TARGETS", "500") or 500),
            job_retention_days=int(get("JOB_RETENTION_DAYS", "90") or 90),
        )


@functools.cache
def settings() -> Settings:
    return Settings.from_env()
