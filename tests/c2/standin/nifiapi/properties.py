"""PropertyDescriptor, StandardValidators, ExpressionLanguageScope, FlowFile proxy (stand-in)."""

from __future__ import annotations

from enum import Enum
from typing import Any


class ExpressionLanguageScope(Enum):
    NONE = 1
    ENVIRONMENT = 2
    FLOWFILE_ATTRIBUTES = 3


class StandardValidators:
    ALWAYS_VALID = 0
    NON_EMPTY_VALIDATOR = 1


class PropertyDescriptor:
    def __init__(self, name: str, description: str, required: bool = False, sensitive: bool = False, display_name: str | None = None,
                 default_value: str | None = None, allowable_values: list[str] | None = None, dependencies: Any = None,
                 expression_language_scope: ExpressionLanguageScope = ExpressionLanguageScope.NONE, dynamic: bool = False,
                 validators: list[Any] | None = None, resource_definition: Any = None, controller_service_definition: Any = None) -> None:
        self.name, self.description, self.required, self.sensitive = name, description, required, sensitive
        self.defaultValue = None if default_value is None else str(default_value)
        self.allowableValues, self.expressionLanguageScope = allowable_values, expression_language_scope
        self.validators = validators or [StandardValidators.ALWAYS_VALID]
        self.dependencies, self.controllerServiceDefinition = dependencies, controller_service_definition


class PropertyValue:
    def __init__(self, value: str | None) -> None:
        self.value = value

    def evaluateAttributeExpressions(self, flow_file: Any = None) -> "PropertyValue":
        return self

    def getValue(self) -> str | None:
        return self.value


class ProcessContext:
    """Values by property name; a property that is not set has its descriptor's default."""

    def __init__(self, values: dict[str, str], descriptors: list[PropertyDescriptor]) -> None:
        self.values, self.descriptors = values, {d.name: d for d in descriptors}

    def getProperty(self, descriptor: Any) -> PropertyValue:
        name = descriptor if isinstance(descriptor, str) else descriptor.name
        d = self.descriptors.get(name)
        return PropertyValue(self.values.get(name, d.defaultValue if d else None))


class FlowFile:
    """MiNiFi's FlowFile proxy: contents through the session."""

    def __init__(self, session: Any, cpp_flow_file: Any) -> None:
        self.session, self.cpp_flow_file = session, cpp_flow_file

    def getContentsAsBytes(self) -> bytes:
        return bytes(self.session.getContentsAsBytes(self.cpp_flow_file))

    def getAttribute(self, name: str) -> str | None:
        return self.cpp_flow_file.getAttribute(name)
