import pytest

from facefix.cli import build_parser, settings_from_args
from facefix.errors import SettingsError
from facefix.params import PARAMS, Settings, param


def test_defaults_match_schema():
    s = Settings()
    for p in PARAMS:
        assert getattr(s, p.name) == p.default, p.name


def test_range_and_type_errors_name_the_flag():
    with pytest.raises(SettingsError, match="--strength"):
        Settings(strength=1.5)
    with pytest.raises(SettingsError, match="--upscale"):
        Settings(upscale=3)
    with pytest.raises(SettingsError, match="--model"):
        Settings(model="nope")
    with pytest.raises(SettingsError, match="--batch"):
        Settings.from_mapping({"batch": "many"})
    with pytest.raises(SettingsError, match="unknown"):
        Settings.from_mapping({"colour": 1})


def test_cli_options_are_generated_from_the_schema():
    parser = build_parser()
    args = parser.parse_args(["restore", "in.####.exr", "-o", "out.####.exr", "--strength", "0.3", "--upscale", "2",
                              "--mask-feather", "0.2", "--model", "passthrough"])
    s = settings_from_args(args)
    assert (s.strength, s.upscale, s.mask_feather, s.model) == (0.3, 2, 0.2, "passthrough")
    help_text = parser._subparsers._group_actions[0].choices["restore"].format_help()
    for p in PARAMS:
        assert p.cli_flag in help_text


def test_animation_interpolates_and_holds():
    s = Settings(animation={"strength": {10: 0.0, 20: 1.0}})
    assert s.at(5).strength == 0.0
    assert s.at(15).strength == pytest.approx(0.5)
    assert s.at(99).strength == 1.0
    with pytest.raises(SettingsError, match="cannot be animated"):
        Settings(animation={"model": {1: 1.0}})


def test_track_ids_parse():
    assert Settings(face_ids="1, 4,7").track_ids == (1, 4, 7)
    with pytest.raises(SettingsError):
        _ = Settings(face_ids="a,b").track_ids
    assert param("temporal").group == "temporal"


def test_batch_auto_depends_on_the_device():
    import torch

    from facefix.engine import frames_per_batch

    assert Settings().batch == 0
    assert frames_per_batch(Settings(), torch.device("cpu")) == 4
    assert frames_per_batch(Settings(), torch.device("cuda")) == 16
    assert frames_per_batch(Settings(batch=7), torch.device("cuda")) == 7
    with pytest.raises(SettingsError):
        Settings.from_mapping({"batch": -1})
