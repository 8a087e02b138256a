"""`python -m pipeline` and the `pneumonia` console script: the CLI with temporary files kept under .cache/."""
import os
import sys

from pipeline import PROJECT_CACHE


def run(entry=None) -> int:
    """The CLI's `main` (or another entry point's, e.g. the demo's) with the project's temp folder and Ctrl-C line."""
    # Set before anything asks tempfile for its folder (it remembers the first answer): MLflow, Keras
    # Tuner and TensorFlow temporaries then stay in the project, and `make clean` removes leftovers.
    try:
        if "TMPDIR" not in os.environ:
            os.makedirs(os.path.join(PROJECT_CACHE, "tmp"), exist_ok=True)
            os.environ["TMPDIR"] = os.path.join(PROJECT_CACHE, "tmp")

        if entry is None:
            from pipeline.cli import main as entry

        return entry()
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling (start-up, imports): one line, no traceback
        print("interrupted: stopped before anything was saved; run the same command again", file=sys.stderr)
        # Not `return 130`: when the Ctrl-C landed inside code an extension ran with PyRun_* during an import,
        # CPython has marked it "unhandled" and would end the process by SIGINT at exit (status -2, not 130),
        # even though it was handled here. Nothing is open yet, so leaving at once loses nothing.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)


if __name__ == "__main__":
    sys.exit(run())
