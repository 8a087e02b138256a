"""The registered model and what reads it: the pyfunc (`pyfunc`) and batch prediction (`predict`).

Versions registered before the package was cut into stages pickled their model class as
`pipeline.serving.PneumoniaModel`; the name resolves here, lazily (MLflow is imported only when
asked), so those versions keep loading.
"""


def __getattr__(name: str):
    if name == "PneumoniaModel":
        from pipeline.serving.pyfunc import PneumoniaModel

        return PneumoniaModel
    raise AttributeError(f"module 'pipeline.serving' has no attribute {name!r}")
