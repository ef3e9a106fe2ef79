"""Two DDP processes (gloo) training a tiny GPT-2 with a CSVLogger and a ModelCheckpoint, as every bundled recipe
has; launched by tests/core/data/test_run_dir_ranks.py (Lightning re-launches it for rank 1).

    python _ddp_logger_script.py OUT_DIR CORPUS
"""

import sys
from pathlib import Path

from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lmforge.cli.training import release_process_group
from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.causal_lm import CausalLM


def main() -> None:
    out, corpus = Path(sys.argv[1]), sys.argv[2]
    seed_everything(0)
    data = TextData(train=corpus, val=corpus, tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)),
                    block_size=16, batch_size=4, cache_dir=str(out / "cache"), seed=0)
    model = LanguageModel(Backbone(architecture="gpt2", config={"n_layer": 1, "n_embd": 16, "n_head": 2,
                                                                "n_positions": 16}), CausalLM())
    trainer = Trainer(max_steps=2, accelerator="cpu", devices=2, strategy="ddp",
                      logger=CSVLogger(save_dir=str(out / "runs"), name="ddp"),
                      callbacks=[ModelCheckpoint(monitor="val/loss", save_last=True)], limit_val_batches=1,
                      val_check_interval=2, num_sanity_val_steps=0, enable_progress_bar=False,
                      enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    release_process_group()


if __name__ == "__main__":
    main()
