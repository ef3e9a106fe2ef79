"""Energy and carbon emissions of a training run, measured with CodeCarbon in offline mode.

`EnergyMonitor` runs CodeCarbon's ``OfflineEmissionsTracker`` from the start of ``fit`` to its end. The
tracker samples power in a background thread every ``measure_power_secs`` and integrates it into energy;
nothing is sent anywhere and nothing is looked up on the network (the grid's carbon intensity comes from
the country given, from CodeCarbon's bundled tables, or from the value given).

How power is measured depends on the machine, and the monitor says which (`EnergyMonitor.summary`,
``methods``):

* CPU: Intel/AMD RAPL counters (``/sys/class/powercap/intel-rapl``) where they are readable, measured;
  otherwise CodeCarbon's *estimate* from the CPU's load and its TDP (a table of CPU models, or 4 W per
  thread for an unknown one).
* GPU: NVIDIA's NVML (``nvidia-ml-py``), measured; AMD GPUs through AMD SMI.
* RAM: always an estimate (CodeCarbon's model of DIMM power).

Logged to every logger of the trainer at its logging steps and at the end: ``energy/kwh`` and
``energy/co2_kg`` (totals so far), and per device kind ``energy/<kind>_kwh`` and ``energy/<kind>_w``
(mean power) for ``cpu``, ``gpu`` and ``ram``. During training these are the local process's (or
machine's) figures: the last sample, brought up to the logging step at the power it measured, so that
``lmforge plot`` can read the energy spent to reach each validation loss; at the end they are summed over
all processes (or machines) of the run. `EnergyMonitor.summary` holds the final figures; they are added to
the run's record (``energy`` in ``hparams.yaml`` and the W&B config) and `energy_summary` words them for
the end-of-run summary. A resumed run adds the energy saved in its checkpoint (with several processes, as
rank 0 measured it, so an undercount).

With ``tracking_mode="process"`` (the default) every process measures itself and its children (data
loader workers) and, on a GPU, its own device; with ``"machine"`` one process per machine measures the
whole machine, other programs' load included. Nothing is written outside the run's log directory, and
only there when ``save_csv`` asks for CodeCarbon's ``emissions.csv``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback

from lmforge.runtime.observe.run_config import add_to_record

log = logging.getLogger(__name__)

DEVICE_KINDS = ("cpu", "gpu", "ram")
#: Figures summed over processes (energy, emissions, power: each process measures its own share).
_SUMMED = ("kwh", "co2_kg", *(f"{k}_kwh" for k in DEVICE_KINDS), *(f"{k}_w" for k in DEVICE_KINDS))


class _Latest:
    """A CodeCarbon output handler keeping the latest cumulative figures and when they came (called from the
    tracker's thread)."""

    def __init__(self) -> None:
        self.data: Any = None
        self.at = 0.0  # time.monotonic() of the sample
        self.lock = threading.Lock()

    # CodeCarbon calls these on its output handlers (codecarbon.output_methods.base_output.BaseOutput).
    def out(self, total: Any, delta: Any) -> None:
        with self.lock:
            self.data, self.at = total, time.monotonic()

    live_out = out

    def task_out(self, data: Any, experiment_name: str) -> None:
        pass

    def exit(self) -> None:
        pass


class EnergyMonitor(Callback):
    """Measures the run's energy (kWh), emissions (kg CO2-eq) and power per device kind with CodeCarbon.

    Args:
        country_iso_code: The country whose electricity mix sets the carbon intensity, as a 3-letter ISO
            code (``FRA``, ``USA``, ``DEU``; CodeCarbon's ``global_energy_mix.json`` lists them). None and
            no ``carbon_intensity``: the world average of CodeCarbon's data (475 g/kWh).
        region: A region of the country with its own mix (US states, Canadian provinces:
            ``california``), optional.
        carbon_intensity: The grid's carbon intensity in g CO2-eq per kWh; overrides the country.
        tracking_mode: ``process``: each process of the run measures itself, its children and its own
            GPU; ``machine``: one process per machine measures the whole machine.
        measure_power_secs: Seconds between power samples of the background thread.
        save_csv: Also write CodeCarbon's ``emissions.csv`` into the run's log directory.
        log_level: CodeCarbon's own log level (``debug`` ... ``critical``); its warnings about unknown
            CPUs are summed up by ``methods`` in the summary.
    """

    def __init__(self, country_iso_code: str | None = None, region: str | None = None,
                 carbon_intensity: float | None = None, tracking_mode: Literal["process", "machine"] = "process",
                 measure_power_secs: float = 10.0, save_csv: bool = False,
                 log_level: Literal["debug", "info", "warning", "error", "critical"] = "error") -> None:
        self.country_iso_code = country_iso_code.upper() if country_iso_code else None
        self.region = region.lower() if region else None
        self.carbon_intensity = carbon_intensity
        self.tracking_mode = tracking_mode
        self.measure_power_secs = measure_power_secs
        self.save_csv = save_csv
        self.log_level = log_level
        self._check_options()
        #: Final figures of the run once fit ends (see `summary`); None before.
        self.summary: dict[str, Any] | None = None
        self._tracker: Any = None
        self._latest = _Latest()
        self._log_dir: str | None = None
        self._methods: dict[str, str] = {}
        self._resumed = dict.fromkeys(_SUMMED[:5], 0.0)  # energy and emissions of earlier segments
        self._logged: dict[str, float] = {}  # the last figures logged while training

    def _check_options(self) -> None:
        if self.tracking_mode not in ("process", "machine"):
            raise ValueError(f"EnergyMonitor: tracking_mode must be 'process' or 'machine', got {self.tracking_mode!r}.")
        if self.measure_power_secs <= 0:
            raise ValueError(f"EnergyMonitor: measure_power_secs must be > 0, got {self.measure_power_secs}.")
        if self.carbon_intensity is not None and self.carbon_intensity < 0:
            raise ValueError(f"EnergyMonitor: carbon_intensity must be >= 0 g CO2-eq/kWh, got {self.carbon_intensity}.")
        from codecarbon.input import DataSource

        if self.country_iso_code is not None:
            mixes = DataSource().get_global_energy_mix_data()
            if self.country_iso_code not in mixes:
                raise ValueError(f"EnergyMonitor: country_iso_code must be a 3-letter ISO code that CodeCarbon has data "
                                 f"for, got {self.country_iso_code!r}. Examples: FRA, USA, DEU, GBR; or set "
                                 "carbon_intensity (g CO2-eq/kWh) instead.")
            if self.region is not None:
                try:
                    regions = DataSource().get_country_emissions_data(self.country_iso_code.lower())
                except Exception:  # CodeCarbon has no regional data for this country
                    regions = {}
                if self.region not in regions:
                    raise ValueError(f"EnergyMonitor: region must be one that CodeCarbon has data for in "
                                     f"{self.country_iso_code}, got {self.region!r}. Known: "
                                     f"{', '.join(sorted(regions)[:8]) or 'none for this country'}; or leave it out.")
        elif self.region is not None:
            raise ValueError("EnergyMonitor: region needs country_iso_code; set both, or neither.")

    def grid(self) -> str:
        """Where the carbon intensity comes from, in words."""
        if self.carbon_intensity is not None:
            return f"{self.carbon_intensity:g} g CO2-eq/kWh (given)"
        if self.country_iso_code is not None:
            where = f"{self.country_iso_code}/{self.region}" if self.region else self.country_iso_code
            return f"electricity mix of {where} (CodeCarbon's data)"
        return f"world average, {_world_average():g} g CO2-eq/kWh (CodeCarbon's data)"

    def _tracks(self, trainer: Trainer) -> bool:
        return self.tracking_mode == "process" or trainer.local_rank == 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._log_dir = trainer.log_dir  # a collective: every rank asks
        if self._tracks(trainer):
            self._tracker = self._make_tracker(pl_module.device)

    def _make_tracker(self, device: torch.device) -> Any:
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.output_methods.base_output import OutputMethod

        gpu_ids: list[int] | None = None
        if self.tracking_mode == "process":  # only this process's device, so that the sum over processes is right
            gpu_ids = [device.index or 0] if device.type == "cuda" else []
        intensity = self.carbon_intensity
        if intensity is None and self.country_iso_code is None:
            intensity = _world_average()
        kwargs: dict[str, Any] = {}
        if self.country_iso_code is not None:
            kwargs["country_iso_code"] = self.country_iso_code
            if self.region is not None:
                kwargs["region"] = self.region
        if intensity is not None:
            kwargs["force_carbon_intensity_g_co2e_kwh"] = intensity
        # CodeCarbon applies log_level once the tracker is set up; its notes from before that are noise here.
        logging.getLogger("codecarbon").setLevel(self.log_level.upper())
        # Every setting is passed, so that a user's ~/.codecarbon.config or CODECARBON_* variables cannot send
        # data anywhere or write files outside the run directory.
        return OfflineEmissionsTracker(
            project_name="lmforge", measure_power_secs=self.measure_power_secs, api_call_interval=1,
            output_methods=[OutputMethod.CSV] if self.save_csv else [], output_handlers=[self._latest],
            output_dir=self._log_dir or ".", output_file="emissions.csv", emissions_endpoint=None,
            gpu_ids=gpu_ids, tracking_mode=self.tracking_mode, log_level=self.log_level,
            allow_multiple_runs=True, electricitymaps_api_token=None, **kwargs)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._tracker is not None:
            self._tracker.start()
            self._methods = _methods(self._tracker)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_rank != 0 or trainer.global_step % max(trainer.log_every_n_steps, 1):
            return
        with self._latest.lock:
            data, at = self._latest.data, self._latest.at
        if data is None:
            return
        figures = up_to_now(self._figures(data), time.monotonic() - at)
        # Totals never fall: a sample after a drop in power can land below the last estimate brought up to date.
        for key in _SUMMED[:5]:
            figures[key] = max(figures[key], self._logged.get(key, 0.0))
        self._logged = figures
        _log(trainer, figures, trainer.global_step)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # At the end of training rather than of fit: the strategy is still set up for the reduction below.
        local = dict.fromkeys(_SUMMED, 0.0)
        if self._tracker is not None:
            self._tracker.stop()
            data = self._tracker.final_emissions_data
            if data is not None:
                local = self._figures(data, resumed=False)
            self._tracker = None
        # Every rank takes part in the reduction; ranks that track nothing add zeros.
        totals = trainer.strategy.reduce(torch.tensor([local[k] for k in _SUMMED], dtype=torch.float64,
                                                      device=pl_module.device), reduce_op="sum")
        figures = dict(zip(_SUMMED, totals.cpu().tolist()))
        for key, value in self._resumed.items():  # earlier segments of a resumed run, counted once
            figures[key] += value
        self.summary = {**figures, "methods": dict(self._methods), "grid": self.grid(),
                        "tracking_mode": self.tracking_mode}
        _log(trainer, figures, trainer.global_step)
        add_to_record(trainer, "energy", self.summary)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self._tracker is not None:  # stop the background thread
            self._tracker.stop()
            self._tracker = None

    def _figures(self, data: Any, resumed: bool = True) -> dict[str, float]:
        """``energy/...`` figures from CodeCarbon's cumulative ``EmissionsData``; with ``resumed``, the energy and
        emissions of earlier segments of the run (from a checkpoint) added."""
        figures = {"kwh": data.energy_consumed, "co2_kg": data.emissions}
        for kind in DEVICE_KINDS:
            figures[f"{kind}_kwh"] = getattr(data, f"{kind}_energy")
        for kind in DEVICE_KINDS:
            figures[f"{kind}_w"] = getattr(data, f"{kind}_power")
        if resumed:
            for key, value in self._resumed.items():
                figures[key] += value
        return figures

    def state_dict(self) -> dict[str, Any]:
        # The checkpoint keeps rank 0's figures: in a run of several processes, a resumed segment's total
        # counts earlier segments as rank 0 measured them.
        if self.summary is not None:
            return {k: self.summary[k] for k in self._resumed}
        with self._latest.lock:
            data = self._latest.data
        figures = self._figures(data) if data is not None else dict(self._resumed)
        return {k: figures[k] for k in self._resumed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed = {k: float(state_dict.get(k, 0.0)) for k in self._resumed}


def up_to_now(figures: dict[str, float], seconds: float) -> dict[str, float]:
    """``figures`` of a sample taken ``seconds`` ago, brought up to now at the power it measured: each kind's
    energy grows by its power times the time, and the emissions in proportion to the energy."""
    out = dict(figures)
    added = {kind: figures[f"{kind}_w"] * max(seconds, 0.0) / 3.6e6 for kind in DEVICE_KINDS}  # W * s -> kWh
    for kind, kwh in added.items():
        out[f"{kind}_kwh"] += kwh
    out["kwh"] = figures["kwh"] + sum(added.values())
    if figures["kwh"] > 0:
        out["co2_kg"] = figures["co2_kg"] * out["kwh"] / figures["kwh"]
    return out


def energy_summary(trainer: Trainer | None) -> str | None:
    """The end-of-run summary's lines about energy, from the trainer's `EnergyMonitor` (None without one, or
    before the end of training)."""
    monitor = next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, EnergyMonitor)), None)
    summary = monitor.summary if monitor is not None else None
    if summary is None:
        return None
    kinds = [k for k in DEVICE_KINDS if summary[f"{k}_kwh"] > 0]
    lines = [f"  energy: {summary['kwh']:.3g} kWh, {summary['co2_kg'] * 1000:.3g} g CO2-eq (grid: {summary['grid']})"]
    lines += [f"    {k}: {summary[f'{k}_kwh']:.3g} kWh, {summary[f'{k}_w']:.3g} W mean; "
              f"{summary['methods'].get(k, 'unknown method')}" for k in kinds]
    return "\n".join(lines)


def _log(trainer: Trainer, figures: dict[str, float], step: int) -> None:
    metrics = {f"energy/{k}": v for k, v in figures.items()}
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def _methods(tracker: Any) -> dict[str, str]:
    """How CodeCarbon measures each device kind on this machine, in words."""
    from codecarbon.external.hardware import CPU, GPU
    from codecarbon.external.ram import RAM

    methods = {"gpu": "none tracked"}
    for hardware in getattr(tracker, "_hardware", []):
        if isinstance(hardware, CPU):
            mode = getattr(hardware, "_mode", "")
            methods["cpu"] = {
                "intel_rapl": "measured: RAPL energy counters",
                "windows_emi": "measured: Windows Energy Meter Interface",
                "intel_power_gadget": "measured: Intel Power Gadget",
                "apple_powermetrics": "measured: powermetrics",
                "cpu_load": f"estimate: CPU load x TDP ({getattr(hardware, '_tdp', '?')} W)",
                "constant": f"estimate: constant TDP ({getattr(hardware, '_tdp', '?')} W)",
            }.get(mode, f"CodeCarbon mode {mode!r}")
        elif isinstance(hardware, GPU):
            methods["gpu"] = "measured: NVML" if torch.version.hip is None else "measured: AMD SMI"
        elif isinstance(hardware, RAM):
            methods["ram"] = "estimate: CodeCarbon's RAM power model"
        else:
            methods[type(hardware).__name__.lower()] = "measured: CodeCarbon " + type(hardware).__name__
    return methods


def _world_average() -> float:
    from codecarbon.input import DataSource

    return float(DataSource().get_carbon_intensity_per_source_data()["world_average"])
