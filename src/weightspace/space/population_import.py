"""Populations of fine-tunes made elsewhere, and members taken out of a population.

`import_population` turns weights fitted outside weightspace into population members of a base
generator: PEFT LoRA adapter folders (`adapter_config.json` + `adapter_model.safetensors`, as PEFT's
`save_pretrained` writes them) become `lora` points, and fine-tuned checkpoints (a checkpoint folder,
or a `.safetensors` state dict of the base's net) become `layers` points of the tensors `--targets`
chooses. The result is an ordinary population: `subspace fit`, `decode`, the studies read it. Its
members have no target shape, so their fidelity is `unchecked`.

`export_population` writes members back out: as PEFT adapter folders (lora factor points) that PEFT
itself loads, or as standalone checkpoint folders of the base with the member's weights in place
(`generate --checkpoint FOLDER` samples from the fine-tuned model). Each exported folder carries the
population's anchor condition in `anchor.safetensors`, so importing it again gives the same points.

Weights are read only from safetensors (a pickle is refused unread, `runtime.checkpoint.load_state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from weightspace.generators.protocol import Generator, Saveable
from weightspace.runtime.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint, load_state
from weightspace.runtime.errors import InputError
from weightspace.runtime.folders import check_out_folder
from weightspace.runtime.io import file_digest
from weightspace.runtime.progress import log_line, track
from weightspace.space.frame import Frame
from weightspace.space.layers import LayersParameterisation
from weightspace.space.layout import LayoutMismatchError
from weightspace.space.lora import LoraParameterisation
from weightspace.space.parameterisation import Parameterisation, base_hash
from weightspace.space.store import (
    Population,
    read_manifest,
    save_population_frame,
    save_tensors,
    shard_name,
    write_manifest,
)

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
ANCHOR_FILE = "anchor.safetensors"  # beside an exported member: the condition its points decode under
IMPORT_FORMS = ("factors", "delta")


@dataclass(frozen=True)
class Source:
    """One file or folder to import: `kind` adapter | checkpoint | state, the member id it becomes, and
    the weights file whose digest the manifest records."""

    path: Path
    kind: str
    id: str
    weights: Path


def classify(path: str | Path) -> Source:
    """What a source path holds, by its files (never by unpickling anything)."""
    path = Path(path)
    if path.is_file() and path.name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
        path = path.parent  # an adapter named by one of its two files
    elif path.is_file() and path.name == WEIGHTS_NAME and (path.parent / CONFIG_NAME).is_file():
        path = path.parent  # a checkpoint named by its weights
    if path.is_dir():
        name = path.resolve().name  # `.` or `..` name their folder
        if (path / ADAPTER_CONFIG).is_file():
            weights = path / ADAPTER_WEIGHTS
            if not weights.is_file():
                found = sorted(p.name for p in path.glob("adapter_model.*"))
                hint = (f" (found {', '.join(found)}: a pickle is never loaded; save the adapter with "
                        "safe_serialization=True)") if found else ""
                raise InputError(f"{path}: a PEFT adapter folder without {ADAPTER_WEIGHTS}{hint}")
            return Source(path, "adapter", name, weights)
        if (path / WEIGHTS_NAME).is_file():
            return Source(path, "checkpoint", name, path / WEIGHTS_NAME)
        raise InputError(f"{path}: neither a PEFT adapter folder ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS}) nor a "
                         f"checkpoint folder ({WEIGHTS_NAME})")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise InputError(f"{path}: not a .safetensors file, a PEFT adapter folder or a checkpoint folder "
                             "(weights are read from safetensors only)")
        return Source(path, "state", path.stem, path)
    raise InputError(f"{path}: not found")


def read_sources(paths: Sequence[str | Path]) -> list[Source]:
    """Classify every source before anything is read or written; ids must be distinct."""
    if not paths:
        raise InputError("no sources given: name PEFT adapter folders, checkpoint folders or .safetensors files")
    sources, seen = [], {}
    for p in paths:
        s = classify(p)
        if s.id in seen:
            raise InputError(f"{s.path} and {seen[s.id]} would both be member {s.id!r}: member ids come from the "
                             "folder (or file) names, which must differ")
        seen[s.id] = s.path
        sources.append(s)
    return sources


def _parameterisation_name(sources: Sequence[Source], asked: str) -> str:
    kinds = {s.kind for s in sources}
    natural = "lora" if kinds == {"adapter"} else "layers" if "adapter" not in kinds else None
    if natural is None:
        raise InputError("the sources mix PEFT adapters and full weights: "
                         + ", ".join(f"{s.path} ({s.kind})" for s in sources[:4]) + "; import them into separate populations")
    if asked not in ("auto", natural):
        raise InputError(f"--parameterisation {asked}: these sources are "
                         f"{'PEFT adapters, imported as lora points' if natural == 'lora' else 'full weights, imported as layers points'}")
    return natural


def _lora_points(gen: Generator, sources: Sequence[Source], *, targets: str | None, form: str,
                 log: Callable[[str], None], into: tuple[LoraParameterisation, Path] | None = None
                 ) -> tuple[Parameterisation, list[torch.Tensor]]:
    """Each adapter as a point of the first adapter's parameterisation (or of `into`, the factor
    parameterisation of the population they join, and its folder). Factor points need one rank and one
    set of target modules across them (another alpha is exact: B is rescaled); delta points (B A per
    layer, scaling included) need only the same modules, so adapters of any ranks share a population."""
    first: LoraParameterisation | None = into[0] if into is not None else None
    ref = f"{into[1]}'s members" if into is not None else f"{sources[0].path}'s"
    points = []
    for s in track(sources, "adapters"):
        param, point = LoraParameterisation.load_adapter(gen, s.path, targets=targets)
        point = point.detach().cpu()
        if first is None:
            first = param
        elif param.modules != first.modules:
            extra = sorted(set(param.modules) ^ set(first.modules))
            raise InputError(f"{s.path}: its adapter targets other modules than {ref} (differing: "
                             f"{', '.join(extra[:4])}{', ...' if len(extra) > 4 else ''}); import them into separate populations")
        elif form == "factors" and param.rank != first.rank:
            raise InputError(f"{s.path}: its adapter has rank {param.rank}, {ref} {first.rank}; factor points "
                             "of one population share a rank. " + ("Import it into another --out" if into else
                             "Pass --form delta (points = B A per layer, any rank)"))
        elif form == "factors" and param.scaling != first.scaling:
            t = param.layout.from_vector(point)
            # the same Delta W at the first adapter's scaling: s B A = s0 (s / s0) B A
            point = first.layout.to_vector({k: v * (param.scaling / first.scaling) if k.endswith(".lora_B") else v
                                            for k, v in t.items()})
            log(f"{s.path}: alpha {param.alpha:g} rescaled to the population's {first.alpha:g} (the same B A)")
        points.append(param.to_delta(point) if form == "delta" and param is not first else point)
    assert first is not None
    if form == "delta":
        points[0] = first.to_delta(points[0])
        first = first.delta_parameterisation()
    return first, points


def _weights_of(s: Source) -> dict[str, torch.Tensor]:
    if s.kind == "checkpoint":
        return load_checkpoint(s.path)[0]
    return load_state(s.weights)


def _layers_points(gen: Generator, sources: Sequence[Source], *, targets: str | None,
                   log: Callable[[str], None]) -> tuple[Parameterisation, list[torch.Tensor]]:
    """Each fine-tuned state dict as a point of the chosen tensors; said when it changed others too."""
    param = LayersParameterisation(gen, targets=targets or "all")
    base = {k: v.detach().cpu() for k, v in gen.net.state_dict().items()}
    points = []
    for s in track(sources, "checkpoints"):
        state = _weights_of(s)
        missing = [n for n in param.names if n not in state]
        if missing:
            near = ", ".join(sorted(state)[:6])
            raise InputError(f"{s.weights}: lacks tensor {missing[0]!r}{f' and {len(missing) - 1} more' if len(missing) > 1 else ''} "
                             f"of the base's targets (it holds {near}{', ...' if len(state) > 6 else ''}); is it a "
                             "fine-tune of this checkpoint?")
        for n in param.names:
            if tuple(state[n].shape) != tuple(base[n].shape):
                raise InputError(f"{s.weights}: tensor {n!r} has shape {tuple(state[n].shape)}, the base's "
                                 f"{tuple(base[n].shape)}; is it a fine-tune of this checkpoint?")
        chosen = set(param.names)
        changed = [n for n, v in state.items() if n not in chosen and n in base and v.shape == base[n].shape
                   and not torch.equal(v.to(base[n].dtype), base[n])]
        foreign = [n for n in state if n not in base]
        if changed:
            log(f"{s.path}: {len(changed)} tensor(s) outside the targets differ from the base (first {changed[0]!r}); "
                "the member keeps the base's values there (--targets all takes every tensor)")
        if foreign:
            log(f"{s.path}: {len(foreign)} tensor(s) the base does not have are left out (first {foreign[0]!r})")
        points.append(param.layout.to_vector({n: state[n].to(torch.float32) for n in param.names}))
    return param, points


def _anchor_of(path: Path) -> torch.Tensor:
    """The anchor condition stored with a population, a point file, or an exported member folder."""
    from weightspace.space.store import load_point

    if path.is_dir() and (path / "config.json").is_file() and (path / "layout.json").is_file():
        return Population(path).frame.anchor
    if path.is_dir():
        path = path / ANCHOR_FILE
    state = load_state(path)
    if "anchor" in state:
        return state["anchor"]
    if "point" in state:
        return load_point(path).frame.anchor
    raise InputError(f"{path}: holds no tensor 'anchor'")


def choose_anchor(gen: Generator, sources: Sequence[Source], anchor: str, anchor_from: Path | None) -> torch.Tensor:
    """The condition the imported points decode under (1, *condition_shape)."""
    shape = (1, *gen.condition_shape)
    if anchor_from is not None:
        if anchor != "auto":
            raise InputError("--anchor and --anchor-from: give one")
        a = _anchor_of(Path(anchor_from))
    elif anchor == "zeros":
        a = torch.zeros(shape)
    elif anchor != "auto":
        raise InputError(f"--anchor must be auto or zeros (or give --anchor-from), got {anchor!r}")
    else:
        carried = [(s, s.path / ANCHOR_FILE) for s in sources if s.path.is_dir() and (s.path / ANCHOR_FILE).is_file()]
        if carried:
            if len(carried) < len(sources):
                lacking = next(s for s in sources if s not in {c[0] for c in carried})
                raise InputError(f"{carried[0][1]} gives an anchor condition and {lacking.path} none; give --anchor-from "
                                 "or --anchor zeros for all of them")
            a = _anchor_of(carried[0][1])
            for _, f in carried[1:]:
                other = _anchor_of(f)
                if other.shape != a.shape or not torch.equal(other, a):
                    raise InputError(f"{f} and {carried[0][1]}: the members were made under different anchor conditions; "
                                     "import them into separate populations")
        elif gen.fit_anchor == "zeros":
            a = torch.zeros(shape)
        else:
            raise InputError(f"the sources carry no anchor condition ({ANCHOR_FILE}), and members of {gen.name} decode under "
                             f"the condition they were fitted with ({gen.fit_anchor!r} for its own populations): give "
                             "--anchor-from POP (a population, point file or exported member) or --anchor zeros")
    a = a.reshape(-1, *gen.condition_shape) if a.numel() == torch.Size(shape).numel() else a
    if tuple(a.shape) != shape:
        raise InputError(f"anchor condition has shape {tuple(a.shape)}; {gen.name} takes {shape}")
    return a.to(torch.float32)


def import_population(sources: Sequence[str | Path], *, checkpoint: str, out: str | Path, parameterisation: str = "auto",
                      targets: str | None = None, form: str = "factors", anchor: str = "auto",
                      anchor_from: str | Path | None = None, generator: Any = None,
                      log: Callable[[str], None] = log_line) -> Population:
    """Make (or add to) the population in `out` from adapters or fine-tuned weights of `checkpoint`.

    A rerun with the same files adds nothing; new files are added as new members, in the frame the
    population already has (another base, parameterisation or anchor is refused); a member id already
    there from a file with other bytes is refused. Every source is read and checked before the first
    member is written.
    """
    from weightspace.generators.registry import checkpoint_of, generator_loader

    if form not in IMPORT_FORMS:
        raise InputError(f"--form must be one of {', '.join(IMPORT_FORMS)}, got {form!r}")
    found = read_sources(sources)
    name = _parameterisation_name(found, parameterisation)
    if name == "layers" and form != "factors":
        raise InputError("--form applies to PEFT adapters (lora points); full weights are layers points")
    out = Path(out)
    check_out_folder(out, "population", writes="config.json, manifest.jsonl and shards/")
    earlier = Population(out) if (out / "config.json").is_file() else None
    rows = list(earlier.rows) if earlier is not None else []
    by_id = {str(r["id"]): r for r in rows}
    digests = {s.id: file_digest(s.weights) for s in found}
    for s in found:
        row = by_id.get(s.id)
        if row is not None and (row.get("imported") or {}).get("sha256") != digests[s.id]:
            raise InputError(f"{s.path}: member {s.id!r} is already in {out} from other weights "
                             f"({(row.get('imported') or {}).get('path', 'fitted there')}); rename it or choose another --out")
    todo = [s for s in found if s.id not in by_id]
    gen = generator_loader(generator, checkpoint)()
    if not todo:
        log(f"{out}: all {len(found)} source(s) are members already; nothing to add")
        return earlier if earlier is not None else Population(out)
    cond = choose_anchor(gen, todo, anchor, None if anchor_from is None else Path(anchor_from))
    into = None  # adapters joining factor points: the same B A at the population's alpha, any target pattern
    if earlier is not None and name == "lora" and form == "factors" and earlier.frame.parameterisation.get("form") == "factors":
        into = (earlier.frame.build(gen, what=str(out)), out)
    param, points = (_lora_points(gen, todo, targets=targets, form=form, log=log, into=into) if name == "lora"
                     else _layers_points(gen, todo, targets=targets, log=log))
    frame = Frame(param.layout, param.config(), cond, checkpoint_of(generator, checkpoint))
    if earlier is not None:
        try:
            earlier.frame.layout.check_same(frame.layout, what=f"{out} vs the imported points")
        except LayoutMismatchError as e:
            raise InputError(f"{e}; import them into another --out") from None
        if earlier.frame.parameterisation != frame.parameterisation or not torch.equal(earlier.frame.anchor, frame.anchor):
            raise InputError(f"{out}: its members decode under another parameterisation or anchor condition than "
                             "the imported ones; import them into another --out (or give --anchor-from it)")
    else:
        save_population_frame(out, frame, {"kind": "population", "base_hash": base_hash(gen), "data": None,
                                           "data_hash": None, "imported": True})
    start = max((int(r["index"]) for r in read_manifest(out)), default=-1) + 1
    for i, (s, point) in enumerate(zip(todo, points)):
        index = start + i
        shard = shard_name(index)
        save_tensors(out / shard, {"point": point}, {"id": s.id, "base_hash": param.layout.base_hash})
        rows.append({"index": index, "id": s.id, "shard": shard,
                     "imported": {"path": str(s.path), "kind": s.kind, "sha256": digests[s.id]}})
        write_manifest(out, sorted(rows, key=lambda r: r["index"]))  # shard first, then its row: a kill loses nothing
    return Population(out)


def _stored_points(source: Path) -> tuple[Frame, list[str], Callable[[int], torch.Tensor]]:
    """(frame, ids, point getter) of a population folder, a point file, or a folder of point
    files (`decode`'s subspace samples and `subspace invert`'s results keep theirs in points/)."""
    from weightspace.space.store import load_point

    if source.is_dir() and (source / "config.json").is_file() and (source / "layout.json").is_file():
        pop = Population(source)
        return pop.frame, [str(r["id"]) for r in pop.rows], pop.point
    if source.is_file():
        files = [source]
    else:
        folder = source / "points" if (source / "points").is_dir() else source
        files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        if not files:
            raise InputError(f"{source}: neither a population folder nor a point file, nor a folder of point files "
                             "(.safetensors, or a points/ folder of them)")
    loaded = [load_point(f) for f in files]
    for f, p in zip(files[1:], loaded[1:]):
        if p.frame != loaded[0].frame:
            raise InputError(f"{f}: its points are in another frame (layout, parameterisation, anchor or checkpoint) "
                             f"than {files[0]}'s; export them separately")
    return loaded[0].frame, [f.stem for f in files], lambda i: loaded[i].point


def export_population(population: str | Path, out: str | Path, *, as_: str = "adapter", members: Sequence[str] | None = None,
                      generator: Any = None) -> list[Path]:
    """Write members of a population (or stored points: a point file, a folder of them) as PEFT adapter
    folders (`as_="adapter"`, lora factor points) or as checkpoint folders of the base with the member's
    weights in place (`as_="checkpoint"`, lora or layers); each folder `out/<id>` also holds the anchor
    the points decode under (`anchor.safetensors`). Returns the folders written."""
    from weightspace.generators.registry import generator_loader

    if as_ not in ("adapter", "checkpoint"):
        raise InputError(f"--as must be adapter or checkpoint, got {as_!r}")
    source = Path(population)
    frame, ids, point_of = _stored_points(source)
    chosen = list(range(len(ids))) if not members else []
    for m in members or ():
        if m not in ids:
            raise InputError(f"--members: {m!r} is not a member of {source} (members: {', '.join(ids[:8])}"
                             f"{', ...' if len(ids) > 8 else ''})")
        chosen.append(ids.index(m))
    if not chosen:
        raise InputError(f"{source}: population has no finished members")
    name = frame.parameterisation["name"]
    if name == "condition":
        raise InputError(f"{source}: condition points are conditions, not weights; nothing to export as {as_}")
    if as_ == "adapter" and name != "lora":
        raise InputError(f"{source}: a PEFT adapter holds LoRA factors; these are {name} points. Use --as checkpoint")
    gen = generator_loader(generator, frame.checkpoint or None)()
    param = frame.build(gen, what=f"points of {source}")
    if as_ == "checkpoint" and not isinstance(gen, Saveable):
        raise InputError(f"generator {gen.name} cannot save itself (no `save`), so a member cannot be written as a checkpoint")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in track(chosen, "members"):
        point, folder = point_of(i), out / ids[i]
        if as_ == "adapter":  # a delta point (a subspace's) as the lowest-rank factors that hold it
            own, factors = param.factorise(point.to(gen.device))
            own.save_adapter(factors, folder)
        else:
            _save_merged(gen, param.params(point.to(gen.device)), folder, {"source": str(source), "member": ids[i],
                                                                           "parameterisation": frame.parameterisation})
        save_tensors(folder / ANCHOR_FILE, {"anchor": frame.anchor}, {"kind": "anchor"})
        written.append(folder)
    return written


def _save_merged(gen: Generator, params: dict[str, torch.Tensor], folder: Path, record: dict[str, Any]) -> None:
    """The base with `params` in place, saved by the generator itself; its own weights are restored after."""
    net_state = gen.net.state_dict()
    kept = {k: net_state[k].detach().clone() for k in params}
    try:
        with torch.no_grad():
            for k, v in params.items():
                net_state[k].copy_(v.to(net_state[k].dtype))
        gen.save(folder, extra_config={"exported_member": record})
    finally:
        with torch.no_grad():
            for k, v in kept.items():
                net_state[k].copy_(v)


__all__ = ["ANCHOR_FILE", "Source", "choose_anchor", "classify", "export_population", "import_population", "read_sources"]
