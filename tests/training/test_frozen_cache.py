"""`loralens.training.frozen_cache.share_encoder_cache`: cached frozen encoder outputs shared between run folders."""

from __future__ import annotations

import os

import torch

from loralens.training.frozen_cache import share_encoder_cache


def test_share_links_what_is_missing_and_keeps_what_is_there(tmp_path):
    a, b, dst = tmp_path / "a", tmp_path / "b", tmp_path / "dst"
    a.mkdir()
    b.mkdir()
    (a / "k1.safetensors").write_bytes(b"one")
    (b / "k1.safetensors").write_bytes(b"other copy of k1")
    (b / "k2.safetensors").write_bytes(b"two")
    (b / "notes.txt").write_text("not a cache file")
    assert share_encoder_cache([a, b, tmp_path / "missing"], dst) == 2
    assert sorted(p.name for p in dst.iterdir()) == ["k1.safetensors", "k2.safetensors"]
    assert (dst / "k1.safetensors").read_bytes() == b"one"  # the first source that has it
    assert os.stat(dst / "k2.safetensors").st_ino == os.stat(b / "k2.safetensors").st_ino  # a link, not a copy
    (dst / "k1.safetensors").unlink()
    (dst / "k1.safetensors").write_bytes(b"computed here")
    assert share_encoder_cache([a, b, dst], dst) == 0  # nothing missing; itself as a source is skipped
    assert (dst / "k1.safetensors").read_bytes() == b"computed here"


def test_copies_when_links_fail(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "k.safetensors").write_bytes(b"payload")

    def no_links(*args, **kwargs):
        raise OSError("links not allowed here")

    monkeypatch.setattr(os, "link", no_links)
    assert share_encoder_cache([src], dst) == 1
    assert (dst / "k.safetensors").read_bytes() == b"payload" and not list(dst.glob("*.tmp"))
    assert os.stat(dst / "k.safetensors").st_ino != os.stat(src / "k.safetensors").st_ino


def test_a_cut_encoders_outputs_are_read_from_the_uncut_cache_when_there(tiny_model_dir, synthetic_root,
                                                                        feature_cache, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from tests.training.conftest import base_settings, train_in_process

    def settings(name: str, **head) -> dict:
        s = base_settings(tiny_model_dir, synthetic_root, feature_cache, tmp_path / name, method="frozen", epochs=2,
                          fold=0, head={"projector_dim": 16, **head})
        s.pop("lora")
        return s

    train_in_process(settings("full"))
    (full_file,) = (tmp_path / "full" / "encoder_cache").glob("*.safetensors")
    # computed by the cut encoder itself
    alone = train_in_process(settings("alone", hidden_state=1, standardize=True))
    (cut_file,) = (tmp_path / "alone" / "encoder_cache").glob("*.safetensors")
    shutil.copytree(tmp_path / "full" / "encoder_cache", tmp_path / "shared" / "encoder_cache")
    shared = train_in_process(settings("shared", hidden_state=1, standardize=True))
    assert [p.name for p in (tmp_path / "shared" / "encoder_cache").glob("*.safetensors")] == [full_file.name]
    full, cut = load_file(str(full_file))["pooled"], load_file(str(cut_file))["pooled"]
    assert cut.shape[1] == 2 and torch.equal(full[:, :2], cut)  # bit for bit (fp32)
    def scores(summary: dict) -> tuple:
        f = summary["folds"]["fold0"]
        return f["uar"], f["validation_uar"], f["selected_epoch"], f["per_class_recall"]

    assert scores(shared) == scores(alone)
