"""The life of a run, in one working directory, with the quickstart recipe.

    lmforge fit --config quickstart ...                         (preempted: SIGTERM once a checkpoint exists)
    lmforge fit --config quickstart ... --ckpt_path last        (continues the same run and its steps)
    lmforge validate --config quickstart ... --ckpt_path runs/quickstart/version_0/checkpoints/best-step=N.ckpt
    lmforge test --config quickstart ... --ckpt_path ...        (no test split: says it scores the validation split)
    lmforge test --config quickstart ... --data.init_args.test test.txt --ckpt_path ...
    lmforge fit --config quickstart ...                         (a new run: version_1, whatever was validated)
    lmforge export runs/quickstart/version_0/checkpoints/last.ckpt exported/
    transformers.pipeline("text-generation", model="exported")   (continues the prompt)

The fixtures run the steps in order, once for the module; each test checks one thing a user relies on.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from journey_kit import (LMFORGE, PROBE, QUICK_LIMIT, SINGLE_LIMIT, Journeys, Result, bundled_text, console_metric,
                         load_checkpoint, metric_values, read_metrics, short_args, versions)

MAX_STEPS = 12
#: quickstart shortened, to MAX_STEPS steps with a validation (and a checkpoint) every 3.
FIT = ["--config", "quickstart", *short_args("quickstart")]
FIT[FIT.index("--trainer.max_steps") + 1] = str(MAX_STEPS)
EVAL = ["--config", "quickstart", *short_args("quickstart")]

REQUEUE_EXIT_CODE = 143  # 128 + SIGTERM, the code a job scheduler reads as "preempted: requeue"

RESUME_NEW_VERSION = (
    "`fit --ckpt_path last` is resolved by Lightning in the new run's own checkpoint directory "
    "(lightning/pytorch/trainer/connectors/checkpoint_connector.py:191, 'there is no last checkpoint available'): "
    "lmforge neither finds the newest run of the recipe nor points the logger back at it (lmforge/core/cli.py, "
    "before_instantiate_classes), so the run starts again from step 0 in version_1")
EVAL_VERSIONS = ("`validate` and `test` each create a new runs/quickstart/version_N with the recipe's CSVLogger "
                 "(lmforge/core/cli.py:269-277: before_instantiate_classes keeps the recipe's logger for every subcommand)")


def _path(run_dir: Path, pattern: str) -> Path:
    found = sorted((run_dir / "checkpoints").glob(pattern))
    assert found, f"no {pattern} in {run_dir}/checkpoints"
    return found[-1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("life")


@pytest.fixture(scope="module")
def run_dir(workdir: Path) -> Path:
    return workdir / "runs" / "quickstart" / "version_0"


@pytest.fixture(scope="module")
def preempted(journeys: Journeys, workdir: Path, run_dir: Path) -> tuple[Result, int]:
    """The fit, slowed down by the probe, sent SIGTERM once its first checkpoint exists; and the step it
    reached (its last.ckpt's global_step)."""
    started = journeys.start([LMFORGE, "fit", *FIT, PROBE], workdir, env={"JOURNEY_STEP_SLEEP": "0.4"})
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + SINGLE_LIMIT
    try:
        while not last.exists():
            if started.proc.poll() is not None:
                pytest.fail(started.result().explain("the run ended before its first checkpoint"), pytrace=False)
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        started.proc.send_signal(signal.SIGTERM)
        result = started.wait(SINGLE_LIMIT)
    finally:
        started.kill()
    return result, int(load_checkpoint(last)["global_step"])


@pytest.fixture(scope="module")
def resumed(preempted, journeys: Journeys, workdir: Path) -> Result:
    return journeys.lmforge(["fit", *FIT, "--ckpt_path", "last", PROBE], workdir)


@pytest.fixture(scope="module")
def best(resumed: Result, run_dir: Path) -> tuple[Path, float]:
    """The run's best checkpoint and the val/loss the run logged at its step."""
    path = _path(run_dir, "best-*.ckpt")
    step = int(load_checkpoint(path)["global_step"])
    logged = [value for s, value in metric_values(read_metrics(run_dir), "val/loss") if s == step - 1 or s == step]
    assert logged, f"{run_dir}/metrics.csv has no val/loss at step {step}"
    return path, logged[-1]


@pytest.fixture(scope="module")
def validated(best, journeys: Journeys, workdir: Path) -> Result:
    return journeys.lmforge(["validate", *EVAL, "--ckpt_path", str(best[0])], workdir)


@pytest.fixture(scope="module")
def tested(validated, best, journeys: Journeys, workdir: Path) -> Result:
    return journeys.lmforge(["test", *EVAL, "--ckpt_path", str(best[0])], workdir)


@pytest.fixture(scope="module")
def test_file(workdir: Path) -> Path:
    """A test split unlike the validation split: other text than the bundled corpus."""
    path = workdir / "test.txt"
    path.write_text("\n".join(bundled_text("bias/skewed_occupations_val.txt")[:40]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tested_on_split(tested, best, test_file: Path, journeys: Journeys, workdir: Path) -> Result:
    return journeys.lmforge(["test", *EVAL, "--data.init_args.test", test_file.name, "--trainer.limit_test_batches",
                             "1.0", "--ckpt_path", str(best[0])], workdir)


@pytest.fixture(scope="module")
def refit(tested_on_split, journeys: Journeys, workdir: Path) -> tuple[Result, list[str]]:
    """A new training run after the validations and tests, and the version directories it created."""
    before = set(versions(workdir / "runs" / "quickstart"))
    args = ["fit", "--config", "quickstart", *short_args("quickstart")]
    args[args.index("--trainer.max_steps") + 1] = "2"
    result = journeys.lmforge(args, workdir)
    return result, sorted(set(versions(workdir / "runs" / "quickstart")) - before)


@pytest.fixture(scope="module")
def exported(resumed, journeys: Journeys, workdir: Path, run_dir: Path) -> Path:
    journeys.lmforge(["export", str(run_dir / "checkpoints" / "last.ckpt"), "exported"], workdir,
                     limit=QUICK_LIMIT).expect_ok()
    return workdir / "exported"


# -- preemption and resuming ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_preempted_run_saves_a_checkpoint_where_it_stopped(preempted) -> None:
    result, step = preempted
    assert 0 < step < MAX_STEPS, result.explain(f"last.ckpt is at step {step}")
    assert "SIGTERM" in result.output


@pytest.mark.slow
def test_preempted_run_exits_with_the_requeue_code(preempted) -> None:
    result, _ = preempted
    assert result.returncode == REQUEUE_EXIT_CODE, result.explain(f"expected exit code {REQUEUE_EXIT_CODE}")


@pytest.mark.slow
def test_fit_ckpt_path_last_continues_the_same_run_and_its_steps(preempted, resumed: Result, workdir: Path,
                                                                 run_dir: Path) -> None:
    _, stopped_at = preempted
    resumed.expect_ok()
    assert versions(workdir / "runs" / "quickstart") == ["version_0"], "the resumed run wrote a new version"
    assert resumed.probe("start")["global_step"] == stopped_at, "the resumed run did not start where it stopped"
    assert resumed.probe("end")["global_step"] == MAX_STEPS
    assert int(load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"]) == MAX_STEPS
    steps = [s for s, _ in metric_values(read_metrics(run_dir), "loss/total")]
    assert max(steps) >= MAX_STEPS - 2 and min(steps) < stopped_at, "version_0's metrics do not span both parts"


# -- validate, test -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_validate_reproduces_the_logged_val_loss(validated: Result, best) -> None:
    validated.expect_ok()
    assert console_metric(validated.output, "val/loss") == pytest.approx(best[1], rel=1e-5)


@pytest.mark.slow
def test_validate_and_test_print_no_throughput_warning(validated: Result, tested: Result) -> None:
    for result in (validated, tested):
        assert "flops_per_batch" not in result.output, result.explain("ThroughputMonitor's flops warning")


@pytest.mark.slow
def test_test_without_a_test_split_says_it_scores_the_validation_split(tested: Result) -> None:
    tested.expect_ok()
    console_metric(tested.output, "test/loss")
    assert "validation split" in tested.output.lower(), tested.explain("no word of the validation split")


@pytest.mark.slow
def test_test_scores_the_given_test_split(tested_on_split: Result, best, test_file: Path, journeys: Journeys,
                                          workdir: Path) -> None:
    tested_on_split.expect_ok()
    test_loss = console_metric(tested_on_split.output, "test/loss")
    # Reference: the same file scored as the validation split.
    reference = journeys.lmforge(["validate", *EVAL, "--data.init_args.val", test_file.name,
                                  "--trainer.limit_val_batches", "1.0", "--ckpt_path", str(best[0])], workdir)
    assert test_loss == pytest.approx(console_metric(reference.expect_ok().output, "val/loss"), rel=1e-5)
    assert test_loss != pytest.approx(best[1], rel=1e-3), "test/loss equals the validation split's val/loss"


@pytest.mark.slow
def test_validate_and_test_do_not_shift_the_numbering_of_training_runs(refit) -> None:
    result, created = refit
    result.expect_ok()
    assert created == ["version_1"], f"the second training run wrote {created}"


# -- export and use ----------------------------------------------------------------------------------------------


PROMPT = "The baker opened the"


@pytest.mark.slow
def test_exported_causal_lm_continues_a_prompt_in_a_text_generation_pipeline(exported: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(exported, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(exported, local_files_only=True).eval()
    prompt_ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(PROMPT))
    assert tokenizer(PROMPT)["input_ids"] == prompt_ids, "the tokenizer adds special tokens to a prompt"
    # Reference: greedy decoding by hand from the prompt's own tokens.
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    expected = PROMPT + tokenizer.decode(ids[len(prompt_ids):], skip_special_tokens=True)
    generator = pipeline("text-generation", model=str(exported), device="cpu")
    out = generator(PROMPT, max_new_tokens=6, do_sample=False)[0]["generated_text"]
    assert out.startswith(PROMPT) and not out.startswith(PROMPT + PROMPT.split()[0]), out
    assert out == expected
