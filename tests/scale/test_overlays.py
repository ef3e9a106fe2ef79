"""The strategy overlays compose with a recipe, parse, and build their Lightning strategy objects."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from lightning.pytorch.cli import instantiate_class
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy

from lmforge.cli.training import run_cli
from lmforge.cli.recipes import bundled_recipes
from lmforge.core.sharding import block_classes
from lmforge.runtime.strategies import BlockFSDPStrategy, FSDP2Strategy

RECIPES = bundled_recipes()
STRATEGIES = {
    "overlays/ddp": DDPStrategy,
    "overlays/fsdp": BlockFSDPStrategy,
    "overlays/fsdp2": FSDP2Strategy,
    "overlays/deepspeed-zero2": DeepSpeedStrategy,
    "overlays/deepspeed-zero3": DeepSpeedStrategy,
}


@pytest.fixture(scope="module")
def parser(tmp_path_factory: pytest.TempPathFactory) -> object:
    argv, sys.argv = sys.argv, ["lmforge"]
    try:
        return run_cli(["--config", str(RECIPES["quickstart"])], run=False).parser
    finally:
        sys.argv = argv


def build_strategy(strategy: object) -> object:
    if isinstance(strategy, str):
        from lightning.pytorch.strategies import StrategyRegistry

        return StrategyRegistry.get(strategy)
    return instantiate_class((), strategy.as_dict())


@pytest.mark.parametrize("overlay", sorted(STRATEGIES))
def test_strategy_overlay_parses_and_builds(overlay: str, parser: object) -> None:
    cfg = parser.parse_args(["--config", str(RECIPES["quickstart"]), "--config", str(RECIPES[overlay])])
    assert cfg.model.objective.class_path.endswith("CausalLM")  # the recipe is intact under the overlay
    if STRATEGIES[overlay] is DeepSpeedStrategy and importlib.util.find_spec("deepspeed") is None:
        assert cfg.trainer.strategy.class_path == "lightning.pytorch.strategies.DeepSpeedStrategy"
        pytest.skip("deepspeed is not installed; parsed only")
    strategy = build_strategy(cfg.trainer.strategy)
    assert isinstance(strategy, STRATEGIES[overlay])
    if overlay == "overlays/fsdp":
        assert strategy.checkpoint_blocks and strategy._state_dict_type == "sharded"
    if overlay.startswith("overlays/deepspeed"):
        assert strategy.config["zero_optimization"]["stage"] == int(overlay[-1])


def test_multinode_overlay_sets_nodes(parser: object) -> None:
    cfg = parser.parse_args(["--config", str(RECIPES["quickstart"]), "--config", str(RECIPES["overlays/ddp"]),
                             "--config", str(RECIPES["overlays/multinode"]), "--trainer.num_nodes", "4"])
    assert cfg.trainer.num_nodes == 4 and cfg.trainer.strategy == "ddp"


def test_block_fsdp_wraps_and_checkpoints_the_backbone_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=16, vocab_size=50))
    assert {c.__name__ for c in block_classes(model)} == {"GPT2Block"}

    monkeypatch.setattr(FSDPStrategy, "_setup_model", lambda self, m: m)  # wrapping needs a process group
    strategy = BlockFSDPStrategy()
    strategy._setup_model(model)
    wrap = strategy.kwargs["auto_wrap_policy"]
    checkpoint = strategy._activation_checkpointing_kwargs["auto_wrap_policy"]
    block = model.transformer.h[0]
    for policy in (wrap, checkpoint):
        assert policy._module_classes == {type(block)}
