"""Shared by the scripts that write a checkpoint derived from another one (ld_grow_depth, ld_swap_autoencoder,
ld_add_self_condition, ld_add_refine): write it with its source's loss log and training record, so the ordinary
trainer's `--continue-from` picks up the history, and check that the derived one samples what its source samples."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from weightspace.runtime.checkpoint import save_checkpoint


def write_derived(src: Path, out: Path, state: dict[str, torch.Tensor], config: dict) -> Path:
    """Save `state` and `config` to `out`, with the loss log and training record of `src` beside them."""
    save_checkpoint(out, state, config)
    for name in ("loss_log.jsonl", "training_record.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    return out


def largest_sample_difference(source: str, derived: str) -> float:
    """The largest latent difference between two family samples (seeds 0 and 1) of each checkpoint."""
    from weightspace.generators.registry import as_generator

    a, b = as_generator(source), as_generator(derived)
    fam = [a.cfg.families[3]] * 2
    with torch.no_grad():
        za = a.sample_latents(a.condition(family=fam), [0, 1])
        zb = b.sample_latents(b.condition(family=fam), [0, 1])
    return float((za - zb).abs().max())


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every such script takes: --checkpoint (the source), --out, --check."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--out", required=True)
    ap.add_argument("--check", action="store_true", help="sample from both and compare (they must agree)")
    return ap


def write_and_check(args: argparse.Namespace, src: Path, state: dict[str, torch.Tensor], config: dict, what: str) -> Path:
    """`write_derived` to args.out, say `what` was written, and with args.check print how far its samples are
    from the source's (0 for a change that starts at zero)."""
    out = write_derived(src, Path(args.out), state, config)
    print(f"wrote {out}: {what}")
    if args.check:
        print(f"largest latent difference between the source's and the derived checkpoint's samples: "
              f"{largest_sample_difference(args.checkpoint, str(out)):.3g}")
    return out
