"""Exactness against the organisers' own route: their numpy 1.24.2 + OpenCV 4.7.0.72 in a venv of their pins.

The oracle is tests/metrics_reference.py (a transcription of their bench.py) run in that venv
(tests/organisers_oracle.py: created once, cached). Checked here: salax.metrics.prepare's rule bit for bit
(XLA path) and csrc/maps.h (the native kernel's preparation and resize, through a small C shim built with
the kernel's flags), and the per-frame scores of both implementations on tie-heavy cases.
"""

from __future__ import annotations

import ctypes
from fractions import Fraction
import functools
from pathlib import Path
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import organisers_oracle
import pytest

from salax.metrics import aim_frame_scores, auc_judd_mit, native, prepare

CSRC = Path(__file__).parents[1] / "salax" / "metrics" / "csrc"
SHIM = Path(__file__).with_name("maps_shim.cc")
SHIM_CODES = {np.dtype(np.uint8): 0, np.dtype(np.uint16): 1, np.dtype(np.float32): 2}


@pytest.fixture(scope="session")
def organisers():
    """organisers_oracle.organisers_route, after making sure its venv exists (a clear failure if not)."""
    try:
        organisers_oracle.ensure_venv()
    except organisers_oracle.OrganisersUnavailable as error:
        pytest.fail(str(error))
    return organisers_oracle.organisers_route


@pytest.fixture(scope="session")
def maps_shim(tmp_path_factory):
    """csrc/maps.h behind a C entry (tests/maps_shim.cc), compiled with the kernel's arithmetic flags."""
    if not native.available():
        pytest.skip("the native kernel is not built here (no C++ compiler at install): nothing to check")
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.fail("the native kernel is built but no C++ compiler (g++, clang++) is on the PATH for the maps shim")
    library = tmp_path_factory.mktemp("shim") / "maps_shim.so"
    flags = ["-std=c++20", "-O2", "-fopenmp-simd", "-ffp-contract=off", "-fPIC", "-shared"]
    if native.built_for_avx2():
        flags += ["-mavx2", "-mfma"]
    subprocess.run([compiler, *flags, f"-I{CSRC}", str(SHIM), "-o", str(library)], check=True)
    shim = ctypes.CDLL(str(library))
    shim.salax_prepared_resized.argtypes = ([ctypes.c_void_p, ctypes.c_int] + [ctypes.c_int64] * 3 + [ctypes.c_int]
                                            + [ctypes.c_int64] * 2 + [ctypes.c_void_p])

    def prepared_resized(raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        raw = np.ascontiguousarray(raw)
        out = np.empty(shape, np.float64)
        channels = raw.shape[2] if raw.ndim == 3 else 1
        status = shim.salax_prepared_resized(raw.ctypes.data, SHIM_CODES[raw.dtype], raw.shape[0], raw.shape[1],
                                             channels, int(raw.ndim == 3), shape[0], shape[1], out.ctypes.data)
        assert status == 0
        return out

    return prepared_resized


@functools.partial(jax.jit, static_argnums=1)
def _prepared_resized(raw: jax.Array, shape: tuple[int, int]) -> jax.Array:
    return prepare.resize_bilinear(prepare.prepare_map(raw), shape)


def xla_prepared_resized(raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    with jax.enable_x64(True):
        return np.asarray(_prepared_resized(raw, tuple(shape)))


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance in units in the last place between two float arrays of one dtype."""
    ints = np.int64 if a.dtype == np.float64 else np.int32
    return int(np.abs(a.view(ints).astype(np.int64) - b.view(ints).astype(np.int64)).max(initial=0))


# ---------------------------------------------------------------------------------------------------
# Tie-heavy cases: (prediction, truth shape, fixations)

def quantised(rng, shape, levels, dtype, channels):
    """Equal-channel frames: [H, W, channels], or [H, W] for channels 0."""
    top = np.iinfo(dtype).max if dtype == np.uint8 else 1023  # AViMoS truth and 10-bit videos: 0..1023
    base = rng.integers(0, levels, shape) * (top // max(levels - 1, 1))
    raw = np.repeat(base[..., None], channels, axis=2) if channels else base
    return raw.astype(dtype)


def fixations_for(rng, shape, count, kind):
    fixations = np.stack([rng.integers(0, shape[0], count), rng.integers(0, shape[1], count)], axis=1)
    if kind == "duplicated":
        fixations[count // 2:] = fixations[0]
    if kind == "diagonal":  # every fixation has row == col: the organisers' unique count U is 1
        fixations[:, 1] = np.minimum(fixations[:, 0], shape[1] - 1)
        fixations[:, 0] = fixations[:, 1]
    return fixations


# (prediction shape, truth shape, levels, fixation kind)
CASES = [
    ((27, 48), (54, 96), 4, "random"),        # 2x upscale of a 4-level map
    ((12, 20), (60, 100), 3, "duplicated"),   # 5x upscale
    ((40, 30), (20, 15), 6, "random"),        # exact 2x downscale (cv2 would use INTER_AREA without IPP)
    ((21, 17), (50, 61), 5, "diagonal"),      # odd upscale, row == col
    ((63, 45), (17, 29), 256, "random"),      # odd downscale
    ((48, 27), (96, 54), 4, "random"),        # vertical
    ((1, 33), (40, 70), 5, "random"),         # 1 x N: OpenCV's own code, not IPP
    ((19, 1), (38, 9), 4, "duplicated"),      # N x 1
    ((30, 40), (60, 80), 1, "random"),        # constant
    ((33, 44), (33, 44), 3, "random"),        # same grid
]


def make_case(seed: int, prediction: tuple, truth: tuple, levels: int, kind: str, dtype, channels: int):
    rng = np.random.default_rng(seed)
    pred = quantised(rng, prediction, levels, dtype, channels)
    gt = quantised(rng, truth, 1024, np.uint16, 3)
    return pred, gt, fixations_for(rng, truth, 12, kind)


LAYOUTS = ((np.uint8, 3), (np.uint16, 3), (np.uint8, 0), (np.uint16, 0), (np.uint8, 1), (np.uint16, 1))
# The default run: every kind of resize in two layouts (the float64 and the float32 rule); -m slow: all.
FAST = [(index, layout) for index in (0, 2, 3, 6, 7, 8) for layout in (LAYOUTS[0], LAYOUTS[3])]
FULL = [(index, layout) for index in range(len(CASES)) for layout in LAYOUTS]


def route(organisers, selection):
    cases = [make_case(index, *CASES[index], dtype=dtype, channels=channels)
             for index, (dtype, channels) in selection]
    return cases, organisers(cases)


@pytest.fixture(scope="module")
def routed(organisers):
    """The FAST selection of CASES through the organisers' route."""
    return route(organisers, FAST)


@pytest.fixture(scope="module")
def routed_full(organisers):
    return route(organisers, FULL)


# ---------------------------------------------------------------------------------------------------
# The arithmetic building blocks


def test_exact_fma_is_correctly_rounded_in_numpy_and_under_jit():
    rng = np.random.default_rng(0)
    a, b, c = rng.random(3000), rng.random(3000) - 0.5, rng.random(3000)
    # halfway and cancellation cases: short operands whose exact results sit on ties or cancel
    short = np.ldexp(rng.integers(1, 2**20, (3, 2000)).astype(np.float64), rng.integers(-40, -10, (3, 2000)))
    a = np.concatenate([a, short[0], np.full(8, 1 + 2**-52)])
    b = np.concatenate([b, short[1], np.full(8, 1 - 2**-52)])
    c = np.concatenate([c, -short[0] * short[1] + short[2] * 2**-30, -np.ones(8) + np.arange(8) * 2**-53])
    expected = np.array([float(Fraction(x) * Fraction(y) + Fraction(z)) for x, y, z in zip(a, b, c)])
    assert np.array_equal(prepare.exact_fma(a, b, c, xp=np), expected)
    with jax.enable_x64(True):
        assert np.array_equal(np.asarray(jax.jit(prepare.exact_fma)(a, b, c)), expected)
    assert not np.array_equal(a * b + c, expected)  # the test can tell a fused result from an unfused one


def test_preparation_divides_exactly_under_jit():
    """XLA rewrites x / 3 as x * (1/3): every 3-channel uint16 channel sum must still divide exactly."""
    sums = np.arange(0, 3 * 65535 + 1)
    raw = np.zeros((sums.size, 1, 3), np.uint16)
    raw[:, 0, 0] = np.minimum(sums, 65535)
    raw[:, 0, 1] = np.clip(sums - 65535, 0, 65535)
    raw[:, 0, 2] = np.clip(sums - 2 * 65535, 0, 65535)
    eps = np.float64(np.finfo(np.float32).eps)
    means = sums / 3.0
    expected = ((means - means.min()) / (means.max() - means.min() + eps))[:, None]
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(prepare.prepare_map)(raw))
    assert got.dtype == np.float64 and np.array_equal(got, expected)


@pytest.mark.parametrize(("dtype", "channels", "expected"), [
    (np.uint8, 0, np.float32), (np.uint16, 0, np.float32), (np.bool_, 0, np.float32), (np.int16, 0, np.float32),
    (np.uint8, 1, np.float64), (np.uint16, 1, np.float64), (np.bool_, 1, np.float64), (np.uint8, 3, np.float64),
    (np.uint16, 3, np.float64), (np.int32, 0, np.float64), (np.float32, 0, np.float64), (np.float16, 3, np.float64),
    (np.float64, 0, np.float64),
])
def test_preparation_dtype_rule(dtype, channels, expected):
    """channels 0 stands for an [H, W] map; a channel axis (even of one channel) means the float64 mean."""
    assert prepare.prepared_dtype(dtype, channel_axis=channels > 0) == expected
    with jax.enable_x64(True):
        values = np.arange(24) % 2 if dtype == np.bool_ else np.arange(24)
        raw = (values.reshape(4, 6) if channels == 0 else values[:4 * channels].reshape(2, 2, channels)).astype(dtype)
        assert prepare.prepare_map(jnp.asarray(raw)).dtype == expected


def test_preparation_keeps_what_float64_maps_hold():
    """A large offset survives: the min-max is taken in float64, not after a cast to float32."""
    raw = 1e12 + np.arange(12, dtype=np.float64).reshape(3, 4)
    with jax.enable_x64(True):
        got = np.asarray(prepare.prepare_map(jnp.asarray(raw)))
    np.testing.assert_allclose(got, np.arange(12).reshape(3, 4) / (11 + 2**-23), rtol=1e-15)


# ---------------------------------------------------------------------------------------------------
# Bits of the prepared, resized prediction against the pinned route


def check_bits(got: np.ndarray, organisers_map: np.ndarray, label: str) -> None:
    """float64 rule: bit for bit. float32 rule (2-D maps): within one ulp (IPP's float32 code)."""
    if organisers_map.dtype == np.float64:
        assert np.array_equal(got.astype(np.float64), organisers_map), f"{label}: {ulps(got, organisers_map)} ulps"
    else:
        got = got.astype(np.float32)
        assert ulps(got, organisers_map) <= 1, f"{label}: {ulps(got, organisers_map)} ulps"


def check_xla_bits(routed_cases) -> None:
    cases, results = routed_cases
    for (pred, _, _), result in zip(cases, results):
        got = xla_prepared_resized(pred, result["resized"].shape)
        assert got.dtype == result["resized"].dtype
        check_bits(got, result["resized"], f"xla {pred.dtype} {pred.shape} -> {result['resized'].shape}")


def check_native_bits(routed_cases, maps_shim) -> None:
    cases, results = routed_cases
    for (pred, _, _), result in zip(cases, results):
        got = maps_shim(pred, result["resized"].shape)
        check_bits(got, result["resized"], f"native {pred.dtype} {pred.shape} -> {result['resized'].shape}")
        assert np.array_equal(got, xla_prepared_resized(pred, result["resized"].shape).astype(np.float64))


def test_xla_preparation_and_resize_are_the_organisers_bits(routed):
    check_xla_bits(routed)


def test_native_preparation_and_resize_are_the_organisers_bits_and_xlas(routed, maps_shim):
    check_native_bits(routed, maps_shim)


@pytest.mark.slow
def test_every_layout_of_every_case_is_the_organisers_bits(routed_full, maps_shim):
    check_xla_bits(routed_full)
    check_native_bits(routed_full, maps_shim)
    check_scores(routed_full)


# ---------------------------------------------------------------------------------------------------
# Scores against the pinned route


def scores_of(implementation: str, pred, gt, fixations) -> dict[str, float]:
    scores = aim_frame_scores(pred[None], gt[None], fixations[None].astype(np.int32), np.array([len(fixations)]),
                              implementation=implementation)
    return {name: float(values[0]) for name, values in scores.items()}


def assert_scores_match(got: dict, expected: dict, label: str) -> None:
    assert abs(got["auc_judd"] - expected["auc_judd"]) <= 1e-7, (label, got["auc_judd"], expected["auc_judd"])
    for name in ("cc", "nss", "sim"):
        assert abs(got[name] - expected[name]) <= 1e-6 * max(abs(expected[name]), 1e-3), (label, name, got, expected)


def check_scores(routed_cases) -> None:
    """The scores of the cases with a channel axis (the float64 rule): each implementation against theirs,
    and against each other."""
    implementations = ("xla", "native") if native.available() else ("xla",)
    cases, results = routed_cases
    for (pred, gt, fixations), result in zip(cases, results):
        if pred.ndim != 3:
            continue
        label = f"{pred.dtype} {pred.shape} -> {gt.shape}"
        scores = {name: scores_of(name, pred, gt, fixations) for name in implementations}
        for name, got in scores.items():
            assert_scores_match(got, result["scores"], f"{name} {label}")
        if len(scores) == 2:
            assert_scores_match(scores["native"], scores["xla"], f"native vs xla {label}")


def test_three_channel_scores_equal_the_organisers_in_both_implementations(routed):
    check_scores(routed)


def native_scores_from_jax_arrays(pred, gt, fixations) -> dict[str, float]:
    """The native kernel through its XLA FFI door (JAX arrays), which passes the layout bits too."""
    scores = aim_frame_scores(jnp.asarray(pred[None]), jnp.asarray(gt[None]), fixations[None].astype(np.int32),
                              np.array([len(fixations)]), implementation="native")
    return {name: float(values[0]) for name, values in scores.items()}


# upscale, exact 2x downscale, 1 x N (OpenCV's own code), same grid; 8-bit and 10-bit predictions
ONE_CHANNEL_AXIS = [(index, dtype) for index in (0, 2, 6, 9) for dtype in (np.uint8, np.uint16)]


@pytest.mark.parametrize(("index", "dtype"), ONE_CHANNEL_AXIS)
def test_a_channel_axis_of_one_scores_as_its_three_channel_png(organisers, maps_shim, index, dtype):
    """[H, W, 1] frames are prepared with the channel-mean rule, as their equal-channel [H, W, 3] PNGs by
    the organisers: the same bits in both implementations, the same scores; [H, W] keeps the float32 rule."""
    pred3, gt3, fixations = make_case(index, *CASES[index], dtype=dtype, channels=3)
    pred1, gt1, pred2, gt2 = pred3[..., :1], gt3[..., :1], pred3[..., 0], gt3[..., 0]
    theirs, theirs_2d = organisers([(pred3, gt3, fixations), (pred2, gt2, fixations)])
    shape = gt3.shape[:2]
    for label, raw in (("[H, W, 1]", pred1), ("[H, W, 3]", pred3)):
        assert np.array_equal(xla_prepared_resized(raw, shape), theirs["resized"]), f"xla {label}"
        assert np.array_equal(maps_shim(raw, shape), theirs["resized"]), f"native {label}"
    with jax.enable_x64(True):
        assert np.array_equal(np.asarray(prepare.prepare_map(jnp.asarray(gt1))), theirs["truth"])
    assert np.array_equal(maps_shim(gt1, shape), theirs["truth"])

    flat = xla_prepared_resized(pred2, shape)  # the float32 rule, as theirs for a 1-channel PNG
    assert flat.dtype == theirs_2d["resized"].dtype == np.float32
    check_bits(flat, theirs_2d["resized"], "xla [H, W]")
    assert np.array_equal(maps_shim(pred2, shape), flat.astype(np.float64))

    implementations = ("xla", "native") if native.available() else ("xla",)
    for implementation in implementations:
        one, three = scores_of(implementation, pred1, gt1, fixations), scores_of(implementation, pred3, gt3, fixations)
        assert one["auc_judd"] == three["auc_judd"], (implementation, one, three)
        assert_scores_match(one, three, f"{implementation} [H, W, 1] vs [H, W, 3]")
        assert_scores_match(one, theirs["scores"], f"{implementation} [H, W, 1]")
    if native.available():
        assert native_scores_from_jax_arrays(pred1, gt1, fixations) == scores_of("native", pred1, gt1, fixations)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_random_full_hd_frames_score_as_the_organisers(organisers, seed):
    """8-bit model-resolution predictions upscaled to 1080p (and a vertical one): both implementations."""
    rng = np.random.default_rng(seed)
    size = [(216, 384), (224, 398), (384, 216), (540, 960)][seed]
    truth = (1080, 1920) if size[0] < size[1] else (1920, 1080)
    pred = quantised(rng, size, int(rng.integers(3, 257)), np.uint8, 3)
    gt = quantised(rng, truth, 1024, np.uint16, 3)
    fixations = fixations_for(rng, truth, 70, "duplicated")
    (result,) = organisers([(pred, gt, fixations)])
    assert np.array_equal(xla_prepared_resized(pred, truth), result["resized"])
    for implementation in ("xla", "native") if native.available() else ("xla",):
        assert_scores_match(scores_of(implementation, pred, gt, fixations), result["scores"], implementation)


# ---------------------------------------------------------------------------------------------------
# auc_judd_mit against the MIT definition. pysaliency 0.2.22 installs from PyPI but does not import with
# this project's numpy 2 and setuptools (np.trapz, pkg_resources are gone), so its Judd ROC
# (pysaliency.roc.general_roc with judd=1) is transcribed here instead.


def pysaliency_judd_roc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """pysaliency's general_roc(positives, negatives, judd=1), transcribed (float64, no jitter)."""
    sorted_positives, sorted_negatives = np.sort(positives)[::-1], np.sort(negatives)[::-1]
    low = min(sorted_positives[-1], sorted_negatives[-1])
    high = max(sorted_positives[0], sorted_negatives[0]) + 1
    thresholds = np.sort(np.hstack((high, positives, low)))[::-1]
    hit_rates, false_positive_rates = np.zeros(len(thresholds) + 1), np.zeros(len(thresholds) + 1)
    for i, theta in enumerate(thresholds):
        hit_rates[i + 1] = np.sum(sorted_positives >= theta) / len(positives)
        false_positive_rates[i + 1] = np.sum(sorted_negatives >= theta) / len(negatives)
    return float(np.sum(np.diff(false_positive_rates) * (hit_rates[1:] + hit_rates[:-1]) / 2))


def mit_auc_judd(saliency: np.ndarray, fixations: np.ndarray, rng: np.random.Generator) -> float:
    """AUC_Judd.m of the MIT saliency benchmark, transcribed: jitter, renormalise, distinct fixated pixels."""
    s = saliency + rng.random(saliency.shape) / 10000000
    s = (s - s.min()) / (s.max() - s.min())
    fixated = np.zeros(s.shape, bool)
    fixated[fixations[:, 0], fixations[:, 1]] = True
    values = np.sort(s[fixated])[::-1]
    n, pixels = len(values), s.size
    tp, fp = np.zeros(n + 2), np.zeros(n + 2)
    tp[-1] = fp[-1] = 1
    for i, threshold in enumerate(values, start=1):
        tp[i] = i / n
        fp[i] = (np.sum(s >= threshold) - i) / (pixels - n)
    return float(np.sum(np.diff(fp) * (tp[1:] + tp[:-1]) / 2))


@jax.jit
def _mit_over_keys(saliency, fixations, keys):
    return jax.vmap(lambda key: auc_judd_mit(saliency, fixations, jnp.asarray(fixations.shape[0]), key))(keys)


def salax_mit(saliency: np.ndarray, fixations: np.ndarray, seeds: range) -> np.ndarray:
    with jax.enable_x64(True):
        keys = jax.vmap(jax.random.key)(jnp.asarray(list(seeds)))
        return np.asarray(_mit_over_keys(jnp.asarray(saliency), jnp.asarray(fixations, jnp.int32), keys))


def test_auc_judd_mit_equals_pysaliencys_judd_roc_on_untied_maps():
    rng = np.random.default_rng(0)
    for shape in ((16, 24), (16, 24)):
        saliency = rng.permutation(shape[0] * shape[1]).reshape(shape) / (shape[0] * shape[1])  # gaps >> 1e-7
        fixations = fixations_for(rng, shape, 20, "duplicated")
        fixated = np.zeros(shape, bool)
        fixated[fixations[:, 0], fixations[:, 1]] = True
        expected = pysaliency_judd_roc(saliency[fixated], saliency[~fixated])
        np.testing.assert_allclose(salax_mit(saliency, fixations, range(3)), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("levels", [2, 4, 256])
def test_auc_judd_mit_matches_the_mit_transcription_in_expectation_on_tied_maps(levels):
    rng = np.random.default_rng(levels)
    saliency = (rng.integers(0, levels, (16, 24)) / (levels - 1)).astype(np.float32)
    fixations = fixations_for(rng, saliency.shape, 20, "duplicated")
    draws = 400
    ours = salax_mit(saliency, fixations, range(draws))
    theirs = np.array([mit_auc_judd(saliency.astype(np.float64), fixations, np.random.default_rng(seed))
                       for seed in range(draws)])
    assert 0.0 <= ours.min() and ours.max() <= 1.0
    tolerance = 5 * np.sqrt((ours.var() + theirs.var()) / draws)
    assert abs(ours.mean() - theirs.mean()) <= tolerance
    # The check has power: the same curve with the ties left in is biased well beyond the tolerance.
    tied = mit_auc_judd(saliency.astype(np.float64) * 1e9, fixations, np.random.default_rng(0))
    assert levels == 256 or abs(tied - theirs.mean()) > tolerance


def test_auc_judd_mit_stays_in_0_1_on_a_constant_map():
    fixations = np.array([[0, 0], [1, 2], [2, 1], [1, 2]])
    saliency = np.full((3, 3), 0.5, np.float32)
    scores = salax_mit(saliency, fixations, range(400))
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    theirs = np.array([mit_auc_judd(saliency.astype(np.float64), fixations, np.random.default_rng(seed))
                       for seed in range(400)])
    assert abs(scores.mean() - theirs.mean()) <= 5 * np.sqrt((scores.var() + theirs.var()) / 400)
