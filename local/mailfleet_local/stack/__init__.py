"""The embedded AWS: a moto server on 127.0.0.1 and a deployer that reads template.yaml.

`LocalAws` starts moto in server mode inside this process (so the Lambda bridge can run
our handlers), with real Step Functions execution and no Docker. `LocalAws.deploy()`
creates what the template declares, in dependency order, under the names the template
gives: the template stays the one source of truth for names and wiring.

moto keeps its state per process, so only one LocalAws may run in a process at a time.
Note that `moto.mock_aws()` resets every backend when it starts and stops: a test using it
wipes a running LocalAws's resources (`LocalAws.is_deployed()` tells, redeploy if needed).

Layout: `server` (LocalAws: moto and the environment), `deployer` (order, parameters,
conditions), `resources/` (one creator per resource type), `wiring` (API routes,
schedules and rules from Events), `intrinsics` (!Ref, !Sub, ...), `template` (SAM's
rules), `model` (what a deployment is).
"""

from mailfleet_local.stack.deployer import Deployer
from mailfleet_local.stack.intrinsics import Resolver, references
from mailfleet_local.stack.model import (
    ApiInfo,
    AuthorizerInfo,
    DeployError,
    Deployment,
    EventRuleInfo,
    FunctionInfo,
    GatewayResponse,
    Resource,
    Route,
    ScheduleInfo,
    SkippedResource,
)
from mailfleet_local.stack.resources.secrets import generate_secret_string
from mailfleet_local.stack.server import (
    ACCOUNT_ID,
    DEFAULT_STACK_NAME,
    FAKE_CREDENTIALS,
    LocalAws,
)
from mailfleet_local.stack.template import NOT_EMULATED, PER_FUNCTION_ONLY

__all__ = [
    "ACCOUNT_ID",
    "DEFAULT_STACK_NAME",
    "FAKE_CREDENTIALS",
    "NOT_EMULATED",
    "PER_FUNCTION_ONLY",
    "ApiInfo",
    "AuthorizerInfo",
    "DeployError",
    "Deployer",
    "Deployment",
    "EventRuleInfo",
    "FunctionInfo",
    "GatewayResponse",
    "LocalAws",
    "Resolver",
    "Resource",
    "Route",
    "ScheduleInfo",
    "SkippedResource",
    "generate_secret_string",
    "references",
]
