"""What every training recipe here shares, written once: the step budget, the callback that records (and
streams to MLflow) what the trainer logs, the trainer arguments for checkpoint-on-validation, the finish
(final validation, save, checkpoint clean-up), and the MLflow run's tags and metric logger.

The bi-encoder (biencoder.py) and the cross-encoder (crossencoder.py) differ in data, loss and evaluator
only; a change to how training is budgeted, checkpointed, cleaned up or tracked is made here, for both.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

OnLog = Callable[[dict, int], None]


@dataclass
class TrainResult:
    model_path: str
    steps: int
    history: list[dict] = field(default_factory=list)   # every logged dict (loss, lr, eval metrics) with its step
    validation_base: dict[str, float] = field(default_factory=dict)
    validation_final: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StepBudget:
    batch: int          # the batch size, never more than the rows
    total: int          # optimizer steps
    eval_every: int     # steps between validation passes (and checkpoints)


def step_budget(n_train: int, batch_size: int, epochs: float, max_steps: int, evals_per_run: int,
                min_steps: int = 1) -> StepBudget:
    """max_steps when > 0; else `epochs` passes over n_train rows, at least min_steps."""
    batch = max(1, min(batch_size, n_train))
    total = max_steps or max(min_steps, int(round(max(1, n_train // batch) * epochs)))
    return StepBudget(batch, total, max(1, total // max(1, evals_per_run)))


def recorder(history: list[dict], on_log: OnLog | None):
    """A transformers callback appending every log dict (with its step) to history, and passing it on."""
    from transformers import TrainerCallback

    class _Recorder(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                history.append({"step": state.global_step, **logs})
                if on_log:
                    on_log(logs, state.global_step)

    return _Recorder()


def checkpoint_args(out_dir: Path, budget: StepBudget, *, validated: bool, metric: str, learning_rate: float,
                    warmup_ratio: float, precision: str, seed: int) -> dict:
    """Trainer arguments shared by both recipes: validate (and checkpoint) every eval_every steps, keep one
    checkpoint, reload the one that validated best, log to no integration (MLflow is driven through on_log)."""
    return dict(
        output_dir=str(out_dir / "checkpoints"),
        max_steps=budget.total,
        per_device_train_batch_size=budget.batch,
        learning_rate=learning_rate,
        warmup_steps=int(warmup_ratio * budget.total),
        eval_strategy="steps" if validated else "no",
        eval_steps=budget.eval_every,
        save_strategy="steps" if validated else "no",
        save_steps=budget.eval_every,
        save_total_limit=1,
        load_best_model_at_end=validated,
        metric_for_best_model=metric,
        logging_steps=max(1, min(10, budget.eval_every)),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=seed,
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def validate(evaluator, model, on_log: OnLog | None, prefix: str, step: int) -> dict:
    """The evaluator's metrics ({} without one), also passed to on_log as f"{prefix}<metric>" at `step`."""
    metrics = evaluator(model) if evaluator is not None else {}
    if on_log and metrics:
        on_log({f"{prefix}{k}": v for k, v in metrics.items()}, step)
    return metrics


def finish(model, evaluator, on_log: OnLog | None, budget: StepBudget, out_dir: Path, history: list[dict],
           validation_base: dict) -> TrainResult:
    """After trainer.train() (and any weight surgery): validate once more, save to out_dir/model, delete the
    scratch checkpoints (so a finished run leaves none behind), and return the result."""
    validation_final = validate(evaluator, model, on_log, "eval_final_", budget.total + 1)
    model_path = out_dir / "model"
    model.save(str(model_path))
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return TrainResult(str(model_path), budget.total, history, validation_base, validation_final)


def mlflow_metric_logger(mlflow_api) -> OnLog:
    """on_log for a recipe: every numeric value to the active MLflow run ("@" is not allowed in a key)."""
    def on_log(logs: dict, step: int) -> None:
        numeric = {k.replace("@", "_at_"): float(v) for k, v in logs.items() if isinstance(v, (int, float))}
        if numeric:
            mlflow_api.log_metrics(numeric, step=step)

    return on_log


def pinned_requirements(*distributions: str) -> list[str]:
    """`name==version` of each installed distribution (a bare name if it is not installed; a local label such as
    torch's `+cpu` dropped, so a GPU host installs its own build): what a logged model needs to load, listed
    rather than inferred. MLflow infers requirements by loading the model again in a fresh
    Python process that imports torch and transformers (10-25 s a model on 2 cores, more where no bytecode is
    cached), on every training run."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for name in distributions:
        try:
            pinned.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            pinned.append(name)
    return pinned


def run_tags(context, chunks, base_model: str, device: str, model_kind: str, **extra: str) -> dict[str, str]:
    """The tags of every training run: corpus, its hash, the code, the base model, the device, the Dagster run."""
    from assets.training.version import code_version

    return {"corpus": chunks.attrs.get("corpus_name", "corpus"), "corpus_hash": chunks.attrs.get("corpus_hash", ""),
            "code_version": code_version(), "base_model": base_model, "device": device,
            "dagster_run_id": context.run_id, "model_kind": model_kind, **extra}


LIVE_DAGSTER_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def end_killed_runs(client, dagster_status: Callable[[str], str | None], models_dir: Path) -> list[str]:
    """End as KILLED every MLflow run still RUNNING whose Dagster run is over (a `kill -9` mid-training leaves
    it RUNNING for ever), and delete what it left under models_dir: its scratch checkpoints, and its whole
    folder when no model was saved. `dagster_status(run_id)` is the Dagster run's status name (None: unknown
    to this instance, so another deployment's run: left alone). Returns the MLflow run ids ended."""
    ended = []
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return ended
    for run in client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'", max_results=1000):
        status = dagster_status(run.data.tags.get("dagster_run_id", ""))
        if status is None or status in LIVE_DAGSTER_STATUSES:
            continue
        client.set_terminated(run.info.run_id, status="KILLED")
        for folder in Path(models_dir).glob(f"*/{run.info.run_id}"):
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
            if not (folder / "model").exists():
                shutil.rmtree(folder, ignore_errors=True)
        ended.append(run.info.run_id)
    return ended


def dagster_run_status(instance) -> Callable[[str], str | None]:
    def status(run_id: str) -> str | None:
        run = instance.get_run_by_id(run_id) if run_id else None
        return run.status.value if run is not None else None

    return status


def end_killed_training_runs(context, mlflow, workspace) -> list[str]:
    """end_killed_runs for a training asset: its Dagster instance says which runs are over."""
    ended = end_killed_runs(mlflow.client(), dagster_run_status(context.instance), workspace.models_dir)
    if ended:
        context.log.warning(f"ended {len(ended)} MLflow run(s) left RUNNING by a killed Dagster run, as KILLED, "
                            f"and removed their checkpoints: {', '.join(ended)}")
    return ended


def untrainable(embedder, what: str, hint: str = "") -> dict | None:
    """The output of a training asset that cannot train `what` with this embedder (a provider's model, whose
    weights are not here), or None when it can: no model, and the reason, which downstream assets pass on."""
    why = embedder.frozen_reason()
    if not why:
        return None
    reason = f"{what} not trained: {why}" + (f"; {hint}" if hint else "")
    return {"enabled": False, "skipped": reason, "model_path": None, "mlflow_run_id": None, "mlflow_run_url": None,
            "registered_model": None, "model_version": None, "base_model": embedder.base_model_path(),
            "retrained": False, "retrain_reason": reason}


def skipped_metadata(value: dict) -> dict:
    """Metadata of an `untrainable` output: the reason (run_stats reads retrained / retrain_reason)."""
    return {"skipped": value["skipped"], "retrained": False, "retrain_reason": value["skipped"],
            "base_model": value["base_model"]}
