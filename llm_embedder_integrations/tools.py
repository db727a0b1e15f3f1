"""Tool routing: index a toolset once, pick the few tools that fit each request.

Each tool is stored as a readable text (name, domain, functionality, description, parameters;
see `render_tool_text`) encoded with the ``tool`` key instruction; a request is encoded with the
``tool`` query instruction, as in LLM-Embedder. The router accepts

* `ToolSpec` objects,
* plain dicts: ``{"name", "description", "domain", "functionality", "parameters"}``, or Gorilla
  API records (``api_name``, ``api_arguments``, ...),
* objects shaped like LangChain tools (``name``, ``description``, ``args``) or LlamaIndex tools
  (``metadata.name``, ``metadata.description``, ``metadata.get_parameters_dict()``); they are read
  through these attributes only, so this module imports neither framework.

`ToolRouter.tool` hands back the object that was added, ready to bind to a model.

Example:
    >>> router = ToolRouter(ChromaStore(LLMEmbedder()))  # doctest: +SKIP
    >>> router.add_tools([get_weather, search_flights, convert_currency])  # doctest: +SKIP
    >>> router.route("is it going to rain in Oslo tomorrow?", k=1)  # doctest: +SKIP
    [ToolMatch(name='get_weather', score=0.61)]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._validation import check_k
from .encoder import validate_texts
from .store import ChromaStore, Hit

__all__ = [
    "ToolMatch",
    "ToolRouter",
    "ToolSpec",
    "UnknownToolError",
    "render_parameters",
    "render_tool_text",
    "tool_spec",
]

logger = logging.getLogger(__name__)

_SHOWN_NAMES = 8
"""Known tool names quoted in an unknown-name error."""


def _line(value: Any) -> str:
    """One field as a single line: whitespace runs collapsed, None as empty."""
    return " ".join(str(value).split()) if value is not None else ""


def _schema_type(prop: Mapping[str, Any]) -> str:
    """The JSON-schema type of a property, e.g. ``"string"`` or ``"integer | null"``."""
    if prop.get("type"):
        kind = prop["type"]
        return " | ".join(map(str, kind)) if isinstance(kind, list) else str(kind)
    options = prop.get("anyOf") or prop.get("oneOf") or ()
    kinds = [str(o["type"]) for o in options if isinstance(o, Mapping) and o.get("type")]
    return " | ".join(kinds)


def render_parameters(parameters: Any) -> str:
    """Render a tool's parameters on one line.

    Accepts a JSON schema (``{"type": "object", "properties": {...}}``, as LlamaIndex and OpenAI
    tools give), a mapping of parameter name to JSON-schema property (LangChain ``tool.args``) or
    to a plain value or description (Gorilla ``api_arguments``), a list of names, or text.

    Args:
        parameters: The parameters in one of the shapes above; None or empty for none.

    Returns:
        For example ``"city (string): Name of the city; units (string)"``, or ``""``.
    """
    if parameters is None:
        return ""
    if isinstance(parameters, str):
        return _line(parameters)
    if isinstance(parameters, Mapping):
        props = parameters.get("properties")
        if not isinstance(props, Mapping):
            props = parameters
        parts = []
        for name, value in props.items():
            if isinstance(value, Mapping):
                kind = _schema_type(value)
                description = _line(value.get("description"))
                part = f"{name} ({kind})" if kind else str(name)
                parts.append(f"{part}: {description}" if description else part)
            else:
                text = _line(value)
                parts.append(f"{name}: {text}" if text else str(name))
        return "; ".join(parts)
    if isinstance(parameters, Iterable):
        return ", ".join(_line(p) for p in parameters if _line(p))
    return _line(parameters)


def render_tool_text(
    name: str,
    *,
    domain: Any = "",
    functionality: Any = "",
    description: Any = "",
    parameters: Any = None,
) -> str:
    r"""Render a tool as the text given to the embedder: the one rendering of the package.

    The layout is the name, then ``Domain:``, ``Functionality:``, ``Description:`` and
    ``Parameters:`` lines; a line is left out when its field is empty. Each field is put on one
    line (whitespace runs collapsed). A readable rendering retrieves far better than a JSON dump.

    Args:
        name: The tool's name, shown first.
        domain: Area of the tool (e.g. ``"Image classification"``).
        functionality: What it does, in a few words.
        description: What it does and when to use it.
        parameters: Anything `render_parameters` accepts.

    Returns:
        For example ``"get_weather\nDescription: Current weather.\nParameters: city (string)"``.
    """
    lines = [_line(name)]
    for label, value in (
        ("Domain", _line(domain)),
        ("Functionality", _line(functionality)),
        ("Description", _line(description)),
        ("Parameters", render_parameters(parameters)),
    ):
        if value:
            lines.append(f"{label}: {value}")
    return "\n".join(lines)


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the router sees it.

    Args:
        name: Unique name; what `ToolRouter.route` returns. Adding another tool with the same
            name replaces it.
        description: What the tool does; required (a tool without one cannot be routed to).
        domain: Area of the tool, optional.
        functionality: What it does in a few words, optional.
        parameters: Parameters in any shape `render_parameters` accepts, optional.
        title: First line of the rendered text when it should differ from ``name`` (e.g. a
            Gorilla ``api_name`` shared by several APIs, each added under its own ``name``).
        obj: The object `ToolRouter.tool` hands back (e.g. the framework tool); None means
            this spec itself.
    """

    name: str
    description: str
    domain: str = ""
    functionality: str = ""
    parameters: Any = None
    title: str | None = None
    obj: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(
                f"a tool needs a non-empty string `name`, got {self.name!r} "
                f"(description {_line(self.description)[:60]!r})"
            )
        if not isinstance(self.description, str) or not self.description.strip():
            raise ValueError(
                f"tool {self.name!r} has no description (got {self.description!r}); the router "
                "matches requests against descriptions: give it one (for a LangChain @tool, a "
                "docstring; for a dict, a 'description' key)"
            )

    @property
    def text(self) -> str:
        """The text stored for this tool (`render_tool_text`)."""
        return render_tool_text(
            self.title or self.name,
            domain=self.domain,
            functionality=self.functionality,
            description=self.description,
            parameters=self.parameters,
        )


def _from_mapping(tool: Mapping[str, Any]) -> ToolSpec:
    name = tool.get("name") or tool.get("api_name")
    if not name:
        raise ValueError(
            f"a tool dict needs a 'name' (or Gorilla 'api_name'); got the keys {sorted(tool)}"
        )
    parameters = tool.get("parameters")
    if parameters is None:
        parameters = tool.get("api_arguments")
    return ToolSpec(
        name=str(name),
        description=_line(tool.get("description")),
        domain=_line(tool.get("domain")),
        functionality=_line(tool.get("functionality")),
        parameters=parameters,
        title=_line(tool["api_name"]) if tool.get("name") and tool.get("api_name") else None,
        obj=tool,
    )


def tool_spec(tool: Any) -> ToolSpec:
    """Read a tool of any accepted kind as a `ToolSpec` (see the module docstring).

    Args:
        tool: A `ToolSpec`, a dict, or a LangChain- or LlamaIndex-shaped tool object.

    Returns:
        The spec; its ``obj`` is ``tool`` (so `ToolRouter.tool` returns what was added).

    Raises:
        ValueError: The tool has no name or no description; the message names it.
        TypeError: ``tool`` is none of the accepted kinds.
    """
    if isinstance(tool, ToolSpec):
        return tool
    if isinstance(tool, Mapping):
        return _from_mapping(tool)
    meta = getattr(tool, "metadata", None)
    if meta is not None and hasattr(meta, "description") and hasattr(meta, "name"):
        # LlamaIndex: BaseTool.metadata is a ToolMetadata.
        get_params = getattr(meta, "get_parameters_dict", None)
        return ToolSpec(
            name=meta.name or "",
            description=meta.description or "",
            parameters=get_params() if callable(get_params) else None,
            obj=tool,
        )
    if isinstance(getattr(tool, "name", None), str) and hasattr(tool, "description"):
        # LangChain: BaseTool.name, .description and .args (JSON-schema properties).
        return ToolSpec(
            name=tool.name,
            description=tool.description or "",
            parameters=getattr(tool, "args", None),
            obj=tool,
        )
    raise TypeError(
        f"cannot read a tool from {type(tool).__name__} {tool!r}: pass a ToolSpec, a dict with "
        "'name' and 'description', a LangChain BaseTool or a LlamaIndex tool"
    )


@dataclass(frozen=True)
class ToolMatch:
    """One routed tool."""

    name: str
    score: float
    """Cosine similarity between the request and the tool text."""


class UnknownToolError(KeyError):
    """A tool name that the router does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _single_tool(value: Any) -> bool:
    """Whether ``value`` is one tool object (a list of tools was probably meant)."""
    if isinstance(value, ToolSpec):
        return True
    if isinstance(value, (list, tuple)) or not hasattr(value, "description"):
        return False
    return hasattr(value, "name") or hasattr(value, "metadata")


class ToolRouter:
    """Index a toolset in a store and route requests to the tools that fit them.

    Tool texts live in the store (task ``"tool"`` by default, one entry per tool name); the
    objects added are kept in memory so that `tool` can hand them back. A router over a
    persisted store routes to every tool stored there, but hands back only the objects added
    in this process: add the tools again after reopening (this re-encodes them).

    Args:
        store: Where tool texts are encoded and searched.
        task: Store task; ``"tool"`` gives LLM-Embedder's tool instructions.
        exact: Brute-force search instead of the HNSW index.

    Example:
        >>> router = ToolRouter(ChromaStore(LLMEmbedder()))  # doctest: +SKIP
        >>> router.add_tools([{"name": "get_weather", "description": "Weather forecast."}])
        ... # doctest: +SKIP
        >>> [m.name for m in router.route("will it rain?", k=1)]  # doctest: +SKIP
        ['get_weather']
    """

    def __init__(self, store: ChromaStore, *, task: str = "tool", exact: bool = False) -> None:
        store.collection(task)  # checks the task and the store's model up front
        self.store = store
        self.task = task
        self.exact = exact
        self._specs: dict[str, ToolSpec] = {}

    def __repr__(self) -> str:
        return f"ToolRouter({len(self._specs)} tools, task={self.task!r}, store={self.store!r})"

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    @property
    def names(self) -> list[str]:
        """Names of the tools added, in the order they were first added."""
        return list(self._specs)

    def add_tools(self, tools: Iterable[Any]) -> list[str]:
        """Index tools; a name already held is replaced (upsert).

        Args:
            tools: `ToolSpec` objects, dicts, LangChain or LlamaIndex tools (may be mixed).

        Returns:
            The names, in input order.

        Raises:
            ValueError: A tool without a name or description (named in the message); nothing is
                written then.
            TypeError: An object that is not a tool.
        """
        if isinstance(tools, (str, Mapping)) or _single_tool(tools):
            raise TypeError("`tools` must be a list of tools; wrap a single tool in a list")
        specs = [tool_spec(t) for t in tools]
        latest: dict[str, ToolSpec] = {}
        for spec in specs:
            if spec.name in latest:
                logger.warning("tool %r is given twice; the last one is kept", spec.name)
            latest[spec.name] = spec
        if not latest:
            return []
        unique = list(latest.values())
        self.store.add(
            [s.text for s in unique],
            task=self.task,
            ids=[s.name for s in unique],
            metadatas=[{"name": s.name, "domain": s.domain or None} for s in unique],
        )
        self._specs.update(latest)
        return [s.name for s in specs]

    def remove(self, names: Sequence[str]) -> None:
        """Drop tools by name.

        Raises:
            UnknownToolError: A name that is not held; nothing is removed then.
        """
        if isinstance(names, str):
            raise TypeError("`names` must be a list of names; wrap a single name in a list")
        for name in names:
            self.spec(name)
        self.store.delete(list(names), task=self.task)
        for name in names:
            self._specs.pop(name, None)

    def spec(self, name: str) -> ToolSpec:
        """The `ToolSpec` of a tool added under ``name``.

        Raises:
            UnknownToolError: ``name`` is not held; the message lists known names.
        """
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            known = list(self._specs)
            shown = ", ".join(repr(n) for n in known[:_SHOWN_NAMES])
            more = f" and {len(known) - _SHOWN_NAMES} more" if len(known) > _SHOWN_NAMES else ""
            raise UnknownToolError(
                f"unknown tool {name!r}; this router holds {len(known)} tools: "
                f"{shown or 'none'}{more}. Add it with add_tools([...])."
            ) from None

    def tool(self, name: str) -> Any:
        """The object added under ``name`` (the framework tool, dict or `ToolSpec`).

        Raises:
            UnknownToolError: ``name`` is not held; the message lists known names.
        """
        spec = self.spec(name)
        return spec if spec.obj is None else spec.obj

    def text(self, name: str) -> str:
        """The text indexed for tool ``name``."""
        return self.spec(name).text

    def route(
        self, request: str, k: int = 4, *, where: Mapping[str, Any] | None = None
    ) -> list[ToolMatch]:
        """The ``k`` tools that best fit ``request``, best first.

        Args:
            request: What the user asks for.
            k: Number of tools (fewer when fewer are indexed; none when none are).
            where: Chroma metadata filter, e.g. ``{"domain": "Finance"}``.

        Raises:
            ValueError: ``k`` is not a positive int, or ``request`` is empty.
        """
        return self.route_batch([request], k, where=where)[0]

    def route_batch(
        self, requests: Sequence[str], k: int = 4, *, where: Mapping[str, Any] | None = None
    ) -> list[list[ToolMatch]]:
        """`route` for several requests, encoded in one pass."""
        check_k(k)
        items = validate_texts(requests, "requests")
        hits = self.store.search_batch(items, task=self.task, k=k, where=where, exact=self.exact)
        return [[self._match(h) for h in row] for row in hits]

    def _match(self, hit: Hit) -> ToolMatch:
        return ToolMatch(name=str(hit.metadata.get("name", hit.id)), score=hit.score)
