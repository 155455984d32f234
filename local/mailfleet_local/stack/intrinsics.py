"""CloudFormation's intrinsic functions (!Ref, !GetAtt, !Sub, !If, ...) over the parsed
template, and the references that order the resources."""

from __future__ import annotations

import base64
import re
from typing import Any

from mailfleet_local.stack.model import DeployError, Resource

_NO_VALUE = object()  # !Ref AWS::NoValue: drop the key or list item
INTRINSICS = {
    "Ref",
    "Condition",
    "Fn::GetAtt",
    "Fn::Sub",
    "Fn::Join",
    "Fn::If",
    "Fn::Equals",
    "Fn::Not",
    "Fn::And",
    "Fn::Or",
    "Fn::Select",
    "Fn::Split",
    "Fn::FindInMap",
    "Fn::Base64",
    "Fn::GetAZs",
    "Fn::ImportValue",
}
SUB_VAR = re.compile(r"\$\{([^}]*)\}")


def as_text(value: Any) -> str:
    """A value as CloudFormation writes it into a string (booleans in lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def plain(value: Any) -> Any:
    """cfn-lint's node classes, as plain dicts, lists and strings."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in INTRINSICS


def _getatt_parts(arg: Any) -> tuple[str, str]:
    if isinstance(arg, str):
        logical, _, attr = arg.partition(".")
        return logical, attr
    return str(arg[0]), str(arg[1])


def references(value: Any) -> set[str]:
    """Logical ids (and parameter names) that a value refers to."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= references(item)
    elif isinstance(value, dict):
        if is_intrinsic(value):
            ((key, arg),) = value.items()
            if key == "Ref" and isinstance(arg, str):
                found.add(arg)
            elif key == "Fn::GetAtt":
                found.add(_getatt_parts(arg)[0])
            elif key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                for var in SUB_VAR.findall(str(text)):
                    if not var.startswith("!") and var.split(".")[0] not in variables:
                        found.add(var.split(".")[0])
                found |= references(variables)
            elif key == "Fn::If":
                found |= references(arg[1:])
            else:
                found |= references(arg)
        else:
            for item in value.values():
                found |= references(item)
    return {f for f in found if not f.startswith("AWS::")}


class Resolver:
    def __init__(
        self,
        pseudo: dict[str, Any],
        parameters: dict[str, Any],
        mappings: dict[str, Any],
        region: str,
    ) -> None:
        self.pseudo = pseudo
        self.parameters = parameters
        self.mappings = mappings
        self.region = region
        self.conditions: dict[str, bool] = {}
        self.physical: dict[str, Resource] = {}
        self.aliases: dict[str, str] = {}  # SAM's implicit ids, e.g. ApiFunctionRole -> role

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not _NO_VALUE]
        if isinstance(value, dict):
            if is_intrinsic(value):
                ((key, arg),) = value.items()
                return self._intrinsic(key, arg)
            resolved = {k: self.resolve(v) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not _NO_VALUE}
        return plain(value)

    def _resource(self, logical_id: str) -> Resource:
        logical_id = self.aliases.get(logical_id, logical_id)
        if logical_id not in self.physical:
            raise DeployError(f"reference to {logical_id}, which is not (yet) created")
        return self.physical[logical_id]

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self._resource(name).ref

    def getatt(self, logical_id: str, attr: str) -> Any:
        resource = self._resource(logical_id)
        if attr not in resource.attributes:
            raise DeployError(f"!GetAtt {logical_id}.{attr}: unknown attribute for {resource.type}")
        return resource.attributes[attr]

    def sub(self, text: str, variables: dict[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            var = match.group(1)
            if var.startswith("!"):
                return "${" + var[1:] + "}"
            if var in variables:
                return as_text(variables[var])
            if "." in var and not var.startswith("AWS::"):
                logical, attr = var.split(".", 1)
                return as_text(self.getatt(logical, attr))
            return as_text(self.ref(var))

        return SUB_VAR.sub(replace, text)

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            raise DeployError(f"unknown condition {name}")
        return self.conditions[name]

    def _intrinsic(self, key: str, arg: Any) -> Any:
        if key == "Ref":
            return self.ref(str(arg))
        if key == "Condition":
            return self.condition(str(arg))
        if key == "Fn::GetAtt":
            logical, attr = _getatt_parts(arg)
            return self.getatt(logical, attr)
        if key == "Fn::Sub":
            if isinstance(arg, str):
                return self.sub(arg, {})
            return self.sub(str(self.resolve(arg[0])), self.resolve(arg[1]))
        if key == "Fn::Join":
            delimiter, items = arg
            return str(delimiter).join(as_text(v) for v in self.resolve(items))
        if key == "Fn::Select":
            index, items = self.resolve(arg)
            return items[int(index)]
        if key == "Fn::Split":
            delimiter, text = self.resolve(arg)
            return str(text).split(delimiter)
        if key == "Fn::If":
            name, if_true, if_false = arg
            return self.resolve(if_true if self.condition(str(name)) else if_false)
        if key == "Fn::Equals":
            left, right = self.resolve(arg)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not self.resolve(arg)[0]
        if key == "Fn::And":
            return all(self.resolve(arg))
        if key == "Fn::Or":
            return any(self.resolve(arg))
        if key == "Fn::FindInMap":
            name, top, second = self.resolve(arg)
            return self.mappings[name][top][second]
        if key == "Fn::Base64":
            return base64.b64encode(str(self.resolve(arg)).encode()).decode()
        if key == "Fn::GetAZs":
            return [f"{self.region}{z}" for z in "abc"]
        raise DeployError(f"{key} is not supported locally")
