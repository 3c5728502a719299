"""The page's fixed parts: its style, its script (plotly plots; mesh views drawn by one shared WebGL context into
each view's own canvas as it scrolls into sight, turned by dragging) and the document around a body. plotly.js comes
from the installed plotly package, inlined once: the page never fetches."""

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
.mv-box { position: relative; width: 160px; height: 160px; cursor: grab; }
.mesh-view.live .mv-box::after { content: "3D"; position: absolute; right: 3px; top: 2px; font-size: 10px; color: #888; } .large .mv-box { width: 240px; height: 240px; }
.mv-png { width: 100%; height: 100%; display: block; } .mv-3d { position: absolute; inset: 0; }
.mesh-view.live .mv-png { visibility: hidden; } .mv-3d canvas { width: 100%; height: 100%; display: block; touch-action: none; }
figcaption { font-size: 0.72em; padding: 2px 4px 4px; line-height: 1.35; } .betti { font-family: monospace; }
.badge { display: inline-block; padding: 0 4px; border-radius: 3px; font-size: 0.95em; color: #fff; }
.badge.bad { background: #c62828; } .badge.ok { background: #4a78c2; }
details { margin-top: 0.8em; } summary { cursor: pointer; color: #1a5fb4; } .files { font-size: 0.85em; }
.more { font-size: 0.8em; color: #666; } img.families { max-width: 100%; } code { background: #f3f3f3; padding: 0 3px; }
"""

SCRIPT = """
(function () {
  "use strict";
  var figs = JSON.parse(document.getElementById("ws-figs").textContent);
  var meshes = JSON.parse(document.getElementById("ws-meshes").textContent);
  var VIEW = JSON.parse(document.getElementById("ws-view").textContent);  // {elev, azim, light, zoom}: as the renders

  // plotly.js (about 5 MB) runs after the first paint, so the text and the static renders show at once; each plot is
  // drawn as it comes near the screen
  function plots() {
    var code = document.createElement("script");
    code.textContent = document.getElementById("ws-plotly").textContent;
    document.head.appendChild(code);
    var near = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (!e.isIntersecting || e.target.dataset.drawn) return;
        e.target.dataset.drawn = "1";
        var f = figs[e.target.dataset.fig];
        Plotly.newPlot(e.target, f.data, f.layout, {displaylogo: false, responsive: true});
        near.unobserve(e.target);
      });
    }, {rootMargin: "400px"});
    document.querySelectorAll(".plot").forEach(function (div) { near.observe(div); });
  }
  requestAnimationFrame(function () { setTimeout(plots, 0); });

  // --- mesh views: one shared WebGL context draws every view into that view's own 2D canvas --------------------
  var glc = document.createElement("canvas");
  var gl = glc.getContext("webgl", {preserveDrawingBuffer: true, premultipliedAlpha: false});
  if (!gl) return;  // no WebGL: the static renders stay
  function shader(type, src) {
    var s = gl.createShader(type);
    gl.shaderSource(s, src);
    gl.compileShader(s);
    return s;
  }
  var prog = gl.createProgram();
  gl.attachShader(prog, shader(gl.VERTEX_SHADER,
    "attribute vec3 p; attribute vec3 n; uniform mat3 R; uniform float zoom; varying float shade; uniform vec3 L;" +
    "void main() { vec3 q = R * p; shade = 0.35 + 0.65 * clamp(dot(n, L), 0.0, 1.0);" +
    "  gl_Position = vec4(q.x * zoom, q.y * zoom, -q.z * 0.5, 1.0); }"));
  gl.attachShader(prog, shader(gl.FRAGMENT_SHADER,
    "precision mediump float; varying float shade; uniform vec3 colour;" +
    "void main() { gl_FragColor = vec4(colour * shade, 1.0); }"));
  gl.linkProgram(prog);
  gl.useProgram(prog);
  var loc = {p: gl.getAttribLocation(prog, "p"), n: gl.getAttribLocation(prog, "n"), R: gl.getUniformLocation(prog, "R"),
             zoom: gl.getUniformLocation(prog, "zoom"), L: gl.getUniformLocation(prog, "L"),
             colour: gl.getUniformLocation(prog, "colour")};
  gl.enable(gl.DEPTH_TEST);

  function bytes(b64) {
    var s = atob(b64), u = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    return u.buffer;
  }
  var buffers = {};
  function upload(key) {  // flat-shaded triangle soup: 3 corners and the face normal per face, (F * 9,) each
    if (buffers[key]) return buffers[key];
    var m = meshes[key];
    var q = new Uint16Array(bytes(m.v)), f = m.f32 ? new Uint32Array(bytes(m.f)) : new Uint16Array(bytes(m.f));
    var nf = f.length / 3, s = 2 * m.box / 65535, pos = new Float32Array(nf * 9), nrm = new Float32Array(nf * 9);
    for (var t = 0; t < nf; t++) {
      var c = [];
      for (var k = 0; k < 3; k++) {
        var v = f[3 * t + k];
        for (var d = 0; d < 3; d++) pos[9 * t + 3 * k + d] = q[3 * v + d] * s - m.box;
      }
      var o = 9 * t, ax = pos[o + 3] - pos[o], ay = pos[o + 4] - pos[o + 1], az = pos[o + 5] - pos[o + 2];
      var bx = pos[o + 6] - pos[o], by = pos[o + 7] - pos[o + 1], bz = pos[o + 8] - pos[o + 2];
      var nx = ay * bz - az * by, ny = az * bx - ax * bz, nz = ax * by - ay * bx, len = Math.hypot(nx, ny, nz) || 1;
      for (var k2 = 0; k2 < 3; k2++) { nrm[o + 3 * k2] = nx / len; nrm[o + 3 * k2 + 1] = ny / len; nrm[o + 3 * k2 + 2] = nz / len; }
    }
    var bp = gl.createBuffer(), bn = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, bp); gl.bufferData(gl.ARRAY_BUFFER, pos, gl.STATIC_DRAW);
    gl.bindBuffer(gl.ARRAY_BUFFER, bn); gl.bufferData(gl.ARRAY_BUFFER, nrm, gl.STATIC_DRAW);
    var hex = m.colour, col = [1, 3, 5].map(function (i) { return parseInt(hex.substr(i, 2), 16) / 255; });
    buffers[key] = {p: bp, n: bn, count: nf * 3, colour: col};
    return buffers[key];
  }
  function rotation(elev, azim) {  // rows: screen right, screen up, towards the viewer (z up, as matplotlib's view_init)
    var e = elev * Math.PI / 180, a = azim * Math.PI / 180;
    var r = [-Math.sin(a), Math.cos(a), 0], u = [-Math.sin(e) * Math.cos(a), -Math.sin(e) * Math.sin(a), Math.cos(e)];
    var d = [Math.cos(e) * Math.cos(a), Math.cos(e) * Math.sin(a), Math.sin(e)];
    return [r[0], u[0], d[0], r[1], u[1], d[1], r[2], u[2], d[2]];  // column-major for uniformMatrix3fv
  }
  function draw(view) {
    var c = view.canvas, b = upload(view.key);
    if (glc.width !== c.width || glc.height !== c.height) { glc.width = c.width; glc.height = c.height; }
    gl.viewport(0, 0, c.width, c.height);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.uniformMatrix3fv(loc.R, false, rotation(view.elev, view.azim));
    gl.uniform1f(loc.zoom, VIEW.zoom);
    gl.uniform3fv(loc.L, VIEW.light);
    gl.uniform3fv(loc.colour, b.colour);
    gl.bindBuffer(gl.ARRAY_BUFFER, b.p); gl.enableVertexAttribArray(loc.p); gl.vertexAttribPointer(loc.p, 3, gl.FLOAT, false, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, b.n); gl.enableVertexAttribArray(loc.n); gl.vertexAttribPointer(loc.n, 3, gl.FLOAT, false, 0, 0);
    gl.drawArrays(gl.TRIANGLES, 0, b.count);
    var ctx = c.getContext("2d");
    ctx.clearRect(0, 0, c.width, c.height);
    ctx.drawImage(glc, 0, 0);
  }
  function mount(el) {
    if (el.querySelector("canvas")) return;
    var box = el.querySelector(".mv-3d"), c = document.createElement("canvas"), px = window.devicePixelRatio || 1;
    c.width = Math.round(box.clientWidth * px); c.height = Math.round(box.clientHeight * px);
    box.appendChild(c);
    var view = {canvas: c, key: el.dataset.mesh, elev: VIEW.elev, azim: VIEW.azim}, drag = null;
    c.addEventListener("pointerdown", function (e) { drag = [e.clientX, e.clientY]; c.setPointerCapture(e.pointerId); });
    c.addEventListener("pointerup", function () { drag = null; });
    c.addEventListener("pointermove", function (e) {
      if (!drag) return;
      view.azim -= (e.clientX - drag[0]) * 0.8;
      view.elev = Math.max(-89, Math.min(89, view.elev + (e.clientY - drag[1]) * 0.8));
      drag = [e.clientX, e.clientY];
      draw(view);
    });
    draw(view);
    el.classList.add("live");
  }
  var seen = new IntersectionObserver(function (entries) {
    entries.forEach(function (e) { if (e.isIntersecting) mount(e.target); });
  }, {rootMargin: "200px"});
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


def document(title: str, body: str, figs: dict[str, Any], meshes: dict[str, Any], view: dict[str, Any]) -> str:
    """The whole page: head, body, the figures' and meshes' data, plotly.js (once) and the page's script."""
    from plotly.offline import get_plotlyjs

    return ("<!doctype html><html lang=en><head><meta charset='utf-8'>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}"
            f"{_json_script('ws-figs', figs)}{_json_script('ws-meshes', meshes)}{_json_script('ws-view', view)}"
            f'<script type="text/plain" id="ws-plotly">{get_plotlyjs()}</script><script>{SCRIPT}</script></body></html>\n')
