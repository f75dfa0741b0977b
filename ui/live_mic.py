"""The Live microphone's recorder: a small HTML component whose script sends every sample, in order.

Why not ``gr.Audio(streaming=True)``: Gradio streams a microphone as "the latest value". Each chunk
(0.1 s: the component's ``stream_every`` is not applied to its recorder) is uploaded, then posted to the
running event, which keeps only the newest post; when the server takes longer than one chunk to come
back (a decode running beside it on a busy machine), the chunks posted meanwhile are overwritten.
Measured on 92 s of speech: the browser posted 923 chunks, the handler saw 390, and the recording kept
39 s. That is right for webcam frames, and loses words here.

This recorder captures 16 kHz mono PCM in an AudioWorklet and sends it with ``server_functions`` (each
call its own request, nothing overwritten) one numbered chunk at a time: the next call goes when the
last one has answered and carries all the audio captured meanwhile, so a slow server gets bigger chunks
rather than losing any, and a failed call is sent again with the same number (the server drops copies).
Captions come back from a long poll (``live_wait``) as soon as a decode changes them. Record and Stop
fire the component's ``start_recording`` and ``stop_recording`` events with the recording's id, so the
panel's options and progress work as for any Gradio event.
"""

from __future__ import annotations

import base64
import binascii
import re

import gradio as gr
import numpy as np

RECORDING_ID = re.compile(r"^[0-9a-f-]{16,64}$")  # the page makes it with crypto.randomUUID()
MAX_CHUNK_SAMPLES = 60 * 48000  # a minute of audio in one call (the page waited on a slow server)
WAIT_SECONDS = 10.0  # a long poll answers at least this often

TEMPLATE = """<div class="mic-bar">
<button class="mic-record" type="button">● Record</button>
<button class="mic-stop" type="button" disabled>■ Stop</button>
<span class="mic-clock"></span><span class="mic-level"><span></span></span>
<span class="mic-note"></span>
</div>
<div class="caption-area">${value}</div>"""

CSS = """
.mic-bar { display: flex; align-items: center; gap: 0.6em; margin-bottom: 0.6em; flex-wrap: wrap; }
.mic-bar button { padding: 0.45em 1.1em; border-radius: var(--button-large-radius, 8px); font-weight: 600;
  border: 1px solid var(--button-secondary-border-color, #ccc); cursor: pointer;
  background: var(--button-secondary-background-fill, #f3f4f6); color: var(--button-secondary-text-color, inherit); }
.mic-bar button.mic-record { background: var(--button-primary-background-fill, #f97316);
  color: var(--button-primary-text-color, white); border-color: var(--button-primary-border-color, #f97316); }
.mic-bar button:disabled { opacity: 0.45; cursor: default; }
.mic-clock { font-variant-numeric: tabular-nums; min-width: 3.5em; }
.mic-level { display: inline-block; width: 6em; height: 0.5em; background: #e5e7eb; border-radius: 3px; overflow: hidden; }
.mic-level span { display: block; height: 100%; width: 0; background: #22c55e; }
.mic-note { color: #b45309; }
"""

# Runs once when the component mounts. ``element``, ``server`` and ``trigger`` come from gr.HTML.
JS = r"""
const WORKLET = `class MelangePcm extends AudioWorkletProcessor {
  constructor() {
    super(); this.parts = []; this.n = 0;
    this.port.onmessage = () => this.send();  // Stop: hand over what is held now
  }
  send() {
    const out = new Float32Array(this.n); let o = 0;
    for (const p of this.parts) { out.set(p, o); o += p.length; }
    this.parts = []; this.n = 0;
    this.port.postMessage(out, [out.buffer]);
  }
  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length) {
      const mono = new Float32Array(channels[0].length);
      for (const c of channels) for (let i = 0; i < mono.length; i++) mono[i] += c[i] / channels.length;
      this.parts.push(mono); this.n += mono.length;
      if (this.n >= sampleRate / 20) this.send();
    }
    return true;
  }
}
registerProcessor('melange-pcm', MelangePcm);`;
let live = null;  // the recording in progress
const q = (s) => element.querySelector(s);
const note = (text) => { const n = q('.mic-note'); if (n) n.textContent = text || ''; };
const buttons = (recording) => {
  const r = q('.mic-record'), s = q('.mic-stop');
  if (r) r.disabled = recording; if (s) s.disabled = !recording;
};
const show = (cur, answer) => {
  if (live !== cur || !answer || typeof answer !== 'object') return;
  if (answer.html !== undefined && answer.version >= cur.version) {
    cur.version = answer.version;
    const area = q('.caption-area'); if (area) area.innerHTML = answer.html;
  }
  if (answer.stop) stop();  // the server ended it (time limit)
};
function base64(int16) {
  const bytes = new Uint8Array(int16.buffer); let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
async function send(cur) {
  if (cur.sending || !cur.pending.length) return;
  cur.sending = true;
  const parts = cur.pending; cur.pending = [];
  const n = parts.reduce((a, p) => a + p.length, 0);
  const pcm = new Int16Array(n); let o = 0, energy = 0;
  for (const p of parts) {
    for (let i = 0; i < p.length; i++) { const v = Math.max(-1, Math.min(1, p[i])); pcm[o + i] = Math.round(v * 32767); energy += v * v; }
    o += p.length;
  }
  try {
    const answer = await server.live_chunk({id: cur.id, seq: cur.seq, rate: cur.rate, pcm: base64(pcm)});
    // What was sent, for a page that wants to check it (the browser tests compare it with the saved file).
    element.dispatchEvent(new CustomEvent('live-audio-sent', {detail: {id: cur.id, seq: cur.seq, rate: cur.rate, pcm}}));
    cur.seq += 1; cur.sent += n; cur.failures = 0;
    const clock = q('.mic-clock'); if (clock && live === cur) clock.textContent = (cur.sent / cur.rate).toFixed(1) + ' s';
    const level = q('.mic-level span'); if (level && live === cur) level.style.width = Math.min(100, 400 * Math.sqrt(energy / Math.max(1, n))) + '%';
    if (live === cur) note(answer && answer.note);
    show(cur, answer);
  } catch (e) {  // kept, and sent again with the same number: the server drops a copy it already has
    cur.pending = parts.concat(cur.pending);
    cur.failures += 1;
    if (cur.failures > 20) note('The server does not answer; the audio is kept here and sent when it does.');
  } finally { cur.sending = false; }
}
async function poll(cur) {
  while (live === cur) {
    try { show(cur, await server.live_wait({id: cur.id, version: cur.version})); }
    catch (e) { await new Promise((r) => setTimeout(r, 500)); }
  }
}
async function start() {
  if (live) return;
  const id = (crypto.randomUUID ? crypto.randomUUID() : Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join(''));
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({audio: {channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
  } catch (e) {
    trigger('start_recording', {id: '', error: (e && e.name) || 'NotAllowedError'});
    return;
  }
  let ctx, source;
  try {  // 16 kHz, what Whisper hears; a browser that cannot resample the microphone keeps its own rate
    ctx = new AudioContext({sampleRate: 16000});
    source = ctx.createMediaStreamSource(stream);
  } catch (e) {
    if (ctx) ctx.close();
    ctx = new AudioContext();
    source = ctx.createMediaStreamSource(stream);
  }
  const cur = {id, stream, ctx, rate: ctx.sampleRate, seq: 0, sent: 0, version: -1, pending: [], sending: false, failures: 0};
  try {  // the recording's file is opened before any chunk is sent
    const begun = await server.live_begin({id});
    if (!begun || !begun.ok) throw new Error((begun && begun.error) || 'refused');
  } catch (e) {
    stream.getTracks().forEach((t) => t.stop()); ctx.close();
    note('The server could not start a recording: ' + e.message);
    return;
  }
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([WORKLET], {type: 'application/javascript'})));
  cur.node = new AudioWorkletNode(ctx, 'melange-pcm');
  cur.node.port.onmessage = (e) => { if (e.data.length) cur.pending.push(e.data); };
  source.connect(cur.node);
  cur.node.connect(ctx.destination);  // silent: the worklet writes nothing out, but is pulled
  await ctx.resume();
  live = cur;
  buttons(true); note('');
  const area = q('.caption-area'); if (area) area.innerHTML = '<div class="live-captions"><span class="hint">Listening…</span></div>';
  trigger('start_recording', {id});
  cur.timer = setInterval(() => send(cur), 100);
  poll(cur);
}
async function stop() {
  const cur = live;
  if (!cur || cur.stopping) return;
  cur.stopping = true;
  buttons(false);
  clearInterval(cur.timer);
  const last = new Promise((r) => { cur.node.port.onmessage = (e) => { if (e.data.length) cur.pending.push(e.data); r(); }; });
  cur.node.port.postMessage('flush');
  await Promise.race([last, new Promise((r) => setTimeout(r, 300))]);
  cur.stream.getTracks().forEach((t) => t.stop());
  cur.node.disconnect(); cur.ctx.close();
  while (cur.pending.length || cur.sending) {  // every sample is on the server before Stop is
    if (!cur.sending) await send(cur); else await new Promise((r) => setTimeout(r, 20));
    if (cur.failures > 100) break;
  }
  live = null;
  trigger('stop_recording', {id: cur.id});
}
element.addEventListener('click', (event) => {
  const button = event.target.closest('button');
  if (!button) return;
  if (button.classList.contains('mic-record')) start();
  else if (button.classList.contains('mic-stop')) stop();
});
"""


def decode_chunk(data) -> tuple[str, int, int, np.ndarray]:
    """A chunk call's payload as (recording id, sequence number, sample rate, int16 samples); ValueError if
    it is not one the page sends."""
    if not isinstance(data, dict):
        raise ValueError("a chunk is an object")
    recording, seq, rate, pcm = data.get("id"), data.get("seq"), data.get("rate"), data.get("pcm")
    if not isinstance(recording, str) or not RECORDING_ID.match(recording):
        raise ValueError("unknown recording")
    if not isinstance(seq, int) or seq < 0 or not isinstance(rate, int) or not 8000 <= rate <= 192000:
        raise ValueError("bad chunk number or sample rate")
    if not isinstance(pcm, str) or len(pcm) > 4 * MAX_CHUNK_SAMPLES * 2 // 3 + 4:
        raise ValueError("bad or oversized audio")
    try:
        raw = base64.b64decode(pcm, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError("audio is not base64") from e
    return recording, seq, rate, np.frombuffer(raw[: len(raw) // 2 * 2], np.int16)


def event_data(event) -> dict:
    """What the page sent with a Record or Stop event ({"id": ..., "error": ...})."""
    data = getattr(event, "_data", None)
    return data if isinstance(data, dict) else {}


def recorder(panel, value: str):
    """The recorder component, wired to the panel's live handlers; its value is the captions' HTML. Each call
    names its recording by the page's id, so the panel checks on every call that it is the caller's own.
    (``gr`` is imported at module level: Gradio resolves the ``gr.Request`` annotations in the module's globals,
    and with an unresolvable one it would pass no request at all.)"""
    from ui.access import principal_of

    def live_begin(data, request: gr.Request) -> dict:
        recording = data.get("id") if isinstance(data, dict) else None
        if not isinstance(recording, str) or not RECORDING_ID.match(recording):
            return {"error": "unknown recording"}
        try:
            panel.live_begin(recording, principal_of(request))
        except gr.Error as e:
            return {"error": e.message}
        return {"ok": True}

    def live_chunk(data, request: gr.Request) -> dict:
        try:
            recording, seq, rate, pcm = decode_chunk(data)
        except ValueError as e:
            return {"error": str(e)}
        try:
            return panel.live_chunk(recording, (rate, pcm), seq=seq, principal=principal_of(request))
        except gr.Error as e:
            return {"error": e.message}

    def live_wait(data, request: gr.Request) -> dict:
        recording = data.get("id") if isinstance(data, dict) else None
        version = data.get("version") if isinstance(data, dict) else None
        if not isinstance(recording, str) or not isinstance(version, int):
            return {"error": "bad request"}
        return panel.live_wait(recording, version, WAIT_SECONDS, principal_of(request))

    return gr.HTML(
        value,
        html_template=TEMPLATE,
        css_template=CSS,
        js_on_load=JS,
        server_functions=[live_begin, live_chunk, live_wait],
        elem_id="live-captions",
    )
