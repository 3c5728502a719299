"""The page's fixed parts: its style, its script (plots, and 3D mesh views mounted as they scroll into sight) and the
document around a body. plotly.js comes from the installed plotly package, inlined once: the page never fetches."""

from __future__ import annotations

import html
import json
import math
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1180px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } .sub { color: #555; margin-top: 0; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ccc; } h2 small { color: #666; font-weight: normal; }
h3 { font-size: 1em; margin: 1em 0 0.4em; } h4 { font-size: 0.9em; margin: 1em 0 0.3em; }
.claims { color: #444; font-size: 0.92em; } .claim { color: #444; font-style: italic; margin: 0.3em 0; }
.verdict-line { margin: 0.45em 0; line-height: 1.45; } .note { color: #7a5b00; font-size: 0.88em; }
.verdict { display: inline-block; padding: 0 0.5em; border-radius: 3px; font-size: 0.85em; font-weight: 600; color: #fff; }
.v-supported { background: #2e7d32; } .v-not-supported { background: #c62828; } .v-inconclusive { background: #8d6e00; }
.v-refused { background: #616161; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.4em 0; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: right; } th { background: #f4f4f4; }
table.glance td, table.glance th { text-align: center; padding: 4px 10px; }
.figures { display: flex; flex-wrap: wrap; gap: 10px; } .plot { flex: 1 1 520px; min-width: 420px; min-height: 200px; }
.gallery, .pair-cards { display: flex; flex-wrap: wrap; gap: 6px; } .pairs { display: flex; flex-wrap: wrap; gap: 18px; }
.pair p { margin: 0.2em 0; font-size: 0.88em; }
.mesh-view { margin: 0; width: 160px; border: 1px solid #e4e4e4; border-radius: 4px; background: #fafafa; }
.mesh-view.large { width: 240px; }
.mv-box { position: relative; width: 160px; height: 160px; cursor: grab; } .large .mv-box { width: 240px; height: 240px; }
.mv-png { width: 100%; height: 100%; display: block; } .mv-3d { position: absolute; inset: 0; }
.mesh-view.live .mv-png { visibility: hidden; }
figcaption { font-size: 0.72em; padding: 2px 4px 4px; line-height: 1.35; } .betti { font-family: monospace; }
.badge { display: inline-block; padding: 0 4px; border-radius: 3px; font-size: 0.95em; color: #fff; }
.badge.bad { background: #c62828; } .badge.ok { background: #4a78c2; }
details { margin-top: 0.8em; } summary { cursor: pointer; color: #1a5fb4; } .files { font-size: 0.85em; }
.more { font-size: 0.8em; color: #666; } code { background: #f3f3f3; padding: 0 3px; }
"""

SCRIPT = """
(function () {
  "use strict";
  var figs = JSON.parse(document.getElementById("ws-figs").textContent);
  var meshes = JSON.parse(document.getElementById("ws-meshes").textContent);
  var EYE = JSON.parse(document.getElementById("ws-eye").textContent);
  var MAX_LIVE = 10;  // WebGL contexts alive at once (browsers drop the oldest past about 16)

  document.querySelectorAll(".plot").forEach(function (div) {
    var f = figs[div.dataset.fig];
    Plotly.newPlot(div, f.data, f.layout, {displaylogo: false, responsive: true});
  });

  function bytes(b64) {
    var s = atob(b64), u = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    return u.buffer;
  }
  function trace(m) {
    var q = new Uint16Array(bytes(m.v)), f = m.f32 ? new Uint32Array(bytes(m.f)) : new Uint16Array(bytes(m.f));
    var nv = q.length / 3, nf = f.length / 3, s = 2 * m.box / 65535;
    var x = new Float32Array(nv), y = new Float32Array(nv), z = new Float32Array(nv);
    for (var a = 0; a < nv; a++) { x[a] = q[3 * a] * s - m.box; y[a] = q[3 * a + 1] * s - m.box; z[a] = q[3 * a + 2] * s - m.box; }
    var i = new Uint32Array(nf), j = new Uint32Array(nf), k = new Uint32Array(nf);
    for (var b = 0; b < nf; b++) { i[b] = f[3 * b]; j[b] = f[3 * b + 1]; k[b] = f[3 * b + 2]; }
    return {type: "mesh3d", x: x, y: y, z: z, i: i, j: j, k: k, color: m.colour, flatshading: true, hoverinfo: "skip",
            lighting: {ambient: 0.45, diffuse: 0.75, specular: 0.05, roughness: 0.9}, lightposition: {x: 300, y: -500, z: 800}};
  }
  var axis = {range: [-1, 1], visible: false};
  var live = new Set(), visible = new Set();
  function unmount(el) {
    Plotly.purge(el.querySelector(".mv-3d"));
    el.classList.remove("live");
    live.delete(el);
  }
  function mount(el) {
    if (live.has(el)) return;
    if (live.size >= MAX_LIVE) {
      var gone = Array.from(live).find(function (o) { return !visible.has(o); });
      if (!gone) return;
      unmount(gone);
    }
    live.add(el);
    var layout = {margin: {l: 0, r: 0, t: 0, b: 0}, paper_bgcolor: "rgba(0,0,0,0)", showlegend: false,
                  scene: {xaxis: axis, yaxis: axis, zaxis: axis, aspectmode: "cube", camera: {eye: EYE, up: {x: 0, y: 0, z: 1}}}};
    Plotly.newPlot(el.querySelector(".mv-3d"), [trace(meshes[el.dataset.mesh])], layout,
                   {displayModeBar: false, responsive: false}).then(function () {
      if (live.has(el)) el.classList.add("live");
    });
  }
  var seen = new IntersectionObserver(function (entries) {
    entries.forEach(function (e) { if (e.isIntersecting) visible.add(e.target); else visible.delete(e.target); });
    visible.forEach(mount);
  }, {rootMargin: "80px"});
  document.querySelectorAll(".mesh-view").forEach(function (el) { seen.observe(el); });
})();
"""


def _finite(x: Any) -> Any:
    """NaN and infinities become null: the page's JSON.parse accepts strict JSON only."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _json_script(element_id: str, value: Any) -> str:
    # "</" would end the script element early: JSON allows "<\\/" for it
    text = json.dumps(_finite(value), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def document(title: str, body: str, figs: dict[str, Any], meshes: dict[str, Any], eye: dict[str, float]) -> str:
    """The whole page: head, body, the figures' and meshes' data, plotly.js (once) and the page's script."""
    from plotly.offline import get_plotlyjs

    return ("<!doctype html><html lang=en><head><meta charset='utf-8'>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}"
            f"{_json_script('ws-figs', figs)}{_json_script('ws-meshes', meshes)}{_json_script('ws-eye', eye)}"
            f"<script>{get_plotlyjs()}</script><script>{SCRIPT}</script></body></html>\n")
