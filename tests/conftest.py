"""Shared pytest setup: keep JAX on the CPU and quiet, whatever the machine has."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
