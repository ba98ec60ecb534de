"""ScoreChurn for MiNiFi C++ (its NiFi-style Python API in minifi-python/nifi_python_processors/).

MiNiFi C++ differs from NiFi (extensions/python/pythonprocessors/nifiapi/ in apache/nifi-minifi-cpp):
no ``onStopped``, a reduced ``ProcessContext`` (``getProperty`` and little more), one interpreter
for every Python processor, and a FlowFileTransform whose ``failure`` result carries no content.
So this shell overrides ``onTrigger`` with only the session calls that FlowFileTransform itself
uses (get, clone, write, transfer, remove): a flowfile's valid records leave on ``success``
scored, its invalid ones on ``failure`` with the reasons, the original on ``original``.
"""

from __future__ import annotations

from typing import Any

from nifiapi.flowfiletransform import FlowFileTransform, FlowFileTransformResult
from nifiapi.processorbase import WriteCallback
from nifiapi.properties import ExpressionLanguageScope, PropertyDescriptor, StandardValidators
from nifiapi.properties import FlowFile as FlowFileProxy

from runtimes.nifi.core import ScoreChurnCore, ScoreChurnError
from runtimes.nifi.shells import common


class ScoreChurn(FlowFileTransform):  # type: ignore[misc]
    class ProcessorDetails:
        version = common.VERSION
        description = common.DESCRIPTION
        tags = common.TAGS
        dependencies = ["numpy", "onnxruntime", "cryptography"]

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
            raise ScoreChurnError(refusal)

    def transform(self, context: Any, flowfile: Any) -> Any:  # required by the base class; onTrigger does the work
        return FlowFileTransformResult(relationship="failure", attributes={"score.failure.reason": "use onTrigger"})

    def onTrigger(self, context: Any, session: Any) -> None:
        original = session.get()
        if not original:
            return
        core = self.core
        content = FlowFileProxy(session, original).getContentsAsBytes()
        try:
            if core is None:
                raise ScoreChurnError("processor not scheduled")
            outcome = core.score_content(content)
        except ScoreChurnError as exc:
            original.setAttribute("score.failure.reason", str(exc))
            session.transfer(original, self.REL_FAILURE)
            return
        if outcome.scored:
            ok = session.clone(original)
            body, attrs = core.render(outcome, content)
            for k, v in attrs.items():
                ok.setAttribute(k, v)
            if body is not None:
                session.write(ok, WriteCallback(body))
            session.transfer(ok, self.REL_SUCCESS)
        if outcome.invalid:
            bad = session.clone(original)
            body, attrs = core.render_failure(outcome)
            for k, v in attrs.items():
                bad.setAttribute(k, v)
            session.write(bad, WriteCallback(body))
            session.transfer(bad, self.REL_FAILURE)
        if core.telemetry is not None:
            core.telemetry.maybe_flush()  # type: ignore[attr-defined]
        session.transfer(original, self.REL_ORIGINAL)
