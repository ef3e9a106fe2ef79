"""lmforge 0.1's import paths, which recipes and saved configs name, resolve to the same classes until 0.3."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

from lmforge import _compat


@pytest.mark.parametrize("old,new", sorted(_compat.MOVED_MODULES.items()))
def test_a_moved_module_is_the_new_module_itself(old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        sys.modules.pop(old, None)
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_a_moved_class_is_the_same_class() -> None:
    from lmforge.runtime.strategies import BlockFSDPStrategy, FSDP2Strategy

    sharding = importlib.import_module("lmforge.core.sharding")
    with pytest.warns(DeprecationWarning, match="lmforge.runtime.strategies.FSDP2Strategy"):
        assert sharding.FSDP2Strategy is FSDP2Strategy
    with pytest.warns(DeprecationWarning):
        assert sharding.BlockFSDPStrategy is BlockFSDPStrategy
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        sharding.Nothing  # noqa: B018


def test_a_saved_config_with_the_old_paths_still_parses(tmp_path) -> None:
    """A 0.1 run's config.yaml names the callbacks, the data module and the strategy by their old paths."""
    (tmp_path / "old.yaml").write_text(textwrap.dedent("""\
        model: {backbone: {architecture: gpt2, config: {n_layer: 1, n_embd: 16, n_head: 2}}, objective: CausalLM}
        data:
          class_path: lmforge.core.labeled_data.LabeledTextData
          init_args: {train: t.jsonl, val: v.jsonl}
        trainer:
          strategy: {class_path: lmforge.core.sharding.FSDP2Strategy}
          callbacks:
            - lmforge.core.observe.TokenThroughput
            - lmforge.core.observe.samples.ValidationSamples
            - lmforge.core.preemption.SaveOnPreemption
        """))
    code = textwrap.dedent(f"""
        import sys
        sys.argv = ["lmforge", "--config", {str(tmp_path / 'old.yaml')!r}]
        from lmforge.cli.training import run_cli
        cli = run_cli(run=False)
        config = cli.config
        print(config.data.class_path, config.trainer.strategy.class_path,
              [c.class_path for c in config.trainer.callbacks])
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LabeledTextData" in result.stdout and "FSDP2Strategy" in result.stdout
    assert "TokenThroughput" in result.stdout and "ValidationSamples" in result.stdout
