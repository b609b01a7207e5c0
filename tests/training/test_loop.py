"""The one loop's hooks and budgets: trainable prefixes, init_from, auxiliary_loss, step and wall-clock budgets."""

from __future__ import annotations

import pytest
import torch

from adascale.errors import AdaScaleError
from adascale.models.io import save_model
from adascale.models.painn import PaiNN
from adascale.training.loop import TrainingLoop, set_trainable, step_seed
from adascale.training.tasks import FrameTask
from models.branch_checks import SPECIES
from training.loop_cases import SETTINGS, mixture_case, painn_case, state_equal

SHORT = SETTINGS.model_copy(update=dict(max_epochs=1))


def _states(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_trainable_prefixes_train_only_those_parameters():
    task, settings = mixture_case(trainable=["router", "energy_offsets"])  # "router only"
    before = _states(task.model)
    TrainingLoop(task, settings.model_copy(update=dict(max_epochs=1, validate_at_start=False))).run()
    after = task.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("router.", "energy_offsets")) for k in changed)
    assert any(k.startswith("router.mlp") for k in changed)
    assert not any(p.requires_grad for p in task.model.branches.parameters())

    task, settings = mixture_case(trainable=[""])  # "all unfrozen": the branches move too
    before = _states(task.model)
    TrainingLoop(task, settings.model_copy(update=dict(max_epochs=1))).run()
    assert any(k.startswith("branches.") and not torch.equal(before[k], v) for k, v in task.model.state_dict().items())
    with pytest.raises(AdaScaleError, match="no parameter name starts with 'routr'"):
        set_trainable(task.model, ["routr"])


def test_init_from_starts_from_a_saved_model(tmp_path):
    source_task, _ = painn_case()
    TrainingLoop(source_task, SHORT).run()
    save_model(tmp_path / "source", source_task.model)
    task, _ = painn_case()  # the same seeded initialisation, before the warm start
    assert not state_equal(task.model.state_dict(), source_task.model.state_dict())
    loop = TrainingLoop(
        task, SHORT.model_copy(update=dict(init_from=str(tmp_path / "source"), validate_at_start=True, max_epochs=1))
    )
    assert state_equal(task.model.state_dict(), source_task.model.state_dict())
    start = loop.run().history[0]
    assert start["epoch"] == 0 and start["valid_force_mae"] == source_task.validate()["mae"]


class _Penalised(PaiNN):
    """A PaiNN whose auxiliary loss pulls atom energies towards zero (weight owned by the model)."""

    kind = "penalised_painn"
    seen: list = []

    def auxiliary_loss(self, outputs: dict, batch) -> torch.Tensor:
        self.seen.append((set(outputs), batch.n_frames))
        return 10.0 * (outputs["atom_energy"] ** 2).mean()


def test_auxiliary_loss_is_added_to_the_frame_loss():
    plain_task, _ = painn_case()
    torch.manual_seed(0)
    model = _Penalised(SPECIES, cutoff=3.0, features=8, interactions=1, average_neighbours=5.0).double()
    model.load_state_dict(plain_task.model.state_dict())
    task = FrameTask(model, plain_task.train_set, plain_task.valid_set.frames, plain_task.settings)
    items = torch.arange(1).numpy()
    model.train(), plain_task.model.train()
    objective, stats = task.loss(items)
    plain, _ = plain_task.loss(items)
    out = plain_task.model(plain_task.train_set.batch(items).atoms)
    expected = float(plain.detach()) + 10.0 * float((out["atom_energy"] ** 2).mean())
    assert float(objective.detach()) == pytest.approx(expected, rel=1e-12) and float(stats[0]) == pytest.approx(expected)
    assert _Penalised.seen[-1] == ({"energy", "forces", "atom_energy", "features"}, 1)


def test_step_budget_and_wall_clock_bound_are_reported():
    task, _ = painn_case()
    result = TrainingLoop(task, SETTINGS.model_copy(update=dict(max_steps=6))).run()
    assert (result.stopped, result.steps, result.budget_hit) == ("max_steps", 6, False)
    assert [line["step"] for line in result.history] == [4, 6]  # epoch 1, then the partial epoch 2
    task, _ = painn_case()
    result = TrainingLoop(task, SETTINGS.model_copy(update=dict(time_budget_minutes=1e-6))).run()
    assert result.stopped == "time_budget" and result.budget_hit and result.steps < 12


def test_step_seeds_depend_on_seed_step_and_rank_only():
    assert (
        step_seed(0, 5) == step_seed(0, 5) and len({step_seed(0, 5), step_seed(1, 5), step_seed(0, 6), step_seed(0, 5, 1)}) == 4
    )


def test_cosine_time_decays_over_the_wall_clock_budget_and_cosine_over_steps_only():
    task, _ = painn_case()
    by_steps = TrainingLoop(task, SETTINGS.model_copy(update=dict(warmup_steps=0, time_budget_minutes=1.0)))
    by_time = TrainingLoop(
        task, SETTINGS.model_copy(update=dict(warmup_steps=0, time_budget_minutes=1.0, schedule="cosine_time"))
    )
    assert by_steps.learning_rate(elapsed_s=60.0) == by_steps.learning_rate(elapsed_s=0.0) == SETTINGS.learning_rate
    assert by_time.learning_rate(elapsed_s=60.0) == pytest.approx(SETTINGS.learning_rate * SETTINGS.final_learning_rate_factor)
    with pytest.raises(AdaScaleError, match="set time_budget_minutes"):
        TrainingLoop(task, SETTINGS.model_copy(update=dict(schedule="cosine_time")))
