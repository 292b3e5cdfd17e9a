from pathlib import Path

import pytest
import yaml

from loralens.errors import ConfigError
from loralens.training.config import (
    TrainConfig,
    config_from_snapshot,
    config_hash,
    config_to_yaml,
    load_config,
    make_config,
)


def test_defaults():
    cfg = TrainConfig()
    assert cfg.model == "base" and cfg.method == "lora"
    assert cfg.lora.r == 32 and cfg.lora.alpha == 64 and cfg.lora.target_modules == ("v_proj",)
    assert cfg.head.projector_dim == 256


def test_yaml_with_flag_overrides(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text("corpus: crema-d\nepochs: 4\nlora:\n  r: 8\n  target_modules: [q_proj, v_proj]\n")
    cfg = load_config(p, {"epochs": 2, "lora.alpha": 16, "seed": None})
    assert cfg.corpus == "crema-d"
    assert cfg.epochs == 2  # flag wins over the file
    assert cfg.lora.r == 8 and cfg.lora.alpha == 16 and cfg.lora.target_modules == ("q_proj", "v_proj")
    assert cfg.seed == 0  # a None override means "flag not given"


def test_errors_name_the_field(tmp_path: Path):
    p = tmp_path / "bad.yaml"
    p.write_text("epochs: -1\nlora:\n  r: zero\nmethod: adapters\nbogus: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    for field in ("epochs", "lora.r", "method", "bogus"):
        assert field in msg
    assert str(p) in msg


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "x.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "x.yaml")
    (tmp_path / "l.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "l.yaml")


def test_snapshot_round_trip_and_hash(tmp_path: Path):
    cfg = make_config({"epochs": 3, "method": "frozen", "run_dir": str(tmp_path)})
    p = tmp_path / "config.yaml"
    p.write_text(config_to_yaml(cfg))
    again = load_config(p)
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    # where the run lives and which fold runs now do not change the hash; the learning rate does
    assert config_hash(make_config({"epochs": 3, "method": "frozen", "run_dir": "elsewhere",
                                    "fold": 2})) == config_hash(cfg)
    assert config_hash(make_config({"epochs": 3, "method": "frozen", "lr_head": 0.5})) != config_hash(cfg)
    assert yaml.safe_load(p.read_text())["lora"]["r"] == 32


def test_head_layer_norm_hashing_and_validation():
    # a snapshot written before head.layer_norm existed keeps its hash (its folds stay complete); setting it changes it
    # (snapshots name every field; this one was written when `full` was the default window)
    old = make_config({"epochs": 3, "method": "frozen", "head": {"weighted_layer_sum": True, "layer_norm": False,
                                                                  "standardize": False}, "window": "full"})
    d = old.model_dump(mode="json")
    del d["head"]["layer_norm"], d["head"]["standardize"]
    assert config_hash(config_from_snapshot(d)) == config_hash(old)
    assert config_hash(old) == "5934506179f99f7b"  # computed by the code before the field was added
    new = make_config({"epochs": 3, "method": "frozen", "head": {"weighted_layer_sum": True, "layer_norm": True},
                       "window": "full"})
    assert config_hash(new) != config_hash(old)
    with pytest.raises(ConfigError, match="weighted_layer_sum"):
        make_config({"head": {"layer_norm": True, "weighted_layer_sum": False}})


def test_head_hidden_state_hashing_and_validation():
    plain = make_config({"epochs": 3, "method": "frozen", "head": {"weighted_layer_sum": True}})  # then the default
    d = plain.model_dump(mode="json")
    del d["head"]["hidden_state"]  # a snapshot written before the field existed
    assert config_hash(config_from_snapshot(d)) == config_hash(plain)
    cut = make_config({"epochs": 3, "method": "frozen", "head": {"hidden_state": 4}})
    assert config_hash(cut) != config_hash(plain) and cut.head.hidden_state == 4
    assert make_config({"head": {"hidden_state": "last"}}).head.hidden_state is None  # the flag's way to say it
    # the default since loralens 0.7: each fold chooses among the hidden states and their weighted sum; naming the
    # weighted sum (or the last layer, or hidden_state null as every snapshot does) keeps it on every fold
    assert make_config({}).head.hidden_state == "auto-all"
    assert make_config({"head": {"weighted_layer_sum": True}}).head.hidden_state is None
    assert make_config({"head": {"weighted_layer_sum": False}}).head.hidden_state is None
    wls = make_config({"head": {"hidden_state": None}}).head
    assert (wls.hidden_state, wls.weighted_layer_sum, wls.layer_norm, wls.speaker_norm) == (None, True, True, True)
    assert make_config({"head": {"hidden_state": "3"}}).head.hidden_state == 3
    with pytest.raises(ConfigError, match="weighted_layer_sum all of them"):
        make_config({"head": {"hidden_state": 2, "weighted_layer_sum": True}})
    with pytest.raises(ConfigError, match="hidden_state"):
        make_config({"head": {"hidden_state": 0}})


def test_trim_is_the_default_window_and_named_windows_keep_their_hash(tmp_path):
    assert TrainConfig().window == "trim"
    # a run folder's snapshot names its window (config_to_yaml writes every field): its hash does not depend on
    # the default; these two were computed before the default changed from full to trim
    # (and name the head of then: the last layer, transformers' own, the default until the weighted layer sum)
    last = {"weighted_layer_sum": False}
    full = make_config({"epochs": 3, "method": "frozen", "window": "full", "head": last})
    p = tmp_path / "config.yaml"
    p.write_text(config_to_yaml(full))
    assert yaml.safe_load(p.read_text())["window"] == "full"
    assert config_hash(load_config(p)) == config_hash(full) == "2e07defc926ce561"
    assert config_hash(make_config({"epochs": 3, "method": "frozen", "window": "trim", "head": last})) == \
        "5d70b49833c2841a"
    assert config_hash(make_config({"epochs": 3, "method": "frozen", "window": "full"})) != config_hash(
        make_config({"epochs": 3, "method": "frozen"}))
    assert config_hash(make_config({"epochs": 3, "method": "frozen"})) == config_hash(
        make_config({"epochs": 3, "method": "frozen", "window": "trim"}))


def test_recipe_levers_are_hashed_only_when_set():
    # the hashes of configurations written before the levers existed are unchanged (pinned by the tests above);
    # each lever, set, changes the hash, and set back to its default restores it
    base = {"epochs": 3, "method": "lora", "lr_encoder": 1e-4, "lp_ft_epochs": 0, "lp_fit": "gradient",  # no LP-FT,
            "select_on": "uar"}  # selecting on validation UAR, as before the recipe
    h0 = config_hash(make_config(base))
    assert config_hash(make_config({**base, "validation_speakers": None, "select_on": "uar", "lp_ft_epochs": 0,
                                    "lp_fit": "gradient", "average_last": 1,
                                    "augment": {"speed": [], "mixup_alpha": 0.0}})) == h0
    levers = [{"validation_speakers": 4}, {"select_on": "loss"}, {"select_on": "last"}, {"lp_ft_epochs": 5},
              {"lp_fit": "logistic"}, {"head": {"hidden_state": "auto"}},
              {"average_last": 3}, {"augment": {"spec_time_masks": 2}}, {"augment": {"spec_freq_masks": 2}},
              {"augment": {"speed": [0.9, 1.1]}}, {"augment": {"noise_snr_db": [10, 30]}},
              {"augment": {"mixup_alpha": 0.2}}, {"augment": {"label_smoothing": 0.1}},
              {"augment": {"spec_time_masks": 1, "spec_time_width": 20}}]
    hashes = {config_hash(make_config({**base, **lever})) for lever in levers}
    assert h0 not in hashes and len(hashes) == len(levers)
    # a width alone (no mask) is still a different configuration on paper, hashed as set
    assert config_hash(make_config({**base, "augment": {"spec_time_width": 20}})) != h0


def test_lora_takes_the_recipe_defaults_and_other_methods_keep_theirs(tmp_path):
    from loralens.training.config import LORA_RECIPE, method_default
    from loralens.training.run_folder import read_run_config

    for cfg in (TrainConfig(), make_config({}), make_config({"method": "lora", "epochs": None})):
        assert (cfg.method, cfg.epochs, cfg.lr_encoder, cfg.lp_ft_epochs, cfg.lp_fit, cfg.select_on) == \
            ("lora", 3, 3e-4, 20, "gradient", "last")
    assert make_config({"lp_fit": "logistic", "lp_ft_epochs": 0}).lp_ft
    for method in ("frozen", "full"):
        cfg = make_config({"method": method})
        assert (cfg.epochs, cfg.lr_encoder, cfg.lp_ft_epochs, cfg.select_on) == (10, 1e-4, 0, "uar")
        assert all(method_default(k, method) != v for k, v in LORA_RECIPE.items())
    given = make_config({"epochs": 10, "lr_encoder": 1e-4, "lp_ft_epochs": 0, "lp_fit": "gradient",  # as named
                         "select_on": "uar", "head": {"weighted_layer_sum": False}})
    assert (given.epochs, given.lr_encoder, given.lp_ft_epochs, given.select_on) == (10, 1e-4, 0, "uar")
    # the lora configuration of before the recipe, named in full, keeps the hash the code of then gave `{}`
    assert config_hash(given) == "6ad450c92f504eb8"
    # a run folder written before LP-FT existed (its snapshot has no lp_ft_epochs) reads as it was trained
    d = given.model_dump(mode="json")
    del d["lp_ft_epochs"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(d))
    old = read_run_config(tmp_path)
    assert old.lp_ft_epochs == 0 and config_hash(old) == config_hash(given)
    # and a snapshot of the recipe round-trips
    (tmp_path / "config.yaml").write_text(config_to_yaml(TrainConfig()))
    assert read_run_config(tmp_path) == TrainConfig()


def test_recipe_lever_validation():
    with pytest.raises(ConfigError, match="frozen"):
        make_config({"method": "frozen", "augment": {"speed": [0.9, 1.1]}})
    with pytest.raises(ConfigError, match="lp_ft_epochs"):
        make_config({"method": "frozen", "lp_ft_epochs": 2})
    with pytest.raises(ConfigError, match="lp_fit: logistic"):
        make_config({"method": "frozen", "lp_fit": "logistic"})
    assert make_config({"lp_fit": "logistic", "lp_ft_epochs": 0}).lp_ft  # LP-FT on without epochs
    make_config({"method": "frozen", "augment": {"mixup_alpha": 0.2, "label_smoothing": 0.1}, "select_on": "loss"})
    with pytest.raises(ConfigError, match="augment.speed"):
        make_config({"augment": {"speed": [3.0]}})
    with pytest.raises(ConfigError, match="augment.noise_snr_db"):
        make_config({"augment": {"noise_snr_db": [30, 10]}})
    with pytest.raises(ConfigError, match="select_on"):
        make_config({"select_on": "war"})
    with pytest.raises(ConfigError, match="augment.mixup"):
        make_config({"augment": {"mixup": 0.2}})  # unknown field


def test_frozen_section_drops_what_frozen_cannot_take():
    from loralens.training.config import frozen_section

    train = {"epochs": 3, "lp_ft_epochs": 2, "select_on": "loss",
             "augment": {"speed": [0.9, 1.1], "noise_snr_db": [5, 20], "spec_time_masks": 2, "mixup_alpha": 0.3}}
    out = frozen_section(train)
    assert out == {"epochs": 3, "select_on": "loss", "augment": {"mixup_alpha": 0.3}}
    assert train["lp_ft_epochs"] == 2 and "speed" in train["augment"]  # the input is not changed
    make_config({**out, "method": "frozen"})


def test_default_head_and_the_rule_for_fields_not_given():
    from loralens.training.config import HeadConfig, head_defaults

    h = TrainConfig().head  # each fold chooses (auto-all), z-scored per speaker
    assert (h.hidden_state, h.weighted_layer_sum, h.layer_norm, h.standardize, h.speaker_norm) == \
        ("auto-all", False, False, True, True)
    h = make_config({"head": {"weighted_layer_sum": True}}).head  # the weighted sum on every fold (0.6's default)
    assert (h.hidden_state, h.weighted_layer_sum, h.layer_norm, h.standardize, h.speaker_norm) == \
        (None, True, True, True, True)
    last = make_config({"head": {"weighted_layer_sum": False}})  # --last-layer: the paper's head, raw
    assert (last.head.layer_norm, last.head.standardize, last.head.speaker_norm) == (False, False, False)
    one = make_config({"head": {"hidden_state": 3}})  # one hidden state below the last: z-scored per speaker, no sum
    assert (one.head.weighted_layer_sum, one.head.layer_norm, one.head.standardize, one.head.speaker_norm) \
        == (False, False, True, True)
    global_z = make_config({"head": {"speaker_norm": False}})  # z-scored with the training clips' statistics
    assert (global_z.head.standardize, global_z.head.speaker_norm) == (True, False)
    named_last = make_config({"head": {"hidden_state": "last"}})
    assert (named_last.head.weighted_layer_sum, named_last.head.standardize) == (False, False)
    raw_sum = make_config({"head": {"weighted_layer_sum": True, "standardize": False}})
    assert (raw_sum.head.weighted_layer_sum, raw_sum.head.layer_norm, raw_sum.head.standardize,
            raw_sum.head.speaker_norm) == (True, True, False, False)
    assert head_defaults({"layer_norm": False}) == {"layer_norm": False, "weighted_layer_sum": True,
                                                    "standardize": True, "speaker_norm": True}
    assert head_defaults({}) == {"hidden_state": "auto-all", "weighted_layer_sum": False, "layer_norm": False,
                                 "standardize": True, "speaker_norm": True}
    raw_auto = make_config({"head": {"standardize": False}})
    assert (raw_auto.head.hidden_state, raw_auto.head.standardize, raw_auto.head.speaker_norm) == \
        ("auto-all", False, False)
    assert HeadConfig.model_validate(HeadConfig().model_dump()) == HeadConfig()  # a snapshot round-trips
    # the default head enters the hash (it differs from the head of the runs made before it)
    assert config_hash(make_config({})) != config_hash(make_config({"head": {"weighted_layer_sum": False}}))
