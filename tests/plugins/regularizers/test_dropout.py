"""Dropout sets exactly the documented config keys, and the model then really drops at that rate.

The rate is observed where HF applies it: every ``torch.nn.functional.dropout``
call (``nn.Dropout`` modules and eager attention) and the ``dropout_p`` that
the sdpa attention path hands to ``scaled_dot_product_attention``.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from lmforge.plugins.regularizers.dropout import Dropout

SETTINGS = {
    "gpt2": ({"hidden": 0.2, "attention": 0.3, "embedding": 0.4},
             {"resid_pdrop": 0.2, "attn_pdrop": 0.3, "embd_pdrop": 0.4}),
    "llama": ({"attention": 0.3}, {"attention_dropout": 0.3}),
    "bert": ({"hidden": 0.2, "attention": 0.3}, {"hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.3}),
}
#: Dropout applications of one forward pass of the 2-layer models, by probability: (calls, of which attention).
EXPECTED_CALLS = {
    "gpt2": {0.4: 1, 0.3: 2, 0.2: 4},  # embeddings; attention probs per layer; attn + mlp residual per layer
    "llama": {0.3: 2},  # attention probs per layer; llama has no other dropout
    "bert": {0.2: 5, 0.3: 2},  # embeddings + attention output + ffn output per layer; attention probs per layer
}


class Spy:
    """Records every dropout HF applies: (p, training, share of the non-zero inputs zeroed)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[float, bool, float | None]] = []
        dropout, sdpa = F.dropout, F.scaled_dot_product_attention

        def spy_dropout(input, p=0.5, training=True, inplace=False):
            output = dropout(input, p, training, inplace=False)
            alive = input != 0
            self.calls.append((float(p), bool(training), float((output[alive] == 0).float().mean())))
            return output

        def spy_sdpa(*args, **kwargs):
            p = kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)
            self.calls.append((float(p), True, None))  # sdpa only drops when given p > 0
            return sdpa(*args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "dropout", spy_dropout)
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy_sdpa)

    def active(self) -> list[tuple[float, float | None]]:
        return [(p, zeroed) for p, training, zeroed in self.calls if training and p > 0]


def batch(model, length: int = 32) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, len(model.tokenizer), (8, length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("architecture", sorted(SETTINGS))
def test_changes_exactly_the_documented_config_keys(make_model, architecture):
    roles, keys = SETTINGS[architecture]
    before = make_model(architecture).backbone.config.to_dict()
    plugin = Dropout(**roles)
    after = make_model(architecture, regularizers=[plugin]).backbone.config.to_dict()
    changed = {k: after[k] for k in after if after[k] != before.get(k)}
    assert changed == keys
    assert plugin.applied == keys


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("architecture", sorted(SETTINGS))
def test_drops_at_the_set_rate_in_train_mode_and_not_in_eval(make_model, monkeypatch, architecture,
                                                            attn_implementation):
    roles, _ = SETTINGS[architecture]
    model = make_model(architecture, attn_implementation, regularizers=[Dropout(**roles)])
    spy = Spy(monkeypatch)
    inputs = batch(model)

    model.train()
    torch.manual_seed(0)
    first = model(inputs).logits
    active = spy.active()
    assert Counter(p for p, _ in active) == EXPECTED_CALLS[architecture]
    for p, zeroed in active:
        if zeroed is not None:  # an F.dropout call: the share it zeroed is p
            assert zeroed == pytest.approx(p, abs=0.03)
    assert not torch.allclose(first, model(inputs).logits)  # a new mask each pass

    spy.calls.clear()
    model.eval()
    first = model(inputs).logits
    assert spy.calls and spy.active() == []
    torch.testing.assert_close(first, model(inputs).logits, rtol=0, atol=0)


def test_a_role_the_architecture_lacks_is_refused_naming_the_keys(make_model):
    with pytest.raises(ValueError, match=r"hidden dropout cannot be set for architecture 'llama'.*resid_pdrop, "
                                         r"hidden_dropout_prob, hidden_dropout"):
        make_model("llama", regularizers=[Dropout(hidden=0.1)])
    with pytest.raises(ValueError, match=r"embedding dropout cannot be set for architecture 'bert'.*embd_pdrop"):
        make_model("bert", regularizers=[Dropout(embedding=0.1)])


def test_config_keys_name_a_key_for_other_architectures(make_model):
    plugin = Dropout(hidden=0.25, config_keys={"hidden": "embd_pdrop"})
    model = make_model("gpt2", regularizers=[plugin])
    assert model.backbone.config.embd_pdrop == 0.25 and model.backbone.transformer.drop.p == 0.25
    assert model.backbone.config.resid_pdrop == 0.1  # untouched
    with pytest.raises(ValueError, match=r"config_keys.attention names 'attention_dropout'"):
        make_model("gpt2", regularizers=[Dropout(attention=0.1, config_keys={"attention": "attention_dropout"})])
    with pytest.raises(ValueError, match="unknown role"):
        Dropout(config_keys={"residual": "resid_pdrop"})


def test_probabilities_are_checked():
    with pytest.raises(ValueError, match=r"hidden must be in \[0, 1\)"):
        Dropout(hidden=1.0)
