"""EnergyMonitor: CodeCarbon offline on a short Lightning run of a tiny model on CPU."""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lmforge.runtime.observe.energy import EnergyMonitor, energy_summary, up_to_now

STEPS = 40


class Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(64, 64)

    def training_step(self, batch, batch_idx):
        time.sleep(0.02)  # a run long enough for a few power samples
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(tmp_path: Path, monitor: EnergyMonitor) -> Trainer:
    data = DataLoader(TensorDataset(torch.randn(STEPS * 4, 64, generator=torch.Generator().manual_seed(0))),
                      batch_size=4)
    trainer = Trainer(max_steps=STEPS, accelerator="cpu", devices=1, callbacks=[monitor], log_every_n_steps=5,
                      logger=CSVLogger(tmp_path, name="run"), enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Tiny(), data)
    return trainer


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory and home of their own, to see that nothing is written outside the run directory."""
    for name in ("cwd", "home"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    return tmp_path


def rows(trainer: Trainer) -> list[dict[str, str]]:
    with open(Path(trainer.log_dir) / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("energy/kwh")]


def test_energy_and_emissions_are_logged_and_summed_up(isolated: Path) -> None:
    lock = Path(tempfile.gettempdir()) / ".codecarbon.lock"
    had_lock = lock.exists()
    monitor = EnergyMonitor(carbon_intensity=100.0, measure_power_secs=0.25)
    trainer = fit(isolated, monitor)
    summary = monitor.summary
    assert summary is not None and summary["kwh"] > 0
    # kg CO2-eq = kWh x 100 g/kWh / 1000; the total is the sum of the device kinds.
    assert summary["co2_kg"] == pytest.approx(summary["kwh"] * 0.1, rel=1e-9)
    assert summary["kwh"] == pytest.approx(summary["cpu_kwh"] + summary["gpu_kwh"] + summary["ram_kwh"], rel=1e-9)
    assert summary["gpu_kwh"] == 0 and summary["cpu_w"] > 0 and summary["ram_w"] > 0
    rapl = Path("/sys/class/powercap/intel-rapl").exists()
    assert summary["methods"]["cpu"].startswith("measured: RAPL" if rapl else "estimate: ")
    assert summary["methods"]["ram"].startswith("estimate")
    assert summary["grid"] == "100 g CO2-eq/kWh (given)"
    # Logged at logging steps while training, growing, and once at the end: the final measurement. (The figures
    # while training are brought up to the step at the last measured power, so in a run as short as this one,
    # where power swings, the final measurement can land a little below the last of them.)
    logged = rows(trainer)
    assert len(logged) >= 3
    kwh = [float(r["energy/kwh"]) for r in logged]
    assert kwh[:-1] == sorted(kwh[:-1]) and kwh[-1] == pytest.approx(summary["kwh"])
    assert kwh[-1] > 0.8 * kwh[-2]
    assert {"energy/co2_kg", "energy/cpu_kwh", "energy/gpu_w", "energy/ram_w"} <= set(logged[-1])
    # The final figures join the run's record (hparams.yaml here, the W&B config with W&B) and the summary.
    import yaml

    record = yaml.safe_load((Path(trainer.log_dir) / "hparams.yaml").read_text())
    assert record["energy"] == summary
    text = energy_summary(trainer)
    assert text.splitlines()[0] == (f"  energy: {summary['kwh']:.3g} kWh, {summary['co2_kg'] * 1000:.3g} g CO2-eq "
                                    "(grid: 100 g CO2-eq/kWh (given))")
    assert f"cpu: {summary['cpu_kwh']:.3g} kWh, {summary['cpu_w']:.3g} W mean; {summary['methods']['cpu']}" in text
    # Nothing outside the run directory: no emissions.csv by default, no lock file, no cache.
    assert list((isolated / "cwd").iterdir()) == [] and list((isolated / "home").iterdir()) == []
    assert not (Path(trainer.log_dir) / "emissions.csv").exists()
    assert lock.exists() == had_lock


def test_country_mix_and_csv_in_the_run_directory(isolated: Path) -> None:
    from codecarbon.input import DataSource

    monitor = EnergyMonitor(country_iso_code="fra", measure_power_secs=0.25, save_csv=True)
    trainer = fit(isolated, monitor)
    france = DataSource().get_global_energy_mix_data()["FRA"]["carbon_intensity"]  # g/kWh
    assert monitor.summary["co2_kg"] * 1000 / monitor.summary["kwh"] == pytest.approx(france, rel=1e-6)
    assert monitor.grid() == "electricity mix of FRA (CodeCarbon's data)"
    assert (Path(trainer.log_dir) / "emissions.csv").is_file()
    assert list((isolated / "cwd").iterdir()) == []


def test_world_average_when_no_grid_is_given(isolated: Path) -> None:
    from codecarbon.input import DataSource

    monitor = EnergyMonitor(measure_power_secs=0.25)
    fit(isolated, monitor)
    world = DataSource().get_carbon_intensity_per_source_data()["world_average"]
    assert monitor.summary["co2_kg"] * 1000 / monitor.summary["kwh"] == pytest.approx(world)
    assert monitor.summary["grid"] == f"world average, {world:g} g CO2-eq/kWh (CodeCarbon's data)"


def test_a_resumed_run_adds_the_saved_energy(isolated: Path) -> None:
    monitor = EnergyMonitor(carbon_intensity=100.0, measure_power_secs=0.25)
    monitor.load_state_dict({"kwh": 1.0, "co2_kg": 0.1, "cpu_kwh": 0.5, "gpu_kwh": 0.0, "ram_kwh": 0.5})
    fit(isolated, monitor)
    summary = monitor.summary
    assert 1.0 < summary["kwh"] < 1.001 and 0.1 < summary["co2_kg"] < 0.1001
    assert summary["kwh"] == pytest.approx(summary["cpu_kwh"] + summary["gpu_kwh"] + summary["ram_kwh"], rel=1e-9)
    assert monitor.state_dict() == {k: summary[k] for k in ("kwh", "co2_kg", "cpu_kwh", "gpu_kwh", "ram_kwh")}


def test_bad_options_are_explained() -> None:
    with pytest.raises(ValueError, match="country_iso_code must be a 3-letter ISO code .* got 'XYZ'"):
        EnergyMonitor(country_iso_code="XYZ")
    with pytest.raises(ValueError, match="region must be one that CodeCarbon has data for in USA, got 'atlantis'"):
        EnergyMonitor(country_iso_code="USA", region="atlantis")
    with pytest.raises(ValueError, match="region needs country_iso_code"):
        EnergyMonitor(region="california")
    with pytest.raises(ValueError, match="carbon_intensity must be >= 0 g CO2-eq/kWh, got -1"):
        EnergyMonitor(carbon_intensity=-1)
    with pytest.raises(ValueError, match="tracking_mode must be 'process' or 'machine', got 'node'"):
        EnergyMonitor(tracking_mode="node")  # type: ignore[arg-type]
    EnergyMonitor(country_iso_code="USA", region="california")  # a known region passes


def test_figures_brought_up_to_the_logging_step() -> None:
    sample = {"kwh": 0.003, "co2_kg": 0.0006, "cpu_kwh": 0.002, "gpu_kwh": 0.0, "ram_kwh": 0.001,
              "cpu_w": 36.0, "gpu_w": 0.0, "ram_w": 10.0}
    # 100 s later at 36 W and 10 W: + 0.001 kWh and + 0.000277... kWh; the emissions grow with the energy.
    now = up_to_now(sample, 100.0)
    assert now["cpu_kwh"] == pytest.approx(0.003) and now["ram_kwh"] == pytest.approx(0.001 + 1000 / 3.6e6)
    assert now["kwh"] == pytest.approx(0.003 + 4600 / 3.6e6)
    assert now["co2_kg"] == pytest.approx(0.0006 * now["kwh"] / 0.003)
    assert up_to_now(sample, 0.0) == sample and sample["kwh"] == 0.003  # the sample itself is left alone


def test_no_summary_without_a_monitor_or_before_the_end() -> None:
    from types import SimpleNamespace

    assert energy_summary(None) is None
    assert energy_summary(SimpleNamespace(callbacks=[EnergyMonitor(carbon_intensity=1.0)])) is None
