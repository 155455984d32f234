"""store/secrets.py fills Powertools' secret cache itself (prefetch: 20 secrets a request),
with keys made by a private Powertools method. This holds it to what get_secret looks up:
an upgrade that changes the key would make every host read its own secret again, and
fails here instead of passing silently."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from botocore.stub import Stubber

from mailfleet.models.hosts import Credentials
from mailfleet.store import secrets

NAME = "mailfleet/hosts/dc-1"


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    """Secrets Manager answering only what a test queues, to Powertools' provider and to
    our own calls alike: any other call fails."""
    client = boto3.client("secretsmanager", region_name="us-east-1")
    stubber = Stubber(client)
    monkeypatch.setitem(parameters.secrets.DEFAULT_PROVIDERS, "secrets",
                        parameters.SecretsProvider(boto3_client=client))
    monkeypatch.setattr(secrets.aws, "client", lambda service: client)
    with stubber:
        yield stubber


def batch_answer(*names: str, value: str = '{"api_key": "kkkkkkkkkkkk"}') -> dict[str, Any]:
    return {"SecretValues": [{"Name": n, "ARN": f"arn:aws:secretsmanager:us-east-1:1:secret:"
                              f"{n}-AbCdEf", "SecretString": value} for n in names],
            "Errors": []}


def test_a_prefetched_secret_is_read_from_the_cache(stub: Stubber) -> None:
    stub.add_response("batch_get_secret_value", batch_answer(NAME), {"SecretIdList": [NAME]})
    secrets.prefetch([NAME, NAME])
    stub.assert_no_pending_responses()
    # No response is queued for GetSecretValue: only the cache can answer.
    assert secrets.load(NAME) == Credentials(api_key="kkkkkkkkkkkk")
    # A second prefetch finds it cached and asks nothing.
    secrets.prefetch([NAME])


def test_a_secret_not_prefetched_is_asked_for(stub: Stubber) -> None:
    # Proof that the cache was what answered above: here the call is made, and fails.
    with pytest.raises(secrets.SecretProblem, match="not found or not readable"):
        secrets.load("mailfleet/hosts/not-prefetched")
