"""Training loop of the neural-field auto-decoder: codes and network jointly, with logs, EMA and resume.

Every step sees every training shape (`points_per_shape` samples each, drawn from its fixed
bank), so every code gets a gradient at every step and dense Adam is exact for the codes
(DeepSDF batches shapes; with a few hundred shapes one step over all of them is cheap).
The schedule is a warmup then a cosine decay over progress = max(step / steps, elapsed / budget),
so a run ends cleanly at whichever limit comes first. Each step's batch indices are drawn on the
CPU from that step's own generator and then moved, so a run draws the same points on any device,
and the saved states hold CPU tensors, so a run started on a GPU resumes on a CPU.

The resume state is one atomic safetensors file: raw weights (net.*), EMA weights (ema.*), Adam
moments (opt.*, `runtime.optim_state`) and the step and elapsed seconds as JSON in its metadata.

Under torchrun (`runtime.distributed`) each rank takes a contiguous share of the shapes of every
step (the same draws as one process), DDP averages the gradients, rank 0 alone saves and logs, and
every rank resumes from the same saved state.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file

from weightspace.data.dataset import manifest_hash
from weightspace.data.families import FAMILY_NAMES
from weightspace.generators.neural_field.config import FieldConfig, TrainConfig
from weightspace.generators.neural_field.losses import clamped_l1, code_prior
from weightspace.generators.neural_field.model import NeuralFieldGenerator
from weightspace.generators.neural_field.samples import build_bank, read_manifest
from weightspace.runtime.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint, load_state, refuse_non_finite, state_metadata
from weightspace.runtime.config import check_config, config_from_dict, config_to_dict
from weightspace.runtime.distributed import (
    STOPPED_NOTE,
    Stopped,
    StopRequests,
    barrier,
    data_parallel,
    from_main,
    init_ranks,
    mean_over_ranks,
    same_settings,
    saved_state,
    shard,
    share,
)
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_path, atomic_write_json, file_digest, parse_json
from weightspace.runtime.optim_state import adam_tensors, restore_adam
from weightspace.runtime.progress import progress_enabled
from weightspace.runtime.safe_load import load_torch_object
from weightspace.runtime.seeding import item_generator
from weightspace.runtime.train_folder import TrainLock, changed, check_out, check_resume, clear_run, trim_log

STATE_NAME = "train_state.safetensors"  # weights, EMA, Adam moments; step and elapsed in its metadata
OLD_STATE_NAME = "trainer_state.pt"  # the torch.save pickle of runs started before STATE_NAME, read only to resume them
LOG_NAME = "loss_log.jsonl"
RECORD_NAME = "training_record.json"
RUN_FILES = (STATE_NAME, OLD_STATE_NAME, WEIGHTS_NAME, CONFIG_NAME, LOG_NAME, RECORD_NAME)  # what --fresh deletes


def _lr_factor(step: int, progress: float, warmup: int) -> float:
    warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _save(out: Path, gen: NeuralFieldGenerator, ema: dict | None, opt, step: int, elapsed: float,
          labels: torch.Tensor, extra: dict[str, Any]) -> None:
    """The trainer state for resume, then the (EMA) weights with refitted code priors as the checkpoint.

    In that order, a checkpoint that reports step N always has a resume state of step N or later
    beside it (a resume reads the state alone); the other order let a kill between the two writes
    leave a first checkpoint with no state to resume from.
    """
    state = {f"net.{k}": v for k, v in gen.net.state_dict().items()}
    state.update({f"ema.{k}": v for k, v in (ema or {}).items()})
    state.update(adam_tensors(opt, gen.net))
    counters = json.dumps({"step": step, "elapsed": elapsed})  # a float's repr reads back to the same float
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    refuse_non_finite(state, out)  # before either write: a diverged run keeps its last good state and checkpoint
    with atomic_path(out / STATE_NAME) as tmp:
        save_file(state, str(tmp), metadata={"train_state": counters})
    (out / OLD_STATE_NAME).unlink(missing_ok=True)  # a resumed old run's pickle, superseded by the file above
    snapshot = NeuralFieldGenerator(gen.cfg)  # on the CPU (load_state_dict copies across devices): the checkpoint holds CPU tensors
    snapshot.net.load_state_dict(ema if ema is not None else gen.net.state_dict())
    snapshot.fit_code_priors(labels.clamp(min=0) if (labels >= 0).all() else None)
    snapshot.save(out, extra_config={**extra, "train_state": {"step": step, "elapsed_s": round(elapsed, 1)}})


def _load_resume_state(out: Path, net: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict | None, int, float]:
    """Load the run saved in `out` into `net` and `opt`; returns (its EMA weights, or None without them, step, elapsed s)."""
    path = out / STATE_NAME
    if not path.is_file():
        # a run started before the resume state was safetensors: its trainer_state.pt is read through
        # the vetted reader (checked for foreign globals, then torch.load(weights_only=True))
        state = load_torch_object(out / OLD_STATE_NAME)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["optimizer"])
        return state.get("ema"), int(state["step"]), float(state["elapsed"])
    tensors = load_state(path)
    counters = parse_json(state_metadata(path).get("train_state", "null"), f"{path}: metadata train_state")
    if not isinstance(counters, dict) or not {"step", "elapsed"} <= set(counters):
        raise InputError(f"{path}: its metadata has no train_state with step and elapsed; the resume state is damaged, "
                         "train into a new --out")
    try:
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    except RuntimeError as e:
        raise InputError(f"{path}: weights do not match the model ({str(e).splitlines()[0][:200]})") from None
    restore_adam(opt, net, tensors, path)
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    return ema or None, int(counters["step"]), float(counters["elapsed"])


def train_neural_field(data_dir: str | Path, out_dir: str | Path, **kwargs: Any) -> NeuralFieldGenerator:
    """Train on the `train` split of `data_dir`; write checkpoint, trainer state and loss log to `out_dir`.

    Keywords as `_train_neural_field`'s. `out_dir` is checked first (a file, the data folder or a folder
    of something else is refused) and held by this run alone while it trains (`runtime.train_folder`).
    """
    check_out(Path(out_dir), Path(data_dir), "neural-field", (STATE_NAME, OLD_STATE_NAME), fresh=not kwargs.get("resume", True))
    with TrainLock(Path(out_dir)):
        return _train_neural_field(data_dir, out_dir, **kwargs)


def _train_neural_field(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    model_cfg: FieldConfig | None = None,
    train_cfg: TrainConfig,
    command: str = "",
    resume: bool = True,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> NeuralFieldGenerator:
    """Train on the `train` split of `data_dir`; write checkpoint, trainer state and loss log to `out_dir`.

    model_cfg : the network (None: the defaults, or on resume the run's own). A resume keeps its
        architecture (ARCHITECTURE fields) and its data (the manifest's hash); either changed is refused.
    resume : False (`--fresh`) starts over: the earlier run's files in `out_dir` (RUN_FILES) are deleted
        once the data and settings have passed their checks (a refused run deletes nothing), other files stay.
    device : auto (CUDA when present) | cpu | cuda[:N]; the returned generator is on the CPU.
    """
    train_cfg = check_config(train_cfg, where="train")
    started = datetime.datetime.now(datetime.timezone.utc)
    ranks, dev = init_ranks(device)
    if not ranks.main:
        log = lambda message: None  # noqa: E731 (rank 0 alone speaks)
    data_dir, out = Path(data_dir), Path(out_dir)
    # every rank must run what rank 0 runs, or one waits in a collective the others never reach; data and --out
    # are compared by what they hold (machines may mount a shared folder at different paths), and the device,
    # --threads and the command line are each rank's own
    same_settings({"model": config_to_dict(model_cfg) if model_cfg is not None else None, "train": config_to_dict(train_cfg),
                   "data": {"manifest_sha256": file_digest(data_dir / "manifest.jsonl")}, "fresh": not resume,
                   "saved": saved_state(out / STATE_NAME) if resume else None}, ranks)
    rows = read_manifest(data_dir, "train")
    resolution = int(rows[0].get("resolution", 32))
    saved = (out / STATE_NAME).is_file() or (out / OLD_STATE_NAME).is_file()
    old_config = load_checkpoint(out)[1] if resume and saved and (out / CONFIG_NAME).is_file() else None
    if old_config is not None:
        _check_resume(out, old_config, model_cfg, train_cfg, data_dir, log)
        if model_cfg is None:  # the run's own network, with its inference settings
            kept = {k: v for k, v in old_config["model"].items() if k not in ("n_codes", "families", "resolution")}
            model_cfg = config_from_dict(FieldConfig, kept, where=f"{out / CONFIG_NAME}: model")
    model_cfg = model_cfg if model_cfg is not None else FieldConfig()
    if model_cfg.resolution not in (FieldConfig().resolution, resolution):
        raise InputError(f"model.resolution {model_cfg.resolution} is not the data's ({resolution}, {data_dir}); a field "
                         f"decodes at the resolution of its training grids: remove model.resolution or use matching data")
    t0 = time.perf_counter()
    bank = build_bank(data_dir, rows, size=train_cfg.bank_size, sigmas=train_cfg.near_sigmas,
                      uniform_fraction=train_cfg.uniform_fraction, seed=train_cfg.seed,
                      grid_fraction=train_cfg.grid_fraction, band_width=model_cfg.clamp)
    log(f"sample bank: {len(rows)} shapes x {train_cfg.bank_size} points ({bank.exact} analytic) "
        f"in {time.perf_counter() - t0:.1f}s")
    model_cfg.n_codes, model_cfg.families, model_cfg.resolution = len(rows), list(FAMILY_NAMES), resolution
    torch.manual_seed(train_cfg.seed)
    gen = NeuralFieldGenerator(model_cfg)  # checks the config
    net = gen.net.to(dev)
    bank_points, bank_sdf = bank.points.to(dev), bank.sdf.to(dev)  # (N, S, 3), (N, S)
    others = [p for n, p in net.named_parameters() if n != "codes"]
    opt = torch.optim.Adam([{"params": others, "lr": train_cfg.lr}, {"params": [net.codes], "lr": train_cfg.code_lr}])
    ema = copy.deepcopy(net.state_dict()) if train_cfg.ema_decay > 0 else None
    step, elapsed = 0, 0.0
    first_step = 0

    if not resume and ranks.main:  # --fresh, once every check has passed (a refused run leaves the earlier one whole):
        removed = clear_run(out, RUN_FILES)  # nothing of the earlier run is resumed, kept in the log or recorded
        if removed:
            log(f"starting over in {out}: removed the earlier run's {', '.join(removed)}")
    out.mkdir(parents=True, exist_ok=True)
    if old_config is not None:
        saved_ema, step, elapsed = _load_resume_state(out, net, opt)
        if ema is not None:
            ema = {k: v.to(dev, copy=True) for k, v in (saved_ema or net.state_dict()).items()}  # never aliases the weights
        log(f"resumed from {out} at step {step} ({elapsed / 60:.1f} min)")
        first_step = step
    if ranks.main:  # rows logged after the last save are logged again from here; a fresh run starts a new log
        trim_log(out / LOG_NAME, lambda row: int(row.get("step", 0)) <= step)
    barrier(ranks)  # every rank has read the state before rank 0 writes the next one

    rows_r = shard(len(rows), ranks)  # this rank's shapes in every step
    scale = share(len(rows), ranks)

    def step_loss(x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (n_r, P, 3), s (n_r, P) of this rank's shapes -> (loss, l1 share) to average over ranks."""
        l1 = scale * clamped_l1(net(x, net.codes[rows_r]), s, model_cfg.clamp)
        return l1 + train_cfg.code_reg * code_prior(net.codes), l1

    step_fn = data_parallel(net, step_loss, ranks, dev, find_unused=False)  # every step reaches every weight

    present = {str(r.get("family")) for r in rows}
    data_info = {"folder": data_dir.name, "n_train": len(rows), "manifest_sha256": manifest_hash(data_dir),
                 "families": [f for f in model_cfg.families if f in present]}  # the families with a code Gaussian of their own
    extra = {"train": config_to_dict(train_cfg), "data": data_info, "command": command, "device": str(dev)}
    budget = train_cfg.minutes * 60.0
    N, S = bank.points.shape[:2]
    log_file = open(out / LOG_NAME, "a", encoding="utf-8") if ranks.main else None
    last_save, start, last_print = time.perf_counter(), time.perf_counter() - elapsed, 0.0
    with StopRequests() as stop:  # SIGINT / SIGTERM end the loop after the step in flight
        try:
            while True:
                elapsed = from_main(time.perf_counter() - start, ranks)  # rank 0's clock schedules and ends every rank
                progress = max(step / train_cfg.steps, elapsed / budget)
                if progress >= 1.0:
                    break
                factor = _lr_factor(step, progress, train_cfg.warmup_steps)
                opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = train_cfg.lr * factor, train_cfg.code_lr * factor
                # each step's batch comes from its own seeded generator, so a resumed run draws what an
                # uninterrupted one would
                idx = torch.randint(S, (N, train_cfg.points_per_shape), generator=item_generator(train_cfg.seed, "nf-step", step))  # (N, P)
                idx = idx[rows_r].to(dev)  # (n_r, P)
                x = torch.gather(bank_points[rows_r], 1, idx.unsqueeze(-1).expand(-1, -1, 3))  # (n_r, P, 3)
                s = torch.gather(bank_sdf[rows_r], 1, idx)  # (n_r, P)
                loss, l1 = step_fn(x, s)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                if ema is not None:
                    with torch.no_grad():
                        for k, v in net.state_dict().items():
                            ema[k].mul_(train_cfg.ema_decay).add_(v, alpha=1 - train_cfg.ema_decay)
                if step % train_cfg.log_every == 0:
                    l1_all, prior = mean_over_ranks(l1, ranks), float((loss - l1).detach())  # the global batch's mean L1
                    rec = {"step": step, "elapsed_s": round(elapsed, 1), "loss": l1_all + prior, "l1": l1_all,
                           "code_norm": float(net.codes.detach().norm(dim=-1).mean()), "lr": opt.param_groups[0]["lr"]}
                    if log_file is not None:
                        log_file.write(json.dumps(rec) + "\n")
                        log_file.flush()
                    if progress_enabled() or elapsed - last_print > 60:
                        done = max(step / train_cfg.steps, elapsed / budget)  # after this step (`progress` was before it)
                        eta = (1 - done) / max(done, 1e-9) * elapsed
                        log(f"step {step} [{100 * done:5.1f}%] l1 {l1_all:.5f} elapsed {elapsed / 60:.1f} min, "
                            f"ETA {eta / 60:.1f} min")
                        last_print = elapsed
                if ranks.main and time.perf_counter() - last_save > train_cfg.save_every_minutes * 60:
                    _save(out, gen, ema, opt, step, time.perf_counter() - start, bank.labels, extra)
                    last_save = time.perf_counter()
                if stop.check(ranks):  # a signal: end after this step; saved below
                    break
        finally:
            if log_file is not None:
                log_file.close()
    elapsed = time.perf_counter() - start
    if ranks.main:
        _save(out, gen, ema, opt, step, elapsed, bank.labels, extra)
        log(f"{'stopped' if stop.requested else 'done'}: {step} steps in {elapsed / 60:.1f} min; checkpoint in {out}")
        record = training_record(out, command, step, elapsed, data_dir)
        piece = {"command": command, "steps": f"{first_step} -> {step}", "started_utc": started.isoformat(timespec="seconds"),
                 "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "device": str(dev), "processes": ranks.world, **({"stopped": STOPPED_NOTE} if stop.requested else {})}
        record = with_earlier_pieces(out / RECORD_NAME if old_config is not None else None, record, piece)
        atomic_write_json(out / RECORD_NAME, {**record, "device": str(dev), "processes": ranks.world,
                                                         **({"stopped": STOPPED_NOTE} if stop.requested else {})})
    barrier(ranks)  # the checkpoint every rank loads below is written
    if stop.check(ranks):
        raise Stopped(f"stopped by a signal at step {step}; saved, and a rerun of the command resumes")
    final = NeuralFieldGenerator.from_checkpoint(*load_checkpoint(out))
    return final


ARCHITECTURE = ("d_z", "width", "depth", "skip", "pe_freqs")  # what the saved weights are shaped by


def _check_resume(out: Path, old: dict[str, Any], model_cfg: FieldConfig | None, train_cfg: TrainConfig, data_dir: Path,
                  log: Callable[[str], None]) -> None:
    """Refuse a resume on other data or with another network; say which training settings changed."""
    model_old = old.get("model", {})
    settings = changed(old.get("train", {}), config_to_dict(train_cfg))
    if model_cfg is not None:
        settings += changed(model_old, {"clamp": model_cfg.clamp})  # the loss's clamp: a setting, not the shape
    check_resume(out, data_was=old.get("data", {}).get("manifest_sha256"), data_now=manifest_hash(data_dir),
                 data_folder=old.get("data", {}).get("folder"), data_dir=data_dir, what="network",
                 arch=changed(model_old, {k: getattr(model_cfg, k) for k in ARCHITECTURE}) if model_cfg is not None else [],
                 settings=settings, start_over="start over with --fresh or a new --out", echo=log)


# what `training_record` writes afresh each run; other keys of a resumed run's record (notes, benchmarks) are kept
_REWRITTEN = ("command", "data", "steps", "wall_time_s", "final_l1", "loss_log", "device", "processes", "stopped", "pieces")


def with_earlier_pieces(path: Path | None, record: dict[str, Any], piece: dict[str, Any]) -> dict[str, Any]:
    """`record` with `pieces`, every invocation that trained these weights, this one (`piece`) last.

    `path` is the record of the run this one resumed (None for a fresh run): its pieces come first (a record
    written before pieces were listed gives one, from its command and steps), its first command stays the
    record's `command`, and the keys a person or `evaluate` added are kept, except evaluation figures, which
    describe the weights before this piece: they move to `figures_of_earlier_steps` with the step they were measured at.
    """
    from weightspace.runtime.io import read_json

    old = read_json(path) if path is not None and path.is_file() else {}
    if not isinstance(old, dict):
        old = {}
    pieces = list(old.get("pieces") or ([{"command": old["command"], "steps": f"0 -> {old.get('steps')}",
                                          "note": "from the record written before pieces were listed"}] if old.get("command") else []))
    kept = {k: v for k, v in old.items() if k not in _REWRITTEN and k not in ("figures", "figures_command")}
    if "figures" in old:
        earlier = list(old.get("figures_of_earlier_steps", []))
        earlier.append({"steps": old.get("steps"), "figures": old["figures"], "command": old.get("figures_command")})
        kept["figures_of_earlier_steps"] = earlier
    return {**kept, **record, "command": pieces[0]["command"] if pieces else record["command"], "pieces": pieces + [piece]}


def training_record(out: Path, command: str, steps: int, elapsed: float, data_dir: Path) -> dict[str, Any]:
    """The record shipped beside a checkpoint: command, data, wall time, loss log (figures are added by evaluation)."""
    log_rows = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines() if line.strip()]
    data_info = {"folder": data_dir.name}
    manifest = data_dir / "manifest.jsonl"
    if manifest.is_file():
        data_info["manifest_sha256"] = manifest_hash(data_dir)
    summary = data_dir / "summary.json"
    if summary.is_file():
        made = json.loads(summary.read_text())
        data_info.update({k: made[k] for k in ("seed", "count", "resolution", "family") if k in made})
        if "family" in made:  # made by `data make`; an imported folder's summary has no family and no such command
            pose = f" --pose {made['pose']}" if made.get("pose") not in (None, "random") else ""
            data_info["command"] = (f"weightspace data make --family {made.get('family')} --count {made.get('count')} "
                                    f"--resolution {made.get('resolution')} --seed {made.get('seed')}{pose} --out {data_dir}")
    return {
        "command": command,
        "data": data_info,
        "steps": steps,
        "wall_time_s": round(elapsed, 1),
        "final_l1": log_rows[-1]["l1"] if log_rows else None,
        "loss_log": log_rows,
    }
