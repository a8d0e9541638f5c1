"""Promotion: a newly trained bi-encoder replaces the serving model only when the statistics say it is better.

`promotion_gate` scores the candidate (the version `finetuned_biencoder` just registered) and the current
champion (the registry's alias `champion`; the base model until a version has been promoted) query by
query on the gate set, and applies the rule in assets/promotion/gate.py: promote only if the paired
bootstrap 95% CI of the nDCG@10 gain is above zero and the guard set does not fall beyond a stated
tolerance. The decision and its reason go into the asset's metadata and onto the model version as tags
(`flywheel.gate`, `flywheel.gate_reason`, ...); a promotion moves the alias.

The query adapter (`query_adapter`: a map on query vectors over the base model's frozen chunk vectors) is a
candidate too, by the same rule, while no fine-tuned bi-encoder version serves: "the base model + adapter
version N" against what serves (the base model, or the base model + the adapter champion). An adapter applies
only over the base model's vectors, so while a fine-tuned bi-encoder is champion the adapter is not decided
(said in its reason), and a bi-encoder promoted over "base + adapter" takes the alias off the adapter. The
bi-encoder is decided first; the adapter then meets whatever serves after that decision.

`champion_is_vetted` (blocking) then checks what will serve: the alias must point at a version the gate
promoted (the adapter's alias too, when one serves). A version aliased by hand past the gate fails it, and
`serving_index` is not rebuilt with it.

`serving_index` is the table to query in production: every chunk embedded with the champion read from the
registry, never simply the latest model. On a night when the candidate loses, it keeps the old champion
and still takes in the new documents. When an adapter serves, the table holds the base model's vectors and
`serving_query_vectors` turns a query into the vector to search it with (base model, then the adapter).
"""
from functools import cache
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.common import markdown_table
from assets.evaluation.scoring import build_query_sets, dense_per_query
from assets.indices import BASELINE_TABLE, FINETUNED_TABLE, build_index, embed_incrementally
from assets.evaluation.breakdown import feedback_status
from assets.triplets import feedback_documents
from assets.promotion.gate import GateSettings, compare, decide
from assets.training.adapter import QueryAdapter, load_adapter
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
    adapter_candidates: bool = True  # the query adapter is a candidate too (while no fine-tuned bi-encoder serves)


def gate_sets(query_splits: pd.DataFrame, human_queries: list, chunks: pd.DataFrame) -> tuple[list, list]:
    """(gate sets, guard sets): the human sets and the synthetic test split as guard, or the split alone."""
    sets = build_query_sets(query_splits, human_queries, chunks)
    human = [s for s in sets.values() if s.kind == "human"]
    synthetic = [s for s in sets.values() if s.kind == "synthetic" and s.qids]
    return (human, synthetic) if human else (synthetic, [])


def adapted(encode, weights_path: str | None):
    """`encode` (texts -> vectors), followed by the query adapter saved at `weights_path` when there is one."""
    return QueryAdapter(load_adapter(weights_path), encode).adapt_queries if weights_path else encode


def serving_query_vectors(texts: list[str], serving_index: dict, embedder: EmbedderResource):
    """The vectors to search `serving_index`'s table with: the queries embedded with the champion (None = the base
    model) and, when a query adapter serves, mapped by it. The one way production turns a query into a vector."""
    champion = serving_index.get("champion") or {}
    encode = adapted(lambda t: embedder.encode(t, champion.get("model_path")), (champion.get("adapter") or {}).get("weights_path"))
    return encode(list(texts))


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


def local_artifact(version, mlflow: MLflowResource, workspace: WorkspaceResource, pattern: str, what: str) -> Path:
    """The first file matching `pattern` of a version: its recorded path (`PATH_TAG`) when that exists here, else
    in its registered artifacts, downloaded into the workspace once."""
    recorded = version.tags.get(PATH_TAG, "")
    if recorded and Path(recorded).exists():
        return Path(recorded)
    dst = workspace.models_dir / "champion" / f"{version.name}-v{version.version}"
    if not dst.exists():
        mlflow.download_version(version.name, version.version, str(dst))
    found = sorted(dst.rglob(pattern))
    if not found:
        raise FileNotFoundError(f"version {version.version} of {version.name} has no {what} in its artifacts ({dst}); "
                                f"re-register it or move the '{PATH_TAG}' tag")
    return found[0]


def champion_model_path(version, mlflow: MLflowResource, workspace: WorkspaceResource) -> str:
    """A local folder of the champion's weights: its recorded path, else its artifacts downloaded once."""
    found = local_artifact(version, mlflow, workspace, "modules.json", "sentence-transformers model")
    return str(found if found.is_dir() else found.parent)


def adapter_weights_path(version, mlflow: MLflowResource, workspace: WorkspaceResource) -> str:
    """A local copy of a registered query adapter's weights (.npz): its recorded path, else downloaded once."""
    return str(local_artifact(version, mlflow, workspace, "*.npz", "query adapter weights (.npz)"))


def adapter_summary(version, weights_path: str | None) -> dict | None:
    return None if version is None else {"registered_model": version.name, "version": str(version.version),
                                         "weights_path": weights_path, "mlflow_run_id": version.run_id}


def champion_summary(version, model_path: str | None, base_model: str, adapter: dict | None = None) -> dict:
    if version is None:
        what = (f"the base model {base_model} with query adapter version {adapter['version']}" if adapter else
                f"the base model {base_model} (no version promoted yet)")
        return {"version": None, "model_path": None, "base_model": base_model, "mlflow_run_id": None,
                "adapter": adapter, "what": what}
    return {"version": str(version.version), "model_path": model_path, "base_model": base_model,
            "mlflow_run_id": version.run_id, "adapter": None, "what": f"version {version.version}"}


def gate_tags(decision: str, reason: str, path: str, result) -> dict:
    """The tags a decided version carries: the decision, its reason, its local path and the gate's numbers."""
    lo, hi = result.gate["ci95"]
    return {GATE_TAG: decision, REASON_TAG: reason[:4000], PATH_TAG: path,
            "flywheel.gate_delta_ndcg_at_10": result.gate["delta_ndcg@10"],
            "flywheel.gate_ci95": f"[{lo:.4f}, {hi:.4f}]", "flywheel.gate_p_value": result.gate["p_value"]}


def decide_adapter(query_adapter: dict, adapter_champion, biencoder_champion, base_model: str, judge,
                   mlflow: MLflowResource, config: "PromotionConfig", champion_what: str) -> dict:
    """The gate's decision on the new query adapter (over the base model) against what serves after the
    bi-encoder's decision. `judge(candidate, champion)` scores two (model_path, adapter_path) pairs and returns
    the gate's result and its seen/unseen split."""
    name, version = query_adapter.get("registered_model"), query_adapter.get("model_version")
    out = {"registered_model": name, "candidate_version": version and str(version), "promote": False,
           "gate": None, "guard": None}
    if not config.adapter_candidates:
        return {**out, "decision": "off", "reason": "not decided: adapter_candidates is off in the gate's config"}
    if not query_adapter.get("enabled"):
        return {**out, "decision": "no_candidate", "reason": "not decided: the query adapter is off"}
    if not name or not version:
        return {**out, "decision": "not_registered",
                "reason": "not decided: the adapter is not a registered version (register_model is off)"}
    if biencoder_champion is not None:
        return {**out, "decision": "not_decided",
                "reason": f"not decided: fine-tuned bi-encoder version {biencoder_champion.version} serves, and an "
                          f"adapter applies only over the base model's vectors ({base_model})"}
    if query_adapter.get("base_model") not in (None, base_model):
        return {**out, "decision": "not_decided", "reason": f"not decided: the adapter was trained over "
                f"{query_adapter['base_model']}, not over the base model that serves ({base_model})"}
    if adapter_champion is not None and str(adapter_champion.version) == str(version):
        return {**out, "decision": "unchanged", "reason": f"unchanged: adapter version {version} is the champion"}
    if GATE_TAG in (tags := mlflow.version_tags(name, version)):
        return {**out, "decision": "already_decided",
                "reason": f"already decided for adapter version {version}: {tags.get(REASON_TAG, tags[GATE_TAG])}"}
    result, by_feedback = judge((None, query_adapter["weights_path"]), "champion")
    decision = "promoted" if result.promote else "rejected"
    reason = f"{result.reason} (the base model + adapter version {version}, against {champion_what})" \
             f"{seen_unseen_words(by_feedback)}"
    mlflow.tag_version(name, version, gate_tags(decision, reason, query_adapter["weights_path"], result))
    if result.promote:
        mlflow.set_alias(name, version, config.alias)
    return {**out, "decision": decision, "promote": result.promote, "reason": reason, "gate": result.gate,
            "guard": result.guard, "by_feedback": by_feedback}


@dg.asset(group_name="promotion", compute_kind="mlflow", pool="gpu", op_tags=compute_tags("gpu"))
def promotion_gate(context: dg.AssetExecutionContext, chunks: pd.DataFrame, query_splits: pd.DataFrame,
                   training_triplets: pd.DataFrame,
                   human_queries: list, finetuned_biencoder: dict, query_adapter: dict, baseline_index: dict,
                   finetuned_index: dict, embedder: EmbedderResource, lancedb: LanceDBResource, mlflow: MLflowResource,
                   workspace: WorkspaceResource, config: PromotionConfig) -> dg.Output[dict]:
    """The gate's decisions on the new bi-encoder and the new query adapter against what serves, applied to the
    MLflow registry's aliases."""
    name, candidate = finetuned_biencoder.get("registered_model"), finetuned_biencoder.get("model_version")
    base = embedder.base_model_path()
    adapter_name = query_adapter.get("registered_model") if config.adapter_candidates else None

    def serving_adapter(biencoder_champion):
        """The adapter champion that serves: only while no bi-encoder version does (it maps base-model queries)."""
        version = mlflow.alias_version(adapter_name, config.alias) if adapter_name and biencoder_champion is None else None
        return version, adapter_weights_path(version, mlflow, workspace) if version is not None else None

    champion = mlflow.alias_version(name, config.alias) if name else None
    champ_path = champion_model_path(champion, mlflow, workspace) if champion is not None else None
    champ_adapter, champ_adapter_path = serving_adapter(champion)
    serving = champion_summary(champion, champ_path, base, adapter_summary(champ_adapter, champ_adapter_path))
    value = {"registered_model": name, "alias": config.alias, "candidate_version": candidate and str(candidate),
             "candidate_model_path": finetuned_biencoder.get("model_path"), "gate": None, "guard": None,
             "previous_champion": serving}
    settings = GateSettings(min_gain=config.min_gain, alpha=config.alpha, guard_tolerance=config.guard_tolerance,
                            resamples=config.resamples, seed=config.seed)
    tables = {base: baseline_index["table"]}
    if finetuned_biencoder.get("model_path"):
        tables[finetuned_biencoder["model_path"]] = finetuned_index["table"]

    @cache
    def query_sets() -> tuple[list, list]:
        return gate_sets(query_splits, human_queries, chunks)

    @cache
    def scores(model_path: str | None, adapter_path: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(gate, guard) per-query scores of a model, with a query adapter over it or not; each pair once."""
        gate, guard = query_sets()
        if (model_path or base) in tables:
            ids, vectors = lancedb.open(tables[model_path or base]).vectors()
        else:   # an older champion: the serving table holds its vectors; embed only what it lacks
            ids = list(chunks["chunk_id"])
            vectors, _ = embed_incrementally(chunks, lancedb.stored_vectors(SERVING_TABLE, embedder.vector_key(model_path)),
                                             lambda texts: embedder.encode(texts, model_path))
        encode = adapted(lambda texts: embedder.encode(texts, model_path), adapter_path)
        return score_sets(gate, encode, ids, vectors), score_sets(guard, encode, ids, vectors)

    def judge(cand: tuple, champ: tuple | str):
        """The gate's rule on two (model_path, adapter_path) pairs ("champion": what serves now), and the split."""
        champ = (champ_path, champ_adapter_path) if champ == "champion" else champ
        (cand_gate, cand_guard), (champ_gate, champ_guard) = scores(*cand), scores(*champ)
        gate, guard = query_sets()
        has_guard = bool(guard)
        result = decide(cand_gate, champ_gate, cand_guard if has_guard else None, champ_guard if has_guard else None,
                        settings)
        by_feedback = seen_unseen(cand_gate, champ_gate, gate, query_splits,
                                  feedback_documents(training_triplets, chunks), settings)
        return result, by_feedback

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
        result, by_feedback = judge((finetuned_biencoder["model_path"], None), "champion")
        value.update(decision="promoted" if result.promote else "rejected", promote=result.promote,
                     reason=f"{result.reason} (against the champion, {serving['what']}){seen_unseen_words(by_feedback)}",
                     gate=result.gate, guard=result.guard, by_feedback=by_feedback)
        mlflow.tag_version(name, candidate, gate_tags(value["decision"], value["reason"],
                                                      finetuned_biencoder["model_path"], result))
        if result.promote:
            mlflow.set_alias(name, candidate, config.alias)
            if champ_adapter is not None:   # the new bi-encoder's vectors replace the base ones the adapter maps
                mlflow.delete_alias(adapter_name, config.alias)
                value["adapter_retired"] = str(champ_adapter.version)
    now = mlflow.alias_version(name, config.alias) if name else None
    now_path = champion_model_path(now, mlflow, workspace) if now else None
    after = champion_summary(now, now_path, base, adapter_summary(champ_adapter, champ_adapter_path))
    value["adapter"] = decide_adapter(query_adapter, champ_adapter, now, base, judge, mlflow, config, after["what"])
    adapter_now, adapter_now_path = serving_adapter(now)
    value["champion"] = champion_summary(now, now_path, base, adapter_summary(adapter_now, adapter_now_path))
    context.log.info(f"promotion_gate: {value['reason']}; query adapter: {value['adapter']['reason']}")
    decisions = (("gate", value["gate"]), ("guard", value["guard"]),
                 ("adapter gate", value["adapter"]["gate"]), ("adapter guard", value["adapter"]["guard"]))
    rows = [{"set": role, **{k: v for k, v in stats.items() if k != "sets"}, "query_sets": ", ".join(stats["sets"])}
            for role, stats in decisions if stats]
    numbers = {f"{role.replace(' ', '_')}_{k}": dg.MetadataValue.float(float(stats[k]))
               for role, stats in decisions if stats for k in ("delta_ndcg@10", "p_value")}
    for prefix, decided in (("gate", value), ("adapter_gate", value["adapter"])):
        splits = decided.get("by_feedback") or {}
        numbers.update({f"{prefix}_{g}_{k}": dg.MetadataValue.float(float(v[k])) for g, v in splits.items()
                        if v.get("n") for k in ("delta_ndcg@10", "p_value")})
        numbers.update({f"{prefix}_{g}_n": int(v.get("n", 0)) for g, v in splits.items()})
    return dg.Output(value, metadata={
        "decision": value["decision"],
        "reason": dg.MetadataValue.md(value["reason"]),
        "candidate_version": str(candidate),
        "champion_version": str(value["champion"]["version"]),
        "champion": value["champion"]["what"],
        "adapter_decision": value["adapter"]["decision"],
        "adapter_reason": dg.MetadataValue.md(value["adapter"]["reason"]),
        "adapter_candidate_version": str(value["adapter"]["candidate_version"]),
        "comparison": dg.MetadataValue.md(markdown_table(pd.DataFrame(rows), max_chars=200)),
        **numbers,
        "mlflow_run": dg.MetadataValue.url(finetuned_biencoder.get("mlflow_run_url") or ""),
    })


def champion_vetting(champion: dict, tags: dict[str, str], adapter_tags: dict[str, str] | None = None) -> tuple[bool, str]:
    """Whether what serves passed the gate: the base model always has; a version (the bi-encoder's, and the query
    adapter's when one serves) needs the gate's tag."""
    if champion.get("version") is None:
        passed, why = True, f"no bi-encoder version promoted: the base model {champion.get('base_model', '')} serves"
    else:
        passed, why = vetted(f"version {champion['version']}", tags)
    if passed and champion.get("adapter"):
        return vetted(f"query adapter version {champion['adapter']['version']}", adapter_tags or {})
    return passed, why


def vetted(what: str, tags: dict[str, str]) -> tuple[bool, str]:
    if tags.get(GATE_TAG) == "promoted":
        return True, f"{what} passed the gate: {tags.get(REASON_TAG, '')}"
    return False, (f"{what} carries the alias but the gate did not promote it "
                   f"({GATE_TAG}={tags.get(GATE_TAG, 'missing')}); it was aliased by hand or by another tool. "
                   "Move the alias back, or let the gate decide on it")


@dg.asset_check(asset=promotion_gate, blocking=True, description="The champion that will serve passed the gate.")
def champion_is_vetted(promotion_gate: dict, mlflow: MLflowResource) -> dg.AssetCheckResult:
    champion = promotion_gate["champion"]
    tags = mlflow.version_tags(promotion_gate["registered_model"], champion["version"]) if champion["version"] else {}
    adapter = champion.get("adapter")
    adapter_tags = mlflow.version_tags(adapter["registered_model"], adapter["version"]) if adapter else None
    passed, why = champion_vetting(champion, tags, adapter_tags)
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR, description=why,
                               metadata={"champion": champion["what"], "decision": promotion_gate["decision"],
                                         "adapter_decision": (promotion_gate.get("adapter") or {}).get("decision", "")})


@dg.asset(group_name="promotion", compute_kind="lancedb", pool="gpu", op_tags=compute_tags("gpu"))
def serving_index(context: dg.AssetExecutionContext, chunks: pd.DataFrame, promotion_gate: dict,
                  embedder: EmbedderResource, lancedb: LanceDBResource) -> dg.Output[dict]:
    """LanceDB table to query in production: every chunk embedded with the champion model, with a BM25 index;
    search it with `serving_query_vectors` (the champion's query encoder, and its query adapter when one serves)."""
    champion = promotion_gate["champion"]
    out = build_index(context, chunks, embedder, lancedb, SERVING_TABLE, champion["model_path"],
                      reuse_from=(BASELINE_TABLE, FINETUNED_TABLE))   # the champion is often one of those models
    adapter = champion.get("adapter")
    return dg.Output({**out.value, "champion": champion, "adapter": adapter},
                     metadata={**out.metadata, "champion": champion["what"],
                               "champion_version": str(champion["version"]),
                               "query_adapter": f"version {adapter['version']}: {adapter['weights_path']}" if adapter
                               else "none: queries are embedded with the champion alone"})
