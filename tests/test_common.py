"""Bad input reaches the user as one line, also when Hydra or OmegaConf wrapped it."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from neocascade.errors import InputError, input_error
from neocascade.pipelines.common import input_error_message, report_input_errors


def _raised(config: dict) -> BaseException:
    with pytest.raises(Exception) as info:
        instantiate(OmegaConf.create(config))
    return info.value


def test_value_error_while_building_a_node_names_its_key():
    exc = _raised({"data": {"selector": {"_target_": "neocascade.candidates.footprint.FootprintSelector", "kernel": 0, "stride": 5}}})
    assert input_error_message(exc) == "data.selector: kernel: must be a positive integer, got 0"


def test_wrapped_input_error_keeps_its_own_message():
    try:
        try:
            raise input_error("images_3.npz", "missing key 'images'")
        except InputError as inner:
            raise RuntimeError("wrapper") from inner
    except RuntimeError as outer:
        assert input_error_message(outer) == "images_3.npz: missing key 'images'"


def test_missing_config_key_is_one_line_and_bugs_are_not_input():
    cfg = OmegaConf.create({"a": "${b}"})
    with pytest.raises(Exception) as info:
        _ = cfg.a
    assert input_error_message(info.value).startswith("config: ")
    assert input_error_message(ZeroDivisionError("bug")) is None


def test_report_input_errors_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as info, report_input_errors():
        raise input_error("data.kernel", "must be a positive integer", found=0)
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: data.kernel: must be a positive integer (got 0)\n"
    with pytest.raises(ZeroDivisionError), report_input_errors():
        raise ZeroDivisionError
