"""Plugins that read or rewrite documents as strings refuse token classification at the recipe check.

A token-classification row is a list of words with one label each: rewriting it as a string (EDA's edits,
counterfactual swaps) or matching terms in it would misalign the labels or fail inside the plugin, so the
recipe is refused before any data is read, naming the plugin, its recipe key and what it supports.
"""

import pytest

from lmforge.core.plugin_checks import PluginCompatibilityError, check_plugins
from lmforge.plugins.augmenters.char_noise import CharNoise
from lmforge.plugins.augmenters.random_deletion import RandomDeletion
from lmforge.plugins.augmenters.random_insertion import RandomInsertion
from lmforge.plugins.augmenters.random_swap import RandomSwap
from lmforge.plugins.augmenters.synonym_replacement import SynonymReplacement
from lmforge.plugins.bias.blocklist_filter import BlocklistFilter
from lmforge.plugins.bias.counterfactual_augmentation import CounterfactualAugmentation
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.plugins.objectives.sequence_classification import SequenceClassification
from lmforge.plugins.objectives.token_classification import TokenClassification

TEXT_PLUGINS = [CharNoise, RandomDeletion, RandomInsertion, RandomSwap, SynonymReplacement, BlocklistFilter,
                CounterfactualAugmentation]


@pytest.mark.parametrize("plugin_class", TEXT_PLUGINS, ids=lambda c: c.__name__)
def test_token_classification_is_refused_naming_the_plugin(plugin_class):
    key = "model.bias_mitigators[0]" if plugin_class.kind == "bias_mitigator" else "model.augmenters[0]"
    with pytest.raises(PluginCompatibilityError) as info:
        check_plugins(TokenClassification(), [(key, plugin_class())])
    message = str(info.value)
    assert message.startswith(f"{plugin_class.__name__} ({key};"), message
    assert "not TokenClassification (task token_classification)" in message


@pytest.mark.parametrize("objective", [CausalLM, SequenceClassification], ids=lambda c: c.__name__)
@pytest.mark.parametrize("plugin_class", TEXT_PLUGINS, ids=lambda c: c.__name__)
def test_string_documents_stay_accepted(plugin_class, objective):
    check_plugins(objective(), [("model.augmenters[0]", plugin_class())])
