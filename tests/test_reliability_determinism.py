"""Determinism on CPU: the same commands with the same seed, in two separate processes, write byte-identical files."""

from __future__ import annotations

from pathlib import Path

from hostile import checkpoints
from hostile.cli import run_batch


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".cache" not in p.parts}


def test_same_seed_same_bytes_across_processes(tmp_path):
    ck = checkpoints.tiny_latent_diffusion(tmp_path / "ck")
    runs = []
    for name in ("a", "b"):
        root = tmp_path / name
        data = root / "data"
        cases = [
            ["data", "make", "--family", "table,chair,dumbbell", "--count", "3", "--resolution", "16", "--points", "256", "--seed", "7", "--out", data],
            ["generate", "--checkpoint", ck, "--family", "torus", "--seed", "3", "--count", "2", "--out", root / "gen"],
            ["analyze", "topology", root / "gen" / "grids" / "000-seed3.npy", "--json"],
            ["analyze", "compare", root / "gen" / "grids" / "000-seed3.npy", root / "gen" / "grids" / "001-seed4.npy",
             "--n", "2000", "--seed", "1", "--json"],
        ]
        root.mkdir()
        results = run_batch(cases, root)  # one process per run: nothing is shared between a and b
        assert all(r["rc"] == 0 for r in results), [(r["argv"][:2], r["stderr"][-300:]) for r in results]
        runs.append((root, results))
    (a, ra), (b, rb) = runs
    for sub in ("data", "gen"):
        fa, fb = _files(a / sub), _files(b / sub)
        assert sorted(fa) == sorted(fb)
        assert any(k.endswith(".npy") for k in fa)
        differ = [k for k in fa if fa[k] != fb[k] and not k.endswith(("generate.json", "summary.json"))]
        assert not differ, f"{sub}: files differ between runs: {differ}"
    # the JSON records hold the output folder's own path, which differs; everything else must match
    for sub, name in (("data", "summary.json"), ("gen", "generate.json")):
        ta = (a / sub / name).read_text().replace(str(a), "ROOT")
        tb = (b / sub / name).read_text().replace(str(b), "ROOT")
        assert ta == tb
    for x, y in zip(ra[2:], rb[2:]):  # analysis JSON on stdout: the same numbers, to the last digit
        assert x["stdout"].replace(str(a), "ROOT") == y["stdout"].replace(str(b), "ROOT")
