"""The flags of `loralens train` and `loralens run` come from the configuration's fields."""

import click

from loralens.cli.config_flags import RUN_FLAGS, TRAIN_FLAGS, ConfigFlag, _field, click_type
from loralens.cli.options import config_default
from loralens.cli.run import run
from loralens.cli.train import train
from loralens.pipeline import RunConfig
from loralens.training.config import TrainConfig


def _options(cmd: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in cmd.params if isinstance(p, click.Option)}


def test_help_type_and_default_come_from_the_field():
    for cmd, rows in ((train, TRAIN_FLAGS), (run, RUN_FLAGS)):
        options = _options(cmd)
        assert set(options) == {r.param for r in rows} | {"config_file", "dry_run"}
        for row in rows:
            opt, info = options[row.param], _field(row.model, row.field)
            if row.help is None:
                assert opt.help.lower().startswith(info.description[:20].lower()), row.flag
            if row.show_default is None and row.switch is None:
                assert opt.show_default == config_default(row.field, row.model), row.flag
            if row.type is None and info is not None and "/" not in row.flag and row.switch is None:
                expected = click_type(info.annotation)
                if isinstance(expected, click.Choice):
                    assert list(opt.type.choices) == list(expected.choices), row.flag


def test_a_literal_field_is_a_choice_of_its_values():
    window = _options(train)["window"]
    assert isinstance(window.type, click.Choice) and list(window.type.choices) == ["full", "trim"]
    assert window.show_default == TrainConfig().window
    assert list(_options(run)["method"].type.choices) == ["lora", "full"]


def test_overrides_name_the_fields():
    rows = {r.flag: r for r in RUN_FLAGS}
    assert rows["--window"].override_key == "train.window" and rows["--n-boot"].override_key == "analysis.n_boot"
    assert {r.flag: r for r in TRAIN_FLAGS}["--lora-r"].override_key == "lora.r"
    assert rows["--no-report"].value(True) is False and rows["--no-report"].value(False) is None
    assert RunConfig.model_fields["report"].default is True


def test_a_flag_without_a_described_field_is_refused():
    import pytest

    with pytest.raises(ValueError, match="not a field of TrainConfig"):
        ConfigFlag("--bogus", "bogus")
    with pytest.raises(ValueError, match="no description"):
        ConfigFlag("--batch", "analysis.batch_size", model=RunConfig)
