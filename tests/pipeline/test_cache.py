import json

from rich.console import Console

from adascale.pipeline.cache import StageRunner, stable_hash


def _runner(tmp_path):
    return StageRunner(tmp_path, console=Console(quiet=True))


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_stage_reruns_only_when_its_inputs_or_upstream_change(tmp_path):
    calls = []
    first = _runner(tmp_path)
    assert first.run("gen", {"frames": 10}, lambda: calls.append("gen"))
    assert first.run("train", {"epochs": 1}, lambda: calls.append("train"), after=("gen",))

    again = _runner(tmp_path)
    assert not again.run("gen", {"frames": 10}, lambda: calls.append("gen"))
    assert not again.run("train", {"epochs": 1}, lambda: calls.append("train"), after=("gen",))
    assert calls == ["gen", "train"]

    changed = _runner(tmp_path)
    assert changed.run("gen", {"frames": 20}, lambda: calls.append("gen"))
    assert changed.run("train", {"epochs": 1}, lambda: calls.append("train"), after=("gen",))
    assert calls == ["gen", "train", "gen", "train"]


def test_a_stage_killed_midway_is_redone(tmp_path):
    def crash():
        raise KeyboardInterrupt

    runner = _runner(tmp_path)
    try:
        runner.run("train", {}, crash)
    except KeyboardInterrupt:
        pass
    assert not (tmp_path / ".stages" / "train.json").exists()
    calls = []
    assert _runner(tmp_path).run("train", {}, lambda: calls.append(1))
    assert calls == [1]
    assert json.loads((tmp_path / ".stages" / "train.json").read_text())["key"]
