"""`python -m pipeline`: run the CLI with temporary files kept under the project's .cache/."""
import os
import sys

from . import PROJECT_CACHE

# Set before anything asks tempfile for its folder (it remembers the first answer): MLflow, Keras
# Tuner and TensorFlow temporaries then stay in the project, and `make clean` removes leftovers.
try:
    if "TMPDIR" not in os.environ:
        os.makedirs(os.path.join(PROJECT_CACHE, "tmp"), exist_ok=True)
        os.environ["TMPDIR"] = os.path.join(PROJECT_CACHE, "tmp")

    from .cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C outside a command's own handling (start-up, imports): one line, no traceback
    print("interrupted: stopped before anything was saved; run the same command again", file=sys.stderr)
    code = 130
sys.exit(code)
