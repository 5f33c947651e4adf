r"""Throughput and memory of the jitted train step, per ViViT variant, with baselines in the same run.

  python benchmarks/train_step.py --size=S --json=/tmp/train_step.json            # CPU
  python benchmarks/train_step.py --size=B --dtype=bfloat16 --batch=8 --json=...  # GPU / TPU
  python benchmarks/train_step.py --size=L --variants=factorized_encoder --memory_budget_gb=80

For each variant (`--variants`: spacetime, factorized_encoder, factorized_self_attention_block,
factorized_dot_product_attention = Models 1-4) it builds the config the trainer would run
(configs/k400_{st,fe,fsa,fdpa}.py; `--size=L`: ViViT-L/16x2 as configs/k400_fe_large.py) with
`--batch/--frames/--crop/--dtype/--attention/--remat` applied, and times the real step
(`vivit_jax.train.jit_train_step`: the config's optimizer, the trainer's mesh and shardings,
donated state) on random clips: median ms of `--steps` steps after `--warmup` steps, clips/s,
FLOPs per step (XLA's cost analysis, `train.step_flops`: forward + backward + optimizer),
achieved TFLOP/s, utilisation against a jitted square matmul of the same dtype measured in the
same run, the compiled step's peak memory per device (`memory_analysis()`) and, on GPU,
`device.memory_stats()['peak_bytes_in_use']`.

Baselines in the same run:
  plain     our model with materialised-softmax attention: 'xla' on GPU/TPU (where 'auto' picks the
            fused kernel); 'explicit' on CPU (where 'auto' is 'heads_major').
  hf        Hugging Face `VivitForVideoClassification` (PyTorch, SDPA; CUDA: bf16 autocast, CPU: the
            run's dtype) on Model 1's shapes: forward, cross-entropy, backward, SGD momentum step.
            Skipped, with the reason printed, where torch or transformers are missing.

`--memory_budget_gb=X` adds, per variant, the largest global batch whose compiled step fits X GB
per device (compile only, `vivit_jax.dry_run`; nothing runs). `--breakdown` adds where the step's
time goes: the attention cores, the dense matmuls and the LayerNorm/GELU of every layer, each timed
forward + backward on its own at the variant's shapes, and the rest of the step (embedding, head,
loss, optimizer, fusion differences). `--trainer_steps=N` also runs the whole trainer
(`train.train_and_evaluate` on `dataset_name='synthetic_device'`: device feed, sharding, optimizer,
logging, a checkpoint) for N steps per variant and reports its rate against the bare step's
(the issue's target: within 10%). `--json` writes every figure with the machine, versions,
date and command. Sizes: S (CPU: ViViT at width 384, 4 layers, 8×112² clips), B, L, and `tiny`
(seconds; the test's). Every measurement runs in its own child process, so one case's device
memory (JAX preallocates, PyTorch caches) never limits or pollutes the next; TensorFlow is never
imported. docs/benchmarks.md ("Train step") has the figures and what they mean.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's vivit_jax, installed or not

from vivit_jax.models import paper  # pylint: disable=g-import-not-at-top,wrong-import-position

VARIANTS = {  # attention_config.type → (paper name, the trainer's config of ViViT-B/16x2)
    "spacetime": ("Model 1", "configs/k400_st.py"),
    "factorized_encoder": ("Model 2", "configs/k400_fe.py"),
    "factorized_self_attention_block": ("Model 3", "configs/k400_fsa.py"),
    "factorized_dot_product_attention": ("Model 4", "configs/k400_fdpa.py"),
}
LARGE_FE_CONFIG = "configs/k400_fe_large.py"
# The paper's inference GMACs per 32×224² view (vivit_jax/models/paper.py: Table 2, and §4.2 for
# ViViT-L/16x2 FE; docs/models.md reproduces Table 2 within 0.2%, tests/test_model_sizes.py).
PAPER_GMACS = {**{("B", kind): gmacs for kind, (_, gmacs) in paper.TABLE2_B16X2.items()},
               ("L", "factorized_encoder"): paper.LARGE_FE_GMACS}
PAPER_SHAPE = paper.CLIP  # frames, crop the paper's numbers are for
# Sizes other than the configs' own: ViT fields, and the default clip and batch.
SMALL = {
    "S": dict(hidden_size=384, num_heads=6, mlp_dim=1536, num_layers=4, temporal_layers=2),
    "tiny": dict(hidden_size=32, num_heads=2, mlp_dim=64, num_layers=1, temporal_layers=1),
}
DEFAULTS = {  # size → (frames, crop, batch, steps, warm-up steps)
    "S": (8, 112, 8, 10, 2), "tiny": (4, 32, 2, 3, 2), "B": (32, 224, 8, 10, 3),
    "L": (32, 224, 8, 10, 3),
}
MATMUL_N = {"cpu": 2048, "gpu": 8192, "tpu": 8192}  # square matmul for the peak


# --------------------------------------------------------------------------- configs


def build_config(variant: str, size: str, spec: dict):
  """The trainer's config of `variant` at `size`, with the run's overrides applied."""
  from vivit_jax import config_lib  # pylint: disable=g-import-not-at-top
  from vivit_jax.tools.convert_checkpoint import load_config  # pylint: disable=g-import-not-at-top
  large_fe = size == "L" and variant == "factorized_encoder"
  config = load_config(str(REPO / (LARGE_FE_CONFIG if large_fe else VARIANTS[variant][1])))
  if size == "L" and not large_fe:  # ViViT-L's ViT, the variant's own attention settings
    model = config_lib.vivit_model("L", variant)
    model.classifier = config.model.classifier
    model.attention_config = config.model.attention_config
    config.model = model
  if size in SMALL:
    width = SMALL[size]
    config.model.hidden_size = width["hidden_size"]
    vit = {k: width[k] for k in ("num_heads", "mlp_dim", "num_layers")}
    if variant == "factorized_encoder":
      config.model.spatial_transformer.update(vit)
      config.model.temporal_transformer.update(dict(vit, num_layers=width["temporal_layers"]))
    else:
      config.model.update(vit)
  config.batch_size = spec["batch"]
  config.dataset_configs.num_frames = spec["frames"]
  config.dataset_configs.crop_size = spec["crop"]
  config.model_dtype_str = spec["dtype"]
  config.model.attention_implementation = spec["attention"]
  config.model.remat = spec["remat"]
  return config


def vit_fields(config) -> dict:
  """hidden, heads, mlp, layers of a Model 1/3/4 config (Model 2: its spatial transformer)."""
  m = config.model
  vit = m.spatial_transformer if m.attention_config.type == "factorized_encoder" else m
  return dict(hidden_size=m.hidden_size, num_heads=vit.num_heads, mlp_dim=vit.mlp_dim,
              num_layers=vit.num_layers)


def parse_remat(value: str) -> str:
  """`--remat`: a `model.remat` policy name (models/remat.py); 'true'/'false' as 'full'/'none'."""
  return {"false": "none", "true": "full"}.get(value.lower(), value)


# --------------------------------------------------------------------------- child: our step


def run_ours(spec: dict) -> dict:
  """Times the trainer's jitted step of one config for each of `spec['attentions']`, in rounds
  interleaved with the matmul of `run_matmul` (a shared CPU's load then hits all alike);
  compiles only for the memory budget. Returns {'cases': [one dict per attention], 'matmul'}."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from vivit_jax import config_facts, dry_run, optim, schedules, sharding, train, train_state  # pylint: disable=g-import-not-at-top
  from vivit_jax.models import attention, remat  # pylint: disable=g-import-not-at-top

  rng = jax.random.PRNGKey(0)
  cases = []
  for impl in spec["attentions"]:
    config = build_config(spec["variant"], spec["size"], dict(spec, attention=impl))
    model = config_facts.model(config)
    tx, lr_fn = optim.build_optimizer(config, schedules.steps_per_epoch_of(config))
    shape = config_facts.input_shape(config)
    abstract = train_state.abstract_train_state(model, tx, shape)
    mesh, _ = train_state.make_run_mesh(config, abstract[0])
    rules = sharding.logical_rules(config.get("sharding_rules"))
    out = {"attention": impl, "devices": mesh.size,
           "params": int(sum(x.size for x in jax.tree.leaves(abstract[0]["params"])))}
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      state, shardings = train_state.create_state(model, tx, shape, rng, mesh, rules,
                                                  abstract=abstract)
      jitted, abstract_batch = train.jit_train_step(config, model, tx, lr_fn, shardings, mesh)
      t0 = time.perf_counter()
      with attention.record_paths() as paths:
        compiled = jitted.lower(state, abstract_batch, rng).compile()
    out["compile_s"] = time.perf_counter() - t0
    out["attention_paths"] = sorted({p.describe() for _, p in paths})
    out["flops_per_step"] = train.step_flops(compiled, mesh.size)
    out["compiled_memory"] = dry_run.memory_summary(compiled.memory_analysis())
    clips = jax.ShapeDtypeStruct(
        (config.batch_size // sharding.data_parallel_size(mesh),) + shape, "float32")
    out["kept_for_backward_bytes"] = remat.model_activation_bytes(model, abstract[0]["params"],
                                                                  clips)
    if spec.get("memory_budget_gb") and impl == spec["attentions"][0]:
      out["memory_budget"] = largest_batch(config, spec["memory_budget_gb"],
                                           sharding.data_parallel_size(mesh), dry_run)
    box = {"state": state, "batch": random_batch(abstract_batch, config_facts.num_classes(config))}

    def step(box=box, compiled=compiled):
      box["state"], box["metrics"] = compiled(box["state"], box["batch"], rng)
      return box["state"], box["metrics"]
    cases.append((out, step, box))

  matmul = matmul_fn(spec)
  rounds = max(1, min(int(spec.get("rounds") or 1), spec["steps"]))
  for _, step, _ in cases:
    time_calls(step, warmup=spec["warmup"], steps=0)
  matmul_s = []
  for i in range(rounds):  # `steps` in all, spread over the rounds
    matmul_s += time_calls(matmul, warmup=1, steps=3)
    count = spec["steps"] // rounds + (i < spec["steps"] % rounds)
    for out, step, _ in cases:
      out.setdefault("ms_all", []).extend(
          1e3 * t for t in time_calls(step, warmup=0, steps=count))
  device = jax.devices()[0]
  stats = device.memory_stats() if device.platform == "gpu" else None
  for out, _, box in cases:
    out["ms_per_step"] = statistics.median(out["ms_all"])
    out["finite"] = float(jax.device_get(box["metrics"]["finite"][0])) == 1.0
    # Process-wide peak: the case's own only when it ran alone (one per process on GPU).
    out["device_peak_bytes"] = (int(stats["peak_bytes_in_use"])
                                if stats and len(cases) == 1 else None)
  n = matmul.n
  return {"cases": [out for out, _, _ in cases],
          "matmul": {"n": n, "ms_all": [1e3 * t for t in matmul_s],
                     "tflops": 2 * n ** 3 / statistics.median(matmul_s) / 1e12}}


def random_batch(abstract_batch: dict, num_classes: int) -> dict:
  """A batch of random clips and one-hot labels laid out as the step expects."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rs = np.random.RandomState(0)
  b = abstract_batch["inputs"].shape[0]
  shape = abstract_batch["inputs"].shape
  pixels = abstract_batch["inputs"].dtype == np.uint8  # data_dtype_str='uint8': raw pixels
  host = {"inputs": rs.randint(0, 256, shape) if pixels else rs.uniform(-1, 1, shape),
          "label": np.eye(num_classes)[rs.randint(0, num_classes, b)],
          "batch_mask": np.ones((b,))}
  return {k: jax.device_put(host[k].astype(v.dtype), v.sharding)
          for k, v in abstract_batch.items()}


def largest_batch(config, budget_gb: float, multiple: int, dry_run) -> dict:
  """The largest global batch (a multiple of the data-parallel size) whose compiled step's peak
  per device fits `budget_gb`: doubling, then bisection; compile only."""
  budget = budget_gb * 1e9
  tried = {}

  def peak(batch: int) -> int:
    config.batch_size = batch
    tried[batch] = int(dry_run.dry_run(config)["memory"].get("peak", 0))
    print(f"    memory budget: batch {batch} → {tried[batch] / 1e9:.2f} GB", file=sys.stderr,
          flush=True)
    return tried[batch]

  lo, hi = 0, multiple  # lo fits (0: nothing known), hi is the next to try
  while peak(hi) <= budget:
    lo, hi = hi, hi * 2
    if hi > 1 << 16:
      break
  while hi - lo > multiple:
    mid = (lo + hi) // 2 // multiple * multiple
    if peak(mid) <= budget:
      lo = mid
    else:
      hi = mid
  return {"budget_gb": budget_gb, "largest_batch": lo,
          "peak_gb_at_largest": tried.get(lo, 0) / 1e9 if lo else None,
          "tried": {str(k): v for k, v in sorted(tried.items())}}


# --------------------------------------------------------------------------- child: matmul peak


def matmul_fn(spec: dict):
  """A jitted square matmul in the run's dtype (`fn()` runs it; `fn.n` its size)."""
  import jax  # pylint: disable=g-import-not-at-top
  platform_name = jax.devices()[0].platform
  n = spec.get("matmul_n") or (512 if spec["size"] == "tiny" else MATMUL_N.get(platform_name, 4096))
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n)).astype(spec["dtype"])
  f = jax.jit(lambda x, y: x @ y)
  fn = lambda: f(a, a)  # noqa: E731
  fn.n = n
  return fn


def run_matmul(spec: dict) -> dict:
  """The peak of the square matmul on its own, and what the machine is."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  fn = matmul_fn(spec)
  seconds = statistics.median(time_calls(fn, warmup=2, steps=max(5, spec["steps"])))
  return {"n": fn.n, "dtype": spec["dtype"], "ms": 1e3 * seconds,
          "tflops": 2 * fn.n ** 3 / seconds / 1e12,
          "jax": jax.__version__, "platform": device.platform, "device_kind": device.device_kind,
          "devices": jax.device_count()}


def time_calls(call, *, warmup: int, steps: int) -> list[float]:
  """Seconds of each of `steps` calls of `call()` after `warmup`, each waited for."""
  import jax  # pylint: disable=g-import-not-at-top
  for _ in range(warmup):
    jax.block_until_ready(call())
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - t0)
  return times


# --------------------------------------------------------------------------- child: Hugging Face


def run_hf(spec: dict) -> dict:
  """Hugging Face's ViViT (Model 1) train step on the same shapes: median ms, peak memory."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return {"skipped": f"torch/transformers not installed ({e})"}
  config = build_config("spacetime", spec["size"], spec)
  vit = vit_fields(config)
  t_patch, (h_patch, w_patch) = config.model.patches.size[2], config.model.patches.size[:2]
  cuda = torch.cuda.is_available()
  device = "cuda" if cuda else "cpu"
  hf_config = transformers.VivitConfig(
      image_size=spec["crop"], num_frames=spec["frames"], tubelet_size=[t_patch, h_patch, w_patch],
      num_channels=3, hidden_size=vit["hidden_size"], num_hidden_layers=vit["num_layers"],
      num_attention_heads=vit["num_heads"], intermediate_size=vit["mlp_dim"], hidden_act="gelu",
      num_labels=config.dataset_configs.num_classes)
  hf_config._attn_implementation = "sdpa"  # pylint: disable=protected-access
  torch.manual_seed(0)
  model = transformers.VivitForVideoClassification(hf_config).to(device).train()
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
  b = spec["batch"]
  pixels = torch.randn(b, spec["frames"], 3, spec["crop"], spec["crop"], device=device)
  labels = torch.randint(0, hf_config.num_labels, (b,), device=device)
  bf16 = cuda or spec["dtype"] == "bfloat16"
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)

  def step():
    opt.zero_grad(set_to_none=True)
    with autocast:
      logits = model(pixel_values=pixels).logits
    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
    loss.backward()
    opt.step()
    if cuda:
      torch.cuda.synchronize()
    return loss

  for _ in range(spec["warmup"]):
    step()
  if cuda:
    torch.cuda.reset_peak_memory_stats()
  times = []
  for _ in range(spec["steps"]):
    t0 = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - t0)
  return {"ms_per_step": 1e3 * statistics.median(times), "ms_all": [1e3 * t for t in times],
          "device_peak_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None,
          "params": sum(p.numel() for p in model.parameters()),
          "autocast_bf16": bf16, "attn_implementation": model.config._attn_implementation,  # pylint: disable=protected-access
          "torch": torch.__version__, "transformers": transformers.__version__,
          "torch_threads": torch.get_num_threads(), "loss_finite": bool(torch.isfinite(loss)),
          "device": torch.cuda.get_device_name() if cuda else "cpu"}


# --------------------------------------------------------------------------- child: breakdown


def run_breakdown(spec: dict) -> dict:
  """Where one step's time goes, by op category, each timed forward + backward on its own."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vivit_jax.models import attention, blocks  # pylint: disable=g-import-not-at-top
  from vivit_jax.models.vivit import dtype_named  # pylint: disable=g-import-not-at-top

  config = build_config(spec["variant"], spec["size"], spec)
  dtype = dtype_named(spec["dtype"])
  impl = spec["attention"]
  key = jax.random.PRNGKey(0)
  reps = max(3, spec["steps"] // 2)

  def timed(fn, *shapes, args=None, inputs=()) -> float:
    """Median seconds of jitted forward + backward of `fn(*args, *inputs)`: the output and the
    gradients of `args` (random arrays of `shapes` unless given) for a random cotangent, so
    XLA can neither drop the forward pass nor fold the backward into a reduction."""
    args = args or [jax.random.normal(key, s).astype(dtype) for s in shapes]
    out = jax.eval_shape(fn, *args, *inputs)
    cotangent = jax.random.normal(jax.random.PRNGKey(1), out.shape).astype(out.dtype)

    def fwd_bwd(cotangent, args, inputs):
      y, pullback = jax.vjp(lambda *a: fn(*a, *inputs), *args)
      return y, pullback(cotangent)
    run = jax.jit(fwd_bwd)
    return statistics.median(time_calls(lambda: run(cotangent, args, inputs), warmup=2,
                                        steps=reps))

  rows = []
  for part in layer_parts(config, spec["batch"]):
    kind, shape, count = part["kind"], part["shape"], part["count"]
    if kind == "attention":
      b, l, h, c = shape
      fn = lambda q, k, v: attention.dot_product_attention(q, k, v, implementation=impl)  # noqa: E731
      seconds = timed(fn, shape, shape, shape)
      flops = 3 * 4 * b * h * l * l * c
    elif kind == "dense":
      m, k_in, n_out = shape
      seconds = timed(lambda x, w: x @ w, (m, k_in), (k_in, n_out))
      flops = 3 * 2 * m * k_in * n_out
    elif kind == "embedding":  # the tubelet conv: the kernel's gradient (the clips need none)
      b_ = shape[0]
      embed = Tokeniser(config.model, dtype)
      video = jax.random.normal(key, shape)
      params = embed.init(key, video)
      seconds = timed(lambda p, x: embed.apply(p, x), args=[params], inputs=(video,))
      ph, pw, pt = config.model.patches.size
      tokens = b_ * (shape[1] // pt) * (shape[2] // ph) * (shape[3] // pw)
      flops = 2 * 2 * tokens * ph * pw * pt * 3 * config.model.hidden_size  # forward, kernel grad
    elif kind == "layernorm":
      ln = blocks.layer_norm(dtype=dtype)
      params = ln.init(key, jnp.zeros(shape, dtype))
      seconds = timed(lambda x: ln.apply(params, x), shape)
      flops = 0
    else:  # gelu
      seconds = timed(jax.nn.gelu, shape)
      flops = 0
    rows.append(dict(part, ms_each=1e3 * seconds, ms_total=1e3 * seconds * count,
                     gflops_per_s=flops / seconds / 1e9 if flops else None))
  return {"parts": rows, "attention_implementation": impl}


def layer_parts(config, batch: int) -> list[dict]:
  """The variant's per-layer work: attention cores `[b', l, heads, head_dim]`, dense matmuls
  `[m, k] @ [k, n]`, LayerNorms and GELUs, each with how often a step runs it."""
  m = config.model
  kind = m.attention_config.type
  frames, crop = config.dataset_configs.num_frames, config.dataset_configs.crop_size
  ph, pw, pt = m.patches.size
  t, n = frames // pt, (crop // ph) * (crop // pw)
  d = m.hidden_size
  token = 1 if m.classifier == "token" else 0

  def encoder(name, rows_, attn, layers, vit, attentions_per_layer=1):
    heads, mlp = vit.num_heads, vit.mlp_dim
    parts = [dict(kind="attention", name=f"{name}: attention {label}",
                  shape=(b_, l, h, d // heads), count=layers) for label, (b_, l, h) in attn]
    parts += [
        dict(kind="dense", name=f"{name}: q, k, v, out projections", shape=(rows_, d, d),
             count=4 * attentions_per_layer * layers),
        dict(kind="dense", name=f"{name}: MLP in", shape=(rows_, d, mlp), count=layers),
        dict(kind="dense", name=f"{name}: MLP out", shape=(rows_, mlp, d), count=layers),
        dict(kind="layernorm", name=f"{name}: LayerNorms", shape=(rows_, d),
             count=(attentions_per_layer + 1) * layers + 1),
        dict(kind="gelu", name=f"{name}: GELU", shape=(rows_, mlp), count=layers)]
    return parts

  b, heads = batch, (m.spatial_transformer.num_heads if kind == "factorized_encoder"
                     else m.num_heads)
  embedding = [dict(kind="embedding", name="tubelet embedding (tubelets + matmul)",
                    shape=(b, frames, crop, crop, 3), count=1)]
  if kind == "spacetime":
    l = t * n + token
    return embedding + encoder("encoder", b * l, [(f"{l} tokens", (b, l, heads))],
                               m.num_layers, m)
  if kind == "factorized_encoder":
    s, tt = m.spatial_transformer, m.temporal_transformer
    return (embedding + encoder("spatial", b * t * (n + token), [(f"{n + token} tokens",
                                                      (b * t, n + token, heads))],
                    s.num_layers, s) +
            encoder("temporal", b * (t + token), [(f"{t + token} tokens",
                                                   (b, t + token, tt.num_heads))],
                    tt.num_layers, tt))
  if kind == "factorized_self_attention_block":
    return embedding + encoder("encoder", b * t * n, [(f"time, {t} tokens", (b * n, t, heads)),
                                          (f"space, {n} tokens", (b * t, n, heads))],
                   m.num_layers, m, attentions_per_layer=2)
  half = heads // 2
  return embedding + encoder("encoder", b * t * n, [(f"time heads, {t} tokens", (b * n, t, half)),
                                        (f"space heads, {n} tokens", (b * t, n, half))],
                 m.num_layers, m)


def _tokeniser():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from vivit_jax.models import embed  # pylint: disable=g-import-not-at-top

  class Embedding(nn.Module):
    """The model's own tokeniser (`embed.video_to_tokens`) on its own."""
    model: object
    dtype: object

    @nn.compact
    def __call__(self, video):
      m = self.model
      return embed.video_to_tokens(video.astype(self.dtype), m.temporal_encoding_config,
                                   m.patches.size, m.hidden_size, self.dtype)
  return Embedding


def Tokeniser(model_config, dtype):  # pylint: disable=invalid-name
  return _tokeniser()(model_config, dtype)


# --------------------------------------------------------------------------- child: the trainer


def run_trainer(spec: dict) -> dict:
  """The whole trainer (`train.train_and_evaluate`, mode 'train': the device feed, sharding,
  optimizer, metrics, logging, one checkpoint) on `dataset_name='synthetic_device'` at the
  variant's shapes; its steps/s from metrics.jsonl, the first row (compilation) left out."""
  import tempfile  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vivit_jax import config_check, config_lib, train  # pylint: disable=g-import-not-at-top
  from vivit_jax import metrics  # pylint: disable=g-import-not-at-top

  steps = spec["trainer_steps"]
  config = build_config(spec["variant"], spec["size"], spec)
  config.dataset_name = "synthetic_device"
  config.init_from = ml_collections.ConfigDict()
  config_lib.set_run_length(config, steps=steps)
  config.lr_configs.warmup_epochs = 0  # a short run: no warm-up to fit in
  config.log_summary_steps = max(steps // 5, 1)
  config.checkpoint_steps = steps  # one save, at the end (saving is left out of the rates)
  config.log_eval_steps = 0
  config_check.validate_config(config)
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(config, workdir, mode="train")
    rows = [r for r in metrics.read_metrics(workdir) if "steps_per_sec" in r][1:]
  if not rows:
    return {"error": f"no logged interval after the first ({steps} steps)"}
  rate = statistics.median(r["steps_per_sec"] for r in rows)
  return {"ms_per_step": 1e3 / rate, "steps": steps,
          "steps_per_sec": [r["steps_per_sec"] for r in rows],
          "data_wait_fraction": [r["data_wait_fraction"] for r in rows]}


CHILDREN = {"ours": run_ours, "matmul": run_matmul, "hf": run_hf, "breakdown": run_breakdown,
            "trainer": run_trainer}


# --------------------------------------------------------------------------- the parent


def child(kind: str, spec: dict, timeout: float) -> dict:
  """Runs one measurement in a fresh process; its JSON result, or {'error': ...}."""
  cmd = [sys.executable, __file__, "--_child", kind, "--_spec", json.dumps(spec)]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout:.0f} s"}
  sys.stderr.write(proc.stderr[-4000:] if proc.returncode else "")
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  return {"error": f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}"}


def plain_attention(platform_name: str) -> str:
  """The materialised-softmax baseline: 'xla' where 'auto' means a fused kernel, else 'explicit'."""
  return "xla" if platform_name in ("gpu", "tpu") else "explicit"


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--variants", default=",".join(VARIANTS),
                 help=f"comma-separated, of {list(VARIANTS)}")
  p.add_argument("--size", default="S", choices=["S", "B", "L", "tiny"])
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                 help="model_dtype_str (activations); params stay float32")
  p.add_argument("--batch", type=int, help="global batch (default: per size)")
  p.add_argument("--frames", type=int, help="frames per clip (default: per size)")
  p.add_argument("--crop", type=int, help="crop size (default: per size)")
  p.add_argument("--attention", default="auto",
                 help="model.attention_implementation of our step (default 'auto')")
  p.add_argument("--remat", default="none",
                 help="model.remat: none, full, dots_saveable, ... (models/remat.py)")
  p.add_argument("--steps", type=int, help="timed steps (default: per size)")
  p.add_argument("--warmup", type=int, help="untimed steps first (default: per size)")
  p.add_argument("--rounds", type=int, default=5,
                 help="CPU: the timed steps are split into this many rounds, interleaved with "
                 "the plain baseline's and the matmul's")
  p.add_argument("--memory_budget_gb", type=float,
                 help="also report the largest batch whose compiled step fits this many GB")
  p.add_argument("--breakdown", action="store_true", help="time per op category, per variant")
  p.add_argument("--trainer_steps", type=int, default=0,
                 help="also run the whole trainer on dataset_name='synthetic_device' for this "
                      "many steps per variant; its rate against the bare step's")
  p.add_argument("--no_baselines", action="store_true", help="skip the plain and HF baselines")
  p.add_argument("--matmul_n", type=int, help="matmul size (default 2048 CPU, 8192 GPU/TPU)")
  p.add_argument("--timeout_s", type=float, default=3600, help="per measurement")
  p.add_argument("--json", help="write every figure here")
  p.add_argument("--_child", help=argparse.SUPPRESS)
  p.add_argument("--_spec", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  bad = [v for v in args.variants.split(",") if v not in VARIANTS]
  if bad:
    p.error(f"--variants: unknown {bad}; valid: {list(VARIANTS)}")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args._child:  # pylint: disable=protected-access
    result = CHILDREN[args._child](json.loads(args._spec))  # pylint: disable=protected-access
    print("RESULT " + json.dumps(result), flush=True)
    return 0
  frames, crop, batch, steps, warmup = DEFAULTS[args.size]
  base = dict(size=args.size, dtype=args.dtype, batch=args.batch or batch,
              frames=args.frames or frames, crop=args.crop or crop, steps=args.steps or steps,
              warmup=args.warmup if args.warmup is not None else warmup,
              attention=None if args.attention in ("None", "none") else args.attention,
              remat=parse_remat(args.remat), matmul_n=args.matmul_n, rounds=args.rounds)
  started = datetime.datetime.now(datetime.timezone.utc)
  load_before = os.getloadavg()
  say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

  say("matmul peak ...")
  matmul = child("matmul", base, args.timeout_s)
  if "error" in matmul:
    raise SystemExit(f"the matmul measurement failed: {matmul['error']}")
  plain = plain_attention(matmul["platform"])
  rows = []
  for variant in args.variants.split(","):
    cases = [("ours", base["attention"])]
    if not args.no_baselines and plain != base["attention"]:
      cases.append(("plain", plain))
    # CPU: both cases in one process, timed in interleaved rounds (a shared machine's load hits
    # both alike); accelerators: one process each, so device memory and its peak are the case's.
    groups = [cases] if matmul["platform"] == "cpu" else [[c] for c in cases]
    for group in groups:
      spec = dict(base, variant=variant, attentions=[impl for _, impl in group],
                  memory_budget_gb=args.memory_budget_gb)
      say(f"{VARIANTS[variant][0]} {variant}, attention "
          f"{' and '.join(f'{impl!r} ({role})' for role, impl in group)} ...")
      r = child("ours", spec, args.timeout_s)
      for (role, impl), case in zip(group, r.get("cases") or [r] * len(group)):
        rows.append(summarise(dict(case, variant=variant, role=role, attention=impl,
                                   matmul_same_process=r.get("matmul")), base, matmul))
    if args.trainer_steps:
      say(f"{VARIANTS[variant][0]} the trainer on synthetic_device, {args.trainer_steps} steps ...")
      t = child("trainer", dict(base, variant=variant, trainer_steps=args.trainer_steps),
                args.timeout_s)
      rows.append(summarise(dict(t, variant=variant, role="trainer", attention=base["attention"]),
                            base, matmul))
    if args.breakdown:
      say(f"{VARIANTS[variant][0]} breakdown ...")
      bd = child("breakdown", dict(base, variant=variant), args.timeout_s)
      ours = next(r for r in rows if r["variant"] == variant and r["role"] == "ours")
      ours["breakdown"] = summarise_breakdown(bd, ours.get("ms_per_step"))
  if not args.no_baselines and "spacetime" in args.variants.split(","):
    say("Hugging Face VivitForVideoClassification (Model 1) ...")
    hf = child("hf", dict(base, variant="spacetime"), args.timeout_s)
    rows.append(summarise(dict(hf, variant="spacetime", role="hf", attention="torch sdpa"),
                          base, matmul))
  for r in rows:  # the comparisons measured in this run
    same = {x["role"]: x for x in rows if x["variant"] == r["variant"]}
    if r["role"] == "ours" and r.get("ms_per_step"):
      if same.get("trainer", {}).get("ms_per_step"):
        r["trainer_rate_vs_step"] = r["ms_per_step"] / same["trainer"]["ms_per_step"]
      for other in ("plain", "hf"):
        if same.get(other, {}).get("ms_per_step"):
          r[f"speedup_vs_{other}"] = same[other]["ms_per_step"] / r["ms_per_step"]
  meta = {
      "command": " ".join(["python", "benchmarks/train_step.py"] +
                          (argv if argv is not None else sys.argv[1:])),
      "date_utc": started.strftime("%Y-%m-%d %H:%M"),
      "wall_s": time.time() - started.timestamp(),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
      "device": f"{matmul['devices']} x {matmul['device_kind']} ({matmul['platform']})",
      "jax": matmul["jax"], "python": platform.python_version(),
      "load_average_before": load_before, "load_average_after": os.getloadavg(),
      "matmul": matmul, "settings": base, "plain_attention": plain,
  }
  print(table(rows, meta))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
  return 0


def summarise(r: dict, base: dict, matmul: dict) -> dict:
  """Adds clips/s, TFLOP/s, utilisation and the paper's figure to one measured row."""
  ms = r.get("ms_per_step")
  if ms:
    r["clips_per_s"] = base["batch"] / (ms / 1e3)
  flops = r.get("flops_per_step")
  if ms and flops:
    r["tflops_per_s"] = flops / (ms / 1e3) / 1e12
    # Against the matmul timed between this row's steps where there is one, else the run's.
    peak = (r.get("matmul_same_process") or matmul)["tflops"]
    r["utilisation"] = r["tflops_per_s"] / peak
    r["gflops_per_clip"] = flops / base["batch"] / 1e9
  gmacs = PAPER_GMACS.get((base["size"], r["variant"]))
  if gmacs and r["role"] != "hf" and (base["frames"], base["crop"]) == PAPER_SHAPE:
    # Paper: forward multiply-accumulates per view; ours: forward + backward FLOPs per clip.
    r["paper_gmacs_per_view"] = gmacs
    r["paper_train_gflops_per_clip"] = 6 * gmacs  # 2 FLOPs per MAC, backward ≈ 2× forward
  return r


def summarise_breakdown(bd: dict, step_ms: float | None) -> dict:
  if "error" in bd:
    return bd
  categories = {"embedding": "tubelet embedding", "attention": "attention cores",
                "dense": "dense matmuls",
                "layernorm": "LayerNorm + GELU", "gelu": "LayerNorm + GELU"}
  totals: dict[str, float] = {}
  for part in bd["parts"]:
    name = categories[part["kind"]]
    totals[name] = totals.get(name, 0.0) + part["ms_total"]
  if step_ms:
    totals["rest of the step"] = step_ms - sum(totals.values())
  return dict(bd, ms_by_category=totals)


def _fmt(x, spec: str, missing: str = "—") -> str:
  return missing if x is None else format(x, spec)


def table(rows: list[dict], meta: dict) -> str:
  m = meta["matmul"]
  gb = lambda b: None if b is None else b / 1e9  # noqa: E731
  lines = [
      f"train step, size {meta['settings']['size']}, {meta['settings']['dtype']}, batch "
      f"{meta['settings']['batch']}, {meta['settings']['frames']}×{meta['settings']['crop']}², "
      f"remat {meta['settings']['remat']!r}; {meta['device']}; jax {meta['jax']}; "
      f"{meta['date_utc']} UTC",
      f"matmul peak ({m['n']}³ {m['dtype']}): {m['tflops']:.3f} TFLOP/s; load average "
      f"{meta['load_average_before'][0]:.1f} before, {meta['load_average_after'][0]:.1f} after",
      "",
      "| variant | run | attention | ms/step | clips/s | GFLOP/clip (fwd+bwd) | paper GMAC/view "
      "(×6) | TFLOP/s | util. | compiled peak GB | device peak GB | kept for bwd GB | vs plain "
      "| vs HF |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    if "error" in r or "skipped" in r:
      lines.append(f"| {VARIANTS[r['variant']][0]} | {r['role']} | {r['attention']} | "
                   f"{r.get('error') or r.get('skipped')} |")
      continue
    paper = r.get("paper_gmacs_per_view")
    lines.append(
        f"| {VARIANTS[r['variant']][0]} | {r['role']} | {r['attention']} | "
        f"{r['ms_per_step']:.1f} | {r['clips_per_s']:.1f} | {_fmt(r.get('gflops_per_clip'), '.2f')}"
        f" | {_fmt(paper, '.1f')}{'' if paper is None else f' ({6 * paper:.0f})'} | "
        f"{_fmt(r.get('tflops_per_s'), '.3f')} | {_fmt(r.get('utilisation'), '.0%')} | "
        f"{_fmt(gb((r.get('compiled_memory') or {}).get('peak')), '.2f')} | "
        f"{_fmt(gb(r.get('device_peak_bytes')), '.2f')} | "
        f"{_fmt(gb(r.get('kept_for_backward_bytes')), '.2f')} | "
        f"{_fmt(r.get('speedup_vs_plain'), '.2f')}{'×' if r.get('speedup_vs_plain') else ''} | "
        f"{_fmt(r.get('speedup_vs_hf'), '.2f')}{'×' if r.get('speedup_vs_hf') else ''} |")
  for r in rows:
    if r.get("trainer_rate_vs_step"):
      lines.append(f"\n{VARIANTS[r['variant']][0]}: the trainer on synthetic_device runs at "
                   f"{r['trainer_rate_vs_step']:.0%} of the bare step's rate (target ≥ 90%)")
  for r in rows:
    budget = r.get("memory_budget")
    if budget:
      lines.append(f"\n{VARIANTS[r['variant']][0]}: largest batch within "
                   f"{budget['budget_gb']:g} GB (compiled peak per device): "
                   f"{budget['largest_batch']}"
                   + (f" ({budget['peak_gb_at_largest']:.2f} GB)" if budget['largest_batch']
                      else ""))
    bd = r.get("breakdown")
    if bd and "ms_by_category" in bd:
      lines.append(f"\n{VARIANTS[r['variant']][0]} ({r['attention']}): where the "
                   f"{r['ms_per_step']:.1f} ms go (each part timed fwd+bwd on its own)")
      for name, ms in bd["ms_by_category"].items():
        lines.append(f"  {name:<18} {ms:8.1f} ms  {ms / r['ms_per_step']:6.0%}")
      for part in bd["parts"]:
        rate = part["gflops_per_s"]
        lines.append(f"    {part['name']:<44} {part['count']:3d} × {part['ms_each']:7.2f} ms"
                     + ("" if rate is None else f"  ({rate:.0f} GFLOP/s)"))
    elif bd:
      lines.append(f"\n{VARIANTS[r['variant']][0]} breakdown failed: {bd.get('error')}")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
