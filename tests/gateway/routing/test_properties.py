"""Property tests: the rules loader, the condition language and the prompt parsers never crash.

Whatever they are given, each either answers or refuses with its own error naming the problem;
no other exception escapes (an escape would be a 500 at create, explain or `rules check`).
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.routing.catalog import CatalogError, parse_rules
from gateway.routing.conditions import ConditionError, matches, validate
from gateway.traits.advice import prompt_warnings
from gateway.traits.camera import camera_move, camera_moves
from tests.conftest import RULES

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False), st.text(max_size=12)
)
FIELDS = (
    "traits.portrait traits.volume traits.camera_move.type request.seconds request.tier metadata.team nope.x traits"
)
fields = st.sampled_from([*FIELDS.split(), "", "request.prompt"])
operators = st.sampled_from(["eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "regex", "eqq"])


def conditions(depth: int = 2) -> st.SearchStrategy[Any]:
    leaf = st.dictionaries(
        fields,
        st.one_of(scalars, st.dictionaries(operators, st.one_of(scalars, st.lists(scalars, max_size=3)), max_size=2)),
        max_size=3,
    )
    if depth == 0:
        return leaf
    inner = conditions(depth - 1)
    return st.one_of(
        leaf,
        st.fixed_dictionaries({"any": st.lists(inner, max_size=3)}),
        st.fixed_dictionaries({"all": st.lists(inner, max_size=3)}),
        st.fixed_dictionaries({"not": inner}),
        scalars,
        st.lists(scalars, max_size=2),
    )


contexts = st.fixed_dictionaries(
    {
        "traits": st.dictionaries(st.sampled_from(["portrait", "volume", "camera_move"]), scalars, max_size=3),
        "request": st.dictionaries(st.sampled_from(["seconds", "tier", "prompt"]), scalars, max_size=3),
        "metadata": st.dictionaries(st.sampled_from(["team"]), st.text(max_size=5), max_size=1),
    }
)


@FAST
@given(cond=conditions(), ctx=contexts)
def test_a_condition_is_refused_with_its_path_or_evaluates_to_a_bool(cond: Any, ctx: dict[str, Any]) -> None:
    try:
        validate(cond, ("when",))
    except ConditionError as exc:
        assert exc.path[0] == "when" and str(exc)
        return
    assert matches(cond, ctx) in (True, False)


BASE = yaml.safe_load(RULES.read_text())
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=12,
)


@FAST
@given(
    section=st.sampled_from(["models", "rules", "experiments", "extra"]),
    key=st.text(max_size=10),
    value=json_like,
)
def test_the_rules_loader_answers_or_names_the_problem(section: str, key: str, value: Any) -> None:
    doc = {k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in BASE.items()}
    if section == "models":
        doc["models"][key or "m"] = value
    elif section == "rules":
        doc["rules"].insert(
            0, value if isinstance(value, dict) else {"name": key, "when": value, "route": ["toy-fast"]}
        )
    else:
        doc[section] = value
    text = yaml.safe_dump(doc, allow_unicode=True)
    try:
        parse_rules(text, "fuzzed.yaml")
    except CatalogError as exc:
        assert str(exc).startswith("fuzzed.yaml")


@FAST
@given(text=st.text(max_size=400))
def test_the_rules_loader_survives_any_text(text: str) -> None:
    try:
        parse_rules(text, "any.yaml")
    except CatalogError as exc:
        assert str(exc).startswith("any.yaml")


WORDS = "slow pan left right tilt up zoom in out orbit push dolly then , . camera static crane very fast the cat and"
prompts = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from([*WORDS.split(), "truck", "pedestal", "360", "degrees"]), max_size=40).map(" ".join),
)


@FAST
@given(prompt=prompts)
def test_the_prompt_parsers_answer_for_any_text(prompt: str) -> None:
    moves = camera_moves(prompt)
    move = camera_move(prompt)
    if move is not None:
        assert 0.0 <= move.intensity <= 1.0
    traits = {"camera_move": move.model_dump() if move else None, "camera_moves": len(moves)}
    assert all(isinstance(w, str) and w for w in prompt_warnings(prompt, traits, loops_natively=False))
