r"""In-context examples: a bank of demonstrations, and the few that fit each new input.

Examples are dicts (``{"input": "2 + 2", "output": "4"}``). Each is stored as the text
``"{input}\n{output}"`` (the paper's format) encoded with the ``icl`` key instruction, with its
fields as metadata; a new input is encoded with the ``icl`` query instruction. The example being
answered is never returned as its own demonstration: hits with its id or with the same input are
dropped (the search over-fetches to still return ``k``).

Example:
    >>> bank = ExampleBank(ChromaStore(LLMEmbedder()))  # doctest: +SKIP
    >>> bank.add([{"input": "2 + 2", "output": "4"}, {"input": "great film!", "output": "POS"}])
    ... # doctest: +SKIP
    >>> [s.example["output"] for s in bank.select("3 + 5", k=1)]  # doctest: +SKIP
    ['4']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._validation import check_k
from .encoder import validate_texts
from .store import ChromaStore, Hit, text_id

__all__ = ["ExampleBank", "SelectedExample"]

_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class SelectedExample:
    """One example chosen for a query."""

    id: str
    example: dict[str, Any]
    """The example's fields, as added."""
    text: str
    r"""The stored text, ``"{input}\n{output}"``."""
    score: float
    """Cosine similarity between the query input and the example (the fused score on a hybrid
    store)."""


def _field_text(value: Any) -> str:
    return "" if value is None else str(value)


def _field_names(keys: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(keys, str):
        raise TypeError(
            f"`{what}` must be a list of field names, got the string {keys!r}; wrap it in a list"
        )
    names = tuple(keys)
    if not names or not all(isinstance(k, str) and k for k in names):
        raise ValueError(f"`{what}` must name at least one field, got {list(names)!r}")
    return names


class ExampleBank:
    """A bank of in-context examples over one task of a :class:`ChromaStore`.

    Args:
        store: Where examples are encoded and searched.
        input_keys: Fields that make an example's input (joined by newlines, in this order).
        output_keys: Fields that make its output (joined by newlines, in this order); None
            means every other field but the id. Fields in neither are kept as metadata only
            (e.g. a task name to filter on).
        id_key: Field holding an example's id; an example without it gets a hash of its text.
        task: Store task; ``"icl"`` gives LLM-Embedder's in-context-learning instructions.
        exact: Brute-force search instead of the HNSW index.
    """

    def __init__(
        self,
        store: ChromaStore,
        *,
        input_keys: Sequence[str] = ("input",),
        output_keys: Sequence[str] | None = None,
        id_key: str | None = "id",
        task: str = "icl",
        exact: bool = False,
    ) -> None:
        keys = _field_names(input_keys, "input_keys")
        out_keys = None if output_keys is None else _field_names(output_keys, "output_keys")
        if out_keys is not None and set(keys) & set(out_keys):
            raise ValueError(
                f"fields {sorted(set(keys) & set(out_keys))} are both input and output keys"
            )
        if id_key is not None and id_key in {*keys, *(out_keys or ())}:
            raise ValueError(f"`id_key` {id_key!r} cannot also be an input or output key")
        store.collection(task)  # checks the task and the store's model up front
        self.store = store
        self.input_keys = keys
        self.output_keys = out_keys
        self.id_key = id_key
        self.task = task
        self.exact = exact

    def __repr__(self) -> str:
        return (
            f"ExampleBank(input_keys={list(self.input_keys)!r}, "
            f"output_keys={None if self.output_keys is None else list(self.output_keys)!r}, "
            f"id_key={self.id_key!r}, "
            f"task={self.task!r}, store={self.store!r})"
        )

    def __len__(self) -> int:
        return self.store.count(self.task)

    # -- texts ------------------------------------------------------------------------------

    def input_text(self, example: Mapping[str, Any]) -> str:
        """The input of ``example``: its input fields joined by newlines.

        Raises:
            ValueError: An input field is missing; the message lists the fields present.
        """
        missing = [k for k in self.input_keys if k not in example]
        if missing:
            raise ValueError(
                f"example is missing input field(s) {missing}; it has {sorted(example)}. Pass "
                "`input_keys` naming the fields that hold the input"
            )
        return "\n".join(_field_text(example[k]) for k in self.input_keys)

    def output_text(self, example: Mapping[str, Any]) -> str:
        """The output of ``example``: its output fields (all but input and id by default)."""
        if self.output_keys is None:
            skip = {*self.input_keys, self.id_key}
            values = [v for k, v in example.items() if k not in skip]
        else:
            values = [example.get(k) for k in self.output_keys]
        return "\n".join(_field_text(v) for v in values if _field_text(v))

    def example_text(self, example: Mapping[str, Any]) -> str:
        r"""The stored text: ``"{input}\n{output}"``, or the input alone if there is no output."""
        output = self.output_text(example)
        return f"{self.input_text(example)}\n{output}" if output else self.input_text(example)

    def _check(self, i: int, example: Any) -> None:
        if not isinstance(example, Mapping):
            raise TypeError(f"`examples[{i}]` must be a dict, got {type(example).__name__}")
        for key, value in example.items():
            if not isinstance(key, str):
                raise TypeError(f"`examples[{i}]` has a non-string field name {key!r}")
            if value is not None and not isinstance(value, _SCALARS):
                raise TypeError(
                    f"`examples[{i}][{key!r}]` is a {type(value).__name__} ({value!r}); example "
                    "fields must be str, int, float, bool or None: join or pick the value"
                )
        if not self.input_text(example).strip():
            raise ValueError(f"`examples[{i}]` has an empty input ({list(self.input_keys)})")
        if self.id_key is not None and self.id_key in example:
            id_ = example[self.id_key]
            if not isinstance(id_, str) or not id_:
                raise ValueError(
                    f"`examples[{i}][{self.id_key!r}]` must be a non-empty string id, got {id_!r}"
                )

    # -- writing ------------------------------------------------------------------------------

    def add(self, examples: Sequence[Mapping[str, Any]]) -> list[str]:
        """Add examples; an id already stored is replaced.

        Args:
            examples: Dicts holding the input fields, the output fields and optionally an id.

        Returns:
            The ids, in input order.

        Raises:
            TypeError, ValueError: On a bad example (named by position); nothing is written then.
        """
        if isinstance(examples, Mapping):
            raise TypeError("`examples` must be a list of dicts; wrap a single example in a list")
        for i, example in enumerate(examples):
            self._check(i, example)
        if not examples:
            return []
        texts = [self.example_text(e) for e in examples]
        ids = None
        if self.id_key is not None and any(self.id_key in e for e in examples):
            ids = [
                str(e[self.id_key]) if self.id_key in e else text_id(t)
                for e, t in zip(examples, texts, strict=True)
            ]
        return self.store.add(texts, task=self.task, ids=ids, metadatas=[dict(e) for e in examples])

    def delete(self, ids: Sequence[str]) -> None:
        """Remove examples by id (ids not stored are ignored)."""
        self.store.delete(ids, task=self.task)

    # -- selecting ----------------------------------------------------------------------------

    def select(
        self,
        query: str | Mapping[str, Any],
        k: int = 4,
        *,
        where: Mapping[str, Any] | None = None,
        exclude: Sequence[str] = (),
    ) -> list[SelectedExample]:
        """The ``k`` examples most useful for ``query``, best first.

        Args:
            query: The new input as text, or as an example dict (its input fields are used, and
                its id, when it has one, is excluded).
            k: Number of examples (fewer when the bank holds fewer; none when it is empty).
            where: Chroma metadata filter on the example fields, e.g. ``{"task": "sst2"}``.
            exclude: Further example ids never to return.

        Raises:
            ValueError: ``k`` is not a positive int, or the query has no input.
        """
        return self.select_batch([query], k, where=where, exclude=exclude)[0]

    def select_batch(
        self,
        queries: Sequence[str | Mapping[str, Any]],
        k: int = 4,
        *,
        where: Mapping[str, Any] | None = None,
        exclude: Sequence[str] = (),
    ) -> list[list[SelectedExample]]:
        """`select` for several queries, encoded in one pass."""
        check_k(k)
        if isinstance(queries, (str, Mapping)):
            raise TypeError("`queries` must be a list; wrap a single query in a list")
        if isinstance(exclude, str):
            raise TypeError("`exclude` must be a list of ids; wrap a single id in a list")
        inputs, own_ids = [], []
        for query in queries:
            if isinstance(query, Mapping):
                inputs.append(self.input_text(query))
                own = query.get(self.id_key) if self.id_key is not None else None
                own_ids.append({*exclude, own} if own else set(exclude))
            else:
                inputs.append(query)
                own_ids.append(set(exclude))
        validate_texts(inputs, "query inputs")

        def enough(row: int, hits: list[Hit]) -> bool:
            return sum(self._is_other(h, inputs[row]) for h in hits) >= k

        found = self.store.search_batch(
            inputs,
            task=self.task,
            k=k,
            where=where,
            exclude=own_ids,
            enough=enough,
            exact=self.exact,
        )
        return [
            [
                SelectedExample(h.id, dict(h.metadata), h.text, h.score)
                for h in hits
                if self._is_other(h, text)
            ][:k]
            for hits, text in zip(found, inputs, strict=True)
        ]

    def _is_other(self, hit: Hit, text: str) -> bool:
        """Whether ``hit`` is another example than the query (whose input is ``text``)."""
        try:
            return self.input_text(hit.metadata) != text
        except ValueError:  # stored without our input fields: cannot be the query itself
            return True
