"""Fine-tuning: starting from a pre-training checkpoint, freezing, backbone learning rates, export to
HF pipelines with label names, and `lmforge predict`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from transformers import AutoConfig, AutoModelForSequenceClassification, pipeline

from lmforge.cli.export import export_checkpoint
from lmforge.cli.main import main
from lmforge.cli.predict import predict_rows
from lmforge.core.backbone import Backbone, build_backbone, build_config, freeze, load_base_weights
from lmforge.core.data.labeled import LabeledTextData
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining, load_tokenizer
from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.masked_lm import MaskedLM
from lmforge.plugins.objectives.sequence_classification import SequenceClassification
from lmforge.plugins.objectives.token_classification import TokenClassification

BERT_CONFIG = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
               "max_position_embeddings": 64}
TWO_LAYER_BERT = Backbone("bert", BERT_CONFIG)
NAMES = ["negative", "neutral", "positive"]
MOODS = {"positive": ["sang", "read"], "negative": ["ran", "cooked"], "neutral": ["sat", "walked"]}
PEOPLE, PLACES = ["anna", "omar", "li"], ["paris", "the park", "new york"]
WORDS = "the cat sat on a mat and the dog ran to the park while birds sang she read a book he cooked rice".split()


def write_corpus(path: Path, n_docs: int, seed: int) -> Path:
    rng = random.Random(seed)
    path.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))) + ".\n"
                            for _ in range(n_docs)))
    return path


def reviews(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = [{"text": f"the {rng.choice(['cat', 'dog'])} {rng.choice(MOODS[NAMES[i % 3]])} on a mat",
             "label": NAMES[i % 3]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sentences(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES).split()
        tokens = [person, "walked", "to", *place, "."]
        tags = ["B-PER", "O", "O", "B-LOC", *["I-LOC"] * (len(place) - 1), "O"]
        rows.append({"tokens": tokens, "tags": tags})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def quiet_trainer(steps: int, **kwargs) -> Trainer:
    settings = dict(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                    num_sanity_val_steps=0)
    return Trainer(**{**settings, **kwargs})


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny BERT pre-trained with MaskedLM for a few steps: its checkpoint and tokenizer directory."""
    root = tmp_path_factory.mktemp("mlm")
    data = TextData(train=str(write_corpus(root / "train.txt", 200, seed=1)),
                    val=str(write_corpus(root / "val.txt", 30, seed=2)), block_size=32, batch_size=4,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(algorithm="wordpiece", vocab_size=200)),
                    cache_dir=str(root / "cache"))
    model = LanguageModel(TWO_LAYER_BERT, MaskedLM())
    trainer = quiet_trainer(3)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(root / "mlm.ckpt")
    data.tokenizer.save_pretrained(str(root / "tokenizer"))
    return {"ckpt": root / "mlm.ckpt", "tokenizer": root / "tokenizer", "root": root}


def sentiment_data(root: Path, tokenizer: TokenizerSpec | None = None) -> LabeledTextData:
    return LabeledTextData(train=str(reviews(root / "train.jsonl", 40, 0)), val=str(reviews(root / "val.jsonl", 12, 1)),
                           max_length=32, batch_size=4, cache_dir=str(root / "cache"), seed=0,
                           tokenizer=tokenizer or TokenizerSpec(train=TokenizerTraining(vocab_size=300)))


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny sentiment classifier and a tiny tagger, trained a few steps and checkpointed."""
    root = tmp_path_factory.mktemp("finetuned")
    out = {}
    for task in ("sentiment", "ner"):
        (root / task).mkdir()
        if task == "sentiment":
            data, objective = sentiment_data(root / task), SequenceClassification()
        else:
            data = LabeledTextData(train=str(sentences(root / "ner.jsonl", 40, 0)), text_column="tokens",
                                   label_column="tags", max_length=32, batch_size=4, cache_dir=str(root / "cache"),
                                   tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), seed=0)
            objective = TokenClassification()
        model = LanguageModel(TWO_LAYER_BERT, objective, optimizer={"class_path": "torch.optim.AdamW",
                                                               "init_args": {"lr": 1e-2}})
        trainer = quiet_trainer(8)
        trainer.fit(model, datamodule=data)
        trainer.save_checkpoint(root / f"{task}.ckpt")
        out[task] = {"ckpt": root / f"{task}.ckpt", "model": model.eval(), "data": data}
    out["root"] = root
    return out


# -- starting from a pre-training checkpoint ------------------------------------------------------


def test_checkpoint_start_loads_the_encoder_and_a_new_head(mlm_run: dict, tmp_path: Path) -> None:
    data = sentiment_data(tmp_path, TokenizerSpec(path=str(mlm_run["tokenizer"])))
    model = LanguageModel(Backbone(checkpoint=str(mlm_run["ckpt"])), SequenceClassification(),
                          optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.0}})
    quiet_trainer(1).fit(model, datamodule=data)
    saved = torch.load(mlm_run["ckpt"], weights_only=True)["state_dict"]
    encoder = {k[len("backbone."):]: v for k, v in saved.items() if k.startswith("backbone.bert.")}
    state = model.backbone.state_dict()
    assert encoder and all(torch.equal(state[k], v) for k, v in encoder.items())
    assert model.backbone.config.num_hidden_layers == 2 and model.backbone.config.id2label[2] == "positive"

    fresh = AutoModelForSequenceClassification.from_config(model.backbone.config)
    report = load_base_weights(fresh, mlm_run["ckpt"])
    assert report.dropped and all(k.startswith("cls.") for k in report.dropped)  # the MLM head
    assert report.missing == ["pooler.dense.bias", "pooler.dense.weight"]  # MLM's BERT has no pooler
    assert report.new_head == ["classifier.bias", "classifier.weight"] and report.unexpected == []
    assert len(report.loaded) == len(encoder)


def test_checkpoint_with_another_tokenizer_is_refused_and_its_sizes_are_kept(mlm_run: dict, caplog) -> None:
    from lmforge.core.data.tokenizer import train_tokenizer

    other = train_tokenizer(["a b c d e f g"] * 20, TokenizerTraining(vocab_size=30), "wordpiece")
    with pytest.raises(ValueError, match="another tokenizer .* data.init_args.tokenizer.path"):
        build_config(Backbone(checkpoint=str(mlm_run["ckpt"])), other)
    tokenizer = load_tokenizer(mlm_run["tokenizer"])
    # The checkpoint fixes the architecture: a recipe's size is ignored (and named), dropout applies.
    spec = Backbone(checkpoint=str(mlm_run["ckpt"]), config={"intermediate_size": 48, "hidden_dropout_prob": 0.2})
    with caplog.at_level("WARNING"):
        config = build_config(spec, tokenizer)
    assert config.intermediate_size == BERT_CONFIG["intermediate_size"] and config.hidden_dropout_prob == 0.2
    assert "intermediate_size" in caplog.text and "model.backbone.checkpoint" in caplog.text
    build_backbone(spec, "AutoModelForSequenceClassification", config)  # the saved weights fit
    with pytest.raises(ValueError, match="not both"):
        Backbone(checkpoint="x.ckpt", pretrained="dir")


# -- freezing and learning rates --------------------------------------------------------------------


def test_frozen_parameters_get_no_gradient_and_do_not_change(tmp_path: Path) -> None:
    spec = Backbone("bert", BERT_CONFIG, freeze_embeddings=True, freeze_layers=1)
    model = LanguageModel(spec, SequenceClassification(),
                          optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.5}})
    data = sentiment_data(tmp_path)
    data.setup("fit")
    model.objective.bind_data(data)  # labels given to the objective, so the model builds without a trainer
    model.tokenizer = data.tokenizer
    model.configure_model()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    grads: dict[str, bool] = {}
    model.on_after_backward = lambda: grads.update(  # type: ignore[method-assign]
        {n: p.grad is not None for n, p in model.backbone.named_parameters()})
    trainer = quiet_trainer(3)
    trainer.fit(model, datamodule=data)
    after = model.backbone.state_dict()
    frozen = [n for n in before if n.startswith(("bert.embeddings.", "bert.encoder.layer.0."))]
    trained = [n for n in before if n.startswith(("bert.encoder.layer.1.", "classifier."))]
    assert frozen and trained
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert all(not torch.equal(before[n], after[n]) for n in trained)
    assert not any(grads[n] for n in frozen if n in grads) and all(grads[n] for n in trained)
    in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    named = dict(model.backbone.named_parameters())
    assert not any(id(named[n]) in in_optimizer for n in frozen if n in named)


def test_freeze_finds_gpt2_blocks_and_refuses_too_many() -> None:
    config = AutoConfig.for_model("gpt2", n_layer=2, n_embd=32, n_head=2, vocab_size=50, pad_token_id=0)
    model = AutoModelForSequenceClassification.from_config(config)
    freeze(model, embeddings=True, layers=1)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters()
                      if n.startswith(("transformer.wte", "transformer.wpe", "transformer.h.0."))}
    with pytest.raises(ValueError, match="freeze_layers=3 exceeds the model's 2 blocks"):
        freeze(model, embeddings=False, layers=3)


def test_parameter_groups_carry_the_backbone_and_head_learning_rates(tmp_path: Path) -> None:
    model = LanguageModel(TWO_LAYER_BERT, SequenceClassification(), backbone_lr_scale=0.1,
                          optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3, "weight_decay": 0.1}})
    trainer = quiet_trainer(1)
    trainer.fit(model, datamodule=sentiment_data(tmp_path))
    groups = trainer.optimizers[0].param_groups
    base = {id(p) for p in model.backbone.base_model.parameters()}
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters()) and len(set(seen)) == len(seen)
    for group in groups:
        in_base = {id(p) in base for p in group["params"]}
        assert len(in_base) == 1  # a group is all backbone or all head
        assert group["lr"] == pytest.approx(1e-4 if in_base == {True} else 1e-3)
        assert group["weight_decay"] == (0.0 if all(p.ndim < 2 for p in group["params"]) else 0.1)
    head = [g for g in groups if not any(id(p) in base for p in g["params"])]
    assert {id(p) for g in head for p in g["params"]} == {id(p) for p in model.backbone.classifier.parameters()}
    # A scheduler starts from the scaled rates.
    model.lr_scheduler_init = {"class_path": "lmforge.core.schedules.WarmupCosineLR",
                               "init_args": {"warmup_steps": 0, "total_steps": 10}}
    scheduled = model.configure_optimizers()["optimizer"].param_groups
    assert sorted(g["initial_lr"] for g in scheduled) == pytest.approx([1e-4, 1e-4, 1e-3, 1e-3])
    with pytest.raises(ValueError, match="backbone_lr_scale must be positive"):
        LanguageModel(TWO_LAYER_BERT, SequenceClassification(), backbone_lr_scale=0.0)


def test_resuming_with_other_labels_is_refused(classifier_run: dict) -> None:
    model = classifier_run["sentiment"]["model"]
    checkpoint = torch.load(classifier_run["sentiment"]["ckpt"], weights_only=True)
    model.on_load_checkpoint(checkpoint)  # the same labels: fine
    checkpoint["lmforge"]["config"]["id2label"] = {0: "neutral", 1: "negative", 2: "positive"}
    with pytest.raises(ValueError, match=r"trained with the labels \['neutral', 'negative', 'positive'\]"):
        model.on_load_checkpoint(checkpoint)


# -- export and predict -------------------------------------------------------------------------------


def test_exported_classifier_works_in_a_text_classification_pipeline(classifier_run: dict) -> None:
    run = classifier_run["sentiment"]
    out = export_checkpoint(run["ckpt"], classifier_run["root"] / "sentiment-hf")
    classify = pipeline("text-classification", model=str(out))
    text = "the dog sang on a mat"
    (all_scores,) = classify([text], top_k=None)
    scores = {r["label"]: r["score"] for r in all_scores}
    enc = run["data"].tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(run["model"].backbone(**enc).logits[0], -1).tolist()
    assert set(scores) == set(NAMES)
    assert [scores[n] for n in NAMES] == pytest.approx(expected, abs=1e-5)
    assert classify(text)[0]["label"] == NAMES[max(range(3), key=expected.__getitem__)]


def test_exported_tagger_works_in_a_token_classification_pipeline(classifier_run: dict) -> None:
    run = classifier_run["ner"]
    out = export_checkpoint(run["ckpt"], classifier_run["root"] / "ner-hf")
    tag = pipeline("token-classification", model=str(out), ignore_labels=[])
    text = "omar walked to new york ."
    found = {(r["index"], r["entity"]) for r in tag(text)}
    enc = run["data"].tokenizer(text, return_tensors="pt")
    names = run["data"].labels.names
    with torch.no_grad():
        ids = run["model"].backbone(**enc).logits[0].argmax(-1).tolist()
    special = set(run["data"].tokenizer.all_special_ids)
    tokens = enc["input_ids"][0].tolist()
    assert found == {(i, names[c]) for i, c in enumerate(ids) if tokens[i] not in special}
    assert {e for _, e in found} <= set(names) and "B-PER" in names


def test_predict_from_checkpoint_and_export_agree(classifier_run: dict, tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "the cat read on a mat", "label": "positive"}\n{"text": "the dog ran", "label": "x"}\n')
    ckpt = classifier_run["sentiment"]["ckpt"]
    exported = export_checkpoint(ckpt, tmp_path / "hf")
    assert main(["predict", str(ckpt), "--input", str(inputs), "--output", str(tmp_path / "a.jsonl")]) == 0
    assert main(["predict", str(exported), "--input", str(inputs), "--output", str(tmp_path / "b.jsonl")]) == 0
    a = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [r["label"] for r in a] == ["positive", "x"]  # input columns are kept
    for row, other in zip(a, b):
        assert row["prediction"] == other["prediction"] == max(row["scores"], key=row["scores"].get)
        assert set(row["scores"]) == set(NAMES) and sum(row["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert [row["scores"][n] for n in NAMES] == pytest.approx([other["scores"][n] for n in NAMES], abs=1e-5)

    words = tmp_path / "words.jsonl"
    words.write_text('{"tokens": ["li", "walked", "to", "paris", "."]}\n')
    assert main(["predict", str(classifier_run["ner"]["ckpt"]), "--input", str(words), "--text-column", "tokens",
                 "--output", str(tmp_path / "tags.jsonl")]) == 0
    (tagged,) = [json.loads(line) for line in (tmp_path / "tags.jsonl").read_text().splitlines()]
    assert len(tagged["prediction"]) == len(tagged["scores"]) == 5
    assert set(tagged["prediction"]) <= set(classifier_run["ner"]["data"].labels.names)
    assert main(["predict", str(tmp_path / "missing.ckpt"), "--input", str(words), "--output", "x.jsonl"]) == 1


def test_predict_rows_for_multi_label_and_regression_heads(classifier_run: dict) -> None:
    tokenizer = classifier_run["sentiment"]["data"].tokenizer
    rows = [{"text": "the cat sat"}, {"text": "a dog ran to the park"}]
    for problem_type, labels in (("multi_label_classification", 3), ("regression", 1)):
        torch.manual_seed(0)
        config = AutoConfig.for_model("bert", **BERT_CONFIG, vocab_size=len(tokenizer), num_labels=labels,
                                      problem_type=problem_type, id2label=dict(enumerate(NAMES[:labels])))
        model = AutoModelForSequenceClassification.from_config(config).eval()
        out = predict_rows(model, tokenizer, rows)
        with torch.no_grad():
            logits = model(**tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")).logits
        if problem_type == "regression":
            assert [r["prediction"] for r in out] == pytest.approx(logits[:, 0].tolist(), abs=1e-5)
        else:
            probs = torch.sigmoid(logits)
            for row, p in zip(out, probs):
                assert row["prediction"] == [n for n, q in zip(NAMES, p.tolist()) if q >= 0.5]
                assert list(row["scores"].values()) == pytest.approx(p.tolist(), abs=1e-5)
