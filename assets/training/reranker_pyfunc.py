"""The fine-tuned reranker as an MLflow pyfunc model, so the registry can serve it like any other model:
`mlflow.pyfunc.load_model("models:/flywheel-<corpus>-crossencoder/<version>").predict(df)` with `query` and `passage`
columns returns one relevance score (a logit, higher = more relevant) per row."""
import mlflow.pyfunc


class CrossEncoderModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from sentence_transformers.cross_encoder import CrossEncoder

        self.model = CrossEncoder(context.artifacts["cross_encoder"], device="cpu")

    def predict(self, context, model_input, params=None):
        pairs = list(zip(model_input["query"].astype(str), model_input["passage"].astype(str)))
        return self.model.predict(pairs, convert_to_numpy=True).tolist() if pairs else []
