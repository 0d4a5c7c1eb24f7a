"""The benchmarks' absl command line: `--config` (and `--config.FIELD=VALUE`) exactly as `salax.main` reads it.

A benchmark measures the model a run would train, so it takes the run's config file instead of
retyping one; its own options (device counts, steps, ...) are absl flags beside it. (salax.bench.model
reads `--config` with argparse instead: it runs on a GPU image with only the model's packages.)
"""

from collections.abc import Callable
import pathlib
import sys

from absl import flags
from ml_collections import config_flags

DEFAULT_CONFIG = f"{pathlib.Path(__file__).resolve().parents[2] / 'configs' / 'umt.py'}:demo"


def parse(prog: str, description: str, argv: list[str] | None,
          define: Callable[[flags.FlagValues], None]) -> flags.FlagValues:
    """Parse `argv` (default: the command line) into fresh flag values: `--config` plus what `define` adds.

    `--help` prints the description and every flag; a bad flag or config field prints one line and exits 2.
    """
    args = [prog, *(sys.argv[1:] if argv is None else argv)]
    values = flags.FlagValues()
    try:  # the config file is loaded, and its overrides checked, as the flags are defined and parsed
        config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config file with a variant after ':', as for "
                                        "salax.main (default: the demo); override fields with --config.FIELD=VALUE.",
                                        flag_values=values, lock_config=True, sys_argv=args)
        define(values)
        if "--help" in args or "-h" in args:
            print(f"usage: {prog} [--config=FILE:VARIANT] [--config.FIELD=VALUE ...] [flags]\n\n{description}\n")
            print(values.get_help(include_special_flags=False))
            raise SystemExit(0)
        values(args)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
        message = " ".join(str(error).replace("\\n", " ").replace("\\'", "'").split()).strip("'\"")
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    return values
