"""Settings, one model per concern, read from the environment the template gives each
function: a field's variable is its name in capitals (`hosts_table` <- HOSTS_TABLE).

A handler builds the ones it needs once per cold start and passes them to the services
it makes; a service made without them reads the environment then (tests and tools).
Tests build them with explicit values instead of setting variables. Reading the
environment costs a few hundred microseconds per model: not something to do per host.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class _FromEnv(BaseSettings):
    # An empty variable counts as unset (a template condition may give "").
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)


class Tables(_FromEnv):
    """The DynamoDB tables."""

    hosts_table: str = "mailfleet-hosts"
    jobs_table: str = "mailfleet-jobs"
    audit_table: str = "mailfleet-audit"
    tokens_table: str = "mailfleet-tokens"
    idempotency_table: str = "mailfleet-idempotency"
    cutovers_table: str = "mailfleet-cutovers"


class SecretSettings(_FromEnv):
    """Secrets Manager names: where managed host credentials go, the bootstrap admin token."""

    host_secrets_prefix: str = "mailfleet/hosts/"
    admin_token_secret: str | None = None


class JobLimits(_FromEnv):
    """When a job leaves the in-process path, and how long its results are kept."""

    # Jobs above this many targets (or with long timeouts, or wider than one worker's
    # sockets allow) go to the Distributed Map path. docs/scaling.md derives 2,000 from
    # the worker's CPU: one host-action costs ~0.3 ms of it.
    inprocess_max_targets: int = 2000
    # The longest worst case (timeout x waves, s) left to one worker.
    inprocess_max_seconds: float = 600.0
    # A job's host results live this long in the jobs table (TTL), in days.
    job_retention_days: int = 90


class FanoutSettings(_FromEnv):
    """Where jobs run: the fan-out worker function, and the Distributed Map path (its
    state machine, the bucket its batch lists go to, hosts per batch (a multiple of 25:
    one result write each 25) and hosts in flight per batch worker)."""

    fanout_function: str | None = None
    fanout_state_machine_arn: str | None = None
    jobs_bucket: str | None = None
    fanout_batch_size: int = 1000
    # A batch worker (1,024 MB: 0.58 vCPU) at ~0.65 ms of CPU a host-action does ~890 a
    # second: 20 in flight keeps it network-bound at doveadm's ~20 ms (docs/scaling.md).
    fanout_batch_concurrency: int = 20


class ApprovalSettings(_FromEnv):
    """Destructive jobs on more hosts than this wait for a second principal's approval,
    for at most approval_expiry_seconds (then CANCELLED)."""

    approval_threshold_hosts: int = 10
    approval_expiry_seconds: int = 3600


class ApplianceSettings(_FromEnv):
    """Long appliance operations: their state machine, where backups go, and the seconds
    between status polls."""

    appliance_operation_state_machine_arn: str | None = None
    backups_bucket: str | None = None
    appliance_poll_seconds: int = 10


class HealthSettings(_FromEnv):
    """Hosts probed at once by a health sweep, how long one probe may take (s), and the
    function a sweep asked for through the API runs in."""

    health_sweep_concurrency: int = 64
    health_probe_timeout: float = 5.0
    maintenance_function: str | None = None


class ScheduleSettings(_FromEnv):
    """Scheduled jobs: the function that sweeps and starts them, the Scheduler group and
    role for API-created schedules, and where an undeliverable schedule's event goes."""

    maintenance_function: str | None = None
    maintenance_function_arn: str | None = None
    schedule_group: str = "default"
    scheduler_role_arn: str | None = None
    failed_invocations_queue_arn: str | None = None


class AuditSettings(_FromEnv):
    """The audit trail's sealer: the KMS key it signs digests with (verification needs only
    its public key), how often it runs and how far behind now it seals (longer than any
    audited write can take between its stamp and its commit)."""

    audit_signing_key: str | None = None
    audit_seal_period_seconds: int = 300
    audit_seal_grace_seconds: int = 300


class CutoverSettings(_FromEnv):
    """The state machines that run cutovers and migrations."""

    cutover_state_machine_arn: str | None = None
    migration_state_machine_arn: str | None = None


class JobSettings(BaseModel):
    """What the job service and its execution paths need; a part not given is read from
    the environment."""

    model_config = ConfigDict(frozen=True)

    tables: Tables = Field(default_factory=Tables)
    limits: JobLimits = Field(default_factory=JobLimits)
    fanout: FanoutSettings = Field(default_factory=FanoutSettings)
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    appliance: ApplianceSettings = Field(default_factory=ApplianceSettings)


class ApiSettings(BaseModel):
    """What the API function hands the services its routes make."""

    model_config = ConfigDict(frozen=True)

    jobs: JobSettings = Field(default_factory=JobSettings)
    secrets: SecretSettings = Field(default_factory=SecretSettings)
    cutovers: CutoverSettings = Field(default_factory=CutoverSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    schedules: ScheduleSettings = Field(default_factory=ScheduleSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)

    @property
    def tables(self) -> Tables:
        return self.jobs.tables
