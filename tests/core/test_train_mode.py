"""Every trainable module is in train mode when training starts (`LanguageModel.configure_model`), a pretrained
backbone's included (``from_pretrained`` returns eval mode and Lightning keeps modes); a frozen teacher stays in
eval mode. Counted at the first training batch, as a user's callback would."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hf_dirs import save_gpt2_dir
from lightning.pytorch import Callback, Trainer

from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec
from lmforge.core.module import LanguageModel
from lmforge.plugins.distillation.logit_distillation import LogitDistillation
from lmforge.plugins.objectives.causal_lm import CausalLM



class EvalModeCount(Callback):
    """At the first training batch: modules of the backbone (and of the teacher) in eval mode, and the backbone's
    active dropout layers."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx != 0:
            return
        modules = list(module.backbone.modules())
        self.eval_modules = sum(not m.training for m in modules)
        dropouts = [m for m in modules if isinstance(m, torch.nn.Dropout)]
        self.dropouts, self.active = len(dropouts), sum(m.training for m in dropouts)
        teacher = getattr(module.distiller, "_teacher", None)
        self.teacher_train_modules = None if teacher is None else sum(m.training for m in teacher.model.modules())


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_gpt2_dir(tmp_path_factory.mktemp("hf-gpt2"))


def first_batch(model: LanguageModel, gpt2_dir: Path, corpus: dict[str, Path], tmp_path: Path) -> EvalModeCount:
    data = TextData(train=str(corpus["train"]), val=str(corpus["val"]), tokenizer=TokenizerSpec(path=str(gpt2_dir)),
                    block_size=16, batch_size=4, cache_dir=str(tmp_path / "cache"))
    count = EvalModeCount()
    Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
            callbacks=[count]).fit(model, datamodule=data)
    return count


def test_pretrained_backbone_trains_in_train_mode(gpt2_dir: Path, tmp_path: Path, corpus: dict[str, Path]) -> None:
    count = first_batch(LanguageModel(Backbone(pretrained=str(gpt2_dir)), CausalLM()), gpt2_dir, corpus, tmp_path)
    assert count.eval_modules == 0
    assert count.dropouts > 0 and count.active == count.dropouts


def test_frozen_teacher_stays_in_eval_mode(gpt2_dir: Path, tmp_path: Path, corpus: dict[str, Path]) -> None:
    model = LanguageModel(Backbone(pretrained=str(gpt2_dir)), CausalLM(),
                          distiller=LogitDistillation(teacher=str(gpt2_dir)))
    count = first_batch(model, gpt2_dir, corpus, tmp_path)
    assert count.eval_modules == 0 and count.active == count.dropouts
    assert count.teacher_train_modules == 0
