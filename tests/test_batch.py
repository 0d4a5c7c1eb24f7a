"""The batch contract: shapes and dtypes of every key, checks that name what is wrong, no imports upward."""

import subprocess
import sys

import numpy as np
import pytest

from salax import batch


def _good(target="last"):
    shapes = batch.train_shapes(2, clip_frames=3, image_size=(4, 5), audio_samples=7, max_fixations=6, target=target)
    return shapes, {key: np.zeros(shape, dtype) for key, (shape, dtype) in shapes.items()}


@pytest.mark.parametrize("target", ["last", "all"])
def test_shapes_of_a_training_batch(target):
    shapes, _ = _good(target)
    frames = (3,) if target == "all" else ()
    assert {k: s for k, (s, _) in shapes.items()} == {
        "video": (2, 3, 4, 5, 3), "audio": (2, 7), "has_audio": (2,), "saliency": (2, *frames, 4, 5),
        "fixations": (2, *frames, 6, 2), "num_fixations": (2, *frames),
    }
    assert tuple(shapes) == batch.TRAIN_KEYS


def test_a_batch_that_breaks_the_contract_is_named_key_by_key():
    shapes, good = _good()
    batch.check_batch(good, shapes)
    bad = dict(good, video=good["video"].astype(np.float64), extra=np.zeros(1))
    del bad["num_fixations"]
    with pytest.raises(ValueError) as error:
        batch.check_batch(bad, shapes)
    message = str(error.value)
    assert "missing 'num_fixations'" in message and "unexpected 'extra'" in message
    assert "'video' is float64 (2, 3, 4, 5, 3)" in message
    with pytest.raises(ValueError, match="target"):
        batch.train_shapes(1, clip_frames=1, image_size=(1, 1), audio_samples=1, max_fixations=1, target="middle")


def test_model_inputs_and_unnormalise():
    _, good = _good()
    assert set(batch.model_inputs(dict(good, name="x"))) == {"video", "audio", "has_audio"}
    video = (np.array([[0.0, 0.5, 1.0]], np.float32) - batch.IMAGENET_MEAN) / batch.IMAGENET_STD
    np.testing.assert_allclose(batch.unnormalise(video), [[0.0, 0.5, 1.0]], atol=1e-6)


def test_the_contract_imports_neither_models_nor_data():
    code = "import sys, salax.batch; print(sorted(m for m in sys.modules if m.startswith('salax.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['salax.batch']"
