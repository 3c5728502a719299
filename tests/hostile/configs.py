"""Bad JSON config files: unknown keys, wrong types, negative sizes, non-finite numbers, not JSON."""

from __future__ import annotations

import json
from pathlib import Path


def corpus(folder: Path, section: str = "train", number_field: str = "minutes") -> dict[str, tuple[Path, str]]:
    """name -> (path, text the error must contain besides the file name)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str]] = {}

    def put(name: str, text: str, must: str) -> None:
        p = folder / name
        p.write_text(text)
        out[name] = (p, must)

    put("not_json.json", "{ steps: 10 ", "not valid JSON")
    put("empty.json", "", "not valid JSON")
    put("list.json", "[1, 2, 3]", "object")
    put("unknown_top.json", json.dumps({"trian": {}}), "trian")
    put("unknown_key.json", json.dumps({section: {"stepz": 10}}), "stepz")
    put("wrong_type_str.json", json.dumps({section: {"seed": "ten"}}), "seed")
    put("wrong_type_bool.json", json.dumps({section: {"seed": True}}), "seed")
    put("wrong_type_list.json", json.dumps({section: {"seed": [1]}}), "seed")
    put("negative_size.json", json.dumps({section: {"log_every": -5}}), "log_every")
    put("nan.json", '{"%s": {"%s": NaN}}' % (section, number_field), number_field)
    put("infinity.json", '{"%s": {"%s": Infinity}}' % (section, number_field), number_field)
    put("section_not_object.json", json.dumps({section: 3}), section)
    put("deep.json", "[" * 100_000, "nested too deeply")
    put("huge_int.json", '{"%s": {"seed": %s}}' % (section, "9" * 5000), "not valid JSON")
    (folder / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    out["binary.json"] = (folder / "binary.json", "cannot be read")
    return out
