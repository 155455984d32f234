"""The embedded AWS: moto in server mode on 127.0.0.1 inside this process (so the Lambda
bridge can run our handlers), with real Step Functions execution, no Docker, and the
process environment pointed at it."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailfleet_local import lambda_bridge, moto_speed, moto_transactions
from mailfleet_local.stack.model import TABLE, Deployment

# Not under `mailfleet`: Powertools' Logger(service=mailfleet) owns that one and would
# stamp these lines with whichever function's keys it holds.
log = logging.getLogger("mailfleet-local.stack")

ACCOUNT_ID = "123456789012"
DEFAULT_STACK_NAME = "mailfleet"
# moto accepts anything; fixed fakes keep a real credential out of every request.
FAKE_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "aws_session_token": "testing",
}

_running: LocalAws | None = None
_running_lock = threading.Lock()


class LocalAws:
    """moto in server mode on 127.0.0.1, and the process environment pointed at it."""

    def __init__(self, region: str | None = None, port: int = 0, bridge: bool = True,
                 dynamodb_apart: bool | None = None) -> None:
        """`dynamodb_apart`: serve DynamoDB from a moto process of its own
        (mailfleet_local.dynamodb_process); None: as MAILFLEET_LOCAL_DYNAMODB says
        (`process`; in this process otherwise)."""
        self.region = (
            region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        ) or "us-east-1"
        self.account_id = ACCOUNT_ID
        self._requested_port = port
        self._bridge = bridge
        self._server: Any = None
        self._saved_env: dict[str, str | None] = {}
        self.port: int | None = None
        self._clients: dict[tuple[str, str], Any] = {}
        self._clients_lock = threading.Lock()
        self._session: Any = None
        self._saved_config: dict[str, Any] = {}
        self._dynamodb: Any = None
        self._deployed = False
        if dynamodb_apart is None:
            dynamodb_apart = os.environ.get("MAILFLEET_LOCAL_DYNAMODB") == "process"
        self._dynamodb_apart = dynamodb_apart
        self._collector: tuple[int, ...] | None = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("LocalAws is not started")
        return f"http://127.0.0.1:{self.port}"

    def endpoint_for(self, service: str) -> str:
        """Where a client of `service` goes: DynamoDB's own process, or this moto."""
        if service == "dynamodb" and self._dynamodb is not None:
            return str(self._dynamodb.url)
        return self.endpoint_url

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalAws:
        global _running
        with _running_lock:
            if _running is not None:
                raise RuntimeError("a LocalAws already runs in this process (moto state is global)")
            _running = self
        from moto.core.config import default_user_config
        from moto.server import ThreadedMotoServer

        # The request log names every moto call; our own front logs what matters.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._saved_config = {k: default_user_config.get(k) for k in ("lambda", "stepfunctions")}
        default_user_config["lambda"] = {"use_docker": False}
        default_user_config["stepfunctions"] = {"execute_state_machine": True}
        # Always loopback: ThreadedMotoServer's own default is every interface.
        self._server = ThreadedMotoServer(
            ip_address="127.0.0.1", port=self._requested_port, verbose=False
        )
        # Transactions as DynamoDB runs them (every audited change is one): see the module.
        moto_transactions.install()
        # moto's per-request routing and its DynamoDB response writer: see the module.
        moto_speed.install()
        if self._dynamodb_apart:
            from mailfleet_local.dynamodb_process import DynamoDBProcess

            self._dynamodb = DynamoDBProcess().start()
        self._server.start()
        self.port = int(self._server.get_host_and_port()[1])
        # moto's ASL interpreter takes over a second to import: let it load meanwhile.
        threading.Thread(target=_warm_up_step_functions, name="sfn-warm-up", daemon=True).start()
        self._set_env(self._aws_env())
        if self._bridge:
            lambda_bridge.install()
        self._collector = moto_speed.collect_less()  # moto's items live in this process
        return self

    def _aws_env(self) -> dict[str, str | None]:
        env: dict[str, str | None] = {
            # Step Functions' interpreter calls Lambda at localhost:$MOTO_PORT.
            "MOTO_PORT": str(self.port),
            "AWS_ENDPOINT_URL": self.endpoint_url,
            **{key.upper(): value for key, value in FAKE_CREDENTIALS.items()},
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            # A profile or config file could point a client at real AWS.
            "AWS_PROFILE": None,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": None,
        }
        # A proxy from the environment must not sit between the clients and moto.
        for key in ("NO_PROXY", "no_proxy"):
            hosts = [h for h in os.environ.get(key, "").split(",") if h]
            env[key] = ",".join([*hosts, "127.0.0.1", "localhost"])
        # A per-service endpoint variable would win over AWS_ENDPOINT_URL.
        for key in os.environ:
            if key.startswith("AWS_ENDPOINT_URL_"):
                env[key] = None
        if self._dynamodb is not None:
            env["AWS_ENDPOINT_URL_DYNAMODB"] = self._dynamodb.url
        return env

    def _set_env(self, values: Mapping[str, str | None]) -> None:
        for key, value in values.items():
            if key not in self._saved_env:
                self._saved_env[key] = os.environ.get(key)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Wait for async invocations, stop moto, put the environment back."""
        global _running
        if self._server is None:
            return
        if not lambda_bridge.drain(drain_timeout):
            log.warning("async Lambda invocations still running at stop")
        self._server.stop()
        self._server = None
        if self._dynamodb is not None:
            self._dynamodb.stop()
            self._dynamodb = None
        self._clients.clear()
        self._session = None
        if self._bridge:
            lambda_bridge.uninstall()
            lambda_bridge.unregister_all()
        from moto.core.config import default_user_config

        default_user_config.update(self._saved_config)  # type: ignore[typeddict-item]
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        if self._collector is not None:
            moto_speed.collect_as_before(self._collector)
            self._collector = None
        with _running_lock:
            _running = None

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client pointed at this moto, whatever the environment says.

        Clients without extra arguments are cached (boto3 clients are thread-safe, and
        making one costs tens of milliseconds).
        """
        import boto3

        endpoint = self.endpoint_for(service)
        key = (service, endpoint)
        with self._clients_lock:
            if not kwargs and key in self._clients:
                return self._clients[key]
            # A session of our own (moto's mock_aws patches boto3's default one), shared so
            # that botocore loads each model once; sessions are not thread-safe: the lock.
            if self._session is None:
                self._session = boto3.session.Session(region_name=self.region, **FAKE_CREDENTIALS)
            client = self._session.client(service, endpoint_url=endpoint, **kwargs)
            if not kwargs:
                self._clients[key] = client
        return client

    def reset(self) -> None:
        """Wipe every resource in moto (the server keeps running)."""
        import requests

        with requests.Session() as session:
            session.trust_env = False  # no proxy between us and 127.0.0.1
            session.post(f"{self.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()
        if self._dynamodb is not None:
            self._dynamodb.reset()

    def is_deployed(self, deployment: Deployment) -> bool:
        """False once moto lost the deployment (a mock_aws() in a test resets everything)."""
        try:
            backend = lambda_bridge.lambda_backend(self.region, self.account_id)
            for info in deployment.functions.values():
                backend.get_function(info.name)
            tables = self._table_names()
        except Exception:
            return False
        return all(r.name in tables for r in deployment.resources.values() if r.type == TABLE)

    def _table_names(self) -> set[str]:
        if self._dynamodb is None:
            from moto.dynamodb.models import dynamodb_backends

            return set(dynamodb_backends[self.account_id][self.region].tables)
        pages = self.client("dynamodb").get_paginator("list_tables").paginate()
        return {name for page in pages for name in page["TableNames"]}

    def _has_functions(self) -> bool:
        return bool(lambda_bridge.lambda_backend(self.region, self.account_id).list_functions())

    def dynamodb_cpu_seconds(self) -> float:
        """CPU used so far by DynamoDB's own process (0 when it runs in this one)."""
        return self._dynamodb.cpu_seconds() if self._dynamodb is not None else 0.0

    def deploy(
        self,
        template_path: str | Path,
        parameter_overrides: Mapping[str, Any] | None = None,
        secret_values: Mapping[str, str | Mapping[str, Any]] | None = None,
        stack_name: str = DEFAULT_STACK_NAME,
        apply_environment: bool = True,
    ) -> Deployment:
        """Create the template's resources in moto; see the module docstring."""
        if self.port is None:
            raise RuntimeError("start LocalAws before deploying")
        started = time.monotonic()
        from mailfleet_local.stack.deployer import Deployer

        if self._dynamodb is not None and self._deployed and not self._has_functions():
            # A mock_aws() wiped this process's moto since the last deploy: DynamoDB's
            # process is wiped with it, as the in-process one would have been.
            self._dynamodb.reset()

        deployer = Deployer(
            self,
            Path(template_path),
            dict(parameter_overrides or {}),
            dict(secret_values or {}),
            stack_name,
        )
        deployment = deployer.run()
        self._deployed = True
        if apply_environment:
            self._set_env(deployment.environment)
        log.info(
            "deployed %s: %d resources, %d skipped, in %.2f s",
            stack_name,
            len(deployment.resources),
            len(deployment.skipped),
            time.monotonic() - started,
        )
        return deployment


def _warm_up_step_functions() -> None:
    import importlib

    try:
        importlib.import_module("moto.stepfunctions.parser.models")
    except Exception:  # the first CreateStateMachine would import it anyway
        log.debug("warming up Step Functions failed", exc_info=True)
