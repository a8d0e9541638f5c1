"""The query adapter as an MLflow pyfunc model, so the registry serves it like the other models:
`mlflow.pyfunc.load_model("models:/flywheel-<corpus>-adapter/<version>").predict(vectors)` takes the BASE model's query
vectors (an (n, d) array or a DataFrame of d columns; the base model is the version's `base_model` tag) and
returns the adapted, L2-normalised (n, d) vectors to search the base model's index with."""
import mlflow.pyfunc
import numpy as np


class QueryAdapterModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from assets.training.adapter import load_adapter

        self.weights = load_adapter(context.artifacts["adapter"])

    def predict(self, context, model_input, params=None):
        from assets.training.adapter import apply_adapter

        return apply_adapter(self.weights, np.asarray(model_input, dtype="float32"))
