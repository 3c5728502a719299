"""Load a generator from a checkpoint folder or a shipped name, by the `kind` in its config.json.

Three ways a kind becomes loadable, looked up in this order:

1. the built-in kinds (`latent-diffusion`, `neural-field`, `wala`);
2. `register(kind, factory)`, called by the user's code before loading;
3. the entry-point group `weightspace.generators` of an installed package, whose entry point is
   named by the kind and points at its factory, e.g. in the package's pyproject.toml:

       [project.entry-points."weightspace.generators"]
       my-sdf = "my_package.weightspace_plugin:load"

A factory takes (state, config) — the checkpoint's tensors and its config.json — and returns a
`Generator`; a mismatch raises InputError naming the field.
"""

from __future__ import annotations

import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from weightspace.runtime.errors import InputError

# Shipped checkpoints live inside the package so an installed wheel has them too.
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
SHIPPED = {
    "default": "latent-diffusion-32",  # trained on the 2-core CPU in under an hour
    "default-field": "neural-field-32",
    "default-64": "latent-diffusion-64",  # 64^3, trained on a GPU (docs/gpu.md)
    "default-points": "latent-diffusion-32-points",  # 8^3 tokens: better from points, worse family samples
}
ENTRY_POINT_GROUP = "weightspace.generators"
BUILTIN_KINDS = ("latent-diffusion", "neural-field", "wala")

Factory = Callable[[dict[str, Any], dict[str, Any]], Any]  # (state, config) -> Generator
_REGISTERED: dict[str, Factory] = {}
# top-level package of a loaded plug-in's code (its factory, generator class, network class) -> the kinds it
# loaded, so that an exception raised in that code is not reported as weightspace's own (`plugin_frame`)
_PLUGIN_PACKAGES: dict[str, list[str]] = {}
_NOT_PLUGIN = ("weightspace", "torch", "builtins", "functools")


def _builtin() -> dict[str, Factory]:
    # An explicit name-to-class table (no dynamic imports by string).
    from weightspace.generators.latent_diffusion.model import LatentDiffusionGenerator
    from weightspace.generators.neural_field.model import NeuralFieldGenerator
    from weightspace.generators.wala.generator import WaLaGenerator

    return {"latent-diffusion": LatentDiffusionGenerator.from_checkpoint, "neural-field": NeuralFieldGenerator.from_checkpoint,
            "wala": WaLaGenerator.from_checkpoint}


def register(kind: str, factory: Factory, *, replace: bool = False) -> None:
    """Make checkpoints whose config.json says `"kind": kind` loadable through `factory(state, config)`.

    A class with a `from_checkpoint` class method may be passed as the factory itself.
    Registering a built-in kind, or a kind twice without `replace=True`, raises InputError.
    """
    check_kind_name(kind, "register")
    if isinstance(factory, type):
        if not callable(getattr(factory, "from_checkpoint", None)):
            raise InputError(f"register: {factory.__name__} has no from_checkpoint(state, config) class method; pass a "
                             f"function instead, e.g. lambda state, config: {factory.__name__}.from_state(MyNet(), state, config)")
        factory = factory.from_checkpoint
    if not callable(factory):
        raise InputError(f"register: the factory for {kind!r} must be callable (state, config) -> Generator")
    if kind in _REGISTERED and not replace:
        raise InputError(f"register: kind {kind!r} is already registered (pass replace=True to replace it)")
    if kind in _entry_points() and not replace:
        raise InputError(f"register: kind {kind!r} is installed through the {ENTRY_POINT_GROUP!r} entry-point group "
                         f"(pass replace=True to use this factory instead)")
    _REGISTERED[kind] = factory


def check_kind_name(kind: Any, who: str) -> str:
    """`kind` when it can name a plug-in generator: a non-empty string without surrounding blanks that is
    not a built-in kind in any letter case; else InputError naming `who`."""
    if not isinstance(kind, str) or not kind.strip():
        raise InputError(f"{who}: kind must be a non-empty string, got {kind!r}")
    if kind != kind.strip():
        raise InputError(f"{who}: kind {kind!r} has blanks around it")
    if kind.lower() in BUILTIN_KINDS:
        raise InputError(f"{who}: {kind!r} is a built-in kind (checkpoints of that kind load through its own "
                         f"factory); choose another name")
    return kind


def unregister(kind: str) -> None:
    """Forget a kind registered with `register` (tests, notebooks)."""
    _REGISTERED.pop(kind, None)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    for name in sorted(n for n in eps if n.lower() in BUILTIN_KINDS):
        # a plug-in cannot take over a built-in kind: say so instead of ignoring it in silence
        warnings.warn(f"entry point {name!r} of group {ENTRY_POINT_GROUP!r} ({eps[name].value}) names a built-in kind "
                      f"and is ignored; rename it", stacklevel=3)
        del eps[name]
    return eps


def known_kinds() -> list[str]:
    """Every kind loadable now: built-in, registered and installed through entry points."""
    return sorted({*BUILTIN_KINDS, *_REGISTERED, *_entry_points()})


def factory_for(kind: Any, where: str = "config.json") -> Factory:
    """The factory that rebuilds generators of `kind`; unknown kinds raise InputError listing the known ones."""
    if kind in BUILTIN_KINDS:
        return _builtin()[kind]
    if kind in _REGISTERED:
        return _REGISTERED[kind]
    eps = _entry_points()
    if isinstance(kind, str) and kind in eps:
        try:
            loaded = eps[kind].load()
        except Exception as e:  # a broken plug-in names itself, not a traceback from deep inside importlib
            raise InputError(f"{where}: kind {kind!r}: entry point {eps[kind].value!r} of group {ENTRY_POINT_GROUP!r} "
                             f"failed to load ({type(e).__name__}: {e})") from e
        return getattr(loaded, "from_checkpoint", loaded) if isinstance(loaded, type) else loaded
    raise InputError(f"{where}: field 'kind' must be one of {known_kinds()}, got {kind!r} "
                     f"(a plug-in kind is registered with weightspace.generators.register or the "
                     f"{ENTRY_POINT_GROUP!r} entry-point group)")


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """Map a shipped name (`default`, `default-field`, `default-64`, `default-points`) to its folder; otherwise return the path."""
    key = str(name_or_path)
    if key in SHIPPED:
        folder = SHIPPED_DIR / SHIPPED[key]
        if not folder.is_dir():
            raise InputError(f"shipped checkpoint {key!r} is missing from this installation ({folder.name})")
        return folder
    return Path(name_or_path)


def load_generator(name_or_path: str | Path, device: str = "cpu"):
    """Load any generator checkpoint; the factory is chosen by `config.json`'s `kind`."""
    from weightspace.generators.protocol import Generator
    from weightspace.runtime.checkpoint import load_checkpoint
    from weightspace.runtime.device import pick_device

    target = pick_device(device)  # before reading the files: a bad device name is the caller's first error
    folder = resolve_checkpoint(name_or_path)
    state, config = load_checkpoint(folder)
    kind = config.get("kind")
    factory = factory_for(kind, str(folder / "config.json"))
    _note_plugin(kind, factory)
    try:
        gen = factory(state, config)
    except InputError as e:  # factories see (state, config) only: name the files by their folder
        msg = str(e)
        if msg.startswith(("config.json", "model.safetensors")):
            raise InputError(f"{folder}/{msg}") from None
        raise
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        # a plug-in factory that does not fit its checkpoint (a missing config key, a wrong signature):
        # name the kind and the folder, keep the factory's own error as the cause
        raise InputError(f"{folder}: the factory of kind {kind!r} failed on this checkpoint "
                         f"({type(e).__name__}: {e}); a factory takes (state, config) and returns a Generator") from e
    if not isinstance(gen, Generator):
        raise InputError(f"{folder / 'config.json'}: the factory of kind {kind!r} returned "
                         f"{type(gen).__name__}, not a weightspace Generator")
    _note_plugin(kind, type(gen), type(gen.net))
    gen.source = str(name_or_path)
    gen.net.eval()
    return gen.to(target)


def _note_plugin(kind: Any, *code: Any) -> None:
    """Remember the top-level packages of a plug-in kind's factory, generator and network classes."""
    if kind in BUILTIN_KINDS:
        return
    for thing in code:
        package = str(getattr(thing, "__module__", None) or "").split(".")[0]
        if package and package not in _NOT_PLUGIN and kind not in _PLUGIN_PACKAGES.setdefault(package, []):
            _PLUGIN_PACKAGES[package].append(str(kind))


def plugin_frame(tb: Any) -> str | None:
    """Where in a loaded plug-in's code the exception of traceback `tb` was raised, as 'kind KIND (FILE:LINE in
    FUNCTION)': the innermost frame of a plug-in's package; None when none took part. The kind is that of the
    innermost generator method on the way (a package may hold several kinds), else the package's."""
    from weightspace.generators.protocol import Generator

    found, kind = None, None
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self")
        if isinstance(owner, Generator):
            kind = owner.kind
        package = str(frame.f_globals.get("__name__", "")).split(".")[0]
        if package in _PLUGIN_PACKAGES:
            found = (package, frame.f_code, tb.tb_lineno)
        tb = tb.tb_next
    if found is None:
        return None
    package, code, line = found
    kinds = [kind] if kind in _PLUGIN_PACKAGES[package] else _PLUGIN_PACKAGES[package]
    return f"kind {', '.join(map(repr, kinds))} ({code.co_filename}:{line} in {code.co_name})"


def as_generator(generator: Any, device: str = "cpu"):
    """A Generator as given, or loaded from a checkpoint folder or shipped name: the one way every
    library function takes its generator (`generator=` keyword)."""
    from weightspace.generators.protocol import Generator

    if isinstance(generator, Generator):
        return generator
    if isinstance(generator, (str, Path)):
        return load_generator(generator, device)
    raise InputError(f"generator must be a Generator, a checkpoint folder or a shipped name, got {type(generator).__name__}")


def checkpoint_of(generator: Any, named: str, unnamed: str | None = None) -> str:
    """The base checkpoint a study or population records for the `generator=` it was given.

    A loaded Generator: its `source`. One built in code: `named`, the config's checkpoint, taken as
    its label, unless that is still the config's default `unnamed` (which names another model), then
    ''. A checkpoint given by name or folder: that. A loader callable: `named`, which it is taken to load.
    """
    from weightspace.generators.protocol import Generator

    if isinstance(generator, Generator):
        return generator.source or ("" if named == unnamed else named)
    if isinstance(generator, (str, Path)):
        return str(generator)
    return named


class _Given:
    """A zero-argument loader returning a generator built in code (picklable for process workers)."""

    def __init__(self, gen: Any) -> None:
        import uuid

        self.gen = gen
        self.token = uuid.uuid4().hex  # survives pickling, unlike id(gen): one worker-cache entry per generator

    def __call__(self) -> Any:
        return self.gen

    def __repr__(self) -> str:  # worker caches key on the loader's repr
        return f"_Given({self.token})"


def generator_loader(generator: Any, default: str | Path | None = None) -> Callable[[], Any]:
    """A zero-argument, picklable loader for the `generator=` keyword of library functions.

    generator : a Generator; a checkpoint folder or shipped name; a zero-argument callable returning a
        Generator (so process workers build their own); or None, for `default`'s checkpoint.
    """
    import functools

    from weightspace.generators.protocol import Generator

    if generator is None:
        if default is None:
            raise InputError("no generator given and no checkpoint to load one from")
        generator = default
    if isinstance(generator, Generator):
        return _Given(generator)
    if isinstance(generator, (str, Path)):
        return functools.partial(load_generator, str(generator))
    if callable(generator):
        return generator
    raise InputError(f"generator must be a Generator, a checkpoint folder or shipped name, or a zero-argument "
                     f"callable returning one; got {type(generator).__name__}")
