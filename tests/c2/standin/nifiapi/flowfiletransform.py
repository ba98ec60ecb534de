"""FlowFileTransform and its result (stand-in), plus a session/flowfile pair to drive ``onTrigger``."""

from __future__ import annotations

from typing import Any


class FlowFileTransformResult:
    def __init__(self, relationship: str, attributes: dict[str, str] | None = None, contents: bytes | str | None = None) -> None:
        self.relationship = relationship
        self.attributes = attributes
        self.contents = contents.encode() if isinstance(contents, str) else contents

    def getRelationship(self) -> str:
        return self.relationship

    def getContents(self) -> bytes | None:
        return self.contents

    def getAttributes(self) -> dict[str, str] | None:
        return self.attributes


class FlowFileTransform:
    REL_SUCCESS = "success"  # MiNiFi C++ injects these through its C API
    REL_FAILURE = "failure"
    REL_ORIGINAL = "original"

    def __init__(self, **kwargs: Any) -> None:
        pass


class StandinFlowFile:
    """A flowfile: content and attributes. NiFi's ``getContentsAsBytes``; MiNiFi's ``setAttribute``."""

    def __init__(self, content: bytes, attributes: dict[str, str] | None = None) -> None:
        self.content, self.attributes = content, dict(attributes or {})

    def getContentsAsBytes(self) -> bytes:
        return self.content

    def getAttribute(self, name: str) -> str | None:
        return self.attributes.get(name)

    def setAttribute(self, name: str, value: str) -> bool:
        self.attributes[name] = value
        return True


class _Out:
    def __init__(self) -> None:
        self.data = b""

    def write(self, b: bytes) -> None:
        self.data += b


class StandinSession:
    """The MiNiFi session calls FlowFileTransform.onTrigger uses: get, clone, getContentsAsBytes, write, transfer, remove."""

    def __init__(self, incoming: list[StandinFlowFile]) -> None:
        self.incoming = list(incoming)
        self.transferred: list[tuple[StandinFlowFile, str]] = []

    def get(self) -> StandinFlowFile | None:
        return self.incoming.pop(0) if self.incoming else None

    def clone(self, ff: StandinFlowFile) -> StandinFlowFile:
        return StandinFlowFile(ff.content, ff.attributes)

    def getContentsAsBytes(self, ff: StandinFlowFile) -> bytes:
        return ff.content

    def write(self, ff: StandinFlowFile, callback: Any) -> None:
        out = _Out()
        callback.process(out)
        ff.content = out.data

    def transfer(self, ff: StandinFlowFile, rel: str) -> None:
        self.transferred.append((ff, rel))

    def remove(self, ff: StandinFlowFile) -> None:
        pass
