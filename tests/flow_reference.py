"""Hand-written PyTorch reference of JanusFlow (tests only; needs torch and transformers).

Written from the equations in shared/reference/janus_models.md (sections 1.2, 1.6, 1.7 and 3.3), NCHW like the
original. Module and attribute names equal those of the official `janus/janusflow/models/{uvit,modeling_vlm}.py`
(and timm's ViT for the SigLIP tower), so `JanusFlowReference.state_dict()` keys are the JanusFlow checkpoint keys.
Encoder and decoder keep the official interfaces: `enc(z, t) -> (x_emb, t_emb, hs)`, `dec(x, hs, t_emb) -> v`.
`JanusFlowReference.generate_latents` is the official text-to-image loop (README / app_janusflow), in float32.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def sinusoidal_timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
  """float32[B, dim] = [cos(t f_k), sin(t f_k)], f_k = exp(-ln(max_period) k / (dim // 2)); computed in float32."""
  half = dim // 2
  k = torch.arange(half, dtype=torch.float32, device=t.device)
  freqs = torch.exp((-math.log(max_period) * k) / half)
  args = t.reshape(-1).float()[:, None] * freqs[None, :]
  out = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
  if dim % 2:
    out = torch.cat([out, out.new_zeros(out.shape[0], 1)], dim=1)
  return out


class RMSNorm(nn.Module):
  """LLaMA RMSNorm over the last axis: weight * (x * rsqrt(mean(x^2) + eps)) with float32 statistics."""

  def __init__(self, dim: int, eps: float = 1e-6):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(dim))
    self.variance_epsilon = eps

  def forward(self, x):
    in_dtype = x.dtype
    xf = x.float()
    normed = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.variance_epsilon)
    return self.weight * normed.to(in_dtype)


def _channels_last(fn, x):
  """Applies `fn` on the channel axis of an NCHW tensor."""
  return fn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GlobalResponseNorm(nn.Module):
  """GRN on NHWC input: bias + (weight * nx + 1) * x with nx = |x|_HW / (mean_C |x|_HW + 1e-6)."""

  def __init__(self, dim: int):
    super().__init__()
    self.weight = nn.Parameter(torch.zeros(1, 1, 1, dim))
    self.bias = nn.Parameter(torch.zeros(1, 1, 1, dim))

  def forward(self, x):
    gx = x.square().sum(dim=(1, 2), keepdim=True).sqrt()
    nx = gx / (gx.mean(dim=3, keepdim=True) + 1e-6)
    return self.bias + x * (1 + self.weight * nx)


class ConvNextBlock(nn.Module):
  """Depthwise 7x7 -> RMSNorm -> Linear(C, 4C) -> GELU -> GRN -> Linear(4C, C), + residual, then AdaLN."""

  def __init__(self, channels: int, norm_eps: float, use_bias: bool, hidden_size: int, res_ffn_factor: int = 4):
    super().__init__()
    inner = channels * res_ffn_factor
    self.depthwise = nn.Conv2d(channels, channels, 7, padding=3, groups=channels, bias=use_bias)
    self.norm = RMSNorm(channels, norm_eps)
    self.channelwise_linear_1 = nn.Linear(channels, inner, bias=use_bias)
    self.channelwise_act = nn.GELU()
    self.channelwise_norm = GlobalResponseNorm(inner)
    self.channelwise_linear_2 = nn.Linear(inner, channels, bias=use_bias)
    self.channelwise_dropout = nn.Dropout(0.0)
    self.cond_embeds_mapper = nn.Linear(hidden_size, 2 * channels, bias=use_bias)

  def forward(self, x, cond):
    def ffn(h):
      h = self.channelwise_act(self.channelwise_linear_1(self.norm(h)))
      return self.channelwise_dropout(self.channelwise_linear_2(self.channelwise_norm(h)))
    y = x + _channels_last(ffn, self.depthwise(x))
    scale, shift = self.cond_embeds_mapper(F.silu(cond)).chunk(2, dim=1)
    return y * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class UVitBlock(nn.Module):
  """A stack of ConvNextBlocks (`res_blocks`); no down/upsampling in JanusFlow."""

  def __init__(self, channels: int, num_res_blocks: int, hidden_size: int, norm_eps: float, use_bias: bool):
    super().__init__()
    self.res_blocks = nn.ModuleList(
        [ConvNextBlock(channels, norm_eps, use_bias, hidden_size) for _ in range(num_res_blocks)])

  def forward(self, x, emb):
    for blk in self.res_blocks:
      x = blk(x, emb)
    return x


class TimestepEmbedding(nn.Module):
  """linear_1 -> SiLU -> linear_2."""

  def __init__(self, in_channels: int, dim: int, bias: bool = True):
    super().__init__()
    self.linear_1 = nn.Linear(in_channels, dim, bias=bias)
    self.act = nn.SiLU()
    self.linear_2 = nn.Linear(dim, dim, bias=bias)

  def forward(self, x):
    return self.linear_2(self.act(self.linear_1(x)))


class Unpatchify(nn.Module):
  """RMSNorm over channels, 1x1 conv to out * p * p channels, PixelShuffle(p)."""

  def __init__(self, in_channels: int, out_channels: int, patch_size: int, bias: bool, eps: float):
    super().__init__()
    self.norm = RMSNorm(in_channels, eps)
    self.unpatch_conv = nn.Conv2d(in_channels, out_channels * patch_size ** 2, 1, bias=bias)
    self.pixel_shuffle = nn.PixelShuffle(patch_size)

  def forward(self, x):
    return self.pixel_shuffle(self.unpatch_conv(_channels_last(self.norm, x)))


def _last(c):
  return c[-1] if isinstance(c, (list, tuple)) else c


class ShallowUViTEncoder(nn.Module):
  """z float[B, Cin, H, W], t float[B] -> (x_emb [B, C, H/s, W/s], t_emb [B, hidden], hs = [x_emb])."""

  def __init__(self, input_channels=4, stride=2, kernel_size=2, padding=0, block_out_channels=(768,),
               layers_in_middle=2, hidden_size=2048, use_bias=True, norm_eps=1e-6, **unused):
    super().__init__()
    c = _last(block_out_channels)
    self.time_embed_dim = c
    self.time_embed = TimestepEmbedding(c, hidden_size, bias=use_bias)
    if padding is None:
      padding = math.ceil(kernel_size - stride)
    self.in_conv = nn.Conv2d(input_channels, c, kernel_size, stride=stride, padding=padding)
    self.mid_block = UVitBlock(c, layers_in_middle, hidden_size, norm_eps, use_bias)

  def forward(self, z, t):
    t_emb = sinusoidal_timestep_embedding(t, self.time_embed_dim).reshape(z.shape[0], -1).to(z.dtype)
    t_emb = self.time_embed(t_emb)
    x_emb = self.mid_block(self.in_conv(z), t_emb)
    return x_emb, t_emb, [x_emb]


class ShallowUViTDecoder(nn.Module):
  """x float[B, C, h, w], hs = [skip], t_emb -> v float[B, out, 2h, 2w]."""

  def __init__(self, in_channels=768, out_channels=4, block_out_channels=(768,), upsamples=1, layers_in_middle=2,
               hidden_size=2048, norm_eps=1e-6, use_bias=True, **unused):
    super().__init__()
    if upsamples != 1:
      raise NotImplementedError("the reference covers the shipped upsamples=1 only")
    width = in_channels + _last(block_out_channels)
    self.mid_block = UVitBlock(width, layers_in_middle, hidden_size, norm_eps, use_bias)
    self.out_convs = nn.ModuleList([Unpatchify(width, out_channels, 2, use_bias, norm_eps)])
    self.input_norm = RMSNorm(in_channels, norm_eps)

  def forward(self, x, hs, t_emb):
    x = torch.cat([_channels_last(self.input_norm, x), hs.pop()], dim=1)
    x = self.mid_block(x, t_emb)
    for conv in self.out_convs:
      x = conv(x)
    assert not hs
    return x


def uvit_kwargs(cfg) -> tuple[dict, dict]:
  """(encoder kwargs, decoder kwargs) for a `janus_jax` UViTConfig, in the official config.json vocabulary."""
  enc = dict(input_channels=cfg.latent_channels, stride=cfg.patch_size, kernel_size=cfg.patch_size, padding=0,
             block_out_channels=[cfg.channels], layers_in_middle=cfg.layers_in_middle, hidden_size=cfg.hidden_size,
             use_bias=cfg.use_bias, norm_eps=cfg.norm_eps)
  dec = dict(in_channels=cfg.channels, out_channels=cfg.latent_channels, block_out_channels=[cfg.channels],
             upsamples=1, layers_in_middle=cfg.layers_in_middle, hidden_size=cfg.hidden_size,
             norm_eps=cfg.norm_eps, use_bias=cfg.use_bias)
  if cfg.patch_size != 2:
    raise NotImplementedError("the official decoder hard-codes patch_size=2")
  return enc, dec


def perturb_(module: nn.Module, seed: int, scale: float = 0.1, grn_scale: float = 0.5) -> nn.Module:
  """Adds noise to norm weights, biases (1-D params) and the zero-initialised GRN params, so that a parity test
  notices a mis-mapped norm, bias or GRN (fresh modules have ones / zeros there)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for sub in module.modules():
      for p in sub.parameters(recurse=False):
        if isinstance(sub, GlobalResponseNorm):
          p.add_(grn_scale * torch.randn(p.shape, generator=g))
        elif p.ndim == 1:
          p.add_(scale * torch.randn(p.shape, generator=g))
  return module


def build_reference_uvit(cfg, seed: int = 0, perturb: bool = True):
  """Random eval-mode (encoder, decoder) for a `janus_jax` UViTConfig."""
  enc_kw, dec_kw = uvit_kwargs(cfg)
  torch.manual_seed(seed)
  enc, dec = ShallowUViTEncoder(**enc_kw).eval(), ShallowUViTDecoder(**dec_kw).eval()
  if perturb:
    perturb_(enc, seed + 1)
    perturb_(dec, seed + 2)
  return enc, dec


def state_numpy(module: nn.Module) -> dict[str, np.ndarray]:
  """state_dict as float32 numpy arrays."""
  return {k: v.detach().float().numpy().copy() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------------------------------
# SigLIP understanding tower (timm VisionTransformer names, as under `vision_und_enc_model.vision_tower.`)


class PatchEmbed(nn.Module):
  """Conv patchify (kernel = stride = patch, with bias): [B, 3, H, W] -> [B, N, W] raster order."""

  def __init__(self, patch: int, width: int):
    super().__init__()
    self.proj = nn.Conv2d(3, width, patch, stride=patch)

  def forward(self, x):
    return self.proj(x).flatten(2).transpose(1, 2)


class ViTAttention(nn.Module):
  """Unmasked MHA with one fused qkv Linear (rows [q | k | v], head-major) and an output `proj`."""

  def __init__(self, width: int, heads: int):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(width, 3 * width)
    self.proj = nn.Linear(width, width)

  def forward(self, x):
    b, n, w = x.shape
    hd = w // self.heads
    q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
    probs = torch.softmax((q @ k.transpose(-1, -2)) * hd ** -0.5, dim=-1)
    return self.proj((probs @ v).transpose(1, 2).reshape(b, n, w))


class ViTMlp(nn.Module):
  def __init__(self, width: int, mlp_dim: int):
    super().__init__()
    self.fc1 = nn.Linear(width, mlp_dim)
    self.act = nn.GELU()
    self.fc2 = nn.Linear(mlp_dim, width)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
  """Pre-LN block: x += attn(norm1(x)); x += mlp(norm2(x))."""

  def __init__(self, width: int, heads: int, mlp_dim: int, eps: float):
    super().__init__()
    self.norm1 = nn.LayerNorm(width, eps=eps)
    self.attn = ViTAttention(width, heads)
    self.norm2 = nn.LayerNorm(width, eps=eps)
    self.mlp = ViTMlp(width, mlp_dim)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class AttentionPoolStub(nn.Module):
  """Stands in for timm's `AttentionPoolLatent` head: built (so its tensors are in the checkpoint), never run."""

  def __init__(self, width: int):
    super().__init__()
    self.latent = nn.Parameter(torch.randn(1, 1, width) * 0.02)
    self.q = nn.Linear(width, width)


class VisionTransformer(nn.Module):
  """SigLIP ViT as Janus builds it: patchify + learned pos_embed (no class token), `num_blocks` blocks, final norm.
  [B, 3, H, W] -> [B, N, width]."""

  def __init__(self, vision_cfg):
    super().__init__()
    v = vision_cfg
    self.patch_embed = PatchEmbed(v.patch_size, v.width)
    self.pos_embed = nn.Parameter(torch.randn(1, v.num_patches, v.width) * 0.02)
    self.blocks = nn.ModuleList([ViTBlock(v.width, v.num_heads, v.mlp_dim, v.layer_norm_eps)
                                 for _ in range(v.num_blocks)])
    self.norm = nn.LayerNorm(v.width, eps=v.layer_norm_eps)
    self.attn_pool = AttentionPoolStub(v.width)

  def forward(self, x):
    x = self.patch_embed(x) + self.pos_embed
    for blk in self.blocks:
      x = blk(x)
    return self.norm(x)


class CLIPVisionTower(nn.Module):
  """`vision_und_enc_model`: images [B, 3, H, W] in [-1, 1] -> features [B, N, width] (select_feature 'same')."""

  def __init__(self, vision_cfg):
    super().__init__()
    self.vision_tower = VisionTransformer(vision_cfg)

  def forward(self, images):
    return self.vision_tower(images)


# --------------------------------------------------------------------------------------------------------------
# JanusFlow MultiModalityCausalLM


def llama_config(llm_cfg):
  """transformers LlamaConfig (eager attention, untied) for a janus_jax LlamaConfig."""
  from transformers import LlamaConfig  # pylint: disable=import-outside-toplevel
  return LlamaConfig(vocab_size=llm_cfg.vocab_size, hidden_size=llm_cfg.hidden_size,
                     intermediate_size=llm_cfg.intermediate_size, num_hidden_layers=llm_cfg.num_layers,
                     num_attention_heads=llm_cfg.num_heads, num_key_value_heads=llm_cfg.num_kv_heads,
                     max_position_embeddings=llm_cfg.max_position_embeddings, rms_norm_eps=llm_cfg.rms_norm_eps,
                     rope_theta=llm_cfg.rope_theta, tie_word_embeddings=False, attn_implementation="eager")


class JanusFlowReference(nn.Module):
  """The official JanusFlow model's module tree (attribute names = checkpoint prefixes), built from a janus_jax
  JanusConfig (generation_mode 'flow'); the aligner widths follow the config instead of the hard-coded 1024 /
  2048 / 768 of the release."""

  def __init__(self, cfg):
    super().__init__()
    from transformers import LlamaForCausalLM  # pylint: disable=import-outside-toplevel
    d, u = cfg.llm.hidden_size, cfg.uvit
    self.cfg = cfg
    self.vision_und_enc_model = CLIPVisionTower(cfg.vision)
    self.vision_und_enc_aligner = nn.Linear(cfg.vision.width, d, bias=True)
    self.beg_of_und_embed = nn.Parameter(torch.zeros(1, d))
    enc_kw, dec_kw = uvit_kwargs(u)
    self.vision_gen_enc_model = ShallowUViTEncoder(**enc_kw)
    self.vision_gen_enc_aligner = nn.Linear(u.channels, d, bias=True)
    self.vision_gen_dec_model = ShallowUViTDecoder(**dec_kw)
    self.language_model = LlamaForCausalLM(llama_config(cfg.llm))
    self.vision_gen_dec_aligner_norm = RMSNorm(d, eps=cfg.llm.rms_norm_eps)
    self.vision_gen_dec_aligner = nn.Linear(d, u.channels, bias=True)

  # --- understanding -------------------------------------------------------------------------------------------
  def prepare_inputs_embeds(self, input_ids, pixel_values, images_seq_mask, images_emb_mask):
    """ids [b, T], pixel_values [b, n, 3, H, W], images_seq_mask bool [b, T], images_emb_mask bool [b, n, 1 + N]
    -> [b, T, D]: per image `beg_of_und_embed` + the N aligned features, boolean-scattered into the True slots."""
    b, n = pixel_values.shape[:2]
    feats = self.vision_und_enc_aligner(self.vision_und_enc_model(pixel_values.flatten(0, 1)))
    boi = self.beg_of_und_embed[0].view(1, 1, -1).repeat(feats.shape[0], 1, 1)
    feats = torch.cat([boi, feats], dim=1)  # [(b n), 1 + N, D]
    feats = feats.reshape(b, n * feats.shape[1], feats.shape[2])
    ids = input_ids.clone()
    ids[ids < 0] = 0
    embeds = self.language_model.get_input_embeddings()(ids)
    embeds[images_seq_mask] = feats[images_emb_mask.flatten(1)]
    return embeds

  def understanding_logits(self, input_ids, pixel_values, images_seq_mask, images_emb_mask, attention_mask,
                           position_ids):
    embeds = self.prepare_inputs_embeds(input_ids, pixel_values, images_seq_mask, images_emb_mask)
    return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask,
                               position_ids=position_ids).logits

  # --- text-to-image (official loop) ----------------------------------------------------------------------------
  def cfg_prompt(self, prompt_ids, batch: int, pad_id: int):
    """The blocked CFG layout: (prompt embeddings [2B, P-1, D] without the last tag, attention mask
    [2B, P-1 + 1 + N]) with rows B.. unconditional: BOS kept, the rest pad ids, masked out (positions unchanged)."""
    tokens = torch.tensor([list(prompt_ids)] * (2 * batch), dtype=torch.long)
    tokens[batch:, 1:] = pad_id
    embeds = self.language_model.get_input_embeddings()(tokens)[:, :-1]
    n = self.cfg.num_image_tokens
    mask = torch.ones(2 * batch, embeds.shape[1] + 1 + n, dtype=torch.long)
    mask[batch:, 1:embeds.shape[1]] = 0
    return embeds, mask

  def guided_velocity(self, prompt_embeds, attention_mask, z, t, cfg_weight: float):
    """One model evaluation of the official loop: z [B, C, h, w], t the time-embedding input (step / N * 1000)
    -> w * v_cond - (w - 1) * v_uncond [B, C, h, w]. The whole sequence is recomputed (no cache)."""
    z_in = torch.cat([z, z])
    z_emb, t_emb, hs = self.vision_gen_enc_model(z_in, torch.full((z_in.shape[0],), float(t)))
    c, gh, gw = z_emb.shape[1:]
    z_emb = self.vision_gen_enc_aligner(z_emb.reshape(z_in.shape[0], c, gh * gw).permute(0, 2, 1))
    llm_emb = torch.cat([prompt_embeds, t_emb[:, None], z_emb], dim=1)
    hidden = self.language_model.model(inputs_embeds=llm_emb, attention_mask=attention_mask).last_hidden_state
    h = self.vision_gen_dec_aligner(self.vision_gen_dec_aligner_norm(hidden[:, -gh * gw:]))
    h = h.reshape(z_in.shape[0], gh, gw, c).permute(0, 3, 1, 2)
    v = self.vision_gen_dec_model(h, hs, t_emb)
    v_cond, v_uncond = v.chunk(2)
    return cfg_weight * v_cond - (cfg_weight - 1.0) * v_uncond

  @torch.no_grad()
  def generate_latents(self, prompt_ids, z0, num_steps: int, cfg_weight: float, pad_id: int):
    """The official Euler loop from explicit noise z0 [B, C, h, w] (float32, no bf16 rounding of z, dt or t):
    t_k = k / N * 1000, z += (1 / N) * v. Returns the scaled latents [B, C, h, w] (before the VAE decode)."""
    prompt_embeds, mask = self.cfg_prompt(prompt_ids, z0.shape[0], pad_id)
    z = z0.clone().float()
    dt = 1.0 / num_steps
    for step in range(num_steps):
      z = z + dt * self.guided_velocity(prompt_embeds, mask, z, step / num_steps * 1000.0, cfg_weight)
    return z


def build_reference_janusflow(cfg, seed: int = 0) -> JanusFlowReference:
  """A random eval-mode JanusFlowReference with perturbed norms / biases / GRN and a random `beg_of_und_embed`."""
  torch.manual_seed(seed)
  model = JanusFlowReference(cfg).eval()
  perturb_(model, seed + 1)
  with torch.no_grad():
    model.beg_of_und_embed.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed + 2))
  return model


__all__ = ["sinusoidal_timestep_embedding", "RMSNorm", "GlobalResponseNorm", "ConvNextBlock", "UVitBlock",
           "TimestepEmbedding", "Unpatchify", "ShallowUViTEncoder", "ShallowUViTDecoder", "uvit_kwargs", "perturb_",
           "build_reference_uvit", "state_numpy", "CLIPVisionTower", "VisionTransformer", "JanusFlowReference",
           "llama_config", "build_reference_janusflow"]


def write_janusflow_source(root, cfg, state: dict[str, np.ndarray]):
  """A JanusFlow-layout checkpoint directory as the released one is laid out: model.safetensors, config.json (+ the
  shipped ignored UViT keys), the tiny tokenizer, processor_config.json. Returns `root`."""
  import json  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  from janus_jax.checkpoint import config_json  # pylint: disable=import-outside-toplevel
  from tiny_assets import make_tiny_tokenizer  # pylint: disable=import-outside-toplevel
  root.mkdir(parents=True)
  save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(root / "model.safetensors"))
  raw = config_json.deepseek_config_dict(cfg)
  raw["vision_gen_enc_config"]["params"].update(elementwize_affine=True, num_extra_tensors=5)
  (root / "config.json").write_text(json.dumps(raw))
  make_tiny_tokenizer(str(root))
  (root / "processor_config.json").write_text(json.dumps({"sft_format": "deepseek_old"}))
  return root


def write_tiny_janusflow(root, cfg, vae_scale: float = 0.5, seed: int = 0):
  """A tiny random JanusFlow source checkpoint (`root/src`) and its diffusers VAE (`root/vae`), as the released
  JanusFlow-1.3B + SDXL-VAE pair is laid out. Returns (src dir, vae dir, reference model, torch VAE)."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from diffusers import AutoencoderKL  # pylint: disable=import-outside-toplevel
  from janus_jax.checkpoint.diffusers_vae import config_to_diffusers  # pylint: disable=import-outside-toplevel
  model = build_reference_janusflow(cfg, seed=seed)
  src = write_janusflow_source(root / "src", cfg, state_numpy(model))
  torch.manual_seed(seed + 5)
  vae = AutoencoderKL(**config_to_diffusers(dataclasses.replace(cfg.vae, scaling_factor=vae_scale))).eval()
  vae.save_pretrained(root / "vae")
  return src, root / "vae", model, vae
