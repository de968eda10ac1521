"""Genotype data model: JSON round trips, published-format converters, and validation errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arnas_zoo.errors import GenotypeError
from arnas_zoo.genotype import Genotype, cell_from_robnet_code, from_published
from arnas_zoo.registry import bundled_genotype

BUNDLED = sorted(p.stem for p in (Path(__file__).parents[1] / "arnas_zoo" / "genotypes").glob("*.json"))
PUBLISHED_NAMES = {
    "ARNAS": "arnas",
    "DARTS_V1": "darts_v1",
    "DARTS_V2": "darts_v2",
    "PDARTS": "pdarts",
    "AdvRush": "advrush",
    "RACL": "racl",
    "RobNet_large": "robnet_large",
    "RobNet_free": "robnet_free",
}


def valid_dict() -> dict:
    return copy.deepcopy(bundled_genotype("arnas").to_dict())


@pytest.mark.parametrize("stem", BUNDLED)
def test_json_round_trip(stem: str, tmp_path: Path) -> None:
    g = bundled_genotype(stem)
    assert Genotype.from_json(g.to_json()) == g
    assert Genotype.from_json(g.to_json(compact=True)) == g
    assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    assert Genotype.load(g.save(tmp_path / "g.json")) == g


@pytest.mark.parametrize("published,stem", sorted(PUBLISHED_NAMES.items()))
def test_bundled_genotypes_match_the_published_reference(shared_data: Path, published: str, stem: str) -> None:
    reference = json.loads((shared_data.parent / "reference" / "published_genotypes.json").read_text())
    assert from_published(published, reference[published]).cells == bundled_genotype(stem).cells


def test_arnas_cells_are_the_published_edges() -> None:
    g = bundled_genotype("arnas")
    assert g.space == "arnas" and set(g.cells) == {"accurate", "reduce", "robust"}
    robust_ops = g.cells["robust"].ops()
    # the paper's finding: Robust cells use dilated convolutions only, Accurate cells mostly separable ones
    assert all(op.startswith("dil_conv") for op in robust_ops)
    assert sum(op.startswith("sep_conv") for op in g.cells["accurate"].ops()) == 5
    first = g.cells["accurate"].nodes[0]
    assert [(e.op, e.input) for e in first] == [("skip_connect", 0), ("skip_connect", 1)]


def test_robnet_codes_convert_to_full_dag() -> None:
    cell = cell_from_robnet_code(["11", "00", "01", "10", "00", "00", "00", "00", "00", "01", "01", "01", "01", "01"])
    nodes = cell["nodes"]
    assert nodes[0] == [["res_sep_conv_3x3", 0]]
    assert nodes[1] == [["sep_conv_3x3", 0], ["skip_connect", 1]]
    assert nodes[2] == [["none", 0]]  # every edge '00': an explicit zero node, not an empty one
    assert [e[1] for e in nodes[3]] == [0, 1, 2, 3, 4]
    Genotype.from_dict({"space": "robnet", "cells": {"c": cell}})


@pytest.mark.parametrize(
    "mutate,path,fragment",
    [
        (
            lambda d: d["cells"]["robust"]["nodes"][3][0].__setitem__(0, "sep_conv_9x9"),
            "$.cells.robust.nodes[3][0][0]",
            "unknown op 'sep_conv_9x9'",
        ),
        (
            lambda d: d["cells"]["accurate"]["nodes"][1][0].__setitem__(1, 3),
            "$.cells.accurate.nodes[1][0][1]",
            "out of range",
        ),
        (
            lambda d: d["cells"]["accurate"]["nodes"][0][0].__setitem__(1, -1),
            "$.cells.accurate.nodes[0][0][1]",
            "out of range",
        ),
        (lambda d: d["cells"]["accurate"]["nodes"].__setitem__(2, []), "$.cells.accurate.nodes[2]", "empty node"),
        (lambda d: d["cells"]["accurate"].__setitem__("concat", [2, 2]), "$.cells.accurate.concat", "distinct"),
        (lambda d: d["cells"]["accurate"].__setitem__("concat", [2, 9]), "$.cells.accurate.concat[1]", "out of range"),
        (lambda d: d["cells"]["accurate"].__setitem__("concat", []), "$.cells.accurate.concat", "non-empty"),
        (lambda d: d.__setitem__("colour", "red"), "$.colour", "unknown key"),
        (lambda d: d["cells"]["reduce"].__setitem__("weights", []), "$.cells.reduce.weights", "unknown key"),
        (
            lambda d: d["cells"]["accurate"]["nodes"][0][0].__setitem__(1, "0"),
            "$.cells.accurate.nodes[0][0][1]",
            "expected an integer",
        ),
        (
            lambda d: d["cells"]["accurate"]["nodes"][0][0].__setitem__(1, True),
            "$.cells.accurate.nodes[0][0][1]",
            "expected an integer",
        ),
        (
            lambda d: d["cells"]["accurate"]["nodes"][0].__setitem__(0, ["skip_connect"]),
            "$.cells.accurate.nodes[0][0]",
            "[op, input] pair",
        ),
        (lambda d: d.__setitem__("space", "nasnet"), "$.space", "expected one of"),
        (lambda d: d.__setitem__("schema", "arnas-zoo/genotype@0"), "$.schema", "expected 'arnas-zoo/genotype@1'"),
        (lambda d: d.__setitem__("cells", []), "$.cells", "non-empty object"),
        (lambda d: d.__setitem__("name", 3), "$.name", "expected a string"),
    ],
)
def test_validation_errors_give_path_expected_and_got(mutate, path: str, fragment: str) -> None:
    data = valid_dict()
    mutate(data)
    with pytest.raises(GenotypeError) as info:
        Genotype.from_dict(data)
    message = str(info.value)
    assert message.startswith(path + ":"), message
    assert fragment in message, message


def test_robnet_op_not_allowed_in_darts_space() -> None:
    data = bundled_genotype("darts_v2").to_dict()
    data["cells"]["normal"]["nodes"][0][0][0] = "res_sep_conv_3x3"
    with pytest.raises(GenotypeError, match=r"unknown op 'res_sep_conv_3x3' for space 'darts'"):
        Genotype.from_dict(data)


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "null", '"genotype"', b"\xff\xfe"])
def test_malformed_json_is_a_genotype_error(text) -> None:
    with pytest.raises(GenotypeError, match=r"^\$"):
        Genotype.from_json(text)


def test_load_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"space": "arnas"}')
    with pytest.raises(GenotypeError, match=r"bad.json: \$.cells"):
        Genotype.load(bad)
    with pytest.raises(GenotypeError, match="cannot read"):
        Genotype.load(tmp_path / "missing.json")


def test_genotype_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Genotype.from_json("{}")


def test_pretty_lists_every_node() -> None:
    text = bundled_genotype("arnas").pretty()
    assert text.count("n3:") == 3 and "dil_conv_5x5(c_{k-2})" in text


# ---- property-based: random and mutated JSON may only ever raise GenotypeError ------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_json_only_raises_genotype_error(value) -> None:
    try:
        Genotype.from_dict(value)
    except GenotypeError:
        pass


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_genotypes_only_raise_genotype_error(data) -> None:
    doc = valid_dict()
    paths = [p for p in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    replacement = data.draw(json_values)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete"]))
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    try:
        g = Genotype.from_dict(doc)
    except GenotypeError:
        return
    # whatever was accepted must survive a round trip unchanged
    assert Genotype.from_json(g.to_json()) == g


def _one_cell(nodes: list[list[list[object]]]) -> Genotype:
    return Genotype.from_dict(
        {"schema": "arnas-zoo/genotype@1", "space": "arnas", "cells": {"normal": {"nodes": nodes, "concat": [2, 3]}}}
    )


def test_compare_counts_shared_ops_edges_and_parameter_free_share() -> None:
    from arnas_zoo.genotype import compare

    a = _one_cell([[["sep_conv_3x3", 0], ["skip_connect", 1]], [["avg_pool_3x3", 0], ["sep_conv_3x3", 2]]])
    # same ops as a, but only n0's sep_conv_3x3 <- 0 is the same edge; one skip became a dil_conv
    b = _one_cell([[["sep_conv_3x3", 0], ["dil_conv_3x3", 1]], [["sep_conv_3x3", 1], ["avg_pool_3x3", 2]]])
    c = compare(a, b)["cells"]["normal"]
    assert c["edges"] == [4, 4]
    assert c["ops_a"] == {"avg_pool_3x3": 1, "sep_conv_3x3": 2, "skip_connect": 1}
    assert c["op_overlap"] == pytest.approx(3 / 4)  # sep x2, avg_pool x1 pair up; skip has no partner
    assert c["edge_overlap"] == pytest.approx(1 / 4)
    assert c["parameter_free"] == [pytest.approx(2 / 4), pytest.approx(1 / 4)]


def test_compare_with_itself_is_identical_and_names_missing_cells() -> None:
    from arnas_zoo.genotype import compare, format_comparison

    arnas, darts = bundled_genotype("arnas"), bundled_genotype("darts_v2")
    same = compare(arnas, arnas)
    assert all(c["op_overlap"] == 1.0 and c["edge_overlap"] == 1.0 for c in same["cells"].values())
    assert set(same["cells"]) == {"accurate", "robust", "reduce"}
    mixed = compare(arnas, darts)
    assert set(mixed["cells"]) == set(arnas.cells) & set(darts.cells)
    assert set(mixed["only_a"]) == set(arnas.cells) - set(darts.cells) != set()
    text = format_comparison(mixed)
    assert "only in A:" in text and mixed["only_a"][0] in text


def test_genotype_compare_cli_prints_json_and_refuses_hand_crafted_networks() -> None:
    from click.testing import CliRunner

    from arnas_zoo.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["genotype", "compare", "arnas", "arnas", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["cells"]["robust"]["edge_overlap"] == 1.0
    refused = runner.invoke(main, ["genotype", "compare", "arnas", "resnet18"])
    assert refused.exit_code != 0 and "has no genotype" in refused.output


@pytest.mark.parametrize("stem", ["arnas", "robnet_large"])
def test_random_like_keeps_the_shape_and_stays_valid(stem: str) -> None:
    import random

    from arnas_zoo.genotype import random_like

    g = bundled_genotype(stem)
    r = random_like(g, random.Random(1))
    assert r.space == g.space and list(r.cells) == list(g.cells)
    for name, cell in g.cells.items():
        assert [len(node) for node in r.cells[name].nodes] == [len(node) for node in cell.nodes]
        assert "none" not in r.cells[name].ops()


def test_chance_overlap_is_seeded_and_below_an_identical_cell() -> None:
    from arnas_zoo.genotype import chance_overlap

    arnas = bundled_genotype("arnas")
    first = chance_overlap(arnas, arnas, samples=200, seed=3)
    assert first == chance_overlap(arnas, arnas, samples=200, seed=3)
    for cell in first["cells"].values():
        for key in ("op_overlap", "edge_overlap"):
            assert 0.0 <= cell[key]["mean"] <= cell[key]["p95"] < 1.0
        assert cell["edge_overlap"]["mean"] < cell["op_overlap"]["mean"]
