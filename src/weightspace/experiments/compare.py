"""Across architectures (open question 2): the three studies, small, on several generators, in one side-by-side table."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from weightspace.experiments.common import Clock, check_distinct, record_config, refusal, start_results
from weightspace.experiments.fit import FitConfig, run_fit
from weightspace.experiments.interpolate import InterpolateConfig, run_interpolate
from weightspace.experiments.subspace import SubspaceConfig, run_subspace
from weightspace.generators.protocol import Generator, HasFamilies, MissingCapability
from weightspace.runtime.config import check_config
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_write_text
from weightspace.runtime.results import read_results, write_csv, write_results

STUDIES = ("interpolate", "subspace", "fit")


@dataclass
class CompareConfig:
    """Which generators and studies to compare (each study at its `small()` size)."""

    checkpoints: list[str] = field(default_factory=lambda: ["default", "default-field"])
    out: str = "results/compare"
    studies: list[str] = field(default_factory=lambda: list(STUDIES))

    def validate(self) -> None:
        if not self.checkpoints:
            raise InputError("checkpoints: name at least one generator")
        bad = [s for s in self.studies if s not in STUDIES]
        if bad or not self.studies:
            raise InputError(f"studies must be among {', '.join(STUDIES)}, got {self.studies}")
        check_distinct("studies (--studies)", self.studies)
        # each generator's studies run in out/<label>: two checkpoints of one label would share (and mix) them
        check_distinct("checkpoints (--checkpoints), by their folder names", [_label(c) for c in self.checkpoints])


def _label(checkpoint: str) -> str:
    return Path(checkpoint).name if checkpoint not in ("default", "default-field") else checkpoint


def run_compare(config: CompareConfig, *, generators: dict[str, Generator] | None = None,
                configure: Callable[[str, Any], Any] | None = None) -> Path:
    """Run each study's `small()` config on each checkpoint into out/<checkpoint>/<study>, then write
    `compare.csv` and `compare.md` (one row per figure, one column per generator).

    generators : checkpoint name -> generator already loaded (tests); configure : (study, config) -> config,
    a hook to shrink or change the small configs (tests, custom sizes).
    """
    config = check_config(config, where=type(config).__name__)  # types and bounds as a config file's, then validate
    clock = Clock()
    folder = start_results(config.out, config, settings_may_differ=True)  # its studies check their own folders
    runners = {"interpolate": (InterpolateConfig, run_interpolate), "subspace": (SubspaceConfig, run_subspace),
               "fit": (FitConfig, run_fit)}
    columns: dict[str, dict[str, Any]] = {}
    for ckpt in config.checkpoints:
        label = _label(ckpt)
        gen = (generators or {}).get(ckpt)
        if gen is None:
            from weightspace.experiments.common import load_study_generator

            gen = load_study_generator(ckpt)
        elif not gen.source:  # built in code: the studies record it under the name it was given here
            gen = copy.copy(gen)
            gen.source = ckpt
        col: dict[str, Any] = {"generator": gen.kind}
        for study in config.studies:
            cfg_cls, run = runners[study]
            cfg = cfg_cls.small(ckpt, out=str(folder / label / study))
            if study == "interpolate":  # compare owns this folder and reruns it whole (subspace and fit resume by item)
                cfg = dataclasses.replace(cfg, overwrite=True)
            if configure is not None:
                cfg = configure(study, cfg)
            # as the demo does: when the family conditions are missing or refused, the same families'
            # shapes, encoded (a WaLa point-cloud model has no families; a field trained on a few has
            # no conditions for the others)
            tries = [cfg]
            if study == "interpolate" and cfg.endpoints == "family":
                encoded = dataclasses.replace(cfg, endpoints="data", a=f"{cfg.a}-00000", b=f"{cfg.b}-00000")
                has_both = isinstance(gen, HasFamilies) and {cfg.a, cfg.b} <= set(gen.families)
                tries = [cfg, encoded] if has_both else [encoded]
            c = Clock()
            for k, attempt in enumerate(tries):
                try:
                    out = run(attempt, generator=gen)
                except MissingCapability as e:  # this generator cannot run the study: say so in its column
                    col[f"{study}.not_run"] = str(e)
                    break
                except InputError as e:  # a study refuses broken endpoints or examples, and records why
                    why = refusal(Path(attempt.out))
                    if why is None:
                        raise
                    if k + 1 < len(tries):
                        col[f"{study}.family_endpoints_refused"] = str(e)
                        continue
                    col[f"{study}.refused"] = why
                else:
                    if attempt is not cfg:
                        col[f"{study}.endpoints"] = "encoded shapes"
                    col.update(_figures(study, read_results(out / "results.json")))
                    break
            col[f"{study}.seconds"] = round(c(), 1)
        columns[label] = col
    labels = list(columns)
    keys: list[str] = []
    for col in columns.values():
        keys += [k for k in col if k not in keys]
    rows = [{"figure": k, **{lab: columns[lab].get(k, "") for lab in labels}} for k in keys]
    write_csv(folder / "compare.csv", rows)
    atomic_write_text(folder / "compare.md", _markdown(rows, labels))
    write_results(folder, {"checkpoints": config.checkpoints, "columns": columns, "wall_seconds": clock()})
    record_config(folder, config)
    return folder


def write_compare_page(folder: str | Path) -> Path:
    """The comparison's page, `report.html` in its folder: the side-by-side table first, then every study
    it ran, each with a note where its family endpoints were refused and encoded shapes used instead."""
    import html as html_module

    from weightspace.report.html import write_page

    folder = Path(folder)
    res = read_results(folder / "results.json")
    columns: dict[str, dict[str, Any]] = res["columns"]
    labels = list(columns)
    keys: list[str] = []
    for col in columns.values():
        keys += [k for k in col if k not in keys and not k.endswith(("family_endpoints_refused", ".not_run", ".refused"))]
    esc = html_module.escape
    head = "".join(f"<th>{esc(lab)}</th>" for lab in labels)
    body = "".join(f"<tr><td>{esc(k)}</td>" + "".join(f"<td>{esc(_fmt(columns[lab].get(k)))}</td>" for lab in labels) + "</tr>"
                   for k in keys)
    why = "".join(f"<li><b>{esc(lab)}</b>, {esc(k.rsplit('.', 1)[0] if k.count('.') else k)}: {esc(str(v))}</li>"
                  for lab in labels for k, v in columns[lab].items() if k.endswith((".not_run", ".refused")))
    section = (f"<section id=compare><h2>Side by side</h2><table><thead><tr><th>figure</th>{head}</tr></thead>"
               f"<tbody>{body}</tbody></table>" + (f"<p>Not run or refused:</p><ul>{why}</ul>" if why else "")
               + '<p class=files>files: <a href="compare.csv">compare.csv</a> · <a href="compare.md">compare.md</a></p></section>')
    notes = {str(folder / _label(ckpt) / study): str(columns[_label(ckpt)][f"{study}.family_endpoints_refused"])
             + " (ran between encoded shapes instead)"
             for ckpt in res["checkpoints"] for study in ("interpolate",)
             if f"{study}.family_endpoints_refused" in columns.get(_label(ckpt), {})}
    return write_page([folder], folder / "report.html", title=f"compare: {', '.join(res['checkpoints'])}",
                      extra=[section], notes=notes)[0]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return "" if v is None else str(v)


def _markdown(rows: list[dict[str, Any]], labels: list[str]) -> str:
    lines = ["| figure | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    lines += ["| " + r["figure"] + " | " + " | ".join(_fmt(r[lab]) for lab in labels) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _figures(study: str, res: dict[str, Any]) -> dict[str, Any]:
    """The figures of one study's results.json that go into the comparison table."""
    if study == "interpolate":
        trs = res.get("transitions", [])
        return {"interpolate.path": f"{res.get('a')} -> {res.get('b')}", "interpolate.start": res.get("start"),
                "interpolate.end": res.get("end"), "interpolate.transitions": len(trs),
                "interpolate.decodes": res.get("decodes"),
                "interpolate.min_width": min((t["width"] for t in trs), default=None),
                "interpolate.max_chamfer_jump": max((t["chamfer_jump"] or 0 for t in trs), default=None),
                "interpolate.chamfer_start_end": res.get("chamfer_start_end")}
    if study == "subspace":
        out: dict[str, Any] = {"subspace.examples_topology": res["examples_topology"]["robust"]}
        for kind, s in res["summary"].items():
            if kind == "examples":
                continue
            out[f"subspace.{kind}.topology_kept"] = s["topology_kept_robust"]
            out[f"subspace.{kind}.kept_and_valid"] = s.get("kept_and_valid")
            out[f"subspace.{kind}.validity"] = s["validity"]
            out[f"subspace.{kind}.local_variation"] = s["local_variation"]
            out[f"subspace.{kind}.diversity"] = s["diversity"]
        g = res["gate"]["gate"]
        out["subspace.gate.precision"], out["subspace.gate.recall"] = g["precision"], g["recall"]
        return out
    out = {}
    for method, s in res["by_method"].items():
        out[f"fit.{method}.chamfer_l1"] = s["chamfer_l1"]
        out[f"fit.{method}.fscore"] = s["fscore"]
        out[f"fit.{method}.topology_correct"] = s["topology_correct"]
        out[f"fit.{method}.forgetting"] = s["forgetting"]
        out[f"fit.{method}.forget_fscore_drop"] = s.get("forget_fscore_drop")
        out[f"fit.{method}.forget_max_grid_change"] = s.get("forget_max_grid_change")
    return out
