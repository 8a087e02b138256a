"""What one request row may ask of the served model, and the error a client gets back for the rows it cannot.

Over HTTP (`mlflow models serve`) a row carries the file's bytes (`image`, base64); a `path` would make the
server read its own disk, so paths are read only inside a folder the operator names in PNEUMONIA_SERVE_PATH_ROOT.
In-process callers (predict, evaluate) read paths as before.
"""
from __future__ import annotations

import base64
import binascii
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST, INTERNAL_ERROR

from pipeline.data.preprocess import ImageError

PATH_ROOT_ENV = "PNEUMONIA_SERVE_PATH_ROOT"
_WHITESPACE = str.maketrans("", "", " \t\r\n\v\f")


def served() -> bool:
    """True inside `mlflow models serve` (its scoring server sets this before the first request)."""
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT

    return bool(_MLFLOW_IS_IN_SERVING_ENVIRONMENT.get())


def path_root() -> Path | None:
    """The folder the operator lets HTTP clients name files in, resolved once (symlinks too); None: no paths."""
    raw = os.environ.get(PATH_ROOT_ENV, "").strip()
    if not raw:
        return None
    root = Path(raw).expanduser().resolve()
    if not root.is_dir():
        raise ImageError(f"{PATH_ROOT_ENV}={raw}: not a folder; set it to the folder of the films clients may name, "
                         "or unset it to accept only 'image' (base64 file bytes)")
    return root


def quiet_parse_errors() -> None:
    """Inside `mlflow models serve`, a body MLflow cannot parse (CSV, Parquet) gets its reason without MLflow's
    stack trace. MLflow hard-codes the trace there, before any model code runs, so its helper is wrapped once,
    from the model's load_context; test_serve_fuzz.py checks the bodies on the real server."""
    if "__pyfunc_model_path__" not in os.environ:  # scoring_server._SERVER_MODEL_PATH: only the server sets it
        return
    from mlflow.pyfunc import scoring_server

    original = getattr(scoring_server, "_handle_serving_error", None)
    if original is None or getattr(original, "quiet", False):
        return

    def quiet(error_message, error_code, include_traceback=True):
        return original(error_message, error_code, include_traceback=False)

    quiet.quiet = True
    scoring_server._handle_serving_error = quiet


def base64_bytes(text: str, name: str) -> bytes:
    """Base64 as `base64` prints it (76-column lines) or in one line; anything else is refused, not guessed."""
    try:
        return base64.b64decode(text.translate(_WHITESPACE), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImageError(f"{name}: column 'image' is not base64-encoded file bytes ({err})") from None


def served_path(path: str, root: Path | None, name: str) -> Path:
    """The file an HTTP row may read: inside `root` once symlinks and `..` are resolved, else refused
    without touching the disk (so a client cannot even learn whether a file exists)."""
    if root is None:
        raise ImageError(f"{name}: column 'path' is not accepted over HTTP; send the file's bytes base64-encoded "
                         f"in 'image' (the server's operator may allow a folder with {PATH_ROOT_ENV})")
    try:
        resolved = (root / path).resolve()
    except (OSError, ValueError, RuntimeError):
        resolved = None
    if resolved is None or not resolved.is_relative_to(root):
        raise ImageError(f"{name}: path is outside the folder this server reads ({PATH_ROOT_ENV}); name a file "
                         "inside it, relative to it, or send the bytes in 'image'")
    return resolved


def with_row_errors(answered: pd.DataFrame, errors: dict[int, str], rows: int, threshold: float) -> pd.DataFrame:
    """The answered rows back in their places among the unreadable ones, which get their reason in `error` and
    empty values. Over HTTP empty is null: JSON has no NaN, and a strict client would reject the whole answer."""
    answered = answered.set_axis([i for i in range(rows) if i not in errors])
    out = answered.reindex(range(rows))
    out["threshold"] = threshold
    out["error"] = [errors.get(i) for i in range(rows)]
    return out.astype(object).where(out.notna(), None) if served() else out


class RequestError(ImageError, MlflowException):
    """No row of a request could be answered: HTTP 400 whose body is one line per bad row (`message`) and the
    same as a list (`rows`), never a stack trace or the request echoed back."""

    def __init__(self, reasons: list[str]):
        self.reasons = list(reasons)
        MlflowException.__init__(self, "\n".join(self.reasons), error_code=BAD_REQUEST, rows=self.reasons)

    @property
    def message(self) -> str:
        return "\n".join(self.reasons)

    @message.setter
    def message(self, value: str) -> None:
        """MLflow's scoring server prefixes the whole input frame to the message; the reasons alone stay."""

    def __str__(self) -> str:
        return self.message


@contextmanager
def served_errors():
    """Over HTTP, a failure no row caused is a 500 with one line; the traceback goes to the server's log, not to
    the client (MLflow would put it in the body). In-process callers get the exception itself."""
    try:
        yield
    except MlflowException:
        raise
    except Exception as err:
        if not served():
            raise
        logging.getLogger(__name__).exception("prediction failed")
        raise MlflowException(f"the server could not answer this request ({err.__class__.__name__}); the server's "
                              "log has the details", error_code=INTERNAL_ERROR) from None
