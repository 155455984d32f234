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
    migration_state_machine_arn: str | None = None
    # Jobs above this many targets (or with long timeouts, or wider than one worker's
    # sockets allow) go to the Distributed Map path. docs/scaling.md derives 2,000 from
    # the worker's CPU: one host-action costs ~0.3 ms of it.
    inprocess_max_targets: int = 2000
    # A job's host results live this long in the jobs table (TTL), in days.
    job_retention_days: int = 90
    # The Distributed Map path: its state machine, the bucket its batch lists go to, the
    # longest worst case (timeout x waves, s) left to one worker, hosts per batch (a
    # multiple of 25: one result write each 25) and hosts in flight per batch worker.
    fanout_state_machine_arn: str | None = None
    jobs_bucket: str | None = None
    inprocess_max_seconds: float = 600.0
    fanout_batch_size: int = 1000
    fanout_batch_concurrency: int = 40
    # Scheduled maintenance: the function that sweeps and starts scheduled jobs, the
    # Scheduler group and role for API-created schedules, appliance operations.
    maintenance_function: str | None = None
    maintenance_function_arn: str | None = None
    schedule_group: str = "default"
    scheduler_role_arn: str | None = None
    # Where a schedule's event goes when Scheduler cannot deliver it (an SQS queue).
    failed_invocations_queue_arn: str | None = None
    appliance_operation_state_machine_arn: str | None = None
    backups_bucket: str | None = None
    # Hosts probed at once by a health sweep, and how long one probe may take (s).
    health_sweep_concurrency: int = 64
    health_probe_timeout: float = 5.0
    # Seconds between status polls of a long appliance operation.
    appliance_poll_seconds: int = 10
    # The audit trail's sealer: the KMS key it signs digests with (verification needs only
    # its public key), how often it runs and how far behind now it seals (longer than any
    # audited write can take between its stamp and its commit).
    audit_signing_key: str | None = None
    audit_seal_period_seconds: int = 300
    audit_seal_grace_seconds: int = 300
    # Destructive jobs on more hosts than this wait for a second principal's approval,
    # for at most approval_expiry_seconds (then CANCELLED).
    approval_threshold_hosts: int = 10
    approval_expiry_seconds: int = 3600

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
            migration_state_machine_arn=get("MIGRATION_STATE_MACHINE_ARN"),
            inprocess_max_targets=int(get("INPROCESS_MAX_TARGETS", "2000") or 2000),
            job_retention_days=int(get("JOB_RETENTION_DAYS", "90") or 90),
            fanout_state_machine_arn=get("FANOUT_STATE_MACHINE_ARN"),
            jobs_bucket=get("JOBS_BUCKET"),
            inprocess_max_seconds=float(get("INPROCESS_MAX_SECONDS", "600") or 600),
            fanout_batch_size=int(get("FANOUT_BATCH_SIZE", "1000") or 1000),
            fanout_batch_concurrency=int(get("FANOUT_BATCH_CONCURRENCY", "40") or 40),
            maintenance_function=get("MAINTENANCE_FUNCTION"),
            maintenance_function_arn=get("MAINTENANCE_FUNCTION_ARN"),
            schedule_group=get("SCHEDULE_GROUP", "default") or "default",
            scheduler_role_arn=get("SCHEDULER_ROLE_ARN"),
            failed_invocations_queue_arn=get("FAILED_INVOCATIONS_QUEUE_ARN"),
            appliance_operation_state_machine_arn=get("APPLIANCE_OPERATION_STATE_MACHINE_ARN"),
            backups_bucket=get("BACKUPS_BUCKET"),
            health_sweep_concurrency=int(get("HEALTH_SWEEP_CONCURRENCY", "64") or 64),
            health_probe_timeout=float(get("HEALTH_PROBE_TIMEOUT", "5") or 5),
            audit_signing_key=get("AUDIT_SIGNING_KEY") or None,
            audit_seal_period_seconds=int(get("AUDIT_SEAL_PERIOD_SECONDS", "300") or 300),
            audit_seal_grace_seconds=int(get("AUDIT_SEAL_GRACE_SECONDS", "300") or 300),
            appliance_poll_seconds=int(get("APPLIANCE_POLL_SECONDS", "10") or 10),
            approval_threshold_hosts=int(get("APPROVAL_THRESHOLD_HOSTS", "10") or 0),
            approval_expiry_seconds=int(get("APPROVAL_EXPIRY_SECONDS", "3600") or 3600),
        )


@functools.cache
def settings() -> Settings:
    return Settings.from_env()
