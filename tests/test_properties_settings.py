"""Property-based tests of the settings parsers: any text gives a value or a WorkbenchError, nothing else.

Hypothesis settings: 300 examples per property (derandomized, so CI runs the same examples).
"""

from __future__ import annotations

import contextlib
import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.config import config_from_dict, parse_overrides, parse_value
from workbench.errors import WorkbenchError
from workbench.models.fewshot import FewShotConfig
from workbench.report.params import coerce, parse_cli_params
from workbench.train import TrainConfig

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True)
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
YAMLISH = st.one_of(
    TEXT,
    st.from_regex(r"\A[\[{]?[-+]?[0-9.eE,:\[\]{} a-z]{0,20}[\]}]?\Z"),
    st.sampled_from(["inf", ".inf", "nan", ".nan", "1e-3", "[1,", "{a: 1", "yes", "no", "~", "null", "0x1f", "1_000"]),
)


def _only_workbench_errors(call):
    with contextlib.suppress(WorkbenchError):  # any other exception fails the property
        call()


@PROPERTY
@given(pairs=st.lists(st.tuples(st.sampled_from(["lr", "epochs", "seed", "device", "", "x y"]), YAMLISH), max_size=4))
def test_set_overrides_parse_or_fail_cleanly(pairs):
    items = [f"{key}={value}" for key, value in pairs]
    _only_workbench_errors(lambda: parse_overrides(items))


@PROPERTY
@given(name=st.sampled_from([f.name for f in dataclasses.fields(TrainConfig)]), text=YAMLISH)
def test_any_text_for_any_engine_field_is_a_value_or_a_config_error(name, text):
    _only_workbench_errors(lambda: config_from_dict(TrainConfig, {name: parse_value(text)}))


@PROPERTY
@given(name=st.sampled_from([f.name for f in dataclasses.fields(FewShotConfig)]), text=YAMLISH)
def test_any_text_for_any_family_field_is_a_value_or_a_config_error(name, text):
    _only_workbench_errors(lambda: config_from_dict(FewShotConfig, {name: parse_value(text)}))


@PROPERTY
@given(kind=st.sampled_from(["int", "float", "str", "bool", "list", "dict"]), text=YAMLISH)
def test_report_parameters_coerce_or_fail_cleanly(kind, text):
    def run():
        value = parse_cli_params([f"p={text}"])["p"]
        out = coerce(value, kind, "p")
        assert type(out).__name__ == kind  # a value that passes has exactly the declared type

    _only_workbench_errors(run)
