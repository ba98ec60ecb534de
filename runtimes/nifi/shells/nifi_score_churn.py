"""ScoreChurn for Apache NiFi 2.x (a ``FlowFileTransform``; ``edgefleet minifi package`` writes it as ScoreChurn.py).

NiFi's FlowFileTransform sends one flowfile to one relationship: a flowfile whose records are
all valid goes to ``success`` scored; one with any invalid record goes to ``failure`` unchanged,
with ``score.failure.reason(s)`` naming each record and field. Put SplitJson (or SplitRecord)
before ScoreChurn to route record by record. The MiNiFi C++ shell splits a flowfile itself.
"""

from __future__ import annotations

from typing import Any

from nifiapi.flowfiletransform import FlowFileTransform, FlowFileTransformResult
from nifiapi.properties import ExpressionLanguageScope, PropertyDescriptor, StandardValidators

from runtimes.nifi.core import ScoreChurnCore, ScoreChurnError
from runtimes.nifi.shells import common


class ScoreChurn(FlowFileTransform):  # type: ignore[misc]
    class Java:
        implements = ["org.apache.nifi.python.processor.FlowFileTransform"]

    class ProcessorDetails:
        version = common.VERSION
        description = common.DESCRIPTION
        tags = common.TAGS
        dependencies = ["numpy", "onnxruntime", "cryptography"]  # edgefleet itself ships beside this file (or in the NAR)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.descriptors = common.descriptors(PropertyDescriptor, StandardValidators, ExpressionLanguageScope)
        self.core: ScoreChurnCore | None = None

    def getPropertyDescriptors(self) -> list[Any]:
        return self.descriptors

    def onScheduled(self, context: Any) -> None:
        self.core = common.build_core(common.read_properties(context, self.descriptors))
        refusal = self.core.refresh()
        if refusal and self.core.scorer is None:
            raise ScoreChurnError(refusal)  # NiFi keeps the processor stopped and shows this line

    def onStopped(self, context: Any) -> None:
        if self.core is not None and self.core.telemetry is not None:
            self.core.telemetry.flush()  # type: ignore[attr-defined]

    def transform(self, context: Any, flowfile: Any) -> Any:
        core = self.core
        if core is None:
            return FlowFileTransformResult(relationship="failure", attributes={"score.failure.reason": "processor not scheduled"})
        content = flowfile.getContentsAsBytes()
        try:
            outcome = core.score_content(content)
        except ScoreChurnError as exc:
            return FlowFileTransformResult(relationship="failure", attributes={"score.failure.reason": str(exc)})
        if core.telemetry is not None:
            core.telemetry.maybe_flush()  # type: ignore[attr-defined]
        if outcome.invalid:
            _, attrs = core.render_failure(outcome)
            return FlowFileTransformResult(relationship="failure", attributes=attrs)
        body, attrs = core.render(outcome, content)
        return FlowFileTransformResult(relationship="success", attributes=attrs, contents=body)
