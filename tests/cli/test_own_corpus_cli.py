"""Bringing one's own corpus, end to end through the CLI (issue 13): label mistakes named by line, label maps and
named label sets, duplicate rows, manifest files and folders, the fold check with the scheme that works, the auto
scheme of manifests and RAVDESS subsets, one flag vocabulary. The audio files are empty: none of these commands
decodes audio (summaries run with --no-durations)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click
import numpy as np
import pytest
import soundfile as sf
import yaml

from loralens.cli import cli, main
from loralens.cli.options import ALIASES

LABELS4 = ("neutral", "happy", "sad", "angry")


def write_manifest(folder: Path, rows: list[tuple[str, ...]], header=("path", "label", "speaker"),
                   name: str = "manifest.csv", audio: bool = False) -> Path:
    """A manifest of `rows` in `folder`, with an empty file for each path, or with `audio` a 0.3-s tone (WAV)."""
    folder.mkdir(parents=True, exist_ok=True)
    tone = 0.1 * np.sin(2 * np.pi * 220 * np.arange(4800) / 16000).astype(np.float32)
    for r in rows:
        (folder / r[0]).parent.mkdir(parents=True, exist_ok=True)
        if audio:
            sf.write(folder / r[0], tone, 16000)
        else:
            (folder / r[0]).touch()
    path = folder / name
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def balanced_rows(n_speakers: int, labels=LABELS4, per_class: int = 3) -> list[tuple[str, str, str]]:
    return [(f"a/s{s}_{lab}_{k}.wav", lab, f"spk{s}")
            for s in range(n_speakers) for lab in labels for k in range(per_class)]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------- 2 / 9: labels, label map, label sets


def test_typo_and_case_difference_are_errors_naming_lines(tmp_path, capsys):
    rows = balanced_rows(4)
    rows[4] = (rows[4][0], "hapy", rows[4][2])  # line 6
    rows[13] = (rows[13][0], "Neutral", rows[13][2])  # line 15
    m = write_manifest(tmp_path, rows)
    code, _, err = run(capsys, "data", "summary", "--corpus", "manifest", "--corpus-root", str(m), "--no-durations")
    assert code == 2
    assert err == (
        f"error: manifest: {m}: 2 label problem(s): label 'Neutral' (line 15) differs only in case from 'neutral' "
        "(11 clips); label 'hapy' (line 6) looks like a misspelling of 'happy' (11 clips)\n"
        "  hint: correct the manifest, or map the labels with --label-map Neutral=neutral,hapy=happy (label_map in "
        "YAML), or leave such clips out with --on-unknown-label skip\n")
    code, out, err = run(capsys, "data", "summary", "--corpus", "manifest", "--corpus-root", str(m), "--no-durations",
                         "--on-unknown-label", "skip", "--json")
    assert code == 0
    assert err == "warning: manifest: left out 2 clip(s) whose labels look mistaken: Neutral (1), hapy (1)\n"
    assert json.loads(out)["labels"] == list(LABELS4)
    # the map the hint names fixes it; classes in the built-in order, not alphabetical
    code, out, err = run(capsys, "data", "summary", "--corpus", "manifest", "--corpus-root", str(m), "--no-durations",
                         "--label-map", "Neutral=neutral,hapy=happy", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["labels"] == list(LABELS4) and s["classes"] == {lab: 12 for lab in LABELS4}


def test_label_outside_an_explicit_set_is_an_error_or_a_counted_warning(tmp_path, capsys):
    rows = balanced_rows(4, labels=(*LABELS4, "fear"), per_class=2)
    m = write_manifest(tmp_path, rows)
    args = ["data", "summary", "--corpus", "manifest", "--corpus-root", str(m), "--no-durations"]
    code, _, err = run(capsys, *args, "--label-set", "4class")
    assert code == 2
    assert err == (
        f"error: manifest: {m}: 1 label problem(s): label 'fear' (lines 10, 11, 20, 21, 30, 31, 40, 41) is not in the "
        "label set\n"
        "  hint: correct the manifest, or map the labels with --label-map fear=LABEL (label_map in YAML), or leave "
        "such clips out with --on-unknown-label skip\n")
    code, out, err = run(capsys, *args, "--label-set", "4class", "--on-unknown-label", "skip")
    assert code == 0
    assert err == "warning: manifest: left out 8 clip(s) whose labels are not in the label set " \
                  "neutral,happy,sad,angry: fear (8)\n"
    assert "32 clips, 4 speakers" in out
    # a named set of the shared vocabulary leaves out other emotions of that vocabulary, saying how many
    code, out, err = run(capsys, *args, "--label-map", "fear=fearful", "--label-set", "4class")
    assert code == 0 and err.endswith("not in the label set neutral,happy,sad,angry: fearful (8)\n")
    code, _, err = run(capsys, *args, "--label-map", "anger=angry")
    assert code == 2
    assert err.startswith("error: manifest: --label-map names label(s) the corpus does not have: anger\n"
                          "  hint: its labels are: angry, fear, happy, neutral, sad")


def test_label_map_from_yaml_reaches_the_plan(tmp_path, capsys):
    rows = [(p, "anger" if lab == "angry" else lab, s) for p, lab, s in balanced_rows(4)]
    m = write_manifest(tmp_path / "corpus", rows, audio=True)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"corpus": "manifest", "corpus_root": str(m), "label_map": {"anger": "angry"},
                                   "label_set": "4class", "model": "tiny.en", "folds": "speaker-kfold",
                                   "folds_k": 2, "run_dir": str(tmp_path / "run")}))
    code, out, err = run(capsys, "train", "--config", str(cfg), "--dry-run")
    assert code == 0, err
    assert "corpus manifest: 48 clips, classes neutral, happy, sad, angry" in out


def test_named_label_sets_listed_for_an_unknown_name(tmp_path, capsys):
    m = write_manifest(tmp_path, balanced_rows(4))
    code, _, err = run(capsys, "data", "summary", "--corpus", "manifest", "--corpus-root", str(m),
                       "--label-set", "five", "--no-durations")
    assert code == 2
    assert err == ("error: manifest: unknown label set 'five'\n  hint: choose one of: 4class, 8class, all, or list "
                   "labels separated by commas (class order), e.g. 'neutral,happy,sad,angry'\n")


# ------------------------------------------------------------------------- 6 / 7: manifest files, duplicates


def test_duplicate_rows_named_by_line_and_two_formats_are_two_clips(tmp_path, capsys):
    rows = balanced_rows(4)
    m = write_manifest(tmp_path, rows + [rows[2]])  # line 50 repeats line 4
    code, _, err = run(capsys, "data", "summary", "--corpus", "manifest", "--corpus-root", str(m), "--no-durations")
    assert code == 2
    assert err == (f"error: manifest: {m}: 1 row(s) list a file already listed: line 50 repeats line 4 "
                   f"({rows[2][0]})\n  hint: list each audio file once (delete the repeated rows)\n")
    extra = [("a/extra.mp3", "happy", "spk0"), ("a/extra.ogg", "sad", "spk0")]
    m = write_manifest(tmp_path, rows + extra)
    code, out, err = run(capsys, "data", "summary", "--corpus", "manifest", "--corpus-root", str(m),
                         "--no-durations", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["n_clips"] == 50 and s["speakers"]["spk0"]["n_clips"] == 14


def test_train_accepts_a_manifest_file_and_finds_an_upper_case_manifest(tmp_path, capsys):
    m = write_manifest(tmp_path / "c", balanced_rows(4), name="MANIFEST.csv", audio=True)
    for root in (m, m.parent):
        code, out, err = run(capsys, "train", "--corpus", "manifest", "--corpus-root", str(root), "--model",
                             "tiny.en", "--folds-k", "2", "--run-dir", str(tmp_path / "run"), "--dry-run")
        assert code == 0, err
        assert "folds: 2, speaker-kfold, k=2 (auto: --folds-k given); running 2" in out


# ------------------------------------------------------------------------- 3 / 4: fold sanity


def confounded_rows() -> list[tuple[str, str, str]]:
    """12 speakers; only spk0 and spk1 recorded 'angry' (emotion and speaker confounded)."""
    return [(f"a/s{s}_{lab}_{k}.wav", lab, f"spk{s}") for s in range(12)
            for lab in ("neutral", "happy", "sad") + (("angry",) if s < 2 else ()) for k in range(3)]


def test_folds_missing_a_class_are_errors_naming_the_scheme_that_works(tmp_path, capsys):
    m = write_manifest(tmp_path, confounded_rows())
    out_file = tmp_path / "folds.json"
    code, out, err = run(capsys, "data", "folds", "--corpus", "manifest", "--corpus-root", str(m),
                         "--out", str(out_file))
    assert code == 2 and not out_file.exists()
    assert out.startswith("5 folds (speaker-kfold, seed 0) of manifest, 114 clips; scheme speaker-kfold, k=5 "
                          "(auto: no sessions, k from its 12 speakers)\n")
    assert "fold    split       clips  neutral    happy      sad    angry\n" in out
    assert "error: fold2: the test split (18 clips) has no 'angry' clip, though training has 3\n" in out
    assert err == ("error: 3 fold error(s): " + str(out_file) + " not written\n"
                   "  hint: use --folds speaker-kfold --folds-k 2 (no fold then lacks a class); check with "
                   "`loralens data folds`\n")
    # the suggestion works as written
    code, out, err = run(capsys, "data", "folds", "--corpus", "manifest", "--corpus-root", str(m), "--folds",
                         "speaker-kfold", "--folds-k", "2", "--out", str(out_file))
    assert code == 0, err
    assert "error:" not in out and out_file.exists()
    # data summary --folds: the same check, exit code 1
    code, out, err = run(capsys, "data", "summary", "--corpus", "manifest", "--corpus-root", str(m), "--folds",
                         "auto", "--no-durations")
    assert code == 1 and "error: fold2: the test split (18 clips) has no 'angry' clip" in out
    assert "fold error(s): the folds cannot measure every class\n  hint: use --folds speaker-kfold --folds-k 2" in err


def test_a_class_of_one_speaker_is_an_error_at_the_start_of_train(tmp_path, capsys):
    rows = balanced_rows(6, labels=("neutral", "happy", "sad"))
    rows += [(f"a/s0_angry_{k}.wav", "angry", "spk0") for k in range(3)]
    m = write_manifest(tmp_path, rows, audio=True)
    code, _, err = run(capsys, "train", "--corpus", "manifest", "--corpus-root", str(m), "--model", "tiny.en",
                       "--run-dir", str(tmp_path / "run"), "--dry-run")
    assert code == 2
    assert err.startswith("error: the folds (speaker-kfold) cannot measure every class: class 'angry' is recorded "
                          "by one speaker only (spk0): the fold that tests spk0 never trains on it, the others never "
                          "test it")
    assert err.endswith("  hint: no speaker-independent fold can test a class of one speaker: leave it out with "
                        "--label-set (list the other labels) or map it onto another with --label-map\n")


def test_auto_k_and_an_explicit_k_are_stated(tmp_path, capsys):
    m = write_manifest(tmp_path, balanced_rows(9))
    code, out, _ = run(capsys, "data", "folds", "--corpus", "manifest", "--corpus-root", str(m),
                       "--out", str(tmp_path / "f.json"))
    assert code == 0
    assert out.startswith("4 folds (speaker-kfold, seed 0) of manifest, 108 clips; scheme speaker-kfold, k=4 "
                          "(auto: no sessions, k from its 9 speakers)\n")
    code, out, _ = run(capsys, "data", "folds", "--corpus", "manifest", "--corpus-root", str(m), "--folds-k", "3",
                       "--out", str(tmp_path / "f.json"))
    assert code == 0 and "scheme speaker-kfold, k=3 (auto: --folds-k given)\n" in out


def _ravdess_subset(root: Path, dest: Path, actors: int) -> Path:
    for a in range(1, actors + 1):
        (dest / f"Actor_{a:02d}").symlink_to(root / f"Actor_{a:02d}", target_is_directory=True)
    return dest


@pytest.mark.parametrize("actors", [4, 6])
def test_folds_auto_on_a_ravdess_subset(ravdess_root, tmp_path, capsys, actors):
    sub = _ravdess_subset(ravdess_root, tmp_path, actors)
    code, out, err = run(capsys, "data", "folds", "--corpus", "ravdess", "--corpus-root", str(sub),
                         "--out", str(tmp_path / "f.json"))
    k = actors // 2
    assert code == 0, err
    assert out.startswith(f"{k} folds (speaker-kfold, seed 0) of ravdess, {60 * actors} clips; scheme speaker-kfold, "
                          f"k={k} (auto: a RAVDESS subset of {actors} actors, k from its speakers)\n")
    code, _, err = run(capsys, "data", "folds", "--corpus", "ravdess", "--corpus-root", str(sub), "--folds",
                       "ravdess6", "--out", str(tmp_path / "f.json"))
    assert code == 2
    what = {4: "fold0 of ravdess6: 0 speaker(s) left for training and validation (4 speakers in all)",
            6: "fold2 of ravdess6: no speaker of the corpus falls in its test split"}[actors]
    assert err == (f"error: {what}\n  hint: ravdess6 does not fit these {actors} speakers; use --folds speaker-kfold "
                   f"--folds-k {k}\n")


# ------------------------------------------------------------------------- 10: one vocabulary, help, examples


def _commands(group: click.Group, prefix: str = ""):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


def test_every_help_shows_defaults_and_examples_and_no_old_spelling(capsys):
    for name, cmd in _commands(cli):
        assert main([*name.split(), "--help"]) == 0
        text = capsys.readouterr().out
        assert "\nExamples:\n  loralens " + name in text, name
        for old in ALIASES:
            assert f"{old} " not in text, (name, old)
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.is_flag or p.required or p.name in ("help", "config_file"):
                continue
            record = p.get_help_record(click.Context(cmd, **cmd.context_settings))
            assert record is not None and "[default: " in record[1], (name, p.name)


def test_old_spellings_still_work(tmp_path, capsys):
    m = write_manifest(tmp_path, balanced_rows(9))
    code, out, err = run(capsys, "data", "folds", "--corpus", "manifest", "--root", str(m), "--scheme",
                         "speaker-kfold", "--k", "3", "--out", str(tmp_path / "f.json"))
    assert code == 0, err
    assert "scheme speaker-kfold, k=3\n" in out


def test_analyze_list_needs_no_run_folder(capsys):
    code, out, _ = run(capsys, "analyze", "--list")
    assert code == 0 and out.startswith("layer_contribution")
    code, _, err = run(capsys, "analyze")
    assert code == 2 and "give the run folder RUN_DIR (or --list to see the analyses)" in err


def test_train_head_flags_reach_the_plan_and_bad_values_name_the_field(tmp_path, capsys):
    m = write_manifest(tmp_path / "c", balanced_rows(4), audio=True)
    common = ["train", "--corpus", "manifest", "--corpus-root", str(m), "--model", "tiny.en", "--folds-k", "2",
              "--run-dir", str(tmp_path / "run"), "--dry-run"]
    code, out, err = run(capsys, *common, "--hidden-state", "auto", "--standardize")
    assert code == 0, err
    assert "head on the hidden state each fold chooses" in out and "input z-scored per speaker" in out
    code, out, err = run(capsys, *common, "--speaker-norm")
    assert code == 0, err
    assert ("head on the hidden state or the weighted sum of all hidden states, whichever each fold chooses "
            "(speaker-grouped probe on the frozen outputs), input z-scored per speaker") in out
    code, out, err = run(capsys, *common, "--weighted-layer-sum")
    assert code == 0, err
    assert "head on the weighted sum of all hidden states (each normalised), input z-scored per speaker" in out
    code, out, err = run(capsys, *common, "--speaker-norm", "--no-standardize")
    assert code == 2 and "head.speaker_norm" in err and "needs head.standardize" in err
    code, out, err = run(capsys, *common, "--hidden-state", "0")
    assert code == 2 and "head.hidden_state" in err and "index >= 1" in err
