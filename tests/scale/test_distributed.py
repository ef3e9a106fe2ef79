"""Two CPU processes (gloo): DDP matches one process with the same global batch; FSDP2 trains, saves, resumes.

Each run launches tests/scale/_train_script.py in a subprocess; Lightning re-launches it for rank 1.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("_train_script.py")


def train(mode: str, out: Path, corpus: Path, ckpt: Path | None = None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    args = [sys.executable, str(SCRIPT), mode, str(out), str(corpus), *([str(ckpt)] if ckpt else [])]
    done = subprocess.run(args, cwd=out, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]


def result(out: Path, name: str) -> dict:
    return torch.load(out / f"{name}.pt", weights_only=False)


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=atol), name


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path, write_corpus) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 40, seed=5)
    train("ddp", tmp_path, corpus)
    train("single", tmp_path, corpus)
    rank0, rank1, single = (result(tmp_path, n) for n in ("ddp-rank0", "ddp-rank1", "single-rank0"))
    assert_same_weights(rank0["state"], rank1["state"])  # DDP keeps the replicas identical, bitwise
    # Rank r trains on examples r, r+2, ... of the one-process order: the two per-rank batches of 4 are its batch
    # of 8. Losses and weights agree up to float summation order (the all-reduce averages per-rank gradients).
    for step, loss in single["losses"].items():
        assert (rank0["losses"][step] + rank1["losses"][step]) / 2 == pytest.approx(loss, abs=1e-5), step
    assert_same_weights(rank0["state"], single["state"], atol=1e-5)


@pytest.mark.slow
def test_fsdp2_two_processes_train_a_plugin_with_parameters_save_and_resume(tmp_path: Path, write_corpus) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 40, seed=5)
    train("fsdp2", tmp_path, corpus)
    rank0, rank1 = result(tmp_path, "fsdp2-rank0"), result(tmp_path, "fsdp2-rank1")
    assert_same_weights(rank0["state"], rank1["state"])  # sharded backbone and replicated plugin agree
    # L2Penalty on the sharded weights: every rank's loss term is the penalty of the whole weights (summed in
    # float32 over shards, so equal to the float64 one-process sum up to float32 rounding).
    for rank in (rank0, rank1):
        logged, expected = rank["penalty"]["logged"], rank["penalty"]["expected"]
        assert sorted(logged) == sorted(expected) == [1, 2, 3, 4]
        for step in logged:
            assert logged[step] == pytest.approx(expected[step], rel=1e-6), step
    probe = rank0["state"]["regularizers.0.head.weight"]
    assert probe.abs().sum() > 0 and not torch.equal(rank0["state"]["regularizers.0.bias"], torch.zeros(()))

    ckpt = tmp_path / "ckpt" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    assert saved["global_step"] == 4
    assert_same_weights({k: saved["state_dict"][k] for k in rank0["state"]}, rank0["state"])
    train("fsdp2", tmp_path, corpus, ckpt=ckpt)
    resumed0, resumed1 = result(tmp_path, "resumed-rank0"), result(tmp_path, "resumed-rank1")
    assert sorted(resumed0["losses"]) == [5, 6, 7, 8]  # continued from step 4
    assert_same_weights(resumed0["state"], resumed1["state"])


def save_teacher(out: Path, corpus: Path, **config: int) -> dict[str, torch.Tensor]:
    """A tiny random GPT-2 teacher and the tokenizer trained on ``corpus``, saved as a HF directory
    ``out/teacher``; returns its weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmforge.core.data.tokenizer import TokenizerTraining, train_tokenizer

    tokenizer = train_tokenizer([corpus.read_text().splitlines()], TokenizerTraining(vocab_size=300), "bpe")
    torch.manual_seed(1)
    teacher = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_head=2, n_positions=16,
                                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                         **{"n_layer": 1, "n_embd": 32, **config}))
    teacher.save_pretrained(out / "teacher")
    tokenizer.save_pretrained(str(out / "teacher"))
    return teacher.state_dict()


@pytest.mark.slow
def test_fsdp2_trains_the_built_in_plugins_with_parameters_and_resumes_as_the_uninterrupted_run(
        tmp_path: Path, write_corpus) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 40, seed=5)
    # A wider (48) and deeper (2 blocks) teacher than the student (32, 1 block): HiddenStateDistillation learns a
    # 32 -> 48 projection; AdversarialDebiasing has its adversary head. Both are replicated, the blocks sharded.
    save_teacher(tmp_path, corpus, n_layer=2, n_embd=48)
    train("fsdp2-plugins", tmp_path, corpus)  # 8 steps, a full checkpoint file after each
    full = [result(tmp_path, f"fsdp2-plugins-rank{r}") for r in range(2)]
    state = full[0]["state"]
    adversary = [k for k in state if k.startswith("bias_mitigators.0.adversary.")]
    assert len(adversary) == 4  # two Linear layers: weight and bias each
    assert state["distiller.projection.weight"].shape == (48, 32)
    assert not any(k.startswith("distiller._teacher") for k in state)  # the teacher is no part of the student
    # Every weight, the plugins' replicated ones included, is the same on both ranks, bitwise.
    assert_same_weights(full[0]["state"], full[1]["state"])
    for rank in range(2):
        assert sorted(full[rank]["terms"]) == list(range(1, 9))
        for step, terms in full[rank]["terms"].items():
            assert {"loss/adversarial_debiasing", "loss/hidden_state_distillation"} <= set(terms)
            assert all(math.isfinite(v) for v in terms.values()), (rank, step, terms)
            # The logged terms are the terms of the loss: they add up to loss/total.
            parts = sum(v for k, v in terms.items() if k != "loss/total")
            assert parts == pytest.approx(terms["loss/total"], rel=1e-5), (rank, step, terms)
        assert sum(terms["loss/adversarial_debiasing"] > 0 for terms in full[rank]["terms"].values()) >= 4

    ckpt = tmp_path / "steps" / "step=4.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    assert saved["global_step"] == 4
    for name in ["distiller.projection.weight", *adversary]:  # saved, and trained on after step 4
        assert not torch.equal(saved["state_dict"][name], state[name]), name
    train("fsdp2-plugins", tmp_path, corpus, ckpt=ckpt)
    resumed = [result(tmp_path, f"resumed-rank{r}") for r in range(2)]
    assert_same_weights(resumed[0]["state"], resumed[1]["state"])
    for rank in range(2):
        assert sorted(resumed[rank]["losses"]) == [5, 6, 7, 8]
        for step, loss in resumed[rank]["losses"].items():
            # Bitwise on the CPU: the shards, the plugins' parameters, AdamW's moments of both and the data
            # position come back exactly, and the arithmetic is the same.
            assert loss == full[rank]["losses"][step], (rank, step)
            assert resumed[rank]["terms"][step] == full[rank]["terms"][step], (rank, step)
        assert_same_weights(resumed[rank]["state"], full[rank]["state"])


@pytest.mark.slow
def test_streaming_ddp_ranks_end_epochs_together_and_resume_where_they_stopped(tmp_path: Path, write_corpus) -> None:
    # 2 ranks x 2 workers = 4 readers, one shard each: rank 0 reads shards 0-1, rank 1 the smaller shards 2-3.
    for shard, docs in enumerate([12, 12, 4, 4]):
        write_corpus(tmp_path / f"shard-{shard}.txt", docs, seed=shard)
    shards = tmp_path / "shard-*.txt"
    train("stream", tmp_path, shards)
    full = [result(tmp_path, f"stream-rank{r}") for r in range(2)]
    assert sorted(full[0]["blocks"]) == sorted(full[1]["blocks"]) == list(range(1, 9))  # the same steps, no hang
    epochs = [[full[r]["blocks"][s][0] for s in range(1, 9)] for r in range(2)]
    assert epochs[0] == epochs[1] and 0 in epochs[0] and 1 in epochs[0]  # rank 0 ended epoch 0 with rank 1
    stop = 3
    assert epochs[0][stop] == 0  # the stop is mid-epoch

    train("stream", tmp_path, shards, ckpt=tmp_path / "steps" / f"step={stop}.ckpt")
    for rank in range(2):
        resumed = result(tmp_path, f"resumed-rank{rank}")
        assert sorted(resumed["blocks"]) == list(range(stop + 1, 9))
        for step in resumed["blocks"]:
            # Each rank continues its own stream where it stopped: the same blocks, hence bitwise the same losses.
            assert resumed["blocks"][step] == full[rank]["blocks"][step], (rank, step)
            assert resumed["losses"][step] == full[rank]["losses"][step], (rank, step)


@pytest.mark.slow
def test_fsdp2_resumes_from_a_distributed_checkpoint_as_the_uninterrupted_run(tmp_path: Path, write_corpus) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 40, seed=5)
    train("fsdp2-dcp", tmp_path, corpus)  # 8 steps, a distributed checkpoint (a directory of shards) after each
    full = [result(tmp_path, f"fsdp2-dcp-rank{r}") for r in range(2)]
    ckpt = tmp_path / "steps" / "step=4.ckpt"
    assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == 2  # one shard file per rank
    train("fsdp2-dcp", tmp_path, corpus, ckpt=ckpt)
    resumed = [result(tmp_path, f"resumed-rank{r}") for r in range(2)]
    assert_same_weights(resumed[0]["state"], resumed[1]["state"])  # the ranks agree after resuming
    for rank in range(2):
        assert sorted(resumed[rank]["losses"]) == [5, 6, 7, 8]
        for step, loss in resumed[rank]["losses"].items():
            # Bitwise on the CPU: the shards, AdamW moments, plugin parameters and data position are restored
            # exactly and the arithmetic is the same.
            assert loss == full[rank]["losses"][step], (rank, step)
        assert_same_weights(resumed[rank]["state"], full[rank]["state"])


@pytest.mark.slow
def test_bias_probe_under_ddp_logs_the_one_process_scores(tmp_path: Path, write_corpus) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 40, seed=5)
    pairs = [("the cat sat on a mat.", "the dog sat on a mat."), ("she read a book.", "he read a book."),
             ("the birds sang.", "the dog sang."), ("he cooked rice.", "she cooked rice."),
             ("they walked home.", "they ran home."), ("the sun was warm.", "the park was warm."),
             ("a cat ran to the park.", "a dog ran to the park."), ("she sat in the sun.", "he sat in the sun."),
             ("the trees were tall.", "the birds were tall.")]  # 18 sentences in batches of 2: 5 + 4 batches
    rows = ["sent_more,sent_less,stereo_antistereo,bias_type"]
    rows += [f"{more},{less},stereo,{'gender' if i % 2 else 'other'}" for i, (more, less) in enumerate(pairs)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    train("ddp-probe", tmp_path, corpus)
    for rank in range(2):
        bias = result(tmp_path, f"ddp-probe-rank{rank}")["bias"]
        # Each rank scored its share; the gathered scores are every pair's, as one process scores them alone
        # (the same batches, so the same numbers), and the logged percentages are the one-process ones
        # (Lightning logs them as float32).
        assert bias["scores"] == bias["alone"]
        expected = {f"bias/{k}": pytest.approx(v, rel=1e-7) for k, v in bias["alone_scores"].items()}
        assert bias["logged"] == expected
        assert set(bias["logged"]) == {"bias/gender", "bias/other", "bias/overall"}


@pytest.mark.slow
def test_ddp_keeps_the_teacher_out_and_the_adversary_identical_on_both_ranks(tmp_path: Path, write_corpus) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 40, seed=5)
    teacher = save_teacher(tmp_path, corpus)
    train("ddp-plugins", tmp_path, corpus)
    rank0, rank1 = result(tmp_path, "ddp-plugins-rank0"), result(tmp_path, "ddp-plugins-rank1")
    adversary = [k for k in rank0["state"] if k.startswith("bias_mitigators.0.adversary.")]
    assert adversary and not any(k.startswith("distiller") for k in rank0["state"])  # no teacher in the student
    assert_same_weights(rank0["state"], rank1["state"])  # the adversary (and the student) agree bitwise
    for rank in (rank0, rank1):
        check = rank["plugins"]
        assert check["wrapper"] == "DistributedDataParallel"
        assert check["teacher_in_optimizer"] == 0 and check["teacher_in_wrapped_module"] == 0
        assert check["teacher_training"] is False  # eval mode: no dropout in the teacher
        # Both plugins took part: the adversary had examples to train on, the teacher gave a distillation term.
        assert {"loss/adversarial_debiasing", "metric/adversarial_debiasing/accuracy",
                "loss/logit_distillation"} <= set(check["terms"])
        for name, value in teacher.items():  # frozen: the teacher's weights did not move
            assert torch.equal(check["teacher"][name], value), name
    assert set(rank0["losses"]) == {1, 2, 3, 4}


@pytest.mark.slow
def test_ddp_resume_restores_every_ranks_random_generators(tmp_path: Path, write_corpus) -> None:
    # Dropout and TokenNoise draw random numbers every step, and the step generator is seeded with the rank,
    # so the ranks' generators differ. Only rank 0 writes the checkpoint: it must hold every rank's.
    corpus = write_corpus(tmp_path / "train.txt", 40, seed=5)
    train("ddp-random", tmp_path, corpus)  # 8 steps, a checkpoint after each
    full = [result(tmp_path, f"ddp-random-rank{r}") for r in range(2)]
    ckpt = tmp_path / "steps" / "step=4.ckpt"
    saved = torch.load(ckpt, weights_only=True)["lmforge"]["random_per_rank"]
    assert len(saved) == 2 and not torch.equal(saved[0]["generator"], saved[1]["generator"])
    train("ddp-random", tmp_path, corpus, ckpt=ckpt)
    resumed = [result(tmp_path, f"resumed-rank{r}") for r in range(2)]
    for rank in range(2):
        after = {step: loss for step, loss in full[rank]["losses"].items() if step > 4}
        assert after and resumed[rank]["losses"] == after, rank  # bitwise: the same draws on each rank
        assert_same_weights(resumed[rank]["state"], full[rank]["state"])
