"""salax.metrics.native, the CPU kernel (salax/metrics/csrc/), against the float64 oracle and the JAX code.

test_metrics_scores.py already runs both implementations through the oracle on random layouts; these tests
aim at what only the kernel has: its dtype dispatch, threads, and the fast paths of its AUC-Judd
counting (threshold buckets, the eight-lane window) and their fallbacks.
"""

import os
import subprocess
import sys
import textwrap
import tracemalloc

import jax
import jax.numpy as jnp
import metrics_reference as reference
import numpy as np
import pytest

from salax import metrics
from salax.metrics import native as native_metrics


def padded_fixations(rng, count: int, slots: int, height: int, width: int) -> np.ndarray:
    fixations = np.full((slots, 2), -3, np.int32)  # junk padding beyond the count
    fixations[:count] = np.stack([rng.integers(0, height, count), rng.integers(0, width, count)], 1)
    return fixations


def assert_matches_reference(scores, pred, gt, fixations, counts, *, corrected=False, rtol=1e-5):
    for frame, count in enumerate(counts):
        if count == 0:  # NaN by salax's rule; the organisers' script has none
            continue
        # read_sm cannot subtract bool maps; salax reads them as 0/1 integers
        p, g = (m[frame].astype(np.uint8) if m.dtype == np.bool_ else m[frame] for m in (pred, gt))
        expected = reference.frame_scores(p, g, fixations[frame, :count], corrected)
        for name, value in expected.items():
            np.testing.assert_allclose(scores[name][frame], value, rtol=rtol, atol=1e-6,
                                       err_msg=f"{name}, frame {frame}")


def test_the_kernel_is_built_here():
    """CI installs salax from source, so the kernel must have compiled: a silent fallback to the
    JAX code would hide a broken build."""
    assert native_metrics.available()
    assert metrics.resolve_implementation("auto") == "native"


@pytest.mark.parametrize("pred_dtype, gt_dtype", [
    (np.uint8, np.uint8), (np.uint16, np.float32), (np.float32, np.uint16),
    (np.int16, np.float64), (np.bool_, np.int32),  # cast to float32 before the kernel
])
@pytest.mark.parametrize("channels", [None, 3])
def test_every_dtype_and_channel_layout_agrees_with_the_jax_code(pred_dtype, gt_dtype, channels):
    rng = np.random.default_rng(1)
    shape = (3, 9, 14) + ((channels,) if channels else ())
    pred = rng.integers(0, 2 if pred_dtype is np.bool_ else 300, shape).astype(pred_dtype)
    gt = rng.integers(0, 900, (3, 9, 14)).astype(gt_dtype)
    fixations = np.stack([padded_fixations(rng, 6, 8, 9, 14) for _ in range(3)])
    counts = np.array([6, 0, 3])
    native = metrics.aim_frame_scores(pred, gt, fixations, counts, implementation="native")
    xla = metrics.aim_frame_scores(pred, gt, fixations, counts, implementation="xla")
    for name in metrics.METRIC_NAMES:
        np.testing.assert_allclose(native[name], xla[name], rtol=2e-5, atol=1e-6, err_msg=name)
    assert np.isnan(native["nss"][1]) and np.isnan(native["auc_judd"][1])
    assert_matches_reference(native, pred, gt, fixations, counts)


@pytest.mark.parametrize("corrected", [False, True])
@pytest.mark.parametrize("pred_shape", [(64, 48), (1, 1), (17, 200), (200, 17)])
def test_resized_predictions_match_the_reference(pred_shape, corrected):
    rng = np.random.default_rng(2)
    pred = rng.random((2, *pred_shape), dtype=np.float32)
    gt = rng.integers(0, 255, (2, 33, 41)).astype(np.uint8)
    fixations = np.stack([padded_fixations(rng, 20, 20, 33, 41) for _ in range(2)])
    fixations[1, :10] = fixations[1, 0]  # one pixel fixated many times
    scores = metrics.aim_frame_scores(pred, gt, fixations, [20, 20], corrected=corrected,
                                      implementation="native")
    assert_matches_reference(scores, pred, gt, fixations, [20, 20], corrected=corrected)


def test_auc_judd_is_exact_however_the_thresholds_crowd():
    """Thresholds one float apart share every bucket (the slot loop), noise puts many thresholds
    inside eight neighbouring pixels (lane-by-lane counting), plateaus make ties: counts stay exact."""
    rng = np.random.default_rng(3)
    height, width = 40, 70
    noise = rng.random((height, width), dtype=np.float32)
    crowded = np.full((height, width), 0.5, np.float32)
    crowded.flat[rng.permutation(height * width)[:200]] = np.nextafter(
        np.float32(0.5), np.float32(1), dtype=np.float32) * (1 + np.arange(200) * 1e-7)
    crowded[0, 0], crowded[-1, -1] = 0.0, 1.0
    plateaus = np.round(noise * 4) / 4
    maps = np.stack([noise, crowded, plateaus])
    fixations = np.zeros((3, 150, 2), np.int32)
    for frame, saliency in enumerate(maps):
        if frame == 1:  # the crowded values and the extremes: a whole range, and a cluster in it
            pixels = np.concatenate([[0, height * width - 1], np.flatnonzero(saliency > 0.5)[:147]])
        else:
            pixels = rng.integers(0, height * width, 150)
        fixations[frame, :len(pixels)] = np.stack([pixels // width, pixels % width], axis=1)
    counts = np.array([150, 149, 150])
    for corrected in (False, True):
        scores = metrics.aim_frame_scores(maps, maps, fixations, counts, corrected=corrected,
                                          implementation="native")
        for frame in range(3):  # the oracle counts on the map as prepared in float32
            prepared = np.asarray(metrics.prepare_map(jnp.asarray(maps[frame])), np.float64)
            expected = reference.auc_judd(prepared, fixations[frame, :counts[frame]], corrected)
            np.testing.assert_allclose(scores["auc_judd"][frame], expected, rtol=1e-6, atol=1e-7,
                                       err_msg=f"frame {frame}")


@pytest.mark.parametrize("channel_axis", [False, True])  # the float32 rule, and float64 (counted exactly)
@pytest.mark.parametrize("out_shape", [(35, 45), (47, 61)])  # 5x exactly (tie-heavy), and odd
def test_auc_judd_of_upscaled_maps_is_exact_in_every_bucket(channel_axis, out_shape):
    """An upscaled prediction is counted by buckets of its values (thresholds.h BucketCounter): a zero
    background fixated (thresholds at 0 need no compare), plateaus fixated (ties with a threshold), and
    source values a float64 ulp apart (distinct thresholds in one bucket, rounding to one float32)."""
    rng = np.random.default_rng(5)
    source = np.round(rng.random((3, 7, 9)) * 6) / 6  # plateaus of seven levels
    source[:, 4:, :4] = 0  # a dark corner
    source[:, 1:4, 4:7] = 0.5 + np.arange(9).reshape(3, 3) * np.spacing(0.5)  # a cluster of near-ties
    pred = source[..., None] if channel_axis else source.astype(np.float32)
    height, width = out_shape
    with jax.enable_x64(True):  # the prepared, resized map of prepare.py: the kernel's bits (test_metrics_exact)
        resized = [np.asarray(metrics.resize_bilinear(metrics.prepare_map(jnp.asarray(frame)), out_shape))
                   for frame in pred]
    slots = 60
    fixations = np.zeros((3, slots, 2), np.int32)
    for frame, saliency in enumerate(resized):
        near_half = np.flatnonzero(np.abs(saliency - 0.5) < 1e-3)
        assert np.count_nonzero(saliency == 0) >= 10 and len(near_half) >= 20
        # the zeros, the cluster and anywhere: thresholds on ties, and sharing buckets
        pixels = np.concatenate([np.flatnonzero(saliency == 0)[:10], near_half[:20],
                                 rng.integers(0, height * width, slots - 30)])
        fixations[frame] = np.stack([pixels // width, pixels % width], axis=1)
    gt = rng.integers(0, 1023, (3, height, width)).astype(np.uint16)
    scores = metrics.aim_frame_scores(pred, gt, fixations, np.full(3, slots), implementation="native")
    for frame in range(3):  # one pixel counted wrong moves AUC-Judd by 1 / (60 * 1500) here, far above an ulp
        expected = reference.auc_judd(resized[frame].astype(np.float64), fixations[frame])
        np.testing.assert_allclose(scores["auc_judd"][frame], expected, rtol=0, atol=6e-8, err_msg=f"frame {frame}")


def smooth_bytes(rng, frames: int, height: int, width: int, low: int, high: int) -> np.ndarray:
    """uint8 maps in [low, high): smooth waves plus noise, so values repeat (ties) and vary."""
    rows, cols = np.mgrid[:height, :width]
    maps = [np.sin(cols / rng.uniform(3, 30) + rng.uniform(0, 6)) * np.cos(rows / rng.uniform(3, 30))
            + rng.normal(0, 0.1, (height, width)) for _ in range(frames)]
    return np.stack([low + (high - low - 1e-3) * (m - m.min()) / np.ptp(m) for m in maps]).astype(np.uint8)


@pytest.mark.parametrize("corrected", [False, True])
@pytest.mark.parametrize("height, width, pred_values, gt_values", [
    (300, 260, (0, 256), (0, 256)),  # a full 256 x 256 table; rows end in a 4-pixel tail
    (37, 45, (3, 41), (100, 111)),   # narrow ranges above 0
    (60, 9, (3, 41), (100, 111)),    # narrower than one 16-pixel step: the tail alone
])
def test_uint8_pairs_match_the_general_pass_and_the_reference(height, width, pred_values, gt_values,
                                                              corrected):
    """Single-channel uint8 maps on one grid take the byte-pair pass (KLD and AUC-Judd tables read
    by gathers, exact integer CC sums) when the KLD table is no larger than a frame. The same maps
    as uint16 take the general pass: the AUC-Judd counts must agree exactly, the rest to float32
    rounding, and both must match the float64 reference."""
    assert np.prod(np.diff(pred_values)) * np.prod(np.diff(gt_values)) <= height * width
    rng = np.random.default_rng(6)
    frames = 5
    pred = smooth_bytes(rng, frames, height, width, *pred_values)
    gt = smooth_bytes(rng, frames, height, width, *gt_values)
    pred[3] = pred_values[0] + 2  # a constant prediction
    fixations = np.stack([padded_fixations(rng, 40, 40, height, width) for _ in range(frames)])
    fixations[1, :15] = fixations[1, 0]  # one pixel fixated many times
    fixations[4, 0] = np.argwhere(pred[4] == pred[4].min())[0]  # every pixel >= the lowest threshold
    counts = np.array([40, 40, 0, 1, 40], np.int32)

    pairs = metrics.aim_frame_scores(pred, gt, fixations, counts, corrected=corrected,
                                     implementation="native")
    general = metrics.aim_frame_scores(pred.astype(np.uint16), gt.astype(np.uint16), fixations,
                                       counts, corrected=corrected, implementation="native")
    np.testing.assert_array_equal(pairs["auc_judd"], general["auc_judd"])
    for name in metrics.METRIC_NAMES:
        np.testing.assert_allclose(pairs[name], general[name], rtol=1e-5, atol=1e-7, err_msg=name)
    assert np.isnan(pairs["nss"][2]) and np.isnan(pairs["auc_judd"][2])
    assert_matches_reference(pairs, pred, gt, fixations, counts, corrected=corrected, rtol=1e-6)
    one_thread = native_metrics.score_arrays(pred, gt, fixations, counts, corrected=corrected,
                                             threads=1)
    np.testing.assert_array_equal(
        one_thread, np.stack([pairs[name] for name in metrics.METRIC_NAMES], axis=1))


def test_results_do_not_depend_on_the_threads():
    rng = np.random.default_rng(4)
    pred = rng.integers(0, 255, (5, 30, 50)).astype(np.uint8)
    gt = rng.integers(0, 255, (5, 60, 100)).astype(np.uint8)
    fixations = np.stack([padded_fixations(rng, 12, 12, 60, 100) for _ in range(5)])
    counts = np.full(5, 12, np.int32)
    runs = [np.asarray(jax.jit(lambda *a, t=threads: native_metrics.batch_scores(
        *a, corrected=False, threads=t))(pred, gt, fixations, counts)) for threads in (1, 2, 7)]
    for run in runs[1:]:
        np.testing.assert_array_equal(run, runs[0])


def test_the_kernel_runs_inside_a_users_jit():
    rng = np.random.default_rng(5)
    pred, gt = rng.random((2, 2, 12, 16), dtype=np.float32)
    fixations = np.stack([padded_fixations(rng, 4, 4, 12, 16) for _ in range(2)])

    @jax.jit
    def mean_cc(pred, gt):
        table = native_metrics.batch_scores(pred * 2.0, gt, fixations, jnp.array([4, 4]),
                                            corrected=False)
        return jnp.mean(table[:, metrics.METRIC_NAMES.index("cc")])

    expected = metrics.aim_frame_scores(pred, gt, fixations, [4, 4], implementation="xla")["cc"]
    np.testing.assert_allclose(mean_cc(pred, gt), expected.mean(), rtol=1e-5)


def test_an_unknown_implementation_is_refused():
    with pytest.raises(ValueError, match="implementation must be one of"):
        metrics.aim_frame_scores(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), np.zeros((1, 1, 2)), [1],
                                 implementation="cuda")


@pytest.mark.parametrize("fixations, counts, message", [
    (np.zeros((2, 3, 3), np.int32), np.zeros(2, np.int32), "fixations must be"),
    (np.zeros((2, 3, 2), np.int32), np.zeros(3, np.int32), "batch sizes differ"),
])
def test_the_host_door_names_bad_shapes(fixations, counts, message):
    """score_arrays is public: it checks shapes itself instead of reading past a buffer."""
    maps = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(ValueError, match=message):
        native_metrics.score_arrays(maps, maps, fixations, counts, corrected=False)


def test_the_kernel_exports_the_metric_names_as_its_columns():
    from salax.metrics import _aim_scores

    assert tuple(_aim_scores.COLUMNS) == metrics.METRIC_NAMES
    assert native_metrics.column_problem(_aim_scores) is None


def test_a_kernel_with_other_columns_is_refused_at_import_and_xla_scores():
    """A stale build whose columns differ from METRIC_NAMES must not mislabel scores: salax warns
    once, at import, and "auto" falls back to the XLA path ("native" is refused)."""
    code = textwrap.dedent("""
        import sys, types, warnings
        stale = types.ModuleType("salax.metrics._aim_scores")
        stale.COLUMNS = ("auc_judd", "nss", "cc", "sim", "kld")
        sys.modules["salax.metrics._aim_scores"] = stale
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from salax import metrics
        assert metrics.resolve_implementation("auto") == "xla"
        try:
            metrics.resolve_implementation("native")
        except ValueError:
            pass
        else:
            raise AssertionError("native accepted")
        print(*(str(w.message) for w in caught if w.category is RuntimeWarning))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert run.returncode == 0, run.stderr
    assert "the kernel is stale" in run.stdout and "('auc_judd', 'nss', 'cc', 'sim', 'kld')" in run.stdout


def test_resized_colour_predictions_count_ties_in_float64():
    """A 3-channel prediction is prepared and resized in float64 (the organisers' dtype); upscaled
    few-level maps are full of ties there, so the kernel counts AUC-Judd's thresholds on the float64
    rows (four lanes a step), not on their float32 rounding."""
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 4, (6, 5, 7, 3)).astype(np.uint8)
    gt = rng.integers(0, 1023, (6, 23, 31)).astype(np.uint16)
    fixations = np.stack([padded_fixations(rng, 12, 12, 23, 31) for _ in range(6)])
    scores = metrics.aim_frame_scores(pred, gt, fixations, np.full(6, 12), implementation="native")
    for frame in range(6):
        expected = reference.frame_scores(pred[frame], gt[frame], fixations[frame])
        for name, value in expected.items():
            np.testing.assert_allclose(scores[name][frame], value, rtol=1e-6, atol=3e-7, err_msg=name)



def padded_planes(frames: np.ndarray, pad_width: int, pad_height: int = 0) -> np.ndarray:
    """The frames [B, H, W] as a decoder holds them: rows padded to `pad_width` elements, frames apart by
    more than their rows (`pad_height` rows more), returned as the view `plane[:, :H, :W]` (not a copy)."""
    count, height, width = frames.shape
    junk = np.iinfo(frames.dtype).max if frames.dtype.kind == "u" else np.nan  # padding the kernel must not read
    planes = np.full((count, height + pad_height, pad_width), junk, frames.dtype)
    planes[:, :height, :width] = frames
    view = planes[:, :height, :width]
    assert not view.flags.c_contiguous and np.shares_memory(view, planes)
    return view


@pytest.mark.parametrize("truth_channel_axis", [False, True])  # the float32 rule, and float64
@pytest.mark.parametrize("pred_kind", ["upscaled_bytes", "same_grid_bytes", "floats"])
@pytest.mark.parametrize("height, width, pad_width", [(45, 80, 96), (80, 45, 64)])  # landscape, vertical
def test_a_shifted_strided_truth_scores_as_its_contiguous_shifted_copy_bit_for_bit(truth_channel_axis, pred_kind,
                                                                                   height, width, pad_width):
    """truth_shift reads a 10-bit plane as the 16-bit PNG that holds it (v << shift), and a plane with
    padded rows is read in place: every score equals the contiguous shifted copy's exactly, on each of
    the kernel's paths (resized prediction, integer pairs on one grid, with and without KLD's table,
    float prediction), flat truths, a narrow range, a frame without fixations and corrected pairing."""
    rng = np.random.default_rng(11)
    frames, slots = 5, 12
    raw = rng.integers(0, 1024, (frames, height, width)).astype(np.uint16)
    raw[1] = 700  # a flat truth
    raw[2] = np.minimum(raw[2], 3)  # a narrow range, where the shifted epsilon matters most
    raw[3] = smooth_bytes(rng, 1, height, width, 0, 256)[0].astype(np.uint16) * 4 + 3  # levels 4 apart
    if pred_kind == "upscaled_bytes":
        pred = rng.integers(0, 256, (frames, 9, 16)).astype(np.uint8)
    elif pred_kind == "same_grid_bytes":
        pred = smooth_bytes(rng, frames, height, width, 0, 200)
    else:
        pred = rng.random((frames, 20, 30)).astype(np.float32)
    fixations = np.stack([padded_fixations(rng, 9, slots, height, width) for _ in range(frames)])
    counts = np.array([9, 9, 0, 9, 9], np.int32)
    shaped = (lambda maps: maps[..., None]) if truth_channel_axis else (lambda maps: maps)
    plane = padded_planes(raw, pad_width, pad_height=3)
    for shift in (0, 1, 3, 6):
        for names in (metrics.METRIC_NAMES, metrics.RANKING_METRICS):  # KLD or not: the pairs pass or not
            for corrected in (False, True):
                copy = native_metrics.score_arrays(pred, shaped(raw << shift), fixations, counts,
                                                   corrected=corrected, metrics=names)
                for truth in (raw, plane):
                    door = native_metrics.score_arrays(pred, shaped(truth), fixations, counts, corrected=corrected,
                                                       metrics=names, truth_shift=shift)
                    np.testing.assert_array_equal(
                        door, copy, err_msg=f"shift {shift}, {names}, corrected={corrected}, "
                                            f"{'padded' if truth is plane else 'contiguous'}")
                assert np.isnan(copy[2, 0]) and np.isfinite(copy[[0, 1, 3, 4], 1:4]).all()


@pytest.mark.parametrize("pred_kind", ["upscaled_bytes", "same_grid_bytes"])
def test_strided_integer_maps_of_any_size_are_read_in_place_with_the_same_bits(pred_kind):
    """A padded 10-bit plane bigger than one flush of the uint16 extremes pass (2^18 pixels), rows
    that end in a partial vector, a strided 8-bit prediction too: the same scores as contiguous copies,
    and no copy of the truth (nothing near its size is allocated while scoring)."""
    rng = np.random.default_rng(12)
    height, width, pad_width = 540, 517, 544
    raw = rng.integers(0, 1024, (1, height, width)).astype(np.uint16)
    raw[0, 7, 3] = 1023  # the extremes in the rows' scalar tails, somewhere
    raw[0, 400, 516] = 0
    plane = padded_planes(raw, pad_width)[..., None]
    if pred_kind == "upscaled_bytes":
        pred = rng.integers(0, 256, (1, 108, 103)).astype(np.uint8)
    else:
        pred = smooth_bytes(rng, 1, height, width, 0, 256)
    pred_plane = padded_planes(pred, pred.shape[2] + 29, pad_height=1)
    fixations = padded_fixations(rng, 70, 70, height, width)[None]
    counts = np.array([70], np.int32)
    copy = native_metrics.score_arrays(pred, (raw << 6)[..., None], fixations, counts, corrected=False,
                                       metrics=metrics.RANKING_METRICS, threads=1)
    tracemalloc.start()
    door = native_metrics.score_arrays(pred_plane, plane, fixations, counts, corrected=False,
                                       metrics=metrics.RANKING_METRICS, threads=1, truth_shift=6)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(door, copy)
    assert peak < raw.nbytes // 4, f"{peak} bytes allocated while scoring a {raw.nbytes}-byte truth"


def test_maps_the_kernel_cannot_read_in_place_are_copied_or_named():
    """Float maps with padded rows, and rows that are not contiguous, are copied by score_arrays (same
    scores); the host call itself names a map whose rows are not contiguous."""
    from salax.metrics import _aim_scores

    rng = np.random.default_rng(13)
    gt = rng.random((2, 20, 30)).astype(np.float32)
    pred = rng.integers(0, 256, (2, 20, 30)).astype(np.uint8)
    fixations = np.stack([padded_fixations(rng, 5, 5, 20, 30) for _ in range(2)])
    counts = np.array([5, 5], np.int32)
    expected = native_metrics.score_arrays(pred, gt, fixations, counts, corrected=False)
    wide = np.zeros((2, 20, 60), np.float32)
    wide[:, :, ::2] = gt
    for strided_gt in (padded_planes(gt, 41), wide[:, :, ::2]):
        np.testing.assert_array_equal(
            native_metrics.score_arrays(pred, strided_gt, fixations, counts, corrected=False), expected)
    out = np.empty((2, 5), np.float32)
    every_other = np.zeros((2, 20, 60, 1), np.uint8)[:, :, ::2]
    with pytest.raises(ValueError, match="rows .* must be contiguous"):
        _aim_scores.score_arrays(every_other, every_other, fixations, counts, out, False, 31, 3, 1)


def test_a_truth_shift_is_checked_and_an_overflow_names_its_frame():
    bright = np.full((1, 4, 4, 3), 250, np.uint8)  # channel sums above 255, unshifted: scored
    bright[0, 0, 0] = 0
    sums = np.full((1, 4, 4, 3), 60000, np.uint16)  # uint16 channel sums above 65535, unshifted: scored
    sums[0, 0, 0] = 0
    fixations, counts = np.zeros((1, 1, 2), np.int32), np.ones(1, np.int32)
    for truth in (bright, sums):
        scores = native_metrics.score_arrays(truth[..., 0], truth, fixations, counts, corrected=False)
        assert np.isfinite(scores[0, :4]).all()
    maps = np.zeros((3, 4, 4), np.uint16)
    maps[:, 0, 0] = 511
    maps[1, 0, 0] = 1024  # 1024 << 6 = 65536
    fixations, counts = np.zeros((3, 1, 2), np.int32), np.ones(3, np.int32)
    assert np.isfinite(native_metrics.score_arrays(maps[:1], maps[:1], fixations[:1], counts[:1], corrected=False,
                                                   truth_shift=7)).any()  # 511 << 7 = 65408 fits
    with pytest.raises(ValueError, match=r"frame 11: .*shifted, do not fit in 16 bits"):
        native_metrics.score_arrays(maps, maps, fixations, counts, corrected=False, truth_shift=6, first_frame=10)
    with pytest.raises(ValueError, match="one-channel uint16"):
        native_metrics.score_arrays(maps, maps.astype(np.uint8), fixations, counts, corrected=False, truth_shift=2)
    with pytest.raises(ValueError, match="one-channel uint16"):
        native_metrics.score_arrays(maps, sums.repeat(3, 0), fixations, counts, corrected=False, truth_shift=2)
    for shift in (-1, 16):
        with pytest.raises(ValueError, match="0..15"):
            native_metrics.score_arrays(maps, maps, fixations, counts, corrected=False, truth_shift=shift)
    native_metrics.check_truth_shift(jnp.asarray(maps[..., None]), 6)  # the same check, public, for JAX maps too
    with pytest.raises(ValueError, match="one-channel uint16"):
        native_metrics.check_truth_shift(jnp.asarray(maps, jnp.float32), 6)
