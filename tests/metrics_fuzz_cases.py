"""Random, often absurd, scoring inputs for tests/test_metrics_fuzz.py, run in a child process.

`python tests/metrics_fuzz_cases.py FIRST COUNT` scores cases FIRST .. FIRST + COUNT - 1 with both
implementations and prints one JSON line per case: what each raised (ValueError message) or returned.
It prints the case number before it runs it, so that a crash (a segfault ends the process) names its
case. Each case is made from its number alone (seeded), so any of them can be replayed.
"""

from __future__ import annotations

import json
import sys

import numpy as np

SPECIAL = {
    "nan": np.nan, "inf": np.inf, "-inf": -np.inf, "subnormal": 1e-40, "-subnormal": -3e-42,
    "huge": 3e38, "-huge": -3e38, "-0": -0.0, "beyond float32": 1e300,
}
DTYPES = ["uint8", "uint16", "int16", "int32", "int64", "bool", "float16", "float32", "float64",
          "complex64", "str", "object", "datetime64[s]"]
SIDES = (1, 2, 3, 5, 8)  # few sizes, so the XLA path compiles a few shapes only


def random_map(rng: np.random.Generator, batch: int, height: int, width: int) -> np.ndarray:
    """A batch of maps of a random dtype, layout and value mix (specials injected into floats)."""
    channels = rng.choice([0, 1, 3])
    shape = (batch, height, width) + ((int(channels),) if channels else ())
    if rng.random() < 0.04:  # an empty map
        shape = shape[:2] + (0,) + shape[3:]
    dtype = rng.choice(DTYPES, p=[0.2, 0.12, 0.05, 0.05, 0.03, 0.03, 0.04, 0.25, 0.13, 0.025, 0.025,
                                  0.025, 0.025])
    levels = int(rng.choice([1, 2, 4, 256, 1024]))
    values = rng.integers(0, levels, shape).astype(np.float64)
    if rng.random() < 0.5:
        values = values + rng.random(shape) * rng.choice([1e-30, 1e-3, 1.0, 1e30])
    if dtype.startswith("float") and values.size and rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 4))):
            name = rng.choice(list(SPECIAL))
            index = tuple(int(rng.integers(0, side)) for side in shape)
            values[index] = SPECIAL[name]
            if rng.random() < 0.5:  # a whole tail of tiny or huge values
                values[index[0]].flat[:: int(rng.integers(2, 5))] = SPECIAL[name]
    if dtype == "str":
        return values.astype(int).astype(str)
    if dtype == "object":
        return values.astype(object)
    if dtype.startswith("datetime"):
        return values.astype(np.int64).astype(dtype)
    with np.errstate(all="ignore"):
        return values.astype(dtype)


def make_case(number: int) -> dict:
    rng = np.random.default_rng([2024, number])
    batch = int(rng.integers(1, 3))
    height, width = (int(rng.choice(SIDES)) for _ in range(2))
    gt = random_map(rng, batch, height, width)
    pred = random_map(rng, batch, int(rng.choice(SIDES)), int(rng.choice(SIDES)))
    slots = int(rng.choice([0, 1, 3, 6]))
    fixations = np.stack([rng.integers(0, height, (batch, slots)), rng.integers(0, width, (batch, slots))], -1)
    if slots and rng.random() < 0.1:  # a fixation off the grid
        fixations[0, 0] = (height, 0)
    if slots and rng.random() < 0.2:  # duplicates
        fixations[:, :] = fixations[:, :1]
    counts = rng.integers(0, slots + 1, batch)
    return {"pred": pred, "gt": gt, "fixations": fixations.astype(np.int32), "counts": counts,
            "corrected": bool(rng.random() < 0.3), "chunk_size": int(rng.choice([1, 2, 16]))}


def outcome(case: dict, implementation: str) -> dict:
    from salax import metrics

    try:
        scores = metrics.aim_frame_scores(case["pred"], case["gt"], case["fixations"], case["counts"],
                                          corrected=case["corrected"], chunk_size=case["chunk_size"],
                                          implementation=implementation)
    except ValueError as error:
        return {"error": str(error)}
    return {"scores": {name: [None if np.isnan(v) else float(v) for v in values]
                       for name, values in scores.items()}}


def main(first: int, count: int) -> None:
    for number in range(first, first + count):
        print(json.dumps({"starting": number}), flush=True)
        case = make_case(number)
        result = {"case": number, "pred": f"{case['pred'].dtype} {case['pred'].shape}",
                  "gt": f"{case['gt'].dtype} {case['gt'].shape}"}
        result.update({implementation: outcome(case, implementation) for implementation in ("native", "xla")})
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
