"""Whisper log-mel features and their cache: exactness against the extractor, reuse, keys, broken entries."""

from __future__ import annotations

import pickle
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from loralens.data.audio import load_audio
from loralens.data.batching import FeatureItem, collate
from loralens.data.clips import Clip
from loralens.data.features import (
    ClipFeatures,
    FeatureCache,
    FeatureSettings,
    compute_features,
    file_sha256,
    prefix_samples,
)
from loralens.errors import ConfigError

SR = 16000


def tone(seconds: float, freq: float = 440.0, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    """A tone with a little noise, `[samples]` float32 at 16 kHz."""
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    rng = np.random.default_rng(seed)
    return (amp * np.sin(2 * np.pi * freq * t) + 0.01 * amp * rng.standard_normal(n)).astype(np.float32)


def extractor_output(audio: np.ndarray, n_mels: int = 80) -> torch.Tensor:
    """The reference: what the exactness contract names, `[n_mels, 3000]`."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=n_mels)
    return fe(audio, sampling_rate=SR, return_tensors="pt")["input_features"][0]


def write_flac(path: Path, audio: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, SR, subtype="PCM_16")
    return path


# --- the features of one clip -------------------------------------------------------------------


@pytest.mark.parametrize("n_samples", [16000, 16001, 16159, 8000 + 37])
def test_full_matches_extractor_bit_for_bit_and_lengths_follow_the_definition(n_samples):
    audio = tone(n_samples / SR)[:n_samples]
    settings = FeatureSettings()
    feats = compute_features(audio, settings)
    ref = extractor_output(audio)
    assert torch.equal(feats.full(), ref)
    # valid frames = ceil(samples / 160), and equals the extractor's own attention mask
    assert feats.n_frames == -(-n_samples // 160)
    mask = settings.extractor()(audio, sampling_rate=SR, return_attention_mask=True)["attention_mask"][0]
    assert feats.n_frames == int(mask.sum())
    # stored frames: those whose 400-sample window reaches audio, ceil((n + 200) / 160)
    assert feats.stored_frames == -(-(n_samples + 200) // 160)
    assert feats.stored_frames - feats.n_frames in (1, 2)
    # every frame from there on holds the one padding value
    tail = ref[:, feats.stored_frames :]
    assert torch.all(tail == feats.pad_value)
    # and that value is the clamp floor: (max(log_max - 8, -10) + 4) / 4 = max(M - 2, -1.5), M the max
    assert feats.pad_value == pytest.approx(max(float(ref.max()) - 2.0, -1.5), abs=1e-6)
    # the last stored frame still sees audio (the prefix is not longer than needed)
    assert not torch.all(ref[:, feats.stored_frames - 1] == feats.pad_value)


def test_trim_window_is_the_prefix_of_full():
    audio = tone(1.234)
    feats = compute_features(audio, FeatureSettings())
    ref = extractor_output(audio)
    for frames in (1, feats.n_frames, feats.stored_frames, feats.stored_frames + 7, 3000):
        assert torch.equal(feats.window(frames), ref[:, :frames])


def test_quiet_clip_pads_with_the_absolute_floor():
    # peak log-mel below -2 (log10): the floor is then log10(1e-10) = -10, i.e. (-10 + 4) / 4 = -1.5
    audio = tone(0.5, amp=1e-5)
    feats = compute_features(audio, FeatureSettings())
    ref = extractor_output(audio)
    assert feats.pad_value == -1.5
    assert torch.equal(feats.full(), ref)


def test_128_mel_bins():
    audio = tone(0.7, freq=300.0)
    settings = FeatureSettings.from_n_mels(128)
    feats = compute_features(audio, settings)
    assert feats.mel.shape == (128, settings.covered_frames(audio.size))
    assert torch.equal(feats.full(), extractor_output(audio, n_mels=128))


def test_clip_longer_than_30s_is_cut_with_a_warning():
    audio = tone(30.5, freq=200.0)
    with pytest.warns(UserWarning, match="longer than the 30 s"):
        feats = compute_features(audio, FeatureSettings(), where="long.wav")
    assert feats.truncated and feats.n_samples == audio.size
    assert feats.n_frames == 3000 and feats.stored_frames == 3000
    assert torch.equal(feats.full(), extractor_output(audio))
    # no frame is padding here; the recorded value is the one padding would take
    assert feats.pad_value == pytest.approx(max(float(feats.mel.max()) - 2.0, -1.5), abs=1e-6)


def _noise(seconds: float, amp: float = 0.3, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amp * rng.standard_normal(int(round(seconds * SR)))).astype(np.float32)


@pytest.mark.parametrize("name, audio", [
    ("0.1 s", tone(0.1)),
    ("29.9 s", tone(29.9, freq=220.0)),
    ("exactly 30 s", tone(30.0, freq=330.0)),
    ("silence", np.zeros(3 * SR, np.float32)),
    ("clipped", np.clip(_noise(2.0, amp=3.0), -1.0, 1.0)),
    ("loud, beyond +-1", _noise(1.5, amp=4.0)),
    ("a click then silence", np.concatenate([np.ones(5, np.float32), np.zeros(SR, np.float32)])),
])
def test_short_window_features_equal_the_30s_window(name, audio):
    """compute_features runs the extractor on a shortened window (prefix_samples); every kept frame and the
    padding value must equal the 30-s extractor output. The per-clip floor max(log_spec, max - 8) would
    differ if the maximum over the short window differed from the maximum over 30 s."""
    settings = FeatureSettings()
    feats = compute_features(audio, settings)
    ref = extractor_output(audio)
    assert prefix_samples(settings, audio.size) <= settings.max_samples
    assert float((feats.full() - ref).abs().max()) <= 1e-5, name
    assert torch.equal(feats.full(), ref), name  # in practice the same bits: same STFT frames, same maximum
    assert feats.n_frames == settings.valid_frames(audio.size)


def test_prefix_window_is_long_enough_and_no_longer():
    settings = FeatureSettings()
    for n in (1, 159, 160, 161, 16000, 58_000, 478_400, 479_000, 480_000, 500_000):
        length = prefix_samples(settings, n)
        covered = settings.covered_frames(n)
        assert length % settings.hop_length == 0 or length == settings.max_samples
        if length < settings.max_samples:
            # the last kept frame's window ends n_fft//2 + hop before the reflect padding's region
            assert (covered - 1) * settings.hop_length + settings.n_fft // 2 < length - settings.n_fft // 2
            # and at least one frame past the kept ones sees only silence
            assert length // settings.hop_length > covered
            assert length <= (covered + 4) * settings.hop_length + settings.n_fft
        else:
            assert (covered + 2) * settings.hop_length + settings.n_fft > settings.max_samples - settings.hop_length


def test_settings_from_extractor_and_invalid_ones():
    from transformers import WhisperFeatureExtractor

    assert FeatureSettings.from_extractor(WhisperFeatureExtractor(feature_size=128)) == FeatureSettings(n_mels=128)
    with pytest.raises(ConfigError, match="dither"):
        FeatureSettings.from_extractor(WhisperFeatureExtractor(dither=1e-4))
    with pytest.raises(ConfigError, match="n_mels"):
        FeatureSettings(n_mels=0)
    with pytest.raises(ConfigError, match="mono"):
        compute_features(np.zeros((2, 100), np.float32), FeatureSettings())


# --- real clips ----------------------------------------------------------------------------------


def ravdess_sample(root: Path, per_actor: int = 1) -> list[Path]:
    files = []
    for actor in sorted(root.glob("Actor_*")):
        files.extend(sorted(actor.glob("*.flac"))[:per_actor])
    if not files:
        pytest.skip(f"no RAVDESS FLAC files under {root}")
    return files


def test_real_clips_full_and_trim_batches_equal_the_extractor(ravdess_root, tmp_path):
    files = ravdess_sample(ravdess_root)  # one clip of each of the 24 actors
    cache = FeatureCache(tmp_path / "cache")
    cache.prefetch(files, progress=False)
    refs = [extractor_output(load_audio(f)) for f in files]
    items = [FeatureItem(id=f.stem, features=cache.get(f), label=i % 8) for i, f in enumerate(files)]

    full = collate(items, "full")
    assert full.features.shape == (len(files), 80, 3000)
    assert torch.equal(full.features, torch.stack(refs))

    trim = collate(items, "trim", multiple=8)
    longest = max(it.features.n_frames for it in items)
    assert trim.features.shape[-1] == -(-longest // 8) * 8
    assert torch.equal(trim.features, torch.stack(refs)[:, :, : trim.features.shape[-1]])
    for it, ref in zip(items, refs):
        assert torch.all(ref[:, it.features.stored_frames :] == it.features.pad_value)


# --- the cache -----------------------------------------------------------------------------------


@pytest.fixture
def clip_files(tmp_path) -> list[Path]:
    return [write_flac(tmp_path / "audio" / f"c{i}.flac", tone(0.4 + 0.15 * i, freq=200 + 90 * i, seed=i))
            for i in range(4)]


def test_second_pass_computes_nothing_and_gives_identical_tensors(tmp_path, clip_files):
    cache = FeatureCache(tmp_path / "cache")
    assert cache.prefetch(clip_files, progress=False) == 4
    first = [cache.get(f) for f in clip_files]
    assert cache.computed == 4

    again = FeatureCache(tmp_path / "cache")  # a new process would see the same
    assert again.prefetch(clip_files, progress=False) == 0
    second = [again.get(Clip(id=f.stem, path=f, label="x", speaker="s")) for f in clip_files]
    assert again.computed == 0
    for a, b, f in zip(first, second, clip_files):
        assert torch.equal(a.mel, b.mel) and a.pad_value == b.pad_value and a.n_frames == b.n_frames
        assert torch.equal(b.full(), extractor_output(load_audio(f)))
        assert b.key == file_sha256(f)
        assert cache.entry_path(b.key) == tmp_path / "cache" / cache.settings_key / b.key[:2] / f"{b.key}.safetensors"
    assert (tmp_path / "cache" / cache.settings_key / "settings.json").exists()


def test_in_memory_audio_is_cached_by_its_samples(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    audio = tone(0.3)
    a = cache.get(audio)
    b = cache.get(audio.copy())
    assert cache.computed == 1 and torch.equal(a.mel, b.mel)
    cache.get(audio * 0.5)
    assert cache.computed == 2


def test_key_changes_with_settings_and_content_not_with_path(tmp_path, clip_files):
    base = FeatureCache(tmp_path / "cache")
    assert FeatureCache(tmp_path / "cache", FeatureSettings(n_mels=128)).settings_key != base.settings_key
    assert FeatureCache(tmp_path / "cache", FeatureSettings(hop_length=320)).settings_key != base.settings_key
    assert FeatureCache(tmp_path / "cache", FeatureSettings(n_fft=512)).settings_key != base.settings_key
    assert FeatureCache(tmp_path / "cache").settings_key == base.settings_key
    material = base.settings.key_material(base.loader_id)
    assert {"transformers", "torch", "loader", "settings", "format"} <= set(material)

    f = clip_files[0]
    base.get(f)
    # the same bytes under another name: a cache hit
    copy = tmp_path / "elsewhere" / "renamed.flac"
    copy.parent.mkdir()
    copy.write_bytes(f.read_bytes())
    base.get(copy)
    assert base.computed == 1
    # other settings: computed again, into another folder
    other = FeatureCache(tmp_path / "cache", FeatureSettings(n_mels=128))
    assert other.get(f).n_mels == 128 and other.computed == 1
    # the file rewritten with other audio: a new key and new features
    key_before = base.content_key(f)
    write_flac(f, tone(0.4, freq=1000.0, seed=9))
    assert base.content_key(f) != key_before
    feats = base.get(f)
    assert base.computed == 2
    assert torch.equal(feats.full(), extractor_output(load_audio(f)))


def test_custom_loader_needs_an_id(tmp_path):
    with pytest.raises(ConfigError, match="loader_id"):
        FeatureCache(tmp_path, loader=lambda p, sr: np.zeros(10, np.float32))
    a = FeatureCache(tmp_path, loader=lambda p, sr: load_audio(p, sr), loader_id="mine/1")
    assert a.settings_key != FeatureCache(tmp_path).settings_key


def corrupt_truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt_flip_data_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x40  # inside the mel tensor's bytes: only the checksum can tell
    path.write_bytes(bytes(data))


def corrupt_garbage(path: Path) -> None:
    path.write_bytes(b"\x00" * 37)


def corrupt_other_settings(path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["settings_key"] = "0" * 16
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize("corrupt", [corrupt_truncate, corrupt_flip_data_byte, corrupt_garbage, corrupt_other_settings])
def test_broken_entry_is_detected_and_recomputed(tmp_path, clip_files, corrupt, caplog):
    f = clip_files[1]
    cache = FeatureCache(tmp_path / "cache")
    good = cache.get(f)
    entry = cache.entry_path(good.key)
    corrupt(entry)
    assert cache.lookup(f) is None
    with caplog.at_level("WARNING"):
        again = cache.get(f)
    assert "broken" in caplog.text
    assert cache.computed == 2 and cache.recovered == 1
    assert torch.equal(again.mel, good.mel) and again.pad_value == good.pad_value
    # the entry was rewritten whole: the next reader gets a hit
    fresh = FeatureCache(tmp_path / "cache")
    assert torch.equal(fresh.get(f).mel, good.mel) and fresh.computed == 0


def test_concurrent_writers_of_one_entry_leave_one_good_file(tmp_path, clip_files):
    f = clip_files[2]
    caches = [FeatureCache(tmp_path / "cache") for _ in range(4)]
    barrier = threading.Barrier(len(caches))
    results: list[ClipFeatures] = []
    errors: list[BaseException] = []

    def work(cache: FeatureCache) -> None:
        try:
            barrier.wait()
            results.append(cache.get(f))
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(c,)) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(torch.equal(r.mel, results[0].mel) for r in results)
    folder = caches[0].entry_path(results[0].key).parent
    assert [p.name for p in folder.iterdir()] == [f"{results[0].key}.safetensors"]  # no temporary files left
    reader = FeatureCache(tmp_path / "cache")
    assert torch.equal(reader.get(f).mel, results[0].mel) and reader.computed == 0


def test_cache_pickles_for_dataloader_workers(tmp_path, clip_files):
    cache = FeatureCache(tmp_path / "cache")
    cache.get(clip_files[0])
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.settings_key == cache.settings_key
    assert torch.equal(clone.get(clip_files[0]).mel, cache.get(clip_files[0]).mel)
    assert clone.computed == 1  # counters are per object: the copy carries the count, computes nothing new


def test_missing_file_raises_audio_error(tmp_path):
    from loralens.errors import AudioError

    with pytest.raises(AudioError, match="nope.flac"):
        FeatureCache(tmp_path / "cache").get(tmp_path / "nope.flac")


def test_no_warning_for_short_clips():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_features(tone(0.2), FeatureSettings())


@pytest.mark.parametrize("n_samples", [479_500, 479_900, 480_000])
def test_clips_filling_the_window(n_samples):
    audio = tone(30.0, freq=250.0)[:n_samples]
    feats = compute_features(audio, FeatureSettings())
    ref = extractor_output(audio)
    assert torch.equal(feats.full(), ref) and not feats.truncated
    assert feats.n_frames == min(3000, -(-n_samples // 160))
    assert feats.stored_frames == min(3000, -(-(n_samples + 200) // 160))
    assert torch.all(ref[:, feats.stored_frames :] == feats.pad_value)


def test_benchmark_script_end_to_end(tmp_path, clip_files):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_feature_cache",
                                                  Path(__file__).parents[2] / "bench" / "feature_cache.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    bench.main(["--root", str(tmp_path / "audio"), "--cache", str(tmp_path / "c"), "--out", str(out), "--sample", "2",
                "--batch-size", "2", "--no-progress"])
    result = json.loads(out.read_text())
    assert result["clips"] == 4 and result["cold"]["computed"] == 4 and result["warm"]["computed"] == 0
    assert result["extractor_paths"]["cache_full_equal_to_extractor"] == "2/2"
    assert result["disk"]["entries"] == 4 and result["frames"]["valid_min"] == 40  # 0.4 s = 6400 samples
    assert 0 < result["padding_share"]["trim_length_grouped"] <= result["padding_share"]["full"] < 1
