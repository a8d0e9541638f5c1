from assets.training.retrain import changed_fraction, decide_retrain, load_record, save_record


def _record(tmp_path, chunks, queries, fp="f1"):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    path = tmp_path / "last.json"
    save_record(path, {"model_path": str(model), "mlflow_run_id": "r1"}, chunks, queries, fp)
    return load_record(path)


def test_changed_fraction():
    assert changed_fraction(["a", "b"], ["a", "b"]) == 0.0
    assert changed_fraction(["a", "b", "c", "d"], ["a", "b", "c", "e"]) == 0.5   # one gone + one new over 4
    assert changed_fraction([], ["a"]) == 1.0


def test_first_run_trains():
    d = decide_retrain(None, ["a"], ["q"], "f1", 0.05)
    assert d.retrain and "first" in d.reason


def test_small_change_is_skipped_with_the_reason(tmp_path):
    record = _record(tmp_path, [str(i) for i in range(100)], ["q1", "q2"])
    d = decide_retrain(record, [str(i) for i in range(101)], ["q1", "q2"], "f1", 0.05)
    assert not d.retrain and d.changed_fraction == 0.01
    assert d.reason.startswith("skipped: only 1.0% of chunks and 0.0% of training queries") and "r1" in d.reason


def test_enough_change_settings_change_zero_threshold_or_a_lost_model_retrain(tmp_path):
    record = _record(tmp_path, [str(i) for i in range(100)], ["q1", "q2"])
    assert decide_retrain(record, [str(i) for i in range(100)], ["q1", "q3"], "f1", 0.05).retrain   # queries 100%
    assert decide_retrain(record, [str(i) for i in range(100)], ["q1", "q2"], "f2", 0.05).retrain   # settings
    assert decide_retrain(record, [str(i) for i in range(100)], ["q1", "q2"], "f1", 0.0).retrain    # every run
    (tmp_path / "model").rmdir()
    d = decide_retrain(record, [str(i) for i in range(100)], ["q1", "q2"], "f1", 0.05)
    assert d.retrain and "gone" in d.reason
