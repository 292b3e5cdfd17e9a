"""The synthetic emotional-speech corpus of the offline demo: a source-filter synthesiser with emotion prosody.

Each clip is a made-up "utterance" of syllables: a glottal source (Rosenberg pulse train with per-period jitter
and shimmer, plus aspiration noise) goes through a cascade of second-order formant resonators (Klatt 1980) for
a sequence of vowels; consonant onsets are band-pass-filtered noise bursts; syllables have rise-fall amplitude
envelopes. Speakers differ in base pitch, formant scale (vocal-tract length), tempo, level and voice quality.
The four classes differ by the prosody and voice-quality profiles reported for vocal emotion expression
(Banse & Scherer 1996; Juslin & Laukka 2003, table 7; Scherer 2003): pitch level and range, syllable rate,
intensity and spectral tilt, see `EmotionProfile` and `PROFILES`.

Clip duration is drawn independently of the class, so duration alone carries no label information.
Everything is drawn from `numpy.random.default_rng([seed, ...])` streams keyed by (speaker, class, clip index):
the same seed gives byte-identical files (on the same numpy/scipy/libsndfile versions), and a clip does not
change when other clips are added or removed.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from loralens.data.clips import Clip, Corpus
from loralens.errors import ConfigError
from loralens.io import atomic_write_bytes, atomic_write_text

LABELS: tuple[str, ...] = ("neutral", "happy", "sad", "angry")
"""Class names, in class-index order (the usual 4-class order of IEMOCAP-style SER)."""

MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "speaker", "gender")


@dataclass(frozen=True)
class EmotionProfile:
    """Prosody and voice quality of one emotion, relative to the speaker's neutral voice.

    f0_ratio: mean pitch as a multiple of the speaker's base F0.
    f0_range_st: width (semitones) of the uniform spread of per-syllable pitch targets (pitch range/variability).
    declination_st: fall of the pitch baseline over the utterance, semitones.
    syllable_rate: syllables per second of speech (tempo).
    level_db: speech RMS level relative to neutral, dB (intensity).
    open_quotient: fraction of the glottal period the glottis is open (high = lax/breathy, low = tense/pressed).
    closing_fraction: fraction of the open phase spent closing; smaller = more abrupt closure = more
        high-frequency energy.
    tilt_pole: pole of the one-pole low-pass on the glottal source (0 = none); larger = steeper spectral tilt.
    breathiness: aspiration-noise amplitude relative to the voiced source.
    formant_shift: multiplier of all formant frequencies (smiling raises them, Tartter 1980).
    clip_sd: per-clip log-normal spread of f0_ratio and syllable_rate, so classes overlap.
    """

    f0_ratio: float
    f0_range_st: float
    declination_st: float
    syllable_rate: float
    level_db: float
    open_quotient: float
    closing_fraction: float
    tilt_pole: float
    breathiness: float
    formant_shift: float
    clip_sd: float = 0.06


# Directions from Juslin & Laukka (2003, table 7) and Banse & Scherer (1996): anger (hot) = high F0, wide
# range, fast, loud, more high-frequency energy (flat tilt, tense voice); happiness = high F0, the widest and
# most variable pitch, fast-ish, moderately loud; sadness = low F0, narrow range, slow, soft, steep tilt, lax
# breathy voice; neutral in between. Magnitudes are moderate so that speakers overlap across classes.
PROFILES: dict[str, EmotionProfile] = {
    "neutral": EmotionProfile(
        f0_ratio=1.00, f0_range_st=3.0, declination_st=2.0, syllable_rate=4.2, level_db=0.0,
        open_quotient=0.60, closing_fraction=0.35, tilt_pole=0.55, breathiness=0.06, formant_shift=1.00,
    ),
    "happy": EmotionProfile(
        f0_ratio=1.30, f0_range_st=8.0, declination_st=1.0, syllable_rate=4.8, level_db=3.0,
        open_quotient=0.55, closing_fraction=0.30, tilt_pole=0.45, breathiness=0.05, formant_shift=1.05,
    ),
    "sad": EmotionProfile(
        f0_ratio=0.85, f0_range_st=1.5, declination_st=1.5, syllable_rate=3.0, level_db=-6.0,
        open_quotient=0.75, closing_fraction=0.45, tilt_pole=0.85, breathiness=0.12, formant_shift=0.97,
    ),
    "angry": EmotionProfile(
        f0_ratio=1.25, f0_range_st=5.0, declination_st=3.0, syllable_rate=5.4, level_db=7.0,
        open_quotient=0.45, closing_fraction=0.20, tilt_pole=0.15, breathiness=0.03, formant_shift=1.02,
    ),
}


@dataclass(frozen=True)
class SpeakerProfile:
    """One synthetic speaker. f0_hz: base (neutral) pitch; formant_scale: multiplier of the vowel formants
    (≈1 male-like, ≈1.15 female-like); rate_factor, level_db: personal tempo and loudness; jitter, shimmer:
    cycle-to-cycle period and amplitude perturbation (relative standard deviations)."""

    id: str
    gender: str
    f0_hz: float
    formant_scale: float
    rate_factor: float
    level_db: float
    jitter: float
    shimmer: float


# Peterson & Barney (1952) adult-male mean formants F1-F3 (Hz), F4 fixed; bandwidths after Klatt (1980).
_VOWEL_FORMANTS = np.array(
    [
        [270, 2290, 3010, 3500],  # i
        [530, 1840, 2480, 3500],  # ɛ
        [660, 1720, 2410, 3500],  # æ
        [730, 1090, 2440, 3500],  # ɑ
        [570, 840, 2410, 3500],  # ɔ
        [520, 1190, 2390, 3500],  # ʌ
        [300, 870, 2240, 3500],  # u
    ],
    dtype=np.float64,
)
_FORMANT_BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0])
# Consonant noise bands (Hz): s-like, sh-like, f/h-like (broad), burst of a plosive (mid).
_CONSONANT_BANDS = ((4000.0, 7000.0), (2200.0, 4200.0), (1000.0, 6500.0), (600.0, 3000.0))
_BASE_RMS_DBFS = -26.0  # neutral speech level; angry (+7 dB, + speaker/clip spread) stays below clipping
_NOISE_FLOOR_DBFS = -85.0


def scaled_profile(profile: EmotionProfile, separation: float = 1.0, clip_sd: float | None = None,
                   reference: EmotionProfile | None = None) -> EmotionProfile:
    """`profile` moved toward `reference` (default neutral's profile): every prosody and voice-quality field becomes
    `reference + separation * (profile - reference)` (1 = unchanged, 0 = the reference's voice, 0.5 = half the
    distance: classes harder to tell apart), and `clip_sd` (per-clip spread) replaced when given."""
    from dataclasses import fields, replace

    ref = reference or PROFILES["neutral"]
    # separation 1 leaves the values exactly as they are (a + (b - a) need not round to b)
    moved = {} if separation == 1.0 else {
        f.name: getattr(ref, f.name) + separation * (getattr(profile, f.name) - getattr(ref, f.name))
        for f in fields(profile) if f.name != "clip_sd"}
    return replace(profile, **moved, clip_sd=profile.clip_sd if clip_sd is None else clip_sd)


def make_speakers(n_speakers: int, seed: int = 0) -> list[SpeakerProfile]:
    """`n_speakers` speakers alternating female-like / male-like, pitches spread evenly on a log scale
    (female 180-250 Hz, male 95-140 Hz) with a small seeded perturbation, so every speaker differs in F0."""
    if n_speakers < 1:
        raise ConfigError(f"n_speakers={n_speakers}: need at least 1 speaker", "pass n_speakers >= 1")
    n_female = (n_speakers + 1) // 2
    n_male = n_speakers // 2
    speakers = []
    for i in range(n_speakers):
        rng = np.random.default_rng([seed, 1, i])
        female = i % 2 == 0
        rank, count = i // 2, (n_female if female else n_male)
        lo, hi = (180.0, 250.0) if female else (95.0, 140.0)
        f0 = lo * (hi / lo) ** ((rank + 0.5) / count) * float(np.exp(rng.normal(0.0, 0.01)))
        speakers.append(
            SpeakerProfile(
                id=f"spk{i + 1:02d}",
                gender="female" if female else "male",
                f0_hz=round(f0, 2),
                formant_scale=round((1.16 if female else 1.0) * float(rng.uniform(0.95, 1.05)), 4),
                rate_factor=round(float(rng.uniform(0.9, 1.1)), 4),
                level_db=round(float(rng.uniform(-2.0, 2.0)), 3),
                jitter=round(float(rng.uniform(0.004, 0.012)), 5),
                shimmer=round(float(rng.uniform(0.03, 0.07)), 5),
            )
        )
    return speakers


def _resonator_sos(freqs: np.ndarray, bws: np.ndarray, sr: int) -> np.ndarray:
    """Cascade of Klatt second-order resonators (unity gain at DC) as second-order sections, [n_formants, 6]."""
    t = 1.0 / sr
    c = -np.exp(-2.0 * np.pi * bws * t)
    b = 2.0 * np.exp(-np.pi * bws * t) * np.cos(2.0 * np.pi * freqs * t)
    a = 1.0 - b - c
    sos = np.zeros((len(freqs), 6))
    sos[:, 0] = a
    sos[:, 3] = 1.0
    sos[:, 4] = -b
    sos[:, 5] = -c
    return sos


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Hann-window moving average along the last axis (edges padded by repetition)."""
    if width < 3:
        return x
    w = np.hanning(width + 2)[1:-1]
    w /= w.sum()
    pad = width // 2
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, width - 1 - pad)], mode="edge")
    if x.ndim == 1:
        return np.convolve(xp, w, mode="valid")
    return np.stack([np.convolve(row, w, mode="valid") for row in xp])


def synthesize_clip(
    speaker: SpeakerProfile,
    profile: EmotionProfile,
    duration: float,
    rng: np.random.Generator,
    sr: int = 16000,
) -> np.ndarray:
    """One utterance of `duration` seconds: float32 samples, shape (round(duration * sr),), range (-1, 1)."""
    n = int(round(duration * sr))
    lead, trail = rng.uniform(0.08, 0.2, size=2)
    if lead + trail > 0.5 * duration:  # short clips: silence at most half the clip, so speech has a positive span
        shrink = 0.5 * duration / (lead + trail)
        lead, trail = lead * shrink, trail * shrink
    s0, s1 = int(lead * sr), n - int(trail * sr)
    span = (s1 - s0) / sr

    # Syllable grid: the count follows the tempo, the lengths vary around 1/rate and exactly fill the span.
    rate = profile.syllable_rate * speaker.rate_factor * float(np.exp(rng.normal(0.0, profile.clip_sd)))
    n_syl = max(1, int(round(span * rate)))
    weights = np.exp(rng.normal(0.0, 0.2, size=n_syl))
    edges = s0 + np.round(np.concatenate([[0.0], np.cumsum(weights) / weights.sum()]) * (s1 - s0)).astype(int)
    starts, ends = edges[:-1], edges[1:]
    has_cons = rng.random(n_syl) < 0.65
    cons_len = np.where(
        has_cons, np.minimum(0.35 * (ends - starts), rng.uniform(0.04, 0.09, n_syl) * sr), 0
    ).astype(int)
    vowel_start = starts + cons_len
    vowels = rng.integers(0, len(_VOWEL_FORMANTS), size=n_syl)
    cons_type = rng.integers(0, len(_CONSONANT_BANDS), size=n_syl)
    stress = rng.uniform(0.6, 1.0, size=n_syl)

    idx = np.arange(n)
    syl_of = np.clip(np.searchsorted(ends, idx, side="right"), 0, n_syl - 1)
    in_speech = (idx >= s0) & (idx < s1)
    in_vowel = in_speech & (idx >= vowel_start[syl_of])
    in_cons = in_speech & ~in_vowel

    # Rise-fall envelopes: vowel nucleus sin^0.7 (dips between syllables give the syllable rhythm),
    # consonant bursts a short sin^2.
    u_v = np.where(in_vowel, (idx - vowel_start[syl_of]) / np.maximum(ends[syl_of] - vowel_start[syl_of], 1), 0.0)
    vowel_env = np.where(in_vowel, np.sin(np.pi * u_v) ** 0.7 * stress[syl_of], 0.0)
    u_c = np.where(in_cons, (idx - starts[syl_of]) / np.maximum(cons_len[syl_of], 1), 0.0)
    cons_env = np.where(in_cons, np.sin(np.pi * u_c) ** 2, 0.0)

    # Pitch: speaker base × emotion level, per-syllable targets spread over the emotion's range, a
    # declining baseline, a slow random drift; interpolated between syllable centres and smoothed.
    f0_level = speaker.f0_hz * profile.f0_ratio * float(np.exp(rng.normal(0.0, profile.clip_sd)))
    centres = (starts + ends) / 2.0
    targets = profile.f0_range_st * (rng.random(n_syl) - 0.5)
    targets += profile.declination_st * (0.5 - (centres - s0) / max(s1 - s0, 1))
    semis = np.interp(idx, centres, targets)
    drift = _smooth(rng.normal(0.0, 1.0, n // 160 + 2), 9)
    semis += 0.3 * np.interp(idx, np.arange(len(drift)) * 160, drift / (drift.std() + 1e-9))
    semis = _smooth(semis, int(0.06 * sr))
    f0 = f0_level * 2.0 ** (semis / 12.0)

    # Glottal source: Rosenberg flow pulse per period with per-period jitter and shimmer; its derivative
    # (lip radiation folded in) is the excitation. Period index from the unjittered phase, then re-integrated.
    phase0 = np.cumsum(f0 / sr)
    n_periods = int(phase0[-1]) + 2
    jit = 1.0 + speaker.jitter * rng.standard_normal(n_periods)
    phase = np.cumsum(f0 * jit[phase0.astype(int)] / sr)
    shim = 1.0 + speaker.shimmer * rng.standard_normal(int(phase[-1]) + 2)
    p = phase - np.floor(phase)
    tp = profile.open_quotient * (1.0 - profile.closing_fraction)
    tn = profile.open_quotient * profile.closing_fraction
    flow = np.where(
        p < tp,
        0.5 * (1.0 - np.cos(np.pi * p / tp)),
        np.where(p < tp + tn, np.cos(0.5 * np.pi * np.clip((p - tp) / tn, 0.0, 1.0)), 0.0),
    )
    flow *= shim[phase.astype(int)]
    source = np.diff(flow, prepend=0.0) / (f0 / sr)  # per-sample derivative, scaled so level ~ independent of F0
    source += rng.standard_normal(n) * (0.4 + flow) * profile.breathiness * np.std(source)  # aspiration
    if profile.tilt_pole > 0:
        source = signal.lfilter([1.0 - profile.tilt_pole], [1.0, -profile.tilt_pole], source)
    excitation = source * vowel_env

    # Vocal tract: filter the excitation through each used vowel's resonator cascade and cross-fade the
    # outputs with smoothed vowel-membership weights (formant transitions of ~30 ms).
    voiced = np.zeros(n)
    used = np.unique(vowels)
    member = (vowels[syl_of][None, :] == used[:, None]).astype(np.float64)
    member = _smooth(member, int(0.03 * sr))
    scale = speaker.formant_scale * profile.formant_shift
    for k, v in enumerate(used):
        freqs = np.minimum(_VOWEL_FORMANTS[v] * scale, 0.45 * sr)
        voiced += member[k] * signal.sosfilt(_resonator_sos(freqs, _FORMANT_BANDWIDTHS, sr), excitation)

    # Consonants: band-passed noise bursts, one filter per consonant class.
    noise = rng.standard_normal(n)
    consonants = np.zeros(n)
    for k, (lo, hi) in enumerate(_CONSONANT_BANDS):
        mask = in_cons & (cons_type[syl_of] == k)
        if not mask.any():
            continue
        sos = signal.butter(4, [lo, min(hi, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")
        consonants += signal.sosfilt(sos, noise) * mask
    consonants *= cons_env

    v_rms = np.sqrt(np.mean(voiced[in_vowel] ** 2)) if in_vowel.any() else 1.0
    c_rms = np.sqrt(np.mean(consonants[in_cons] ** 2)) if in_cons.any() else 1.0
    speech = voiced / v_rms + 0.3 * consonants / max(c_rms, 1e-12)

    level_db = _BASE_RMS_DBFS + profile.level_db + speaker.level_db + rng.normal(0.0, 2.0)  # recording gain
    speech *= 10.0 ** (level_db / 20.0) / np.sqrt(np.mean(speech[in_speech] ** 2))
    speech += 10.0 ** (_NOISE_FLOOR_DBFS / 20.0) * rng.standard_normal(n)
    peak = np.max(np.abs(speech))
    if peak > 0.98:  # never clip: a rare loud angry clip is scaled down instead
        speech *= 0.98 / peak
    return speech.astype(np.float32)


def _write_audio(path: Path, x: np.ndarray, sr: int, audio_format: str) -> None:
    import soundfile as sf

    buf = io.BytesIO()
    if audio_format == "wav":
        sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    else:
        sf.write(buf, x, sr, format="FLAC", subtype="PCM_16")
    atomic_write_bytes(path, buf.getvalue())


def generate_corpus(
    out_dir: str | Path,
    *,
    n_speakers: int = 8,
    clips_per_class_per_speaker: int = 6,
    seed: int = 0,
    sr: int = 16000,
    min_duration: float = 1.5,
    max_duration: float = 3.0,
    audio_format: str = "wav",
    labels: tuple[str, ...] = LABELS,
    separation: float = 1.0,
    clip_sd: float | None = None,
) -> Corpus:
    """Write the synthetic corpus to `out_dir` and return it.

    Layout: `<out_dir>/<speaker>/<speaker>_<label>_<NN>.<wav|flac>` (16-bit PCM, `sr` Hz, mono),
    `<out_dir>/manifest.csv` (columns path,label,speaker,gender; path relative to `out_dir`) and
    `<out_dir>/synthetic.json` (the generation parameters: seed, speakers, profiles).
    Clip ids are the relative paths without extension; clips are sorted by id, as `load_corpus` does, and
    `load_corpus("manifest", out_dir, ",".join(labels))` reads the same corpus back. Durations are uniform in
    [min_duration, max_duration] s,
    drawn independently of the class. `n_speakers * len(labels) * clips_per_class_per_speaker` clips.

    Difficulty: `separation` scales every class's distance from the neutral voice (1 = the published profiles,
    0.5 = half: the classes overlap more), `clip_sd` replaces the per-clip log-normal spread of pitch and tempo
    (default 0.06; e.g. 0.15 for clips that vary more within a class); see `scaled_profile`. With the defaults the
    files are those of earlier versions, byte for byte.
    """
    if clips_per_class_per_speaker < 1:
        raise ConfigError(
            f"clips_per_class_per_speaker={clips_per_class_per_speaker}: need at least 1", "pass a positive count"
        )
    if not 0.3 <= min_duration <= max_duration <= 30.0:
        raise ConfigError(
            f"durations [{min_duration}, {max_duration}] s: need 0.3 <= min_duration <= max_duration <= 30",
            "pass e.g. min_duration=1.5, max_duration=3.0",
        )
    if not 0.0 <= separation <= 2.0:
        raise ConfigError(f"separation={separation}: need 0 <= separation <= 2 (1 = the published profiles)",
                          "pass e.g. separation=0.5 for a harder corpus")
    if clip_sd is not None and not 0.0 <= clip_sd <= 0.5:
        raise ConfigError(f"clip_sd={clip_sd}: need 0 <= clip_sd <= 0.5", "pass e.g. clip_sd=0.15")
    if sr < 8000:
        raise ConfigError(f"sr={sr}: need at least 8000 Hz for the formant and consonant bands", "use sr=16000")
    if audio_format not in ("wav", "flac"):
        raise ConfigError(f"audio_format={audio_format!r}: unknown", "use 'wav' or 'flac'")
    unknown = [lab for lab in labels if lab not in PROFILES]
    if unknown or not labels:
        raise ConfigError(f"labels {list(labels)}: no profile for {unknown}", f"choose among {list(PROFILES)}")

    out_dir = Path(out_dir).resolve()
    speakers = make_speakers(n_speakers, seed)
    profiles = {lab: scaled_profile(PROFILES[lab], separation, clip_sd) for lab in labels}
    clips: list[Clip] = []
    rows: list[dict[str, str]] = []
    for si, spk in enumerate(speakers):
        for label in labels:
            ci = list(PROFILES).index(label)  # stream key: a clip stays the same whatever `labels` holds
            for k in range(clips_per_class_per_speaker):
                rng = np.random.default_rng([seed, 2, si, ci, k])
                duration = round(float(rng.uniform(min_duration, max_duration)), 3)
                x = synthesize_clip(spk, profiles[label], duration, rng, sr)
                rel = f"{spk.id}/{spk.id}_{label}_{k + 1:02d}.{audio_format}"
                _write_audio(out_dir / rel, x, sr, audio_format)
                clips.append(
                    Clip(
                        id=rel.rsplit(".", 1)[0], path=out_dir / rel, label=label, speaker=spk.id,
                        gender=spk.gender, duration=len(x) / sr,
                    )
                )
                rows.append({"path": rel, "label": label, "speaker": spk.id, "gender": spk.gender})

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "manifest.csv", buf.getvalue())
    params = {
        "generator": "loralens.data.synthetic",
        "seed": seed,
        "sr": sr,
        "durations_s": [min_duration, max_duration],
        "audio_format": audio_format,
        "clips_per_class_per_speaker": clips_per_class_per_speaker,
        "labels": list(labels),
        "speakers": [asdict(s) for s in speakers],
        **({"separation": separation} if separation != 1.0 else {}),
        "profiles": {lab: asdict(profiles[lab]) for lab in labels},
    }
    atomic_write_text(out_dir / "synthetic.json", json.dumps(params, indent=2) + "\n")
    return Corpus(name="synthetic", root=out_dir, labels=tuple(labels), clips=sorted(clips, key=lambda c: c.id))


# ---------------------------------------------------------------------------------------------------------
# Acoustic measurements, used to check that the corpus follows the profiles (tests, docs/synthetic.md).


@dataclass(frozen=True)
class AcousticFeatures:
    """Utterance-level acoustics. rms_dbfs: RMS of active frames, dB re full scale; f0_mean_hz and
    f0_sd_st: mean pitch of voiced frames (autocorrelation) and its robust spread (IQR / 1.349) in semitones;
    syllable_rate: intensity peaks per second of active speech; centroid_hz: spectral centroid of the
    long-term spectrum of active frames; tilt_db_per_oct: least-squares slope of the voiced frames'
    octave-band levels (dB, centres 500-4000 Hz) against octave number; alpha_ratio_db: voiced energy
    1-5 kHz over 50-1000 Hz, dB; voiced_fraction: voiced / active frames; duration_s: clip length."""

    rms_dbfs: float
    f0_mean_hz: float
    f0_sd_st: float
    syllable_rate: float
    centroid_hz: float
    tilt_db_per_oct: float
    alpha_ratio_db: float
    voiced_fraction: float
    duration_s: float

    def as_array(self) -> np.ndarray:
        return np.array(list(asdict(self).values()), dtype=np.float64)


def _frames(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Frames of `length` samples every `hop` samples, [n_frames, length] (zero-padded at the end)."""
    n_frames = max(1, 1 + (len(x) - length + hop - 1) // hop)
    x = np.pad(x, (0, max(0, (n_frames - 1) * hop + length - len(x))))
    return np.lib.stride_tricks.sliding_window_view(x, length)[::hop][:n_frames]


def acoustic_features(
    x: np.ndarray, sr: int = 16000, f0_min: float = 60.0, f0_max: float = 500.0
) -> AcousticFeatures:
    """Measure `x` (mono samples, shape (samples,)) with 40 ms frames every 10 ms.

    Active frames: within 35 dB of the loudest frame. Voiced: active and normalised autocorrelation peak in
    the lag range [sr/f0_max, sr/f0_min] above 0.5; F0 = sr / peak lag (parabolic interpolation).
    """
    x = np.asarray(x, dtype=np.float64)
    hop, length = sr // 100, int(0.04 * sr)
    fr = _frames(x, length, hop)
    energy = np.mean(fr**2, axis=1)
    e_db = 10.0 * np.log10(energy + 1e-20)
    active = e_db > e_db.max() - 35.0
    rms_dbfs = 10.0 * np.log10(np.mean(energy[active]) + 1e-20)

    # Autocorrelation by FFT (Wiener-Khinchin) on Hann-windowed frames, normalised by the window's own
    # autocorrelation so the peak at the true period is not biased towards short lags (Boersma 1993).
    win = np.hanning(length)
    nfft = 1 << int(np.ceil(np.log2(2 * length)))
    frw = (fr - fr.mean(axis=1, keepdims=True)) * win
    ac = np.fft.irfft(np.abs(np.fft.rfft(frw, nfft)) ** 2, nfft)[:, :length]
    ac_w = np.fft.irfft(np.abs(np.fft.rfft(win, nfft)) ** 2, nfft)[:length]
    ac = ac / np.maximum(ac[:, :1], 1e-20) / (ac_w / ac_w[0])
    lo, hi = int(np.floor(sr / f0_max)), min(int(np.ceil(sr / f0_min)), length // 2)
    seg = ac[:, lo : hi + 1]
    # Octave errors: take the shortest-lag local maximum within 10 % of the best one, not the best one,
    # since the peak at twice the period is often as high (Praat's octave cost does the same job).
    is_max = np.zeros_like(seg, dtype=bool)
    is_max[:, 1:-1] = (seg[:, 1:-1] >= seg[:, :-2]) & (seg[:, 1:-1] > seg[:, 2:])
    best = np.max(np.where(is_max, seg, -np.inf), axis=1, keepdims=True)
    k = np.argmax(is_max & (seg >= 0.9 * best), axis=1)
    peak = seg[np.arange(len(seg)), k]
    left = seg[np.arange(len(seg)), np.maximum(k - 1, 0)]
    right = seg[np.arange(len(seg)), np.minimum(k + 1, seg.shape[1] - 1)]
    denom = left - 2 * peak + right
    offset = np.where(np.abs(denom) > 1e-12, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    lag = lo + k + np.clip(offset, -0.5, 0.5)
    voiced = active & (peak > 0.5) & (k > 0) & (k < seg.shape[1] - 1)
    f0 = sr / lag[voiced]
    f0_mean = float(np.mean(f0)) if len(f0) else float("nan")
    # Robust spread (IQR / 1.349 = SD for a normal law): a few octave-error frames must not dominate it.
    q25, q75 = np.percentile(12.0 * np.log2(f0), [25, 75]) if len(f0) > 1 else (np.nan, np.nan)
    f0_sd = float((q75 - q25) / 1.349)

    # Syllable rate: peaks of the smoothed intensity envelope (dB) that stand out by 3 dB, per second of
    # the span from the first to the last active frame.
    env = _smooth(e_db, 5)
    peaks, _ = signal.find_peaks(env, prominence=3.0, distance=int(0.08 * sr / hop))
    peaks = peaks[active[peaks]]
    act_idx = np.flatnonzero(active)
    span_s = (act_idx[-1] - act_idx[0] + 1) * hop / sr
    syllable_rate = len(peaks) / span_s

    power = np.abs(np.fft.rfft(fr * win, nfft)) ** 2
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)
    spec = np.mean(power[active], axis=0)
    centroid = float(np.sum(freqs * spec) / np.sum(spec))
    # Tilt of the voiced long-term spectrum: octave-band levels (centres 500-4000 Hz) against octave number,
    # and the alpha ratio (eGeMAPS: energy 1-5 kHz over 50-1000 Hz). Voiced frames only, so consonant
    # noise and the noise floor do not flatten it.
    vspec = np.mean(power[voiced], axis=0) if voiced.any() else spec
    centres = np.array([500.0, 1000.0, 2000.0, 4000.0])
    centres = centres[centres * np.sqrt(2) <= sr / 2]
    levels = [10 * np.log10(np.mean(vspec[(freqs >= c / np.sqrt(2)) & (freqs < c * np.sqrt(2))]) + 1e-30)
              for c in centres]
    slope = np.polyfit(np.log2(centres), levels, 1)[0]
    hi_band = (freqs >= 1000.0) & (freqs < min(5000.0, sr / 2))
    lo_band = (freqs >= 50.0) & (freqs < 1000.0)
    alpha = 10 * np.log10((np.sum(vspec[hi_band]) + 1e-30) / (np.sum(vspec[lo_band]) + 1e-30))

    return AcousticFeatures(
        rms_dbfs=float(rms_dbfs),
        f0_mean_hz=f0_mean,
        f0_sd_st=f0_sd,
        syllable_rate=float(syllable_rate),
        centroid_hz=centroid,
        tilt_db_per_oct=float(slope),
        alpha_ratio_db=float(alpha),
        voiced_fraction=float(voiced.sum() / max(active.sum(), 1)),
        duration_s=len(x) / sr,
    )
