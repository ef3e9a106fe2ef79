"""lmforge.core.teacher, the public teacher loader: an lmforge checkpoint or an HF directory, loaded with the
run objective's Auto class, checked against the run's tokenizer, frozen, in eval mode and outside the module
tree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmforge.core.checkpoint import backbone_state_dict, load_checkpoint
from lmforge.core.plugins import Distiller
from lmforge.core.teacher import FrozenTeacher, load_teacher
from lmforge.testing import FIXTURES, Kit


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    return Kit(tmp_path_factory.mktemp("kit"))


@pytest.fixture(scope="module")
def student(kit: Kit):
    """The host a distiller's setup sees: a tiny causal LM with the fixture's tokenizer."""
    return kit.workdir.model(FIXTURES["causal_lm"])


class Holder(Distiller):
    """Keeps a teacher the way a distiller does: in a plain attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen: FrozenTeacher | None = None


def test_a_checkpoint_teacher_has_the_saved_weights_and_answers_as_the_plain_model(kit, student) -> None:
    path = kit.teacher("causal_lm", checkpoint=True)
    saved = backbone_state_dict(load_checkpoint(path))
    teacher = load_teacher(path, student)
    assert isinstance(teacher.model, AutoModelForCausalLM._model_mapping[type(teacher.config)])
    state = teacher.model.state_dict()
    assert set(saved) <= set(state) and all(torch.equal(state[k], v) for k, v in saved.items())

    ids = torch.randint(0, teacher.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    reference = AutoModelForCausalLM.from_config(teacher.config)
    reference.load_state_dict(saved, strict=False)
    reference.tie_weights()
    with torch.no_grad():
        expected = reference.eval()(input_ids=ids, output_hidden_states=True)
    got = teacher({"input_ids": ids}, hidden_states=True)
    assert torch.allclose(got.logits, expected.logits, atol=1e-6)
    assert len(got.hidden_states) == teacher.config.num_hidden_layers + 1
    assert not got.logits.requires_grad


def test_the_teacher_is_frozen_in_eval_mode_and_outside_the_module_tree(kit, student) -> None:
    holder = Holder()
    holder.frozen = load_teacher(kit.teacher("causal_lm", checkpoint=True), student)
    holder.train()
    teacher = holder.frozen.model
    assert not teacher.training and all(not m.training for m in teacher.modules())
    assert all(not p.requires_grad for p in teacher.parameters())
    assert list(holder.parameters()) == [] and holder.state_dict() == {}
    assert all(m is holder for m in holder.modules())


def test_dtype_casts_the_weights(kit, student) -> None:
    teacher = load_teacher(kit.teacher("causal_lm"), student, dtype="bfloat16")
    assert {p.dtype for p in teacher.model.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match=r"model\.distiller\.init_args\.teacher_dtype: must be one of float32, "
                                         r"bfloat16, float16 or null, got 'int8'"):
        load_teacher(kit.teacher("causal_lm"), student, dtype="int8")  # type: ignore[arg-type]


def test_errors_name_the_key_the_teacher_was_given_under(kit, student, tmp_path: Path) -> None:
    key = "model.distiller.init_args.reference"
    with pytest.raises(FileNotFoundError, match=rf"{key}: must be a local HF model directory or an lmforge "
                                                r"checkpoint .*does not exist\.$"):
        load_teacher(tmp_path / "none.ckpt", student, key=key)
    with pytest.raises(ValueError, match=rf"{key}: the model in .* must be a AutoModelForCausalLM .* got a "
                                         r"AutoModelForMaskedLM"):
        load_teacher(kit.teacher("masked_lm", checkpoint=True), student, key=key)
