"""Promotion: a newly trained bi-encoder replaces the serving model only when the statistics say it is better.

`promotion_gate` scores the candidate (the version `finetuned_biencoder` just registered) and the current
champion (the registry's alias `champion`; the base model until a version has been promoted) query by
query on the gate set, and applies the rule in assets/promotion/gate.py: promote only if the paired
bootstrap 95% CI of the nDCG@10 gain is above zero and the guard set does not fall beyond a stated
tolerance. The decision and its reason go into the asset's metadata and onto the model version as tags
(`flywheel.gate`, `flywheel.gate_reason`, ...); a promotion moves the alias.

`champion_is_vetted` (blocking) then checks what will serve: the alias must point at a version the gate
promoted. A version aliased by hand past the gate fails it, and `serving_index` is not rebuilt with it.

`serving_index` is the table to query in production: every chunk embedded with the champion read from the
registry, never simply the latest model. On a night when the candidate loses, it keeps the old champion
and still takes in the new documents.
"""
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.common import markdown_table
from assets.evaluation.scoring import build_query_sets, dense_per_query
from assets.indices import BASELINE_TABLE, FINETUNED_TABLE, build_index, embed_incrementally
from assets.evaluation.breakdown import feedback_status
from assets.triplets import feedback_documents
from assets.promotion.gate import GateSettings, compare, decide
from resources.compute import compute_tags
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.tracking import MLflowResource
from resources.workspace import WorkspaceResource

SERVING_TABLE = "chunks_serving"
GATE_TAG, REASON_TAG, PATH_TAG = "flywheel.gate", "flywheel.gate_reason", "flywheel.model_path"


class PromotionConfig(dg.Config):
    alias: str = "champion"
    min_gain: float = 0.0            # the gain's 95% CI lower bound must be above this (nDCG@10)
    alpha: float = 0.05              # and the paired randomization test's p-value below this
    guard_tolerance: float = 0.01    # the guard set may fall by at most this much mean nDCG@10
    resamples: int = 10_000          # bootstrap resamples / randomization permutations (~0.1 s for 300 queries)
    seed: int = 0


def gate_sets(query_splits: pd.DataFrame, human_queries: list, chunks: pd.DataFrame) -> tuple[list, list]:
    """(gate sets, guard sets): the human sets and the synthetic test split as guard, or the split alone."""
    sets = build_query_sets(query_splits, human_queries, chunks)
    human = [s for s in sets.values() if s.kind == "human"]
    synthetic = [s for s in sets.values() if s.kind == "synthetic" and s.qids]
    return (human, synthetic) if human else (synthetic, [])


def score_sets(query_sets: list, encode, chunk_ids: list[str], chunk_vectors) -> pd.DataFrame:
    frames = [dense_per_query(qs, encode, chunk_ids, chunk_vectors).assign(query_set=qs.name) for qs in query_sets]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["query_set", "qid"])


def seen_unseen(cand: pd.DataFrame, champ: pd.DataFrame, gate_sets_: list, query_splits: pd.DataFrame,
                seen_docs: set[str], settings: GateSettings) -> dict:
    """The gate's comparison on the gate queries whose relevant documents the training feedback cited (seen)
    and on the rest (unseen); a group with no query is {"n": 0}."""
    status = {(qs.name, q): s for qs in gate_sets_ for q, s in feedback_status(qs, query_splits, seen_docs).items()}
    keys = list(zip(cand["query_set"], cand["qid"]))
    out = {}
    for group in ("seen", "unseen"):
        mask = [status.get(k) == group for k in keys]
        c = cand[mask]
        ch = champ[champ.set_index(["query_set", "qid"]).index.isin(list(zip(c["query_set"], c["qid"])))]
        out[group] = compare(c, ch, settings) if len(c) else {"n": 0}
    return out


def seen_unseen_words(by_feedback: dict) -> str:
    if not by_feedback.get("seen", {}).get("n"):
        return ""
    parts = []
    for group in ("seen", "unseen"):
        g = by_feedback[group]
        if not g.get("n"):
            parts.append(f"{group} documents: no queries")
            continue
        lo, hi = g["ci95"]
        parts.append(f"{group} documents ({g['n']} queries): {g['delta_ndcg@10']:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    return "; feedback split: " + ", ".join(parts)


def champion_model_path(version, mlflow: MLflowResource, workspace: WorkspaceResource) -> str:
    """A local folder of the champion's weights: its recorded path, else its artifacts downloaded once."""
    recorded = version.tags.get(PATH_TAG, "")
    if recorded and Path(recorded).exists():
        return recorded
    dst = workspace.models_dir / "champion" / f"{version.name}-v{version.version}"
    if not dst.exists():
        mlflow.download_version(version.name, version.version, str(dst))
    found = sorted(p.parent for p in dst.rglob("modules.json"))
    if not found:
        raise FileNotFoundError(f"version {version.version} of {version.name} has no sentence-transformers model "
                                f"in its artifacts ({dst}); re-register it or move the '{PATH_TAG}' tag")
    return str(found[0])


def champion_summary(version, model_path: str | None, base_model: str) -> dict:
    if version is None:
        return {"version": None, "model_path": None, "base_model": base_model, "mlflow_run_id": None,
                "what": f"the base model {base_model} (no version promoted yet)"}
    return {"version": str(version.version), "model_path": model_path, "base_model": base_model,
            "mlflow_run_id": version.run_id, "what": f"version {version.version}"}


@dg.asset(group_name="promotion", compute_kind="mlflow", pool="gpu", op_tags=compute_tags("gpu"))
def promotion_gate(context: dg.AssetExecutionContext, chunks: pd.DataFrame, query_splits: pd.DataFrame,
                   training_triplets: pd.DataFrame,
                   human_queries: list, finetuned_biencoder: dict, baseline_index: dict, finetuned_index: dict,
                   embedder: EmbedderResource, lancedb: LanceDBResource, mlflow: MLflowResource,
                   workspace: WorkspaceResource, config: PromotionConfig) -> dg.Output[dict]:
    """The gate's decision on the new bi-encoder against the champion, applied to the MLflow registry alias."""
    name, candidate = finetuned_biencoder.get("registered_model"), finetuned_biencoder.get("model_version")
    base = embedder.base_model_path()
    champion = mlflow.alias_version(name, config.alias) if name else None
    value = {"registered_model": name, "alias": config.alias, "candidate_version": candidate and str(candidate),
             "candidate_model_path": finetuned_biencoder.get("model_path"), "gate": None, "guard": None}
    if finetuned_biencoder.get("enabled") is False:   # a provider's embeddings: no candidate, the base model serves
        value.update(decision="no_candidate", promote=False,
                     reason=f"not decided: {finetuned_biencoder['skipped']}; the base model serves")
    elif not name or not candidate:
        value.update(decision="not_registered", promote=False,
                     reason="not decided: the candidate is not a registered version (register_model is off)")
    elif champion is not None and str(champion.version) == str(candidate):
        value.update(decision="unchanged", promote=False, reason=f"unchanged: version {candidate} is the champion")
    elif GATE_TAG in (tags := mlflow.version_tags(name, candidate)):
        value.update(decision="already_decided", promote=False,
                     reason=f"already decided for version {candidate}: {tags.get(REASON_TAG, tags[GATE_TAG])}")
    else:
        gate, guard = gate_sets(query_splits, human_queries, chunks)
        tables = {base: baseline_index["table"], finetuned_biencoder["model_path"]: finetuned_index["table"]}

        def scores(model_path: str | None) -> pd.DataFrame:
            key = model_path or base
            if key in tables:
                ids, vectors = lancedb.open(tables[key]).vectors()
            else:   # an older champion: the serving table holds its vectors; embed only what it lacks
                ids = list(chunks["chunk_id"])
                vectors, _ = embed_incrementally(chunks, lancedb.stored_vectors(SERVING_TABLE, embedder.vector_key(key)),
                                                 lambda texts: embedder.encode(texts, model_path))
            encode = lambda texts: embedder.encode(texts, model_path)  # noqa: E731
            return score_sets(gate, encode, ids, vectors), score_sets(guard, encode, ids, vectors)

        champ_path = champion_model_path(champion, mlflow, workspace) if champion is not None else None
        cand_gate, cand_guard = scores(finetuned_biencoder["model_path"])
        champ_gate, champ_guard = scores(champ_path)
        settings = GateSettings(min_gain=config.min_gain, alpha=config.alpha, guard_tolerance=config.guard_tolerance,
                                resamples=config.resamples, seed=config.seed)
        result = decide(cand_gate, champ_gate, cand_guard if guard else None, champ_guard if guard else None, settings)
        who = champion_summary(champion, champ_path, base)["what"]
        by_feedback = seen_unseen(cand_gate, champ_gate, gate, query_splits, feedback_documents(training_triplets, chunks),
                                  settings)
        value.update(decision="promoted" if result.promote else "rejected", promote=result.promote,
                     reason=f"{result.reason} (against the champion, {who}){seen_unseen_words(by_feedback)}",
                     gate=result.gate, guard=result.guard, by_feedback=by_feedback,
                     previous_champion=champion_summary(champion, champ_path, base))
        lo, hi = result.gate["ci95"]
        mlflow.tag_version(name, candidate, {GATE_TAG: value["decision"], REASON_TAG: value["reason"][:4000],
                                             PATH_TAG: finetuned_biencoder["model_path"],
                                             "flywheel.gate_delta_ndcg_at_10": result.gate["delta_ndcg@10"],
                                             "flywheel.gate_ci95": f"[{lo:.4f}, {hi:.4f}]",
                                             "flywheel.gate_p_value": result.gate["p_value"]})
        if result.promote:
            mlflow.set_alias(name, candidate, config.alias)
    now = mlflow.alias_version(name, config.alias) if name else None
    value["champion"] = champion_summary(now, champion_model_path(now, mlflow, workspace) if now else None, base)
    context.log.info(f"promotion_gate: {value['reason']}")
    rows = [{"set": role, **{k: v for k, v in stats.items() if k != "sets"}, "query_sets": ", ".join(stats["sets"])}
            for role, stats in (("gate", value["gate"]), ("guard", value["guard"])) if stats]
    numbers = {f"{role}_{k}": dg.MetadataValue.float(float(value[role][k]))
               for role in ("gate", "guard") if value[role] for k in ("delta_ndcg@10", "p_value")}
    numbers.update({f"gate_{g}_{k}": dg.MetadataValue.float(float(v[k])) for g, v in value.get("by_feedback", {}).items()
                    if v.get("n") for k in ("delta_ndcg@10", "p_value")})
    numbers.update({f"gate_{g}_n": int(v.get("n", 0)) for g, v in value.get("by_feedback", {}).items()})
    return dg.Output(value, metadata={
        "decision": value["decision"],
        "reason": dg.MetadataValue.md(value["reason"]),
        "candidate_version": str(candidate),
        "champion_version": str(value["champion"]["version"]),
        "champion": value["champion"]["what"],
        "comparison": dg.MetadataValue.md(markdown_table(pd.DataFrame(rows), max_chars=200)),
        **numbers,
        "mlflow_run": dg.MetadataValue.url(finetuned_biencoder.get("mlflow_run_url") or ""),
    })


def champion_vetting(champion: dict, tags: dict[str, str]) -> tuple[bool, str]:
    """Whether the serving champion passed the gate: the base model always has; a version needs the gate's tag."""
    if champion.get("version") is None:
        return True, f"no version promoted: {champion.get('what')} serves"
    if tags.get(GATE_TAG) == "promoted":
        return True, f"version {champion['version']} passed the gate: {tags.get(REASON_TAG, '')}"
    return False, (f"version {champion['version']} carries the alias but the gate did not promote it "
                   f"({GATE_TAG}={tags.get(GATE_TAG, 'missing')}); it was aliased by hand or by another tool. "
                   "Move the alias back, or let the gate decide on it")


@dg.asset_check(asset=promotion_gate, blocking=True, description="The champion that will serve passed the gate.")
def champion_is_vetted(promotion_gate: dict, mlflow: MLflowResource) -> dg.AssetCheckResult:
    champion = promotion_gate["champion"]
    tags = mlflow.version_tags(promotion_gate["registered_model"], champion["version"]) if champion["version"] else {}
    passed, why = champion_vetting(champion, tags)
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR, description=why,
                               metadata={"champion": champion["what"], "decision": promotion_gate["decision"]})


@dg.asset(group_name="promotion", compute_kind="lancedb", pool="gpu", op_tags=compute_tags("gpu"))
def serving_index(context: dg.AssetExecutionContext, chunks: pd.DataFrame, promotion_gate: dict,
                  embedder: EmbedderResource, lancedb: LanceDBResource) -> dg.Output[dict]:
    """LanceDB table to query in production: every chunk embedded with the champion model, with a BM25 index."""
    champion = promotion_gate["champion"]
    out = build_index(context, chunks, embedder, lancedb, SERVING_TABLE, champion["model_path"],
                      reuse_from=(BASELINE_TABLE, FINETUNED_TABLE))   # the champion is often one of those models
    return dg.Output({**out.value, "champion": champion}, metadata={**out.metadata, "champion": champion["what"],
                                                                   "champion_version": str(champion["version"])})
